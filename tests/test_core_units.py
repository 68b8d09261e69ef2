"""The units of SDCore (sd_hw/core/), each alone in the Amaranth simulator.

Each test drives one unit through its signature, as its docstring describes
it: streams through sim/streams.py with random stalls, memories as
``amaranth.lib.memory.Memory`` instances behind the unit's read ports
(synchronous, one cycle of latency, not transparent), write ports watched
cycle by cycle. Expected values are computed in this file from the
contract (NumPy, plain Python) or by the golden model
(``sim.golden.reference.requantise``, ``_maxpool``), never from the RTL.
"""

import gc
import random
import warnings
from fractions import Fraction
from math import floor

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, UnusedElaboratable, unsigned
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.core.activation_pair_reader import ActivationPairReader
from sd_hw.core.activation_reader import ActivationReader
from sd_hw.core.basis_assembler import BasisAssembler
from sd_hw.core.config import BASIS_WORD_BITS
from sd_hw.core.fork import StreamFork
from sd_hw.core.layouts import (GROUP_WORDS, OpKind, Window, entry_layout,
                                group_layout, op_layout, pack_words, requant_layout)
from sd_hw.core.output_stage import OutputStage
from sd_hw.core.pair_queue import PairQueue
from sd_hw.core.pool_engine import PoolEngine
from sd_hw.core.region_reader import RegionReader
from sd_hw.core.row_fetcher import RowFetcher
from sd_hw.core.row_issuer import RowIssuer
from sd_hw.core.sequencer import LayerSequencer
from sd_hw.datapath.layouts import basis_layout
from sim.golden.reference import _maxpool, requantise
from sim.streams import checked_simulator, stream_get, stream_put


PERIOD = 1e-6
WORD_MASK = (1 << 32) - 1


# Harness -------------------------------------------------------------------------------

class MemoryHarness(Elaboratable):
    """``unit`` with each read port of ``reads`` served by its own Memory.

    ``reads`` is a list of ``(port, init)``: a read-port member of the unit
    (which the unit drives: ``addr``, ``en``; it receives ``data``) and the
    contents of the memory behind it, ``2 ** len(port.addr)`` words deep.
    """

    def __init__(self, unit, reads):
        self.unit = unit
        self.reads = reads

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        for i, (port, init) in enumerate(self.reads):
            depth = 2 ** len(port.addr)
            width = len(port.data)
            assert len(init) <= depth
            memory = m.submodules[f"memory{i}"] = Memory(
                shape=unsigned(width), depth=depth,
                init=[value & ((1 << width) - 1) for value in init])
            read = memory.read_port()
            m.d.comb += [read.addr.eq(port.addr), read.en.eq(port.en), port.data.eq(read.data)]
        return m


def simulate(dut, testbenches, monitors=(), *, max_cycles=20000):
    """Run until every testbench returns; ``monitors`` run in the background.

    A background watchdog fails the run after ``max_cycles`` cycles, so
    that a unit that hangs fails its test instead of the whole session.
    """
    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for monitor in monitors:
        sim.add_testbench(monitor, background=True)

    async def watchdog(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
        raise AssertionError(f"the simulation did not finish within {max_cycles} cycles")
    sim.add_testbench(watchdog, background=True)
    sim.run()


def recorder(log, *signals):
    """A monitor appending, for every cycle, the values ``signals`` had in it.

    Entry ``c`` of ``log`` is the cycle that ends with the ``c + 1``-th clock
    edge; a testbench that sets a signal before its first ``tick`` sets it
    in cycle 0.
    """
    async def monitor(ctx):
        while True:
            _, _, *values = await ctx.tick().sample(*signals)
            log.append(tuple(values))
    return monitor


async def pulse(ctx, signal):
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


def signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def column(log, index):
    return [entry[index] for entry in log]


# StreamFork ----------------------------------------------------------------------------

@pytest.mark.parametrize("count, seed", [(1, 0), (2, 1), (3, 2), (5, 3)])
def test_stream_fork_every_output_gets_every_payload_in_order(count, seed):
    rng = random.Random(seed)
    payloads = [rng.randrange(1 << 12) for _ in range(80)]
    dut = StreamFork(unsigned(12), count)
    received = [None] * count
    stalls = [rng.choice([0.0, 0.2, 0.5, 0.8]) for _ in range(count)]

    async def producer(ctx):
        await stream_put(ctx, dut.i, payloads, stall=0.3, rng=random.Random(seed + 100))

    def consumer(k):
        async def testbench(ctx):
            received[k] = await stream_get(ctx, dut.o[k], len(payloads), stall=stalls[k],
                                           rng=random.Random(seed * 10 + k))
        return testbench

    simulate(dut, [producer] + [consumer(k) for k in range(count)])
    for k in range(count):
        assert received[k] == payloads, f"output {k}"


@pytest.mark.parametrize("count", [1, 3])
def test_stream_fork_full_rate(count):
    payloads = list(range(40))
    dut = StreamFork(unsigned(8), count)
    log = []
    received = [None] * count

    async def producer(ctx):
        await stream_put(ctx, dut.i, payloads)

    def consumer(k):
        async def testbench(ctx):
            received[k] = await stream_get(ctx, dut.o[k], len(payloads))
        return testbench

    simulate(dut, [producer] + [consumer(k) for k in range(count)],
             [recorder(log, dut.i.valid, dut.i.ready)])
    assert all(r == payloads for r in received)
    taken = [c for c, (valid, ready) in enumerate(log) if valid and ready]
    assert taken == list(range(len(payloads)))


def test_stream_fork_rejects_no_outputs():
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="count"):
            StreamFork(unsigned(8), 0)
        gc.collect()


# RegionReader --------------------------------------------------------------------------

