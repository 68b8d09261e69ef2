"""OutputUnit in the Amaranth simulator against the golden model's requantisation and pooling.

Each group's sums are drawn at random (extremes included), delivered by a producer
that behaves like MacLaneArray (it commits a pass only when the unit is ready, and
the pass's sums follow lane by lane on consecutive cycles), and every byte or word
the unit writes is checked, address and value, against
``sim.golden.reference.requantise`` and ``_maxpool`` applied in the golden model's
order (bias, requantisation, ReLU, then pooling).
"""

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, UnusedElaboratable
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.errors import ParameterError
from sd_hw.integer_network import MULTIPLIER_BITS
from sd_hw.serial.layouts import param_layout
from sd_hw.serial.output_unit import OutputUnit
from sim.golden.reference import _maxpool, requantise
from sim.streams import checked_simulator


PERIOD = 1e-6
M_LOW, M_HIGH = 2 ** (MULTIPLIER_BITS - 1), 2 ** MULTIPLIER_BITS - 1


class Bench(Elaboratable):
    """The unit and a parameter memory holding ``params`` (dicts of the param layout)."""

    def __init__(self, unit, params):
        self.unit = unit
        self.params = params

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        m.submodules.params = params = memory.Memory(
            shape=param_layout(), depth=1 << unit.param_addr_width, init=self.params)
        wiring.connect(m, params.read_port(), unit.param_read)
        return m


def random_params(rng, count):
    """Parameter words (bias later), multipliers and shifts including the extremes."""
    multipliers, shifts = [], []
    for _ in range(count):
        multipliers.append(rng.choice([M_LOW, M_HIGH, rng.randint(M_LOW, M_HIGH)]))
        shifts.append(rng.choice([1, 2, 62, rng.randint(1, 62), rng.randint(14, 40),
                                  rng.randint(14, 40)]))
    return multipliers, shifts


def random_acc(rng, multiplier, shift, low, high):
    """An accumulator that lands anywhere, near the int8 range, or on a rounding edge."""
    kind = rng.random()
    if kind < 0.1:
        value = rng.choice([low, high, low + 1, high - 1, 0, 1, -1])
    elif kind < 0.3:
        value = rng.randint(low, high)
    elif kind < 0.6:
        # (y + 1/2) * 2**shift / multiplier: half-way between two outputs, +-1.
        y = rng.randint(-140, 140)
        value = ((2 * y + 1) << (shift - 1)) // multiplier + rng.randint(-1, 1)
    else:
        magnitude = 2.0 ** (shift - 15 + rng.uniform(-8, 9))
        value = int(rng.uniform(-magnitude, magnitude))
    return min(max(value, low), high)


