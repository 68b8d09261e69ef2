"""MacLaneArray in the Amaranth simulator against the rebuild rule worked out in NumPy.

Every lane rebuilds, for each activation element, the one weight its Ce row gives
that element's column (docs/number-formats.md) and multiply-accumulates it; the
expected sums are computed here from the codes, bases and activations alone.
"""

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.mac_lanes import MAC_WEIGHT_BITS, MacLaneArray
from sd_hw.errors import ParameterError
from sim.streams import checked_simulator


PERIOD = 1e-6
WEIGHT_LIMIT = 2 ** (MAC_WEIGHT_BITS - 1)


def random_row(rng, basis, max_shift):
    """A Ce row record (as a dict) whose rebuilt weights fit the multiplier's input."""
    while True:
        present = [rng.random() < 0.6 for _ in range(3)]
        negative = [rng.random() < 0.5 for _ in range(3)]
        exponent = [rng.randrange(max_shift + 1) for _ in range(3)]
        weights = rebuilt(basis, present, negative, exponent)
        if all(-WEIGHT_LIMIT <= w < WEIGHT_LIMIT for w in weights):
            return {"present": sum(p << j for j, p in enumerate(present)),
                    "coefficients": [{"exponent": e, "negative": int(n)}
                                     for e, n in zip(exponent, negative)],
                    "last": rng.randrange(2)}, weights


def rebuilt(basis, present, negative, exponent):
    """The three weights of a row: sum over the coefficients of the shifted basis rows."""
    row = np.zeros(3, dtype=np.int64)
    for j in range(3):
        if present[j]:
            row += (-1) ** negative[j] * (basis[j].astype(np.int64) << exponent[j])
    return row


def make_job(config, *, basis_depth, passes, seed, max_elements=12):
    """Random bases per lane, and `passes` sums of random length over random rows."""
    rng = random.Random(seed)
    lanes = config.lanes
    low, high = -2 ** (config.basis_bits - 1), 2 ** (config.basis_bits - 1)
    bases = np.array([[[[rng.randrange(low, high) for _ in range(3)] for _ in range(3)]
                       for _ in range(basis_depth)] for _ in range(lanes)], dtype=np.int64)
    a_low, a_high = -2 ** (config.activation_bits - 1), 2 ** (config.activation_bits - 1)
    elements, expected = [], []
    for _ in range(passes):
        count = rng.randrange(1, max_elements + 1)
        sums = np.zeros(lanes, dtype=np.int64)
        position = 0
        while position < count:
            basis = rng.randrange(basis_depth)
            rows, weights = zip(*(random_row(rng, bases[l, basis], config.max_shift)
                                  for l in range(lanes)))
            for column in range(3):
                if position == count:
                    break
                x = rng.randrange(a_low, a_high)
                elements.append({"activation": x, "column": column, "basis": basis,
                                 "rows": list(rows), "first": int(position == 0),
                                 "last": int(position == count - 1)})
                sums += np.array([w[column] for w in weights]) * x
                position += 1
        expected.extend(int(s) for s in sums)
    return bases, elements, expected


def without_basis(element):
    return {name: value for name, value in element.items() if name != "basis"}


def set_read(ctx, dut, element):
    """Read ``element``'s basis column this cycle (none if ``element`` is None)."""
    if element is None:
        ctx.set(dut.basis_read.en, 0)
    else:
        ctx.set(dut.basis_read, {"en": 1, "basis": element["basis"],
                                 "column": element["column"]})


async def prefetch(ctx, dut, element):
    set_read(ctx, dut, element)
    await ctx.tick()
    ctx.set(dut.basis_read.en, 0)


