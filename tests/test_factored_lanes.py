"""FactoredLaneArray in the Amaranth simulator against sums worked out here.

The expected sums are computed the rebuild way, in Python integers: every lane's weight
for every element is rebuilt from its codes and its group's basis (``sum_j ±B[j][c] <<
e_j``) and multiplied by the activation; the array computes ``B x_row`` once per group
and shifts it per lane. The two agree by associativity only if the array applies every
row to the right products with the right codes.
"""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.factored_lanes import FactoredLaneArray
from sd_hw.errors import ParameterError
from sim.streams import checked_simulator
from tests.test_mac_lanes import drive_elements, prefetch


PERIOD = 1e-6


def wrap(value, bits):
    """``value`` as a ``bits``-bit two's complement number."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def rebuilt_weight(basis, row, column):
    """The weight a Ce row record gives ``column`` with ``basis`` (``basis[j][c]``)."""
    weight = 0
    for j in range(3):
        if row["present"] >> j & 1:
            coefficient = row["coefficients"][j]
            term = basis[j][column] << coefficient["exponent"]
            weight += -term if coefficient["negative"] else term
    return weight


def random_row(rng, max_shift, density=0.6):
    present = [rng.random() < density for _ in range(3)]
    return {"present": sum(p << j for j, p in enumerate(present)),
            "coefficients": [{"exponent": rng.randrange(max_shift + 1) if present[j] else 0,
                              "negative": int(present[j] and rng.random() < 0.5)}
                             for j in range(3)],
            "last": rng.randrange(2)}


def make_job(config, *, basis_group, basis_depth, passes, seed, max_rows=5, extreme=False):
    """Random bases per engine and ``passes`` sums of 1..``max_rows`` rows of 1..3
    elements each (now and then a pass ends with a zero element, as the issuer sends
    one); every element's weights are rebuilt to give the expected sums."""
    rng = random.Random(seed)
    lanes = config.lanes
    engines = lanes // basis_group
    low, high = -2 ** (config.basis_bits - 1), 2 ** (config.basis_bits - 1)
    a_low, a_high = -2 ** (config.activation_bits - 1), 2 ** (config.activation_bits - 1)

    def draw(low, high):
        return rng.choice([low, high - 1]) if extreme else rng.randrange(low, high)

    bases = [[[[draw(low, high) for _ in range(3)] for _ in range(3)]
              for _ in range(basis_depth)] for _ in range(engines)]
    elements, expected = [], []
    for _ in range(passes):
        sums = [0] * lanes
        rows_in_pass = rng.randrange(1, max_rows + 1)
        first = True
        for r in range(rows_in_pass):
            basis = rng.randrange(basis_depth)
            rows = [random_row(rng, config.max_shift, 1.0 if extreme else 0.6)
                    for _ in range(lanes)]
            if extreme:
                for row in rows:
                    for coefficient in row["coefficients"]:
                        coefficient["exponent"] = config.max_shift
            last_row = r == rows_in_pass - 1
            if last_row and rng.random() < 0.15:
                count, start, zero = 1, 0, True      # the issuer's zero element
            else:
                count = rng.randrange(1, 4)
                start, zero = rng.randrange(0, 4 - count), False
            for k in range(count):
                column = start + k
                x = 0 if zero else draw(a_low, a_high)
                elements.append({"activation": x, "column": column, "basis": basis,
                                 "rows": rows, "first": int(first),
                                 "last": int(last_row and k == count - 1),
                                 "row_last": int(k == count - 1)})
                first = False
                for l in range(lanes):
                    sums[l] += rebuilt_weight(bases[l // basis_group][basis], rows[l],
                                              column) * x
        expected.extend(sums)
    return bases, elements, expected


def run(config, *, basis_group=None, basis_depth=4, passes=20, seed=0, stall=0.0,
        max_rows=5, extreme=False, job=None):
    dut = FactoredLaneArray(config, basis_group=basis_group, basis_depth=basis_depth)
    group = dut.basis_group
    if job is None:
        job = make_job(config, basis_group=group, basis_depth=basis_depth, passes=passes,
                       seed=seed, max_rows=max_rows, extreme=extreme)
    bases, elements, expected = job
    received = []
    timing = {"firsts": []}
    start = {}

    async def testbench(ctx):
        for e in range(dut.engines):
            for b in range(basis_depth):
                for c in range(3):
                    ctx.set(dut.basis_write, {"en": 1, "lane": e, "addr": 4 * b + c,
                                              "data": [bases[e][b][j][c] for j in range(3)]})
                    await ctx.tick()
        ctx.set(dut.basis_write.en, 0)
        await prefetch(ctx, dut, elements[0])
        start["cycle"] = 3 * dut.engines * basis_depth + 1
        timing["takes"], timing["lasts"] = await drive_elements(
            ctx, dut, elements, stall=stall, rng=random.Random(seed + 1), cycle=0)

    async def monitor(ctx):
        cycle = 0
        while len(received) < len(expected):
            _, _, payload = await ctx.tick().sample(dut.sums)
            if payload.valid:
                if payload.lane == 0:
                    timing["firsts"].append(cycle - start["cycle"])
                received.append((int(payload.lane), int(payload.value)))
            cycle += 1

    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(testbench)
    sim.add_testbench(monitor, background=True)
    sim.run_until(PERIOD * (len(elements) * (3 + 4 * stall) * config.lanes
                            + 4 * 3 * basis_depth * config.lanes + 1000))
    return dut, received, expected, timing, elements


#: (datapath, basis_group)
CONFIGS = [
    (AcceleratorConfig(lanes=1), None),
    (AcceleratorConfig(lanes=4), 2),
    (AcceleratorConfig(lanes=8), None),
    (AcceleratorConfig(lanes=8), 2),
    (AcceleratorConfig(lanes=6, code_bits=2), 3),
    (AcceleratorConfig(lanes=3, code_bits=4, accumulator_bits=40), 1),
]


@pytest.mark.parametrize("config, group", CONFIGS,
                         ids=lambda v: f"lanes{v.lanes}-code{v.code_bits}"
                         if isinstance(v, AcceleratorConfig) else f"group{v}")
@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_sums_match_the_rebuilt_weights(config, group, stall):
    dut, received, expected, _, _ = run(config, basis_group=group, passes=16,
                                        seed=config.lanes + config.code_bits, stall=stall)
    lanes = config.lanes
    assert len(received) == len(expected)
    assert [lane for lane, _ in received] == [k % lanes for k in range(len(expected))]
    assert [value for _, value in received] == expected


def test_rows_are_spaced_by_three_cycles_and_sums_by_the_lane_count():
    """Rows of one element each, offered back to back: every row's last element waits
    until three cycles after the previous one; a sum's last, `lanes` cycles after the
    previous sum's; lane 0's sum leaves `latency` cycles after its last element."""
    config = AcceleratorConfig(lanes=4)
    rng = random.Random(7)
    bases = [[[[rng.randrange(-128, 128) for _ in range(3)] for _ in range(3)]]]
    elements, expected = [], []
    for passes in range(10):
        rows = [random_row(rng, config.max_shift) for _ in range(config.lanes)]
        count = 1 + passes % 2          # one-row and two-row sums
        sums = [0] * config.lanes
        for k in range(count):
            x = rng.randrange(-128, 128)
            elements.append({"activation": x, "column": k, "basis": 0, "rows": rows,
                             "first": int(k == 0), "last": int(k == count - 1),
                             "row_last": 1})
            for l in range(config.lanes):
                sums[l] += rebuilt_weight(bases[0][0], rows[l], k) * x
        expected.extend(sums)
    dut, received, expected, timing, _ = run(config, basis_depth=1,
                                             job=(bases, elements, expected))
    assert [value for _, value in received] == expected
    takes = timing["takes"]
    steps = [b - a for a, b in zip(takes, takes[1:])]
    # A two-row sum's second row waits for the three terms of its first (3 cycles);
    # a sum's first row after a one-row sum waits for the capture spacing (4 = lanes).
    lasts = timing["lasts"]
    assert all(step >= 3 for step in steps)
    assert all(b - a >= config.lanes for a, b in zip(lasts, lasts[1:]))
    assert 3 in steps
    assert [f - l for f, l in zip(timing["firsts"], lasts)] == [dut.latency] * len(lasts)


def test_three_element_rows_take_one_element_a_cycle():
    """Full rows: elements are taken back to back, a sum right after another."""
    config = AcceleratorConfig(lanes=2)
    rng = random.Random(3)
    bases = [[[[rng.randrange(-128, 128) for _ in range(3)] for _ in range(3)]]]
    elements, expected = [], []
    for _ in range(8):
        sums = [0] * config.lanes
        for r in range(3):
            rows = [random_row(rng, config.max_shift) for _ in range(config.lanes)]
            for c in range(3):
                x = rng.randrange(-128, 128)
                elements.append({"activation": x, "column": c, "basis": 0, "rows": rows,
                                 "first": int(r == c == 0), "last": int(r == c == 2),
                                 "row_last": int(c == 2)})
                for l in range(config.lanes):
                    sums[l] += rebuilt_weight(bases[0][0], rows[l], c) * x
        expected.extend(sums)
    _, received, expected, timing, _ = run(config, basis_depth=1,
                                           job=(bases, elements, expected))
    assert [value for _, value in received] == expected
    takes = timing["takes"]
    assert [b - a for a, b in zip(takes, takes[1:])] == [1] * (len(takes) - 1)


@pytest.mark.parametrize("group", [None, 1])
def test_extreme_values_are_exact(group):
    """Bases and activations at the ends of their ranges, every code at the top
    shift: the widest products, row sums and shifted terms."""
    config = AcceleratorConfig(lanes=4)
    _, received, expected, _, _ = run(config, basis_group=group, passes=12, seed=11,
                                      extreme=True, max_rows=8)
    assert [value for _, value in received] == expected
    assert max(abs(v) for v in expected) > 2 ** 24


def test_intermediate_sums_may_wrap():
    """A 20-bit accumulator: the running sum leaves the range and comes back; the
    final sum is exact (two's complement wraps cancel)."""
    config = AcceleratorConfig(lanes=1, code_bits=1, accumulator_bits=20)
    bases = [[[[127, 0, 0], [0, 0, 0], [0, 0, 0]]]]
    up = {"present": 1, "coefficients": [{"exponent": 1, "negative": 0}] +
          [{"exponent": 0, "negative": 0}] * 2, "last": 0}
    down = {"present": 1, "coefficients": [{"exponent": 1, "negative": 1}] +
            [{"exponent": 0, "negative": 0}] * 2, "last": 0}
    elements, partial = [], 0
    peak = 0
    for k, row in enumerate([up] * 20 + [down] * 19):
        elements.append({"activation": 127, "column": 0, "basis": 0, "rows": [row],
                         "first": int(k == 0), "last": int(k == 38), "row_last": 1})
        partial += rebuilt_weight(bases[0][0], row, 0) * 127
        peak = max(peak, partial)
    assert peak >= 2 ** 19 > partial          # the running sum did leave the range
    _, received, _, _, _ = run(config, basis_depth=1, job=(bases, elements, [partial]))
    assert received == [(0, wrap(partial, 20))] and wrap(partial, 20) == partial


def refused(match, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError, match=match):
            FactoredLaneArray(**kwargs)
        gc.collect()


@pytest.mark.parametrize("group", [0, 3, 16, 2.0, True])
def test_bad_basis_group_is_refused(group):
    refused("basis_group", config=AcceleratorConfig(lanes=8), basis_group=group,
            basis_depth=4)


def test_wide_operands_are_refused():
    refused("activation_bits", config=AcceleratorConfig(lanes=2, activation_bits=9),
            basis_depth=4)
    refused("basis_bits", config=AcceleratorConfig(lanes=2, basis_bits=12), basis_depth=4)


@pytest.mark.parametrize("depth", [0, 16385])
def test_bad_basis_depth_is_refused(depth):
    refused("basis_depth", config=AcceleratorConfig(lanes=2), basis_depth=depth)
