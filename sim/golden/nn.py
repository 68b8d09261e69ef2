"""Float forward and backward passes of sd-hw networks, in plain NumPy.

Batches are ``(N,) + input_shape``; parameters are a flat dict
``{"<layer>.weight": ..., "<layer>.bias": ...}`` in PyTorch's shapes (see
:mod:`sd_hw.network`). Computation runs in float64 unless every input is
float32 (then float32).

Layer semantics (as PyTorch):

* ``linear``: ``y = x W^T + b``;
* ``conv2d``: cross-correlation with the layer's stride (1 or 2) and zero
  padding (0 or 1 for 3x3, 0 for 1x1), computed as one matrix product over
  an im2col view (no loop over pixels);
* ``relu``: ``max(x, 0)``, gradient 0 at 0;
* ``maxpool2d``: 2x2 windows, stride 2, odd sizes floored; the gradient goes
  to the first maximum of a window in row-major order;
* ``avgpool2d``: mean of 2x2 windows, stride 2, odd sizes floored;
* ``global_avgpool2d``: mean over H and W, (C, H, W) -> (C, 1, 1);
* ``flatten``: (C, H, W) -> C*H*W in C, H, W order.

Each layer has a ``<kind>_forward`` and a ``<kind>_backward`` function; the
backward functions take what the forward consumed plus the gradient of the
output and return the gradient of the input (and of weight and bias).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sd_hw.errors import SdHwError


__all__ = [
    "init_params", "forward", "layer_inputs", "loss_and_grads", "accuracy", "predict",
    "cross_entropy", "check_params", "check_batch",
    "linear_forward", "linear_backward", "conv2d_forward", "conv2d_backward",
    "relu_forward", "relu_backward", "maxpool2d_forward", "maxpool2d_backward",
    "avgpool2d_forward", "avgpool2d_backward", "global_avgpool2d_forward",
    "global_avgpool2d_backward", "flatten_forward", "flatten_backward",
]


# ---------------------------------------------------------------------------
# Matrix products

# OpenBLAS runs a product on several threads once m*n*k passes about 2**18.
# For these small layers that gains nothing, and on a busy machine (several
# processes on two cores) the threads wait on each other: training was seen
# to run 20 times slower. Products are therefore cut into pieces below this.
_SINGLE_THREAD_MACS = 1 << 16


def _matmul(a, b):
    """``a @ b`` for 2-D arrays, computed in pieces of at most
    ``_SINGLE_THREAD_MACS`` multiply-adds (split along the longer of the
    rows of ``a`` and the inner dimension)."""
    m, k = a.shape
    n = b.shape[1]
    if m * k * n <= _SINGLE_THREAD_MACS:
        return a @ b
    if m >= k:
        step = max(1, _SINGLE_THREAD_MACS // (k * n))
        return np.concatenate([a[i:i + step] @ b for i in range(0, m, step)])
    step = max(1, _SINGLE_THREAD_MACS // (m * n))
    out = a[:, :step] @ b[:step]
    for i in range(step, k, step):
        out += a[:, i:i + step] @ b[i:i + step]
    return out


# ---------------------------------------------------------------------------
# Layers

def linear_forward(x, weight, bias):
    """``(N, C) -> (N, M)``."""
    return _matmul(x, weight.T) + bias


def linear_backward(x, weight, dy):
    """Gradients ``(dx, dweight, dbias)`` of a linear layer."""
    return _matmul(dy, weight), _matmul(dy.T, x), dy.sum(axis=0)


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def _im2col(x, k, stride=1, padding=None):
    """``(N, C, H, W)`` -> ``(N*Ho*Wo, C*k*k)`` patches of a convolution with
    ``stride`` and zero ``padding`` (default ``k // 2``), column order
    (c, kernel row, kernel col) as ``weight.reshape(M, -1)``."""
    p = k // 2 if padding is None else padding
    n, c, h, w = x.shape
    ho, wo = _out_size(h, k, stride, p), _out_size(w, k, stride, p)
    if k == 1 and p == 0:
        return x[:, :, ::stride, ::stride].transpose(0, 2, 3, 1).reshape(n * ho * wo, c)
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))  # (N, C, H', W', k, k)
    windows = windows[:, :, :(ho - 1) * stride + 1:stride, :(wo - 1) * stride + 1:stride]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)


def _col2im(cols, shape, k, stride=1, padding=None):
    """Adjoint of :func:`_im2col`: sum patch gradients back onto the input."""
    p = k // 2 if padding is None else padding
    n, c, h, w = shape
    ho, wo = _out_size(h, k, stride, p), _out_size(w, k, stride, p)
    patches = cols.reshape(n, ho, wo, c, k, k)
    padded = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=cols.dtype)
    for i in range(k):          # k*k shifted adds, not a loop over pixels
        for j in range(k):
            padded[:, :, i:i + (ho - 1) * stride + 1:stride,
                   j:j + (wo - 1) * stride + 1:stride] += \
                patches[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return padded[:, :, p:p + h, p:p + w]


def _check_kernel(weight):
    k = weight.shape[-1]
    if weight.ndim != 4 or weight.shape[-2] != k or k not in (1, 3):
        raise SdHwError(f"conv2d weight must be (M, C, 3, 3) or (M, C, 1, 1), "
                        f"got {weight.shape}")
    return k


def conv2d_forward(x, weight, bias, *, stride=1, padding=None):
    """``(N, C, H, W) -> (N, M, Ho, Wo)``; 3x3 or 1x1, ``padding`` defaults
    to ``k // 2`` (the same size at stride 1)."""
    k = _check_kernel(weight)
    p = k // 2 if padding is None else padding
    n, _, h, w = x.shape
    m = weight.shape[0]
    ho, wo = _out_size(h, k, stride, p), _out_size(w, k, stride, p)
    y = _matmul(_im2col(x, k, stride, p), weight.reshape(m, -1).T) + bias
    return y.reshape(n, ho, wo, m).transpose(0, 3, 1, 2)


def conv2d_backward(x, weight, dy, *, stride=1, padding=None):
    """Gradients ``(dx, dweight, dbias)`` of a conv2d layer."""
    k = _check_kernel(weight)
    m = weight.shape[0]
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, m)
    dweight = _matmul(dy_mat.T, _im2col(x, k, stride, padding)).reshape(weight.shape)
    dx = _col2im(_matmul(dy_mat, weight.reshape(m, -1)), x.shape, k, stride, padding)
    return dx, dweight, dy_mat.sum(axis=0)


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(x, dy):
    return np.where(x > 0, dy, 0).astype(dy.dtype, copy=False)


