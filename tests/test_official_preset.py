"""The official decomposition preset, point by point, on tensors worked out by hand.

Each expected value below is derived in the comments from the authors'
smart_exchange.py semantics (docs/decomposition.md, "sd-hw and the official
code"), never by calling the code under test. Notation: ``Q_t`` is the
quantised Ce at loop step ``t``; a block that is a 3x3 invertible matrix of
powers of two is its own quantisation, so ``B = Q^-1 A = I`` and the
coefficient fit returns ``A`` (up to rounding far below every threshold).
"""

import contextlib
import io

import numpy as np
import pytest

from sd_hw import weight_file
from sd_hw.errors import ParameterError, SdHwError
from sd_hw.network import Network
from sim.cli import build_parser, main, _compress_options
from sim.compress import decomposition_notes
from sim.golden.decompose import (DecomposeParams, decompose_blocks, decompose_weight,
                                  decompose_weights, exponent_window_report,
                                  official_block_rows, official_fit_rows)
from sim.golden.integerise import integerise_decomposed
from sim.golden.model_file import save_model


def lstsq(Q, A):
    """Minimum-norm least squares ``B`` with ``Q B ~= A``, the official rcond."""
    return np.linalg.lstsq(Q, A, rcond=1e-10)[0]


# ---------------------------------------------------------------- parameters

def test_official_parameters_and_the_unchanged_defaults():
    fields = ("block_rows", "iterations", "theta", "vector_wise", "row_theta_factor", "tie",
              "max_exponent", "code_bits", "tol", "group", "preset")
    official = DecomposeParams.official()
    assert tuple(getattr(official, f) for f in fields) == (
        192, 30, 1e-3, False, 5.0, "down", 5, 3, 1e-10, 32, "official")
    assert DecomposeParams(preset="official") == official
    default = DecomposeParams()
    assert tuple(getattr(default, f) for f in fields) == (
        192, 30, 1e-3, True, 5.0, "down", 5, 3, 1e-10, 32, "sd-hw")
    assert DecomposeParams.official(vector_wise=True).vector_wise is True


@pytest.mark.parametrize("changes, text", [
    ({"preset": "fast"}, "parameter 'preset' is 'fast', allowed values are 'sd-hw', 'official'"),
    ({"preset": None}, "parameter 'preset' is None"),
    ({"preset": "official", "block_rows": 12},
     "parameter 'block_rows' is 12; the official preset computes each layer's block length"),
    ({"preset": "official", "vector_wise": "no"}, "'vector_wise' must be True or False"),
])
def test_bad_presets_are_refused(changes, text):
    with pytest.raises(ParameterError) as info:
        DecomposeParams(**changes)
    assert text in str(info.value)


# ---------------------------------------------------------------- fit count

