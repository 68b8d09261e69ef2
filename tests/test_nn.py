"""Float layers of sim.golden.nn against hand-written loops and finite differences."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sd_hw.errors import SdHwError
from sd_hw.network import Layer, Network
from sim.golden import nn


# ---------------------------------------------------------------------------
# Independent references

def naive_conv2d(x, weight, bias):
    """Cross-correlation with zero padding k // 2, one output value at a time."""
    n, c, h, w = x.shape
    m, _, k, _ = weight.shape
    p = k // 2
    y = np.zeros((n, m, h, w))
    for b in range(n):
        for o in range(m):
            for i in range(h):
                for j in range(w):
                    acc = bias[o]
                    for ci in range(c):
                        for di in range(k):
                            for dj in range(k):
                                ii, jj = i + di - p, j + dj - p
                                if 0 <= ii < h and 0 <= jj < w:
                                    acc += weight[o, ci, di, dj] * x[b, ci, ii, jj]
                    y[b, o, i, j] = acc
    return y


def naive_maxpool(x):
    n, c, h, w = x.shape
    y = np.zeros((n, c, h // 2, w // 2))
    for b in range(n):
        for ci in range(c):
            for i in range(h // 2):
                for j in range(w // 2):
                    y[b, ci, i, j] = max(x[b, ci, 2 * i, 2 * j], x[b, ci, 2 * i, 2 * j + 1],
                                         x[b, ci, 2 * i + 1, 2 * j], x[b, ci, 2 * i + 1, 2 * j + 1])
    return y


def numeric_grad(f, a, eps=1e-6):
    """Central finite differences of the scalar ``f()`` w.r.t. every entry of ``a``
    (modified in place and restored)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return g


def assert_close(actual, expected, tol=1e-6):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# Forward semantics

@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 2, 7)])
def test_conv2d_forward_matches_naive_loops(k, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((4, shape[1], k, k))
    bias = rng.standard_normal(4)
    assert_close(nn.conv2d_forward(x, weight, bias), naive_conv2d(x, weight, bias), 1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), m=st.integers(1, 3), h=st.integers(1, 5),
       w=st.integers(1, 5), k=st.sampled_from([1, 3]), seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_forward_property(n, c, m, h, w, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((m, c, k, k))
    bias = rng.standard_normal(m)
    assert_close(nn.conv2d_forward(x, weight, bias), naive_conv2d(x, weight, bias), 1e-12)


def test_conv2d_hand_example():
    # a single 3x3 image, kernel with one 1 at the top-left tap: y[i, j] = x[i-1, j-1]
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    weight = np.zeros((1, 1, 3, 3))
    weight[0, 0, 0, 0] = 1.0
    expected = np.array([[0, 0, 0], [0, 0, 1], [0, 3, 4]], dtype=float)
    assert_close(nn.conv2d_forward(x, weight, np.zeros(1))[0, 0], expected, 0)


def test_linear_forward_hand_example():
    x = np.array([[1.0, 2.0]])
    weight = np.array([[1.0, 0.0], [3.0, -1.0], [0.5, 0.5]])
    bias = np.array([0.0, 1.0, -1.0])
    assert_close(nn.linear_forward(x, weight, bias), [[1.0, 2.0, 0.5]], 0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 5, 7), (1, 1, 2, 3)])
def test_maxpool_matches_naive_and_floors(shape):
    x = np.random.default_rng(2).standard_normal(shape)
    y = nn.maxpool2d_forward(x)
    assert y.shape == shape[:2] + (shape[2] // 2, shape[3] // 2)
    assert_close(y, naive_maxpool(x), 0)


def test_maxpool_hand_example():
    x = np.array([[1, 2, 9], [3, 4, 9], [9, 9, 9]], dtype=float).reshape(1, 1, 3, 3)
    assert nn.maxpool2d_forward(x).tolist() == [[[[4.0]]]]  # last row/column dropped


def test_maxpool_backward_tie_goes_to_first_maximum():
    x = np.array([[5, 5], [5, 1]], dtype=float).reshape(1, 1, 2, 2)
    dx = nn.maxpool2d_backward(x, np.array([[[[2.0]]]]))
    assert dx[0, 0].tolist() == [[2.0, 0.0], [0.0, 0.0]]


def test_maxpool_backward_cropped_border_gets_zero():
    x = np.random.default_rng(3).standard_normal((1, 1, 3, 5))
    dx = nn.maxpool2d_backward(x, np.ones((1, 1, 1, 2)))
    assert np.all(dx[:, :, 2, :] == 0) and np.all(dx[:, :, :, 4] == 0)
    assert dx.sum() == 2


def test_flatten_is_channel_row_column_order():
    n, c, h, w = 2, 3, 2, 4
    x = np.random.default_rng(4).standard_normal((n, c, h, w))
    y = nn.flatten_forward(x)
    for b in range(n):
        for ci in range(c):
            for i in range(h):
                for j in range(w):
                    assert y[b, ci * h * w + i * w + j] == x[b, ci, i, j]
    assert np.array_equal(nn.flatten_backward(x, y), x)


def test_relu_forward_and_backward_at_zero():
    x = np.array([[-1.0, 0.0, 2.0]])
    assert nn.relu_forward(x).tolist() == [[0.0, 0.0, 2.0]]
    assert nn.relu_backward(x, np.array([[5.0, 5.0, 5.0]])).tolist() == [[0.0, 0.0, 5.0]]


def test_cross_entropy_against_formula():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 3)) * 3
    y = np.array([0, 2, 1, 2])
    expected = np.mean([-logits[i, y[i]] + math.log(sum(math.exp(v) for v in logits[i]))
                        for i in range(4)])
    loss, grad = nn.cross_entropy(logits, y)
    assert loss == pytest.approx(expected, rel=1e-12)
    num = numeric_grad(lambda: nn.cross_entropy(logits, y)[0], logits)
    assert_close(grad, num)


def test_cross_entropy_is_stable_for_large_logits():
    loss, grad = nn.cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0) and np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------
# Gradients against central finite differences (float64)

def check_layer_grads(forward, backward, x, *params):
    """Gradients of sum(forward(x, *params) * r) from ``backward(x, *params, r)``."""
    r = np.random.default_rng(6).standard_normal(forward(x, *params).shape)
    analytic = backward(x, *params[:1], r) if params else backward(x, r)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)

    def f():
        return float(np.sum(forward(x, *params) * r))

    for got, wrt in zip(analytic, (x,) + params):
        assert got.shape == wrt.shape
        assert_close(got, numeric_grad(f, wrt))


def test_linear_backward():
    rng = np.random.default_rng(7)
    check_layer_grads(nn.linear_forward, nn.linear_backward, rng.standard_normal((3, 5)),
                      rng.standard_normal((4, 5)), rng.standard_normal(4))


@pytest.mark.parametrize("k", [1, 3])
def test_conv2d_backward(k):
    rng = np.random.default_rng(8)
    check_layer_grads(nn.conv2d_forward, nn.conv2d_backward, rng.standard_normal((2, 3, 4, 5)),
                      rng.standard_normal((2, 3, k, k)), rng.standard_normal(2))


def test_relu_backward():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 7))
    x[np.abs(x) < 1e-2] = 0.5  # away from the kink
    check_layer_grads(nn.relu_forward, nn.relu_backward, x)


def test_maxpool_backward():
    rng = np.random.default_rng(10)
    x = rng.permutation(2 * 2 * 5 * 7).reshape(2, 2, 5, 7) * 0.01  # distinct values, no ties
    check_layer_grads(nn.maxpool2d_forward, nn.maxpool2d_backward, x)


def test_flatten_backward():
    check_layer_grads(nn.flatten_forward, nn.flatten_backward,
                      np.random.default_rng(11).standard_normal((2, 3, 2, 2)))


SMALL_CNN = Network(input_shape=(2, 5, 6), layers=(
    Layer("conv2d", "c1", 2, 3, 3), Layer("relu", "r1"), Layer("maxpool2d", "p1"),
    Layer("conv2d", "c2", 3, 4, 1), Layer("relu", "r2"), Layer("flatten", "f"),
    Layer("linear", "fc", 4 * 2 * 3, 3)))
SMALL_MLP = Network(input_shape=(6,), layers=(
    Layer("linear", "a", 6, 5), Layer("relu", "r"), Layer("linear", "b", 5, 4)))


@pytest.mark.parametrize("network", [SMALL_CNN, SMALL_MLP], ids=["cnn", "mlp"])
def test_network_loss_gradient(network):
    rng = np.random.default_rng(12)
    params = nn.init_params(network, seed=3)
    for key in params:  # nonzero biases exercise the bias paths
        if key.endswith(".bias"):
            params[key] = rng.standard_normal(params[key].shape) * 0.1
    x = rng.standard_normal((4,) + network.input_shape)
    y = rng.integers(0, network.output_shape[0], 4)
    loss, grads = nn.loss_and_grads(network, params, x, y)
    assert set(grads) == set(params)
    assert loss == pytest.approx(nn.cross_entropy(nn.forward(network, params, x), y)[0])
    for key, value in params.items():
        num = numeric_grad(lambda: nn.loss_and_grads(network, params, x, y)[0], value)
        assert_close(grads[key], num, 1e-6)


# ---------------------------------------------------------------------------
# Network helpers

def test_init_params_he_and_deterministic():
    network = Network(input_shape=(400,), layers=(Layer("linear", "big", 400, 300),))
    a = nn.init_params(network, seed=5)
    b = nn.init_params(network, seed=5)
    assert set(a) == {"big.weight", "big.bias"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.all(a["big.bias"] == 0)
    assert a["big.weight"].shape == (300, 400)
    assert a["big.weight"].std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert not np.array_equal(nn.init_params(network, seed=6)["big.weight"], a["big.weight"])


def test_layer_inputs():
    params = nn.init_params(SMALL_CNN, seed=1)
    x = np.random.default_rng(13).standard_normal((3, 2, 5, 6))
    inputs = nn.layer_inputs(SMALL_CNN, params, x)
    assert list(inputs) == ["c1", "c2", "fc"]
    assert np.array_equal(inputs["c1"], x)
    h = naive_maxpool(np.maximum(naive_conv2d(x, params["c1.weight"], params["c1.bias"]), 0))
    assert_close(inputs["c2"], h, 1e-12)
    h = np.maximum(naive_conv2d(h, params["c2.weight"], params["c2.bias"]), 0).reshape(3, -1)
    assert_close(inputs["fc"], h, 1e-12)
    assert_close(nn.forward(SMALL_CNN, params, x), h @ params["fc.weight"].T + params["fc.bias"],
                 1e-12)


def test_accuracy_and_predict():
    network = Network(input_shape=(2,), layers=(Layer("linear", "l", 2, 2),))
    params = {"l.weight": np.eye(2), "l.bias": np.zeros(2)}
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert nn.predict(network, params, x).tolist() == [0, 1, 0, 1]
    assert nn.accuracy(network, params, x, [0, 1, 1, 1]) == 0.75


def test_float32_stays_float32():
    params = {k: v.astype(np.float32) for k, v in nn.init_params(SMALL_MLP, seed=0).items()}
    x = np.ones((2, 6), np.float32)
    assert nn.forward(SMALL_MLP, params, x).dtype == np.float32
    assert nn.forward(SMALL_MLP, params, x.astype(np.float64)).dtype == np.float64


def test_errors_name_the_problem():
    params = nn.init_params(SMALL_MLP, seed=0)
    with pytest.raises(SdHwError, match=r"expected shape \(N, 6\)"):
        nn.forward(SMALL_MLP, params, np.zeros((2, 5)))
    with pytest.raises(SdHwError, match="missing 'b.bias'"):
        nn.forward(SMALL_MLP, {k: v for k, v in params.items() if k != "b.bias"},
                   np.zeros((2, 6)))
    with pytest.raises(SdHwError, match="'a.weight' has shape"):
        nn.forward(SMALL_MLP, dict(params, **{"a.weight": np.zeros((6, 5))}), np.zeros((1, 6)))
    with pytest.raises(SdHwError, match="class indices"):
        nn.loss_and_grads(SMALL_MLP, params, np.zeros((1, 6)), [4])
