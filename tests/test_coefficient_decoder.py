# amaranth: UnusedElaboratable=no
# (test_parameters_are_validated builds decoders only to query them.)

"""CoefficientDecoder against blocks encoded by sd_hw.coefficient_stream.

The golden side starts from random present/negative/exponent arrays: the
expected rows are read off the arrays, the words come from the weight-file
encoder (cross-checked against a small packer written here), with every
block re-aligned to a word boundary as the decoder's contract says.
"""

import gc
import random
import sys
import warnings

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from sd_hw.coefficient_stream import encode
from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.coefficient_decoder import CoefficientDecoder
from sd_hw.errors import ParameterError
from sd_hw.integer_network import DecomposedWeights
from sim.streams import checked_simulator, stream_get, stream_put


def make_config(code_bits, stream_bits, block_rows):
    # Wide accumulators keep the configuration valid for 4-bit codes; the
    # decoder does not use them.
    return AcceleratorConfig(code_bits=code_bits, stream_bits=stream_bits,
                             block_rows=block_rows, accumulator_bits=48)


# (code_bits, stream_bits, block_rows); the last two have records wider than a word.
CONFIGS = [(1, 16, 1), (1, 16, 5), (2, 16, 7), (3, 16, 192), (3, 32, 40), (4, 32, 20),
           (1, 32, 64), (1, 8, 5), (4, 16, 33)]
FAST_CONFIGS = [c for c in CONFIGS if c[1] >= 3 + 3 * (c[0] + 1)]


# Golden side. ----------------------------------------------------------------

def random_block(rng, rows, code_bits, *, zero_rows=0.3, element=0.6):
    """present, negative, exponent of one block, shape (rows, 3)."""
    present = rng.random((rows, 3)) < element
    present &= (rng.random(rows) >= zero_rows)[:, None]
    negative = present & (rng.random((rows, 3)) < 0.5)
    exponent = np.where(present, rng.integers(0, 2 ** code_bits, (rows, 3)), 0)
    return present, negative, exponent


def pack_block(block, code_bits):
    """The stream bits of one block, by the spec, as a list of 0/1 (independent packer)."""
    present, negative, exponent = block
    bits = [int(row.any()) for row in present]
    for row in range(len(present)):
        if present[row].any():
            bits += [int(present[row, j]) for j in range(3)]
            for j in np.flatnonzero(present[row]):
                value = int(exponent[row, j]) | int(negative[row, j]) << code_bits
                bits += [(value >> k) & 1 for k in range(code_bits + 1)]
    return bits


def encoded_block_bits(block, code_bits):
    """The stream bits of one block from the weight-file encoder (byte-padded)."""
    present, negative, exponent = block
    weights = DecomposedWeights(present=present[None], negative=negative[None],
                                exponent=exponent[None].astype(np.uint8),
                                basis=np.zeros((1, 1, 3, 3), np.int8),
                                block_rows=len(present))
    return np.unpackbits(np.frombuffer(encode(weights, code_bits), np.uint8),
                         bitorder="little")


def block_words(block, config):
    """The words of one block: its encoded bits, padded to whole words, little endian."""
    if len(block[0]) == 0:
        return []
    bits = encoded_block_bits(block, config.code_bits)
    width = config.stream_bits
    bits = np.concatenate([bits, np.zeros(-len(bits) % width, np.uint8)])
    return [int(sum(int(b) << k for k, b in enumerate(word)))
            for word in bits.reshape(-1, width)]


def expected_rows(block):
    present, negative, exponent = block
    rows = []
    for row in range(len(present)):
        mask = sum(int(present[row, j]) << j for j in range(3))
        coefficients = tuple((int(exponent[row, j]), int(negative[row, j])) for j in range(3))
        rows.append((mask, coefficients, int(row == len(present) - 1)))
    return rows


def row_value(payload):
    return (int(payload.present),
            tuple((int(c.exponent), int(c.negative)) for c in payload.coefficients),
            int(payload.last))


def check_rows(received, expected):
    assert len(received) == len(expected), f"{len(received)} rows, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(received, expected)):
        assert got == want, f"row {index}: got {got}, expected {want}"


def record_bits(block_row, code_bits):
    count = int(block_row.sum())
    return 3 + count * (code_bits + 1) if count else 0


# Simulation. -----------------------------------------------------------------

SENTINEL_CYCLES = 24


