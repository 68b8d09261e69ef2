"""The lane groups of one compute layer: index entries, lane streams, bases, parameters.

Output channels ``g * lanes .. g * lanes + lanes - 1`` form lane group
``g``; lane ``l`` computes channel ``g * lanes + l`` (lanes past the last
channel compute zeros, which are dropped). A Ce row that is zero in every
channel of a group is *skipped*: the group's index entries leave it out,
and the lanes' coefficient streams are re-encoded without it, so it costs
neither a cycle nor a fetch. SmartDeal's group-structured pruning makes
whole groups of filters share their zero rows, which is what makes this
pay. Rows zero in some lanes only still take their cycle.

A block whose rows are all skipped disappears: no header, basis or stream
words; its rows are counted with the skipped rows of the block before it
(or the first block).
"""

from dataclasses import dataclass, field

import numpy as np

from .. import coefficient_stream
from ..core.config import BASIS_WORD_BITS
from ..core.layouts import (ROW_COUNT_BITS, Window, entry_layout, pack_words,
                            requant_layout)
from ..datapath.layouts import basis_layout, dense_row_layout, row_layout
from ..integer_network import DecomposedWeights, rows_per_channel
from .errors import CompileError


__all__ = ["LaneGroup", "window_of", "lane_groups", "stream_words", "record_words",
           "dense_words", "header_words"]


@dataclass
class LaneGroup:
    """Everything one lane group needs, before addresses are assigned."""

    channels: range
    entries: list                  # 32-bit index words of one pass
    blocks: int                    # live blocks
    live_rows: int                 # rows issued per pass
    streams: list                  # per lane: the stream words of one pass
    bases: list                    # per lane: the basis words of all live blocks
    skipped_rows: int = 0          # rows skipped per pass
    params: list = field(default_factory=list)  # 32-bit parameter words of the channels


def window_of(spec):
    if spec.kind == "linear":
        return Window.LINEAR
    return Window.CONV3 if spec.kernel_size == 3 else Window.CONV1


