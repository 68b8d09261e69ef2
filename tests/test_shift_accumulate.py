"""ShiftAccumulatePE and ShiftAccumulateArray in the Amaranth simulator.

Every stream of the device is driven or drained with random stalls
(sim/streams.py). Expected values come from the golden model: weight rows
from ``sim.golden.reference.rebuild_weight_rows``, sums as NumPy dot
products of those rows with the activations; never from the RTL.
"""

import gc
import itertools
import random
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.shift_accumulate import ShiftAccumulateArray, ShiftAccumulatePE
from sd_hw.errors import ParameterError
from sd_hw.integer_network import DecomposedWeights
from sim.golden.reference import rebuild_weight_rows
from sim.streams import checked_simulator, stream_get, stream_put


# Configurations ------------------------------------------------------------

def make_config(**params):
    """A valid configuration whose accumulator has 4 bits to spare over one row's sum."""
    probe = AcceleratorConfig(**params, accumulator_bits=48)
    return AcceleratorConfig(**params, accumulator_bits=min(48, probe.product_bits + 6))


def valid_params(**params):
    try:
        make_config(**params)
    except ParameterError:
        return False
    return True


FAST_CONFIGS = [
    dict(dataflow="rebuild", code_bits=1, basis_bits=4),
    dict(dataflow="rebuild", code_bits=2, basis_bits=6),
    dict(dataflow="rebuild", code_bits=3, basis_bits=8),
    dict(dataflow="rebuild", code_bits=4, basis_bits=5),
    dict(dataflow="rebuild", code_bits=3, basis_bits=16),
    dict(dataflow="factored", code_bits=1, basis_bits=4, activation_bits=4),
    dict(dataflow="factored", code_bits=2, basis_bits=7, activation_bits=5),
    dict(dataflow="factored", code_bits=3, basis_bits=8, activation_bits=8),
    dict(dataflow="factored", code_bits=4, basis_bits=6, activation_bits=7),
    dict(dataflow="factored", code_bits=2, basis_bits=8, activation_bits=16),
    dict(dataflow="factored", code_bits=3, basis_bits=16, activation_bits=16),
]

WIDTHS = (4, 5, 6, 7, 8, 16)
SLOW_CONFIGS = [
    params for params in (
        [dict(dataflow="rebuild", code_bits=k, basis_bits=b)
         for k, b in itertools.product(range(1, 5), WIDTHS)]
        + [dict(dataflow="factored", code_bits=k, basis_bits=b, activation_bits=a)
           for k, b, a in itertools.product(range(1, 5), WIDTHS, WIDTHS)])
    if valid_params(**params)
]


def config_id(params):
    return "-".join(f"{key[0]}{value}" if key != "dataflow" else value
                    for key, value in params.items())


# Test data and the golden model ---------------------------------------------

@dataclass
class Block:
    """One block of one lane: its basis, Ce rows, activation rows and flush flag.

    ``exponent`` and ``negative`` hold random values where ``present`` is
    clear; the device must ignore them (the golden model sees zeros there).
    """

    basis: np.ndarray     # (3, 3)
    present: np.ndarray   # (n, 3) bool
    negative: np.ndarray  # (n, 3) bool
    exponent: np.ndarray  # (n, 3)
    x: np.ndarray         # (n, 3)
    flush: bool = True

    def weight_rows(self):
        """Golden rebuilt weight rows ``(n, 3)``."""
        factors = DecomposedWeights(
            present=self.present[None], negative=(self.negative & self.present)[None],
            exponent=np.where(self.present, self.exponent, 0)[None],
            basis=self.basis[None, None], block_rows=len(self.present))
        return rebuild_weight_rows(factors)[0]

    def products(self):
        """``z[r, j] = B[j] . x[r]``, the basis engine's output for each row."""
        return self.x @ self.basis.T

    def row_payloads(self):
        n = len(self.present)
        return [{
            "present": sum(int(self.present[r, j]) << j for j in range(3)),
            "coefficients": [{"exponent": int(self.exponent[r, j]),
                              "negative": int(self.negative[r, j])} for j in range(3)],
            "last": int(r == n - 1),
        } for r in range(n)]


