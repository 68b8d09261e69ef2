"""Strided and unpadded convolutions, 2x2 and global average pooling: the network
description, the float model (forward against loops written here, backward
against finite differences), the integer golden model, and the SDCore compiler's
refusal (the element-serial core runs them: tests/test_serial_layers.py)."""

import numpy as np
import pytest

from sd_hw.compiler import CompileError, compile_network
from sd_hw.core.config import CoreConfig
from sd_hw.errors import NetworkSpecError, SdHwError
from sd_hw.network import Network, hardware_problems
from sd_hw.serial.compiler import compile_serial
from sd_hw.serial.config import SerialConfig
from sim.golden import nn
from sim.golden.counts import layer_plan
from sim.golden.reference import run
from sim.golden.serial_counts import serial_plan

from factories import random_integer_network


NET = Network.from_dict({"input_shape": [2, 9, 7], "layers": [
    {"type": "conv2d", "name": "s2", "in_channels": 2, "out_channels": 4, "kernel_size": 3,
     "stride": 2, "padding": 1},                                        # -> 4x5x4
    {"type": "relu"},
    {"type": "conv2d", "name": "valid", "in_channels": 4, "out_channels": 5,
     "kernel_size": 3, "padding": 0},                                   # -> 5x3x2
    {"type": "avgpool2d", "name": "avg"},                               # -> 5x1x1
    {"type": "conv2d", "name": "pw", "in_channels": 5, "out_channels": 6, "kernel_size": 1,
     "stride": 2},                                                      # -> 6x1x1
    {"type": "global_avgpool2d", "name": "gap"},                        # -> 6x1x1
    {"type": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 6, "out_features": 3}]})


def test_shapes_of_strided_unpadded_and_pooled_layers():
    assert NET.shapes == ((2, 9, 7), (4, 5, 4), (4, 5, 4), (5, 3, 2), (5, 1, 1), (6, 1, 1),
                          (6, 1, 1), (6,), (3,))
    net = Network.from_dict({"input_shape": [3, 8, 8], "layers": [
        {"type": "conv2d", "name": "a", "in_channels": 3, "out_channels": 2, "kernel_size": 3,
         "stride": 2, "padding": 0},
        {"type": "global_avgpool2d"}]})
    assert net.shapes == ((3, 8, 8), (2, 3, 3), (2, 1, 1))
    assert Network.from_json(NET.to_json()) == NET
    assert NET.layers[0].to_dict()["stride"] == 2
    assert NET.layers[2].to_dict()["padding"] == 0


@pytest.mark.parametrize("layer, message", [
    ({"type": "conv2d", "name": "a", "in_channels": 1, "out_channels": 1, "kernel_size": 1,
      "padding": 1}, r"unsupported padding 1 for kernel_size 1; supported: 0"),
    ({"type": "conv2d", "name": "a", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
      "padding": 0, "stride": 2}, r"a 3x3 window with padding 0 does not fit the input's 2x2"),
    ({"type": "avgpool2d", "kernel_size": 3}, r"only 2x2 average pooling"),
    ({"type": "global_avgpool2d", "stride": 2}, r"unknown field\(s\) 'stride'"),
])
def test_bad_layers_are_refused(layer, message):
    with pytest.raises(NetworkSpecError, match=message):
        Network.from_dict({"input_shape": [1, 2, 2], "layers": [layer]})


def _conv_loops(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    m, _, k, _ = w.shape
    padded = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    padded[:, :, pad:pad + h, pad:pad + wd] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, m, ho, wo))
    for i in range(ho):
        for j in range(wo):
            window = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            for o in range(m):
                out[:, o, i, j] = (window * w[o]).sum(axis=(1, 2, 3)) + b[o]
    return out


@pytest.mark.parametrize("k, stride, pad", [(3, 1, 1), (3, 2, 1), (3, 1, 0), (3, 2, 0),
                                            (1, 2, 0), (1, 1, 0)])
def test_conv_forward_against_loops(k, stride, pad):
    rng = np.random.default_rng(k * 10 + stride + pad)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, k, k))
    b = rng.standard_normal(4)
    got = nn.conv2d_forward(x, w, b, stride=stride, padding=pad)
    np.testing.assert_allclose(got, _conv_loops(x, w, b, stride, pad), rtol=1e-12, atol=1e-12)