async def drive_elements(ctx, dut, elements, *, stall, rng, cycle):
    """Offer ``elements`` one after another (idle cycles drawn with probability
    ``stall`` in between), reading each one's basis column in the cycle its predecessor
    is taken (the first one's is read ahead, :func:`prefetch`). ``cycle``: the count at
    the first offer. Returns the cycles each element, and each ``last`` one, was taken."""
    takes, lasts = [], []
    for k, element in enumerate(elements):
        following = elements[k + 1] if k + 1 < len(elements) else None
        while stall and rng.random() < stall:
            ctx.set(dut.elements.valid, 0)
            ctx.set(dut.basis_read.en, 0)
            await ctx.tick()
            cycle += 1
        ctx.set(dut.elements.valid, 1)
        ctx.set(dut.elements.payload, without_basis(element))
        while True:
            ready = ctx.get(dut.elements.ready)
            set_read(ctx, dut, following if ready else None)
            await ctx.tick()
            cycle += 1
            if ready:
                break
        takes.append(cycle - 1)
        if element["last"]:
            lasts.append(cycle - 1)
    ctx.set(dut.elements.valid, 0)
    ctx.set(dut.basis_read.en, 0)
    return takes, lasts


def run(config, *, basis_depth=4, passes=20, seed=0, stall=0.0, max_elements=12):
    dut = MacLaneArray(config, basis_depth=basis_depth)
    bases, elements, expected = make_job(config, basis_depth=basis_depth, passes=passes,
                                         seed=seed, max_elements=max_elements)
    lanes = config.lanes
    received = []
    timing = {}

    async def testbench(ctx):
        for l in range(lanes):
            for b in range(basis_depth):
                for c in range(3):
                    ctx.set(dut.basis_write, {"en": 1, "lane": l, "addr": 4 * b + c,
                                              "data": [int(v) for v in bases[l, b, :, c]]})
                    await ctx.tick()
        ctx.set(dut.basis_write.en, 0)
        await prefetch(ctx, dut, elements[0])
        timing["takes"], timing["lasts"] = await drive_elements(
            ctx, dut, elements, stall=stall, rng=random.Random(seed + 1), cycle=1)

    async def monitor(ctx):
        cycle = 0
        firsts = []
        while len(received) < len(expected):
            _, _, payload = await ctx.tick().sample(dut.sums)
            if payload.valid:
                if payload.lane == 0:
                    firsts.append(cycle)
                received.append((int(payload.lane), int(payload.value)))
            cycle += 1
        timing["firsts"] = firsts

    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(testbench)
    sim.add_testbench(monitor, background=True)
    sim.run_until(PERIOD * (len(elements) * (1 + 4 * stall) * lanes + 4 * 3 * basis_depth * lanes
                            + 1000))
    return dut, received, expected, timing


