"""From an integer network to the program and memory images of a SerialCore.

Each compute layer becomes one operation, with the ReLU and the 2x2 pooling that
follow it (max pooling is done on the accumulators, before bias and requantisation,
which is exact because both are monotone; average pooling on the requantised int8
values, with a ReLU before it applied to each value and one after it to the mean); a
global average pooling becomes an operation of its own
(:mod:`sd_hw.serial.global_average`); a flatten costs nothing, tensors being stored
in C, H, W order. Every tensor gets its own region of the activation memory,
so that every operation's result can be read after a run. Lane groups, records and
bases are :mod:`sd_hw.serial.records`' (with the factored dataflow, one basis memory
per basis engine, written once for its ``basis_group`` lanes, and no rebuilt-weight
width check: no weight is rebuilt). Whatever does not fit is refused with the memory,
the need and the limit (``bases per lane`` counts the bases of each basis memory).
"""

from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..compiler.program import OpInfo, accumulator_bounds
from ..config import signed_bits
from ..core.host_map import Space
from ..errors import SdHwError
from ..integer_network import IntegerNetwork
from .config import SerialConfig
from .global_average import average_layer
from .layouts import (DIMENSION_BITS, group_layout, op_layout, pack_program_words,
                      param_layout, record_reads)
from .records import Geometry, group_records


__all__ = ["SerialProgram", "compile_serial"]


@dataclass
class SerialProgram:
    """A program and the memory images of a :class:`~sd_hw.serial.core.SerialCore`.

    ``images`` maps ``(Space, lane)`` to ``(base, words)`` (32-bit words, written
    from address ``base`` on; for ``Space.WEIGHTS`` the lane field is the bank).
    ``ops`` are :class:`~sd_hw.compiler.program.OpInfo`, like a
    :class:`~sd_hw.compiler.program.CompiledProgram`'s.
    """

    config: SerialConfig
    ops: list
    images: dict
    input_base: int
    input_shape: tuple
    output: OpInfo
    usage: dict = field(default_factory=dict)
    reuses_regions: bool = False

    @property
    def op_count(self):
        return len(self.ops)

    @property
    def counter_names(self):
        """The performance counters the core reports, in register order."""
        from .core import SERIAL_COUNTERS
        return SERIAL_COUNTERS

    def survives(self, op):
        """Every operation's result stays in memory after a run."""
        return True


@dataclass
class _Op:
    layers: list
    compute: int          # network layer index of the compute layer (or global pooling)
    relu: bool = False    # on every output (before an average pooling)
    pool: bool = False    # 2x2 pooling ...
    average: bool = False  # ... average, not max
    relu_late: bool = False  # on the mean of an average pooling
    global_average: bool = False  # the operation is a global average pooling

    @property
    def last_layer(self):
        return self.layers[-1]


def _plan(network):
    ops = []
    for index, layer in enumerate(network.layers):
        if layer.is_compute:
            if layer.kind == "conv2d" and layer.kernel_size != 3:
                raise SdHwError(f"layer {layer.name!r}: the element-serial core runs 3x3 "
                                f"convolutions and linear layers, not a {layer.kernel_size}x"
                                f"{layer.kernel_size} convolution")
            ops.append(_Op(layers=[index], compute=index))
            continue
        if not ops:
            raise SdHwError(f"layer {layer.name!r} ({layer.kind}) comes before the first "
                            f"compute layer; the element-serial core applies it to a compute "
                            f"layer's output")
        op = ops[-1]
        if layer.kind == "global_avgpool2d":
            ops.append(_Op(layers=[index], compute=index, global_average=True))
            continue
        if layer.kind == "relu":
            if op.average:
                op.relu_late = True
            else:
                op.relu = True
        elif layer.kind in ("maxpool2d", "avgpool2d"):
            if network.layers[op.compute].kind != "conv2d" or op.pool:
                raise SdHwError(f"layer {layer.name!r}: the element-serial core pools the "
                                f"output of a convolution, once")
            op.pool = True
            op.average = layer.kind == "avgpool2d"
        op.layers.append(index)
    final = max(k for k, op in enumerate(ops) if not op.global_average)
    if final != len(ops) - 1 or ops[final].pool:
        raise SdHwError("the final compute layer's output is int32 logits; the "
                        "element-serial core does not pool it")
    return ops


