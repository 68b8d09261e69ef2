"""Integerisation: requantisation multipliers, basis folding, accumulator bounds."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sd_hw.errors import SdHwError
from sd_hw.network import Network
from sim.golden.integerise import (build_integer_network, integerise_decomposed,
                                   integerise_dense, requantisation)
from sim.golden.reference import rebuild_weight


@given(st.floats(min_value=1e-12, max_value=1e4, allow_nan=False, allow_infinity=False))
def test_requantisation_is_a_15_bit_fixed_point_approximation(real):
    mult, shift = requantisation(np.array([real]), layer="l")
    m, s = int(mult[0]), int(shift[0])
    assert 1 <= s <= 62
    if s < 62:
        assert 2 ** 14 <= m < 2 ** 15
        # Rounding to 15 significant bits: relative error at most 2**-15.
        assert abs(m * 2.0 ** -s - real) <= real * 2.0 ** -15
    else:
        assert abs(m * 2.0 ** -62 - real) <= 2.0 ** -63


def test_requantisation_refuses_what_does_not_fit():
    with pytest.raises(SdHwError, match="layer 'fc'.*too large"):
        requantisation(np.array([1e6]), layer="fc")
    with pytest.raises(SdHwError, match="layer 'fc'.*positive"):
        requantisation(np.array([0.0]), layer="fc")
    with pytest.raises(SdHwError, match="positive finite"):
        requantisation(np.array([np.nan]), layer="fc")


def _random_factors(rng, m, rows, block_rows, code_bits):
    n_blocks = -(-rows // block_rows)
    exponents = rng.integers(-9, -9 + 2 ** code_bits, size=(m, rows, 3))
    signs = rng.choice([-1.0, 1.0], size=(m, rows, 3))
    keep = rng.random((m, rows, 3)) < 0.6
    coefficients = np.where(keep, signs * np.exp2(exponents), 0.0)
    basis = rng.normal(size=(m, n_blocks, 3, 3))
    return SimpleNamespace(coefficients=coefficients, basis=basis, block_rows=block_rows)


@pytest.mark.parametrize("seed", range(5))
def test_rebuilt_integer_weights_match_the_float_factors(seed):
    rng = np.random.default_rng(seed)
    m, rows, block_rows, code_bits = 4, 11, 4, 3
    factors = _random_factors(rng, m, rows, block_rows, code_bits)
    weights, scale = integerise_decomposed(factors, code_bits=code_bits)
    # Float reconstruction written out here: row r uses block r // block_rows.
    expected = np.zeros((m, rows, 3))
    for ch in range(m):
        for r in range(rows):
            expected[ch, r] = factors.coefficients[ch, r] @ factors.basis[ch, r // block_rows]
    got = rebuild_weight(weights, (m, 3 * rows)).reshape(m, rows, 3) * scale[:, None, None]
    # Each basis entry is rounded to within scale/2, then multiplied by 2**k.
    for ch in range(m):
        for r in range(rows):
            k = weights.exponent[ch, r].astype(float)
            bound = scale[ch] / 2 * np.sum(np.exp2(k) * weights.present[ch, r]) + 1e-12
            assert np.all(np.abs(got[ch, r] - expected[ch, r]) <= bound)
    assert weights.exponent.max() <= 2 ** code_bits - 1
    assert np.abs(weights.basis.astype(int)).max() <= 127


def test_coefficients_outside_the_exponent_window_are_dropped():
    factors = SimpleNamespace(
        coefficients=np.array([[[2.0 ** 0, 2.0 ** -7, 2.0 ** -8]]]),
        basis=np.eye(3)[None, None], block_rows=1)
    weights, _ = integerise_decomposed(factors, code_bits=3)
    assert weights.present.tolist() == [[[True, True, False]]]
    assert weights.exponent.tolist() == [[[7, 0, 0]]]


def test_dense_weights_round_to_int8_per_channel():
    w = np.array([[0.5, -1.0], [0.02, 0.01]])
    dense, scale = integerise_dense(w)
    assert scale.tolist() == [1.0 / 127, 0.02 / 127]
    assert dense.weight.tolist() == [[64, -127], [127, 64]]
    _, layer_scale = integerise_dense(w, per_layer_scale=True)
    assert layer_scale.tolist() == [1.0 / 127, 1.0 / 127]


def test_accumulator_overflow_is_refused_with_the_width_needed():
    network = Network.from_dict({"input_shape": [300], "layers": [
        {"type": "linear", "name": "fc", "in_features": 300, "out_features": 2}]})
    params = {"fc.weight": np.full((2, 300), 0.5), "fc.bias": np.zeros(2)}
    scales = {"fc": 1.0}
    with pytest.raises(SdHwError, match=r"layer 'fc'.*needs a 24-bit accumulator.*"
                                        r"accumulator_bits = 16; to fit: sd-hw compress "
                                        r"--accumulator-bits 24$"):
        # 300 weights of 127 (0.5 at scale 0.5/127) times 128: 4876800 < 2**23.
        build_integer_network(network, params, {}, scales, accumulator_bits=16)
    net = build_integer_network(network, params, {}, scales, accumulator_bits=32)
    assert net.layers["fc"].final