# Q_0 = round(A): 1.2 -> 1 (below 1.5), 0.0004 -> 2^-11 (above 1.5 * 2^-12 =
# 0.000366), 3.0 -> 2 (exactly 1.5 * 2: the tie goes down), 0.7 -> 0.5
# (below 0.75). A is invertible, so the first coefficient fit gives
# A (Q_0^-1 A)^-1 = Q_0; its entry 2^-11 < theta = 1e-3 is then zeroed.
FIT_A = np.array([[1.2, 0.0004, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.7]])
Q0 = np.array([[1.0, 2.0 ** -11, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
Q1 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])


@pytest.fixture
def pinv_calls(monkeypatch):
    """Shapes of the matrices the official preset pseudo-inverts: a (R, 3)
    quantised Ce for a basis fit, a 3x3 basis for a coefficient fit."""
    calls = []
    pinv = np.linalg.pinv

    def counting(a, *args, **kwargs):
        calls.append(np.shape(a)[-2:])
        return pinv(a, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "pinv", counting)
    return calls


def fits(calls, rows):
    """(basis fits, coefficient fits) among the recorded pinv calls of ``rows``-row blocks."""
    return calls.count((rows, 3)), calls.count((3, 3))


def test_one_iteration_makes_no_coefficient_fit(pinv_calls):
    # range(iterations - 1) is empty: Ce = round(A), thresholds never run, so
    # 2^-11 < theta survives; B = Q_0^-1 A, with Q_0^-1 = [[1, -2^-12, 0],
    # [0, 1/2, 0], [0, 0, 2]].
    A = np.vstack([FIT_A, np.zeros(3)])  # a zero 4th row: basis fits are (4, 3)
    ce, b, used = decompose_blocks(A[None], DecomposeParams.official(iterations=1))
    assert np.array_equal(ce[0], np.vstack([Q0, np.zeros(3)]))
    expected_b = np.array([[1.2, 0.0004 - 3 * 2.0 ** -12, 0.0], [0.0, 1.5, 0.0],
                           [0.0, 0.0, 1.4]])
    assert np.allclose(b[0], expected_b, rtol=0, atol=1e-12)
    assert used.tolist() == [0]
    assert fits(pinv_calls, 4) == (1, 0)


def test_two_iterations_make_one_fit_of_each(pinv_calls):
    # One loop step: B = Q_0^-1 A, Ce = Q_0, theta zeroes 2^-11; then
    # Q = Q_1 and B = Q_1^-1 A = A with rows scaled by 1, 1/2, 2.
    A = np.vstack([FIT_A, np.zeros(3)])
    ce, b, used = decompose_blocks(A[None], DecomposeParams.official(iterations=2))
    assert np.array_equal(ce[0], np.vstack([Q1, np.zeros(3)]))
    expected_b = np.array([[1.2, 0.0004, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.4]])
    assert np.allclose(b[0], expected_b, rtol=0, atol=1e-12)
    assert used.tolist() == [1]
    assert fits(pinv_calls, 4) == (2, 1)


def test_thirty_iterations_stop_when_the_quantised_ce_repeats(pinv_calls):
    # Step 0 fits and leaves Ce = Q_1; step 1: Q_1 != Q_0, fits again
    # (B = Q_1^-1 A, Ce = Q_1); step 2: Q_2 = Q_1, stop. Two loop fits plus
    # the final basis fit.
    A = np.vstack([FIT_A, np.zeros(3)])
    ce, _, used = decompose_blocks(A[None], DecomposeParams.official())
    assert np.array_equal(ce[0], np.vstack([Q1, np.zeros(3)]))
    assert used.tolist() == [2]
    assert fits(pinv_calls, 4) == (3, 2)


def test_the_same_result_takes_one_iteration_more_than_with_sd_hw():
    # sd-hw makes `iterations` fits: with 1 it already fits once and zeroes
    # 2^-11 (code_bits = 6 so that its exponent window, which would also
    # drop 2^-11, plays no part), as the official preset does with 2.
    sd_hw, _, _ = decompose_blocks(FIT_A[None], DecomposeParams(iterations=1, code_bits=6))
    official, _, _ = decompose_blocks(FIT_A[None], DecomposeParams.official(iterations=1))
    assert np.array_equal(sd_hw[0], Q1)
    assert np.array_equal(official[0], Q0)


def test_convergence_is_tested_on_the_frobenius_norm():
    # Q_0 = A; the first fit returns A and theta = 0.3 zeroes both 0.25
    # entries, so Q_1 = I: a change of norm sqrt(2) * 0.25 = 0.354 (largest
    # entry 0.25). tol = 0.3: not converged, the second (last) step fits
    # again: 2 fits. tol = 0.36: converged at step 1 after 1 fit.
    A = np.array([[1.0, 0.25, 0.0], [0.0, 1.0, 0.25], [0.0, 0.0, 1.0]])
    for tol, used in ((0.3, 2), (0.36, 1)):
        ce, _, got = decompose_blocks(A[None], DecomposeParams.official(
            theta=0.3, tol=tol, iterations=3))
        assert got.tolist() == [used]
        assert np.array_equal(ce[0], np.eye(3))


# ---------------------------------------------------------------- thresholds

# Rows 1, 0 and a row of L1 norm 0.25 + 2 * 2^-5 = 0.3125; theta = 0.055,
# row threshold 5 * theta = 0.275. Official (rows on the raw Ce, then
# entries): the row's norm 0.3125 >= 0.275 keeps it, then both 2^-5 < theta
# go: [0.25, 0, 0]. sd-hw (entries, then the norm of what is left): 0.25 <
# 0.275, so the whole row goes.
ORDER_A = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.25, 2.0 ** -5, 2.0 ** -5]])