def header_of(length, data_width):
    """The little-endian length header of a self-describing region."""
    count = -(-16 // data_width)
    return [(length >> (data_width * i)) & ((1 << data_width) - 1) for i in range(count)]


def run_region_reader(*, data_width, header, jobs, contents, stall, seed, addr_width=10):
    """Run ``jobs`` (base, length, repeats) one after the other: the unit, its log, the words."""
    dut = RegionReader(addr_width=addr_width, data_width=data_width, header=header)
    harness = MemoryHarness(dut, [(dut.port, contents)])
    log = []
    received = []
    rng = random.Random(seed)

    async def testbench(ctx):
        for base, length, repeats in jobs:
            ctx.set(dut.base, base)
            # With a header the length input is unused: give it a wrong value.
            ctx.set(dut.length, rng.randrange(1, 1 << 16) if header else length)
            ctx.set(dut.repeats, repeats)
            await pulse(ctx, dut.start)
            received.append(await stream_get(ctx, dut.words, length * repeats, stall=stall,
                                             rng=random.Random(rng.random())))
            await ctx.tick().until(dut.busy == 0)
            for _ in range(rng.randrange(3)):
                await ctx.tick()
        for _ in range(8):
            await ctx.tick()

    simulate(harness, [testbench],
             [recorder(log, dut.start, dut.busy, dut.words.valid, dut.words.ready, dut.read)])
    return dut, log, received


def check_region_log(dut, log, jobs, *, full_rate=False):
    starts = [c for c, entry in enumerate(log) if entry[0]]
    assert len(starts) == len(jobs)
    ends = starts[1:] + [len(log)]
    for (base, length, repeats), start, end in zip(jobs, starts, ends):
        window = log[start:end]
        takes = [start + c for c, (_, _, valid, ready, _) in enumerate(window) if valid and ready]
        reads = sum(entry[4] for entry in window)
        assert len(takes) == length * repeats
        assert reads == dut.header_words + length * repeats
        # busy: high from the cycle after start until the last word is taken,
        # low a cycle later (an empty region: once its header has been read).
        busy = [entry[1] for entry in log[start + 1:end]]
        if takes:
            high, low = takes[-1] - start, takes[-1] - start + 2
        else:
            high, low = 1, 2 * dut.header_words + 4
        assert all(busy[:high]), "busy falls before the last word is taken"
        assert not any(busy[low:]), "busy stays high after the last word"
        last = takes[-1] if takes else start
        if full_rate and takes:
            assert takes == list(range(takes[0], takes[0] + len(takes))), "not one word per cycle"
            assert last - start <= length * repeats + 8
    assert not any(entry[2] for entry in log[:starts[0] + 1]), "words before start"


@pytest.mark.parametrize("seed", range(3))
def test_region_reader_plain(seed):
    rng = random.Random(seed)
    contents = [rng.randrange(1 << 16) for _ in range(1024)]
    jobs = [(rng.randrange(900), rng.randrange(1, 24), rng.randrange(1, 4)) for _ in range(4)]
    jobs += [(5, 0, 3), (7, 4, 0), (rng.randrange(900), rng.randrange(1, 24), 2)]
    dut, log, received = run_region_reader(data_width=16, header=False, jobs=jobs,
                                           contents=contents, stall=0.4, seed=seed)
    for (base, length, repeats), words in zip(jobs, received):
        assert words == contents[base:base + length] * repeats
    check_region_log(dut, log, jobs)


@pytest.mark.parametrize("data_width, lengths", [
    (8, [260, 5, 0, 1]),
    (16, [37, 0, 1, 300]),
    (32, [12, 0, 65]),
])
def test_region_reader_header(data_width, lengths):
    rng = random.Random(data_width)
    contents = [rng.randrange(1 << data_width) for _ in range(1024)]
    jobs = []
    base = 3
    for length in lengths:
        header = header_of(length, data_width)
        contents[base:base + len(header)] = header
        jobs.append((base, length, rng.randrange(1, 3)))
        base += len(header) + length + rng.randrange(5)
    assert base < 1024
    dut, log, received = run_region_reader(data_width=data_width, header=True, jobs=jobs,
                                           contents=contents, stall=0.3, seed=data_width)
    assert dut.header_words == -(-16 // data_width)
    for (base, length, repeats), words in zip(jobs, received):
        first = base + dut.header_words
        assert words == contents[first:first + length] * repeats
    check_region_log(dut, log, jobs)


@pytest.mark.parametrize("data_width, header", [(16, False), (8, True), (32, True)])
def test_region_reader_full_rate(data_width, header):
    rng = random.Random(7)
    contents = [rng.randrange(1 << data_width) for _ in range(1024)]
    jobs = [(10, 30, 3), (200, 1, 4), (300, 17, 1)]
    if header:
        for base, length, _ in jobs:
            words = header_of(length, data_width)
            contents[base:base + len(words)] = words
    dut, log, received = run_region_reader(data_width=data_width, header=header, jobs=jobs,
                                           contents=contents, stall=0.0, seed=7)
    for (base, length, repeats), words in zip(jobs, received):
        first = base + dut.header_words
        assert words == contents[first:first + length] * repeats
    check_region_log(dut, log, jobs, full_rate=True)


# BasisAssembler ------------------------------------------------------------------------

@pytest.mark.parametrize("basis_bits, seed, repeats", [(8, 0, 1), (5, 1, 3), (16, 2, 1),
                                                      (2, 3, 2)])
def test_basis_assembler(basis_bits, seed, repeats):
    """Each basis assembled from its words and sent ``repeats`` times, under random stalls."""
    config = AcceleratorConfig(basis_bits=basis_bits, code_bits=1, activation_bits=4,
                               accumulator_bits=48)
    layout = basis_layout(config)
    rng = random.Random(seed)
    low, high = -(1 << (basis_bits - 1)), (1 << (basis_bits - 1)) - 1
    bases = [[[rng.choice([low, high, rng.randint(low, high)]) for _ in range(3)]
              for _ in range(3)] for _ in range(12)]
    count = -(-9 * basis_bits // BASIS_WORD_BITS)
    spare = count * BASIS_WORD_BITS - 9 * basis_bits
    words = []
    for basis in bases:
        raw = layout.const(basis).as_value().value
        raw |= rng.randrange(1 << spare) << (9 * basis_bits)  # unused top bits: ignored
        words += [(raw >> (BASIS_WORD_BITS * i)) & 0xffff for i in range(count)]

    dut = BasisAssembler(config)
    assert dut.words_per_basis == count
    received = []

    async def producer(ctx):
        ctx.set(dut.repeats, repeats)
        await stream_put(ctx, dut.words, words, stall=0.3, rng=random.Random(seed))

    async def consumer(ctx):
        received.extend(await stream_get(
            ctx, dut.basis, repeats * len(bases), stall=0.6, rng=random.Random(seed + 1),
            convert=lambda p: [[p[j][c] for c in range(3)] for j in range(3)]))

    simulate(dut, [producer, consumer])
    assert received == [basis for basis in bases for _ in range(repeats)]


@pytest.mark.parametrize("basis_bits", [8, 5])
def test_basis_assembler_holds_its_words_while_a_basis_waits(basis_bits):
    config = AcceleratorConfig(basis_bits=basis_bits)
    dut = BasisAssembler(config)
    count = dut.words_per_basis
    words = list(range(1, 3 * count + 1))
    log = []

    async def producer(ctx):
        await stream_put(ctx, dut.words, words)

    async def consumer(ctx):
        for _ in range(5 * count):
            await ctx.tick()
        await stream_get(ctx, dut.basis, 3)

    simulate(dut, [producer, consumer],
             [recorder(log, dut.words.valid, dut.words.ready, dut.basis.valid)])
    # The assembled words are the payload: while the first basis waits, exactly its
    # words have been taken (the PE's second bank is where the next one waits).
    waiting = log[:5 * count]
    assert sum(valid and ready for valid, ready, _ in waiting) == count
    assert waiting[-1][2]


# OutputStage ---------------------------------------------------------------------------

OUTPUT_CONFIGS = {
    "acc16": AcceleratorConfig(lanes=3, basis_bits=4, code_bits=1, accumulator_bits=16),
    "acc32": AcceleratorConfig(lanes=4),
    "acc48": AcceleratorConfig(lanes=2, accumulator_bits=48),
    "lane1": AcceleratorConfig(lanes=1),
}
PARAM_ADDR_WIDTH = 8
ACTIVATION_ADDR_WIDTH = 10
OUTPUT_ADDR_WIDTH = 8


def acc_limits(config):
    bits = config.accumulator_bits
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def bias_limits(config):
    low, high = acc_limits(config)
    return max(low, -(1 << 31)), min(high, (1 << 31) - 1)


def sum_for(config, acc, bias):
    """A sum in the accumulator range with ``sum + bias`` as close to ``acc`` as it allows."""
    low, high = acc_limits(config)
    return min(max(acc - bias, low), high)


def random_mult(rng):
    return rng.randrange(1 << 14, 1 << 15)


class Group:
    """One start of the output stage: its inputs, parameters and sums."""

    def __init__(self, config, rng, *, active, passes, final, relu, bias, multiplier, shift,
                 sums):
        lanes = config.lanes
        self.active, self.passes, self.final, self.relu = active, passes, final, relu
        self.bias = list(bias) + [0] * (lanes - len(bias))
        self.multiplier = list(multiplier) + [1 << 14] * (lanes - len(multiplier))
        self.shift = list(shift) + [1] * (lanes - len(shift))
        low, high = acc_limits(config)
        # Sums of inactive lanes are taken and dropped: any value will do.
        self.sums = [[sums[p][l] if l < active else rng.randint(low, high)
                      for l in range(lanes)] for p in range(passes)]
        self.stride = rng.choice([1, passes, passes + rng.randrange(4)])
        limit = 1 << (OUTPUT_ADDR_WIDTH if final else ACTIVATION_ADDR_WIDTH)
        span = max(passes - 1 + (lanes - 1) * self.stride, 0)
        if span >= limit:
            self.stride = 1
            span = passes - 1 + lanes - 1
        self.output_base = rng.randrange(limit - span)
        self.param_base = 0

    def param_words(self):
        words = []
        for l in range(self.active):
            words.append(self.bias[l] & WORD_MASK)
            words += pack_words(requant_layout(), {"multiplier": self.multiplier[l],
                                                   "shift": self.shift[l]})
        return words

    def expected_writes(self):
        """(address, value) of every write in order; activations as int8, finals as words."""
        active = self.active
        if self.passes == 0 or active == 0:
            return []
        acc = np.array(self.sums, dtype=np.int64)[:, :active] + \
            np.array(self.bias[:active], dtype=np.int64)
        if self.final:
            values = np.maximum(acc, 0) if self.relu else acc
            values = [[int(v) & WORD_MASK for v in row] for row in values]
        else:
            y = requantise(acc, np.array(self.multiplier[:active]),
                           np.array(self.shift[:active], dtype=np.uint8)).astype(np.int64)
            values = (np.maximum(y, 0) if self.relu else y).tolist()
        return [(self.output_base + p + l * self.stride, values[p][l])
                for p in range(self.passes) for l in range(active)]


def random_group(config, rng, *, final, relu, active=None, passes=None):
    lanes = config.lanes
    active = rng.randint(1, lanes) if active is None else active
    passes = rng.randint(1, 9) if passes is None else passes
    low, high = acc_limits(config)
    blow, bhigh = bias_limits(config)
    bias = [rng.randint(blow // 2, bhigh // 2) for _ in range(active)]
    shift = [rng.randint(1, 62) for _ in range(active)]
    # Accumulators near the requantisation's interesting range for the lane's shift.
    sums = []
    for _ in range(passes):
        row = []
        for l in range(active):
            scale = 1 << max(0, min(shift[l] - 14 + 8, config.accumulator_bits - 1))
            acc = rng.choice([rng.randint(low, high), rng.randint(-scale, scale)])
            row.append(sum_for(config, acc, bias[l]))
        sums.append(row)
    return Group(config, rng, active=active, passes=passes, final=final, relu=relu, bias=bias,
                 multiplier=[random_mult(rng) for _ in range(active)], shift=shift, sums=sums)


def extreme_group(config, rng, *, final, relu, phase):
    """Accumulators at both ends of their range, shifts 1 and 62, bias 0 and extreme.

    Lane ``l`` takes pattern ``(l + phase) % 4``, so that groups of every
    phase together cover each pattern on few lanes too.
    """
    lanes = config.lanes
    low, high = acc_limits(config)
    blow, bhigh = bias_limits(config)
    specials = [low, high, low + 1, high - 1, 0, 1, -1]
    pattern = [(l + phase) % 4 for l in range(lanes)]
    shift = [[1, 62, rng.randint(2, 61), 62][k] for k in pattern]
    multiplier = [[(1 << 15) - 1, 1 << 14, random_mult(rng), (1 << 15) - 1][k] for k in pattern]
    bias = [[0, 0, blow, bhigh][k] for k in pattern]
    passes = len(specials)
    sums = [[sum_for(config, specials[(p + l) % passes], bias[l]) for l in range(lanes)]
            for p in range(passes)]
    return Group(config, rng, active=lanes, passes=passes, final=final, relu=relu, bias=bias,
                 multiplier=multiplier, shift=shift, sums=sums)


def tie_group(config, rng, *, relu):
    """Accumulators whose ``acc * multiplier`` lies exactly half way between two results."""
    lanes = config.lanes
    low, high = acc_limits(config)
    shifts, multipliers, accs = [], [], []
    for l in range(lanes):
        while True:
            shift = rng.randint(7, 62)
            t = min(shift - 1, 14)
            odd_low = -(-(1 << 14) // (1 << t)) | 1
            u = rng.randrange(odd_low, (1 << 15) >> t, 2) if odd_low < (1 << 15) >> t else 0
            scale = 1 << (shift - 1 - t)
            if u and scale <= high:
                break
        shifts.append(shift)
        multipliers.append(u << t)
        # acc * mult = w * u * 2**(shift - 1) with w * u odd: a tie; result ~ w * u / 2.
        w_max = max(1, 300 // u)
        lane = []
        for _ in range(8):
            w = rng.randrange(-w_max, w_max + 1) | 1
            while abs(w) * scale > high:
                w = w // 2 | 1
            lane.append(w * scale)
        accs.append(lane)
    for acc_lane, mult, shift in zip(accs, multipliers, shifts):
        for acc in acc_lane:
            assert (acc * mult) % (1 << shift) == 1 << (shift - 1)
            assert low <= acc <= high
    bias = [rng.randint(-50, 50) for _ in range(lanes)]
    sums = [[accs[l][p] - bias[l] for l in range(lanes)] for p in range(8)]
    for row in sums:
        assert all(low <= s <= high for s in row)
    return Group(config, rng, active=lanes, passes=8, final=False, relu=relu, bias=bias,
                 multiplier=multipliers, shift=shifts, sums=sums)


def saturation_group(config, rng, *, relu):
    """Results just inside and just outside -128..127, and far outside."""
    lanes = config.lanes
    low, high = acc_limits(config)
    targets = [126, 127, 128, 129, 1000, -127, -128, -129, -130, -1000]
    shifts = [rng.randint(15, min(62, config.accumulator_bits + 2)) for _ in range(lanes)]
    multipliers = [random_mult(rng) for _ in range(lanes)]
    bias = [rng.randint(-3, 3) for _ in range(lanes)]
    sums = []
    for p, target in enumerate(targets):
        row = []
        for l in range(lanes):
            # The smallest acc whose result is `target`: exists since 2**shift >= multiplier.
            acc = -(-((target << shifts[l]) - (1 << (shifts[l] - 1))) // multipliers[l])
            row.append(sum_for(config, acc, bias[l]))
        sums.append(row)
    return Group(config, rng, active=lanes, passes=len(targets), final=False, relu=relu,
                 bias=bias, multiplier=multipliers, shift=shifts, sums=sums)


def groups_for(config, seed):
    rng = random.Random(seed)
    lanes = config.lanes
    groups = [random_group(config, rng, final=final, relu=relu)
              for final in (False, True) for relu in (False, True)]
    groups += [random_group(config, rng, final=False, relu=True, active=lanes),
               random_group(config, rng, final=False, relu=False, active=0),
               random_group(config, rng, final=True, relu=False, passes=0)]
    groups += [extreme_group(config, rng, final=final, relu=relu, phase=phase)
               for phase, (final, relu) in enumerate(
                   [(False, False), (False, True), (True, False), (True, True)])]
    groups += [tie_group(config, rng, relu=False), tie_group(config, rng, relu=True),
               saturation_group(config, rng, relu=False), saturation_group(config, rng, relu=True)]
    rng.shuffle(groups)
    base = 0
    for group in groups:
        group.param_base = base
        base += 2 * group.active + rng.randrange(3)
    assert base <= 1 << PARAM_ADDR_WIDTH
    return groups


def run_output_stage(config, groups, *, stall, seed):
    dut = OutputStage(config, param_addr_width=PARAM_ADDR_WIDTH,
                      activation_addr_width=ACTIVATION_ADDR_WIDTH,
                      output_addr_width=OUTPUT_ADDR_WIDTH)
    params = [0] * (1 << PARAM_ADDR_WIDTH)
    for group in groups:
        words = group.param_words()
        params[group.param_base:group.param_base + len(words)] = words
    harness = MemoryHarness(dut, [(dut.param_port, params)])
    lanes = config.lanes
    log = []

    async def control(ctx):
        for group in groups:
            for name in ("output_base", "param_base", "passes", "stride", "final", "relu"):
                ctx.set(getattr(dut, name), getattr(group, name))
            ctx.set(dut.lanes, group.active)
            await pulse(ctx, dut.start)
            await ctx.tick().until(dut.busy == 0)

    def lane_driver(l):
        sums = [row[l] for group in groups for row in group.sums]

        async def testbench(ctx):
            await stream_put(ctx, dut.sums[l], sums, stall=stall, rng=random.Random(seed + l))
        return testbench

    aw, ow = dut.activation_write, dut.output_write
    signals = [dut.start, dut.busy, aw.en, aw.addr, aw.data, ow.en, ow.addr, ow.data]
    signals += [s.valid for s in dut.sums] + [s.ready for s in dut.sums]
    simulate(harness, [control] + [lane_driver(l) for l in range(lanes)],
             [recorder(log, *signals)])
    return dut, log


@pytest.mark.parametrize("name, stall", [("acc16", 0.4), ("acc32", 0.4), ("acc48", 0.4),
                                         ("lane1", 0.3), ("acc16", 0.0), ("acc32", 0.0),
                                         ("acc48", 0.0)])
def test_output_stage(name, stall):
    config = OUTPUT_CONFIGS[name]
    lanes = config.lanes
    seed = sum(map(ord, name)) + int(stall * 10)
    groups = groups_for(config, seed)
    dut, log = run_output_stage(config, groups, stall=stall, seed=seed)

    # Every write, in order, at its address, on the memory the group's ``final`` selects.
    activation_writes = [(c, e[3], signed(e[4], config.activation_bits))
                         for c, e in enumerate(log) if e[2]]
    output_writes = [(c, e[6], e[7]) for c, e in enumerate(log) if e[5]]
    starts = [c for c, e in enumerate(log) if e[0]]
    assert len(starts) == len(groups)
    bounds = starts[1:] + [len(log)]
    takes = [(c, l) for c, e in enumerate(log) for l in range(lanes)
             if e[8 + l] and e[8 + lanes + l]]
    for index, (group, start, end) in enumerate(zip(groups, starts, bounds)):
        mine = activation_writes if not group.final else output_writes
        other = output_writes if not group.final else activation_writes
        written = [(a, v) for c, a, v in mine if start <= c < end]
        assert not [w for w in other if start <= w[0] < end], f"group {index}: wrong memory"
        assert written == group.expected_writes(), f"group {index}"

        # Sums are taken lane by lane, pass by pass; each written lane's output
        # appears `latency` cycles after its sum was taken.
        group_takes = [(c, l) for c, l in takes if start <= c < end]
        assert [l for _, l in group_takes] == list(range(lanes)) * group.passes
        taken_written = [c for c, l in group_takes if l < group.active]
        write_cycles = [c for c, _, _ in mine if start <= c < end]
        assert [w - t for t, w in zip(taken_written, write_cycles)] == \
            [OutputStage.latency] * len(write_cycles)
        if stall == 0.0 and group_takes:
            cycles = [c for c, _ in group_takes]
            assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))
        busy = [e[1] for e in log[start + 1:end]]
        last = max(write_cycles + [c for c, _ in group_takes] + [start + 1])
        assert all(busy[:last - start]), f"group {index}: busy falls early"


def test_output_stage_edge_cases_are_covered():
    """The directed groups really reach the cases they are meant for."""
    for name, config in OUTPUT_CONFIGS.items():
        groups = groups_for(config, 5)
        pre_clamp = []
        ties = 0
        for group in groups:
            if group.final:
                continue
            for row in group.sums:
                for l in range(group.active):
                    acc = row[l] + group.bias[l]
                    mult, shift = group.multiplier[l], group.shift[l]
                    value = (acc * mult + (1 << (shift - 1))) >> shift
                    assert value == floor(Fraction(acc * mult, 1 << shift) + Fraction(1, 2))
                    pre_clamp.append(value)
                    ties += (acc * mult) % (1 << shift) == 1 << (shift - 1)
        assert {127, 128, -128, -129} <= set(pre_clamp), name
        assert ties >= 8, name
        low, high = acc_limits(config)
        accs = {row[l] + g.bias[l] for g in groups for row in g.sums for l in range(g.active)}
        assert {low, high} <= accs, name
        shifts = {s for g in groups for s in g.shift[:g.active]}
        assert {1, 62} <= shifts, name


# PoolEngine ----------------------------------------------------------------------------

POOL_ADDR_WIDTH = 10


def run_pool_engine(config, memory, ops):
    """Run ``ops`` (dicts of the engine's inputs) in turn; the writes of each."""
    dut = PoolEngine(config, addr_width=POOL_ADDR_WIDTH)
    init = [int(v) for v in memory]
    harness = MemoryHarness(dut, [(dut.ports[0], init), (dut.ports[1], init)])
    log = []

    async def control(ctx):
        for op in ops:
            for name, value in op.items():
                ctx.set(getattr(dut, name), value)
            await pulse(ctx, dut.start)
            await ctx.tick().until(dut.busy == 0)
        await ctx.tick()

    w = dut.activation_write
    simulate(harness, [control], [recorder(log, dut.start, dut.busy, w.en, w.addr, w.data,
                                           dut.reads)])
    starts = [c for c, e in enumerate(log) if e[0]]
    results = []
    for start, end in zip(starts, starts[1:] + [len(log)]):
        window = log[start:end]
        writes = [(e[3], signed(e[4], config.activation_bits)) for e in window if e[2]]
        busy = [e[1] for e in window]
        idle = busy.index(0, 1) if 0 in busy[1:] else len(busy)
        results.append(dict(writes=writes, reads=sum(e[5] for e in window), cycles=idle,
                            busy_after_idle=any(busy[idle:])))
    return results


@pytest.mark.parametrize("seed, activation_bits", [(0, 8), (1, 8), (2, 4)])
def test_pool_engine(seed, activation_bits):
    config = AcceleratorConfig(activation_bits=activation_bits)
    top = 1 << (activation_bits - 1)
    rng = np.random.default_rng(seed)
    memory = rng.integers(-top, top, size=1 << POOL_ADDR_WIDTH)
    shapes = [(2, 5, 7), (3, 2, 2), (1, 4, 6), (2, 3, 2), (1, 2, 9), (2, 6, 3), (1, 1, 4),
              (2, 4, 1)]
    ops, expected = [], []
    for index, (c, h, w) in enumerate(shapes):
        relu = bool(index % 2) ^ bool(seed)
        in_base = int(rng.integers(0, 512 - c * h * w))
        out_base = int(rng.integers(512, 1024 - c * h * w))
        x = memory[in_base:in_base + c * h * w].reshape(1, c, h, w)
        y = _maxpool(x)
        y = np.maximum(y, 0) if relu else y
        ops.append(dict(kind=OpKind.POOL, in_base=in_base, out_base=out_base, channels=c,
                        height=h, width=w, pixels=h * w, relu=relu))
        expected.append(([(out_base + i, int(v)) for i, v in enumerate(y.ravel())], 4 * y.size))
    for count, relu in ((1, True), (37, True), (20, False), (0, True)):
        in_base = int(rng.integers(0, 512 - count))
        out_base = int(rng.integers(512, 1024 - count))
        x = memory[in_base:in_base + count]
        y = np.maximum(x, 0) if relu else x
        ops.append(dict(kind=OpKind.COPY, in_base=in_base, out_base=out_base, channels=1,
                        height=1, width=count, pixels=count, relu=relu))
        expected.append(([(out_base + i, int(v)) for i, v in enumerate(y)], count))
    results = run_pool_engine(config, memory, ops)
    assert len(results) == len(ops)
    for op, result, (writes, reads) in zip(ops, results, expected):
        assert result["writes"] == writes, op
        assert result["reads"] == reads, op
        assert not result["busy_after_idle"]
        # Two cycles per pooled output, one per copied element, plus a fixed overhead.
        per_output = 2 if op["kind"] == OpKind.POOL else 1
        assert result["cycles"] <= per_output * len(writes) + 6, op


# ActivationReader ----------------------------------------------------------------------

ACT_ADDR_WIDTH = 9


def run_activation_reader(dut, memory, stride, requests, count, *, stall, seed, convert,
                          recorded):
    """``requests`` into an activation reader over ``memory`` (all its copies), ``count``
    rows out, both with random stalls; returns the rows (``convert``-ed) and the
    per-cycle log of ``recorded``."""
    harness = MemoryHarness(dut, [(port, memory) for port in dut.ports])
    received = []
    log = []

    async def producer(ctx):
        ctx.set(dut.stride, stride)
        await stream_put(ctx, dut.requests, requests, stall=stall, rng=random.Random(seed))

    async def consumer(ctx):
        received.extend(await stream_get(ctx, dut.rows, count, stall=stall,
                                         rng=random.Random(seed + 1), convert=convert))
        for _ in range(4):
            await ctx.tick()

    simulate(harness, [producer, consumer], [recorder(log, *recorded)])
    return received, log


@pytest.mark.parametrize("stride, stall, seed, activation_bits", [
    (1, 0.4, 0, 8), (7, 0.5, 1, 8), (64, 0.3, 2, 16), (5, 0.0, 3, 8), (3, 0.3, 4, 3)])
def test_activation_reader(stride, stall, seed, activation_bits):
    config = AcceleratorConfig(activation_bits=activation_bits, accumulator_bits=48)
    top = 1 << (activation_bits - 1)
    rng = random.Random(seed)
    depth = 1 << ACT_ADDR_WIDTH
    memory = [0 if rng.random() < 0.5 else rng.randint(-top, top - 1) for _ in range(depth)]
    requests = []
    for _ in range(120):
        valid = rng.choice([0b111, 0b111, 0b011, 0b001, 0b101, 0b110, 0b000, 0b010, 0b100])
        requests.append(dict(address=rng.randrange(depth - 2 * stride), valid=valid,
                             last=int(rng.random() < 0.3)))
    expected = [([memory[r["address"] + j * stride] if r["valid"] >> j & 1 else 0
                  for j in range(3)], int(r["last"])) for r in requests]

    dut = ActivationReader(config, addr_width=ACT_ADDR_WIDTH)
    received, log = run_activation_reader(
        dut, memory, stride, requests, len(requests), stall=stall, seed=seed,
        convert=lambda p: ([p.row[j] for j in range(3)], p.last),
        recorded=(dut.requests.valid, dut.requests.ready, dut.zero, dut.reads,
                  *[port.en for port in dut.ports]))
    assert received == expected

    taken = [c for c, e in enumerate(log) if e[0] and e[1]]
    assert len(taken) == len(requests)
    for (c, request), (row, _) in zip(zip(taken, requests), expected):
        # `zero` reports, in the cycle after a row's read, whether it is all zero.
        assert log[c + 1][2] == (row == [0, 0, 0]), f"row read in cycle {c}"
        assert log[c][3] == bin(request["valid"]).count("1")
        # Absent elements are not read.
        assert [log[c][4 + j] for j in range(3)] == [request["valid"] >> j & 1 for j in range(3)]
    others = set(range(len(log))) - set(taken)
    assert not any(log[c][3] or any(log[c][4:7]) for c in others), "reads without a request"
    assert not any(log[c][2] for c in set(range(len(log))) - {c + 1 for c in taken})
    if stall == 0.0:
        assert taken == list(range(taken[0], taken[0] + len(taken))), "not one row per cycle"


# PairQueue -----------------------------------------------------------------------------

@pytest.mark.parametrize("depth, stall, seed", [(2, 0.3, 0), (6, 0.5, 1), (5, 0.0, 2),
                                                (3, 0.0, 3)])
def test_pair_queue(depth, stall, seed):
    rng = random.Random(seed)
    entries = [rng.randrange(1 << 10) for _ in range(150)]
    dut = PairQueue(unsigned(10), depth)
    received = []
    log = []

    async def writer(ctx):
        k = 0
        while k < len(entries):
            # The writer sends at most what the queue has room for.
            room = depth - ctx.get(dut.level)
            count = min(rng.choice([0, 1, 2, 2, 2]) if stall else 2, room, len(entries) - k)
            ctx.set(dut.w_count, count)
            ctx.set(dut.w_data, [entries[k + i] if i < count else 0 for i in range(2)])
            k += count
            await ctx.tick()
        ctx.set(dut.w_count, 0)

    async def reader(ctx):
        received.extend(await stream_get(ctx, dut.r, len(entries), stall=stall,
                                         rng=random.Random(seed + 1)))

    simulate(dut, [writer, reader], [recorder(log, dut.level, dut.r.valid, dut.r.ready)])
    assert received == entries
    assert max(column(log, 0)) <= depth
    if stall == 0.0:
        taken = [c for c, (_, valid, ready) in enumerate(log) if valid and ready]
        assert taken == list(range(taken[0], taken[0] + len(entries))), "not one per cycle"


def test_pair_queue_rejects_a_depth_below_two():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="depth"):
            PairQueue(unsigned(8), 1)
        gc.collect()


# RowFetcher ----------------------------------------------------------------------------

@pytest.mark.parametrize("data_width, header_words, stall, seed", [
    (16, 1, 0.4, 0), (25, 1, 0.0, 1), (8, 2, 0.3, 2), (8, 2, 0.0, 3)])
def test_row_fetcher(data_width, header_words, stall, seed):
    rng = random.Random(seed)
    addr_width = 8
    contents = [rng.randrange(1 << data_width) for _ in range(1 << addr_width)]
    base = rng.randrange(100)
    ordinals = [rng.randrange(120) for _ in range(80)]
    expected = [contents[(base + header_words + n) % (1 << addr_width)] for n in ordinals]
    dut = RowFetcher(addr_width=addr_width, data_width=data_width, header_words=header_words)
    harness = MemoryHarness(dut, [(dut.port, contents)])
    received = []
    log = []

    async def producer(ctx):
        ctx.set(dut.base, base)
        await stream_put(ctx, dut.requests, [{"ordinal": n} for n in ordinals], stall=stall,
                         rng=random.Random(seed + 1))

    async def consumer(ctx):
        received.extend(await stream_get(ctx, dut.words, len(ordinals), stall=stall,
                                         rng=random.Random(seed + 2)))
        for _ in range(3):
            await ctx.tick()

    simulate(harness, [producer, consumer],
             [recorder(log, dut.requests.valid, dut.requests.ready, dut.words.valid,
                       dut.words.ready, dut.read, dut.busy)])
    assert received == expected
    taken = [c for c, e in enumerate(log) if e[0] and e[1]]
    assert [c for c, e in enumerate(log) if e[4]] == taken, "a read per request, no other"
    first_valid = next(c for c, e in enumerate(log) if e[2])
    assert first_valid == taken[0] + dut.latency
    assert not log[-1][5], "busy after the last word"
    if stall == 0.0:
        assert taken == list(range(taken[0], taken[0] + len(taken))), "not one per cycle"


# ActivationPairReader ------------------------------------------------------------------

def pair_reader_model(memory, requests, stride):
    """Forwarded rows ``(row, last, ordinal)`` and, per pair, (zero rows, dropped rows)."""
    rows, counts = [], []
    for pair in requests:
        slots = [pair["first"]] + ([pair["second"]] if pair["both"] else [])
        zero = dropped = 0
        for s, slot in enumerate(slots):
            row = [memory[slot["address"] + j * stride] if slot["valid"] >> j & 1 else 0
                   for j in range(3)]
            if row == [0, 0, 0]:
                zero += 1
                if not slot["last"]:
                    dropped += 1
                    continue
            rows.append((row, slot["last"], pair["ordinal"] + s))
        counts.append((zero, dropped))
    return rows, counts


def random_pair(rng, depth, stride, *, both=None):
    def slot():
        return dict(address=rng.randrange(depth - 2 * stride),
                    valid=rng.choice([0b111, 0b111, 0b011, 0b001, 0b110, 0b000]),
                    last=int(rng.random() < 0.2))
    return dict(first=slot(), second=slot(),
                both=int(rng.random() < 0.7) if both is None else both,
                ordinal=rng.randrange(1000))


@pytest.mark.parametrize("stride, stall, seed, zeros", [
    (1, 0.4, 0, 0.6), (7, 0.3, 1, 0.8), (5, 0.0, 2, 0.5), (2, 0.5, 3, 0.0)])
def test_activation_pair_reader(stride, stall, seed, zeros):
    config = AcceleratorConfig()
    rng = random.Random(seed)
    depth = 1 << ACT_ADDR_WIDTH
    memory = [0 if rng.random() < zeros else rng.choice([-128, -1, 1, 127, rng.randint(-128, 127)])
              for _ in range(depth)]
    requests = [random_pair(rng, depth, stride) for _ in range(120)]
    expected, counts = pair_reader_model(memory, requests, stride)

    dut = ActivationPairReader(config, addr_width=ACT_ADDR_WIDTH)
    received, log = run_activation_reader(
        dut, memory, stride, requests, len(expected), stall=stall, seed=seed,
        convert=lambda p: ([p.row[j] for j in range(3)], p.last, p.ordinal),
        recorded=(dut.requests.valid, dut.requests.ready, dut.zero, dut.dropped, dut.reads,
                  *[port.en for port in dut.ports]))
    assert received == expected
    taken = [c for c, e in enumerate(log) if e[0] and e[1]]
    assert len(taken) == len(requests)
    for c, request, (zero, dropped) in zip(taken, requests, counts):
        # `zero` and `dropped` report, in the cycle after a pair's read, its rows' counts.
        assert (log[c + 1][2], log[c + 1][3]) == (zero, dropped), f"pair read in cycle {c}"
        enables = [request["first"]["valid"] >> j & 1 for j in range(3)]
        enables += [request["both"] & (request["second"]["valid"] >> j & 1) for j in range(3)]
        assert list(log[c][5:11]) == enables, "absent elements or rows are read"
        assert log[c][4] == sum(enables)
    others = set(range(len(log))) - set(taken)
    assert not any(log[c][4] or any(log[c][5:11]) for c in others), "reads without a request"
    after = {c + 1 for c in taken}
    assert not any(log[c][2] or log[c][3] for c in set(range(len(log))) - after)


def test_activation_pair_reader_rate():
    """A pair per cycle while at most one row of each is forwarded; a row per cycle out."""
    config = AcceleratorConfig()
    rng = random.Random(5)
    depth = 1 << ACT_ADDR_WIDTH
    memory = [0] * (depth // 2) + [rng.randint(1, 127) for _ in range(depth // 2)]
    requests = []
    for k in range(60):
        pair = random_pair(rng, depth // 2, 1, both=1)
        pair["first"].update(valid=0b111, last=0)     # a zero row: dropped
        pair["second"].update(address=depth // 2 + rng.randrange(depth // 4), valid=0b111)
        requests.append(pair)
    dense = [random_pair(rng, depth // 4, 1, both=1) for _ in range(30)]
    for pair in dense:
        for slot in ("first", "second"):
            pair[slot].update(address=depth // 2 + rng.randrange(depth // 4), valid=0b111)
    expected, _ = pair_reader_model(memory, requests + dense, 1)
    assert len(expected) == 60 + 60

    dut = ActivationPairReader(config, addr_width=ACT_ADDR_WIDTH)
    harness = MemoryHarness(dut, [(port, memory) for port in dut.ports])
    log = []
    received = []

    async def producer(ctx):
        ctx.set(dut.stride, 1)
        await stream_put(ctx, dut.requests, requests + dense)

    async def consumer(ctx):
        received.extend(await stream_get(ctx, dut.rows, len(expected),
                                         convert=lambda p: p.ordinal))

    simulate(harness, [producer, consumer],
             [recorder(log, dut.requests.valid, dut.requests.ready, dut.rows.valid,
                       dut.rows.ready)])
    assert received == [ordinal for _, _, ordinal in expected]
    taken = [c for c, e in enumerate(log) if e[0] and e[1]]
    assert taken[:60] == list(range(taken[0], taken[0] + 60)), "not a pair per cycle"
    delivered = [c for c, e in enumerate(log) if e[2] and e[3]]
    assert delivered == list(range(delivered[0], delivered[0] + len(expected))), \
        "not a row per cycle"


# RowIssuer -----------------------------------------------------------------------------

INDEX_ADDR_WIDTH = 8


def block_entry(live, skipped, flush):
    return pack_words(entry_layout(), {"is_block": 1, "body": {"block": {
        "live": live, "skipped": skipped, "flush": flush}}})[0]


def row_entry(offset, tap, columns, last):
    return pack_words(entry_layout(), {"is_block": 0, "body": {"row": {
        "offset": offset, "tap": tap, "columns": columns, "last": last}}})[0]


def issuer_program(rng, window, *, height, width, channels, blocks):
    """Index entries of one lane group and the blocks and rows they describe."""
    entries, described = [], []
    for b in range(blocks):
        live = rng.randint(1, 5)
        skipped = rng.randint(0, 40)
        flush = b == blocks - 1 or rng.random() < 0.3
        entries.append(block_entry(live, skipped, flush))
        rows = []
        for r in range(live):
            channel = rng.randrange(channels)
            if window == Window.CONV3:
                tap = rng.randrange(3)
                offset = channel * height * width + tap * width
            else:
                tap = 1
                offset = 3 * rng.randrange(channels)
            columns = rng.choice([0b111, 0b111, 0b011, 0b001, 0b101, 0b110])
            rows.append((offset, tap, columns, r == live - 1))
            entries.append(row_entry(offset, tap, columns, r == live - 1))
        described.append((live, skipped, flush, rows))
    return entries, described


def expected_issue(window, described, *, passes, origin, height, width):
    """Commands, block ends, requests and skipped rows, from the docstring's rules."""
    commands, ends, requests, skipped = [], [], [], 0
    for p in range(passes):
        y, x = divmod(p, width)
        for live, skip, flush, rows in described:
            commands.append(live)
            ends.append(int(flush))
            skipped += skip
            for offset, tap, columns, last in rows:
                valid = 0
                for j in range(3):
                    inside = True
                    if window == Window.CONV3:
                        inside = 0 <= y + tap - 1 < height and 0 <= x + j - 1 < width
                    valid |= (columns >> j & 1 and inside) << j
                requests.append(((origin + p + offset) & 0xffff, valid, int(last)))
    return commands, ends, requests, skipped


def run_issuer(window, height, width, blocks, seed, *, lookahead, stalls):
    """A random index program through a RowIssuer with ``lookahead``, its outputs
    taken with random stalls (``stalls``: probability per stream name).

    Returns the program's ``described`` blocks, the expected ``commands``,
    ``ends``, single-row ``requests`` and ``skipped`` count, what each
    stream delivered (``got``) and the per-cycle log of busy, skipped, read.
    """
    rng = random.Random(seed)
    entries, described = issuer_program(rng, window, height=height, width=width,
                                        channels=2, blocks=blocks)
    index_base = rng.randrange(1, 200 - len(entries))
    index = [rng.randrange(1 << 32) for _ in range(1 << INDEX_ADDR_WIDTH)]
    index[index_base:index_base + len(entries)] = entries
    passes = height * width
    in_base = rng.randrange(100, 1000)
    origin = (in_base - width - 1) & 0xffff if window == Window.CONV3 else in_base
    expected = expected_issue(window, described, passes=passes, origin=origin, height=height,
                              width=width)
    commands, ends, requests, _ = expected
    if lookahead == 2:
        requests = expected_pairs(described, requests, passes=passes)
        convert = _pair_of
    else:
        def convert(p):
            return p.address, p.valid, p.last

    dut = RowIssuer(AcceleratorConfig(block_rows=8), addr_width=INDEX_ADDR_WIDTH,
                    lookahead=lookahead)
    ports = [(dut.port, index)] + ([(dut.second_port, index)] if lookahead == 2 else [])
    harness = MemoryHarness(dut, ports)
    got = {}
    log = []

    async def control(ctx):
        for name, value in dict(index_base=index_base, entries=len(entries), passes=passes,
                                window=window, origin=origin, width=width,
                                height=height).items():
            ctx.set(getattr(dut, name), value)
        await pulse(ctx, dut.start)

    def consumer(name, count, convert):
        async def testbench(ctx):
            got[name] = await stream_get(ctx, getattr(dut, name), count, stall=stalls[name],
                                         rng=random.Random(f"{seed}-{name}"), convert=convert)
            for _ in range(4):
                await ctx.tick()
        return testbench

    simulate(harness, [
        control,
        consumer("commands", len(commands), lambda p: p.rows),
        consumer("block_ends", len(ends), lambda p: p.flush),
        consumer("requests", len(requests), convert),
    ], [recorder(log, dut.busy, dut.skipped, dut.read)])
    return described, expected, got, log, passes * len(entries)


@pytest.mark.parametrize("window, height, width, blocks, seed", [
    (Window.CONV3, 3, 4, 3, 0), (Window.CONV3, 2, 2, 3, 1), (Window.CONV3, 4, 3, 2, 2),
    (Window.CONV1, 2, 3, 3, 3), (Window.LINEAR, 1, 1, 4, 4), (Window.CONV3, 2, 3, 0, 5),
])
def test_row_issuer(window, height, width, blocks, seed):
    _, (commands, ends, requests, skipped), got, log, reads = run_issuer(
        window, height, width, blocks, seed, lookahead=1,
        stalls={"commands": 0.6, "block_ends": 0.3, "requests": 0.4})
    assert got["commands"] == commands
    assert got["block_ends"] == ends
    assert got["requests"] == requests
    assert sum(column(log, 1)) == skipped
    assert sum(column(log, 2)) == reads
    assert not log[-1][0], "still busy after every entry was handed on"


def expected_pairs(described, requests, *, passes):
    """The pair requests of a lookahead-2 issuer, from its docstring's rules.

    ``requests`` are the single-row requests of :func:`expected_issue`, in
    order. Entries go in aligned pairs per pass; the rows of a pair form one
    request. Each request is ``(first, second or None, ordinal of first
    within the pass)``.
    """
    rows = iter(requests)
    pairs = []
    for _ in range(passes):
        entries = []
        for live, _, _, _ in described:
            entries += [None] + [next(rows) for _ in range(live)]
        ordinal = 0
        for k in range(0, len(entries), 2):
            in_pair = [entry for entry in entries[k:k + 2] if entry is not None]
            if in_pair:
                pairs.append((in_pair[0], in_pair[1] if len(in_pair) == 2 else None, ordinal))
                ordinal += len(in_pair)
    return pairs


def _pair_of(payload):
    first = (payload.first.address, payload.first.valid, payload.first.last)
    second = (payload.second.address, payload.second.valid, payload.second.last)
    return first, second if payload.both else None, payload.ordinal


@pytest.mark.parametrize("window, height, width, blocks, seed", [
    (Window.CONV3, 3, 4, 3, 10), (Window.CONV3, 2, 2, 4, 11), (Window.CONV1, 2, 3, 3, 12),
    (Window.LINEAR, 1, 1, 5, 13), (Window.CONV3, 2, 3, 0, 14), (Window.LINEAR, 1, 1, 1, 15),
])
def test_row_issuer_lookahead_two(window, height, width, blocks, seed):
    described, (commands, ends, requests, skipped), got, log, reads = run_issuer(
        window, height, width, blocks, seed, lookahead=2,
        stalls={"commands": 0.5, "block_ends": 0.3, "requests": 0.3})
    pairs = expected_pairs(described, requests, passes=height * width)
    assert got["commands"] == commands
    assert got["block_ends"] == ends
    assert got["requests"] == pairs
    assert sum(column(log, 1)) == skipped
    assert sum(column(log, 2)) == reads, "every entry read once per pass"
    assert not log[-1][0], "still busy after every entry was handed on"
    if any(live >= 3 for live, *_ in described):  # such a block holds an aligned row pair
        assert any(second is not None for _, second, _ in pairs), "no pair of rows issued"


def test_row_issuer_lookahead_two_rate():
    """A pair of entries per cycle, block headers included."""
    entries, described = [], []
    for block, live in enumerate([3, 1, 6, 2, 5]):
        entries.append(block_entry(live, 0, int(block == 4)))
        rows = [(10 * block + 3 * k, 1, 0b111, int(k == live - 1)) for k in range(live)]
        entries += [row_entry(*row) for row in rows]
        described.append((live, 0, block == 4, rows))
    _, _, requests, _ = expected_issue(Window.LINEAR, described, passes=3, origin=0,
                                       height=1, width=1)
    pairs = expected_pairs(described, requests, passes=3)
    index = [0] * (1 << INDEX_ADDR_WIDTH)
    index[5:5 + len(entries)] = entries
    dut = RowIssuer(AcceleratorConfig(block_rows=64), addr_width=INDEX_ADDR_WIDTH, lookahead=2)
    harness = MemoryHarness(dut, [(dut.port, index), (dut.second_port, index)])
    log = []
    got = {}

    async def control(ctx):
        for name, value in dict(index_base=5, entries=len(entries), passes=3,
                                window=Window.LINEAR, origin=0, width=1, height=1).items():
            ctx.set(getattr(dut, name), value)
        await pulse(ctx, dut.start)

    async def sink(ctx):
        got["requests"] = await stream_get(ctx, dut.requests, len(pairs), convert=_pair_of)

    async def headers(ctx):
        await stream_get(ctx, dut.commands, 3 * 5)

    async def ends(ctx):
        await stream_get(ctx, dut.block_ends, 3 * 5)

    simulate(harness, [control, sink, headers, ends],
             [recorder(log, dut.requests.valid, dut.requests.ready)])
    assert got["requests"] == pairs
    # Every pair holds a row, so a request per pair: one per cycle.
    taken = [c for c, (valid, ready) in enumerate(log) if valid and ready]
    assert len(taken) == 3 * ((len(entries) + 1) // 2)
    assert taken == list(range(taken[0], taken[0] + len(taken))), "not a pair per cycle"


# LayerSequencer ------------------------------------------------------------------------

PROGRAM_ADDR_WIDTH = 6
SEQ_INDEX_ADDR_WIDTH = 7


def random_op(rng, kind, **fields):
    op = {name: rng.randrange(1 << 16) for name in
          ("in_base", "origin", "out_base", "height", "width", "pixels", "element_stride",
           "channels", "groups", "group_table")}
    op.update(kind=kind, window=rng.choice(list(Window)), relu=rng.randrange(2),
              final=rng.randrange(2))
    op.update(fields)
    return op


def random_group_header(rng):
    header = {name: rng.randrange(1 << 16) for name in
              ("weight_base", "basis_base", "basis_words", "index_base", "entries", "output_base",
               "param_base")}
    header["lanes"] = rng.randrange(256)
    return header


def raw(layout, value):
    return layout.const(value).as_value().value


@pytest.mark.parametrize("seed", range(3))
def test_layer_sequencer(seed):
    rng = random.Random(seed)
    ops = [random_op(rng, OpKind.COMPUTE, groups=3, group_table=10),
           random_op(rng, OpKind.POOL),
           random_op(rng, OpKind.COMPUTE, groups=2, group_table=40),
           random_op(rng, OpKind.COPY),
           random_op(rng, OpKind.COMPUTE, groups=0, group_table=60),
           random_op(rng, OpKind.COMPUTE, groups=1, group_table=70)]
    program = [w for op in ops for w in pack_words(op_layout(), op)]
    index = [rng.randrange(1 << 32) for _ in range(1 << SEQ_INDEX_ADDR_WIDTH)]
    headers = {}
    for number, op in enumerate(ops):
        if op["kind"] == OpKind.COMPUTE:
            for g in range(op["groups"]):
                header = random_group_header(rng)
                headers[number, g] = header
                address = op["group_table"] + g * GROUP_WORDS
                index[address:address + GROUP_WORDS] = pack_words(group_layout(), header)
    assert len(program) <= 1 << PROGRAM_ADDR_WIDTH

    runs = [(0, len(ops)), (1, 2), (3, 0), (4, 2), (0, 0)]
    expected = []
    for first, count in runs:
        events = []
        for number in range(first, first + count):
            op = ops[number]
            if op["kind"] == OpKind.COMPUTE:
                events += [("compute", number, raw(op_layout(), op),
                            raw(group_layout(), headers[number, g])) for g in range(op["groups"])]
            else:
                events.append(("pool", number, raw(op_layout(), op), None))
        expected.append(events)

    dut = LayerSequencer(program_addr_width=PROGRAM_ADDR_WIDTH,
                         index_addr_width=SEQ_INDEX_ADDR_WIDTH)
    harness = MemoryHarness(dut, [(dut.program_port, program), (dut.index_port, index)])
    events = []
    log = []

    async def control(ctx):
        for first, count in runs:
            ctx.set(dut.first_op, first)
            ctx.set(dut.op_count, count)
            await pulse(ctx, dut.start)
            ctx.set(dut.first_op, 0)
            ctx.set(dut.op_count, 0)
            await ctx.tick().until(dut.done == 1)
            await ctx.tick()
            assert not ctx.get(dut.busy)
            for _ in range(rng.randrange(3)):
                await ctx.tick()

    def fake_unit(kind):
        start = dut.compute_start if kind == "compute" else dut.pool_start
        busy = dut.compute_busy if kind == "compute" else dut.pool_busy
        unit_rng = random.Random(seed * 3 + len(kind))

        async def testbench(ctx):
            while True:
                _, _, started, op, group, number = await ctx.tick().sample(
                    start, dut.op.as_value(), dut.group.as_value(), dut.op_index)
                if not started:
                    continue
                events.append((kind, number, op, group if kind == "compute" else None))
                ctx.set(busy, 1)
                # Sometimes longer than the sequencer takes to fetch the next operation.
                for _ in range(unit_rng.choice([1, 2, 3, 5, 20, 30])):
                    await ctx.tick()
                    # The operation and group are held while the unit runs.
                    assert ctx.get(dut.op.as_value()) == op
                    if kind == "compute":
                        assert ctx.get(dut.group.as_value()) == group
                ctx.set(busy, 0)
        return testbench

    simulate(harness, [control], [fake_unit("compute"), fake_unit("pool"),
                                  recorder(log, dut.start, dut.done, dut.compute_start,
                                           dut.pool_start, dut.compute_busy, dut.pool_busy,
                                           dut.index_port.en)])
    assert events == [event for run in expected for event in run]

    # One done per run, after every unit it started has finished; never a start
    # while a unit is busy.
    starts = [c for c, e in enumerate(log) if e[0]]
    dones = [c for c, e in enumerate(log) if e[1]]
    assert len(dones) == len(runs)
    for (start, done, end) in zip(starts, dones, starts[1:] + [len(log)]):
        assert start < done < end
        assert not any(e[2] or e[3] or e[4] or e[5] for e in log[done:end])
    for c, e in enumerate(log):
        if e[2] or e[3]:
            assert not (e[4] or e[5]), f"a start in cycle {c} while a unit is busy"
        # The index memory is the compute units' while a lane group runs.
        assert not (e[6] and e[4]), f"an index read in cycle {c} while a group runs"