CONFIGS = [
    AcceleratorConfig(lanes=1),
    AcceleratorConfig(lanes=4),
    AcceleratorConfig(lanes=8),
    AcceleratorConfig(lanes=3, code_bits=2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"lanes{c.lanes}-code{c.code_bits}")
@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_sums_match_the_rebuild_rule(config, stall):
    dut, received, expected, _ = run(config, passes=16, seed=config.lanes, stall=stall)
    lanes = config.lanes
    assert len(received) == len(expected)
    assert [lane for lane, _ in received] == [k % lanes for k in range(len(expected))]
    assert [value for _, value in received] == expected


def test_short_sums_are_spaced_by_the_lane_count():
    """Sums of one element each: every `last` waits `lanes` cycles after the previous,
    and lane 0's sum leaves `latency` cycles after its last element was taken."""
    config = AcceleratorConfig(lanes=4)
    dut, received, expected, timing = run(config, passes=12, seed=5, max_elements=1)
    assert [value for _, value in received] == expected
    lasts = timing["lasts"]
    assert all(b - a == config.lanes for a, b in zip(lasts, lasts[1:]))
    # The monitor's cycle count starts with the testbench's (both at time 0), the
    # testbench spent 3 * 4 * lanes cycles writing bases first, and one reading ahead.
    offset = 3 * 4 * config.lanes
    assert [f - (l + offset) for f, l in zip(timing["firsts"], lasts)] == \
        [dut.latency] * len(lasts)


def test_a_sum_started_right_after_an_element_waits_one_cycle():
    """One lane (no capture spacing), elements offered back to back: every element is
    taken the cycle after its predecessor, except the first of a sum, which waits one
    cycle more (the multiply-accumulate's start drops the slot before it)."""
    config = AcceleratorConfig(lanes=1)
    dut, received, expected, timing = run(config, passes=15, seed=3, max_elements=4)
    assert [value for _, value in received] == expected
    _, elements, _ = make_job(config, basis_depth=4, passes=15, seed=3, max_elements=4)
    steps = [b - a for a, b in zip(timing["takes"], timing["takes"][1:])]
    assert steps == [2 if element["first"] else 1 for element in elements[1:]]
    assert steps.count(2) == 14


def test_long_sums_take_one_element_a_cycle():
    config = AcceleratorConfig(lanes=8)
    dut, received, expected, timing = run(config, passes=6, seed=9, max_elements=40)
    assert [value for _, value in received] == expected


def test_extreme_values_are_exact():
    """Largest weights that fit and the extreme activations, accumulated many times."""
    config = AcceleratorConfig(lanes=2)
    dut = MacLaneArray(config, basis_depth=1)
    basis = [[-128, 127, 0], [-128, 127, 0], [-128, 0, 0]]
    # Column 0: -128 << 6 twice and -128 << 6 once more: -3 * 8192 = -24576.
    row = {"present": 0b111, "coefficients": [{"exponent": 6, "negative": 0}] * 3, "last": 0}
    # Column 1: 127 << 7 = 16256, 127 << 7 = 16256 negated, nothing: 0; pick a second row.
    row_b = {"present": 0b001, "coefficients": [{"exponent": 7, "negative": 1},
                                                {"exponent": 0, "negative": 0},
                                                {"exponent": 0, "negative": 0}], "last": 0}
    count = 200
    results = []

    async def testbench(ctx):
        for c in range(3):
            for lane in range(2):
                ctx.set(dut.basis_write, {"en": 1, "lane": lane, "addr": c,
                                          "data": [basis[j][c] for j in range(3)]})
                await ctx.tick()
        ctx.set(dut.basis_write.en, 0)
        for k in range(count):
            await prefetch(ctx, dut, {"basis": 0, "column": k % 2})
            ctx.set(dut.elements.valid, 1)
            ctx.set(dut.elements.payload, {"activation": -128, "column": k % 2,
                                           "rows": [row, row_b], "first": int(k == 0),
                                           "last": int(k == count - 1)})
            await ctx.tick().until(dut.elements.ready)
            ctx.set(dut.elements.valid, 0)
        ctx.set(dut.elements.valid, 0)
        while len(results) < 2:
            _, _, payload = await ctx.tick().sample(dut.sums)
            if payload.valid:
                results.append(int(payload.value))

    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(testbench)
    sim.run()
    weights_a = [-3 * (128 << 6), 127 * 2 * (1 << 6)]    # columns 0 and 1 of `row`
    weights_b = [128 << 7, -(127 << 7)]                  # columns 0 and 1 of `row_b`
    expected = [sum(weights_a[k % 2] * -128 for k in range(count)),
                sum(weights_b[k % 2] * -128 for k in range(count))]
    assert results == expected


def refused(match, **kwargs):
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError, match=match):
            MacLaneArray(**kwargs)
        gc.collect()


@pytest.mark.parametrize("depth", [0, 16385, 2.5])
def test_bad_basis_depth_is_refused(depth):
    refused("basis_depth", config=AcceleratorConfig(lanes=2), basis_depth=depth)


def test_narrow_accumulator_is_refused():
    refused("accumulator_bits", config=AcceleratorConfig(lanes=2, code_bits=1, accumulator_bits=24),
            basis_depth=4)
