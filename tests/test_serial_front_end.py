"""The element-serial core's front end in the Amaranth simulator: records from three
weight banks (RecordReader), activations from a word-wide memory (ElementIssuer), the
lanes (MacLaneArray). Each lane group's sums, pass by pass, against a convolution or a
linear layer worked out in NumPy from the rebuilt weights (sim.golden.reference).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.mac_lanes import MacLaneArray
from sd_hw.errors import SdHwError
from sd_hw.integer_network import DecomposedWeights
from sd_hw.serial.element_issuer import ElementIssuer
from sd_hw.serial.layouts import WEIGHT_BANKS, record_reads
from sd_hw.serial.record_reader import RecordReader
from sd_hw.serial.records import Geometry, group_records
from sim.golden.reference import rebuild_weight_rows
from sim.streams import checked_simulator


PERIOD = 1e-6
BASIS_DEPTH = 16
ACTIVATION_WORDS = 512
BANK_DEPTH = 1024


class FrontEnd(Elaboratable):
    """RecordReader -> ElementIssuer -> MacLaneArray over plain memories."""

    def __init__(self, config, banks, activations, *, blocked_pattern=None):
        self.config = config
        self.reader = RecordReader(config, addr_width=10)
        self.issuer = ElementIssuer(config, basis_addr_width=4, activation_addr_width=10)
        self.lanes = MacLaneArray(config, basis_depth=BASIS_DEPTH)
        self._banks = banks
        self._activations = activations

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self.reader
        m.submodules.issuer = issuer = self.issuer
        m.submodules.lanes = lanes = self.lanes
        for b, words in enumerate(self._banks):
            bank = m.submodules[f"bank{b}"] = Memory(shape=16, depth=BANK_DEPTH, init=words)
            port = bank.read_port()
            m.d.comb += [port.addr.eq(reader.banks[b].addr), port.en.eq(reader.banks[b].en),
                         reader.banks[b].data.eq(port.data)]
        memory = m.submodules.activations = Memory(shape=16, depth=ACTIVATION_WORDS,
                                                   init=self._activations)
        port = memory.read_port()
        m.d.comb += [port.addr.eq(issuer.activations.addr), port.en.eq(issuer.activations.en),
                     issuer.activations.data.eq(port.data)]
        wiring.connect(m, reader.headers, issuer.headers)
        m.d.comb += [issuer.rows.eq(reader.rows), reader.next_rows.eq(issuer.next_rows),
                     reader.stop.eq(~issuer.busy)]
        wiring.connect(m, issuer.elements, lanes.elements)
        m.d.comb += lanes.basis_read.eq(issuer.basis_read)
        return m


def random_layer(rng, *, out_channels, rows, block_rows, prune, max_shift=7):
    """Random integer factors whose rebuilt weights fit 16 bits; `prune` of the rows zero
    in every channel (group pruning), and some rows zero in some channels only."""
    while True:
        present = rng.random((out_channels, rows, 3)) < 0.55
        present[:, rng.random(rows) < prune] = False
        present[rng.random((out_channels, rows)) < 0.15] = False
        negative = rng.random((out_channels, rows, 3)) < 0.5
        exponent = rng.integers(0, max_shift + 1, (out_channels, rows, 3)).astype(np.uint8)
        blocks = -(-rows // block_rows)
        basis = rng.integers(-128, 128, (out_channels, blocks, 3, 3)).astype(np.int8)
        weights = DecomposedWeights(present=present, negative=negative & present,
                                    exponent=np.where(present, exponent, 0).astype(np.uint8),
                                    basis=basis, block_rows=block_rows)
        rebuilt = rebuild_weight_rows(weights)
        if rebuilt.min() >= -2 ** 15 and rebuilt.max() < 2 ** 15:
            return weights


def pass_pixels(height, width, pool):
    if not pool:
        return [(y, x) for y in range(height) for x in range(width)]
    return [(2 * py + qy, 2 * px + qx) for py in range(height // 2) for px in range(width // 2)
            for qy in range(2) for qx in range(2)]


def expected_sums(weights, geometry, x, *, pool):
    """Per pass, every channel's accumulator (no bias), in the order of the passes."""
    rows = rebuild_weight_rows(weights)               # (M, R, 3)
    m = weights.out_channels
    if not geometry.conv:
        flat = np.zeros(3 * weights.rows, dtype=np.int64)
        flat[:geometry.inputs] = x
        return [rows.reshape(m, -1) @ flat]
    kernel = rows.reshape(m, geometry.channels, 3, 3)
    padded = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    sums = []
    for y, xx in pass_pixels(geometry.height, geometry.width, pool):
        window = padded[:, y:y + 3, xx:xx + 3]
        sums.append(np.einsum("mcij,cij->m", kernel, window))
    return sums


