"""Tier 2: the generated Verilog of every datapath block, under Icarus and Verilator.

For each block, NumPy computes from random arrays and edge cases the
payloads of every input stream and the payloads expected on every output
stream (:func:`sim.cocotb.write_vectors`); the block's cocotb bench
(``tests/cocotb_tests/<block>_tb.py``) drives them with random stalls and
compares bit-exactly, and checks the documented throughput in a case
without stalls. The expectations are written here from the blocks'
documented contracts, independently of the RTL and of the Amaranth-level
tests. A negative control runs the decoder's bench with one expected
value corrupted and requires it to fail at that value.

Every block is also linted and synthesised for both families (no latch).

Adding a block: a vectors function ``config, rng -> [case, ...]`` in
:data:`VECTORS`, a five-line ``<block>_tb.py``, and its configurations in
:data:`CONFIGS`.
"""

from pathlib import Path

import numpy as np
import pytest

from sd_hw.coefficient_stream import encode
from sd_hw.config import AcceleratorConfig
from sd_hw.generate import generate
from sd_hw.integer_network import DecomposedWeights
from sd_hw.lint import verilator_lint
from sd_hw.synth import synthesise
from sim.cocotb import VECTORS_ENV, write_vectors
from sim.cocotb_runner import CocotbFailure, run_cocotb_on


COCOTB_TESTS = Path(__file__).parent / "cocotb_tests"
STALL = 0.3
SLACK = 8  # cycles of reset, hand-over and monitor trailing edges in a throughput bound


# Golden helpers. -------------------------------------------------------------

def wrap(value, bits):
    """``value`` modulo ``2**bits``, as a signed ``bits``-bit number."""
    half = 1 << (bits - 1)
    return int((int(value) + half) % (1 << bits) - half)


def random_ce(rng, rows, code_bits, *, zero_rows=0.3, element=0.6):
    """present, negative, exponent of ``rows`` Ce rows, shape (rows, 3)."""
    present = rng.random((rows, 3)) < element
    present &= (rng.random(rows) >= zero_rows)[:, None]
    negative = present & (rng.random((rows, 3)) < 0.5)
    exponent = np.where(present, rng.integers(0, 2 ** code_bits, (rows, 3)), 0)
    return present, negative, exponent


def extreme_ce(rows, code_bits, *, negative):
    """Every coefficient present at the largest exponent, all of one sign."""
    present = np.ones((rows, 3), bool)
    return present, np.full((rows, 3), negative), np.full((rows, 3), 2 ** code_bits - 1)


def zero_ce(rows):
    return np.zeros((rows, 3), bool), np.zeros((rows, 3), bool), np.zeros((rows, 3), np.int64)


def row_payloads(ce):
    """Decoded-row payloads (``row_layout``) of a block; ``last`` on its final row."""
    present, negative, exponent = ce
    return [{"present": int(sum(int(p) << j for j, p in enumerate(present[r]))),
             "coefficients": [{"exponent": int(exponent[r, j]), "negative": int(negative[r, j])}
                              for j in range(3)],
             "last": int(r == len(present) - 1)}
            for r in range(len(present))]


def signed_terms(ce):
    """``(-1)**negative * 2**exponent`` where present, else 0; shape (rows, 3)."""
    present, negative, exponent = ce
    return np.where(present, np.where(negative, -1, 1) * (1 << exponent.astype(np.int64)), 0)


def random_basis(rng, config, *, extreme=False):
    low, high = -2 ** (config.basis_bits - 1), 2 ** (config.basis_bits - 1) - 1
    if extreme:
        return rng.choice([low, high], size=(3, 3)).astype(np.int64)
    return rng.integers(low, high + 1, size=(3, 3))


def nested(array):
    return [[int(v) for v in row] for row in array]


def block_sizes(rng, config, count, *, most=24):
    return [int(n) for n in rng.integers(1, min(config.block_rows, most) + 1, count)]


# Coefficient decoder. -----------------------------------------------------------

def decoder_words(ce, config):
    """The words of one block: the weight-file encoding, padded to whole words."""
    present, negative, exponent = ce
    weights = DecomposedWeights(present=present[None], negative=negative[None],
                                exponent=exponent[None].astype(np.uint8),
                                basis=np.zeros((1, 1, 3, 3), np.int8), block_rows=len(present))
    bits = np.unpackbits(np.frombuffer(encode(weights, config.code_bits), np.uint8),
                         bitorder="little")
    bits = np.concatenate([bits, np.zeros(-len(bits) % config.stream_bits, np.uint8)])
    weights_of_bits = 1 << np.arange(config.stream_bits, dtype=object)
    return [int(np.dot(word.astype(object), weights_of_bits))
            for word in bits.reshape(-1, config.stream_bits)]


