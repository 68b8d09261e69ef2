"""The packed coefficient stream of a decomposed layer.

This module is the one definition of the stream; the weight file stores it
as is and the RTL coefficient decoder consumes exactly these bits
(docs/weight-file.md, "Coefficient stream", has a worked example).

Layout, for a layer with ``M`` output channels, ``R`` Ce rows per channel,
``block_rows`` rows per block and ``code_bits``-bit exponent offsets::

    for each output channel m = 0 .. M-1:
      for each block b = 0 .. ceil(R / block_rows) - 1:
        (the block holds rows r = b*block_rows .. min(R, (b+1)*block_rows) - 1,
         n_b rows)
        row bitmap: n_b bits, bit i = 1 if row b*block_rows + i has at least
                    one coefficient
        for each row with bitmap bit 1, in row order:
          element mask: 3 bits, bit j = 1 if column j has a coefficient
                        (never 0 for a row marked in the bitmap)
          for each column j with mask bit 1, in column order:
            code: code_bits + 1 bits; bits [code_bits-1:0] = exponent offset
                  (unsigned), bit code_bits = sign (1 = negative)
        zero bits up to the next byte boundary

Every field is written least significant bit first, and bits fill each byte
from bit 0 (the LSB) to bit 7 ("little" bit order): stream bit ``p`` is bit
``p % 8`` of byte ``p // 8``. Every block starts on a byte boundary, so a
block of ``n_b`` rows whose nonzero rows have ``c`` coefficients in total
takes ``ceil((n_b + 3*nonzero_rows + c*(code_bits+1)) / 8)`` bytes and a
decoder can start on any block once it knows where the previous one ended.

Coefficient ``(m, r, j)`` is ``(-1)**sign * 2**offset``; absent ones are
zero (``present = negative = exponent = 0`` in
:class:`sd_hw.integer_network.DecomposedWeights`).
"""

import numpy as np

from .errors import SdHwError, WeightFileError


__all__ = ["encode", "decode", "bit_counts", "MAX_CODE_BITS"]

# Exponent offsets are held in uint8 arrays.
MAX_CODE_BITS = 8


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= high:
        raise SdHwError(f"coefficient stream: {name} must be an integer from {low} to "
                        f"{high}, got {value!r}")
    return int(value)


def _checked_factors(weights, code_bits):
    """``present``, ``negative``, ``exponent`` as bool/bool/int64 after checks."""
    code_bits = _check_int("code_bits", code_bits, 1, MAX_CODE_BITS)
    block_rows = _check_int("block_rows", weights.block_rows, 1, 2 ** 32 - 1)
    present = np.asarray(weights.present)
    negative = np.asarray(weights.negative)
    exponent = np.asarray(weights.exponent)
    if present.ndim != 3 or present.shape[2] != 3 or 0 in present.shape:
        raise SdHwError(f"coefficient stream: 'present' must have shape (M, R, 3) with "
                        f"M, R >= 1, got {present.shape}")
    for name, array in (("negative", negative), ("exponent", exponent)):
        if array.shape != present.shape:
            raise SdHwError(f"coefficient stream: {name!r} has shape {array.shape}, "
                            f"'present' has {present.shape}")
    for name, array in (("present", present), ("negative", negative)):
        if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
            raise SdHwError(f"coefficient stream: {name!r} must hold booleans")
    if not (np.issubdtype(exponent.dtype, np.integer) or exponent.dtype == np.bool_):
        raise SdHwError(f"coefficient stream: 'exponent' must be integer, "
                        f"got dtype {exponent.dtype}")
    present = present.astype(bool)
    negative = negative.astype(bool)
    exponent = exponent.astype(np.int64)
    if np.any(~present & (negative | (exponent != 0))):
        raise SdHwError("coefficient stream: absent coefficients must have "
                        "negative = exponent = 0")
    top = 2 ** code_bits - 1
    if np.any((exponent < 0) | (exponent > top)):
        raise SdHwError(f"coefficient stream: exponent offsets must lie in 0..{top} for "
                        f"code_bits = {code_bits}, got {exponent.min()}..{exponent.max()}")
    return present, negative, exponent, code_bits, block_rows


