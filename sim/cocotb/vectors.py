"""Stream test vectors: payloads in, expected payloads out, checked bit-exactly.

The host side (pytest, NumPy) computes, for a block, the payloads to send on
each of its sink streams and the payloads expected on each source stream,
and writes them to a JSON file (:func:`write_vectors`). In the simulator,
:func:`run_case` drives every sink stream with a :class:`StreamDriver`,
drains every source stream with a :class:`StreamMonitor`, all with random
stalls, checks every stream's handshake with a :class:`StreamRuleChecker`
and compares what came out with what was expected. Streams are
compared each in its own order: a stream-based block is defined by the
sequence on each stream, not by the cycle of each transfer.

File format::

    {"cases": [{"name": str, "stall": float, "seed": int,
                "inputs": {stream: [payload, ...]},
                "outputs": {stream: [payload, ...]},
                "max_cycles": int | null, "break_rules": stream (optional)}]}

Payloads are nested dicts / lists / ints as :class:`PayloadCodec` packs and
unpacks them. ``max_cycles`` (for cases without stalls) bounds the cycles
from reset to the last expected transfer: a throughput check. ``break_rules``
names a sink stream whose driver breaks the stream rules (a negative control
of the checkers).
"""

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import with_timeout

from .clocking import CLOCK_PERIOD_NS, start_clock_and_reset
from .port_map import PortMap
from .streams import StreamDriver, StreamMonitor, StreamRuleChecker


__all__ = ["VECTORS_ENV", "write_vectors", "load_cases", "case_names", "run_case"]

#: Environment variable through which a test bench is told its vectors file.
VECTORS_ENV = "SD_HW_VECTORS"


def write_vectors(path, cases):
    """Write ``cases`` (dicts as in the module doc) to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cases": cases}))
    return path


def load_cases(path=None):
    path = path or os.environ.get(VECTORS_ENV)
    if not path:
        raise RuntimeError(f"${VECTORS_ENV} is not set: pass the vectors file to "
                           f"run_cocotb through extra_env")
    return {case["name"]: case for case in json.loads(Path(path).read_text())["cases"]}


def case_names():
    """Names of the cases in ``$SD_HW_VECTORS``, for ``@cocotb.parametrize``."""
    return list(load_cases())


def _first_difference(got, expected):
    for index, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            return index, g, e
    return None


async def run_case(dut, name, *, idle_cycles=8):
    """Run case ``name`` of ``$SD_HW_VECTORS`` on ``dut`` and check every output stream."""
    case = load_cases()[name]
    ports = PortMap.load()
    for key, direction in (("inputs", "sink"), ("outputs", "source")):
        for stream in case[key]:
            if ports.streams.get(stream, {}).get("direction") != direction:
                raise AssertionError(f"case {name}: {ports.top} has no {direction} stream "
                                     f"{stream!r} (listed in {key})")
    missing = [s for s, d in ports.streams.items()
               if s not in case["inputs"] and s not in case["outputs"]]
    if missing:
        raise AssertionError(f"case {name}: no vectors for streams {missing}")
    rng = random.Random(case.get("seed", 0))
    stall = case.get("stall", 0.0)
    await start_clock_and_reset(dut)
    start = get_sim_time("ns")
    checkers = [StreamRuleChecker(dut, stream) for stream, info in ports.streams.items()
                if not info.get("always_ready")]
    watching = [checker.start() for checker in checkers]
    breaking = case.get("break_rules")
    drivers = [(StreamDriver(dut, stream, port_map=ports, stall=stall,
                             rng=random.Random(rng.random()),
                             break_rules=stream == breaking), payloads)
               for stream, payloads in case["inputs"].items()]
    monitors = [(stream, StreamMonitor(dut, stream, port_map=ports, stall=stall,
                                       rng=random.Random(rng.random())), expected)
                for stream, expected in case["outputs"].items()]
    transfers = sum(map(len, case["inputs"].values())) + sum(map(len, case["outputs"].values()))
    timeout = case.get("timeout_cycles") or 20 * transfers + 1000
    sending = [cocotb.start_soon(driver.send(payloads)) for driver, payloads in drivers]
    receiving = {stream: cocotb.start_soon(monitor.receive(len(expected), timeout_cycles=timeout))
                 for stream, monitor, expected in monitors}
    received = {stream: await task for stream, task in receiving.items()}
    cycles = round((get_sim_time("ns") - start) / CLOCK_PERIOD_NS)
    for stream, _, expected in monitors:
        difference = _first_difference(received[stream], expected)
        if difference is not None:
            index, got, want = difference
            raise AssertionError(f"case {name}: {stream}[{index}] is {got}, expected {want}")
    for (driver, payloads), task in zip(drivers, sending):
        try:
            await with_timeout(task, timeout * CLOCK_PERIOD_NS, "ns")
        except cocotb.triggers.SimTimeoutError:
            raise AssertionError(f"case {name}: {driver.prefix} took {driver.sent} of "
                                 f"{len(payloads)} payloads") from None
    if case.get("max_cycles") is not None:
        assert cycles <= case["max_cycles"], \
            f"case {name}: took {cycles} cycles, the bound is {case['max_cycles']}"
    idle = [cocotb.start_soon(monitor.expect_idle(idle_cycles)) for _, monitor, _ in monitors]
    for task in idle:
        await task
    for checker, task in zip(checkers, watching):
        task.cancel()
        if checker.violations:
            raise AssertionError(f"case {name}: stream {checker.prefix}: {checker.violations[0]}")
    dut._log.info("case %s: %d transfers in %d cycles", name, transfers, cycles)