def _pool_windows(x):
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    cropped = x[:, :, :2 * h2, :2 * w2]
    return cropped.reshape(n, c, h2, 2, w2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h2, w2, 4)


def maxpool2d_forward(x):
    """``(N, C, H, W) -> (N, C, H // 2, W // 2)``."""
    return _pool_windows(x).max(axis=-1)


def maxpool2d_backward(x, dy):
    """Gradient of the input: each window's first maximum gets ``dy``."""
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    first = _pool_windows(x).argmax(axis=-1)                      # (N, C, H2, W2)
    onehot = (first[..., None] == np.arange(4)) * dy[..., None]   # (N, C, H2, W2, 4)
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dx[:, :, :2 * h2, :2 * w2] = onehot.reshape(n, c, h2, w2, 2, 2).transpose(
        0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h2, 2 * w2)
    return dx


def avgpool2d_forward(x):
    """``(N, C, H, W) -> (N, C, H // 2, W // 2)``: the mean of each 2x2 window."""
    return _pool_windows(x).mean(axis=-1)


def avgpool2d_backward(x, dy):
    """Gradient of the input: a quarter of ``dy`` to each pixel of its window
    (zero for a floored odd row or column)."""
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dx[:, :, :2 * h2, :2 * w2] = np.repeat(np.repeat(dy / 4, 2, axis=2), 2, axis=3)
    return dx


def global_avgpool2d_forward(x):
    """``(N, C, H, W) -> (N, C, 1, 1)``: the mean over H and W."""
    return x.mean(axis=(2, 3), keepdims=True)


def global_avgpool2d_backward(x, dy):
    h, w = x.shape[2:]
    return np.broadcast_to(dy / (h * w), x.shape).astype(dy.dtype, copy=True)


def flatten_forward(x):
    return x.reshape(len(x), -1)


def flatten_backward(x, dy):
    return dy.reshape(x.shape)


# ---------------------------------------------------------------------------
# Networks

def check_params(network, params):
    """Raise :class:`SdHwError` unless ``params`` has every weight and bias
    of ``network`` with the right shape."""
    for layer in network.compute_layers:
        for key, shape in ((f"{layer.name}.weight", layer.weight_shape),
                           (f"{layer.name}.bias", (layer.out_size,))):
            if key not in params:
                raise SdHwError(f"parameters: missing {key!r} (shape {shape})")
            if np.shape(params[key]) != shape:
                raise SdHwError(f"parameters: {key!r} has shape {np.shape(params[key])}, "
                                f"the network needs {shape}")


