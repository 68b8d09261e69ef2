"""cocotb test that executes a bus script on a generated SDCore.

The script (:class:`sim.host.script.BusScript`) comes from ``$SD_HW_SCRIPT``;
the words read are written, by tag, as JSON to ``$SD_HW_RESULTS``. Steps
run back to back: one bus word per clock cycle, and a
``wait`` sleeps in the simulator until ``done`` rises, without waking
Python every cycle.
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout

from sim.cocotb.clocking import CLOCK_PERIOD_NS, start_clock_and_reset
from sim.host.script import BusScript, ScriptError


SCRIPT_ENV = "SD_HW_SCRIPT"
RESULTS_ENV = "SD_HW_RESULTS"


@cocotb.test()
async def run_script(dut):
    script = BusScript.load(os.environ[SCRIPT_ENV])
    results = {}
    dut.host__w_en.value = 0
    dut.host__r_en.value = 0
    dut.host__addr.value = 0
    dut.host__w_data.value = 0
    await start_clock_and_reset(dut, impl="gpi")
    start = get_sim_time("ns")
    for step in script.expanded():
        kind = step[0]
        if kind in ("w", "r"):
            # Set at a falling edge, taken at the rising edge; read data is
            # on r_data by the next falling edge.
            dut.host__addr.value = step[1]
            dut.host__w_en.value = int(kind == "w")
            dut.host__r_en.value = int(kind == "r")
            if kind == "w":
                dut.host__w_data.value = step[2]
            await FallingEdge(dut.clk)
            if kind == "r":
                value = dut.host__r_data.value
                if not value.is_resolvable:
                    raise ScriptError(f"the read of address {step[1]:#010x} ({step[2]}) gave "
                                      f"unresolved bits: {value}")
                results.setdefault(step[2], []).append(value.to_unsigned())
            continue
        dut.host__w_en.value = 0
        dut.host__r_en.value = 0
        if kind == "wait":
            try:
                await with_timeout(RisingEdge(dut.done), step[1] * CLOCK_PERIOD_NS, "ns")
            except cocotb.triggers.SimTimeoutError:
                raise ScriptError(f"the run did not end within {step[1]} cycles") from None
            await FallingEdge(dut.clk)
        elif kind == "cycle":
            cycles = round((get_sim_time("ns") - start) / CLOCK_PERIOD_NS)
            results.setdefault(step[1], []).append(cycles)
    dut.host__w_en.value = 0
    dut.host__r_en.value = 0
    Path(os.environ[RESULTS_ENV]).write_text(json.dumps(results))