def simulate(config, blocks, *, seed=0, stall=0.0):
    """Run ``blocks`` through a decoder.

    Returns the received rows, the cycles at which rows and words were
    accepted, and the words offered in total. After the last block's words
    the word stream stays valid with a sentinel, which must never be taken.
    """
    dut = CoefficientDecoder(config)
    words = [w for block in blocks for w in block_words(block, config)]
    rng = random.Random(seed)
    seeds = [rng.randrange(2 ** 32) for _ in range(3)]
    total = sum(len(block[0]) for block in blocks)
    budget = 20 * (total + len(words) + len(blocks)) + 500  # a deadlock guard
    result = {"rows": None, "row_cycles": [], "word_cycles": [], "words": len(words),
              "dut": dut, "cycles": 0}

    async def commands(ctx):
        await stream_put(ctx, dut.block, [{"rows": len(block[0])} for block in blocks],
                         stall=stall, rng=random.Random(seeds[0]))

    async def feed(ctx):
        await stream_put(ctx, dut.words, words, stall=stall, rng=random.Random(seeds[1]))
        ctx.set(dut.words.payload, 2 ** config.stream_bits - 1)
        ctx.set(dut.words.valid, 1)

    async def collect(ctx):
        result["rows"] = await stream_get(ctx, dut.rows, total, stall=stall,
                                          rng=random.Random(seeds[2]), convert=row_value)
        await ctx.tick().repeat(SENTINEL_CYCLES)

    async def monitor(ctx):
        cycle = 0
        async for _, _, wv, wr, rv, rr in ctx.tick().sample(
                dut.words.valid, dut.words.ready, dut.rows.valid, dut.rows.ready):
            if wv and wr:
                result["word_cycles"].append(cycle)
            if rv and rr:
                result["row_cycles"].append(cycle)
            cycle += 1
            result["cycles"] = cycle

    sim = checked_simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(commands)
    sim.add_testbench(feed)
    sim.add_testbench(collect)
    sim.add_testbench(monitor, background=True)
    while sim.advance():
        if result["cycles"] >= budget:
            del sim
            collect_stuck_testbenches()
            raise AssertionError(f"no progress: {len(result['row_cycles'])} of {total} rows "
                                 f"after {budget} cycles")
    return result


def collect_stuck_testbenches():
    """Free the testbenches of a dropped simulation that hung (a deadlocked decoder).

    Closing a testbench suspended in ``ctx.tick().until()`` makes Python
    report "asynchronous generator is already running"; that is noise here,
    so it is collected now, with the report muted, rather than later inside
    another test.
    """
    previous, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous


def run_and_check(config, blocks, *, seed=0, stall=0.0):
    result = simulate(config, blocks, seed=seed, stall=stall)
    check_rows(result["rows"], [row for block in blocks for row in expected_rows(block)])
    assert len(result["word_cycles"]) == result["words"], \
        f"decoder took {len(result['word_cycles'])} words, the blocks have {result['words']}"
    return result


def empty_block():
    """A block of 0 rows: its command reads no word."""
    return np.zeros((0, 3), bool), np.zeros((0, 3), bool), np.zeros((0, 3), int)


def random_blocks(config, rng, count):
    sizes = [config.block_rows, 1] + [int(rng.integers(1, config.block_rows + 1))
                                      for _ in range(count - 2)]
    rng.shuffle(sizes)
    return [random_block(rng, n, config.code_bits,
                         zero_rows=rng.choice([0.0, 0.3, 0.8]),
                         element=rng.choice([0.3, 0.7, 1.0]))
            for n in sizes]


# Tests. ----------------------------------------------------------------------

@pytest.mark.parametrize("code_bits", [1, 2, 3, 4, 6])
def test_independent_packer_matches_encoder(code_bits):
    rng = np.random.default_rng(code_bits)
    for rows in (1, 2, 7, 192):
        block = random_block(rng, rows, code_bits)
        bits = pack_block(block, code_bits)
        encoded = encoded_block_bits(block, code_bits)
        assert list(encoded) == bits + [0] * (-len(bits) % 8)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: "cb{}-w{}-r{}".format(*p))
def test_random_blocks_with_stalls(params, seed):
    config = make_config(*params)
    rng = np.random.default_rng(seed)
    blocks = random_blocks(config, rng, 4 if config.block_rows < 100 else 3)
    run_and_check(config, blocks, seed=seed, stall=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 9))
@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: "cb{}-w{}-r{}".format(*p))
def test_random_blocks_with_stalls_sweep(params, seed):
    config = make_config(*params)
    rng = np.random.default_rng(seed)
    blocks = random_blocks(config, rng, 6)
    run_and_check(config, blocks, seed=seed, stall=float(rng.choice([0.1, 0.5, 0.8])))


@pytest.mark.parametrize("params", [(3, 16, 192), (4, 32, 20), (1, 8, 5), (4, 16, 33)],
                         ids=lambda p: "cb{}-w{}-r{}".format(*p))