def test_official_threshold_order_row_before_element():
    params = DecomposeParams.official(theta=0.055, vector_wise=True, iterations=2)
    ce, b, _ = decompose_blocks(ORDER_A[None], params)
    expected = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.25, 0.0, 0.0]])
    assert np.array_equal(ce[0], expected)
    # Least squares by hand: column 2 of Ce is zero, so B[2] = 0 (minimum
    # norm); B[1] = [0, 1, 0]; B[0] fits rows 0 and 2:
    # (1 * [1, 0, 0] + 0.25 * [0.25, 2^-5, 2^-5]) / (1 + 0.25^2) = [1, 1/136, 1/136].
    expected_b = np.array([[1.0, 1 / 136, 1 / 136], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert np.allclose(b[0], expected_b, rtol=0, atol=1e-12)


def test_sd_hw_threshold_order_element_before_row():
    params = DecomposeParams(theta=0.055, vector_wise=True, iterations=1)
    ce, _, _ = decompose_blocks(ORDER_A[None], params)
    expected = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert np.array_equal(ce[0], expected)


# ---------------------------------------------------------------- row-threshold scope

# Third row 0.25, 0, 2^-7: raw L1 norm 0.2578 < 5 * 0.055 = 0.275, so the
# official row threshold (where it applies) zeroes it; otherwise only 2^-7 <
# theta goes and the row stays [0.25, 0, 0].
SCOPE_A = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.25, 0.0, 2.0 ** -7]])
ROW_ZEROED = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
ROW_KEPT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.25, 0.0, 0.0]])
SCOPE_WEIGHTS = {"conv3x3": SCOPE_A.reshape(1, 1, 3, 3), "conv1x1": SCOPE_A.reshape(1, 9, 1, 1),
                 "linear": SCOPE_A.reshape(1, 9)}


@pytest.mark.parametrize("kind, vector_wise, expected", [
    ("conv3x3", True, ROW_ZEROED),
    ("conv3x3", False, ROW_KEPT),   # the official default: off
    ("conv1x1", True, ROW_KEPT),    # never for 1x1 convolutions
    ("linear", True, ROW_KEPT),     # never for linear layers
])
def test_row_threshold_scope(kind, vector_wise, expected):
    params = DecomposeParams.official(theta=0.055, vector_wise=vector_wise, iterations=2)
    dw = decompose_weight(SCOPE_WEIGHTS[kind], params)
    assert np.array_equal(dw.coefficients[0], expected)


def test_row_threshold_scope_holds_per_layer_in_one_stacked_solve():
    params = DecomposeParams.official(theta=0.055, vector_wise=True, iterations=2)
    out = decompose_weights(SCOPE_WEIGHTS, params)
    assert np.array_equal(out["conv3x3"].coefficients[0], ROW_ZEROED)
    assert np.array_equal(out["conv1x1"].coefficients[0], ROW_KEPT)
    assert np.array_equal(out["linear"].coefficients[0], ROW_KEPT)


def test_sd_hw_row_threshold_applies_to_linear_layers_too():
    dw = decompose_weight(SCOPE_WEIGHTS["linear"], DecomposeParams(theta=0.055, iterations=1))
    assert np.array_equal(dw.coefficients[0], ROW_ZEROED)


# ---------------------------------------------------------------- block split