def test_pooling_forward_by_hand():
    x = np.arange(2 * 5 * 4, dtype=np.float64).reshape(1, 2, 5, 4)
    avg = nn.avgpool2d_forward(x)
    assert avg.shape == (1, 2, 2, 2)
    assert avg[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4
    assert avg[0, 1, 1, 1] == (30 + 31 + 34 + 35) / 4
    gap = nn.global_avgpool2d_forward(x)
    assert gap.shape == (1, 2, 1, 1)
    assert gap[0, 1, 0, 0] == np.mean(np.arange(20, 40))


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    params = nn.init_params(NET, 5)
    x = rng.standard_normal((3,) + NET.input_shape)
    y = np.array([0, 2, 1])
    _, grads = nn.loss_and_grads(NET, params, x, y)
    eps = 1e-6
    for key in ("s2.weight", "valid.weight", "pw.weight", "fc.weight", "s2.bias"):
        flat = params[key].reshape(-1)
        for index in rng.choice(flat.size, size=min(5, flat.size), replace=False):
            saved = flat[index]
            flat[index] = saved + eps
            up, _ = nn.loss_and_grads(NET, params, x, y)
            flat[index] = saved - eps
            down, _ = nn.loss_and_grads(NET, params, x, y)
            flat[index] = saved
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - grads[key].reshape(-1)[index]) < 1e-6 * max(1, abs(numeric)), key


def test_integer_dataflows_agree_on_strided_and_unpadded_convs():
    for seed in range(3):
        net = random_integer_network(NET, seed, block_rows=4)
        net.accumulator_bits = 48
        x = np.random.default_rng(seed).integers(-128, 128, size=(5,) + NET.input_shape)
        x = x.astype(np.int8)
        rebuilt = run(net, x, dataflow="rebuild", layer_outputs=True)
        factored = run(net, x, dataflow="factored", layer_outputs=True)
        for a, b, shape in zip(rebuilt, factored, NET.shapes[1:]):
            assert a.shape == (5,) + shape
            np.testing.assert_array_equal(a, b)
        assert np.count_nonzero(rebuilt[-1]) > 0


def test_integer_average_pooling_rounds_half_up():
    network = Network.from_dict({"input_shape": [1, 2, 2], "layers": [
        {"type": "conv2d", "name": "c", "in_channels": 1, "out_channels": 1, "kernel_size": 1},
        {"type": "avgpool2d"},
        {"type": "global_avgpool2d"},
        {"type": "flatten"},
        {"type": "linear", "name": "fc", "in_features": 1, "out_features": 1}]})
    net = random_integer_network(network, 0, dense=True)
    net.accumulator_bits = 48
    # Identity 1x1 convolution that requantises by exactly 1: multiplier 2**14, shift 14.
    c = net.layers["c"]
    c.weights.weight[...] = 1
    c.bias[...] = 0
    c.multiplier[...] = 1 << 14
    c.shift[...] = 14
    cases = {(1, 2, 3, 4): 3,          # 10 / 4 = 2.5 -> 3
             (-1, -2, -3, -4): -2,     # -2.5 -> -2 (half up)
             (127, 127, 127, 126): 127,
             (-128, -128, -128, -127): -128,
             (1, 1, 1, 2): 1}          # 1.25 -> 1
    for values, expected in cases.items():
        x = np.array(values, np.int8).reshape(1, 1, 2, 2)
        outputs = run(net, x, layer_outputs=True)
        assert outputs[1].dtype == np.int8
        assert int(outputs[1][0, 0, 0, 0]) == expected
        assert int(outputs[2][0, 0, 0, 0]) == expected


def test_compilers_and_cycle_models_refuse_layers_their_core_does_not_run():
    problems = hardware_problems(NET)
    assert [p.split(" ")[1] for p in problems] == ["'s2'", "'valid'", "'avg'", "'pw'", "'gap'"]
    net = random_integer_network(NET, 0, block_rows=4)
    with pytest.raises(CompileError, match=r"layer 's2' \(conv2d 3x3, stride 2, padding 1\): "
                                           r"the SDCore runs stride 1"):
        compile_network(net, CoreConfig())
    with pytest.raises(SdHwError, match="layer 'gap'"):
        layer_plan(NET)
    # The element-serial core runs all but the 1x1 convolution.
    with pytest.raises(SdHwError, match=r"layer 'pw'.*not a 1x1 convolution"):
        compile_serial(net, SerialConfig())
    with pytest.raises(SdHwError, match="layer 'pw'"):
        serial_plan(NET)