def images(config, group, in_base, x):
    """Bank images of one group's records, the lanes' basis words, the activation words."""
    lanes = config.lanes
    reads = record_reads(lanes)
    banks = [[0] * BANK_DEPTH for _ in range(WEIGHT_BANKS)]
    for k, words in enumerate(group.records):
        words = words + [0] * (reads * WEIGHT_BANKS - len(words))
        for i, word in enumerate(words):
            banks[i % WEIGHT_BANKS][k * reads + i // WEIGHT_BANKS] = word
    data = [0] * (2 * ACTIVATION_WORDS)
    for i, value in enumerate(x.reshape(-1)):
        data[in_base + i] = int(value) & 0xFF
    words = [data[2 * k] | data[2 * k + 1] << 8 for k in range(ACTIVATION_WORDS)]
    return banks, words


def run_group(config, weights, geometry, x, *, group, pool, in_base=5, basis_base=3,
              seed=0, ready_stall=0.0, timing=None):
    records = group_records(weights, geometry, config=config, group=group)
    banks, activation_words = images(config, records, in_base, x)
    dut = FrontEnd(config, banks, activation_words)
    if geometry.conv:
        passes = len(pass_pixels(geometry.height, geometry.width, pool))
    else:
        passes = 1
    lanes = config.lanes
    received = []
    rng = random.Random(seed)

    async def testbench(ctx):
        for l in range(lanes):
            for k, word in enumerate(records.bases[l]):
                column = [((word >> (8 * j)) & 0xFF) - ((word >> (8 * j)) & 0x80) * 2
                          for j in range(3)]
                ctx.set(dut.lanes.basis_write, {"en": 1, "lane": l,
                                                "addr": 4 * basis_base + k, "data": column})
                await ctx.tick()
        ctx.set(dut.lanes.basis_write.en, 0)
        reader, issuer = dut.reader, dut.issuer
        ctx.set(reader.base, 0)
        ctx.set(reader.count, len(records.records))
        ctx.set(reader.last_record, max(0, len(records.records) - 1) * record_reads(lanes))
        ctx.set(issuer.conv, int(geometry.conv))
        ctx.set(issuer.height, geometry.height)
        ctx.set(issuer.width, geometry.width)
        ctx.set(issuer.in_base, in_base)
        ctx.set(issuer.basis_base, basis_base)
        ctx.set(issuer.pool, int(pool))
        ctx.set(issuer.records, len(records.records))
        ctx.set(issuer.passes, passes)
        ctx.set(reader.start, 1)
        ctx.set(issuer.start, 1)
        await ctx.tick()
        ctx.set(reader.start, 0)
        ctx.set(issuer.start, 0)
        cycles = 0
        while len(received) < passes * lanes:
            ctx.set(issuer.pass_ready, int(not (ready_stall and rng.random() < ready_stall)))
            _, _, sums = await ctx.tick().sample(dut.lanes.sums)
            cycles += 1
            if sums.valid:
                received.append(int(sums.value))
            assert cycles < 200 * passes * max(1, len(records.records)), "no progress"
        if timing is not None:
            timing["cycles"] = cycles
            timing["records"] = len(records.records)
        for _ in range(10):
            await ctx.tick()
        assert not ctx.get(issuer.busy) and not ctx.get(reader.busy)

    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(testbench)
    sim.run()
    channels = range(group * lanes, min((group + 1) * lanes, weights.out_channels))
    expected = []
    for sums in expected_sums(weights, geometry, x, pool=pool):
        lane_sums = [int(sums[c]) for c in channels] + [0] * (lanes - len(channels))
        expected.extend(lane_sums)
    return received, expected


CASES = [
    # lanes, conv (C, H, W) or linear inputs, pool, block_rows, out channels, prune
    (4, (2, 4, 5), False, 192, 4, 0.0),
    (4, (2, 5, 4), True, 192, 6, 0.3),
    (8, (3, 6, 6), True, 4, 8, 0.4),
    (3, (1, 3, 3), False, 2, 3, 0.0),
    (8, 22, None, 192, 8, 0.3),
    (2, 7, None, 2, 3, 0.5),
    (4, 3, None, 192, 4, 0.0),
]


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=lambda k: "lanes{}-{}-pool{}-b{}".format(*CASES[k]))
def test_front_end_sums_match_numpy(index):
    lanes, shape, pool, block_rows, out_channels, prune = CASES[index]
    rng = np.random.default_rng(index)
    config = AcceleratorConfig(lanes=lanes)
    if isinstance(shape, tuple):
        c, h, w = shape
        geometry = Geometry(conv=True, channels=c, height=h, width=w)
        rows = 3 * c
        x = rng.integers(-128, 128, (c, h, w))
    else:
        geometry = Geometry(conv=False, inputs=shape)
        rows = -(-shape // 3)
        x = rng.integers(-128, 128, shape)
    weights = random_layer(rng, out_channels=out_channels, rows=rows, block_rows=block_rows,
                           prune=prune)
    for group in range(-(-out_channels // lanes)):
        received, expected = run_group(config, weights, geometry, x, group=group,
                                       pool=bool(pool), seed=group)
        assert received == expected, f"group {group}"


def test_a_group_with_no_record_gives_zero_sums():
    config = AcceleratorConfig(lanes=2)
    rng = np.random.default_rng(3)
    weights = random_layer(rng, out_channels=2, rows=6, block_rows=192, prune=0.0)
    weights.present[:] = False
    geometry = Geometry(conv=True, channels=2, height=3, width=2)
    received, expected = run_group(config, weights, geometry,
                                   rng.integers(-128, 128, (2, 3, 2)), group=0, pool=False)
    assert received == expected == [0] * (2 * 6)


def test_pass_ready_holds_the_last_element():
    config = AcceleratorConfig(lanes=4)
    rng = np.random.default_rng(11)
    geometry = Geometry(conv=True, channels=2, height=4, width=4)
    weights = random_layer(rng, out_channels=4, rows=6, block_rows=192, prune=0.2)
    received, expected = run_group(config, weights, geometry,
                                   rng.integers(-128, 128, (2, 4, 4)), group=0, pool=True,
                                   ready_stall=0.6)
    assert received == expected


def test_weights_too_wide_for_the_multipliers_are_refused():
    config = AcceleratorConfig(lanes=2)
    weights = DecomposedWeights(
        present=np.ones((2, 3, 3), bool), negative=np.zeros((2, 3, 3), bool),
        exponent=np.full((2, 3, 3), 7, np.uint8),
        basis=np.full((2, 1, 3, 3), -128, np.int8), block_rows=192)
    with pytest.raises(SdHwError, match=r"layer 'fc'.*channel 0, Ce row 0.*-49152"):
        group_records(weights, Geometry(conv=False, inputs=9), config=config, group=0,
                      layer="fc")


def test_records_follow_each_other_at_the_bank_rate():
    """Eight lanes: a record (header and eight row words) is three reads of the three
    banks, and its three elements take three cycles: a linear layer with every element
    present runs at one element a cycle, a record every three cycles."""
    config = AcceleratorConfig(lanes=8)
    rng = np.random.default_rng(5)
    geometry = Geometry(conv=False, inputs=90)
    weights = random_layer(rng, out_channels=8, rows=30, block_rows=192, prune=0.0)
    weights.present[:, :, 0] = True
    timing = {}
    received, expected = run_group(config, weights, geometry, rng.integers(-128, 128, 90),
                                   group=0, pool=False, timing=timing)
    assert received == expected
    assert timing["records"] == 30
    # Start, the first record's reads and the pipeline to the lanes' sums: a fixed
    # latency of a few cycles on top of three cycles a record; then eight sums.
    assert 3 * 30 + 8 <= timing["cycles"] <= 3 * 30 + 8 + 12, timing
