"""The packed coefficient stream: the worked example of docs/weight-file.md,
an independent bit-by-bit reference encoder, round trips and garbage."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from factories import random_decomposed
from sd_hw import coefficient_stream
from sd_hw.errors import SdHwError, WeightFileError
from sd_hw.integer_network import DecomposedWeights


def example():
    """The worked example of docs/weight-file.md: M = 1, R = 3, block_rows = 2."""
    present = np.zeros((1, 3, 3), bool)
    negative = np.zeros((1, 3, 3), bool)
    exponent = np.zeros((1, 3, 3), np.uint8)
    present[0, 0, 0], exponent[0, 0, 0] = True, 1                           # +2^1
    present[0, 0, 2], exponent[0, 0, 2], negative[0, 0, 2] = True, 5, True  # -2^5
    present[0, 1, 1], exponent[0, 1, 1] = True, 7                           # +2^7
    return DecomposedWeights(present, negative, exponent, np.zeros((1, 2, 3, 3), np.int8), 2)


def reference_encode(weights, code_bits):
    """Straight from the spec, one bit at a time (slow, independent)."""
    out = bytearray()
    m, rows, _ = weights.present.shape
    for channel in range(m):
        for first in range(0, rows, weights.block_rows):
            block = range(first, min(rows, first + weights.block_rows))
            bits = [int(weights.present[channel, r].any()) for r in block]
            for r in block:
                if not weights.present[channel, r].any():
                    continue
                bits += [int(weights.present[channel, r, j]) for j in range(3)]
                for j in range(3):
                    if weights.present[channel, r, j]:
                        code = int(weights.exponent[channel, r, j]) \
                            | int(weights.negative[channel, r, j]) << code_bits
                        bits += [(code >> k) & 1 for k in range(code_bits + 1)]
            bits += [0] * (-len(bits) % 8)
            for i in range(0, len(bits), 8):
                out.append(sum(bit << k for k, bit in enumerate(bits[i:i + 8])))
    return bytes(out)


def assert_decodes_to(data, weights, code_bits):
    m, rows, _ = weights.present.shape
    present, negative, exponent = coefficient_stream.decode(
        data, out_channels=m, rows=rows, block_rows=weights.block_rows, code_bits=code_bits)
    assert present.dtype == bool and negative.dtype == bool and exponent.dtype == np.uint8
    np.testing.assert_array_equal(present, weights.present)
    np.testing.assert_array_equal(negative, weights.negative)
    np.testing.assert_array_equal(exponent, weights.exponent)


def test_worked_example_bytes():
    data = coefficient_stream.encode(example(), 3)
    assert data == bytes([0x37, 0x5A, 0x07, 0x00])
    assert_decodes_to(data, example(), 3)
    assert coefficient_stream.bit_counts(example(), 3) == {
        "bitmap_bits": 3, "mask_bits": 6, "index_bits": 9, "code_bits": 12,
        "padding_bits": 11, "total_bits": 32}


def test_worked_example_bit_by_bit():
    bits = np.unpackbits(np.frombuffer(coefficient_stream.encode(example(), 3), np.uint8),
                         bitorder="little")
    expected = ([1, 1] + [1, 0, 1] + [1, 0, 0, 0] + [1, 0, 1, 1]
                + [0, 1, 0] + [1, 1, 1, 0] + [0] * 4 + [0] + [0] * 7)
    assert bits.tolist() == expected


def test_sign_is_top_bit_of_code():
    # One coefficient -2^0 with 1-bit codes: bitmap 1, mask 001, code sign=1 offset=0.
    present = np.zeros((1, 1, 3), bool)
    present[0, 0, 0] = True
    weights = DecomposedWeights(present, present.copy(), np.zeros((1, 1, 3), np.uint8),
                                np.zeros((1, 1, 3, 3), np.int8), 1)
    assert coefficient_stream.encode(weights, 1) == bytes([0b0100011])


@st.composite
def factors(draw):
    m = draw(st.integers(1, 5))
    rows = draw(st.integers(1, 24))
    block_rows = draw(st.integers(1, 30))
    code_bits = draw(st.integers(1, 6))
    density = draw(st.sampled_from([0.0, 0.05, 0.4, 1.0]))
    weights = random_decomposed(
        np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))), m, rows,
        block_rows=block_rows, code_bits=code_bits, density=density,
        row_density=draw(st.sampled_from([0.0, 0.5, 1.0])), extreme=draw(st.booleans()))
    return weights, code_bits


@settings(max_examples=150, deadline=None)
@given(factors())
def test_round_trip_and_reference(case):
    weights, code_bits = case
    data = coefficient_stream.encode(weights, code_bits)
    assert data == reference_encode(weights, code_bits)
    assert_decodes_to(data, weights, code_bits)
    counts = coefficient_stream.bit_counts(weights, code_bits)
    m, rows, _ = weights.present.shape
    assert counts["total_bits"] == 8 * len(data)
    assert counts["bitmap_bits"] == m * rows
    assert counts["mask_bits"] == 3 * int(weights.present.any(axis=2).sum())
    assert counts["code_bits"] == (code_bits + 1) * int(weights.present.sum())
    assert counts["index_bits"] + counts["code_bits"] + counts["padding_bits"] \
        == counts["total_bits"]


def test_all_zero_layer_is_bitmaps_only():
    weights = random_decomposed(np.random.default_rng(0), 3, 20, block_rows=9, code_bits=3,
                                density=0.0)
    # Blocks of 9, 9 and 2 rows: 2 + 2 + 1 bytes per channel.
    assert coefficient_stream.encode(weights, 3) == bytes(15)
    assert_decodes_to(bytes(15), weights, 3)


def test_large_layer_round_trip():
    weights = random_decomposed(np.random.default_rng(1), 128, 900, block_rows=192,
                                code_bits=3, density=0.3)
    assert_decodes_to(coefficient_stream.encode(weights, 3), weights, 3)


# Garbage. -----------------------------------------------------------------

def decode_example(data):
    return coefficient_stream.decode(data, out_channels=1, rows=3, block_rows=2, code_bits=3)


@pytest.mark.parametrize("data", [b"", b"\x37", b"\x37\x5a", b"\x37\x5a\x07"])
def test_truncated(data):
    with pytest.raises(WeightFileError, match="too short"):
        decode_example(data)


def test_trailing_data():
    with pytest.raises(WeightFileError, match="trailing data"):
        decode_example(bytes([0x37, 0x5A, 0x07, 0x00, 0x00]))


def test_nonzero_padding():
    with pytest.raises(WeightFileError, match="padding bits 20..23 are not zero"):
        decode_example(bytes([0x37, 0x5A, 0x17, 0x00]))


def test_empty_mask():
    # Bitmap says row 0 is nonzero, its mask is 000.
    with pytest.raises(WeightFileError, match="row 0 .*empty"):
        decode_example(bytes([0b00000001, 0x00]))


def test_truncated_at_every_byte():
    weights = random_decomposed(np.random.default_rng(2), 4, 30, block_rows=7, code_bits=2)
    data = coefficient_stream.encode(weights, 2)
    for cut in range(len(data)):
        with pytest.raises(WeightFileError, match="too short|corrupt"):
            coefficient_stream.decode(data[:cut], out_channels=4, rows=30, block_rows=7,
                                      code_bits=2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 4), st.integers(1, 12), st.integers(1, 8),
       st.integers(1, 6))
def test_garbage_raises_only_weight_file_error(data, m, rows, block_rows, code_bits):
    try:
        present, negative, exponent = coefficient_stream.decode(
            data, out_channels=m, rows=rows, block_rows=block_rows, code_bits=code_bits)
    except WeightFileError:
        return
    # Whatever decodes is a valid layer that encodes back to the same bytes.
    weights = DecomposedWeights(present, negative, exponent, None, block_rows)
    assert coefficient_stream.encode(weights, code_bits) == data


def test_encode_refuses_what_the_stream_cannot_hold():
    weights = example()
    weights.exponent[0, 2, 0] = 1  # absent coefficient with an exponent
    with pytest.raises(SdHwError, match="absent coefficients"):
        coefficient_stream.encode(weights, 3)
    weights = example()
    with pytest.raises(SdHwError, match=r"0\.\.3 for code_bits = 2"):
        coefficient_stream.encode(weights, 2)
    with pytest.raises(SdHwError, match="code_bits"):
        coefficient_stream.encode(example(), 0)
