"""Network descriptions: which layers, in which order, with which shapes.

A network is a sequence of layers applied to one input tensor. sd-hw accepts
exactly the layers its accelerator executes:

====================  ===================================================
``linear``            fully connected, ``in_features`` -> ``out_features``
``conv2d``            ``kernel_size`` 3 (``padding`` 1 or 0) or 1
                      (``padding`` 0), ``stride`` 1 or 2,
                      ``in_channels`` -> ``out_channels``
``relu``              max(x, 0)
``maxpool2d``         2x2 window, stride 2 (odd sizes are floored)
``avgpool2d``         2x2 window, stride 2 (odd sizes are floored)
``global_avgpool2d``  mean over H and W: (C, H, W) -> (C, 1, 1)
``flatten``           (C, H, W) -> (C*H*W,) in C, H, W order
====================  ===================================================

The accelerator's cores run a subset: convolutions with stride 1 and
"same" padding (1 for 3x3), and max pooling
(:func:`hardware_problems` names what falls outside it).

The description is plain JSON (see :meth:`Network.from_json`); parameters of
layer ``name`` are the arrays ``name.weight`` and ``name.bias``, with PyTorch's
shapes: ``(out, in)`` for ``linear`` and ``(out, in, k, k)`` for ``conv2d``.
"""

import json
from dataclasses import dataclass, field

from .errors import NetworkSpecError, shown


__all__ = ["Layer", "Network", "COMPUTE_KINDS", "hardware_problems"]

LAYER_KINDS = ("linear", "conv2d", "relu", "maxpool2d", "avgpool2d", "global_avgpool2d",
               "flatten")
COMPUTE_KINDS = ("linear", "conv2d")
#: Layer kinds the float and integer golden models evaluate but no core runs yet.
SOFTWARE_ONLY_KINDS = ("avgpool2d", "global_avgpool2d")
CONV_STRIDES = (1, 2)