def header_words(word_bits):
    """Words of the length header in front of a lane's stream of ``word_bits``-bit words."""
    return -(-16 // word_bits)


def record_words(present, negative, exponent, *, datapath):
    """One decoded row record (:func:`~sd_hw.datapath.layouts.row_layout`) per issued row.

    The weight words of a block for a core with ``coefficients =
    "unpacked"``: ``last`` is set on the block's last row; absent
    coefficients are zero.
    """
    layout = row_layout(datapath)
    words = []
    for k, (mask, signs, exponents) in enumerate(zip(present, negative, exponent)):
        record = {
            "present": sum(1 << j for j in range(3) if mask[j]),
            "coefficients": [{"exponent": int(exponents[j]) if mask[j] else 0,
                              "negative": int(bool(signs[j]) and bool(mask[j]))}
                             for j in range(3)],
            "last": int(k == len(present) - 1),
        }
        words.append(layout.const(record).as_value().value)
    return words


def stream_words(present, negative, exponent, *, code_bits, stream_bits):
    """The words of one block's coefficient stream (one channel), word-aligned.

    ``present``, ``negative``, ``exponent`` have shape ``(n, 3)`` for the
    block's ``n`` issued rows. Returns a list of ``stream_bits``-bit ints.
    """
    n = len(present)
    block = DecomposedWeights(present=present[None], negative=negative[None],
                              exponent=exponent[None].astype(np.uint8),
                              basis=np.zeros((1, 1, 3, 3), np.int8), block_rows=n)
    bits = np.unpackbits(np.frombuffer(coefficient_stream.encode(block, code_bits), np.uint8),
                         bitorder="little")
    bits = np.concatenate([bits, np.zeros(-len(bits) % stream_bits, np.uint8)])
    # Drop whole words of byte padding that the word alignment does not need.
    content = n + 3 * int(present.any(axis=1).sum()) + int(present.sum()) * (code_bits + 1)
    words = bits.reshape(-1, stream_bits)[:-(-content // stream_bits)]
    weights = 1 << np.arange(stream_bits, dtype=object)
    return [int(np.dot(word.astype(object), weights)) for word in words]


def dense_words(rows):
    """One int8 weight row (:func:`~sd_hw.datapath.layouts.dense_row_layout`) per issued
    row of a block, for a core with ``weights = "dense"``; ``last`` on the block's last row."""
    layout = dense_row_layout()
    return [layout.const({"row": [int(v) for v in row], "last": int(k == len(rows) - 1)})
            .as_value().value for k, row in enumerate(rows)]


def _basis_words(basis, datapath):
    raw = basis_layout(datapath).const([[int(v) for v in row] for row in basis]).as_value().value
    count = -(-9 * datapath.basis_bits // BASIS_WORD_BITS)
    return [(raw >> (BASIS_WORD_BITS * k)) & ((1 << BASIS_WORD_BITS) - 1) for k in range(count)]


def _row_entry(window, row, spec, height, width):
    pixels = height * width
    if window == Window.CONV3:
        channel, tap = divmod(row, 3)
        return {"offset": channel * pixels + tap * width, "tap": tap, "columns": 0b111}
    columns = sum(1 << j for j in range(3) if 3 * row + j < spec.in_size)
    offset = 3 * row * (pixels if window == Window.CONV1 else 1)
    return {"offset": offset, "tap": 1, "columns": columns}


def lane_groups(spec, layer, input_shape, datapath, *, code_bits, coefficients="packed",
                weight_kind="smartdeal"):
    """The :class:`LaneGroup` list of compute layer ``spec`` (its ``IntegerLayer`` ``layer``).

    ``coefficients`` and ``weight_kind`` are the core's weight-memory format
    (:attr:`~sd_hw.core.config.CoreConfig.coefficients` and ``.weights``):
    the lanes' words are :func:`stream_words` (``"packed"``),
    :func:`record_words` (``"unpacked"``) or, on a dense core,
    :func:`dense_words`, in blocks of ``datapath.block_rows`` rows.
    """
    if weight_kind == "dense":
        if layer.decomposed:
            raise CompileError(
                f"layer {spec.name!r} is decomposed; a dense core (weights = 'dense') runs "
                f"dense int8 layers only (compress with --dense {spec.name})")
        dense_rows = layer.weights.rows()
        nonzero = dense_rows.any(axis=2)
        block_rows = datapath.block_rows
    elif not layer.decomposed:
        raise CompileError(
            f"layer {spec.name!r} is dense int8; a SmartDeal core runs decomposed layers "
            f"only (compress it without --dense, or use a core with weights = 'dense')")
    else:
        nonzero = layer.weights.row_nonzero()
        block_rows = layer.weights.block_rows
    weights = layer.weights
    lanes = datapath.lanes
    window = window_of(spec)
    height, width = (input_shape[1], input_shape[2]) if window != Window.LINEAR else (1, 1)
    rows = rows_per_channel(spec)
    if weight_kind != "dense" and coefficients == "packed" and block_rows > datapath.block_rows:
        raise CompileError(f"layer {spec.name!r} has blocks of {block_rows} rows; the "
                           f"core's decoder takes at most block_rows = {datapath.block_rows}")
    if block_rows >= 2 ** ROW_COUNT_BITS:
        raise CompileError(f"layer {spec.name!r}: blocks of {block_rows} rows exceed "
                           f"the {2 ** ROW_COUNT_BITS - 1} rows a block header counts")
    block_of_row = np.arange(rows) // block_rows
    groups = []
    for first in range(0, spec.out_size, lanes):
        channels = range(first, min(first + lanes, spec.out_size))
        live = nonzero[channels.start:channels.stop].any(axis=0)
        if not live.any():
            live[0] = True  # a group needs one issued row to produce its (bias-only) outputs
        group = LaneGroup(channels=channels, entries=[], blocks=0, live_rows=int(live.sum()),
                          streams=[[] for _ in range(lanes)], bases=[[] for _ in range(lanes)],
                          skipped_rows=int(rows - live.sum()))
        headers = []  # (index in entries, skipped rows) of each live block
        pending_skip = 0
        for b in range(-(-rows // block_rows)):
            in_block = np.flatnonzero(block_of_row == b)
            issued = in_block[live[in_block]]
            skipped = len(in_block) - len(issued)
            if len(issued) == 0:
                if headers:
                    headers[-1][1] += skipped
                else:
                    pending_skip += skipped
                continue
            headers.append([len(group.entries), skipped + pending_skip, len(issued)])
            pending_skip = 0
            group.entries.append(None)  # the header, filled in below
            for k, row in enumerate(issued):
                entry = _row_entry(window, int(row), spec, height, width)
                entry["last"] = int(k == len(issued) - 1)
                group.entries.append(pack_words(entry_layout(),
                                                {"is_block": 0, "body": {"row": entry}})[0])
            for lane in range(lanes):
                channel = first + lane
                if weight_kind == "dense":
                    block = (dense_rows[channel, issued] if channel < spec.out_size
                             else np.zeros((len(issued), 3), np.int8))
                    group.streams[lane] += dense_words(block)
                    continue
                if channel < spec.out_size:
                    factors = (weights.present[channel, issued], weights.negative[channel, issued],
                               weights.exponent[channel, issued])
                    basis = weights.basis[channel, b]
                else:
                    factors = (np.zeros((len(issued), 3), bool),) * 2 + (
                        np.zeros((len(issued), 3), np.uint8),)
                    basis = np.zeros((3, 3), np.int8)
                if coefficients == "unpacked":
                    group.streams[lane] += record_words(*factors, datapath=datapath)
                else:
                    group.streams[lane] += stream_words(*factors, code_bits=code_bits,
                                                        stream_bits=datapath.stream_bits)
                group.bases[lane] += _basis_words(basis, datapath)
            group.blocks += 1
        for number, (position, skipped, count) in enumerate(headers):
            if skipped >= 2 ** ROW_COUNT_BITS:
                raise CompileError(
                    f"layer {spec.name!r}: {skipped} rows skipped in one block exceed the "
                    f"{2 ** ROW_COUNT_BITS - 1} a block header counts; use smaller blocks")
            group.entries[position] = pack_words(entry_layout(), {"is_block": 1, "body": {
                "block": {"live": count, "skipped": skipped,
                          "flush": int(number == len(headers) - 1)}}})[0]
        for channel in channels:
            bias = int(layer.bias[channel]) & 0xFFFFFFFF
            requant = pack_words(requant_layout(), {"multiplier": int(layer.multiplier[channel]),
                                                    "shift": int(layer.shift[channel])})[0]
            group.params += [bias, requant]
        groups.append(group)
    return groups
