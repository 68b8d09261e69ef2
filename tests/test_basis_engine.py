"""BasisEngine in the Amaranth simulator, alone and behind a ShiftAccumulateArray.

Every stream is driven or drained with random stalls (sim/streams.py).
Expected values are NumPy computations in this file or, for the engine
working with the PEs, dot products of the golden model's rebuilt weight rows
(``sim.golden.reference.rebuild_weight_rows``) with the activations; never
the RTL's own output.
"""

import gc
import itertools
import random
import warnings

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.basis_engine import BasisEngine
from sd_hw.datapath.shift_accumulate import ShiftAccumulateArray
from sd_hw.errors import ParameterError
from sd_hw.integer_network import DecomposedWeights
from sim.golden.reference import rebuild_weight_rows
from sim.streams import checked_simulator, stream_get, stream_put


PERIOD = 1e-6


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
    dict(dataflow="rebuild", lanes=1, code_bits=1, basis_bits=4, activation_bits=4),
    dict(dataflow="rebuild", lanes=2, code_bits=2, basis_bits=6, activation_bits=7),
    dict(dataflow="rebuild", lanes=3, code_bits=3, basis_bits=8, activation_bits=8),
    dict(dataflow="rebuild", lanes=4, code_bits=4, basis_bits=5, activation_bits=6),
    dict(dataflow="rebuild", lanes=2, code_bits=3, basis_bits=16, activation_bits=8),
    dict(dataflow="rebuild", lanes=1, code_bits=2, basis_bits=8, activation_bits=16),
    dict(dataflow="factored", lanes=1, code_bits=1, basis_bits=4, activation_bits=4),
    dict(dataflow="factored", lanes=2, code_bits=2, basis_bits=7, activation_bits=5),
    dict(dataflow="factored", lanes=3, code_bits=3, basis_bits=8, activation_bits=8),
    dict(dataflow="factored", lanes=4, code_bits=4, basis_bits=6, activation_bits=6),
    dict(dataflow="factored", lanes=2, code_bits=3, basis_bits=16, activation_bits=16),
]

WIDTHS = (4, 5, 6, 7, 8, 16)
SLOW_CONFIGS = [
    dict(dataflow=dataflow, lanes=1 + i % 4, code_bits=k, basis_bits=b, activation_bits=a)
    for i, (dataflow, k, b, a) in enumerate(itertools.product(
        ("rebuild", "factored"), range(1, 5), WIDTHS, WIDTHS))
    if valid_params(dataflow=dataflow, code_bits=k, basis_bits=b, activation_bits=a)
]


def config_id(params):
    return "-".join(f"{key[0]}{value}" if key != "dataflow" else value
                    for key, value in params.items())


# Test data ------------------------------------------------------------------

def limits(bits):
    return -2 ** (bits - 1), 2 ** (bits - 1) - 1


def random_values(rng, low, high, shape, extreme=0.25):
    """Uniform values in ``[low, high]``, a fraction of them replaced by either bound."""
    values = rng.integers(low, high + 1, size=shape)
    pick = rng.random(shape)
    values[pick < extreme / 2] = low
    values[(pick >= extreme / 2) & (pick < extreme)] = high
    return values


def block_plan(config, rng, n_rows, max_rows=4):
    """Block sizes covering ``n_rows`` and their flush flags.

    A flush group is kept short enough that even its worst-case sum fits
    the accumulator, so every expected value is exact.
    """
    limit = 2 ** (config.accumulator_bits - config.product_bits - 2)
    sizes = []
    while sum(sizes) < n_rows:
        sizes.append(int(min(rng.integers(1, min(max_rows, limit) + 1), n_rows - sum(sizes))))
    flushes, group = [], 0
    for i, size in enumerate(sizes):
        group += size
        last = i == len(sizes) - 1
        flush = bool(last or rng.random() < 0.5 or group + sizes[i + 1] > limit)
        group = 0 if flush else group
        flushes.append(flush)
    return sizes, flushes