def test_edge_blocks(params):
    """All-zero rows, all rows full at the largest exponent, one row, full-size
    blocks and empty commands, back to back."""
    config = make_config(*params)
    n, top = config.block_rows, config.max_shift
    rng = np.random.default_rng(7)
    zero = np.zeros((n, 3), bool)
    full = np.ones((n, 3), bool)
    blocks = [
        (zero, zero, np.zeros((n, 3), int)),
        (full, full, np.full((n, 3), top)),
        (full[:1], zero[:1], np.full((1, 3), top)),
        (zero[:1], zero[:1], np.zeros((1, 3), int)),
        (full, rng.random((n, 3)) < 0.5, np.full((n, 3), top)),
        random_block(rng, n, config.code_bits),
        empty_block(),
        (full[:1], full[:1], np.zeros((1, 3), int)),
    ]
    run_and_check(config, blocks, seed=3, stall=0.4)


def test_empty_block_commands_read_nothing():
    config = make_config(3, 16, 12)
    rng = np.random.default_rng(11)
    blocks = [empty_block(), random_block(rng, 12, 3), empty_block(), empty_block(),
              random_block(rng, 5, 3), empty_block()]
    run_and_check(config, blocks, seed=4, stall=0.3)


@pytest.mark.parametrize("params", FAST_CONFIGS, ids=lambda p: "cb{}-w{}-r{}".format(*p))
def test_one_row_per_cycle(params):
    """With no stalls, rows leave one per cycle once a block's bitmap is in;
    the only bubbles are the bitmap words and at most one refill cycle."""
    config = make_config(*params)
    rng = np.random.default_rng(5)
    blocks = random_blocks(config, rng, 5)
    blocks.append((np.ones((1, 3), bool), np.zeros((1, 3), bool), np.zeros((1, 3), int)))
    result = run_and_check(config, blocks)
    dut = result["dut"]
    width = config.stream_bits

    expected_row_cycles, expected_word_cycles = [], []
    first_word = dut.start_latency
    for present, _, _ in blocks:
        n = len(present)
        bitmap = dut.bitmap_cycles(n)
        expected_word_cycles += range(first_word, first_word + bitmap)
        refill = int(record_bits(present[0], config.code_bits) > -n % width)
        first_row = first_word + bitmap + refill
        expected_row_cycles += range(first_row, first_row + n)
        assert first_row + n - first_word <= dut.max_block_cycles(n)
        first_word = first_row + n
    assert result["row_cycles"] == expected_row_cycles
    assert set(expected_word_cycles) <= set(result["word_cycles"])


def test_checker_catches_a_wrong_row():
    config = make_config(3, 16, 9)
    rng = np.random.default_rng(13)
    block = random_block(rng, 9, 3, zero_rows=0.0, element=1.0)
    result = simulate(config, [block], stall=0.3)
    expected = expected_rows(block)
    check_rows(result["rows"], expected)
    mask, coefficients, last = expected[4]
    (exponent, negative), *rest = coefficients
    wrong = list(expected)
    wrong[4] = (mask, ((exponent ^ 1, negative), *rest), last)
    with pytest.raises(AssertionError, match="row 4"):
        check_rows(result["rows"], wrong)
    with pytest.raises(AssertionError):
        check_rows(result["rows"][:-1], expected)


@pytest.mark.parametrize("params", CONFIGS + [(4, 32, 4096)],
                         ids=lambda p: "cb{}-w{}-r{}".format(*p))
def test_converts_to_verilog_without_warnings(params):
    dut = CoefficientDecoder(make_config(*params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = verilog.convert(dut, name="coefficient_decoder")
    assert "module coefficient_decoder" in text


def test_parameters_are_validated():
    with pytest.raises(ParameterError, match="'config'"):
        CoefficientDecoder({"code_bits": 3})
    dut = CoefficientDecoder(make_config(3, 16, 192))
    assert dut.bitmap_cycles(0) == 0
    assert dut.bitmap_cycles(192) == 12
    assert dut.bitmap_cycles(17) == 2
    assert dut.max_block_cycles(192) == 12 + 192 + 1
    assert dut.buffer_bits == 2 * 15 + 16 - 1
    assert dut.sustains_one_row_per_cycle
    for rows in (-1, 193, 1.5, True):
        with pytest.raises(ParameterError, match="'rows'.*0 to 192"):
            dut.bitmap_cycles(rows)
    narrow = CoefficientDecoder(make_config(3, 8, 16))
    assert not narrow.sustains_one_row_per_cycle
    with pytest.raises(ParameterError, match="'stream_bits'"):
        narrow.max_block_cycles(4)