def limits(bits):
    return -2 ** (bits - 1), 2 ** (bits - 1) - 1


def random_values(rng, bits, shape, extreme=0.25):
    """Uniform signed values, a fraction of them replaced by either extreme."""
    low, high = limits(bits)
    values = rng.integers(low, high + 1, size=shape)
    pick = rng.random(shape)
    values[pick < extreme / 2] = low
    values[(pick >= extreme / 2) & (pick < extreme)] = high
    return values


def random_blocks(config, rng, n_blocks, *, kind="random", max_rows=6):
    """Blocks of random data; ``kind`` "worst" gives the largest magnitudes, "zero" zero rows.

    Flush groups are kept short enough that even the worst-case sum fits the
    accumulator, so every expected value is exact.
    """
    group_limit = 2 ** (config.accumulator_bits - config.product_bits - 2)
    sizes = rng.integers(1, min(max_rows, group_limit) + 1, size=n_blocks)
    blocks, group = [], 0
    for i, n in enumerate(sizes):
        shape = (n, 3)
        if kind == "worst":
            basis = np.full((3, 3), limits(config.basis_bits)[0])
            present = np.ones(shape, bool)
            negative = np.repeat(rng.random((n, 1)) < 0.5, 3, axis=1)
            exponent = np.full(shape, config.max_shift)
            x = np.full(shape, limits(config.activation_bits)[0])
        else:
            basis = random_values(rng, config.basis_bits, (3, 3))
            present = rng.random(shape) < 0.6
            present[rng.random(n) < (1.0 if kind == "zero" else 0.2)] = False
            negative = rng.random(shape) < 0.5
            exponent = rng.integers(0, config.max_shift + 1, size=shape)
            exponent[rng.random(shape) < 0.25] = config.max_shift
            x = random_values(rng, config.activation_bits, shape)
        group += n
        last = i == n_blocks - 1
        flush = bool(last or rng.random() < 0.5 or group + sizes[i + 1] > group_limit)
        if flush:
            group = 0
        blocks.append(Block(basis, present, negative, exponent, x, flush))
    return blocks


def expected_weights(blocks):
    return [(row.tolist(), int(r == len(block.present) - 1))
            for block in blocks for r, row in enumerate(block.weight_rows())]


def expected_sums(blocks):
    sums, acc = [], 0
    for block in blocks:
        acc += int((block.weight_rows() * block.x).sum())
        if block.flush:
            sums.append(acc)
            acc = 0
    return sums


def assert_matches(received, expected, what):
    """The checker: ``received`` equals ``expected`` item by item."""
    assert len(received) == len(expected), \
        f"{what}: received {len(received)} items, expected {len(expected)}"
    for i, (got, want) in enumerate(zip(received, expected)):
        assert got == want, f"{what}: item {i} is {got}, expected {want}"


# Simulation -----------------------------------------------------------------

PERIOD = 1e-6


def lane_port(dut, name, lane):
    port = getattr(dut, name)
    return port if isinstance(dut, ShiftAccumulatePE) else port[lane]