def last_flags(sizes):
    return [int(r == size - 1) for size in sizes for r in range(size)]


def activations(config, rng, n_rows, kind):
    low, high = limits(config.activation_bits)
    if kind == "worst":
        return np.full((n_rows, 3), low)
    return random_values(rng, low, high, (n_rows, 3))


def grouped_sums(row_sums, sizes, flushes):
    """Accumulate per-row sums block by block; emit at every flushed block."""
    sums, acc, start = [], 0, 0
    for size, flush in zip(sizes, flushes):
        acc += int(np.sum(row_sums[start:start + size]))
        start += size
        if flush:
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


def putter(port, payloads, stall, rng):
    async def testbench(ctx):
        await stream_put(ctx, port, payloads, stall=stall, rng=rng)
    return testbench


def getter(port, count, stall, rng, results, convert=None):
    async def testbench(ctx):
        results.extend(await stream_get(ctx, port, count, stall=stall, rng=rng,
                                        convert=convert))
    return testbench


def as_list(payload):
    return list(payload)


# The engine alone -----------------------------------------------------------

def engine_case(config, seed, *, n_rows=12, kind="random", max_rows=4):
    """Stimulus and expected output of a lone engine.

    Returns ``(inputs, outputs)``: ``inputs`` maps a port name to one payload
    list (``activations``) or a list per lane; ``outputs`` maps a port name
    to the expected list per lane.
    """
    rng = np.random.default_rng(seed)
    x = activations(config, rng, n_rows, kind)
    if config.dataflow == "rebuild":
        weights, block_ends, sums = [], [], []
        for _ in range(config.lanes):
            # Lanes may cut their rows into blocks differently.
            sizes, flushes = block_plan(config, rng, n_rows, max_rows)
            if kind == "worst":
                w = config.max_weight * np.where(rng.random((n_rows, 1)) < 0.5, -1, 1)
                w = np.repeat(w, 3, axis=1)
            else:
                w = random_values(rng, -config.max_weight, config.max_weight, (n_rows, 3))
            last = last_flags(sizes)
            weights.append([{"row": row.tolist(), "last": flag} for row, flag in zip(w, last)])
            block_ends.append([{"flush": int(flush)} for flush in flushes])
            sums.append(grouped_sums((w * x).sum(axis=1), sizes, flushes))
        inputs = {"activations": x.tolist(), "weights": weights, "block_end": block_ends}
        return inputs, {"sums": sums}
    sizes, _ = block_plan(config, rng, n_rows, max_rows)
    block_of_row = np.repeat(np.arange(len(sizes)), sizes)
    low, high = limits(config.basis_bits)
    bases, products = [], []
    for _ in range(config.lanes):
        if kind == "worst":
            basis = np.full((len(sizes), 3, 3), low)
        else:
            basis = random_values(rng, low, high, (len(sizes), 3, 3))
        bases.append([b.tolist() for b in basis])
        # z[r, j] = sum_c B[block(r), j, c] * x[r, c]
        products.append(np.einsum("rjc,rc->rj", basis[block_of_row], x).tolist())
    rows = [{"row": row.tolist(), "last": flag} for row, flag in zip(x, last_flags(sizes))]
    return {"activations": rows, "active_basis": bases}, {"products": products}


def run_engine(dut, inputs, outputs, *, seed, stall=0.3, out_stall=None):
    out_stall = stall if out_stall is None else out_stall
    testbenches = [putter(dut.activations, inputs["activations"], stall,
                          random.Random(f"{seed}-activations"))]
    for name, per_lane in inputs.items():
        if name != "activations":
            testbenches += [putter(getattr(dut, name)[lane], payloads, stall,
                                   random.Random(f"{seed}-{name}-{lane}"))
                            for lane, payloads in enumerate(per_lane)]
    received = {}
    for name, per_lane in outputs.items():
        received[name] = [[] for _ in per_lane]
        testbenches += [getter(getattr(dut, name)[lane], len(expected), out_stall,
                               random.Random(f"{seed}-{name}-{lane}"), received[name][lane],
                               as_list if name == "products" else None)
                        for lane, expected in enumerate(per_lane)]
    simulate(dut, testbenches)
    return received


