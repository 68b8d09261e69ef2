"""The projections of sim.compress against the integer network the accelerator runs."""

import numpy as np
import pytest

from sd_hw.network import Network
from sim.compress import CompressOptions, integerise, project, project_int8
from sim.golden.decompose import DecomposedWeight
from sim.golden.nn import forward
from sim.golden.reference import run

# A 3-row block as the decomposition of a one-channel 3x3 convolution left it
# (seen on the digits CNN): Ce is nearly singular, so the small weights are
# differences of basis entries in the hundreds.
ILL_CONDITIONED_CE = np.array([[1.0, 0.125, -1.0], [0.25, 1.0, -0.5], [-0.25, 1.0, -0.015625]])
ILL_CONDITIONED_BASIS = np.array([[-115.52658198, 307.71350501, -76.23174279],
                                  [-31.07589005, 82.90478989, -20.28497955],
                                  [-120.53362707, 317.8961559, -77.68672253]])


def _single_linear(rng):
    """A final linear layer 9 -> 3: channel 0 ill-conditioned, the others random."""
    network = Network.from_dict({"input_shape": [9], "layers": [
        {"type": "linear", "name": "fc", "in_features": 9, "out_features": 3}]})
    coefficients = np.stack([ILL_CONDITIONED_CE]
                            + [np.where(rng.random((3, 3)) < 0.7,
                                        rng.choice([-1.0, 1.0], (3, 3))
                                        * np.exp2(rng.integers(-6, 1, (3, 3))), 0.0)
                               for _ in range(2)])
    basis = np.stack([ILL_CONDITIONED_BASIS / 100] + [rng.normal(size=(3, 3))
                                                      for _ in range(2)])[:, None]
    factors = DecomposedWeight(shape=(3, 9), coefficients=coefficients, basis=basis,
                               block_rows=192)
    params = {"fc.weight": factors.reconstruct(), "fc.bias": rng.normal(size=3) * 0.1}
    return network, params, {"fc": factors}


@pytest.mark.parametrize("seed", range(4))
def test_int8_projection_is_what_the_integer_network_computes(seed):
    rng = np.random.default_rng(seed)
    network, params, decomposed = _single_linear(rng)
    input_scale = 1 / 127
    options = CompressOptions()
    net = integerise(network, params, decomposed, {"fc": input_scale}, options)
    x_int = rng.integers(-127, 128, size=(64, 9)).astype(np.int8)
    logits = run(net, x_int).astype(np.float64)
    x = x_int.astype(np.float64) * input_scale

    int8_logits = forward(network, project_int8(network, params, decomposed, options), x)
    float_logits = forward(network, project(params, decomposed), x)
    # The final layer's int32 logits are in units of its one weight scale
    # (int8 bases: the largest folded basis entry maps to 127) times the input scale.
    scale = _folded_peak(decomposed["fc"]) / 127
    in_units = int8_logits / (scale * input_scale)
    # The bias is rounded to the accumulator's unit: at most half a unit off.
    assert np.max(np.abs(in_units - logits)) <= 0.5 + 1e-6
    # The float factors are not what the accelerator computes: channel 0's
    # weights are differences of basis entries far larger than the result.
    float_units = float_logits / (scale * input_scale)
    assert np.max(np.abs(float_units[:, 0] - logits[:, 0])) > 10


def _folded_peak(factors):
    """Largest basis magnitude once each channel's exponent window base is folded in
    (code_bits = 3: the window is the channel's largest exponent and the 7 below)."""
    peaks = []
    for ce, basis in zip(factors.coefficients, factors.basis[:, 0]):
        exponents = np.log2(np.abs(ce[ce != 0]))
        peaks.append(np.abs(basis).max() * 2.0 ** (exponents.max() - 7))
    return max(peaks)


def test_int8_projection_keeps_undecomposed_layers_and_the_input_alone():
    rng = np.random.default_rng(0)
    network, params, decomposed = _single_linear(rng)
    before = {name: value.copy() for name, value in params.items()}
    projected = project_int8(network, params, decomposed, CompressOptions())
    assert np.array_equal(projected["fc.bias"], params["fc.bias"])
    assert all(np.array_equal(params[name], before[name]) for name in params)
    assert projected["fc.weight"].shape == params["fc.weight"].shape