def check_batch(network, x):
    """``x`` as a float array of shape ``(N,) + network.input_shape``, or raise."""
    x = np.asarray(x)
    if x.ndim != len(network.input_shape) + 1 or x.shape[1:] != tuple(network.input_shape):
        raise SdHwError(f"inputs: expected shape (N, {', '.join(map(str, network.input_shape))})"
                        f", got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x


def _dtype(x, params):
    if x.dtype == np.float32 and all(np.asarray(v).dtype == np.float32
                                     for v in params.values()):
        return np.float32
    return np.float64


def init_params(network, seed=0, *, dtype=np.float64):
    """He-normal weights (std ``sqrt(2 / fan_in)``) and zero biases."""
    rng = np.random.default_rng(seed)
    params = {}
    for layer in network.compute_layers:
        shape = layer.weight_shape
        fan_in = int(np.prod(shape[1:]))
        params[f"{layer.name}.weight"] = (rng.standard_normal(shape)
                                          * np.sqrt(2.0 / fan_in)).astype(dtype)
        params[f"{layer.name}.bias"] = np.zeros(layer.out_size, dtype=dtype)
    return params


def _run(network, params, x, *, keep):
    """Forward pass; returns the output and, if ``keep``, each layer's input."""
    inputs = []
    for layer in network.layers:
        if keep:
            inputs.append(x)
        if layer.kind == "linear":
            x = linear_forward(x, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"])
        elif layer.kind == "conv2d":
            x = conv2d_forward(x, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"],
                               stride=layer.stride, padding=layer.padding)
        elif layer.kind == "relu":
            x = relu_forward(x)
        elif layer.kind == "maxpool2d":
            x = maxpool2d_forward(x)
        elif layer.kind == "avgpool2d":
            x = avgpool2d_forward(x)
        elif layer.kind == "global_avgpool2d":
            x = global_avgpool2d_forward(x)
        elif layer.kind == "flatten":
            x = flatten_forward(x)
        else:
            raise SdHwError(f"layer {layer.name!r}: unsupported kind {layer.kind!r}")
    return x, inputs


def _prepare(network, params, x):
    check_params(network, params)
    x = check_batch(network, x)
    dtype = _dtype(x, params)
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}, x.astype(dtype, copy=False)


def forward(network, params, x):
    """Logits (the last layer's output) for the batch ``x``."""
    params, x = _prepare(network, params, x)
    return _run(network, params, x, keep=False)[0]


def layer_inputs(network, params, x):
    """``{layer name: input tensor}`` of every linear/conv2d layer on ``x``."""
    params, x = _prepare(network, params, x)
    _, inputs = _run(network, params, x, keep=True)
    return {layer.name: value for layer, value in zip(network.layers, inputs)
            if layer.is_compute}


def predict(network, params, x, *, batch_size=1024):
    """Predicted class of every input."""
    x = check_batch(network, x)
    chunks = [np.argmax(forward(network, params, x[i:i + batch_size]), axis=1)
              for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def accuracy(network, params, x, y):
    """Fraction of inputs whose predicted class is ``y``."""
    y = np.asarray(y)
    if len(y) != len(x):
        raise SdHwError(f"{len(y)} labels for {len(x)} inputs")
    if len(y) == 0:
        raise SdHwError("accuracy of an empty set")
    return float(np.mean(predict(network, params, x) == y))


def cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    n = len(y)
    rows = np.arange(n)
    loss = -log_p[rows, y].mean()
    dlogits = np.exp(log_p)
    dlogits[rows, y] -= 1
    return float(loss), dlogits / n


def loss_and_grads(network, params, x, y, *, loss=cross_entropy):
    """Mean loss on ``(x, y)`` and its gradient for every parameter (same
    keys and shapes as ``params``).

    ``loss(logits, y)`` returns the mean loss of the batch and its gradient
    w.r.t. the logits; the default is :func:`cross_entropy`.
    """
    params, x = _prepare(network, params, x)
    y = np.asarray(y, dtype=np.int64)
    if y.shape != (len(x),):
        raise SdHwError(f"labels: expected shape ({len(x)},), got {y.shape}")
    n_out = network.output_shape
    if len(n_out) != 1 or (len(y) and (y.min() < 0 or y.max() >= n_out[0])):
        raise SdHwError(f"labels must be class indices 0..{n_out[0] - 1} of a flat output")
    logits, inputs = _run(network, params, x, keep=True)
    value, grad = loss(logits, y)
    grads = {}
    for layer, x_in in zip(reversed(network.layers), reversed(inputs)):
        if layer.kind in ("linear", "conv2d"):
            weight = params[f"{layer.name}.weight"]
            if layer.kind == "linear":
                grad, dweight, dbias = linear_backward(x_in, weight, grad)
            else:
                grad, dweight, dbias = conv2d_backward(x_in, weight, grad, stride=layer.stride,
                                                       padding=layer.padding)
            grads[f"{layer.name}.weight"] = dweight
            grads[f"{layer.name}.bias"] = dbias
        elif layer.kind == "relu":
            grad = relu_backward(x_in, grad)
        elif layer.kind == "maxpool2d":
            grad = maxpool2d_backward(x_in, grad)
        elif layer.kind == "avgpool2d":
            grad = avgpool2d_backward(x_in, grad)
        elif layer.kind == "global_avgpool2d":
            grad = global_avgpool2d_backward(x_in, grad)
        elif layer.kind == "flatten":
            grad = flatten_backward(x_in, grad)
    return value, grads