def simulate(dut, testbenches, *, timeout=20_000):
    """Run ``testbenches`` against ``dut``; fail if they are not done in ``timeout`` cycles."""
    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    finished = []

    def counted(testbench):
        async def run(ctx):
            await testbench(ctx)
            finished.append(testbench)
        return run

    for testbench in testbenches:
        sim.add_testbench(counted(testbench))
    for chunk in range(1, timeout // 100 + 1):
        sim.run_until(chunk * 100 * PERIOD)
        if len(finished) == len(testbenches):
            return
    raise AssertionError(f"simulation still running after {timeout} cycles")


def putter(port, payloads, stall, rng, delay=None):
    async def testbench(ctx):
        if delay is None:
            await stream_put(ctx, port, payloads, stall=stall, rng=rng)
            return
        for payload in payloads:
            await ctx.tick().repeat(rng.randint(*delay))
            await stream_put(ctx, port, [payload])
    return testbench


def getter(port, count, stall, rng, results, convert):
    async def testbench(ctx):
        results.extend(await stream_get(ctx, port, count, stall=stall, rng=rng,
                                        convert=convert))
    return testbench


def run_lanes(dut, lanes_blocks, *, seed, stall=0.3, out_stall=None, basis_delay=None):
    """Feed each lane its blocks; return per lane what the device sent out.

    Rebuild: ``{"weights": [(row, last), ...]}``; factored:
    ``{"sums": [...], "active_basis": [basis, ...]}``.
    """
    config = dut.config
    out_stall = stall if out_stall is None else out_stall
    results, testbenches = [], []
    for lane, blocks in enumerate(lanes_blocks):
        def rng(name):
            return random.Random(f"{seed}-{lane}-{name}")

        def port(name):
            return lane_port(dut, name, lane)
        received = {}
        results.append(received)
        rows = [payload for block in blocks for payload in block.row_payloads()]
        testbenches += [
            putter(port("basis"), [block.basis.tolist() for block in blocks],
                   stall, rng("basis"), basis_delay),
            putter(port("rows"), rows, stall, rng("rows")),
        ]
        if config.dataflow == "rebuild":
            received["weights"] = []
            testbenches.append(getter(port("weights"), len(rows), out_stall, rng("weights"),
                                      received["weights"], lambda p: (list(p.row), p.last)))
        else:
            received["sums"], received["active_basis"] = [], []
            products = [row.tolist() for block in blocks for row in block.products()]
            testbenches += [
                putter(port("products"), products, stall, rng("products")),
                putter(port("block_end"), [{"flush": int(block.flush)} for block in blocks],
                       stall, rng("block_end")),
                getter(port("active_basis"), len(blocks), out_stall, rng("active_basis"),
                       received["active_basis"], lambda p: [list(row) for row in p]),
                getter(port("sums"), sum(block.flush for block in blocks), out_stall,
                       rng("sums"), received["sums"], None),
            ]
    simulate(dut, testbenches)
    return results


def check_lanes(results, lanes_blocks, dataflow):
    for lane, (received, blocks) in enumerate(zip(results, lanes_blocks)):
        if dataflow == "rebuild":
            assert_matches(received["weights"], expected_weights(blocks),
                           f"lane {lane} weights")
        else:
            assert_matches(received["active_basis"], [b.basis.tolist() for b in blocks],
                           f"lane {lane} active bases")
            assert_matches(received["sums"], expected_sums(blocks), f"lane {lane} sums")


def check_pe(params, seed, *, n_blocks=5, kind="random", max_rows=6, **options):
    config = make_config(**params)
    blocks = random_blocks(config, np.random.default_rng(seed), n_blocks, kind=kind,
                           max_rows=max_rows)
    results = run_lanes(ShiftAccumulatePE(config), [blocks], seed=seed, **options)
    check_lanes(results, [blocks], config.dataflow)


# Tests ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("params", FAST_CONFIGS, ids=config_id)
def test_pe_matches_golden(params, seed):
    check_pe(params, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("params", SLOW_CONFIGS, ids=config_id)
def test_pe_sweep(params, seed):
    check_pe(params, seed, n_blocks=8)


@pytest.mark.parametrize("params", [
    dict(dataflow="rebuild", code_bits=4, basis_bits=8),
    dict(dataflow="rebuild", code_bits=3, basis_bits=16),
    dict(dataflow="factored", code_bits=3, basis_bits=8, activation_bits=8),
    dict(dataflow="factored", code_bits=4, basis_bits=8, activation_bits=8),
    dict(dataflow="factored", code_bits=3, basis_bits=16, activation_bits=16),
], ids=config_id)
def test_pe_worst_case_is_exact(params):
    """Most negative basis and activations at the largest shift: exact results, no overflow."""
    check_pe(params, 5, n_blocks=4, kind="worst")


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_pe_zero_rows(dataflow):
    check_pe(dict(dataflow=dataflow), 6, n_blocks=4, kind="zero")


@pytest.mark.parametrize("timing", ["early", "late"])
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_pe_bank_switch(dataflow, timing):
    """The next basis arrives long before its block (early) or after its rows wait (late)."""
    if timing == "early":
        options = dict(stall=0.6, out_stall=0.6)
    else:
        options = dict(stall=0.0, out_stall=0.0, basis_delay=(5, 25))
    check_pe(dict(dataflow=dataflow), 7, n_blocks=6, **options)


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_pe_back_pressure(dataflow):
    """Short blocks at full rate into a mostly blocked output: nothing lost or repeated."""
    check_pe(dict(dataflow=dataflow), 13, n_blocks=16, max_rows=2, stall=0.0, out_stall=0.9)


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_pe_full_rate(dataflow):
    """Without stalls the PE takes one row per cycle, across block and bank switches."""
    config = make_config(dataflow=dataflow)
    dut = ShiftAccumulatePE(config)
    blocks = random_blocks(config, np.random.default_rng(14), 4)
    rows = [payload for block in blocks for payload in block.row_payloads()]
    cycles, ignored = [], []

    async def take_rows(ctx):
        await ctx.tick().repeat(4)  # the first bases are in
        for payload in rows:
            ctx.set(dut.rows.payload, payload)
            ctx.set(dut.rows.valid, 1)
            cycles.append(0)
            while not (await ctx.tick().sample(dut.rows.ready))[-1]:
                cycles[-1] += 1
        ctx.set(dut.rows.valid, 0)

    testbenches = [putter(dut.basis, [block.basis.tolist() for block in blocks], 0, None),
                   take_rows]
    if dataflow == "rebuild":
        testbenches.append(getter(dut.weights, len(rows), 0, None, ignored, None))
    else:
        products = [row.tolist() for block in blocks for row in block.products()]
        testbenches += [
            putter(dut.products, products, 0, None),
            putter(dut.block_end, [{"flush": int(block.flush)} for block in blocks], 0, None),
            getter(dut.active_basis, len(blocks), 0, None, ignored, None),
            getter(dut.sums, sum(block.flush for block in blocks), 0, None, ignored, None),
        ]
    simulate(dut, testbenches)
    assert cycles[1:] == [0] * (len(rows) - 1)


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_pe_waits_for_basis(dataflow):
    """Until the next block's basis has arrived, the PE takes none of its rows."""
    config = make_config(dataflow=dataflow)
    dut = ShiftAccumulatePE(config)
    blocks = random_blocks(config, np.random.default_rng(8), 2, max_rows=1)
    waiting = []

    async def testbench(ctx):
        for block in blocks:
            if dataflow == "rebuild":
                # (factored takes a row only with its products: offering one it never takes
                # and then another would break the stream rules)
                ctx.set(dut.rows.payload, block.row_payloads()[0])
                ctx.set(dut.rows.valid, 1)
            for _ in range(10):
                await ctx.tick()
                waiting.append(ctx.get(dut.rows.ready) if dataflow == "rebuild"
                               else ctx.get(dut.active_basis.valid))
            await stream_put(ctx, dut.basis, [block.basis.tolist()])
            if dataflow == "rebuild":
                await ctx.tick().until(dut.rows.ready)
                ctx.set(dut.rows.valid, 0)
                got = await stream_get(ctx, dut.weights, 1,
                                       convert=lambda p: (list(p.row), p.last))
                assert got == expected_weights([block])
            else:
                got = await stream_get(ctx, dut.active_basis, 1,
                                       convert=lambda p: [list(row) for row in p])
                assert got == [block.basis.tolist()]

    simulate(dut, [testbench])
    assert waiting == [0] * 20


@pytest.mark.parametrize("component", [ShiftAccumulatePE, ShiftAccumulateArray])
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_latency(dataflow, component):
    """A lone row's result appears ``latency`` cycles after the cycle it is taken."""
    config = make_config(dataflow=dataflow, lanes=2)
    dut = component(config)
    block = random_blocks(config, np.random.default_rng(9), 1, max_rows=1)[0]
    measured = []

    def port(name):
        return lane_port(dut, name, 1)

    async def testbench(ctx):
        await stream_put(ctx, port("basis"), [block.basis.tolist()])
        await ctx.tick().repeat(3)
        inputs = [(port("rows"), block.row_payloads()[0])]
        if dataflow == "rebuild":
            output = port("weights")
        else:
            inputs += [(port("products"), block.products()[0].tolist()),
                       (port("block_end"), {"flush": 1})]
            output = port("sums")
        for stream, payload in inputs:
            ctx.set(stream.payload, payload)
            ctx.set(stream.valid, 1)
        ctx.set(output.ready, 1)
        cycles = 1
        *_, ready = await ctx.tick().sample(port("rows").ready)
        assert ready, "the row was not taken at once"
        for stream, _ in inputs:
            ctx.set(stream.valid, 0)
        while not ctx.get(output.valid):
            await ctx.tick()
            cycles += 1
        measured.append(cycles)

    simulate(dut, [testbench])
    assert measured == [dut.latency]


def test_accumulator_partial_overflow_is_exact():
    """Partial sums may wrap the accumulator; a final sum that fits is still exact."""
    probe = AcceleratorConfig(dataflow="factored", accumulator_bits=48)
    config = AcceleratorConfig(dataflow="factored", accumulator_bits=probe.product_bits + 2)
    tail = random_blocks(config, np.random.default_rng(10), 1, max_rows=1)[0]
    lowest = limits(config.activation_bits)[0]
    # Two worst-case rows, the same two negated, then one random row.
    block = Block(
        basis=np.full((3, 3), limits(config.basis_bits)[0]),
        present=np.concatenate([np.ones((4, 3), bool), tail.present]),
        negative=np.concatenate([np.repeat([[0], [0], [1], [1]], 3, axis=1).astype(bool),
                                 tail.negative]),
        exponent=np.concatenate([np.full((4, 3), config.max_shift), tail.exponent]),
        x=np.concatenate([np.full((4, 3), lowest), tail.x]))
    partial = np.cumsum((block.weight_rows() * block.x).sum(axis=1))
    assert partial.max() >= 2 ** (config.accumulator_bits - 1)
    results = run_lanes(ShiftAccumulatePE(config), [[block]], seed=10)
    check_lanes(results, [[block]], "factored")


@pytest.mark.parametrize("lanes", [1, 2, 3, 4])
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_array_matches_golden(dataflow, lanes):
    config = make_config(dataflow=dataflow, lanes=lanes, code_bits=2, basis_bits=6,
                         activation_bits=5)
    dut = ShiftAccumulateArray(config)
    lanes_blocks = [random_blocks(config, np.random.default_rng([11, lane]), 3)
                    for lane in range(lanes)]
    results = run_lanes(dut, lanes_blocks, seed=11)
    check_lanes(results, lanes_blocks, dataflow)


def test_negative_control():
    """The checker rejects a result that differs from the expected one in a single value."""
    config = make_config(dataflow="factored")
    blocks = random_blocks(config, np.random.default_rng(12), 3)
    received = run_lanes(ShiftAccumulatePE(config), [blocks], seed=12)[0]
    expected = expected_sums(blocks)
    assert_matches(received["sums"], expected, "sums")
    expected[-1] += 1
    with pytest.raises(AssertionError, match="sums: item"):
        assert_matches(received["sums"], expected, "sums")


@pytest.mark.parametrize("component", [ShiftAccumulatePE, ShiftAccumulateArray])
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_converts_to_verilog(component, dataflow):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = verilog.convert(component(make_config(dataflow=dataflow, lanes=2)))
    assert "module" in text


@pytest.mark.parametrize("component", [ShiftAccumulatePE, ShiftAccumulateArray])
@pytest.mark.parametrize("config", [None, {"lanes": 4}])
def test_rejects_other_parameters(component, config):
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError, match="'config' must be an AcceleratorConfig"):
            component(config)
        gc.collect()
