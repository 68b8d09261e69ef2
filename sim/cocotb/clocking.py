"""Clock and reset of a generated block in a cocotb test bench."""

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge


__all__ = ["CLOCK_PERIOD_NS", "start_clock_and_reset"]

CLOCK_PERIOD_NS = 10


async def start_clock_and_reset(dut, *, cycles=2, impl=None):
    """Start a 100 MHz clock on ``clk`` and hold ``rst`` for ``cycles`` rising edges.

    ``impl="gpi"`` runs the clock in the simulator, without waking Python at
    every edge (cocotb's ``Clock`` chooses otherwise); benches that write
    inputs only at falling edges can use it. Returns at a falling edge with
    the block out of reset.
    """
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl=impl).start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
