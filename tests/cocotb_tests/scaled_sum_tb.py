"""cocotb test bench of the test-only ScaledSum component (tests/test_infrastructure.py).

Random operands and edge cases, random stalls on both streams, checked
against a Python model of the component.
"""

import itertools
import random
import time

import cocotb
from cocotb.simtime import get_sim_time

from sim.cocotb import CLOCK_PERIOD_NS, PortMap, StreamDriver, StreamMonitor, start_clock_and_reset


def scaled_sum(operands):
    """Python model: ``a * (b[0] + b[1])``, negated on request; ``odd`` is its low bit."""
    value = operands["a"] * (operands["b"][0] + operands["b"][1])
    if operands["negate"]:
        value = -value
    return {"value": value, "odd": value & 1}


def operand_sets(rng, count):
    """Edge cases (extremes of every field), then random operands."""
    edges = [{"a": a, "b": [b0, b1], "negate": n}
             for a, b0, b1, n in itertools.product((-128, 0, 127), (-32, 31), (-32, 31), (0, 1))]
    randoms = [{"a": rng.randint(-128, 127), "b": [rng.randint(-32, 31), rng.randint(-32, 31)],
                "negate": rng.randint(0, 1)} for _ in range(count)]
    return edges + randoms


async def check(dut, *, count, stall, model=scaled_sum):
    """Send ``count`` random operand sets (plus edge cases) and compare with ``model``.

    Returns the number of clock cycles the transfer took.
    """
    ports = PortMap.load()
    rng = random.Random(cocotb.RANDOM_SEED)
    await start_clock_and_reset(dut)
    operands = operand_sets(rng, count)
    driver = StreamDriver(dut, "i", port_map=ports, stall=stall, rng=random.Random(rng.random()))
    monitor = StreamMonitor(dut, "o", port_map=ports, stall=stall,
                            rng=random.Random(rng.random()))
    start_ns, start_wall = get_sim_time("ns"), time.perf_counter()
    sending = cocotb.start_soon(driver.send(operands))
    received = await monitor.receive(len(operands), timeout_cycles=20 * len(operands) + 100)
    await sending
    cycles = round((get_sim_time("ns") - start_ns) / CLOCK_PERIOD_NS)
    wall = time.perf_counter() - start_wall
    dut._log.info("%d transfers in %d cycles, %.3f s wall: %.0f cycles/s",
                  len(operands), cycles, wall, cycles / wall)
    for index, (sent, got) in enumerate(zip(operands, received)):
        assert got == model(sent), f"transfer {index}: {sent} gave {got}, expected {model(sent)}"
    await monitor.expect_idle(4)
    return cycles


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.4])
async def random_operands(dut, stall):
    cycles = await check(dut, count=1000, stall=stall)
    if not stall:
        # One transfer per cycle without stalls: edge cases + 1000, plus a few cycles of latency.
        assert cycles <= 24 + 1000 + 4, f"{cycles} cycles: the stream does not keep up"
