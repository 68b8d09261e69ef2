"""Executes a bus script on an SDCore in Amaranth's own simulator."""

from sim.host.script import ScriptError
from sim.streams import checked_simulator


__all__ = ["execute"]


def execute(core, script, *, vcd_path=None):
    """Run ``script`` (a :class:`~sim.host.script.BusScript`) on ``core`` (an SDCore).

    Returns ``{tag: [word, ...]}`` of everything read. With ``vcd_path``, a
    waveform of the whole run is written there. Every stream inside the core
    is checked against the stream rules (:func:`sim.streams.checked_simulator`):
    a producer that drops ``valid`` or changes a payload before ``ready``
    fails the run with :class:`sim.streams.StreamRuleError`.
    """
    results = {}
    failure = []

    async def bench(ctx):
        host = core.host
        cycles = 0
        for step in script.expanded():
            kind = step[0]
            if kind == "w":
                ctx.set(host.addr, step[1])
                ctx.set(host.w_data, step[2])
                ctx.set(host.w_en, 1)
                await ctx.tick()
                ctx.set(host.w_en, 0)
                cycles += 1
            elif kind == "r":
                ctx.set(host.addr, step[1])
                ctx.set(host.r_en, 1)
                await ctx.tick()
                ctx.set(host.r_en, 0)
                cycles += 1
                results.setdefault(step[2], []).append(ctx.get(host.r_data))
            elif kind == "wait":
                waited = 0
                await ctx.tick()
                while not ctx.get(core.done):
                    if waited >= step[1]:
                        failure.append(f"the run did not end within {step[1]} cycles")
                        return
                    await ctx.tick()
                    waited += 1
                cycles += waited + 1
            elif kind == "cycle":
                results.setdefault(step[1], []).append(cycles)

    simulator = checked_simulator(core)
    simulator.add_clock(1e-6)
    simulator.add_testbench(bench)
    if vcd_path is not None:
        with simulator.write_vcd(str(vcd_path)):
            simulator.run()
    else:
        simulator.run()
    if failure:
        raise ScriptError(failure[0])
    return results