def decoder_case(name, blocks, config, *, stall):
    words, rows = [], []
    for ce in blocks:
        if len(ce[0]):
            words += decoder_words(ce, config)
            rows += row_payloads(ce)
    max_cycles = None
    if not stall and config.stream_bits >= config.record_bits:
        # CoefficientDecoder's documented timing: start latency, then per block
        # bitmap words + one row per cycle + at most one refill cycle.
        max_cycles = 2 + SLACK + sum(-(-len(ce[0]) // config.stream_bits) + len(ce[0]) + 1
                                     for ce in blocks)
    return {"name": name, "stall": stall, "seed": len(rows),
            "inputs": {"block": [{"rows": len(ce[0])} for ce in blocks], "words": words},
            "outputs": {"rows": rows}, "max_cycles": max_cycles}


def coefficient_decoder_vectors(config, rng):
    n, k = config.block_rows, config.code_bits
    edges = [extreme_ce(n, k, negative=True), extreme_ce(1, k, negative=False), zero_ce(0),
             zero_ce(n), random_ce(rng, n, k), extreme_ce(min(n, 5), k, negative=False),
             zero_ce(1), zero_ce(0)]
    randoms = [random_ce(rng, size, k) for size in block_sizes(rng, config, 12, most=n)]
    full_rate = [random_ce(rng, size, k) for size in block_sizes(rng, config, 8, most=n)]
    return [decoder_case("stalls", edges + randoms, config, stall=STALL),
            decoder_case("full_rate", full_rate, config, stall=0.0)]


# Shift-accumulate PE and array. ------------------------------------------------------

def pe_lane(config, rng, sizes, *, edge):
    """Inputs and expected outputs of one PE over blocks of ``sizes`` rows."""
    k = config.code_bits
    inputs = {"basis": [], "rows": []}
    outputs = {}
    weights, products, block_end, sums, active = [], [], [], [], []
    z_bound = 3 * 2 ** (config.basis_bits + config.activation_bits - 2)
    total = 0
    for index, size in enumerate(sizes):
        if edge and index < 2:
            ce = extreme_ce(size, k, negative=bool(index))
            basis = np.full((3, 3), -2 ** (config.basis_bits - 1))
        elif edge and index == 2:
            ce, basis = zero_ce(size), random_basis(rng, config)
        else:
            ce, basis = random_ce(rng, size, k), random_basis(rng, config, extreme=edge)
        terms = signed_terms(ce)
        inputs["basis"].append(nested(basis))
        inputs["rows"] += row_payloads(ce)
        if config.dataflow == "rebuild":
            rebuilt = terms @ basis
            weights += [{"row": [int(w) for w in rebuilt[r]], "last": int(r == size - 1)}
                        for r in range(size)]
        else:
            z = rng.integers(-z_bound, z_bound + 1, size=(size, 3))
            if edge:
                z[: size // 2] = rng.choice([-z_bound, z_bound], size=(size // 2, 3))
            products += [[int(v) for v in row] for row in z]
            total += int((terms * z).sum())
            flush = index == len(sizes) - 1 or bool(rng.random() < 0.5)
            block_end.append({"flush": int(flush)})
            if flush:
                sums.append(wrap(total, config.accumulator_bits))
                total = 0
            active.append(nested(basis))
    if config.dataflow == "rebuild":
        outputs["weights"] = weights
    else:
        inputs.update(products=products, block_end=block_end)
        outputs.update(active_basis=active, sums=sums)
    return inputs, outputs


def pe_case(name, config, rng, lanes, *, stall, edge, blocks):
    inputs, outputs, longest = {}, {}, 0
    for lane in range(lanes):
        sizes = block_sizes(rng, config, blocks)
        lane_inputs, lane_outputs = pe_lane(config, rng, sizes, edge=edge)
        inputs.update({f"{s}__{lane}": v for s, v in lane_inputs.items()})
        outputs.update({f"{s}__{lane}": v for s, v in lane_outputs.items()})
        longest = max(longest, sum(sizes))
    latency = 2 if config.dataflow == "rebuild" else 3
    return {"name": name, "stall": stall, "seed": longest, "inputs": inputs, "outputs": outputs,
            "max_cycles": None if stall else longest + latency + SLACK}


def _strip_lane(case):
    for key in ("inputs", "outputs"):
        case[key] = {stream.removesuffix("__0"): v for stream, v in case[key].items()}
    return case


def shift_accumulate_pe_vectors(config, rng):
    return [_strip_lane(pe_case("stalls", config, rng, 1, stall=STALL, edge=True,
                                blocks=10)),
            _strip_lane(pe_case("full_rate", config, rng, 1, stall=0.0, edge=False, blocks=8))]


def shift_accumulate_array_vectors(config, rng):
    return [pe_case("stalls", config, rng, config.lanes, stall=STALL, edge=True,
                    blocks=6),
            pe_case("full_rate", config, rng, config.lanes, stall=0.0, edge=False, blocks=5)]


# Basis engine. ---------------------------------------------------------------------

def engine_case(name, config, rng, *, stall, edge, blocks):
    a_low, a_high = -2 ** (config.activation_bits - 1), 2 ** (config.activation_bits - 1) - 1
    sizes = block_sizes(rng, config, blocks)
    rows = sum(sizes)
    x = rng.integers(a_low, a_high + 1, size=(rows, 3))
    if edge:
        x[: rows // 3] = rng.choice([a_low, a_high], size=(rows // 3, 3))
    ends = np.cumsum(sizes) - 1
    last = np.isin(np.arange(rows), ends)
    starts = np.concatenate([[0], ends[:-1] + 1])
    inputs, outputs = {}, {}
    if config.dataflow == "rebuild":
        inputs["activations"] = [[int(v) for v in row] for row in x]
        for lane in range(config.lanes):
            w = rng.integers(-config.max_weight, config.max_weight + 1, size=(rows, 3))
            if edge:
                w[: rows // 3] = rng.choice([-config.max_weight, config.max_weight],
                                            size=(rows // 3, 3))
            flush = [bool(rng.random() < 0.5) or b == blocks - 1 for b in range(blocks)]
            inputs[f"weights__{lane}"] = [{"row": [int(v) for v in w[r]], "last": int(last[r])}
                                          for r in range(rows)]
            inputs[f"block_end__{lane}"] = [{"flush": int(f)} for f in flush]
            sums, total = [], 0
            for b, (start, end) in enumerate(zip(starts, ends)):
                total += int((w[start:end + 1] * x[start:end + 1]).sum())
                if flush[b]:
                    sums.append(wrap(total, config.accumulator_bits))
                    total = 0
            outputs[f"sums__{lane}"] = sums
        latency = 4
    else:
        inputs["activations"] = [{"row": [int(v) for v in x[r]], "last": int(last[r])}
                                 for r in range(rows)]
        for lane in range(config.lanes):
            bases = [random_basis(rng, config, extreme=edge and b % 2 == 0) for b in range(blocks)]
            inputs[f"active_basis__{lane}"] = [nested(basis) for basis in bases]
            block_of_row = np.repeat(np.arange(blocks), sizes)
            outputs[f"products__{lane}"] = [
                [int(v) for v in bases[block_of_row[r]] @ x[r]] for r in range(rows)]
        latency = 3
    return {"name": name, "stall": stall, "seed": rows, "inputs": inputs, "outputs": outputs,
            "max_cycles": None if stall else rows + latency + SLACK}


def basis_engine_vectors(config, rng):
    return [engine_case("stalls", config, rng, stall=STALL, edge=True, blocks=10),
            engine_case("full_rate", config, rng, stall=0.0, edge=False, blocks=8)]


VECTORS = {
    "coefficient_decoder": coefficient_decoder_vectors,
    "shift_accumulate_pe": shift_accumulate_pe_vectors,
    "shift_accumulate_array": shift_accumulate_array_vectors,
    "basis_engine": basis_engine_vectors,
}

BOTH = ("icarus", "verilator")
ICARUS = ("icarus",)

#: (block, configuration overrides, simulators). A Verilator build takes 5 s
#: (20 s on a busy machine), so it runs the default configurations; Icarus
#: sweeps further.
CONFIGS = [
    ("coefficient_decoder", {}, BOTH),
    ("coefficient_decoder", {"stream_bits": 8, "code_bits": 1, "block_rows": 20}, ICARUS),
    ("coefficient_decoder", {"stream_bits": 32, "code_bits": 4, "block_rows": 40,
                             "accumulator_bits": 48}, ICARUS),
    ("coefficient_decoder", {"stream_bits": 8, "code_bits": 3, "block_rows": 33}, ICARUS),
    ("shift_accumulate_pe", {"dataflow": "rebuild"}, BOTH),
    ("shift_accumulate_pe", {"dataflow": "factored"}, BOTH),
    ("shift_accumulate_pe", {"dataflow": "rebuild", "basis_bits": 5, "code_bits": 2,
                             "activation_bits": 6, "accumulator_bits": 20}, ICARUS),
    ("shift_accumulate_pe", {"dataflow": "factored", "basis_bits": 6, "code_bits": 4,
                             "activation_bits": 4, "accumulator_bits": 28}, ICARUS),
    ("shift_accumulate_array", {"dataflow": "rebuild"}, BOTH),
    ("shift_accumulate_array", {"dataflow": "factored"}, BOTH),
    ("shift_accumulate_array", {"dataflow": "factored", "lanes": 2, "block_rows": 8}, ICARUS),
    ("basis_engine", {"dataflow": "rebuild"}, BOTH),
    ("basis_engine", {"dataflow": "factored"}, BOTH),
    ("basis_engine", {"dataflow": "rebuild", "lanes": 1, "activation_bits": 5,
                      "basis_bits": 7, "code_bits": 2}, ICARUS),
    ("basis_engine", {"dataflow": "factored", "lanes": 3, "activation_bits": 12,
                      "basis_bits": 10, "accumulator_bits": 48}, ICARUS),
]


def _params():
    for block, overrides, simulators in CONFIGS:
        label = ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"
        for simulator in simulators:
            yield pytest.param(block, overrides, simulator, id=f"{block}-{label}-{simulator}")


@pytest.mark.parametrize("block, overrides, simulator", list(_params()))
def test_block_verilog(block, overrides, simulator, tmp_path):
    config = AcceleratorConfig(**overrides)
    generated = generate(block, config, tmp_path / "verilog")
    rng = np.random.default_rng(sorted(VECTORS).index(block) * 1000 + len(overrides))
    cases = VECTORS[block](config, rng)
    vectors = write_vectors(tmp_path / "vectors.json", cases)
    result = run_cocotb_on(generated, f"{block}_tb", simulator=simulator,
                           build_dir=tmp_path / "sim", module_dirs=[COCOTB_TESTS],
                           extra_env={VECTORS_ENV: str(vectors)})
    assert result.tests == len(cases)


DATAFLOW_CONFIGS = [(block, dataflow) for block in VECTORS for dataflow in ("rebuild", "factored")
                    if block != "coefficient_decoder" or dataflow == "rebuild"]


@pytest.mark.parametrize("block, dataflow", DATAFLOW_CONFIGS)
def test_block_verilog_lints(block, dataflow, tmp_path):
    generated = generate(block, AcceleratorConfig(dataflow=dataflow), tmp_path)
    verilator_lint(generated.verilog_path)


@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize("block, dataflow", DATAFLOW_CONFIGS)
def test_block_synthesises_without_latches(block, dataflow, family, tmp_path):
    generated = generate(block, AcceleratorConfig(dataflow=dataflow), tmp_path)
    report = synthesise(generated.verilog_path, block, family, out_dir=tmp_path)
    assert report.luts > 0 and report.ffs > 0


def test_block_bench_negative_control(tmp_path):
    """The decoder's bench, with one exponent of the expected rows flipped, must fail there."""
    block, config = "coefficient_decoder", AcceleratorConfig()
    generated = generate(block, config, tmp_path / "verilog")
    cases = VECTORS[block](config, np.random.default_rng(0))
    stalls = next(case for case in cases if case["name"] == "stalls")
    rows = stalls["outputs"]["rows"]
    index = next(r for r, row in enumerate(rows) if r > len(rows) // 2 and row["present"] & 1)
    rows[index]["coefficients"][0]["exponent"] ^= 1
    vectors = write_vectors(tmp_path / "vectors.json", cases)
    failed = rf"(?s)1 of {len(cases)} cocotb tests failed.*case stalls: rows\[{index}\] is "
    with pytest.raises(CocotbFailure, match=failed):
        run_cocotb_on(generated, f"{block}_tb", simulator="icarus", build_dir=tmp_path / "sim",
                      module_dirs=[COCOTB_TESTS], extra_env={VECTORS_ENV: str(vectors)})


def test_stream_rule_checker_negative_control(tmp_path):
    """A driver that drops ``valid`` before ``ready`` makes the bench's rule checker fail."""
    block, config = "coefficient_decoder", AcceleratorConfig()
    generated = generate(block, config, tmp_path / "verilog")
    cases = [case for case in VECTORS[block](config, np.random.default_rng(0))
             if case["name"] == "stalls"]
    cases[0]["break_rules"] = "words"
    vectors = write_vectors(tmp_path / "vectors.json", cases)
    with pytest.raises(CocotbFailure, match=r"(?s)stream words: valid fell in cycle \d+"):
        run_cocotb_on(generated, f"{block}_tb", simulator="icarus", build_dir=tmp_path / "sim",
                      module_dirs=[COCOTB_TESTS], extra_env={VECTORS_ENV: str(vectors)})
