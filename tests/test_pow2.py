"""Power-of-two rounding: nearest in the linear domain, exact, sign kept."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from sd_hw.errors import ParameterError
from sim.golden.pow2 import is_pow2, pow2_exponent, round_pow2


# Finite floats whose nearest power of two is finite (subnormals included).
finite = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)
ties = st.sampled_from(["down", "up"])


def _exponent_of_power(q):
    """k with |q| == 2**k, asserting that q is a signed power of two."""
    mantissa, exponent = math.frexp(abs(q))
    assert mantissa == 0.5, q
    return exponent - 1


def _one(x, tie="down"):
    return float(round_pow2(np.array([x]), tie=tie)[0])


@given(finite, ties)
def test_result_is_zero_or_a_signed_power_of_two_with_the_sign_kept(x, tie):
    q = _one(x, tie)
    if x == 0:
        assert q == 0
        return
    _exponent_of_power(q)
    assert math.copysign(1.0, q) == math.copysign(1.0, x)


@given(finite, ties)
def test_the_chosen_power_is_at_least_as_near_as_both_neighbours(x, tie):
    q = _one(x, tie)
    if x == 0:
        return
    exact_x, exact_q = Fraction(x), Fraction(q)
    for neighbour in (exact_q / 2, exact_q * 2):
        assert abs(exact_x - exact_q) <= abs(exact_x - neighbour)


@given(finite, ties)
def test_it_picks_one_of_the_two_powers_around_x(x, tie):
    q = _one(x, tie)
    if x == 0:
        return
    mantissa, exponent = math.frexp(abs(x))  # |x| in [2**(exponent-1), 2**exponent)
    assert _exponent_of_power(q) in (exponent - 1, exponent)


@given(st.integers(min_value=-1073, max_value=1022), st.sampled_from([-1.0, 1.0]))
def test_ties_follow_the_rule(k, sign):
    x = sign * 1.5 * 2.0 ** k  # exactly between 2**k and 2**(k+1)
    assert _one(x, "down") == sign * 2.0 ** k
    assert _one(x, "up") == sign * 2.0 ** (k + 1)


@given(st.integers(min_value=-1000, max_value=1000), st.floats(0.0, 1.0))
def test_decision_point_is_three_quarters_of_the_upper_power(k, t):
    # |x| in [2**k, 2**(k+1)): below 1.5 * 2**k goes down, above goes up.
    x = 2.0 ** k * (1.0 + t)
    expected = 2.0 ** k if (1.0 + t) < 1.5 else 2.0 ** (k + 1)
    if (1.0 + t) == 1.5:
        return
    assert _one(x) == expected
    assert _one(-x, "up") == -expected


@given(finite, ties)
def test_idempotent(x, tie):
    q = _one(x, tie)
    assert _one(q, tie) == q
    assert _one(q, "down" if tie == "up" else "up") == q


def test_examples_by_hand():
    x = np.array([[0.0, -0.0, 1.0, 1.49, 1.5, 1.51, -3.0, 0.7, 0.74, 0.76, 2.0 ** -1074]])
    down = [0.0, -0.0, 1.0, 1.0, 1.0, 2.0, -2.0, 0.5, 0.5, 1.0, 2.0 ** -1074]
    up = [0.0, -0.0, 1.0, 1.0, 2.0, 2.0, -4.0, 0.5, 0.5, 1.0, 2.0 ** -1074]
    assert round_pow2(x).tolist() == [down]
    assert round_pow2(x, tie="up").tolist() == [up]
    assert np.signbit(round_pow2(x)[0, 1])  # -0.0 stays -0.0
    assert round_pow2(x).shape == x.shape


def test_non_finite_values_pass_through():
    out = round_pow2(np.array([np.inf, -np.inf, np.nan]))
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


def test_huge_values_round_up_to_infinity_without_a_warning():
    assert _one(1.7e308) == np.inf
    assert _one(1.2e308) == 2.0 ** 1023


@pytest.mark.parametrize("tie", ["nearest", "", None, 1])
def test_invalid_tie_is_refused_by_name(tie):
    with pytest.raises(ParameterError, match=r"'tie'.*'down' or 'up'"):
        round_pow2(np.ones(2), tie=tie)


@given(st.integers(-1074, 1023), st.sampled_from([-1.0, 1.0]))
def test_pow2_exponent_of_exact_powers(k, sign):
    x = np.array([sign * 2.0 ** k, 0.0])
    assert pow2_exponent(x).tolist() == [k, 0]
    assert is_pow2(x).all()


def test_pow2_exponent_refuses_other_values():
    assert is_pow2(np.array([0.75, 3.0])).tolist() == [False, False]
    with pytest.raises(ParameterError, match="power of two"):
        pow2_exponent(np.array([1.0, 3.0]))