def make_group(rng, lanes, acc_bits, *, pool, final, relu, channels, windows, param_base,
               out_base, plane):
    """A group's settings, parameter words, sums and expected writes ``{address: value}``."""
    low, high = -2 ** (acc_bits - 1), 2 ** (acc_bits - 1) - 1
    multipliers, shifts = random_params(rng, lanes)
    biases = [rng.choice([0, rng.randint(-2 ** 20, 2 ** 20), rng.randint(low // 2, high // 2)])
              for _ in range(lanes)]
    passes = 4 if pool else 1
    sums = np.zeros((windows, passes, lanes), dtype=np.int64)
    for p in range(windows):
        for k in range(passes):
            for l in range(lanes):
                if l >= channels:
                    sums[p, k, l] = rng.randint(low, high)
                    continue
                # sum + bias must fit the accumulator, as the integeriser guarantees.
                target = random_acc(rng, multipliers[l], shifts[l], low, high)
                sums[p, k, l] = min(max(target - biases[l], low, low - biases[l]),
                                    high, high - biases[l])
    acc = sums[:, :, :channels] + np.array(biases[:channels], dtype=np.int64)
    if final:
        values = acc
    else:
        values = requantise(acc.reshape(-1, channels),
                            np.array(multipliers[:channels]),
                            np.array(shifts[:channels])).reshape(acc.shape).astype(np.int64)
    if relu:
        values = np.maximum(values, 0)
    if pool:
        # Window p is pixel (p // width, p % width) of a pooled image; pass k is
        # offset (k // 2, k % 2) in its 2x2 window.
        width = rng.choice([w for w in range(1, windows + 1) if windows % w == 0])
        height = windows // width
        image = np.zeros((1, channels, 2 * height, 2 * width), dtype=np.int64)
        for p in range(windows):
            for k in range(4):
                image[0, :, 2 * (p // width) + k // 2, 2 * (p % width) + k % 2] = values[p, k]
        pooled = _maxpool(image)[0].reshape(channels, windows).T
    else:
        pooled = values[:, 0, :]
    mask = (1 << 24) - 1
    expected = {(out_base + l * plane + p) & mask: int(pooled[p, l])
                for p in range(windows) for l in range(channels)}
    params = [{"bias": biases[l], "multiplier": multipliers[l], "shift": shifts[l]}
              for l in range(lanes)]
    settings = {"param_base": param_base, "channels": channels, "windows": windows,
                "pool": int(pool), "out_base": out_base, "plane": plane, "final": int(final),
                "relu": int(relu)}
    return settings, params, sums, expected


def run_groups(config, groups, *, seed, ready_rate=0.7, commit_rate=0.6, digits=2,
               param_addr_width=6, activation_addr_width=12, output_addr_width=10):
    """Run ``groups`` (from :func:`make_group`) one after the other; return, per group,
    the writes ``[(address, value)]`` and the expected ``{address: value}``."""
    lanes = config.lanes
    unit = OutputUnit(config, param_addr_width=param_addr_width,
                      activation_addr_width=activation_addr_width,
                      output_addr_width=output_addr_width, digits_per_cycle=digits)
    memory_words = [{"bias": 0, "multiplier": 0, "shift": 0}] * (1 << param_addr_width)
    for settings, params, _, _ in groups:
        for l, word in enumerate(params):
            memory_words[settings["param_base"] + l] = word
    bench = Bench(unit, memory_words)
    rng = random.Random(seed)
    results = []

    async def testbench(ctx):
        for settings, _, sums, _ in groups:
            assert not ctx.get(unit.busy)
            for name, value in settings.items():
                ctx.set(getattr(unit, name), value)
            ctx.set(unit.start, 1)
            await ctx.tick()
            ctx.set(unit.start, 0)
            passes = [sums[p, k] for p in range(sums.shape[0]) for k in range(sums.shape[1])]
            deliveries = []          # (first cycle, sums) per committed pass, in order
            committed, cycle, since_commit = 0, 0, lanes
            writes, words = [], []
            while ctx.get(unit.busy):
                assert cycle < 20000, "the group does not finish"
                commit = (committed < len(passes) and ctx.get(unit.pass_ready)
                          and since_commit >= lanes and rng.random() < commit_rate)
                ctx.set(unit.pass_commit, commit)
                if commit:
                    # The sums follow at least one cycle later, after the previous pass's.
                    begin = cycle + rng.choice([1, 1, 2, 4, 7])
                    if deliveries:
                        begin = max(begin, deliveries[-1][0] + lanes)
                    deliveries.append((begin, passes[committed]))
                    committed += 1
                    since_commit = 0
                since_commit += 1
                current = [(begin, values) for begin, values in deliveries
                           if begin <= cycle < begin + lanes]
                if current:
                    begin, values = current[0]
                    ctx.set(unit.sums, {"valid": 1, "lane": cycle - begin,
                                        "value": int(values[cycle - begin])})
                else:
                    ctx.set(unit.sums.valid, 0)
                ready = rng.random() < ready_rate
                ctx.set(unit.activation_write.ready, ready)
                if ready and ctx.get(unit.activation_write.valid):
                    payload = ctx.get(unit.activation_write.payload)
                    writes.append((int(payload.addr), int(payload.data)))
                if ctx.get(unit.output_write.en):
                    words.append((int(ctx.get(unit.output_write.addr)),
                                  int(ctx.get(unit.output_write.data))))
                await ctx.tick()
                cycle += 1
            ctx.set(unit.pass_commit, 0)
            ctx.set(unit.sums.valid, 0)
            assert committed == len(passes)
            assert all(begin + lanes <= cycle for begin, _ in deliveries)
            results.append((writes, words))

    sim = checked_simulator(bench)
    sim.add_clock(PERIOD)
    sim.add_testbench(testbench)
    sim.run()
    return results


def check(groups, results, config, *, activation_addr_width=12, output_addr_width=10):
    for (settings, _, _, expected), (writes, words) in zip(groups, results):
        if settings["final"]:
            assert writes == []
            got, width = words, output_addr_width
        else:
            assert words == []
            got, width = writes, activation_addr_width
        mask = (1 << width) - 1
        addresses = [address for address, _ in got]
        assert len(set(addresses)) == len(addresses), "an address was written twice"
        assert dict(got) == {address & mask: value for address, value in expected.items()}


def random_groups(rng, lanes, acc_bits, count, *, windows=(1, 6)):
    """Random settings; each group's parameter words have their own addresses."""
    groups = []
    for group in range(count):
        pool = rng.random() < 0.5
        final = rng.random() < 0.3
        channels = rng.choice([lanes, rng.randint(1, lanes)])
        count_windows = rng.randint(*windows)
        plane = count_windows + rng.randint(0, 5)
        groups.append(make_group(
            rng, lanes, acc_bits, pool=pool, final=final, relu=rng.random() < 0.5,
            channels=channels, windows=count_windows,
            param_base=group * lanes,
            out_base=rng.randint(0, 200), plane=plane))
    return groups


@pytest.mark.parametrize("lanes", [1, 2, 3, 8])
@pytest.mark.parametrize("digits", [2, 1])
def test_random_groups_match_the_golden_model(lanes, digits):
    config = AcceleratorConfig(lanes=lanes)
    rng = random.Random(100 * lanes + digits)
    groups = random_groups(rng, lanes, config.accumulator_bits, 8)
    results = run_groups(config, groups, seed=lanes + digits, digits=digits)
    check(groups, results, config)


@pytest.mark.parametrize("pool", [False, True])
def test_producer_at_full_speed_and_memory_always_free(pool):
    """Passes committed as soon as allowed, sums back to back, no write stalls."""
    config = AcceleratorConfig(lanes=4)
    rng = random.Random(7 + pool)
    groups = [make_group(rng, 4, 32, pool=pool, final=final, relu=relu, channels=channels,
                         windows=9, param_base=4 * i, out_base=17 * i, plane=11)
              for i, (final, relu, channels) in enumerate([(False, False, 4), (False, True, 3),
                                                           (True, True, 4), (True, False, 2)])]
    results = run_groups(config, groups, seed=3, ready_rate=1.0, commit_rate=1.0)
    check(groups, results, config)


def test_narrow_accumulator_and_rare_memory_grants():
    config = AcceleratorConfig(lanes=3, accumulator_bits=26)
    rng = random.Random(11)
    groups = random_groups(rng, 3, 26, 6)
    results = run_groups(config, groups, seed=5, ready_rate=0.15)
    check(groups, results, config)


def test_extreme_parameters_and_accumulators():
    """Shift 1 and 62, multiplier 2**14 and 2**15 - 1, accumulators at their limits."""
    config = AcceleratorConfig(lanes=4)
    rng = random.Random(13)
    low, high = -2 ** 31, 2 ** 31 - 1
    groups = []
    for i, (multiplier, shift) in enumerate([(M_LOW, 1), (M_HIGH, 1), (M_LOW, 62), (M_HIGH, 62),
                                             (M_HIGH, 46), (M_LOW, 47), (M_HIGH, 16),
                                             (M_LOW, 33)]):
        settings, params, sums, expected = make_group(
            rng, 4, 32, pool=i % 2 == 1, final=False, relu=i % 4 == 3, channels=4, windows=4,
            param_base=4 * i, out_base=0, plane=4)
        for word in params:
            word.update(multiplier=multiplier, shift=shift, bias=0)
        edge = min(((1 << shift) - (1 << (shift - 1))) // multiplier, high)
        extremes = [low, high, low + 1, high - 1, 0, -1, 1, edge, -edge, edge + 1]
        sums = np.array([[[rng.choice(extremes) for _ in range(4)] for _ in range(sums.shape[1])]
                         for _ in range(4)], dtype=np.int64)
        acc = sums
        values = requantise(acc.reshape(-1, 4), np.full(4, multiplier),
                            np.full(4, shift)).reshape(acc.shape).astype(np.int64)
        if i % 4 == 3:
            values = np.maximum(values, 0)
        pooled = values.max(axis=1)
        expected = {l * 4 + p: int(pooled[p, l]) for p in range(4) for l in range(4)}
        groups.append((settings, params, sums, expected))
    results = run_groups(config, groups, seed=1)
    check(groups, results, config)


def refused(match, config=None, **kwargs):
    arguments = {"param_addr_width": 8, "activation_addr_width": 12, "output_addr_width": 8}
    arguments.update(kwargs)
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError, match=match):
            OutputUnit(config or AcceleratorConfig(lanes=2), **arguments)
        gc.collect()


@pytest.mark.parametrize("name", ["param_addr_width", "activation_addr_width",
                                  "output_addr_width"])
@pytest.mark.parametrize("value", [0, 25, 3.5])
def test_bad_address_width_is_refused(name, value):
    refused(name, **{name: value})


@pytest.mark.parametrize("value", [0, 3, True])
def test_bad_digits_per_cycle_is_refused(value):
    refused("digits_per_cycle", digits_per_cycle=value)


def test_wide_accumulator_is_refused():
    refused("accumulator_bits", AcceleratorConfig(lanes=2, accumulator_bits=40))


def test_other_activation_width_is_refused():
    refused("activation_bits", AcceleratorConfig(lanes=2, activation_bits=6,
                                                 accumulator_bits=32))


def test_cycles_per_output():
    config = AcceleratorConfig(lanes=8)
    widths = {"param_addr_width": 8, "activation_addr_width": 12, "output_addr_width": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        assert OutputUnit(config, **widths).cycles_per_output == 4
        assert OutputUnit(config, digits_per_cycle=1, **widths).cycles_per_output == 8
        gc.collect()
