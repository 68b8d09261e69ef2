"""What an element-serial core does for a network, worked out from the network alone.

The counters of :class:`~sd_hw.serial.core.SerialCore` follow from its definition
(docs/serial-core.md), not from its RTL: a lane group issues one record per Ce row
that is not zero in all of its channels, once per output pixel; every record sends
the lanes one element per activation that exists (not in the zero padding, not past
a linear layer's inputs); a pass whose last record sends nothing ends with one
element of activation 0. A global average pooling is an operation of its own, a
linear one over its ``C * H * W`` inputs whose output channel ``c`` reads channel
``c``'s ``H * W`` inputs: a lane group has a record for every Ce row (three
consecutive inputs) with an input of one of its channels. :func:`cycle_estimate` adds the time the records take to
arrive and the fixed costs of operations and groups.
"""

from dataclasses import dataclass

import numpy as np

from sd_hw.errors import SdHwError


__all__ = ["SerialShape", "serial_plan", "expected_serial_counters", "serial_pass_cycles",
           "serial_cycle_estimate"]


@dataclass(frozen=True)
class SerialShape:
    """What the estimate needs of a core: lanes, and the reads a record takes."""

    lanes: int
    record_reads: int
    #: Cycles of a run's look-up of its first operation, of an operation's header
    #: fetch, and of a lane group's descriptor fetch, start and end.
    run_cycles: int = 2
    op_cycles: int = 2
    group_cycles: int = 4
    #: Cycles from a group's start to its first element, and from its last element to
    #: its last output written (sums leaving the lanes, pooling, requantisation).
    fill_cycles: int = 6
    output_cycles: int = 8
    #: Cycles the output unit takes per output it requantises (per lane and window;
    #: four per lane and window with 2x2 average pooling).
    requantise_cycles: int = 4


@dataclass
class _Op:
    compute: int
    pool: bool
    final: bool
    global_average: bool = False
    average: bool = False


def serial_plan(network):
    """The operations: ``(layer index, pooled, final, global average)``, one per compute
    layer (with its 2x2 pooling) and one per global average pooling."""
    ops = []
    for index, layer in enumerate(network.layers):
        if layer.kind == "conv2d" and layer.kernel_size != 3:
            raise SdHwError(f"layer {layer.name!r}: the element-serial core runs 3x3 "
                            f"convolutions only")
        if layer.is_compute:
            ops.append(_Op(index, False, False))
        elif layer.kind == "global_avgpool2d":
            ops.append(_Op(index, False, False, True))
        elif layer.kind in ("maxpool2d", "avgpool2d"):
            ops[-1].pool = True
            ops[-1].average = layer.kind == "avgpool2d"
    ops[-1].final = True
    return ops