# 3x3 conv with C inputs: m = 3C rows. m <= 192 or prime: one block.
# Otherwise divide by the prime factors in ascending order until <= 192.
@pytest.mark.parametrize("c, block", [
    (1, 3), (3, 9), (4, 12), (7, 21), (32, 96), (64, 192),
    (128, 192),   # 384 = 2 * 192
    (192, 144),   # 576 = 2^6 * 3^2: 288, 144 (not 192 = 576 / 3)
    (256, 192),   # 768 = 2^8 * 3: 384, 192
    (384, 144),   # 1152 = 2^7 * 3^2: 576, 288, 144
    (512, 192),   # 1536 = 2^9 * 3: 768, 384, 192
    (576, 108),   # 1728 = 2^6 * 3^3: 864, 432, 216, 108
    (134, 67),    # 402 = 2 * 3 * 67: 201, 67 (not 134)
    (394, 197),   # 1182 = 2 * 3 * 197: 591, 197 > 192 and prime
    (1024, 192),  # 3072: fixed table
    (546, 171),   # 1638: fixed table (not a divisor)
    (2788, 204),  # 8364: fixed table
])
def test_conv3x3_block_lengths(c, block):
    assert official_fit_rows((2, c, 3, 3)) == 3 * c
    assert official_block_rows((2, c, 3, 3)) == block


# 1x1 conv and linear with C inputs: ceil(C / 3) rows, but 4096, 2048, 1280
# inputs are padded to 1368, 684, 429 rows; then the same rule.
@pytest.mark.parametrize("c, rows, block", [
    (7, 3, 3), (9, 3, 3),
    (576, 192, 192),
    (577, 193, 193),    # prime
    (700, 234, 117),    # 234 = 2 * 3^2 * 13: 117
    (1000, 334, 167),   # 2 * 167
    (1024, 342, 171),   # 2 * 3^2 * 19: 171
    (1280, 429, 143),   # padded (427 = 7 * 61 would give 61); 429 = 3 * 11 * 13: 143
    (2048, 684, 171),   # padded (683 is prime); 684 = 2^2 * 3^2 * 19: 342, 171
    (4095, 1365, 91),   # 3 * 5 * 7 * 13: 455, 91
    (4096, 1368, 171),  # padded (1366 = 2 * 683); 1368 = 2^3 * 3^2 * 19: 684, 342, 171
    (4097, 1366, 683),  # 2 * 683: 683 > 192 and prime
])
@pytest.mark.parametrize("kind", ["linear", "conv1x1"])
def test_linear_and_1x1_padding_and_block_lengths(kind, c, rows, block):
    shape = (2, c) if kind == "linear" else (2, c, 1, 1)
    assert official_fit_rows(shape) == rows
    assert official_block_rows(shape) == block


@pytest.mark.parametrize("shape", [(2, 6), (2, 1), (2, 4, 1, 1)])
def test_filters_of_fewer_than_three_rows_are_refused(shape):
    with pytest.raises(ParameterError, match=r"cannot decompose .* transposed"):
        official_block_rows(shape)
    with pytest.raises(ParameterError, match=r"layer 'small'.*fewer than 3 rows"):
        decompose_weights({"small": np.ones(shape)}, DecomposeParams.official())


def test_a_layer_is_cut_into_the_official_blocks():
    # C = 192: 576 rows in 4 blocks of 144, each decomposed on its own.
    W = np.random.default_rng(0).normal(scale=0.1, size=(2, 192, 3, 3))
    params = DecomposeParams.official(iterations=6)
    dw = decompose_weight(W, params)
    assert (dw.block_rows, dw.n_blocks, dw.rows, dw.skipped_rows) == (144, 4, 576, 0)
    rows = W.reshape(2, 576, 3)
    alone, basis, _ = decompose_blocks(rows.reshape(8, 144, 3), params)
    assert np.array_equal(dw.coefficients, alone.reshape(2, 576, 3))
    assert np.allclose(dw.basis, basis.reshape(2, 4, 3, 3), rtol=0, atol=1e-12)