def _rows_in_block(rows, block_rows):
    starts = np.arange(0, rows, block_rows)
    return starts, np.minimum(block_rows, rows - starts)


def _layout(present, block_rows, code_bits):
    """Bit positions of every field of the stream (all int64)."""
    m, rows, _ = present.shape
    width = code_bits + 1
    nonzero = present.any(axis=2)
    count = present.sum(axis=2, dtype=np.int64)
    record = np.where(nonzero, 3 + count * width, 0)
    first, n_rows = _rows_in_block(rows, block_rows)
    content = n_rows[None, :] + np.add.reduceat(record, first, axis=1)
    padded = (content + 7) // 8 * 8
    flat = padded.ravel()
    block_start = (np.cumsum(flat) - flat).reshape(padded.shape)
    block = np.arange(rows) // block_rows
    before = np.cumsum(record, axis=1) - record  # record bits before row r in channel
    row_start = (block_start[:, block] + n_rows[block][None, :]
                 + before - before[:, first[block]])
    bitmap_pos = block_start[:, block] + (np.arange(rows) - first[block])[None, :]
    return dict(nonzero=nonzero, count=count, content=content, padded=padded,
                block_start=block_start, row_start=row_start, bitmap_pos=bitmap_pos,
                total=int(flat.sum()), n_rows=n_rows)


def bit_counts(weights, code_bits):
    """Bits of the encoded stream of ``weights``, by kind.

    Returns a dict: ``bitmap_bits`` (row bitmaps), ``mask_bits`` (element
    masks), ``index_bits`` (their sum), ``code_bits`` (coefficient codes),
    ``padding_bits`` (block alignment) and ``total_bits``, which is
    ``8 * len(encode(weights, code_bits))``.
    """
    present, _, _, code_bits, block_rows = _checked_factors(weights, code_bits)
    lay = _layout(present, block_rows, code_bits)
    bitmap = present.shape[0] * present.shape[1]
    mask = 3 * int(lay["nonzero"].sum())
    codes = int(lay["count"].sum()) * (code_bits + 1)
    return {"bitmap_bits": bitmap, "mask_bits": mask, "index_bits": bitmap + mask,
            "code_bits": codes, "padding_bits": lay["total"] - bitmap - mask - codes,
            "total_bits": lay["total"]}


def encode(weights, code_bits):
    """The packed coefficient stream of a :class:`DecomposedWeights`, as bytes."""
    present, negative, exponent, code_bits, block_rows = _checked_factors(weights, code_bits)
    lay = _layout(present, block_rows, code_bits)
    bits = np.zeros(lay["total"], np.uint8)
    bits[lay["bitmap_pos"][lay["nonzero"]]] = 1
    row_start = lay["row_start"]
    for j in range(3):
        bits[row_start[present[:, :, j]] + j] = 1
    width = code_bits + 1
    before = np.cumsum(present, axis=2) - present  # codes before column j in the row
    start = (row_start[:, :, None] + 3 + before * width)[present]
    value = exponent[present] | (negative[present].astype(np.int64) << code_bits)
    for k in range(width):
        bits[start[(value >> k) & 1 == 1] + k] = 1
    return np.packbits(bits, bitorder="little").tobytes()


def _record_chain(window, k, width):
    """Offsets of the first ``k + 1`` records chained from offset 0 of ``window``.

    ``window`` holds the bits from the first record on, at most the
    ``k * (3 + 3 * width)`` bits that ``k`` records can take.

    Record ``i + 1`` starts ``3 + popcount(mask_i) * width`` bits after
    record ``i``; the chain is followed by pointer doubling, so the work is
    ``O(len(window) * log k)`` NumPy operations instead of a Python loop.
    Bits past the end of ``window`` read as zero; the caller checks that the
    chain stays inside the data.
    """
    size = k * (3 + 3 * width)
    padded = np.zeros(size + 3, np.int64)
    padded[:window.size] = window
    ones = padded[:size] + padded[1:size + 1] + padded[2:size + 2]
    jump = np.empty(size + 1, np.int64)
    jump[:size] = np.minimum(np.arange(size) + 3 + ones * width, size)
    jump[size] = size
    chain = np.zeros(1, np.int64)
    while chain.size < k + 1:
        chain = np.concatenate([chain, jump[chain]])
        jump = jump[jump]
    return chain[:k + 1]


