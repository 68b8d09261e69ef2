"""Assembling a network's operations into the program and memory images of a core."""

from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..config import signed_bits
from ..core.config import CoreConfig
from ..core.host_map import COUNTERS, Space
from ..core.layouts import GROUP_WORDS, OpKind, Window, group_layout, op_layout, pack_words
from ..errors import ParameterError
from ..integer_network import ACTIVATION_MIN, IntegerNetwork
from .errors import CompileError
from .groups import header_words, lane_groups, window_of
from .plan import place_tensors, plan_ops


__all__ = ["OpInfo", "CompiledProgram", "compile_network", "accumulator_bounds"]


@dataclass(frozen=True)
class OpInfo:
    """Where one operation's result can be read after a run.

    ``memory`` is ``Space.ACTIVATIONS`` (int8) or ``Space.OUTPUTS`` (int32);
    the tensor of ``shape`` (C, H, W order) starts at ``base``. ``last_layer``
    is the index of the network layer whose output it is.
    """

    index: int
    name: str
    kind: str
    layers: tuple
    last_layer: int
    memory: Space
    base: int
    shape: tuple
    groups: int = 0


@dataclass
class CompiledProgram:
    """A program and the memory images of an :class:`~sd_hw.core.core.SDCore`.

    ``images`` maps ``(Space, lane)`` to ``(base, words)``: the words to
    write from address ``base`` on (lane 0 for the shared memories).
    """

    config: CoreConfig
    ops: list
    images: dict
    input_base: int
    input_shape: tuple
    output: OpInfo
    reuses_regions: bool
    usage: dict = field(default_factory=dict)  # memory name -> words used

    @property
    def op_count(self):
        return len(self.ops)

    @property
    def counter_names(self):
        """The performance counters the core reports, in register order."""
        return COUNTERS

    def survives(self, op):
        """Whether ``op``'s result is still in memory after a full run.

        With shared regions, a tensor is overwritten by the one two
        operations later; the final operation writes the output memory.
        """
        return (op.memory == Space.OUTPUTS or not self.reuses_regions
                or op.index >= len(self.ops) - 3)


def _check_compatible(net, config):
    datapath = config.datapath
    problems = []
    if net.code_bits > datapath.code_bits:
        problems.append(f"its coefficient codes have {net.code_bits} exponent bits; the core "
                        f"decodes code_bits = {datapath.code_bits}")
    if datapath.basis_bits < 8:
        problems.append(f"its bases are int8; the core has basis_bits = {datapath.basis_bits}")
    if datapath.activation_bits < 8:
        problems.append(f"its activations are int8; the core has activation_bits = "
                        f"{datapath.activation_bits}")
    for name, layer in net.layers.items():
        bound = accumulator_bounds(layer)
        channel = int(np.argmax(bound))
        need = signed_bits(bound[channel])
        if need > datapath.accumulator_bits:
            problems.append(f"layer {name!r}, channel {channel}: its accumulator can reach "
                            f"{int(bound[channel])} in magnitude, which needs {need} bits; "
                            f"the core has accumulator_bits = {datapath.accumulator_bits}")
    if problems:
        raise CompileError("the network does not match the core: " + "; ".join(problems))


def accumulator_bounds(layer):
    """Per output channel, the largest ``|sum(w_int * x_int) + bias|`` any int8 input gives.

    The core's accumulators add modulo ``2**accumulator_bits``; a channel's
    result is exact when this bound fits, whatever the partial sums did.
    """
    weights = layer.weights
    if layer.decomposed:
        block = weights.block_of_row()
        basis = weights.basis.astype(np.int64)[:, block]              # (M, R, 3, 3)
        signs = np.where(weights.negative, -1, 1) * weights.present
        terms = (signs * (1 << weights.exponent.astype(np.int64)))[..., None] * basis
        rebuilt = terms.sum(axis=2)                                   # (M, R, 3)
    else:
        rebuilt = weights.rows().astype(np.int64)
    magnitude = np.abs(rebuilt).reshape(rebuilt.shape[0], -1).sum(axis=1)
    return -ACTIVATION_MIN * magnitude + np.abs(layer.bias.astype(np.int64))


class _Fit:
    """The memories a network overflows, collected so that a refusal names them all.

    A memory filled layer after layer is checked after every lane group: its
    need is the largest seen (the whole network's once compilation ends) and
    the layer named is the first whose groups go past the limit.
    """

    def __init__(self):
        self.problems = []
        self._over = {}

    def check(self, what, need, limit, parameter, layer=None):
        if need <= limit:
            return
        if what not in self._over:
            self._over[what] = [layer, need, limit, parameter]
        self._over[what][1] = max(self._over[what][1], need)

    def refuse_if_needed(self):
        problems = self.problems + [
            f"{f'layer {layer!r}: ' if layer else ''}{what} needs {need} words; the core has "
            f"{parameter} = {limit}" for what, (layer, need, limit, parameter) in self._over.items()]
        if problems:
            raise CompileError(
                "the network does not fit the core: " + "; ".join(problems)
                + " (a memory's need is the whole network's; the layer named is the first "
                "that does not fit in it)")


