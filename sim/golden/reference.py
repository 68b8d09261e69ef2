"""Exact integer reference of a SmartDeal network (the golden model).

Two dataflows compute the very same integers:

``rebuild``
    rebuild every weight from its factors (``w = sum ±(B << k)``), then
    multiply-accumulate with the activations, as a dense int8 accelerator
    would with the rebuilt weights;
``factored``
    multiply activation rows by the basis first (``z = B . x``), then
    shift-accumulate ``z`` with the coefficients (``acc += ±(z << k)``).
    With shared bases, ``z`` is computed once per group of output channels
    from the group's basis and used by every channel of the group.

They share nothing but the layer list and the requantisation, so their
agreement checks the row layout of the decomposition as well as the
arithmetic. Everything runs on int64 NumPy arrays; the accumulator bound
checked at integerisation guarantees no intermediate leaves int64 range,
and :func:`run` checks that each accumulator fits the network's
``accumulator_bits``. Average pooling (2x2 and global) keeps the
activation scale: its int8 output is the mean of the int8 inputs, rounded
half up.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sd_hw.errors import SdHwError
from sd_hw.integer_network import ACTIVATION_MAX, ACTIVATION_MIN, DecomposedWeights


__all__ = ["rebuild_weight_rows", "rebuild_weight", "requantise", "run", "checked_inputs",
           "DATAFLOWS"]

DATAFLOWS = ("rebuild", "factored")


def rebuild_weight_rows(weights):
    """Integer weight rows ``(M, R, 3)`` rebuilt by shift-and-add from the factors."""
    basis = weights.basis.astype(np.int64)[:, weights.block_of_row()]  # (M, R, 3, 3)
    shifted = np.left_shift(basis, weights.exponent.astype(np.int64)[..., None])
    signed = np.where(weights.negative[..., None], -shifted, shifted)
    return np.where(weights.present[..., None], signed, 0).sum(axis=2)


def rebuild_weight(weights, shape):
    """Integer weights of a layer in PyTorch's ``shape``.

    Dense weights are returned as they are; decomposed ones are rebuilt and
    their Ce rows put back in place (see the decomposition's row layout).
    """
    if not isinstance(weights, DecomposedWeights):
        return weights.weight.astype(np.int64).reshape(shape)
    rows = rebuild_weight_rows(weights)
    m = shape[0]
    if len(shape) == 4 and shape[2] == 3:
        return rows.reshape(m, shape[1], 3, 3)
    flat = rows.reshape(m, -1)[:, :shape[1]]
    return flat.reshape(shape)


def requantise(acc, multiplier, shift):
    """int8 output of accumulators ``acc`` (channel axis 1), rounding half up."""
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    mult = multiplier.astype(np.int64).reshape(shape)
    shift = shift.astype(np.int64).reshape(shape)
    rounded = (acc * mult + np.left_shift(1, shift - 1)) >> shift
    return np.clip(rounded, ACTIVATION_MIN, ACTIVATION_MAX).astype(np.int8)


def _conv_patches(x, k, stride=1, pad=None):
    """``(N, C, Ho, Wo, k, k)`` windows of ``x`` zero-padded by ``pad`` (default
    ``k // 2``), every ``stride``-th one."""
    pad = k // 2 if pad is None else pad
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def _spec_patches(spec, x):
    return _conv_patches(x, spec.kernel_size, spec.stride, spec.padding)


def _accumulate_rebuilt(layer, spec, x):
    w = rebuild_weight(layer.weights, spec.weight_shape)
    if spec.kind == "linear":
        return x @ w.T
    return np.einsum("nchwij,mcij->nmhw", _spec_patches(spec, x), w, optimize=True)


def _activation_rows(spec, x):
    """Activations as Ce-row operands: ``(N, P, R, 3)``, P output positions."""
    n = x.shape[0]
    if spec.kind == "conv2d" and spec.kernel_size == 3:
        patches = _spec_patches(spec, x)  # (N, C, Ho, Wo, kr, kc): row c*3+kr, column kc
        h, w = patches.shape[2:4]
        return patches.transpose(0, 2, 3, 1, 4, 5).reshape(n, h * w, 3 * spec.in_size, 3)
    if spec.kind == "conv2d":
        x = x[:, :, ::spec.stride, ::spec.stride]
        flat = x.transpose(0, 2, 3, 1).reshape(n, -1, spec.in_size)
    else:
        flat = x.reshape(n, 1, spec.in_size)
    rows = -(-spec.in_size // 3)
    padded = np.pad(flat, ((0, 0), (0, 0), (0, rows * 3 - spec.in_size)))
    return padded.reshape(n, flat.shape[1], rows, 3)


def _accumulate_factored(layer, spec, x):
    weights = layer.weights
    if not isinstance(weights, DecomposedWeights):
        return _accumulate_rebuilt(layer, spec, x)
    rows = _activation_rows(spec, x)
    basis = weights.group_basis().astype(np.int64)[:, weights.block_of_row()]  # (G, R, j, c)
    # z[n, p, g, r, j] = B[g, b(r), j, :] . x[n, p, r, :], once per basis group g
    z = np.einsum("nprc,grjc->npgrj", rows, basis, optimize=True)
    z = z[:, :, weights.group_of_channel()]  # (N, P, M, R, j)
    shifted = np.left_shift(z, weights.exponent.astype(np.int64))
    signed = np.where(weights.negative, -shifted, shifted)
    acc = np.where(weights.present, signed, 0).sum(axis=(3, 4))  # (N, P, M)
    if spec.kind == "linear":
        return acc[:, 0, :]
    k, p, s = spec.kernel_size, spec.padding, spec.stride
    h, w = ((size + 2 * p - k) // s + 1 for size in x.shape[2:])
    return acc.transpose(0, 2, 1).reshape(x.shape[0], spec.out_size, h, w)


_ACCUMULATE = {"rebuild": _accumulate_rebuilt, "factored": _accumulate_factored}


def _compute(net, spec, x, dataflow):
    layer = net.layers[spec.name]
    acc = _ACCUMULATE[dataflow](layer, spec, x.astype(np.int64))
    acc = acc + layer.bias.astype(np.int64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    limit = 2 ** (net.accumulator_bits - 1)
    if acc.size and (acc.max() >= limit or acc.min() < -limit):
        raise SdHwError(f"layer {spec.name!r}: accumulator leaves the "
                        f"{net.accumulator_bits}-bit range")
    if layer.final:
        return acc.astype(np.int32)
    return requantise(acc, layer.multiplier, layer.shift)


def _maxpool(x):
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _rounded_mean(total, count):
    """``total / count`` rounded half up, as int8 (a mean of int8 values)."""
    return ((2 * total + count) // (2 * count)).astype(np.int8)


def _avgpool(x):
    """Mean of each 2x2 window, rounded half up (int8 in, int8 out)."""
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2].astype(np.int64)
    return _rounded_mean(x.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5)), 4)


def _global_avgpool(x):
    """Mean over H and W, rounded half up: ``(N, C, H, W) -> (N, C, 1, 1)``."""
    h, w = x.shape[2:]
    return _rounded_mean(x.astype(np.int64).sum(axis=(2, 3), keepdims=True), h * w)


def checked_inputs(net, x):
    """``x`` as an array, if it is a batch of int8 inputs of ``net``; else raise."""
    x = np.asarray(x)
    expected = tuple(net.network.input_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise SdHwError(f"inputs have shape {x.shape}; the network expects "
                        f"(N, {', '.join(map(str, expected))})")
    if x.dtype != np.int8:
        raise SdHwError(f"inputs must be int8 (quantise them first), got {x.dtype}")
    return x


def run(net, x, *, dataflow="rebuild", layer_outputs=False, batch=64):
    """Run ``net`` on int8 inputs ``x`` of shape ``(N,) + input_shape``.

    Returns the final output (int32 logits from the last compute layer, or
    whatever the last layer produces), or with ``layer_outputs=True`` the
    list of every layer's output in network order.
    """
    if dataflow not in DATAFLOWS:
        raise SdHwError(f"dataflow must be one of {', '.join(DATAFLOWS)}, got {dataflow!r}")
    x = checked_inputs(net, x)
    chunks = [_run_chunk(net, x[i:i + batch], dataflow)
              for i in range(0, max(len(x), 1), batch)]
    outputs = [np.concatenate(parts) for parts in zip(*chunks)]
    return outputs if layer_outputs else outputs[-1]


def _run_chunk(net, x, dataflow):
    outputs = []
    for spec in net.network.layers:
        if spec.is_compute:
            x = _compute(net, spec, x, dataflow)
        elif spec.kind == "relu":
            x = np.maximum(x, 0).astype(x.dtype)
        elif spec.kind == "maxpool2d":
            x = _maxpool(x)
        elif spec.kind == "avgpool2d":
            x = _avgpool(x)
        elif spec.kind == "global_avgpool2d":
            x = _global_avgpool(x)
        elif spec.kind == "flatten":
            x = x.reshape(len(x), -1)
        outputs.append(x)
    return outputs


def predict(net, x, *, dataflow="rebuild"):
    """Class index per input: the first maximum of the logits."""
    return np.argmax(run(net, x, dataflow=dataflow), axis=1)
