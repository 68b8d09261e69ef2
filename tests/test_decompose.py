"""SmartDeal decomposition: row layout, group pruning, vectorised alternating minimisation.

Expected values are computed here from first principles (loops, math.frexp,
exact fractions), never by the code under test.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from sd_hw.errors import ParameterError, SdHwError
from sim.golden.decompose import (DecomposeParams, DecomposedWeight, decompose_blocks,
                                  decompose_weight, decompose_weights, group_prune_mask,
                                  quantise_blocks, rows_to_weight, weight_to_rows)


# ---------------------------------------------------------------- references

def ref_pow2(x, tie="down"):
    """Nearest signed power of two, decided with exact fractions."""
    if x == 0:
        return 0.0
    _, e = math.frexp(abs(x))  # |x| in [2**(e-1), 2**e)
    low, a = Fraction(2) ** (e - 1), Fraction(abs(x))
    high = 2 * low
    if a - low < high - a or (a - low == high - a and tie == "down"):
        result = low
    else:
        result = high
    return math.copysign(float(result), x)


def exponent(q):
    mantissa, e = math.frexp(abs(q))
    assert mantissa == 0.5, f"{q} is not a power of two"
    return e - 1


def ref_quantise_block(block, tie="down", max_exponent=5, code_bits=3):
    """Quantise one (R, 3) block element by element."""
    q = [[ref_pow2(float(v), tie) for v in row] for row in block]
    q = [[math.copysign(min(abs(v), 2.0 ** max_exponent), v) if v else 0.0 for v in row]
         for row in q]
    exps = [exponent(v) for row in q for v in row if v]
    if not exps:
        return np.zeros_like(block)
    low = max(max(exps) - (2 ** code_bits - 1), -1000)
    return np.array([[v if v and exponent(v) >= low else 0.0 for v in row] for row in q])


def rel_error(approx, exact):
    return np.linalg.norm(approx - exact) / np.linalg.norm(exact)


def assert_quantised(ce, params):
    """Every block of ``ce`` (N, R, 3): 0 or ±2**k, clipped, inside the exponent window."""
    for block in ce:
        exps = [exponent(float(v)) for v in block.ravel() if v != 0]
        if exps:
            assert max(exps) <= params.max_exponent
            assert min(exps) >= max(exps) - (2 ** params.code_bits - 1)
        assert not np.any(np.signbit(block) & (block == 0)), "no -0.0"


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("field, value, text", [
    ("block_rows", 0, "'block_rows' is 0, allowed range is 1 to 65535"),
    ("block_rows", 65536, "'block_rows' is 65536, allowed range is 1 to 65535"),
    ("iterations", 0, "'iterations' is 0, allowed range is 1 to 1000"),
    ("iterations", 2.5, "'iterations' must be an integer"),
    ("theta", -0.1, "'theta' is -0.1, allowed range is 0.0 to 1.0"),
    ("theta", 2.0, "'theta' is 2.0, allowed range is 0.0 to 1.0"),
    ("theta", float("nan"), "'theta' must be a number"),
    ("max_exponent", 31, "'max_exponent' is 31, allowed range is -30 to 30"),
    ("code_bits", 0, "'code_bits' is 0, allowed range is 1 to 6"),
    ("code_bits", 7, "'code_bits' is 7, allowed range is 1 to 6"),
    ("group", 0, "'group' is 0, allowed range is 1 to 65535"),
    ("tol", -1e-3, "'tol' is -0.001, allowed range is 0.0 to 1.0"),
    ("row_theta_factor", -1.0, "'row_theta_factor' is -1.0, allowed range is 0.0 to 1000.0"),
    ("tie", "nearest", "'tie' must be 'down' or 'up'"),
    ("vector_wise", "yes", "'vector_wise' must be True or False"),
])
def test_parameter_validation_names_the_parameter_and_range(field, value, text):
    with pytest.raises(ParameterError) as info:
        DecomposeParams(**{field: value})
    assert text in str(info.value)


def test_default_parameters_are_sd_hw_ones():
    p = DecomposeParams()
    assert (p.block_rows, p.iterations, p.theta, p.vector_wise, p.row_theta_factor, p.tie,
            p.max_exponent, p.code_bits, p.tol, p.group) == (
        192, 30, 1e-3, True, 5.0, "down", 5, 3, 1e-10, 32)


# ---------------------------------------------------------------- row layout

def test_conv3x3_rows_by_hand():
    m, c = 2, 4
    W = np.arange(m * c * 9, dtype=float).reshape(m, c, 3, 3)
    rows = weight_to_rows(W)
    assert rows.shape == (m, 3 * c, 3) and rows.dtype == np.float64
    for o in range(m):
        for ch in range(c):
            for kr in range(3):
                for kc in range(3):
                    assert rows[o, ch * 3 + kr, kc] == W[o, ch, kr, kc]


@pytest.mark.parametrize("shape", [(3, 7, 1, 1), (3, 7), (2, 5), (2, 6), (1, 1)])
def test_1x1_and_linear_rows_by_hand(shape):
    W = np.arange(1, int(np.prod(shape)) + 1, dtype=float).reshape(shape)
    m, c = shape[:2]
    rows = weight_to_rows(W)
    assert rows.shape == (m, -(-c // 3), 3)
    flat = W.reshape(m, c)
    for o in range(m):
        for r in range(rows.shape[1]):
            for j in range(3):
                expected = flat[o, 3 * r + j] if 3 * r + j < c else 0.0
                assert rows[o, r, j] == expected


@given(st.sampled_from(["conv3x3", "conv1x1", "linear"]), st.integers(1, 5),
       st.integers(1, 11), st.integers(0, 2 ** 32 - 1))
def test_rows_round_trip(kind, m, c, seed):
    shape = {"conv3x3": (m, c, 3, 3), "conv1x1": (m, c, 1, 1), "linear": (m, c)}[kind]
    W = np.random.default_rng(seed).normal(size=shape)
    back = rows_to_weight(weight_to_rows(W), shape)
    assert back.shape == shape
    assert np.array_equal(back, W)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (4, 3, 3, 1), (4,), (2, 3, 4), (0, 3), (4, 0, 3, 3)])
def test_other_shapes_are_refused(shape):
    with pytest.raises(ParameterError, match="shape"):
        weight_to_rows(np.zeros(shape))


# ---------------------------------------------------------------- group pruning

def ref_pruned_units(scores, n_pruned):
    """Indices of the n lowest scores, ties to the lower index."""
    return set(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:n_pruned])


@pytest.mark.parametrize("m, c, group, fraction", [(70, 5, 32, 0.5), (9, 4, 4, 0.3),
                                                   (3, 2, 32, 0.9), (5, 3, 1, 0.34)])
def test_conv3x3_group_pruning(m, c, group, fraction):
    rng = np.random.default_rng(m * 100 + c)
    W = rng.normal(size=(m, c, 3, 3))
    mask = group_prune_mask(W, fraction, group=group)
    assert mask.shape == W.shape and mask.dtype == bool
    n_pruned = math.floor(fraction * 3 * c)
    for start in range(0, m, group):
        members = range(start, min(start + group, m))
        scores = [sum(abs(W[o, r // 3, r % 3, kc]) for o in members for kc in range(3))
                  for r in range(3 * c)]
        pruned = ref_pruned_units(scores, n_pruned)
        for o in members:
            for r in range(3 * c):
                # the whole kernel row is kept or pruned, the same in every filter
                assert list(mask[o, r // 3, r % 3]) == [r not in pruned] * 3


@pytest.mark.parametrize("shape", [(40, 7, 1, 1), (40, 7)])
def test_1x1_and_linear_prune_whole_input_channels(shape):
    rng = np.random.default_rng(1)
    W = rng.normal(size=shape)
    mask = group_prune_mask(W, 0.5, group=16)
    flat = mask.reshape(shape[0], 7)
    for start in range(0, 40, 16):
        members = range(start, min(start + 16, 40))
        scores = [sum(abs(W.reshape(40, 7)[o, ch]) for o in members) for ch in range(7)]
        pruned = ref_pruned_units(scores, 3)  # floor(0.5 * 7)
        for o in members:
            assert [bool(v) for v in flat[o]] == [ch not in pruned for ch in range(7)]


def test_pruning_ties_go_to_the_lower_index():
    W = np.ones((4, 4, 3, 3))
    mask = group_prune_mask(W, 0.5, group=4)
    # 12 rows with equal scores: rows 0..5 (channels 0 and 1) are pruned.
    assert not mask[:, :2].any() and mask[:, 2:].all()


def test_pruning_fraction_zero_keeps_everything_and_one_is_refused():
    W = np.random.default_rng(0).normal(size=(4, 3, 3, 3))
    assert group_prune_mask(W, 0.0).all()
    with pytest.raises(ParameterError, match="'prune' is 1.0, allowed range is 0 to 1"):
        group_prune_mask(W, 1.0)
    with pytest.raises(ParameterError, match="'prune'"):
        group_prune_mask(W, -0.1)
    with pytest.raises(ParameterError, match="'group' is 0"):
        group_prune_mask(W, 0.5, group=0)


# ---------------------------------------------------------------- quantisation

block_values = st.one_of(
    st.just(0.0),
    st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_subnormal=False),
    st.sampled_from([1.5, -1.5, 0.375, -3.0, 48.0, 2.0 ** -20]))


@settings(max_examples=60)
@given(st.lists(st.lists(block_values, min_size=3, max_size=3), min_size=1, max_size=8),
       st.sampled_from(["down", "up"]), st.integers(-3, 6), st.integers(1, 4))
def test_quantisation_matches_the_elementwise_reference(rows, tie, max_exponent, code_bits):
    block = np.array(rows)
    params = DecomposeParams(tie=tie, max_exponent=max_exponent, code_bits=code_bits)
    got = quantise_blocks(block[None], params)[0]
    expected = ref_quantise_block(block, tie, max_exponent, code_bits)
    assert np.array_equal(got, expected)
    assert not np.any(np.signbit(got) & (got == 0))


def test_quantisation_window_and_clip_by_hand():
    block = np.array([[[100.0, -5.0, 0.3], [0.03, 1.6, -0.0]]])
    params = DecomposeParams(max_exponent=2, code_bits=2)
    # pow2: 64->clip 4, -4, 0.25, 0.03125, 2, 0; window [2-3, 2] = [-1, 2].
    assert quantise_blocks(block, params).tolist() == [[[4.0, -4.0, 0.0], [0.0, 2.0, 0.0]]]


# ---------------------------------------------------------------- decompose_blocks

def random_blocks(seed, n=6, rows=20):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.01, 3.0, size=(n, 1, 1))
    return rng.normal(size=(n, rows, 3)) * scales


@pytest.mark.parametrize("seed", range(3))
def test_batched_result_equals_each_block_alone(seed):
    A = random_blocks(seed)
    params = DecomposeParams(iterations=12)
    ce, b, used = decompose_blocks(A, params)
    assert ce.shape == A.shape and b.shape == (len(A), 3, 3) and used.shape == (len(A),)
    for i in range(len(A)):
        ce1, b1, used1 = decompose_blocks(A[i:i + 1], params)
        assert np.array_equal(ce1[0], ce[i])
        np.testing.assert_allclose(b1[0], b[i], rtol=1e-12, atol=1e-15)
        assert used1[0] == used[i]
    # Position in the batch does not matter either.
    ce_r, b_r, used_r = decompose_blocks(A[::-1], params)
    assert np.array_equal(ce_r[::-1], ce) and np.array_equal(used_r[::-1], used)
    np.testing.assert_allclose(b_r[::-1], b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("max_exponent, code_bits, scale", [(5, 3, 1.0), (2, 1, 30.0),
                                                            (0, 2, 5.0), (-3, 3, 0.01)])
def test_coefficients_are_clipped_powers_of_two_in_the_window(max_exponent, code_bits, scale):
    params = DecomposeParams(max_exponent=max_exponent, code_bits=code_bits, theta=0.0)
    A = random_blocks(7, n=5) * scale
    ce, b, _ = decompose_blocks(A, params)
    assert_quantised(ce, params)
    assert np.all(np.isfinite(b))


@pytest.mark.parametrize("theta", [0.0, 1e-3])
def test_zero_rows_stay_exactly_zero(theta):
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 30, 3))
    zero = rng.random((4, 30)) < 0.4
    A[zero] = 0.0
    ce, _, _ = decompose_blocks(A, DecomposeParams(theta=theta))
    assert np.all(ce[zero] == 0.0)


def test_all_zero_and_rank_deficient_blocks():
    A = np.zeros((3, 10, 3))
    A[1, :, 0] = np.linspace(0.1, 1.0, 10)         # rank 1
    A[2, :, 1] = A[2, :, 2] = np.linspace(-1, 1, 10)  # two equal columns
    ce, b, _ = decompose_blocks(A, DecomposeParams())
    assert np.all(ce[0] == 0) and np.all(b[0] == 0)
    assert np.all(np.isfinite(b))
    for i in (1, 2):
        naive = np.array([[ref_pow2(v) for v in row] for row in A[i]])
        assert rel_error(ce[i] @ b[i], A[i]) <= rel_error(naive, A[i])


def test_scaled_powers_of_two_are_recovered_where_rounding_alone_fails():
    # A = 1.4 * Ce0: rounding alone loses 0.4/1.4 of every entry; Ce0 and
    # B = 1.4 I reproduce A exactly.
    rng = np.random.default_rng(5)
    ce0 = rng.choice([-1, 1], size=(40, 3)) * 2.0 ** rng.integers(-6, 0, size=(40, 3))
    A = 1.4 * ce0
    naive = np.array([[ref_pow2(v) for v in row] for row in A])
    assert rel_error(naive, A) == pytest.approx(0.4 / 1.4)
    ce, b, used = decompose_blocks(A[None], DecomposeParams())
    assert rel_error(ce[0] @ b[0], A) < 1e-12
    assert used[0] < 30


@pytest.mark.parametrize("seed", range(4))
def test_reconstruction_error_is_below_the_naive_start(seed):
    rng = np.random.default_rng(seed)
    params = DecomposeParams()
    narrow = rng.uniform(0.05, 0.2, size=(64, 3))   # positive, narrow range
    normal = rng.normal(size=(64, 3)) * 0.1
    ce, b, _ = decompose_blocks(np.stack([narrow, normal]), params)
    for i, A, bound in ((0, narrow, 0.75), (1, normal, 1.0)):
        naive = np.array([[ref_pow2(v) for v in row] for row in A])
        assert rel_error(ce[i] @ b[i], A) < bound * rel_error(naive, A)


@given(st.integers(0, 2 ** 32 - 1), st.integers(3, 40))
@settings(max_examples=25)
def test_exactly_representable_blocks_stop_early_and_are_recovered(seed, rows):
    # Ce0: signed powers of two inside one 8-exponent window, above theta;
    # B0: a signed permutation with power-of-two scales, so A is a power-of-two
    # matrix that the first quantisation already reproduces. With A of full column
    # rank the basis fit is unique (B = I); with fewer independent rows the
    # minimum-norm fit is a projection, the refitted Ce moves, and neither claim
    # holds (rows = 2: Ce no longer equals A on 55 of 3000 seeds).
    rng = np.random.default_rng(seed)
    ce0 = rng.choice([-1.0, 1.0], size=(rows, 3)) * 2.0 ** rng.integers(-7, 0, size=(rows, 3))
    perm = np.eye(3)[rng.permutation(3)]
    b0 = perm * rng.choice([-1.0, 1.0], size=3) * 2.0 ** rng.integers(-1, 1, size=3)
    A = ce0 @ b0
    assume(np.linalg.matrix_rank(A) == 3)
    ce, b, used = decompose_blocks(A[None], DecomposeParams())
    assert used[0] == 1  # one update, then the quantised Ce no longer changed
    assert np.array_equal(ce[0], A)  # Ce is A itself
    # The basis comes from normal equations solved with an explicit 3x3 inverse: exact
    # up to about cond(A)**2 roundings (1.3e-10 seen at cond 1687, 1e-12 near cond 200).
    tolerance = 1e-14 * max(np.linalg.cond(A), 10.0) ** 2
    np.testing.assert_allclose(ce[0] @ b[0], A, rtol=0, atol=tolerance)
    np.testing.assert_allclose(b[0], np.eye(3), atol=tolerance)


def test_iteration_cap():
    ce, _, used = decompose_blocks(random_blocks(2), DecomposeParams(iterations=1))
    assert np.all(used == 1)
    assert_quantised(ce, DecomposeParams())


def test_theta_zeroes_small_coefficients_and_rows():
    # One block: rows far below theta become zero rows.
    A = np.zeros((1, 6, 3))
    A[0, :3] = [[1.0, 0.5, -0.25], [0.3, -0.7, 0.9], [-1.2, 0.1, 0.6]]
    A[0, 3:] = 1e-4
    ce, _, _ = decompose_blocks(A, DecomposeParams(theta=1e-3))
    assert np.all(ce[0, 3:] == 0)
    assert np.all(ce[0, :3].any(axis=1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(bad):
    A = np.ones((2, 4, 3))
    A[1, 2, 0] = bad
    with pytest.raises(SdHwError, match="weight contains NaN or Inf"):
        decompose_blocks(A, DecomposeParams())
    W = np.ones((2, 3, 3, 3))
    W[0, 1, 2, 2] = bad
    with pytest.raises(SdHwError, match="weight contains NaN or Inf"):
        decompose_weight(W)


def test_block_shape_is_checked():
    with pytest.raises(ParameterError, match=r"\(N, R, 3\)"):
        decompose_blocks(np.zeros((2, 4, 2)), DecomposeParams())


# ---------------------------------------------------------------- layers

def test_decompose_weight_blocks_and_reconstruction():
    rng = np.random.default_rng(11)
    W = rng.normal(size=(3, 7, 3, 3)) * 0.1          # 21 rows per filter
    params = DecomposeParams(block_rows=8, iterations=10)
    dw = decompose_weight(W, params)
    assert isinstance(dw, DecomposedWeight)
    assert dw.shape == W.shape and dw.block_rows == 8
    assert dw.coefficients.shape == (3, 21, 3) and dw.basis.shape == (3, 3, 3, 3)
    assert dw.n_blocks == 3 and dw.iterations.shape == (3, 3)
    assert list(dw.block_of_row()) == [r // 8 for r in range(21)]
    # reconstruct() written out: row r of filter m uses block r // 8.
    rows = np.zeros((3, 21, 3))
    for m in range(3):
        for r in range(21):
            rows[m, r] = dw.coefficients[m, r] @ dw.basis[m, r // 8]
    expected = np.zeros_like(W)
    for m in range(3):
        for c in range(7):
            for kr in range(3):
                expected[m, c, kr] = rows[m, 3 * c + kr]
    np.testing.assert_allclose(dw.reconstruct(), expected, rtol=1e-14, atol=1e-15)
    # Each block is decomposed on its own: filter 1, last (short) block.
    alone = W.reshape(3, 21, 3)[1:2, 16:21]
    ce, b, _ = decompose_blocks(alone, params)
    assert np.array_equal(dw.coefficients[1, 16:21], ce[0])
    np.testing.assert_allclose(dw.basis[1, 2], b[0], rtol=1e-12, atol=1e-15)


def test_pruned_rows_stay_zero_after_decomposition():
    rng = np.random.default_rng(12)
    W = rng.normal(size=(40, 8, 3, 3))
    mask = group_prune_mask(W, 0.5, group=32)
    dw = decompose_weight(W, DecomposeParams(iterations=8), prune=0.5)
    pruned_rows = ~mask[:, :, :, 0].reshape(40, 24)
    assert pruned_rows.sum() == 40 * 12
    assert np.all(dw.coefficients[pruned_rows] == 0)
    assert np.all(dw.reconstruct()[~mask] == 0)


def test_linear_pruning_zeroes_rows_whose_three_channels_are_pruned():
    rng = np.random.default_rng(13)
    W = rng.normal(size=(8, 10))
    W[:, 3:6] *= 1e-3  # channels 3, 4, 5 have the lowest scores: one whole Ce row
    dw = decompose_weight(W, DecomposeParams(), prune=0.3)  # floor(3.0) channels
    assert dw.coefficients.shape == (8, 4, 3)
    assert np.all(dw.coefficients[:, 1] == 0)
    assert dw.reconstruct().shape == (8, 10)


def test_decompose_weights_equals_layer_by_layer():
    rng = np.random.default_rng(14)
    weights = {"a": rng.normal(size=(4, 5, 3, 3)), "b": rng.normal(size=(6, 7, 1, 1)),
               "c": rng.normal(size=(3, 20))}
    params = DecomposeParams(block_rows=6, iterations=10)
    together = decompose_weights(weights, params, prune={"a": 0.4})
    assert set(together) == {"a", "b", "c"}
    for name, W in weights.items():
        alone = decompose_weight(W, params, prune=0.4 if name == "a" else 0.0)
        assert together[name].shape == W.shape
        assert np.array_equal(together[name].coefficients, alone.coefficients)
        np.testing.assert_allclose(together[name].basis, alone.basis, rtol=1e-12, atol=1e-15)
    with pytest.raises(ParameterError, match="'zzz'"):
        decompose_weights(weights, params, prune={"zzz": 0.5})


@pytest.mark.slow
def test_larger_layer_quality():
    rng = np.random.default_rng(15)
    W = rng.normal(size=(64, 64, 3, 3)) * np.sqrt(2 / 576)
    dw = decompose_weight(W)
    naive = np.vectorize(ref_pow2)(W)
    assert rel_error(dw.reconstruct(), W) < 0.97 * rel_error(naive, W)
    assert_quantised(dw.coefficients.reshape(-1, 192, 3), DecomposeParams())