def compile_network(net, config):
    """Compile ``net`` for ``config``; raise :class:`CompileError` if it does not fit.

    A network too large for the core is refused once, naming every memory it
    overflows with its need and the core's limit.
    """
    if not isinstance(net, IntegerNetwork):
        raise ParameterError(f"compile_network takes an IntegerNetwork, got {net!r}")
    if not isinstance(config, CoreConfig):
        raise ParameterError(f"compile_network takes a CoreConfig, got {config!r}")
    _check_compatible(net, config)
    datapath = config.datapath
    lanes = datapath.lanes
    network = net.network
    planned = plan_ops(network)
    fit = _Fit()
    try:
        input_base, reuses = place_tensors(network, planned, config.activation_depth)
    except CompileError as error:
        # Every tensor at 0, only to go on measuring what else does not fit.
        fit.problems.append(str(error))
        input_base, reuses = 0, True

    program, index_words, params = [], [], []
    weights = [[] for _ in range(lanes)]
    bases = [[] for _ in range(lanes)]
    infos = []
    for number, op in enumerate(planned):
        fields = {"kind": op.kind, "relu": int(op.relu), "final": int(op.final),
                  "in_base": op.in_base, "out_base": op.out_base}
        groups = 0
        if op.kind == OpKind.COMPUTE:
            spec = op.layer
            layer = net.layers[spec.name]
            window = window_of(spec)
            if window == Window.LINEAR:
                height = width = 1
            else:
                height, width = op.input_shape[1], op.input_shape[2]
            pixels = height * width
            if pixels >= 1 << 16 or height >= 1 << 16:
                raise CompileError(f"layer {spec.name!r}: {pixels} pixels exceed 65535")
            lane_group_list = lane_groups(spec, layer, op.input_shape, datapath,
                                          code_bits=datapath.code_bits,
                                          coefficients=config.coefficients,
                                          weight_kind=config.weights)
            groups = len(lane_group_list)
            group_table = len(index_words)
            index_words += [0] * (GROUP_WORDS * groups)
            output_base = 0 if op.final else op.out_base
            for g, group in enumerate(lane_group_list):
                weight_base = len(weights[0])
                basis_base = len(bases[0])
                count = max(len(stream) for stream in group.streams)
                word_bits = config.weight_word_bits
                head = header_words(word_bits)
                if count >= 1 << 16:
                    raise CompileError(f"layer {spec.name!r}: a lane's stream of {count} words "
                                       f"per pixel exceeds 65535")
                for lane in range(lanes):
                    stream = group.streams[lane]
                    length = [(len(stream) >> (word_bits * k)) & ((1 << word_bits) - 1)
                              for k in range(head)]
                    region = length + stream
                    weights[lane] += region + [0] * (head + count - len(region))
                    bases[lane] += group.bases[lane]
                header = {
                    "weight_base": weight_base, "basis_base": basis_base,
                    "basis_words": len(group.bases[0]), "index_base": len(index_words),
                    "entries": len(group.entries),
                    "output_base": output_base + group.channels.start * pixels,
                    "param_base": len(params), "lanes": len(group.channels),
                }
                start = group_table + g * GROUP_WORDS
                index_words[start:start + GROUP_WORDS] = pack_words(group_layout(), header)
                index_words += group.entries
                params += group.params
                fit.check("the weight memory", len(weights[0]), config.weight_depth,
                            "weight_depth", spec.name)
                fit.check("the basis memory", len(bases[0]), config.basis_depth,
                            "basis_depth", spec.name)
                fit.check("the index memory", len(index_words), config.index_depth,
                            "index_depth", spec.name)
                fit.check("the parameter memory", len(params), config.param_depth,
                            "param_depth", spec.name)
            origin = (op.in_base - width - 1) % (1 << 16) if window == Window.CONV3 \
                else op.in_base
            fields.update(window=window, origin=origin, height=height, width=width,
                          pixels=pixels,
                          element_stride=pixels if window == Window.CONV1 else 1,
                          channels=spec.out_size, groups=groups, group_table=group_table)
            if op.final:
                fit.check(f"the output memory ({spec.out_size} channels x {pixels} pixels)",
                            spec.out_size * pixels, config.output_depth, "output_depth",
                            spec.name)
        elif op.kind == OpKind.POOL:
            channels, height, width = op.input_shape
            fields.update(channels=channels, height=height, width=width, pixels=height * width)
        else:
            fields.update(channels=1, pixels=prod(op.input_shape))
        program += pack_words(op_layout(), fields)
        memory = Space.OUTPUTS if op.final else Space.ACTIVATIONS
        infos.append(OpInfo(number, op.name, op.kind.name.lower(), tuple(op.layers),
                            op.last_layer, memory, 0 if op.final else op.out_base,
                            tuple(op.output_shape), groups))
    fit.check("the program", len(program), config.program_depth, "program_depth")
    fit.check("the operation count", len(planned), 0xFFFF, "the 16-bit operation count")
    fit.refuse_if_needed()
    images = {(Space.PROGRAM, 0): (0, program), (Space.INDEX, 0): (0, index_words),
              (Space.PARAMS, 0): (0, params)}
    for lane in range(lanes):
        images[(Space.WEIGHTS, lane)] = (0, weights[lane])
        images[(Space.BASES, lane)] = (0, bases[lane])
    usage = {"program": len(program), "index": len(index_words), "params": len(params),
             "weights": len(weights[0]), "bases": len(bases[0]),
             "activations": max((info.base + prod(info.shape) for info in infos
                                 if info.memory == Space.ACTIVATIONS),
                                default=input_base + prod(network.input_shape))}
    return CompiledProgram(config, infos, images, input_base, tuple(network.input_shape),
                           infos[-1] if infos[-1].memory == Space.OUTPUTS else None, reuses,
                           usage)