def decode(data, *, out_channels, rows, block_rows, code_bits):
    """Decode a packed coefficient stream.

    Returns ``(present, negative, exponent)`` of shape ``(out_channels,
    rows, 3)``, dtypes bool, bool and uint8. The stream must be exactly one
    layer's: a stream that ends early, has bytes after the last block, marks
    a row nonzero with an empty element mask or has nonzero padding bits
    raises :class:`WeightFileError`.
    """
    m = _check_int("out_channels", out_channels, 1, 2 ** 32 - 1)
    rows = _check_int("rows", rows, 1, 2 ** 32 - 1)
    block_rows = _check_int("block_rows", block_rows, 1, 2 ** 32 - 1)
    code_bits = _check_int("code_bits", code_bits, 1, MAX_CODE_BITS)
    width = code_bits + 1
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    available = bits.size
    first, n_rows = _rows_in_block(rows, block_rows)
    max_record = 3 + 3 * width
    nonzero = np.zeros((m, rows), bool)
    row_start = np.zeros((m, rows), np.int64)
    pos = 0
    for channel in range(m):
        for b, (r0, n) in enumerate(zip(first.tolist(), n_rows.tolist())):
            where = f"output channel {channel}, block {b}"
            if pos + n > available:
                raise WeightFileError(
                    f"coefficient stream is too short: {where} starts at bit {pos} and its "
                    f"row bitmap needs {n} bits, but the stream has {available} bits")
            bitmap = bits[pos:pos + n].astype(bool)
            k = int(bitmap.sum())
            q = pos + n
            if k:
                chain = _record_chain(bits[q:q + k * max_record], k, width)
                end = q + int(chain[k])
                if end > available:
                    raise WeightFileError(
                        f"coefficient stream is too short: {where} needs bits up to "
                        f"{end}, but the stream has {available} bits")
                starts = q + chain[:k]
                masks = bits[starts] | bits[starts + 1] | bits[starts + 2]
                if not masks.all():
                    row = r0 + int(np.flatnonzero(bitmap)[int(np.argmin(masks))])
                    raise WeightFileError(
                        f"corrupt coefficient stream: {where}: row {row} is marked "
                        f"nonzero in the row bitmap but its element mask is empty")
                nonzero[channel, r0:r0 + n] = bitmap
                row_start[channel, r0:r0 + n][bitmap] = starts
            else:
                end = q
            pos = (end + 7) // 8 * 8
            if pos > available:
                raise WeightFileError(
                    f"coefficient stream is too short: {where} needs {pos} bits, "
                    f"the stream has {available} bits")
            if bits[end:pos].any():
                raise WeightFileError(
                    f"corrupt coefficient stream: {where}: padding bits {end}..{pos - 1} "
                    f"are not zero")
    if pos != available:
        raise WeightFileError(
            f"coefficient stream has trailing data: the {m} x {len(first)} blocks end "
            f"at byte {pos // 8}, but the stream has {available // 8} bytes")
    starts = row_start[nonzero]
    mask = np.stack([bits[starts + j] for j in range(3)], axis=1).astype(bool)
    before = np.cumsum(mask, axis=1) - mask
    code_start = (starts[:, None] + 3 + before * width)[mask]
    value = np.zeros(code_start.size, np.int64)
    for k in range(width):
        value |= bits[code_start + k].astype(np.int64) << k
    present = np.zeros((m, rows, 3), bool)
    present[nonzero] = mask
    negative = np.zeros((m, rows, 3), bool)
    exponent = np.zeros((m, rows, 3), np.uint8)
    negative[present] = (value >> code_bits).astype(bool)
    exponent[present] = (value & (2 ** code_bits - 1)).astype(np.uint8)
    return present, negative, exponent
