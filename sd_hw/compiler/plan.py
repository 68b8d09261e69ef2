"""The operations of a network and the places of their tensors.

Each compute layer becomes a COMPUTE operation and each max pooling a POOL
operation; a ReLU joins the operation before it (ReLU commutes with the
requantisation, the pooling and the flatten), and a flatten is free
because tensors are stored in C, H, W order. A ReLU with no operation
before it (on the network input) becomes a COPY.
"""

from dataclasses import dataclass, field
from math import prod

from ..core.layouts import OpKind
from ..network import hardware_problems
from .errors import CompileError


__all__ = ["PlannedOp", "plan_ops", "place_tensors"]


@dataclass
class PlannedOp:
    """One operation before its memory images are built."""

    kind: OpKind
    layer: object            # the network Layer of a COMPUTE or POOL (None for COPY)
    input_shape: tuple
    output_shape: tuple
    layers: list = field(default_factory=list)  # names of the network layers it covers
    last_layer: int = 0      # index of the last network layer it covers
    relu: bool = False
    final: bool = False      # writes int32 outputs (the last compute layer)
    in_base: int = 0
    out_base: int = 0

    @property
    def name(self):
        return "+".join(self.layers)


def plan_ops(network):
    """The :class:`PlannedOp` list of ``network`` (a :class:`~sd_hw.network.Network`)."""
    compute = network.compute_layers
    if not compute:
        raise CompileError("the network has no linear or conv2d layer; sd-hw runs networks "
                           "whose last compute layer produces the outputs")
    problems = hardware_problems(network)
    if problems:
        raise CompileError("; ".join(problems))
    final_name = compute[-1].name
    ops = []
    after_final = False
    for index, spec in enumerate(network.layers):
        shape_in = tuple(network.input_shape_of(index))
        shape_out = tuple(network.output_shape_of(index))
        if spec.is_compute:
            ops.append(PlannedOp(OpKind.COMPUTE, spec, shape_in, shape_out, [spec.name], index,
                                 final=spec.name == final_name))
            after_final = spec.name == final_name
        elif spec.kind == "maxpool2d":
            if after_final:
                raise CompileError(
                    f"layer {spec.name!r} (maxpool2d) follows the final compute layer "
                    f"{final_name!r}, whose outputs are int32 accumulators; only relu and "
                    f"flatten may follow it")
            ops.append(PlannedOp(OpKind.POOL, spec, shape_in, shape_out, [spec.name], index))
        elif spec.kind == "relu":
            if not ops:
                ops.append(PlannedOp(OpKind.COPY, None, shape_in, shape_out, [spec.name], index))
            else:
                ops[-1].layers.append(spec.name)
            ops[-1].relu = True
            ops[-1].last_layer = index
            ops[-1].output_shape = shape_out
        elif spec.kind == "flatten":
            if ops:
                ops[-1].layers.append(spec.name)
                ops[-1].last_layer = index
                ops[-1].output_shape = shape_out
        else:  # pragma: no cover - Network accepts no other kinds
            raise CompileError(f"layer {spec.name!r}: unsupported layer type {spec.kind!r}")
    return ops


def place_tensors(network, ops, depth):
    """Place the input and every non-final operation's output in the activation memory.

    Every tensor gets its own region if they all fit in ``depth`` entries,
    so that every layer's output can be read back after a run; otherwise
    the tensors alternate between two regions as large as the largest.
    Sets ``in_base`` and ``out_base`` of every operation and returns
    ``(input_base, reuses)``: ``reuses`` is True when regions are shared.
    """
    sizes = [prod(network.input_shape)] + [prod(op.output_shape) for op in ops if not op.final]
    if sum(sizes) <= depth:
        bases, base = [], 0
        for size in sizes:
            bases.append(base)
            base += size
        reuses = False
    elif 2 * max(sizes) <= depth:
        bases = [(k % 2) * max(sizes) for k in range(len(sizes))]
        reuses = True
    else:
        largest = max(range(len(sizes)), key=sizes.__getitem__)
        what = "the network input" if largest == 0 else f"the output of {ops[largest - 1].name}"
        raise CompileError(
            f"activation memory: {what} has {sizes[largest]} elements and the two tensors "
            f"on either side of a layer must fit together, which needs "
            f"{2 * max(sizes)} entries; the core has activation_depth = {depth}")
    tensor = 0
    for op in ops:
        op.in_base = bases[tensor]
        if not op.final:
            tensor += 1
            op.out_base = bases[tensor]
    return bases[0], reuses