def check_engine(params, seed, **options):
    config = make_config(**params)
    case_options = {key: options.pop(key) for key in ("n_rows", "kind", "max_rows")
                    if key in options}
    inputs, outputs = engine_case(config, seed, **case_options)
    received = run_engine(BasisEngine(config), inputs, outputs, seed=seed, **options)
    for name, per_lane in outputs.items():
        for lane, expected in enumerate(per_lane):
            assert_matches(received[name][lane], expected, f"lane {lane} {name}")


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("params", FAST_CONFIGS, ids=config_id)
def test_engine_matches_numpy(params, seed):
    check_engine(params, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("params", SLOW_CONFIGS, ids=config_id)
def test_engine_sweep(params, seed):
    check_engine(params, seed, n_rows=20)


@pytest.mark.parametrize("params", [
    dict(dataflow="rebuild", lanes=2, code_bits=3, basis_bits=8, activation_bits=8),
    dict(dataflow="rebuild", lanes=1, code_bits=4, basis_bits=8, activation_bits=8),
    dict(dataflow="rebuild", lanes=2, code_bits=2, basis_bits=16, activation_bits=16),
    dict(dataflow="factored", lanes=2, code_bits=3, basis_bits=8, activation_bits=8),
    dict(dataflow="factored", lanes=1, code_bits=3, basis_bits=16, activation_bits=16),
], ids=config_id)
def test_engine_worst_case_is_exact(params):
    """Largest weights or most negative bases with most negative activations: exact."""
    check_engine(params, 5, kind="worst")


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_engine_back_pressure(dataflow):
    """Rows at full rate into mostly blocked outputs: nothing lost or repeated."""
    check_engine(dict(dataflow=dataflow, lanes=3), 6, n_rows=24, max_rows=1, stall=0.0,
                 out_stall=0.9)


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_engine_full_rate(dataflow):
    """Without stalls the engine takes one activation row per cycle."""
    config = make_config(dataflow=dataflow, lanes=2)
    dut = BasisEngine(config)
    inputs, outputs = engine_case(config, 7, n_rows=16, max_rows=3)
    cycles = []

    async def take_activations(ctx):
        for payload in inputs["activations"]:
            ctx.set(dut.activations.payload, payload)
            ctx.set(dut.activations.valid, 1)
            cycles.append(0)
            while not (await ctx.tick().sample(dut.activations.ready))[-1]:
                cycles[-1] += 1
        ctx.set(dut.activations.valid, 0)

    testbenches = [take_activations]
    for name, per_lane in inputs.items():
        if name != "activations":
            testbenches += [putter(getattr(dut, name)[lane], payloads, 0, None)
                            for lane, payloads in enumerate(per_lane)]
    for name, per_lane in outputs.items():
        testbenches += [getter(getattr(dut, name)[lane], len(expected), 0, None, [])
                        for lane, expected in enumerate(per_lane)]
    simulate(dut, testbenches)
    assert cycles == [0] * len(inputs["activations"])


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_engine_latency(dataflow):
    """A lone row's result appears ``latency`` cycles after the cycle it is taken."""
    config = make_config(dataflow=dataflow, lanes=2)
    dut = BasisEngine(config)
    inputs, _ = engine_case(config, 8, n_rows=1)
    measured = []

    async def testbench(ctx):
        ports = [(dut.activations, inputs["activations"][0])]
        for name, per_lane in inputs.items():
            if name != "activations":
                ports += [(getattr(dut, name)[lane], payloads[0])
                          for lane, payloads in enumerate(per_lane)]
        output = dut.sums if dataflow == "rebuild" else dut.products
        for stream, payload in ports:
            ctx.set(stream.payload, payload)
            ctx.set(stream.valid, 1)
        for stream in output:
            ctx.set(stream.ready, 1)
        cycles = 1
        *_, ready = await ctx.tick().sample(dut.activations.ready)
        assert ready, "the row was not taken at once"
        for stream, _ in ports:
            ctx.set(stream.valid, 0)
        while not all(ctx.get(stream.valid) for stream in output):
            await ctx.tick()
            cycles += 1
        measured.append(cycles)

    simulate(dut, [testbench])
    assert measured == [dut.latency]


def test_engine_holds_basis_until_last_row():
    """Factored: a lane's basis is taken only with the block's last activation row."""
    config = make_config(dataflow="factored", lanes=1)
    dut = BasisEngine(config)
    inputs, outputs = engine_case(config, 9, n_rows=6, max_rows=3)
    lasts = [row["last"] for row in inputs["activations"]]
    released = []

    async def watch(ctx):
        taken = 0
        while taken < len(lasts):
            _, _, rows, basis = await ctx.tick().sample(
                dut.activations.valid & dut.activations.ready,
                dut.active_basis[0].valid & dut.active_basis[0].ready)
            if rows:
                released.append(basis)
                taken += 1

    received = []
    simulate(dut, [putter(dut.activations, inputs["activations"], 0.3, random.Random(1)),
                   putter(dut.active_basis[0], inputs["active_basis"][0], 0.3,
                          random.Random(2)),
                   getter(dut.products[0], len(lasts), 0.3, random.Random(3), received,
                          as_list),
                   watch])
    assert released == lasts
    assert_matches(received, outputs["products"][0], "products")


def test_negative_control():
    """The checker rejects a result that differs from the expected one in a single value."""
    config = make_config(dataflow="rebuild", lanes=2)
    inputs, outputs = engine_case(config, 10)
    received = run_engine(BasisEngine(config), inputs, outputs, seed=10)
    assert_matches(received["sums"][1], outputs["sums"][1], "sums")
    wrong = list(outputs["sums"][1])
    wrong[0] -= 1
    with pytest.raises(AssertionError, match="sums: item 0"):
        assert_matches(received["sums"][1], wrong, "sums")


# The engine behind the PEs --------------------------------------------------

def system_case(config, seed, *, n_rows=12, kind="random"):
    """Per-lane factors sharing one activation stream, and the golden sums per lane."""
    rng = np.random.default_rng(seed)
    sizes, flushes = block_plan(config, rng, n_rows)
    x = activations(config, rng, n_rows, kind)
    low, high = limits(config.basis_bits)
    lanes = []
    for _ in range(config.lanes):
        shape = (n_rows, 3)
        if kind == "worst":
            basis = np.full((len(sizes), 3, 3), low)
            present = np.ones(shape, bool)
            negative = np.repeat(rng.random((n_rows, 1)) < 0.5, 3, axis=1)
            exponent = np.full(shape, config.max_shift)
        else:
            basis = random_values(rng, low, high, (len(sizes), 3, 3))
            present = rng.random(shape) < 0.6
            present[rng.random(n_rows) < 0.2] = False
            negative = rng.random(shape) < 0.5
            exponent = rng.integers(0, config.max_shift + 1, size=shape)
        # The golden model takes uniform blocks; rebuild block by block.
        weights, start = [], 0
        for b, size in enumerate(sizes):
            rows = slice(start, start + size)
            factors = DecomposedWeights(
                present=present[None, rows], negative=(negative & present)[None, rows],
                exponent=np.where(present, exponent, 0)[None, rows],
                basis=basis[None, b:b + 1], block_rows=size)
            weights.append(rebuild_weight_rows(factors)[0])
            start += size
        weights = np.concatenate(weights)
        last = last_flags(sizes)
        lanes.append({
            "basis": [b.tolist() for b in basis],
            "rows": [{
                "present": sum(int(present[r, j]) << j for j in range(3)),
                "coefficients": [{"exponent": int(exponent[r, j]),
                                  "negative": int(negative[r, j])} for j in range(3)],
                "last": last[r]} for r in range(n_rows)],
            "block_end": [{"flush": int(flush)} for flush in flushes],
            "sums": grouped_sums((weights * x).sum(axis=1), sizes, flushes),
        })
    if config.dataflow == "rebuild":
        x_payloads = x.tolist()
    else:
        x_payloads = [{"row": row.tolist(), "last": flag}
                      for row, flag in zip(x, last_flags(sizes))]
    return x_payloads, lanes


def run_system(config, seed, *, kind="random", stall=0.3):
    """ShiftAccumulateArray and BasisEngine joined lane by lane; returns sums per lane."""
    array, engine = ShiftAccumulateArray(config), BasisEngine(config)
    m = Module()
    m.submodules.array = array
    m.submodules.engine = engine
    for lane in range(config.lanes):
        if config.dataflow == "rebuild":
            wiring.connect(m, array.weights[lane], engine.weights[lane])
        else:
            wiring.connect(m, array.active_basis[lane], engine.active_basis[lane])
            wiring.connect(m, engine.products[lane], array.products[lane])
    control, sums = (engine, engine) if config.dataflow == "rebuild" else (array, array)

    x_payloads, lanes = system_case(config, seed, kind=kind)
    testbenches = [putter(engine.activations, x_payloads, stall,
                          random.Random(f"{seed}-activations"))]
    received = []
    for lane, data in enumerate(lanes):
        def rng(name):
            return random.Random(f"{seed}-{lane}-{name}")
        received.append([])
        testbenches += [
            putter(array.basis[lane], data["basis"], stall, rng("basis")),
            putter(array.rows[lane], data["rows"], stall, rng("rows")),
            putter(control.block_end[lane], data["block_end"], stall, rng("block_end")),
            getter(sums.sums[lane], len(data["sums"]), stall, rng("sums"), received[-1]),
        ]
    simulate(m, testbenches)
    return received, [data["sums"] for data in lanes]


@pytest.mark.parametrize("lanes", [1, 2, 3, 4])
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_system_matches_golden(dataflow, lanes):
    config = make_config(dataflow=dataflow, lanes=lanes, code_bits=3, basis_bits=6,
                         activation_bits=5)
    received, expected = run_system(config, 11)
    for lane, (got, want) in enumerate(zip(received, expected)):
        assert_matches(got, want, f"lane {lane} sums")


@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_system_worst_case_is_exact(dataflow):
    config = make_config(dataflow=dataflow, lanes=2)
    received, expected = run_system(config, 12, kind="worst")
    for lane, (got, want) in enumerate(zip(received, expected)):
        assert_matches(got, want, f"lane {lane} sums")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(13, 17))
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_system_sweep(dataflow, seed):
    params = [dict(code_bits=k, basis_bits=b, activation_bits=a)
              for k, b, a in itertools.product(range(1, 5), WIDTHS, WIDTHS)
              if valid_params(dataflow=dataflow, code_bits=k, basis_bits=b, activation_bits=a)]
    choice = params[seed * 7 % len(params)]
    config = make_config(dataflow=dataflow, lanes=1 + seed % 4, **choice)
    received, expected = run_system(config, seed)
    for lane, (got, want) in enumerate(zip(received, expected)):
        assert_matches(got, want, f"lane {lane} sums")


# Generation -----------------------------------------------------------------

@pytest.mark.parametrize("lanes", [1, 3])
@pytest.mark.parametrize("dataflow", ["rebuild", "factored"])
def test_converts_to_verilog(dataflow, lanes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = verilog.convert(BasisEngine(make_config(dataflow=dataflow, lanes=lanes)))
    assert "module" in text


@pytest.mark.parametrize("config", [None, {"lanes": 4}])
def test_rejects_other_parameters(config):
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError, match="'config' must be an AcceleratorConfig"):
            BasisEngine(config)
        gc.collect()
