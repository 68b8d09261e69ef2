"""Running a network on a board, through any transport, and checking it.

One API over every transport that executes bus scripts: a real board on a
serial port (:class:`sim.host.link.SerialTransport`), a board top-level in
a simulator (:class:`sim.board_sim.SimulatedBoard`), or the bare core in a
simulator. :func:`run_network` loads the compiled network, runs the inputs
and compares the outputs (and every layer's result that survives, and the
counters the core has) with the golden model.
"""

import time

from sim.simulate import build_script, compare, compile_for


__all__ = ["run_network"]


def run_network(transport, net, config, x, *, layers=False, log=None):
    """Run int8 inputs ``x`` on ``transport`` (an SDCore or a SerialCore of ``config``);
    a SimulationReport."""
    started = time.perf_counter()
    program = compile_for(net, config)
    script = build_script(net, program, x, layers=layers)
    if log:
        log(f"sending {sum(len(s[2]) for s in script.steps if s[0] == 'write')} words and "
            f"{len(x)} run(s)")
    words = transport.execute(script)
    report = compare(net, program, x, words, simulator=type(transport).__name__)
    report.seconds = time.perf_counter() - started
    return report
