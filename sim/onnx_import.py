"""ONNX models as sd-hw float models.

:func:`import_onnx` reads an ONNX file (as ``torch.onnx.export`` or a
tf2onnx-style exporter writes it) and returns a
:class:`~sim.golden.model_file.FloatModel`: the network description of
:mod:`sd_hw.network` and its float parameters. The graph must be a chain
(one activation flows from the input to the output); weights, biases and
shape tensors are initializers or ``Constant`` nodes.

=======================  ==================================================
ONNX operator            becomes
=======================  ==================================================
``Conv``                 ``conv2d``: 3x3 (pads 0 or 1) or 1x1 (pads 0),
                         strides 1 or 2, group 1, dilations 1, with or
                         without bias
``Gemm``                 ``linear``: alpha = beta = 1, transA = 0, transB
                         0 or 1
``MatMul`` (+ ``Add``)   ``linear``: a constant right operand (F, M); an
                         ``Add`` of a per-channel constant after a
                         ``Conv``/``Gemm``/``MatMul`` becomes its bias
``BatchNormalization``   folded into the ``Conv``/``Gemm``/``MatMul``
                         before it: ``w' = w * s``, ``b' = (b - mean) * s +
                         beta`` with ``s = gamma / sqrt(var + epsilon)``
``Relu``                 ``relu``
``MaxPool``              ``maxpool2d``: 2x2, strides 2, no padding
``AveragePool``          ``avgpool2d``: 2x2, strides 2, no padding
``GlobalAveragePool``    ``global_avgpool2d``
``Flatten`` (axis 1),    ``flatten`` (``Reshape`` to ``(N, features)``,
``Reshape``, ``Squeeze`` ``Squeeze`` of the two 1-sized axes of a
                         globally pooled tensor)
``Identity``,            dropped
``Dropout``
``Softmax``,             dropped when it is the last node (the accelerator
``LogSoftmax``           outputs logits; the predicted class is the same)
=======================  ==================================================

Shape arithmetic of exporters (``Shape``, ``Gather``, ``Unsqueeze``,
``Concat``, ``Cast`` on constants) is evaluated at import. Opsets
:data:`MIN_OPSET` to :data:`MAX_OPSET` of the default domain are read.
Anything else is refused with one :class:`~sd_hw.errors.SdHwError` line
naming the node, its op type and the attribute or input that is not
supported.
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sd_hw.errors import NetworkSpecError, SdHwError
from sd_hw.network import Layer, Network
from sim.golden.model_file import FloatModel, check_params


__all__ = ["import_onnx", "ImportedModel", "MIN_OPSET", "MAX_OPSET", "SUPPORTED_OPS"]

#: Opsets of the default ONNX domain the importer reads.
MIN_OPSET = 9
MAX_OPSET = 23

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Add", "BatchNormalization", "Relu", "MaxPool",
                 "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Squeeze",
                 "Identity", "Dropout", "Softmax", "LogSoftmax", "Constant", "Shape", "Gather",
                 "Unsqueeze", "Concat", "Cast")
_SHAPE_OPS = ("Constant", "Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat",
              "Shape", "Reshape")
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass(eq=False)
class ImportedModel:
    """The float model and, per sd-hw layer, the ONNX nodes it came from."""

    model: FloatModel
    origins: dict = field(default_factory=dict)   # layer name -> list of node descriptions
    notes: list = field(default_factory=list)


class _Refusal(SdHwError):
    pass


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise SdHwError("ONNX import needs the 'onnx' package (pip install onnx)") from None
    return onnx, numpy_helper


def _attributes(onnx, node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, source, graph, opset, numpy_helper, onnx):
        self.source = source
        self.graph = graph
        self.opset = opset
        self.numpy_helper = numpy_helper
        self.onnx = onnx
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.layers = []
        self.params = {}
        self.origins = {}
        self.notes = []
        self.counters = {}
        self.tail = None          # name of the activation tensor at the end of the chain
        self.tail_layer = None    # index of the layer that produced it (None: the input)
        self.shape = None         # its shape without the batch axis

    # -- messages ----------------------------------------------------------
    def where(self, index, node):
        return f"{self.source}: node {self.label(index, node)} ({node.op_type})"

    @staticmethod
    def label(index, node):
        if node.name:
            return repr(node.name)
        return f"#{index} (output {node.output[0]!r})" if node.output else f"#{index}"

    def refuse(self, index, node, text):
        raise _Refusal(f"{self.where(index, node)}: {text}")

    # -- the graph's input ---------------------------------------------------
    def read_input(self):
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise SdHwError(f"{self.source}: the graph must have exactly one input besides its "
                            f"initializers, it has {names}")
        value = inputs[0]
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type not in _FLOAT_TYPES:
            raise SdHwError(f"{self.source}: input {value.name!r} must be a float tensor")
        dims = list(tensor.shape.dim)
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if len(dims) not in (2, 4) or any(s is None or s < 1 for s in sizes):
            shown = ["N"] + ["?" if s is None else str(s) for s in sizes]
            raise SdHwError(f"{self.source}: input {value.name!r} has shape "
                            f"({', '.join(shown[:len(dims)])}); sd-hw reads (N, features) or "
                            f"(N, channels, height, width) with fixed sizes after N")
        self.tail = value.name
        self.shape = tuple(sizes)
        self.input_shape = tuple(sizes)

    # -- helpers -------------------------------------------------------------
    def constant(self, index, node, position, what):
        name = node.input[position] if position < len(node.input) else ""
        if name not in self.constants:
            self.refuse(index, node, f"{what} (input {position}, {name!r}) must be an "
                                     f"initializer or a constant")
        return np.asarray(self.constants[name])

    def optional_constant(self, index, node, position, what):
        if position >= len(node.input) or node.input[position] == "":
            return None
        return self.constant(index, node, position, what)

    def name(self, kind):
        prefix = {"conv2d": "conv", "linear": "fc", "maxpool2d": "pool", "avgpool2d": "avgpool",
                  "global_avgpool2d": "gap"}.get(kind, kind)
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{prefix}{self.counters[prefix]}"

    def describe(self, node):
        return f"{node.name or node.output[0]!r} ({node.op_type})"

    def add_layer(self, node, layer, shape, weight=None, bias=None):
        self.layers.append(layer)
        if weight is not None:
            self.params[f"{layer.name}.weight"] = np.asarray(weight, np.float64)
            self.params[f"{layer.name}.bias"] = np.asarray(bias, np.float64)
        self.origins[layer.name] = [self.describe(node)]
        self.advance(node, len(self.layers) - 1, shape)

    def advance(self, node, layer_index, shape):
        self.tail = node.output[0]
        self.tail_layer = layer_index
        self.shape = shape

    def check_unused_outputs(self, index, node, used):
        for extra in node.output[1:]:
            if extra and extra in used:
                self.refuse(index, node, f"its output {extra!r} is used; sd-hw reads only the "
                                         f"first output")

    # -- the chain -----------------------------------------------------------
    def run(self):
        self.read_input()
        nodes = list(self.graph.node)
        used = {name for node in nodes for name in node.input}
        used |= {o.name for o in self.graph.output}
        last_compute = max((i for i, n in enumerate(nodes) if n.op_type not in _SHAPE_OPS),
                           default=-1)
        for index, node in enumerate(nodes):
            if node.domain not in ("", "ai.onnx"):
                self.refuse(index, node, f"operator domain {node.domain!r} is not supported "
                                         f"(only the default ONNX domain)")
            if node.op_type not in SUPPORTED_OPS:
                self.refuse(index, node, f"op type {node.op_type} is not supported; sd-hw "
                                         f"imports {', '.join(SUPPORTED_OPS[:12])}, Identity "
                                         f"and Dropout")
            data = [name for name in node.input if name]
            if node.op_type in _SHAPE_OPS:
                if (all(name in self.constants for name in data)
                        or (node.op_type == "Shape" and data == [self.tail])):
                    self.fold(index, node)
                    continue
                if node.op_type not in ("Identity", "Reshape", "Squeeze"):
                    self.refuse(index, node, f"{node.op_type} of an activation is not supported "
                                             f"(sd-hw evaluates it on constants and shapes only)")
            if not data or data[0] != self.tail:
                self.refuse(index, node, self.branch_text(node))
            for name in data[1:]:
                if name not in self.constants:
                    self.refuse(index, node, f"input {name!r} is an activation, not a constant: "
                                             f"the graph branches or merges (e.g. a residual "
                                             f"connection); sd-hw networks are a chain")
            self.check_unused_outputs(index, node, used)
            handler = getattr(self, f"op_{node.op_type}")
            handler(index, node, _attributes(self.onnx, node), is_last=index == last_compute)
        outputs = [o.name for o in self.graph.output]
        if outputs != [self.tail]:
            raise SdHwError(f"{self.source}: the graph's output(s) {', '.join(map(repr, outputs))} "
                            f"must be the one tensor at the end of the chain, {self.tail!r}")

    def branch_text(self, node):
        return (f"its input {node.input[0] if node.input else ''!r} is not the output of the "
                f"layer before it ({self.tail!r}): the graph branches or merges; sd-hw networks "
                f"are a chain of layers")

    # -- constant folding of shape arithmetic --------------------------------
    def fold(self, index, node):
        attrs = _attributes(self.onnx, node)
        op = node.op_type
        inputs = [self.constants.get(name) for name in node.input]
        if op == "Constant":
            if "value" not in attrs:
                self.refuse(index, node, f"attribute(s) {', '.join(sorted(attrs))} are not "
                                         f"supported; only 'value'")
            value = self.numpy_helper.to_array(attrs["value"])
        elif op == "Identity":
            value = inputs[0]
        elif op == "Cast":
            value = inputs[0].astype(self.onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
        elif op == "Shape":
            full = np.array((1,) + tuple(self.shape), np.int64)
            value = full[attrs.get("start", 0):attrs.get("end", len(full))]
        elif op == "Gather":
            value = np.take(inputs[0], inputs[1], axis=attrs.get("axis", 0))
        elif op in ("Unsqueeze", "Squeeze"):
            axes = attrs.get("axes")
            if axes is None and len(inputs) > 1 and inputs[1] is not None:
                axes = inputs[1].tolist()
            data = inputs[0]
            if op == "Unsqueeze":
                for axis in sorted(a % (data.ndim + len(axes)) for a in axes):
                    data = np.expand_dims(data, axis)
            else:
                data = np.squeeze(data, axis=None if axes is None else tuple(axes))
            value = data
        elif op == "Concat":
            value = np.concatenate(inputs, axis=attrs["axis"])
        elif op == "Reshape":
            target = [d if d != 0 else inputs[0].shape[i] for i, d in enumerate(inputs[1])]
            value = inputs[0].reshape(target)
        else:  # pragma: no cover - _SHAPE_OPS lists the cases above
            self.refuse(index, node, "cannot be evaluated at import")
        self.constants[node.output[0]] = np.asarray(value)

    # -- layers --------------------------------------------------------------
    def op_Conv(self, index, node, attrs, **_):
        if len(self.shape) != 3:
            self.refuse(index, node, f"needs an (N, C, H, W) input, got (N, "
                                     f"{', '.join(map(str, self.shape))})")
        weight = self.constant(index, node, 1, "the weight")
        if weight.ndim != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] not in (1, 3):
            self.refuse(index, node, f"weight of shape {weight.shape}: only 3x3 and 1x1 kernels "
                                     f"are supported")
        k = weight.shape[2]
        group = attrs.get("group", 1)
        if group != 1:
            self.refuse(index, node, f"attribute group = {group} is not supported (only 1)")
        if list(attrs.get("kernel_shape", [k, k])) != [k, k]:
            self.refuse(index, node, f"attribute kernel_shape = {list(attrs['kernel_shape'])} "
                                     f"does not match the weight's {k}x{k}")
        dilations = list(attrs.get("dilations", [1, 1]))
        if dilations != [1, 1]:
            self.refuse(index, node, f"attribute dilations = {dilations} is not supported "
                                     f"(only [1, 1])")
        strides = list(attrs.get("strides", [1, 1]))
        if strides not in ([1, 1], [2, 2]):
            self.refuse(index, node, f"attribute strides = {strides} is not supported "
                                     f"([1, 1] or [2, 2])")
        stride = strides[0]
        padding = self.padding(index, node, attrs, k, stride)
        allowed = (0, 1) if k == 3 else (0,)
        if padding not in allowed:
            self.refuse(index, node, f"attribute pads = {[padding] * 4} is not supported for a "
                                     f"{k}x{k} kernel (pads of {' or '.join(map(str, allowed))})")
        channels = self.shape[0]
        if weight.shape[1] != channels:
            self.refuse(index, node, f"weight has {weight.shape[1]} input channels, the input "
                                     f"has {channels}")
        out = weight.shape[0]
        bias = self.optional_constant(index, node, 2, "the bias")
        bias = np.zeros(out) if bias is None else bias.reshape(-1)
        if bias.shape != (out,):
            self.refuse(index, node, f"bias of shape {bias.shape}, expected ({out},)")
        layer = Layer("conv2d", self.name("conv2d"), channels, out, k, stride, padding)
        h, w = ((size + 2 * padding - k) // stride + 1 for size in self.shape[1:])
        if h < 1 or w < 1:
            self.refuse(index, node, f"a {k}x{k} window with pads {padding} does not fit the "
                                     f"input's {self.shape[1]}x{self.shape[2]} pixels")
        self.add_layer(node, layer, (out, h, w), weight, bias)

    def padding(self, index, node, attrs, k, stride):
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER") and stride == 1:
            return k // 2
        if auto == "VALID":
            return 0
        if auto != "NOTSET":
            self.refuse(index, node, f"attribute auto_pad = {auto} is not supported with strides "
                                     f"{stride} (use explicit pads)")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(set(pads)) != 1:
            self.refuse(index, node, f"attribute pads = {pads} is not supported (the same "
                                     f"padding on every side)")
        return pads[0]

    def linear(self, index, node, weight, bias):
        if len(self.shape) != 1:
            self.refuse(index, node, f"needs an (N, features) input, got (N, "
                                     f"{', '.join(map(str, self.shape))}); flatten it first")
        if weight.shape[1] != self.shape[0]:
            self.refuse(index, node, f"weight has {weight.shape[1]} input features, the input "
                                     f"has {self.shape[0]}")
        out = weight.shape[0]
        layer = Layer("linear", self.name("linear"), self.shape[0], out)
        self.add_layer(node, layer, (out,), weight, bias)

    def op_Gemm(self, index, node, attrs, **_):
        for key, value in (("alpha", 1.0), ("beta", 1.0), ("transA", 0)):
            if attrs.get(key, value) != value:
                self.refuse(index, node, f"attribute {key} = {attrs[key]} is not supported "
                                         f"(only {value})")
        b = self.constant(index, node, 1, "operand B")
        if b.ndim != 2:
            self.refuse(index, node, f"operand B has shape {b.shape}, expected 2-D")
        weight = b if attrs.get("transB", 0) else b.T
        out = weight.shape[0]
        c = self.optional_constant(index, node, 2, "operand C")
        try:
            bias = np.zeros(out) if c is None else np.broadcast_to(c, (1, out)).reshape(out)
        except ValueError:
            self.refuse(index, node, f"operand C of shape {c.shape} is not a bias of {out} "
                                     f"outputs")
        self.linear(index, node, weight, bias)

    def op_MatMul(self, index, node, attrs, **_):
        b = self.constant(index, node, 1, "the right operand")
        if b.ndim != 2:
            self.refuse(index, node, f"right operand has shape {b.shape}, expected 2-D "
                                     f"(features, outputs)")
        self.linear(index, node, b.T, np.zeros(b.shape[1]))

    def folded_layer(self, index, node, what):
        """The compute layer whose output is the chain's tail, or refuse."""
        layer = None if self.tail_layer is None else self.layers[self.tail_layer]
        if layer is None or not layer.is_compute:
            before = "the graph's input" if layer is None else f"a {layer.kind} layer"
            self.refuse(index, node, f"{what} must directly follow a Conv, Gemm or MatMul "
                                     f"(it is folded into it); here it follows {before}")
        return layer

    def op_Add(self, index, node, attrs, **_):
        layer = self.folded_layer(index, node, "an Add of a constant (a bias)")
        const = self.constant(index, node, 1, "the added operand")
        full_shape = (1,) + tuple(self.shape)
        try:
            full = np.broadcast_to(const, full_shape)
        except ValueError:
            self.refuse(index, node, f"adds a constant of shape {const.shape} to an output of "
                                     f"shape (N, {', '.join(map(str, self.shape))})")
        if const.ndim > len(full_shape):
            self.refuse(index, node, f"adds a constant of shape {const.shape}, which changes "
                                     f"the output's rank")
        per_channel = full.reshape(self.shape[0], -1)[:, 0]
        if not np.array_equal(full.reshape(self.shape[0], -1),
                              np.broadcast_to(per_channel[:, None],
                                              (self.shape[0], full[0].size // self.shape[0]))):
            self.refuse(index, node, f"adds a constant of shape {const.shape} that is not one "
                                     f"value per output channel (a bias)")
        self.params[f"{layer.name}.bias"] = self.params[f"{layer.name}.bias"] + per_channel
        self.origins[layer.name].append(self.describe(node))
        self.advance(node, self.tail_layer, self.shape)

    def op_BatchNormalization(self, index, node, attrs, **_):
        if attrs.get("training_mode", 0):
            self.refuse(index, node, "attribute training_mode = 1 is not supported (export the "
                                     "model in inference mode)")
        if attrs.get("spatial", 1) != 1:
            self.refuse(index, node, f"attribute spatial = {attrs['spatial']} is not supported")
        layer = self.folded_layer(index, node, "BatchNormalization")
        gamma, beta, mean, var = (self.constant(index, node, i, what).astype(np.float64)
                                  .reshape(-1) for i, what in
                                  ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")))
        out = layer.out_size
        if any(a.shape != (out,) for a in (gamma, beta, mean, var)):
            self.refuse(index, node, f"its scale, B, mean and var must have {out} entries (one "
                                     f"per channel of {layer.name!r})")
        epsilon = float(attrs.get("epsilon", 1e-5))
        factor = gamma / np.sqrt(var + epsilon)
        key = f"{layer.name}.weight"
        self.params[key] = self.params[key] * factor.reshape((-1,) + (1,) * (
            self.params[key].ndim - 1))
        bias = f"{layer.name}.bias"
        self.params[bias] = (self.params[bias] - mean) * factor + beta
        self.origins[layer.name].append(self.describe(node) + " folded")
        self.advance(node, self.tail_layer, self.shape)

    def op_Relu(self, index, node, attrs, **_):
        self.add_layer(node, Layer("relu", self.name("relu")), self.shape)

    def pool(self, index, node, attrs, kind):
        if len(self.shape) != 3:
            self.refuse(index, node, "needs an (N, C, H, W) input")
        for key, expected in (("kernel_shape", [2, 2]), ("strides", [1, 1]),
                              ("dilations", [1, 1]), ("ceil_mode", 0)):
            value = attrs.get(key, expected)
            value = list(value) if isinstance(value, (list, tuple)) else value
            wanted = [2, 2] if key == "strides" else expected
            if value != wanted:
                self.refuse(index, node, f"attribute {key} = {value} is not supported (only "
                                         f"{wanted}: 2x2 windows, stride 2)")
        if self.padding(index, node, attrs, 2, 2) != 0:
            self.refuse(index, node, f"attribute pads = {list(attrs['pads'])} is not supported "
                                     f"(no padding)")
        c, h, w = self.shape
        if h < 2 or w < 2:
            self.refuse(index, node, f"a 2x2 window does not fit the input's {h}x{w} pixels")
        self.add_layer(node, Layer(kind, self.name(kind)), (c, h // 2, w // 2))

    def op_MaxPool(self, index, node, attrs, **_):
        self.pool(index, node, {k: v for k, v in attrs.items() if k != "storage_order"},
                  "maxpool2d")

    def op_AveragePool(self, index, node, attrs, **_):
        self.pool(index, node, {k: v for k, v in attrs.items() if k != "count_include_pad"},
                  "avgpool2d")

    def op_GlobalAveragePool(self, index, node, attrs, **_):
        if len(self.shape) != 3:
            self.refuse(index, node, "needs an (N, C, H, W) input")
        self.add_layer(node, Layer("global_avgpool2d", self.name("global_avgpool2d")),
                       (self.shape[0], 1, 1))

    def flatten(self, index, node):
        if len(self.shape) == 1:
            self.advance(node, self.tail_layer, self.shape)
            return
        self.add_layer(node, Layer("flatten", self.name("flatten")), (math.prod(self.shape),))

    def op_Flatten(self, index, node, attrs, **_):
        axis = attrs.get("axis", 1)
        if axis % (len(self.shape) + 1) != 1:
            self.refuse(index, node, f"attribute axis = {axis} is not supported (only 1: "
                                     f"(N, C, H, W) -> (N, C*H*W))")
        self.flatten(index, node)

    def op_Reshape(self, index, node, attrs, **_):
        target = self.constant(index, node, 1, "the shape").astype(np.int64).tolist()
        size = math.prod(self.shape)
        if attrs.get("allowzero", 0) and 0 in target:
            self.refuse(index, node, "attribute allowzero = 1 with a 0 in the shape is not "
                                     "supported")
        if len(target) != 2 or target[0] not in (-1, 0, 1) or target[1] not in (-1, size) \
                or target == [-1, -1]:
            self.refuse(index, node, f"reshapes (N, {', '.join(map(str, self.shape))}) to "
                                     f"{target}; only flattening to (N, {size}) is supported")
        self.flatten(index, node)

    def op_Squeeze(self, index, node, attrs, **_):
        axes = attrs.get("axes")
        if axes is None:
            given = self.optional_constant(index, node, 1, "the axes")
            axes = None if given is None else given.reshape(-1).tolist()
        rank = len(self.shape) + 1
        if len(self.shape) != 3 or self.shape[1:] != (1, 1) or axes is None or \
                sorted(a % rank for a in axes) != [2, 3]:
            self.refuse(index, node, f"squeezes axes {axes} of (N, "
                                     f"{', '.join(map(str, self.shape))}); only (N, C, 1, 1) -> "
                                     f"(N, C) is supported")
        self.flatten(index, node)

    def op_Identity(self, index, node, attrs, **_):
        self.advance(node, self.tail_layer, self.shape)

    def op_Dropout(self, index, node, attrs, **_):
        self.advance(node, self.tail_layer, self.shape)

    def op_Softmax(self, index, node, attrs, *, is_last):
        axis = attrs.get("axis", -1 if self.opset >= 13 else 1)
        if not is_last or len(self.shape) != 1 or axis not in (1, -1):
            self.refuse(index, node, "is supported only as the last node, over the features of "
                                     "an (N, features) output (it is dropped: the accelerator "
                                     "outputs logits)")
        self.notes.append(f"dropped the final {node.op_type} {self.describe(node)}: the "
                          f"network outputs logits (the same predicted class)")
        self.advance(node, self.tail_layer, self.shape)

    op_LogSoftmax = op_Softmax


def _opset(source, model):
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise SdHwError(f"{source}: the model imports no opset of the default ONNX domain")
    version = int(versions[0])
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise SdHwError(f"{source}: opset {version} is not supported; sd-hw reads opsets "
                        f"{MIN_OPSET} to {MAX_OPSET} of the default ONNX domain")
    return version


def import_onnx(path, *, source=None):
    """The :class:`ImportedModel` of the ONNX file ``path``.

    Raises :class:`~sd_hw.errors.SdHwError` with one line naming the file
    and, for an unsupported graph, the node, its op type and the attribute.
    """
    onnx, numpy_helper = _onnx()
    source = str(path) if source is None else source
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise SdHwError(f"{source}: no such file") from None
    except Exception as error:  # protobuf's DecodeError and friends
        raise SdHwError(f"{source}: not a readable ONNX model "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
                        ) from None
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SdHwError(f"{source}: not a valid ONNX model ({first})") from None
    opset = _opset(source, model)
    importer = _Importer(source, model.graph, opset, numpy_helper, onnx)
    importer.run()
    if not importer.layers:
        raise SdHwError(f"{source}: the graph has no layer sd-hw runs")
    try:
        network = Network(importer.input_shape, importer.layers)
    except NetworkSpecError as error:
        raise SdHwError(f"{source}: {error}") from None
    params = importer.params
    for key, value in params.items():
        if not np.all(np.isfinite(value)):
            raise SdHwError(f"{source}: the weights of layer {key.split('.')[0]!r} contain NaN "
                            f"or Inf (after folding)")
    check_params(network, params, source=source)
    return ImportedModel(FloatModel(network, params), importer.origins, importer.notes)


def is_onnx_path(path):
    """Whether ``path`` names an ONNX file (by its suffix)."""
    return re.search(r"\.onnx$", str(path), re.IGNORECASE) is not None