@dataclass(frozen=True)
class Layer:
    """One layer. ``in_size``/``out_size`` are features or channels;
    ``stride`` and ``padding`` apply to ``conv2d`` (``padding`` defaults to
    ``kernel_size // 2``, "same" at stride 1)."""

    kind: str
    name: str
    in_size: int = 0
    out_size: int = 0
    kernel_size: int = 0
    stride: int = 1
    padding: int = None

    def __post_init__(self):
        if self.padding is None:
            object.__setattr__(self, "padding",
                               self.kernel_size // 2 if self.kind == "conv2d" else 0)

    @property
    def is_compute(self):
        return self.kind in COMPUTE_KINDS

    @property
    def weight_shape(self):
        """PyTorch shape of the weight, or ``None`` for layers without weights."""
        if self.kind == "linear":
            return (self.out_size, self.in_size)
        if self.kind == "conv2d":
            return (self.out_size, self.in_size, self.kernel_size, self.kernel_size)
        return None

    def to_dict(self):
        if self.kind == "linear":
            return {"type": "linear", "name": self.name,
                    "in_features": self.in_size, "out_features": self.out_size}
        if self.kind == "conv2d":
            return {"type": "conv2d", "name": self.name, "in_channels": self.in_size,
                    "out_channels": self.out_size, "kernel_size": self.kernel_size,
                    "stride": self.stride, "padding": self.padding}
        if self.kind in ("maxpool2d", "avgpool2d"):
            return {"type": self.kind, "name": self.name, "kernel_size": 2}
        return {"type": self.kind, "name": self.name}


def _positive_int(where, entry, key):
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise NetworkSpecError(
            f"{where}: field {key!r} must be an integer from 1 to 65535, got {shown(value)}")
    return value


# Longest layer name: names appear in messages, reports and generated file names.
_MAX_NAME = 128


def _is_int(value, allowed):
    """``value`` is a JSON integer (not a boolean or a float) among ``allowed``."""
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


def _parse_layer(index, entry, source):
    where = f"{source}: layer {index}"
    if not isinstance(entry, dict):
        raise NetworkSpecError(f"{where}: expected an object, got {type(entry).__name__}")
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in LAYER_KINDS:
        raise NetworkSpecError(
            f"{where}: unsupported layer type {shown(kind)}; "
            f"supported types are {', '.join(LAYER_KINDS)}")
    name = entry.get("name", f"{kind}{index}")
    if (not isinstance(name, str) or not name or "." in name or len(name) > _MAX_NAME
            or not name.isprintable()):
        raise NetworkSpecError(f"{where}: field 'name' must be a string of 1 to {_MAX_NAME} "
                               f"printable characters without '.', got {shown(name)}")
    where = f"{source}: layer {index} ({name!r})"
    known = {"type", "name"}
    if kind == "linear":
        known |= {"in_features", "out_features"}
        layer = Layer(kind, name, _positive_int(where, entry, "in_features"),
                      _positive_int(where, entry, "out_features"))
    elif kind == "conv2d":
        known |= {"in_channels", "out_channels", "kernel_size", "stride", "padding"}
        k = entry.get("kernel_size")
        if not _is_int(k, (1, 3)):
            raise NetworkSpecError(
                f"{where}: unsupported kernel_size {shown(k)}; sd-hw supports 3 and 1")
        stride = entry.get("stride", 1)
        if not _is_int(stride, CONV_STRIDES):
            raise NetworkSpecError(f"{where}: unsupported stride {shown(stride)}; "
                                   f"supported strides are 1 and 2")
        padding = entry.get("padding", k // 2)
        allowed = (0, 1) if k == 3 else (0,)
        if not _is_int(padding, allowed):
            raise NetworkSpecError(
                f"{where}: unsupported padding {shown(padding)} for kernel_size {k}; "
                f"supported: {' or '.join(map(str, allowed))}")
        layer = Layer(kind, name, _positive_int(where, entry, "in_channels"),
                      _positive_int(where, entry, "out_channels"), k, stride, padding)
    elif kind in ("maxpool2d", "avgpool2d"):
        known |= {"kernel_size", "stride"}
        k = entry.get("kernel_size", 2)
        if not _is_int(k, (2,)) or not _is_int(entry.get("stride", 2), (2,)):
            what = "max" if kind == "maxpool2d" else "average"
            raise NetworkSpecError(f"{where}: only 2x2 {what} pooling with stride 2 is supported")
        layer = Layer(kind, name)
    else:
        layer = Layer(kind, name)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise NetworkSpecError(f"{where}: unknown field(s) {', '.join(map(shown, unknown))}")
    return layer


@dataclass(frozen=True)
class Network:
    """An input shape and a validated sequence of layers.

    ``input_shape`` is ``(features,)`` or ``(channels, height, width)``.
    Construction checks that every layer accepts the shape the previous one
    produces and that layer names are unique.
    """

    input_shape: tuple
    layers: tuple
    shapes: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self, source="network"):
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "shapes", tuple(self._infer_shapes(source)))

    def _infer_shapes(self, source):
        shape = self.input_shape
        if (len(shape) not in (1, 3) or
                any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 65535
                    for d in shape)):
            raise NetworkSpecError(
                f"{source}: input_shape must be [features] or [channels, height, width] "
                f"with sizes from 1 to 65535, got {shown(list(shape))}")
        if not self.layers:
            raise NetworkSpecError(f"{source}: the network has no layers")
        names = set()
        shapes = [shape]
        for index, layer in enumerate(self.layers):
            where = f"{source}: layer {index} ({layer.name!r})"
            if layer.name in names:
                raise NetworkSpecError(f"{where}: duplicate layer name")
            names.add(layer.name)
            if layer.kind == "linear":
                if len(shape) != 1:
                    raise NetworkSpecError(
                        f"{where}: linear needs a flat input, got shape {shape}; "
                        f"add a flatten layer before it")
                if shape[0] != layer.in_size:
                    raise NetworkSpecError(
                        f"{where}: in_features is {layer.in_size} but the input has "
                        f"{shape[0]} features")
                shape = (layer.out_size,)
            elif layer.kind == "conv2d":
                if len(shape) != 3:
                    raise NetworkSpecError(f"{where}: conv2d needs a (C, H, W) input, got {shape}")
                if shape[0] != layer.in_size:
                    raise NetworkSpecError(
                        f"{where}: in_channels is {layer.in_size} but the input has "
                        f"{shape[0]} channels")
                k, p, s = layer.kernel_size, layer.padding, layer.stride
                if shape[1] + 2 * p < k or shape[2] + 2 * p < k:
                    raise NetworkSpecError(
                        f"{where}: a {k}x{k} window with padding {p} does not fit the "
                        f"input's {shape[1]}x{shape[2]} pixels")
                shape = (layer.out_size, (shape[1] + 2 * p - k) // s + 1,
                         (shape[2] + 2 * p - k) // s + 1)
            elif layer.kind in ("maxpool2d", "avgpool2d"):
                if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
                    raise NetworkSpecError(
                        f"{where}: {layer.kind} needs a (C, H, W) input with H, W >= 2, "
                        f"got {shape}")
                shape = (shape[0], shape[1] // 2, shape[2] // 2)
            elif layer.kind == "global_avgpool2d":
                if len(shape) != 3:
                    raise NetworkSpecError(
                        f"{where}: global_avgpool2d needs a (C, H, W) input, got {shape}")
                shape = (shape[0], 1, 1)
            elif layer.kind == "flatten":
                size = 1
                for d in shape:
                    size *= d
                shape = (size,)
            shapes.append(shape)
        return shapes

    @property
    def output_shape(self):
        return self.shapes[-1]

    @property
    def compute_layers(self):
        return [layer for layer in self.layers if layer.is_compute]

    def input_shape_of(self, index):
        return self.shapes[index]

    def output_shape_of(self, index):
        return self.shapes[index + 1]

    @classmethod
    def from_dict(cls, description, *, source="network"):
        if not isinstance(description, dict):
            raise NetworkSpecError(f"{source}: expected a JSON object with "
                                   f"'input_shape' and 'layers'")
        unknown = sorted(set(description) - {"input_shape", "layers", "format"})
        if unknown:
            raise NetworkSpecError(f"{source}: unknown field(s) {', '.join(map(shown, unknown))}")
        shape = description.get("input_shape")
        layers = description.get("layers")
        if not isinstance(shape, list):
            raise NetworkSpecError(f"{source}: field 'input_shape' must be a list, "
                                   f"got {shown(shape)}")
        if not isinstance(layers, list):
            raise NetworkSpecError(f"{source}: field 'layers' must be a list")
        parsed = tuple(_parse_layer(i, entry, source) for i, entry in enumerate(layers))
        network = cls.__new__(cls)
        object.__setattr__(network, "input_shape", tuple(shape))
        object.__setattr__(network, "layers", parsed)
        network.__post_init__(source)
        return network

    @classmethod
    def from_json(cls, text, *, source="network"):
        try:
            description = json.loads(text)
        except RecursionError:
            raise NetworkSpecError(f"{source}: not valid JSON (nested too deeply)") from None
        except ValueError as error:  # JSONDecodeError, or an integer of over 4300 digits
            raise NetworkSpecError(f"{source}: not valid JSON ({str(error)[:100]})") from None
        return cls.from_dict(description, source=source)

    def to_dict(self):
        return {"input_shape": list(self.input_shape),
                "layers": [layer.to_dict() for layer in self.layers]}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)


def hardware_problems(network):
    """One line per layer of ``network`` that the accelerator's cores do not
    run (strided or unpadded convolutions, average pooling), each naming the
    layer; empty if every layer runs. The golden models evaluate them all."""
    problems = []
    for layer in network.layers:
        if layer.kind in SOFTWARE_ONLY_KINDS:
            problems.append(f"layer {layer.name!r} ({layer.kind}): average pooling is not "
                            f"implemented in hardware")
        elif layer.kind == "conv2d" and (layer.stride != 1
                                         or layer.padding != layer.kernel_size // 2):
            problems.append(f"layer {layer.name!r} (conv2d {layer.kernel_size}x"
                            f"{layer.kernel_size}, stride {layer.stride}, padding "
                            f"{layer.padding}): the cores run stride 1 with padding "
                            f"{layer.kernel_size // 2} only")
    return problems
