"""A negative control: the ScaledSum bench with a deliberately wrong model must fail."""

import cocotb

from scaled_sum_tb import check, scaled_sum


def off_by_one(operands):
    expected = scaled_sum(operands)
    return {**expected, "value": expected["value"] + 1}


@cocotb.test()
async def wrong_expectation(dut):
    await check(dut, count=20, stall=0.3, model=off_by_one)
