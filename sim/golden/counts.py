"""What an SDCore run should count, derived from the network and its input alone.

:func:`expected_counters` gives, for one input, the value every performance
counter of :mod:`sd_hw.core.host_map` must reach, and :func:`cycle_estimate`
an analytic estimate of the cycles. Both follow the accelerator's documented
schedule (docs/core.md): per compute layer, output channels in lane groups of
``lanes``; per group and output pixel, every Ce row that is nonzero in at
least one channel of the group, block by block; rows zero in the whole group
skipped; with ``row_lookahead=2``, rows whose activations are all zero
(but a block's last) are not sent to the lanes. They are computed here from
the integer network and the golden model's activations, with NumPy only,
independently of the compiler and the RTL.
"""

from dataclasses import dataclass
from math import prod

import numpy as np

from sd_hw.errors import SdHwError
from sd_hw.integer_network import rows_per_channel
from sd_hw.network import hardware_problems
from sim.golden.reference import run


__all__ = ["CoreShape", "expected_counters", "cycle_estimate", "layer_plan"]


@dataclass(frozen=True)
class CoreShape:
    """The facts about a core that the counts depend on.

    ``op_words`` and ``group_words``: 32-bit words of a program operation
    and of a group header; ``basis_words``: basis-memory words per basis;
    ``header_words``: words of the length header of a lane's stream.
    ``coefficients``: ``"packed"`` (the lanes read the packed coefficient
    stream in ``stream_bits``-bit words and decode it) or ``"unpacked"``
    (one decoded row record per issued row: an element mask of 3 bits,
    three codes of ``code_bits + 1`` bits and a ``last`` bit).
    ``weights``: ``"smartdeal"`` or ``"dense"`` (a dense core: one int8
    weight row and a ``last`` bit per issued row, no bases, the rows in
    blocks of ``block_rows``).
    ``row_lookahead``: 1, or 2 for a core whose front end reads two index
    entries and two activation rows per cycle and forwards to the lanes
    only the rows with a nonzero activation, and every block's last row;
    the lanes read the weight records of the forwarded rows only (and no
    length header).
    """

    lanes: int
    stream_bits: int
    code_bits: int
    basis_words: int
    op_words: int
    group_words: int
    coefficients: str = "packed"
    weights: str = "smartdeal"
    block_rows: int = 192
    row_lookahead: int = 1

    @property
    def dense(self):
        return self.weights == "dense"

    @property
    def weight_word_bits(self):
        if self.dense:
            return 3 * 8 + 1
        if self.coefficients == "unpacked":
            return 3 + 3 * (self.code_bits + 1) + 1
        return self.stream_bits

    @property
    def header_words(self):
        return -(-16 // self.weight_word_bits)


def layer_plan(network):
    """The operations the core runs: ``[(kind, layer index), ...]``.

    ``kind`` is ``"compute"``, ``"pool"`` or ``"copy"``; a ReLU joins the
    operation before it and a flatten costs nothing; a ReLU on the network
    input is a copy.
    """
    problems = hardware_problems(network)
    if problems:
        raise SdHwError("; ".join(problems))
    plan = []
    for index, spec in enumerate(network.layers):
        if spec.is_compute:
            plan.append(("compute", index))
        elif spec.kind == "maxpool2d":
            plan.append(("pool", index))
        elif spec.kind == "relu" and not plan:
            plan.append(("copy", index))
    return plan


def _live_rows(nonzero):
    """Rows issued for one group: nonzero in some channel of it (at least row 0)."""
    live = nonzero.any(axis=0)
    if not live.any():
        live = live.copy()
        live[0] = True
    return live


def _activation_rows(spec, x):
    """``(P, R, 3)`` activation rows of one input and which elements exist."""
    if spec.kind == "conv2d" and spec.kernel_size == 3:
        c, h, w = x.shape
        padded = np.zeros((c, h + 2, w + 2), np.int64)
        padded[:, 1:-1, 1:-1] = x
        exists = np.zeros((c, h + 2, w + 2), bool)
        exists[:, 1:-1, 1:-1] = True
        rows = np.empty((h * w, 3 * c, 3), np.int64)
        valid = np.empty((h * w, 3 * c, 3), bool)
        for y in range(h):
            for col in range(w):
                window = padded[:, y:y + 3, col:col + 3]
                rows[y * w + col] = window.reshape(3 * c, 3)
                valid[y * w + col] = exists[:, y:y + 3, col:col + 3].reshape(3 * c, 3)
        return rows, valid
    channels = spec.in_size
    flat = x.reshape(channels, -1).T if spec.kind == "conv2d" else x.reshape(1, channels)
    r = -(-channels // 3)
    rows = np.zeros((flat.shape[0], 3 * r), np.int64)
    rows[:, :channels] = flat
    valid = np.zeros(3 * r, bool)
    valid[:channels] = True
    return rows.reshape(-1, r, 3), np.broadcast_to(valid.reshape(r, 3), (flat.shape[0], r, 3))


def _row_structure(weights, shape):
    """``(M, R)`` nonzero rows and the block of every row, of a layer's weights."""
    if shape.dense:
        nonzero = weights.rows().any(axis=2)
        return nonzero, np.arange(nonzero.shape[1]) // shape.block_rows
    return weights.row_nonzero(), weights.block_of_row()


def _block_last(live, block_of_row):
    """Of the issued rows (``live``, in order), which is its block's last issued row."""
    blocks = block_of_row[live]
    return np.append(blocks[1:] != blocks[:-1], True)


def _forwarded(rows_in, valid, live, block_of_row):
    """``(P, n)`` zero activation rows and rows sent to the lanes by a lookahead-2 core,
    of the issued rows of one group, per pixel."""
    masked = np.where(valid[:, live], rows_in[:, live], 0)
    zero = np.all(masked == 0, axis=2)
    return zero, ~zero | _block_last(live, block_of_row)[None, :]


def _block_words(present, rows, shape):
    """Weight words of one lane's block of ``rows`` issued rows (``present`` (n, 3) or None)."""
    if shape.dense or shape.coefficients == "unpacked":
        return rows
    bits = rows
    if present is not None:
        nonzero = present.any(axis=1)
        bits += 3 * int(nonzero.sum()) + int(present.sum()) * (shape.code_bits + 1)
    return -(-bits // shape.stream_bits)


def expected_counters(net, x, shape):
    """The counters of one run of ``net`` on the int8 input ``x`` (no batch axis)."""
    network = net.network
    outputs = run(net, x[None], layer_outputs=True)
    counts = dict.fromkeys(("rows", "zero_rows", "skipped_rows", "weight_reads",
                            "basis_reads", "index_reads", "param_reads", "activation_reads",
                            "activation_writes", "output_writes", "program_reads"), 0)
    plan = layer_plan(network)
    counts["program_reads"] = len(plan) * shape.op_words
    final = network.compute_layers[-1].name
    for kind, index in plan:
        spec = network.layers[index]
        tensor_in = x if index == 0 else outputs[index - 1][0]
        if kind == "pool":
            c, h, w = tensor_in.shape
            outputs_written = c * (h // 2) * (w // 2)
            counts["activation_reads"] += 4 * outputs_written
            counts["activation_writes"] += outputs_written
            continue
        if kind == "copy":
            counts["activation_reads"] += tensor_in.size
            counts["activation_writes"] += tensor_in.size
            continue
        weights = net.layers[spec.name].weights
        nonzero, block_of_row = _row_structure(weights, shape)
        rows_in, valid = _activation_rows(spec, np.asarray(tensor_in, np.int64))
        pixels = rows_in.shape[0]
        rows = rows_per_channel(spec)
        m = spec.out_size
        counts["param_reads"] += 2 * m
        if spec.name == final:
            counts["output_writes"] += m * pixels
        else:
            counts["activation_writes"] += m * pixels
        for first in range(0, m, shape.lanes):
            channels = range(first, min(first + shape.lanes, m))
            live = _live_rows(nonzero[channels.start:channels.stop])
            blocks = sorted(set(block_of_row[live].tolist()))
            n_live = int(live.sum())
            zero, forwarded = _forwarded(rows_in, valid, live, block_of_row)
            delivered = int(forwarded.sum()) if shape.row_lookahead == 2 else pixels * n_live
            counts["rows"] += delivered
            counts["skipped_rows"] += pixels * (rows - n_live)
            counts["index_reads"] += shape.group_words + pixels * (len(blocks) + n_live)
            if not shape.dense:
                # A group with one block reads its bases once, not once per pixel.
                passes = 1 if len(blocks) == 1 else pixels
                counts["basis_reads"] += shape.lanes * passes * len(blocks) * shape.basis_words
            if shape.row_lookahead == 2:
                # Fixed-size records, fetched one per forwarded row and lane.
                counts["weight_reads"] += shape.lanes * delivered
            else:
                for lane in range(shape.lanes):
                    channel = first + lane
                    words = 0
                    for b in blocks:
                        issued = np.flatnonzero(live & (block_of_row == b))
                        present = (weights.present[channel, issued]
                                   if channel < m and not shape.dense else None)
                        words += _block_words(present, len(issued), shape)
                    counts["weight_reads"] += shape.header_words + pixels * words
            counts["activation_reads"] += int(valid[:, live].sum())
            counts["zero_rows"] += int(zero.sum())
    return counts


def _pass_cycles(block_sizes, forwarded):
    """Cycles of a lookahead-2 core for one pass, per pixel.

    ``forwarded`` (P, n): which of the pass's ``n`` issued rows reach the
    lanes. Entries (a header, then its rows, per block) are read in aligned
    pairs, a pair per cycle (its header and rows together), and the lanes
    take a row per cycle: a pair takes a cycle per row forwarded, at least
    one.
    """
    entries = []
    row = 0
    for n in block_sizes:
        entries.append(None)                 # the block header
        entries += list(range(row, row + n))
        row += n
    cycles = np.zeros(forwarded.shape[0], np.int64)
    for k in range(0, len(entries), 2):
        rows = [entry for entry in entries[k:k + 2] if entry is not None]
        cycles += np.maximum(forwarded[:, rows].sum(axis=1), 1)
    return cycles


def cycle_estimate(net, shape, x=None):
    """An analytic estimate of the cycles of one run.

    Per lane group and pixel, the decoders' time (one cycle per issued row
    plus a cycle per block for its row bitmap and one for a record refill;
    unpacked or dense, one cycle per issued row and one per block header),
    at least ``lanes`` cycles (the output stage writes one output per
    cycle); plus a fixed start-up per group and operation. With
    ``shape.row_lookahead = 2``, index entries go in aligned pairs, a pair
    per cycle, and a pair takes a cycle per row of it sent to the lanes (at
    least one); the rows sent are every issued row without ``x`` (the int8
    input, no batch axis), else the rows with a nonzero activation and the
    blocks' last rows. It is an estimate to compare with the measured
    count, not a bound.
    """
    network = net.network
    outputs = None
    if x is not None and shape.row_lookahead == 2:
        outputs = run(net, np.asarray(x)[None], layer_outputs=True)
    cycles = 0
    for kind, index in layer_plan(network):
        spec = network.layers[index]
        shape_in = network.input_shape_of(index)
        cycles += shape.op_words + 3
        if kind == "pool":
            c, h, w = shape_in
            cycles += 2 * c * (h // 2) * (w // 2) + 3
            continue
        if kind == "copy":
            cycles += prod(shape_in) + 3
            continue
        nonzero, block_of_row = _row_structure(net.layers[spec.name].weights, shape)
        pixels = 1 if spec.kind == "linear" else shape_in[1] * shape_in[2]
        if outputs is not None:
            tensor_in = x if index == 0 else outputs[index - 1][0]
            rows_in, valid = _activation_rows(spec, np.asarray(tensor_in, np.int64))
        for first in range(0, spec.out_size, shape.lanes):
            live = _live_rows(nonzero[first:first + shape.lanes])
            sizes = [int((live & (block_of_row == b)).sum())
                     for b in sorted(set(block_of_row[live].tolist()))]
            if shape.row_lookahead == 2:
                if outputs is not None:
                    _, forwarded = _forwarded(rows_in, valid, live, block_of_row)
                else:
                    forwarded = np.ones((pixels, sum(sizes)), bool)
                cycles += int(np.maximum(_pass_cycles(sizes, forwarded), shape.lanes).sum())
            else:
                per_pass = 0
                for n in sizes:
                    if shape.dense or shape.coefficients == "unpacked":
                        per_pass += n + 1
                    else:
                        per_pass += n + -(-n // shape.stream_bits) + 1
                cycles += pixels * max(per_pass, shape.lanes)
            cycles += shape.group_words + 2 * shape.lanes + 16
    return cycles
