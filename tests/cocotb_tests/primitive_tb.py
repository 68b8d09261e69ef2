"""cocotb bench of the iCE40 primitives' netlists; vectors from tests/test_primitives.py.

The vectors file (``$SD_HW_VECTORS``) lists, cycle by cycle, the value of
every input port and, for the output ports, ``[value, mask]``: the bits of
``mask`` are the ones the contract defines in that cycle, and must equal
``value``'s (an X or Z there is a mismatch). Inputs change at falling edges;
outputs are sampled at the same falling edge, before the new inputs act.
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from sim.cocotb import CLOCK_PERIOD_NS, VECTORS_ENV


def _mismatch(handle, value, mask):
    """``None`` if the defined bits of ``handle`` match, else its bits as text."""
    text = str(handle.value)
    bits = text[::-1]
    for index in range(len(bits)):
        if (mask >> index) & 1 and bits[index] != str((value >> index) & 1):
            return text
    return None


@cocotb.test()
async def vectors(dut):
    data = json.loads(Path(os.environ[VECTORS_ENV]).read_text())
    if hasattr(dut, "rst"):
        dut.rst.value = 0
    for name in data["cycles"][0]["in"]:
        getattr(dut, name).value = 0
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    await FallingEdge(dut.clk)
    checked = 0
    for cycle, step in enumerate(data["cycles"]):
        for name, value in step["in"].items():
            getattr(dut, name).value = value
        for name, (value, mask) in step["out"].items():
            if not mask:
                continue
            got = _mismatch(getattr(dut, name), value, mask)
            assert got is None, (f"cycle {cycle}: {name} is {got}, expected "
                                 f"{value:#x} on the bits of mask {mask:#x}")
            checked += 1
        await FallingEdge(dut.clk)
    assert checked == data["checks"], f"checked {checked} outputs, expected {data['checks']}"
    dut._log.info("%d cycles, %d outputs checked", len(data["cycles"]), checked)