def _check(problems, what, need, limit, hint=""):
    if need > limit:
        problems.append(f"{what} needs {need}, the core has {limit}{hint}")


def compile_serial(net, config):
    """Compile ``net`` (an :class:`~sd_hw.integer_network.IntegerNetwork`) for ``config``."""
    if not isinstance(net, IntegerNetwork):
        raise SdHwError(f"compile_serial takes an IntegerNetwork, got {net!r}")
    if not isinstance(config, SerialConfig):
        raise SdHwError(f"compile_serial takes a SerialConfig, got {config!r}")
    datapath = config.datapath
    lanes = config.lanes
    network = net.network
    problems = []
    if net.code_bits > datapath.code_bits:
        problems.append(f"its coefficient codes have {net.code_bits} exponent bits; the core "
                        f"decodes code_bits = {datapath.code_bits}")
    if net.block_rows > datapath.block_rows:
        problems.append(f"its blocks have up to {net.block_rows} rows; the core's "
                        f"block_rows is {datapath.block_rows}")
    for name, layer in net.layers.items():
        if not layer.decomposed:
            problems.append(f"layer {name!r} is dense int8; the element-serial core runs "
                            f"decomposed layers only")
            continue
        bound = accumulator_bounds(layer)
        channel = int(np.argmax(bound))
        need = signed_bits(bound[channel])
        if need > datapath.accumulator_bits:
            problems.append(f"layer {name!r}, channel {channel}: its accumulator needs {need} "
                            f"bits; the core has accumulator_bits = {datapath.accumulator_bits}")
    if problems:
        raise SdHwError("the network does not match the core: " + "; ".join(problems))

    plan = _plan(network)
    bank_count = config.weight_banks
    reads = record_reads(lanes, bank_count)
    headers = []          # per operation: its header and its groups' descriptors
    banks = [[] for _ in range(bank_count)]
    bases = [[] for _ in range(config.basis_memories)]
    params = []
    infos = []
    input_shape = tuple(network.input_shape)
    input_size = prod(input_shape)
    next_byte = input_size
    in_base = 0
    output_words = 0
    for k, op in enumerate(plan):
        spec = network.layers[op.compute]
        in_shape = tuple(network.input_shape_of(op.compute))
        out_shape = tuple(network.output_shape_of(op.last_layer))
        final = k == len(plan) - 1
        conv = spec.kind == "conv2d"
        if op.global_average:
            channels, n = in_shape[0], in_shape[1] * in_shape[2]
            try:
                layer = average_layer(spec.name, channels, n)
            except SdHwError as error:
                raise SdHwError(f"the network does not match the core: {error}") from None
            need = signed_bits(int(accumulator_bounds(layer).max()))
            if need > datapath.accumulator_bits:
                problems.append(f"layer {spec.name!r}: its sums need {need} bits; the core "
                                f"has accumulator_bits = {datapath.accumulator_bits}")
            inputs = channels * n
        else:
            layer = net.layers[spec.name]
            channels, inputs = spec.out_size, spec.in_size
        height = width = out_height = out_width = row_jump = 0
        stride = 1
        if conv:
            channels_in, height, width = in_shape
            for what, size in (("height", height), ("width", width)):
                _check(problems, f"layer {spec.name!r}: its input {what}", size,
                       (1 << DIMENSION_BITS) - 1)
            geometry = Geometry(conv=True, channels=channels_in, height=height, width=width)
            _, out_height, out_width = network.output_shape_of(op.compute)
            stride = spec.stride
            plane = (out_height // 2) * (out_width // 2) if op.pool else out_height * out_width
            # The walk's step from a row's (or a row of windows') last pixel to the next
            # row's first: the issuer's pixel address moves by `stride` per column.
            row_jump = stride * (width - out_width + 1 + int(op.pool) * (out_width % 2))
        else:
            geometry = Geometry(conv=False, inputs=inputs)
            plane = 1
        if final:
            out_base, memory = 0, Space.OUTPUTS
            output_words = channels * plane
        else:
            out_base, memory = next_byte, Space.ACTIVATIONS
            next_byte += prod(out_shape)
        groups = -(-channels // lanes)
        param_base = len(params)
        header = pack_program_words(op_layout(config), {
            "conv": int(conv), "pool": int(op.pool), "relu": int(op.relu),
            "final": int(final), "height": height, "width": width, "in_base": in_base,
            "plane": plane, "stride2": int(stride == 2), "pad": int(conv and spec.padding == 1),
            "out_height": out_height, "out_width": out_width, "row_jump": row_jump,
            "average": int(op.average), "relu_late": int(op.relu_late)})
        for g in range(groups):
            try:
                records = group_records(layer.weights, geometry, config=datapath, group=g,
                                        layer=spec.name, basis_group=config.shared_lanes)
            except SdHwError as error:
                raise SdHwError(f"the network does not match the core: {error}") from None
            record_base = len(banks[0])
            for words in records.records:
                padded = words + [0] * (reads * bank_count - len(words))
                for i, word in enumerate(padded):
                    banks[i % bank_count].append(word)
            basis_base = len(bases[0]) // 4
            for index, words in enumerate(records.bases):
                bases[index].extend(words)
            header += pack_program_words(group_layout(config), {
                "last": int(g == groups - 1), "has_records": int(bool(records.records)),
                "record_base": record_base,
                "last_record": record_base + max(0, len(records.records) - 1) * reads,
                "basis_base": basis_base, "out_base": out_base + g * lanes * plane,
                "param_base": param_base + g * lanes,
                "channels": min(lanes, channels - g * lanes)})
        headers.append(header)
        for channel in range(channels):
            params.append({"bias": int(layer.bias[channel]),
                           "multiplier": 0 if final else int(layer.multiplier[channel]),
                           "shift": 0 if final else int(layer.shift[channel])})
        infos.append(OpInfo(index=k, name=spec.name, kind=spec.kind,
                            layers=tuple(network.layers[i].name for i in op.layers),
                            last_layer=op.last_layer, memory=memory, base=out_base,
                            shape=out_shape, groups=groups))
        in_base = out_base

    # The operation table (each operation's header address), then the headers.
    program = []
    address = len(headers)
    for words in headers:
        program.append(address)
        address += len(words)
    program += [word for words in headers for word in words]
    usage = {
        "weight bank words": len(banks[0]),
        "bases per lane": len(bases[0]) // 4,
        "channel parameters": len(params),
        "program words": len(program),
        "activation bytes": next_byte,
        "output words": output_words,
    }
    limits = {
        "weight bank words": (config.bank_depth, "bank_depth"),
        "bases per lane": (config.basis_depth, "basis_depth"),
        "channel parameters": (config.param_depth, "param_depth"),
        "program words": (config.program_depth, "program_depth"),
        "activation bytes": (config.activation_bytes, "activation_bytes"),
        "output words": (config.output_depth, "output_depth"),
    }
    for what, need in usage.items():
        limit, parameter = limits[what]
        _check(problems, what, need, limit, f" ({parameter})")
    if problems:
        raise SdHwError("the network does not fit the core: " + "; ".join(problems))

    images = {
        (Space.PROGRAM, 0): (0, program),
        (Space.PARAMS, 0): (0, [word for p in params for word in _pack(param_layout(), p)]),
    }
    for b, words in enumerate(banks):
        images[(Space.WEIGHTS, b)] = (0, words)
    for index, words in enumerate(bases):
        images[(Space.BASES, index)] = (0, words)
    return SerialProgram(config=config, ops=infos, images=images, input_base=0,
                         input_shape=input_shape, output=infos[-1], usage=usage)


def _pack(layout, value):
    """``value`` (a dict for ``layout.const``) as 32-bit words, LSB first."""
    raw = layout.const(value).as_value().value
    size = layout.size
    return [(raw >> (32 * i)) & 0xFFFFFFFF for i in range(-(-size // 32))]