def _pixels(height, width, pool):
    if not pool:
        return [(y, x) for y in range(height) for x in range(width)]
    return [(2 * py + qy, 2 * px + qx) for py in range(height // 2)
            for px in range(width // 2) for qy in range(2) for qx in range(2)]


def _columns(network, op, rows):
    """``(passes, R)`` valid-column counts of every Ce row at every pass, and passes."""
    spec = network.layers[op.compute]
    if spec.kind != "conv2d":
        inputs = spec.in_size if spec.is_compute else int(np.prod(
            network.input_shape_of(op.compute)))
        counts = np.clip(inputs - 3 * rows, 0, 3)[None, :]
        return counts
    _, height, width = network.input_shape_of(op.compute)
    _, out_height, out_width = network.output_shape_of(op.compute)
    stride, pad = spec.stride, spec.padding
    dy = rows % 3
    result = []
    for y, x in _pixels(out_height, out_width, op.pool):
        row = stride * y - pad + dy
        row_ok = (row >= 0) & (row < height)
        cols = sum(0 <= stride * x - pad + j < width for j in range(3))
        result.append(np.where(row_ok, cols, 0))
    return np.array(result, dtype=np.int64)


def _live_rows(net, op, start, lanes):
    """The Ce rows of the lane group of output channels ``start ..`` with a record."""
    network = net.network
    spec = network.layers[op.compute]
    if op.global_average:
        channels, height, width = network.input_shape_of(op.compute)
        n = height * width
        end = min(start + lanes, channels)
        return np.arange(start * n // 3, (end * n - 1) // 3 + 1)
    weights = net.layers[spec.name].weights
    return np.flatnonzero(weights.present[start:start + lanes].any(axis=(0, 2)))


def _groups(net, shape):
    """Per operation and lane group: (op, valid-column counts (passes, records))."""
    network = net.network
    for op in serial_plan(network):
        spec = network.layers[op.compute]
        channels = (network.input_shape_of(op.compute)[0] if op.global_average
                    else spec.out_size)
        for start in range(0, channels, shape.lanes):
            yield op, min(shape.lanes, channels - start), _columns(
                network, op, _live_rows(net, op, start, shape.lanes))


def expected_serial_counters(net, shape):
    """Every counter but ``cycles`` of one inference (they do not depend on the input)."""
    elements = records = passes = writes = 0
    network = net.network
    for op, _, columns in _groups(net, shape):
        n_passes, n_records = columns.shape
        if columns.size:
            sent = columns.sum(axis=1)
            tail = columns[:, -1] == 0
        else:
            sent = np.zeros(n_passes, np.int64)
            tail = np.ones(n_passes, bool)
        elements += int(sent.sum() + tail.sum())
        records += n_passes * n_records
        passes += n_passes
    for op in serial_plan(network):
        if not op.final:
            out_shape = network.output_shape_of(_last_layer(network, op))
            writes += int(np.prod(out_shape))
    return {"elements": elements, "records": records, "passes": passes, "write_cycles": writes}


def _last_layer(network, op):
    index = op.compute
    while (index + 1 < len(network.layers) and not network.layers[index + 1].is_compute
           and network.layers[index + 1].kind != "global_avgpool2d"):
        index += 1
    return index


def serial_pass_cycles(columns, shape):
    """Estimated cycles of each pass of a lane group whose records have ``columns``
    valid columns (``(passes, records)``, :func:`_groups`)."""
    if columns.size:
        per_record = np.maximum(columns, 1)
        # A record arrives every `reads` cycles, and at best every three: its
        # header goes from the banks to a stage register, then to the issuer's.
        per_record = np.maximum(per_record, max(shape.record_reads, 3))
        per_pass = per_record.sum(axis=1) + (columns[:, -1] == 0)
    else:
        per_pass = np.ones(columns.shape[0], np.int64)
    # A pass's sums leave the lanes one a cycle: the next pass ends `lanes` cycles
    # later at the earliest.
    return np.maximum(per_pass, shape.lanes)


def serial_cycle_estimate(net, shape):
    """Cycles of one inference: per record, the slower of its reads and its elements; a
    zero element where a pass ends with an empty record; at least ``lanes`` cycles a
    pass (its sums leave the lanes one a cycle); with 2x2 average pooling, a window's
    wait for the output unit to requantise the previous one's four sums per lane; fixed
    costs per run, operation and group; one cycle per activation written. The same for
    both lane arrays: the factored lanes' only stall of their own (a row's last element
    three cycles after the previous row's) is shorter than a record's arrival."""
    cycles = shape.run_cycles
    ops = set()
    for op, channels, columns in _groups(net, shape):
        if op.compute not in ops:
            ops.add(op.compute)
            cycles += shape.op_cycles
        cycles += shape.group_cycles + shape.fill_cycles + shape.output_cycles
        per_pass = serial_pass_cycles(columns, shape)
        cycles += int(per_pass.sum())
        if op.average and columns.size:
            windows = per_pass.reshape(-1, 4).sum(axis=1)
            drain = 4 * channels * shape.requantise_cycles
            cycles += int(np.maximum(0, drain - windows[1:]).sum())
    return cycles + expected_serial_counters(net, shape)["write_cycles"]