def test_linear_blocks_run_over_the_padded_rows():
    # C = 4096: the official code fits 1368 rows (4104 inputs, the last 8
    # zero) in 8 blocks of 171; sd-hw stores ceil(4096 / 3) = 1366 rows, so
    # the last block holds 169 (inputs 3591 .. 4095 and two zero inputs).
    W = np.random.default_rng(1).normal(scale=0.05, size=(1, 4096))
    params = DecomposeParams.official(iterations=6)
    dw = decompose_weight(W, params)
    assert (dw.block_rows, dw.n_blocks, dw.rows) == (171, 8, 1366)
    padded = np.zeros(3 * 1368)
    padded[:4096] = W[0]
    alone, _, _ = decompose_blocks(padded.reshape(8, 171, 3), params)
    assert np.array_equal(dw.coefficients[0], alone.reshape(1368, 3)[:1366])
    assert not alone.reshape(1368, 3)[1366:].any()  # the extra rows stay zero


def test_table_row_count_leaves_the_last_rows_undecomposed():
    # C = 546: 1638 rows in blocks of 171 (fixed table): 9 blocks cover 1539
    # rows; the last 99 rows are not decomposed (zero, as in the official code).
    W = np.random.default_rng(2).normal(scale=0.05, size=(1, 546, 3, 3))
    dw = decompose_weight(W, DecomposeParams.official(iterations=3))
    assert (dw.block_rows, dw.n_blocks, dw.skipped_rows) == (171, 10, 99)
    assert dw.coefficients[:, :1539].any() and not dw.coefficients[:, 1539:].any()
    assert not dw.basis[:, 9].any()
    assert not dw.reconstruct().reshape(1, 1638, 3)[:, 1539:].any()
    # code_bits = 6: a window wide enough for every block of these weights.
    assert decomposition_notes({"big": dw}, _options(code_bits=6)) == [
        "layer 'big': the official block split (blocks of 171 rows) leaves the last 99 of "
        "1638 rows of every filter undecomposed (zero weights)"]


def _options(**changes):
    from sim.compress import CompressOptions
    return CompressOptions(decompose=DecomposeParams.official(**changes))


# ---------------------------------------------------------------- exponent window

# Exponents 0, -4 and -9 on the diagonal (2^-9 = 0.00195 > theta): the block
# is its own decomposition (Q_1 = Q_0 = A, stop at step 1) and spans 10
# exponents, more than the 8 of 3-bit codes.
WIDE = np.diag([1.0, 2.0 ** -4, 2.0 ** -9])


def test_official_keeps_every_exponent_and_reports_the_span():
    dw = decompose_weight(WIDE.reshape(1, 1, 3, 3), DecomposeParams.official())
    assert np.array_equal(dw.coefficients[0], WIDE)
    assert not dw.exponent_window
    report = exponent_window_report({"conv": dw}, 3)
    assert [(e.layer, e.filter, e.block, e.e_min, e.e_max, e.span, e.window)
            for e in report] == [("conv", 0, 0, -9, 0, 10, 8)]
    assert str(report[0]) == ("layer 'conv', filter 0, block 0: exponents 2^-9 .. 2^0 span "
                              "10 values, the window holds 8")
    assert exponent_window_report({"conv": dw}, 4) == []


def test_sd_hw_applies_the_window_instead():
    # The window [e_max - 7, e_max] = [-7, 0] drops 2^-9.
    dw = decompose_weight(WIDE.reshape(1, 1, 3, 3), DecomposeParams())
    assert np.array_equal(dw.coefficients[0], np.diag([1.0, 2.0 ** -4, 0.0]))
    assert dw.exponent_window
    assert exponent_window_report({"conv": dw}, 3) == []


def test_integeriser_refuses_a_block_beyond_the_window():
    dw = decompose_weight(WIDE.reshape(1, 1, 3, 3), DecomposeParams.official())
    with pytest.raises(SdHwError) as info:
        integerise_decomposed(dw, code_bits=3, layer="conv")
    message = str(info.value)
    assert "\n" not in message
    for part in ("layer 'conv': 1 block(s)", "window of 8 (code_bits = 3)",
                 "filter 0, block 0, 2^-9 .. 2^0, 10 values",
                 "use code_bits = 4 (sd-hw compress --code-bits 4)"):
        assert part in message
    # With 4-bit codes the window [e_max - 15, e_max] = [-15, 0] holds all:
    # offsets 0 - (-15) = 15, -4 + 15 = 11, -9 + 15 = 6.
    weights, _ = integerise_decomposed(dw, code_bits=4, layer="conv")
    assert weights.present[0].tolist() == np.eye(3, dtype=bool).tolist()
    assert np.diag(weights.exponent[0]).tolist() == [15, 11, 6]


