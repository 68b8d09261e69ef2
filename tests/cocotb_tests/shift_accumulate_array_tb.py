"""cocotb bench of the generated ShiftAccumulateArray; vectors from tests/test_blocks_rtl.py."""

import cocotb

from sim.cocotb import case_names, run_case


@cocotb.test()
@cocotb.parametrize(case=case_names())
async def vectors(dut, case):
    await run_case(dut, case)
