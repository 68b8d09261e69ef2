"""The integer golden model: hand-checked layers, and the rebuild and factored
dataflows agreeing to the bit on random networks."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sd_hw.errors import SdHwError
from sd_hw.integer_network import DecomposedWeights, DenseWeights, IntegerLayer, IntegerNetwork
from sd_hw.network import Network
from sim.golden.integerise import build_integer_network, requantisation
from sim.golden.reference import rebuild_weight, requantise, run


def _rows(layer):
    if layer.kind == "conv2d" and layer.kernel_size == 3:
        return 3 * layer.in_size
    return -(-layer.in_size // 3)


def random_integer_network(network, seed, *, block_rows=4, code_bits=3, dense=()):
    """A random network through the integeriser: pow2 factors, random biases."""
    rng = np.random.default_rng(seed)
    params, decomposed, scales = {}, {}, {}
    for layer in network.compute_layers:
        rows = _rows(layer)
        n_blocks = -(-rows // block_rows)
        m = layer.out_size
        params[f"{layer.name}.weight"] = rng.normal(size=layer.weight_shape) * 0.3
        params[f"{layer.name}.bias"] = rng.normal(size=m) * 0.1
        scales[layer.name] = 0.02 + rng.random() * 0.05
        if layer.name in dense:
            continue
        exponents = rng.integers(-6, -6 + 2 ** code_bits, size=(m, rows, 3))
        keep = rng.random((m, rows, 3)) < 0.5
        keep[:, rng.random(rows) < 0.3] = False  # some rows zero in every channel
        if layer.kind != "conv2d" or layer.kernel_size != 3:
            pad = rows * 3 - layer.in_size
            if pad:
                keep[:, -1, 3 - pad:] = False  # padding inputs carry no coefficient
        coefficients = np.where(keep, rng.choice([-1.0, 1.0], size=keep.shape)
                                * np.exp2(exponents), 0.0)
        decomposed[layer.name] = SimpleNamespace(
            coefficients=coefficients, basis=rng.normal(size=(m, n_blocks, 3, 3)),
            block_rows=block_rows)
    return build_integer_network(network, params, decomposed, scales, code_bits=code_bits,
                                 block_rows=block_rows, rebuild=rebuild_weight)


CNN = Network.from_dict({"input_shape": [2, 6, 5], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 2, "out_channels": 4, "kernel_size": 3},
    {"type": "relu"},
    {"type": "conv2d", "name": "c2", "in_channels": 4, "out_channels": 5, "kernel_size": 1},
    {"type": "relu"},
    {"type": "maxpool2d"},
    {"type": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 30, "out_features": 7}]})

MLP = Network.from_dict({"input_shape": [20], "layers": [
    {"type": "linear", "name": "l1", "in_features": 20, "out_features": 9},
    {"type": "relu"},
    {"type": "linear", "name": "l2", "in_features": 9, "out_features": 4}]})


@pytest.mark.parametrize("network", [CNN, MLP], ids=["cnn", "mlp"])
@pytest.mark.parametrize("block_rows", [1, 4, 192])
@pytest.mark.parametrize("seed", range(3))
def test_rebuild_and_factored_dataflows_agree_to_the_bit(network, block_rows, seed):
    net = random_integer_network(network, seed, block_rows=block_rows)
    x = np.random.default_rng(100 + seed).integers(-128, 128, size=(9,) + network.input_shape)
    x = x.astype(np.int8)
    rebuilt = run(net, x, dataflow="rebuild", layer_outputs=True)
    factored = run(net, x, dataflow="factored", layer_outputs=True)
    assert len(rebuilt) == len(network.layers)
    for a, b in zip(rebuilt, factored):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # The comparison is live: the outputs are neither all zero nor saturated.
    assert np.count_nonzero(rebuilt[-1]) > 0


def test_dense_layers_mix_with_decomposed_ones():
    net = random_integer_network(CNN, 7, dense=("c2",))
    assert isinstance(net.layers["c2"].weights, DenseWeights)
    x = np.random.default_rng(1).integers(-128, 128, size=(4,) + CNN.input_shape).astype(np.int8)
    np.testing.assert_array_equal(run(net, x), run(net, x, dataflow="factored"))


def _single_layer(network, weights, bias, *, multiplier=0, shift=0, final=True):
    m = network.compute_layers[0].out_size
    layer = IntegerLayer(
        name=network.compute_layers[0].name, weights=weights,
        bias=np.asarray(bias, np.int32), weight_scale=np.ones(m),
        multiplier=np.full(m, multiplier, np.int32), shift=np.full(m, shift, np.uint8),
        input_scale=1.0, output_scale=1.0, final=final)
    return IntegerNetwork(network, {layer.name: layer}, input_scale=1.0, block_rows=2)


def test_conv3x3_against_explicit_loops():
    network = Network.from_dict({"input_shape": [2, 3, 4], "layers": [
        {"type": "conv2d", "name": "c", "in_channels": 2, "out_channels": 1,
         "kernel_size": 3}]})
    # One output channel, 6 Ce rows (c*3 + kernel row), blocks of 2 rows.
    present = np.zeros((1, 6, 3), bool)
    negative = np.zeros((1, 6, 3), bool)
    exponent = np.zeros((1, 6, 3), np.uint8)
    present[0, 0, 1] = True; exponent[0, 0, 1] = 2                  # row 0: +4 * B0[1]
    present[0, 3, 0] = True; negative[0, 3, 0] = True               # row 3: -1 * B1[0]
    present[0, 5, 2] = True; exponent[0, 5, 2] = 7                  # row 5: +128 * B2[2]
    basis = np.zeros((1, 3, 3, 3), np.int8)
    basis[0, 0, 1] = [1, -2, 3]
    basis[0, 1, 0] = [-128, 0, 5]
    basis[0, 2, 2] = [0, 1, 0]
    weights = DecomposedWeights(present, negative, exponent, basis, block_rows=2)
    # The same weights written by hand: w[c, kr, kc].
    w = np.zeros((2, 3, 3), np.int64)
    w[0, 0] = [4, -8, 12]          # row 0 = channel 0, kernel row 0
    w[1, 0] = [128, 0, -5]         # row 3 = channel 1, kernel row 0
    w[1, 2] = [0, 128, 0]          # row 5 = channel 1, kernel row 2
    np.testing.assert_array_equal(rebuild_weight(weights, (1, 2, 3, 3))[0], w)
    net = _single_layer(network, weights, [3])
    x = np.random.default_rng(0).integers(-128, 128, size=(2, 2, 3, 4)).astype(np.int8)
    expected = np.zeros((2, 1, 3, 4), np.int64)
    for n in range(2):
        for h in range(3):
            for v in range(4):
                total = 3
                for c in range(2):
                    for kr in range(3):
                        for kc in range(3):
                            hh, vv = h + kr - 1, v + kc - 1
                            if 0 <= hh < 3 and 0 <= vv < 4:
                                total += w[c, kr, kc] * int(x[n, c, hh, vv])
                expected[n, 0, h, v] = total
    for dataflow in ("rebuild", "factored"):
        got = run(net, x, dataflow=dataflow)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)


def test_linear_padding_rows_and_requantisation_by_hand():
    network = Network.from_dict({"input_shape": [4], "layers": [
        {"type": "linear", "name": "fc", "in_features": 4, "out_features": 1}]})
    # Two rows: inputs 0..2 and input 3 (+ two padding inputs).
    present = np.array([[[True, False, True], [True, False, False]]])
    negative = np.array([[[False, False, True], [False, False, False]]])
    exponent = np.array([[[1, 0, 0], [3, 0, 0]]], np.uint8)
    basis = np.zeros((1, 1, 3, 3), np.int8)
    basis[0, 0, 0] = [1, 2, 3]
    basis[0, 0, 2] = [0, -1, 1]
    weights = DecomposedWeights(present, negative, exponent, basis, block_rows=2)
    # Row 0: 2*[1,2,3] - [0,-1,1] = [2,5,5]; row 1: 8*[1,2,3] -> input 3 gets 8.
    np.testing.assert_array_equal(rebuild_weight(weights, (1, 4)), [[2, 5, 5, 8]])
    x = np.array([[10, -3, 7, 2]], np.int8)
    acc = 2 * 10 + 5 * -3 + 5 * 7 + 8 * 2 + 5  # = 61
    net = _single_layer(network, weights, [5], multiplier=3 * 2 ** 13, shift=16, final=False)
    # 61 * 24576 / 65536 = 22.875 -> 23 (half up after adding 2**15).
    assert run(net, x).tolist() == [[23]]
    assert run(net, x, dataflow="factored").tolist() == [[23]]


def test_requantise_rounds_half_up_and_saturates():
    acc = np.array([[5, -5, 6, -6, 1000, -1000]])
    mult = np.full(6, 2 ** 14, np.int32)
    shift = np.full(6, 16, np.uint8)   # multiply by 1/4
    # 1.25 -> 1, -1.25 -> -1, 1.5 -> 2, -1.5 -> -1 (half up), 250 -> 127, -250 -> -128
    assert requantise(acc, mult, shift).tolist() == \
        [[1, -1, 2, -1, 127, -128]]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), s_out=st.floats(0.01, 10.0))
def test_integer_layer_within_derived_bound_of_float(seed, s_out):
    """|y_int - clamp(y_float / s_out)| <= 1/2 + |acc| * |M - multiplier * 2**-shift|.

    y_float is the layer computed in float64 from the dequantised weights,
    inputs and bias; the only integer-side errors are the fixed-point
    multiplier and the final rounding."""
    rng = np.random.default_rng(seed)
    net = random_integer_network(MLP, seed)
    layer = net.layers["l1"]
    s_in = layer.input_scale
    mult, shift = requantisation(layer.weight_scale * s_in / s_out, layer="l1")
    layer.multiplier, layer.shift, layer.output_scale = mult, shift, s_out
    x = rng.integers(-128, 128, size=(16, 20)).astype(np.int8)
    y_int = run(net, x, layer_outputs=True)[0].astype(np.float64)
    w_real = rebuild_weight(layer.weights, (9, 20)) * layer.weight_scale[:, None]
    bias_real = layer.bias * layer.weight_scale * s_in
    y_float = (x * s_in) @ w_real.T + bias_real
    acc = y_float / (layer.weight_scale * s_in)
    real_m = layer.weight_scale * s_in / s_out
    bound = 0.5 + np.abs(acc) * np.abs(real_m - mult * 2.0 ** -shift.astype(float)) + 1e-6
    assert np.all(np.abs(y_int - np.clip(y_float / s_out, -128, 127)) <= bound)


def test_bad_inputs_are_refused():
    net = random_integer_network(MLP, 0)
    with pytest.raises(SdHwError, match=r"inputs have shape \(3, 19\).*\(N, 20\)"):
        run(net, np.zeros((3, 19), np.int8))
    with pytest.raises(SdHwError, match="must be int8"):
        run(net, np.zeros((3, 20), np.float32))
    with pytest.raises(SdHwError, match="dataflow must be one of rebuild, factored"):
        run(net, np.zeros((3, 20), np.int8), dataflow="magic")