def test_a_span_beyond_six_code_bits_points_to_the_sd_hw_preset():
    # theta = 0: a row of 2^-60 survives; exponents 5 .. -60 span 66 > 64.
    A = np.array([[32.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [2.0 ** -60, 0, 0]])
    dw = decompose_weight(np.vstack([A, np.zeros((2, 3))]).reshape(1, 18),
                          DecomposeParams.official(theta=0.0))
    assert dw.coefficients[0, 3, 0] == 2.0 ** -60
    with pytest.raises(SdHwError, match=r"66 values.*no code_bits up to 6 holds it; use the "
                                        r"sd-hw preset \(sd-hw compress --preset sd-hw\)"):
        integerise_decomposed(dw, code_bits=6, layer="fc")


# ---------------------------------------------------------------- command line

def test_cli_options_build_the_preset():
    parser = build_parser()

    def params(*argv):
        return _compress_options(parser.parse_args(["compress", "m.npz", "-o", "w.sdw",
                                                    *argv])).decompose
    assert params() == DecomposeParams()
    assert params("--preset", "official") == DecomposeParams.official()
    assert params("--preset", "official", "--vector-wise", "--theta", "0.004",
                  "--iterations", "50") == DecomposeParams.official(
        vector_wise=True, theta=4e-3, iterations=50)
    assert params("--no-vector-wise").vector_wise is False
    options = _compress_options(parser.parse_args(
        ["compress", "m.npz", "-o", "w.sdw", "--accumulator-bits", "40"]))
    assert options.accumulator_bits == 40


@pytest.fixture
def wide_model(tmp_path):
    """A linear 9 -> 2 model whose filter 0 is the WIDE block, filter 1 the identity."""
    network = Network.from_dict({"input_shape": [9], "layers": [
        {"type": "linear", "name": "fc", "in_features": 9, "out_features": 2}]})
    params = {"fc.weight": np.stack([WIDE.ravel(), np.eye(3).ravel()]),
              "fc.bias": np.zeros(2)}
    path = tmp_path / "wide.npz"
    save_model(path, network, params,
               calibration=np.random.default_rng(3).random((8, 9)))
    return path


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_cli_official_preset_refuses_then_accepts_wider_codes(wide_model, tmp_path):
    output = tmp_path / "wide.sdw"
    code, out, err = run_cli("compress", wide_model, "-o", output, "--preset", "official")
    assert code == 2 and not output.exists()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sd-hw: error: layer 'fc': 1 block(s)")
    assert "--code-bits 4" in lines[0]
    assert ("layer 'fc': 1 block(s) exceed the exponent window of 8 (code_bits = 3); "
            "worst: filter 0, block 0, 2^-9 .. 2^0, 10 values") in out

    code, out, err = run_cli("compress", wide_model, "-o", output, "--preset", "official",
                             "--code-bits", "4")
    assert code == 0, err
    layer = weight_file.load(output).layers["fc"]
    assert layer.weights.block_rows == 3
    assert int(layer.weights.present.sum()) == 6  # every coefficient kept

    code, _, err = run_cli("compress", wide_model, "-o", output)  # sd-hw: windowed
    assert code == 0, err
    assert int(weight_file.load(output).layers["fc"].weights.present.sum()) == 5


@pytest.mark.parametrize("argv, message", [
    (["--preset", "fast"], "parameter 'preset' is 'fast', allowed values are 'sd-hw', "
                           "'official'"),
    (["--preset", "official", "--block-rows", "12"], "parameter 'block_rows' is 12"),
])
def test_cli_bad_preset_is_one_error_line(wide_model, tmp_path, argv, message):
    code, _, err = run_cli("compress", wide_model, "-o", tmp_path / "x.sdw", *argv)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sd-hw: error: ") and message in lines[0]
    assert "Traceback" not in err
