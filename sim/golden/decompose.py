"""SmartDeal decomposition ``W ~= Ce . B``, vectorised over blocks.

The method (``/work/shared/smartdeal-method.md``, section "Decomposition"):

* every output filter of a layer is reshaped to Ce rows of 3 (see
  :func:`weight_to_rows`) and its rows are cut into blocks of at most
  ``block_rows``; each block ``A`` (m x 3) gets its own 3x3 basis ``B``;
* optional group-structured pruning (:func:`group_prune_mask`) zeroes whole
  rows (3x3 conv) or input channels (1x1 conv, linear), shared by groups of
  ``group`` consecutive output filters;
* alternating minimisation per block (:func:`decompose_blocks`): start
  ``Ce = A``, ``B = I``; repeat up to ``iterations`` times: quantise Ce to
  signed powers of two, stop if the quantised Ce did not change, fit
  ``B = pinv(Q) A``, fit ``Ce = A pinv(B)``, zero ``|c| < theta`` and (vector-
  wise) rows whose L1 norm is below ``row_theta_factor * theta``; finish with
  a final quantisation and a refit of ``B``.

Quantisation is :func:`sim.golden.pow2.round_pow2` (powers below 2**-1000
become zero) followed by a clip at
``2**max_exponent`` and the block's exponent window: a block stores codes of
``code_bits`` bits, so its nonzero exponents lie in
``[e_max - (2**code_bits - 1), e_max]`` with ``e_max`` the block's largest
exponent; smaller coefficients become zero. The window is applied in every
quantisation step, so ``B`` is fitted to what the hardware can store.

That is the ``"sd-hw"`` preset. The ``"official"`` preset
(:meth:`DecomposeParams.official`) reproduces the authors' released code
(SmartDeal-Inference/smart_exchange.py) instead: ``iterations - 1`` fits in
the loop, the row threshold on the raw Ce before the element threshold and
only in 3x3 convolutions (off by default), the block lengths of
:func:`official_block_rows`, a Frobenius-norm convergence test, least
squares with ``rcond = 1e-10`` and no exponent window (only the clip).
:func:`exponent_window_report` lists the blocks whose exponents then need
more than ``2**code_bits`` values. docs/decomposition.md compares the two.

With ``shared_basis`` G > 1 (sd-hw preset only), the filters of a layer
are taken in groups of G consecutive ones and block ``b`` of a group is
block ``b`` of its filters stacked: one alternating minimisation, one basis
and one exponent window for the group's block (docs/decomposition.md,
"Shared bases").

All blocks of a call are processed together: per-block 3x3 solves run on
stacks, and only blocks that have not converged keep iterating. A block's
result does not depend on the other blocks of the call.
"""

import math
from dataclasses import dataclass

import numpy as np

from sd_hw.errors import ParameterError, SdHwError, check_range
from .pow2 import check_tie


__all__ = ["DecomposeParams", "DecomposedWeight", "PRESETS", "weight_to_rows",
           "rows_to_weight", "layer_kind", "group_prune_mask", "quantise_blocks",
           "decompose_blocks", "decompose_weight", "decompose_weights",
           "official_fit_rows", "official_block_rows", "WindowExcess",
           "exponent_window_report"]

#: Decomposition presets: sd-hw's own semantics, and the authors' released code.
PRESETS = ("sd-hw", "official")

#: Largest block of the official code: 64 * 3 rows (``factor_long(m, 3)``).
_OFFICIAL_BLOCK_LIMIT = 192


@dataclass(frozen=True)
class DecomposeParams:
    """Parameters of the decomposition.

    The defaults are sd-hw's own (``preset="sd-hw"``); they differ from the
    authors' released code in the points docs/decomposition.md lists
    ("sd-hw and the official code"). ``DecomposeParams.official()`` (or
    ``preset="official"``) reproduces that code.

    ``block_rows``
        Ce rows per basis block (1..65535); 192 = 64 input channels x 3 rows.
        The official preset computes each layer's block length itself
        (:func:`official_block_rows`, at most 192 but for a few row counts)
        and accepts only 192 here.
    ``iterations``
        Most alternating-minimisation passes per block (1..1000). The
        official preset, like the official code, makes at most
        ``iterations - 1`` (B, Ce) fits, then refits B once.
    ``theta``
        Coefficients with ``|c| < theta`` become zero (0..1).
    ``vector_wise``
        Also zero whole Ce rows whose L1 norm is below ``row_theta_factor * theta``.
        Default: on for ``"sd-hw"``, off for ``"official"`` (which applies
        it, when on, to 3x3 convolutions only).
    ``row_theta_factor``
        See ``vector_wise`` (0..1000).
    ``tie``
        ``"down"`` or ``"up"``: where a value exactly between two powers goes.
    ``max_exponent``
        ``|Ce|`` is clipped at ``2**max_exponent`` (-30..30).
    ``code_bits``
        Exponent code bits (1..6): a block holds ``2**code_bits`` exponents.
        The official preset does not enforce this window while decomposing;
        see :func:`exponent_window_report`.
    ``tol``
        A block has converged when its quantised Ce changes by at most this
        (0..1): largest absolute change (``"sd-hw"``) or Frobenius norm of
        the change (``"official"``).
    ``group``
        Output filters sharing one pruning pattern (1..65535).
    ``shared_basis``
        Output filters sharing one basis per block (1..65535; 1, the
        default, gives every filter its own). Filters are taken in groups of
        ``shared_basis`` consecutive output channels (the last group of a
        layer may be smaller); a block of a group is the rows of that row
        range in all its filters, stacked, and gets one basis and one
        exponent window (see :func:`decompose_weights`). The official preset
        has per-filter bases only and refuses any other value.
    ``preset``
        ``"sd-hw"`` or ``"official"`` (see :data:`PRESETS`).
    """

    block_rows: int = 192
    iterations: int = 30
    theta: float = 1e-3
    vector_wise: bool = None
    row_theta_factor: float = 5.0
    tie: str = "down"
    max_exponent: int = 5
    code_bits: int = 3
    tol: float = 1e-10
    group: int = 32
    preset: str = "sd-hw"
    shared_basis: int = 1

    def __post_init__(self):
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ParameterError(
                f"parameter 'preset' is {self.preset!r}, allowed values are "
                + ", ".join(map(repr, PRESETS)))
        checked = {
            "block_rows": check_range("block_rows", self.block_rows, 1, 65535),
            "iterations": check_range("iterations", self.iterations, 1, 1000),
            "theta": check_range("theta", self.theta, 0.0, 1.0, kind=float),
            "row_theta_factor": check_range("row_theta_factor", self.row_theta_factor,
                                            0.0, 1000.0, kind=float),
            "max_exponent": check_range("max_exponent", self.max_exponent, -30, 30),
            "code_bits": check_range("code_bits", self.code_bits, 1, 6),
            "tol": check_range("tol", self.tol, 0.0, 1.0, kind=float),
            "group": check_range("group", self.group, 1, 65535),
            "shared_basis": check_range("shared_basis", self.shared_basis, 1, 65535),
            "tie": check_tie(self.tie),
        }
        vector_wise = self.vector_wise
        if vector_wise is None:
            vector_wise = self.preset == "sd-hw"
        if not isinstance(vector_wise, (bool, np.bool_)):
            raise ParameterError(
                f"parameter 'vector_wise' must be True or False, got {self.vector_wise!r}")
        checked["vector_wise"] = bool(vector_wise)
        if self.preset == "official" and checked["block_rows"] != _OFFICIAL_BLOCK_LIMIT:
            raise ParameterError(
                f"parameter 'block_rows' is {checked['block_rows']}; the official preset "
                f"computes each layer's block length (official_block_rows, at most "
                f"{_OFFICIAL_BLOCK_LIMIT} but for a few row counts), so block_rows must be "
                f"{_OFFICIAL_BLOCK_LIMIT}")
        if self.preset == "official" and checked["shared_basis"] != 1:
            raise ParameterError(
                f"parameter 'shared_basis' is {checked['shared_basis']}; the official preset "
                f"gives every filter its own bases (shared_basis = 1); use the sd-hw preset "
                f"for shared bases")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def official(cls, **changes):
        """The official preset: the authors' smart_exchange.py, its defaults and semantics.

        ``changes`` set other fields, as the official code's options do
        (``iterations`` = ``decompose_iternum``, ``theta`` =
        ``decompose_threshold``, ``vector_wise`` = ``threshold_row``, ``tol``
        = ``decompose_tol``, ``max_exponent`` = ``log2(max_C)``).
        """
        return cls(preset="official", **changes)


# --------------------------------------------------------------------------
# Row layout

def layer_kind(shape):
    """``"conv3x3"``, ``"conv1x1"`` or ``"linear"`` for a weight shape, else raise."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4 and shape[2:] == (3, 3):
        kind = "conv3x3"
    elif len(shape) == 4 and shape[2:] == (1, 1):
        kind = "conv1x1"
    elif len(shape) == 2:
        kind = "linear"
    else:
        raise ParameterError(
            f"weight shape {shape} cannot be decomposed: expected a 3x3 or 1x1 conv "
            f"(M, C, k, k) or a linear (M, C) weight; other layers stay dense")
    if shape[0] < 1 or shape[1] < 1:
        raise ParameterError(f"weight shape {shape} has an empty dimension")
    return kind


def weight_to_rows(W):
    """Ce row layout of a weight: float64 ``(M, R, 3)``.

    3x3 conv ``(M, C, 3, 3)``: row ``c*3 + kernel_row`` of filter ``m`` holds
    ``W[m, c, kernel_row, :]`` (``R = 3C``). 1x1 conv ``(M, C, 1, 1)`` and
    linear ``(M, C)``: each output row is zero-padded to a multiple of 3 and
    row ``r`` holds input channels ``3r, 3r+1, 3r+2`` (``R = ceil(C/3)``).
    """
    W = np.asarray(W, dtype=np.float64)
    kind = layer_kind(W.shape)
    m, c = W.shape[:2]
    if kind == "conv3x3":
        return W.reshape(m, 3 * c, 3).copy()
    rows = -(-c // 3)
    out = np.zeros((m, rows * 3))
    out[:, :c] = W.reshape(m, c)
    return out.reshape(m, rows, 3)


def rows_to_weight(rows, shape):
    """Inverse of :func:`weight_to_rows`: the weight of ``shape`` from ``(M, R, 3)`` rows."""
    shape = tuple(int(d) for d in shape)
    kind = layer_kind(shape)
    rows = np.asarray(rows, dtype=np.float64)
    m, c = shape[:2]
    expected = (m, 3 * c if kind == "conv3x3" else -(-c // 3), 3)
    if rows.shape != expected:
        raise ParameterError(f"rows of shape {rows.shape} do not fit weight shape {shape}; "
                             f"expected {expected}")
    if kind == "conv3x3":
        return rows.reshape(shape).copy()
    return rows.reshape(m, -1)[:, :c].reshape(shape).copy()


# --------------------------------------------------------------------------
# The official code's block lengths

#: Row counts whose block length the official code takes from a fixed table
#: rather than computing it. 1638 is not a multiple of 171: the official code
#: decomposes 9 blocks and leaves the last 99 rows of each filter zero.
_OFFICIAL_FIXED_BLOCKS = {3072: 192, 1638: 171, 8364: 204}

#: Inputs of a 1x1 or linear filter that the official code pads to more rows
#: than ``ceil(C / 3)`` (its ``VEC_2_SHAPE`` table; every other entry of the
#: table equals ``ceil(C / 3)``).
_OFFICIAL_PADDED_ROWS = {4096: 1368, 2048: 684, 1280: 429}


def _prime_factors(n):
    """Prime factors of ``n >= 2`` in ascending order, with multiplicity."""
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def official_fit_rows(shape):
    """Ce rows per filter that the official code fits for a weight ``shape``.

    ``3C`` for a 3x3 conv; for 1x1 conv and linear ``ceil(C / 3)``, except
    ``C`` = 4096, 2048 and 1280, which the official code pads to 1368, 684
    and 429 rows. The extra rows are zero: they change the block length, not
    the fit. Filters of fewer than 3 rows (C <= 6) are refused: the official
    code decomposes them transposed, with a smaller basis than 3x3.
    """
    shape = tuple(int(d) for d in shape)
    kind = layer_kind(shape)
    c = shape[1]
    if kind == "conv3x3":
        return 3 * c
    rows = _OFFICIAL_PADDED_ROWS.get(c, -(-c // 3))
    if rows < 3:
        raise ParameterError(
            f"weight shape {shape}: the official preset cannot decompose a {kind} layer with "
            f"{c} inputs (fewer than 3 rows of 3): the official code factors such a filter "
            f"transposed, with a {rows}x{rows} basis, which the sd-hw format cannot hold; "
            f"use the sd-hw preset or keep the layer dense")
    return rows


def official_block_rows(shape):
    """Block length (Ce rows per basis) the official code uses for a weight ``shape``.

    With ``m`` = :func:`official_fit_rows`: ``m`` itself if ``m <= 192`` or
    ``m`` is prime; otherwise ``m`` divided by its prime factors in
    ascending order, one at a time, until the quotient is at most 192; if
    even the largest prime factor exceeds 192, that prime. Row counts 3072,
    1638 and 8364 get 192, 171 and 204 from a fixed table. The result is
    not always the largest divisor of ``m`` up to 192 (576 gives 144, not
    192), and it exceeds 192 for some ``m`` (1182 = 6 * 197 gives 197).
    """
    m = official_fit_rows(shape)
    if m in _OFFICIAL_FIXED_BLOCKS:
        return _OFFICIAL_FIXED_BLOCKS[m]
    if m <= _OFFICIAL_BLOCK_LIMIT:
        return m
    length = m
    for p in _prime_factors(m)[:-1]:
        length //= p
        if length <= _OFFICIAL_BLOCK_LIMIT:
            break
    return length


# --------------------------------------------------------------------------
# Structural sparsity

def group_prune_mask(W, fraction, *, group=32):
    """Kept-weight mask (bool, shaped like ``W``) of SmartDeal's group pruning.

    Output filters are taken in groups of ``group`` consecutive ones (the
    last group may be smaller). 3x3 conv: every (input channel, kernel row)
    row is scored by its L1 norm summed over the group and the
    ``floor(fraction * 3C)`` lowest rows are zeroed in every filter of the
    group. 1x1 conv and linear: the same with whole input channels
    (``floor(fraction * C)`` of them). Ties go to the lower index.
    """
    W = np.asarray(W, dtype=np.float64)
    kind = layer_kind(W.shape)
    _check_finite(W, "weight")
    fraction = check_range("prune", fraction, 0.0, 1.0, kind=float)
    if fraction >= 1.0:
        raise ParameterError(f"parameter 'prune' is {fraction}, allowed range is 0 to 1 "
                             f"(1 excluded)")
    group = check_range("group", group, 1, 65535)
    m, c = W.shape[:2]
    if kind == "conv3x3":
        units = np.abs(W).sum(axis=3).reshape(m, 3 * c)  # row L1 per filter
    else:
        units = np.abs(W).reshape(m, c)
    n_units = units.shape[1]
    n_pruned = math.floor(fraction * n_units)
    if n_pruned == 0:
        return np.ones(W.shape, dtype=bool)
    starts = np.arange(0, m, group)
    scores = np.add.reduceat(units, starts, axis=0)  # (n_groups, n_units)
    order = np.argsort(scores, axis=1, kind="stable")[:, :n_pruned]
    group_keep = np.ones(scores.shape, dtype=bool)
    np.put_along_axis(group_keep, order, False, axis=1)
    keep = group_keep[np.arange(m) // group]
    if kind == "conv3x3":
        return np.broadcast_to(keep.reshape(m, c, 3, 1), W.shape).copy()
    return keep.reshape(W.shape)


# --------------------------------------------------------------------------
# Quantisation and the small linear algebra, on stacks of blocks

_EXPONENT_FIELD = np.int64(0x7FF << 52)
_HALF_MANTISSA = 1 << 51
# Coefficients whose power of two is below 2**-1000 are treated as zero: this
# keeps the bit-level rounding away from subnormal numbers.
_FLOOR_BITS = np.int64((1023 - 1000) << 52)


def _quantise(C, params, out, mask):
    """Quantise ``C`` into ``out`` (same shape, float64); ``mask`` is bool scratch.

    Works on IEEE-754 bit patterns: adding half the mantissa range (minus one
    for ``tie="down"``) and dropping the mantissa is the linear-domain
    rounding with decision point ``1.5 * 2**(k-1)``. The sign bit is not
    touched by the addition (finite inputs), and zero maps to zero.
    Returns the smallest magnitude each block may keep, as float64 (N,).
    Zero entries may come out as ``-0.0``.
    """
    n = C.shape[0]
    q = out.view(np.int64)
    np.add(C.view(np.int64), _HALF_MANTISSA - (params.tie == "down"), out=q)
    np.bitwise_and(q, _EXPONENT_FIELD, out=q)  # |round_pow2(C)|, sign dropped
    np.minimum(q, np.int64((1023 + params.max_exponent) << 52), out=q)
    window = np.int64(((1 << params.code_bits) - 1) << 52)
    lowest = np.maximum(q.reshape(n, -1).max(axis=1) - window, _FLOOR_BITS)
    np.less(q, lowest[:, None, None], out=mask)
    np.putmask(q, mask, 0)
    np.copysign(out, C, out=out)
    return lowest.view(np.float64)


def quantise_blocks(C, params):
    """Quantised coefficients of a stack of blocks ``C`` (N, R, 3), float64.

    Equals ``round_pow2(C, tie=params.tie)`` clipped at ``2**max_exponent``,
    with every entry below its block's exponent window
    ``[e_max - (2**code_bits - 1), e_max]`` (and every power below
    ``2**-1000``) set to zero.
    """
    C = np.ascontiguousarray(C, dtype=np.float64)
    if C.ndim != 3:
        raise ParameterError(f"blocks must have shape (N, R, 3), got {C.shape}")
    out = np.empty_like(C)
    if C.size:
        _quantise(C, params, out, np.empty(C.shape, dtype=bool))
    out += 0.0  # -0.0 -> 0.0
    return out


def _inverse3(M):
    """Pseudo-inverse of a stack of 3x3 matrices.

    Each matrix is scaled by its largest magnitude; well-conditioned ones are
    then inverted in closed form (adjugate over determinant), the rest
    (rank-deficient or nearly so) go to :func:`numpy.linalg.pinv`, which gives
    least-squares, minimum-norm semantics.
    """
    peak = np.abs(M).max(axis=(1, 2))
    peak[peak == 0] = 1.0
    S = M / peak[:, None, None]
    a, b, c = S[:, 0, 0], S[:, 0, 1], S[:, 0, 2]
    d, e, f = S[:, 1, 0], S[:, 1, 1], S[:, 1, 2]
    g, h, i = S[:, 2, 0], S[:, 2, 1], S[:, 2, 2]
    co00 = e * i - f * h
    co01 = f * g - d * i
    co02 = d * h - e * g
    det = a * co00 + b * co01 + c * co02
    adj = np.empty_like(S)
    adj[:, 0, 0] = co00
    adj[:, 1, 0] = co01
    adj[:, 2, 0] = co02
    adj[:, 0, 1] = c * h - b * i
    adj[:, 1, 1] = a * i - c * g
    adj[:, 2, 1] = b * g - a * h
    adj[:, 0, 2] = b * f - c * e
    adj[:, 1, 2] = c * d - a * f
    adj[:, 2, 2] = a * e - b * d
    # |det| <= s1**2 * s3 and s1 <= 3 for the scaled matrix: the closed form
    # only when s3 / s1 > 1e-10 / 27, i.e. cond < ~3e11.
    good = np.abs(det) > 1e-10
    adj /= (np.where(good, det, 1.0) * peak)[:, None, None]
    bad = np.flatnonzero(~good)
    if bad.size:
        adj[bad] = np.linalg.pinv(M[bad])
    return adj


def _fit_basis(Q, A):
    """Least-squares, minimum-norm ``B`` with ``Q B ~= A`` per block: ``pinv(Q) A``.

    ``pinv(Q) = pinv(Q^T Q) Q^T`` holds for every matrix; ``Q^T Q`` of
    power-of-two coefficients is exact.
    """
    Qt = Q.transpose(0, 2, 1)
    return np.matmul(_inverse3(np.matmul(Qt, Q)), np.matmul(Qt, A))


_ONES3 = np.ones(3)


def _fit_coefficients(A, B, params, out, magnitude, mask, row_l1):
    """Least-squares ``Ce = A pinv(B)`` into ``out``, then the thresholds.

    ``magnitude``, ``mask`` (shaped like ``A``) and ``row_l1`` (N, R) are scratch.
    """
    C = np.matmul(A, _inverse3(B), out=out)
    if params.theta > 0:
        np.abs(C, out=magnitude)
        np.less(magnitude, params.theta, out=mask)
        np.putmask(C, mask, 0.0)
        if params.vector_wise:
            np.putmask(magnitude, mask, 0.0)
            np.matmul(magnitude, _ONES3, out=row_l1)
            small_rows = np.flatnonzero(row_l1 < params.row_theta_factor * params.theta)
            C.reshape(-1, 3)[small_rows] = 0.0
    return C


def _check_finite(A, what):
    if not np.all(np.isfinite(A)):
        raise SdHwError(f"{what} contains NaN or Inf")


def _unchanged(current, previous, lowest, lowest_before, tol, mask):
    """Blocks whose quantised Ce changed by at most ``tol`` (max abs difference).

    A changed entry differs by at least the smaller of the two blocks' lowest
    kept magnitudes, so the exact difference is only needed where ``tol``
    reaches that.
    """
    n = current.shape[0]
    np.not_equal(current, previous, out=mask)
    changed = mask.reshape(n, -1).any(axis=1)
    unsure = np.flatnonzero(changed & (tol >= np.minimum(lowest, lowest_before)))
    if unsure.size:
        diff = np.abs(current[unsure] - previous[unsure]).reshape(unsure.size, -1)
        changed[unsure] = diff.max(axis=1) > tol
    return ~changed


def decompose_blocks(A, params=None):
    """Decompose ``N`` independent blocks ``A`` (N, R, 3): ``A[n] ~= Ce[n] @ B[n]``.

    Rows of zeros (padding, pruned rows) stay exactly zero in Ce. Returns
    ``(Ce, B, iterations_used)``: ``Ce`` (N, R, 3) signed powers of two or
    zero, ``B`` (N, 3, 3) float64 and, per block, the number of alternating
    (B, Ce) updates made before the quantised Ce stopped changing
    (``params.iterations`` if it never did). Each block's result is the one
    it would get alone.

    With the official preset (``params.preset == "official"``) the blocks
    follow :func:`_decompose_official`; ``params.vector_wise`` then applies
    to every block (per layer, :func:`decompose_weights` applies it to 3x3
    convolutions only, as the official code does).
    """
    params = DecomposeParams() if params is None else params
    A = np.ascontiguousarray(A, dtype=np.float64)
    if A.ndim != 3 or A.shape[2] != 3:
        raise ParameterError(f"blocks must have shape (N, R, 3), got {A.shape}")
    _check_finite(A, "weight")
    n = A.shape[0]
    if params.preset == "official":
        return _decompose_official(A, params, np.full(n, params.vector_wise))
    quantised = np.zeros_like(A)
    used = np.full(n, params.iterations, dtype=np.int64)
    if n == 0 or A.shape[1] == 0:
        return quantised, np.zeros((n, 3, 3)), np.zeros(n, dtype=np.int64)

    # Working set, compacted in place: the first k entries of every buffer are
    # the blocks still iterating plus, until the next compaction, some that
    # have converged and are only carried along (``done``).
    work_a = A.copy()
    coefficients = A.copy()
    current, previous, magnitude = (np.empty_like(A) for _ in range(3))
    mask = np.empty(A.shape, dtype=bool)
    row_l1 = np.empty(A.shape[:2])
    index = np.arange(n)
    done = np.zeros(n, dtype=bool)
    lowest_before = None
    k = n
    for step in range(params.iterations):
        lowest = _quantise(coefficients[:k], params, current[:k], mask[:k])
        if step > 0:
            unchanged = _unchanged(current[:k], previous[:k], lowest, lowest_before,
                                   params.tol, mask[:k])
            hit = np.flatnonzero(unchanged & ~done)
            if hit.size:
                quantised[index[hit]] = current[hit]
                used[index[hit]] = step
                done[hit] = True
            if hit.size and done.all():
                k = 0
                break
            if done.sum() * 4 >= k:  # compact
                keep = np.flatnonzero(~done)
                k = keep.size
                for buffer in (work_a, coefficients, current):
                    buffer[:k] = buffer[keep]
                index, done, lowest = index[keep], done[keep], lowest[keep]
        basis = _fit_basis(current[:k], work_a[:k])
        _fit_coefficients(work_a[:k], basis, params, coefficients[:k], magnitude[:k], mask[:k],
                          row_l1[:k])
        current, previous = previous, current
        lowest_before = lowest

    if k:  # blocks that used every iteration: final quantisation
        last = np.flatnonzero(~done)
        _quantise(coefficients[:k], params, current[:k], mask[:k])
        quantised[index[last]] = current[last]
    quantised += 0.0  # -0.0 -> 0.0
    # Refit B to the stored coefficients, for every block at once.
    return quantised, _fit_basis(quantised, A), used


#: ``rcond`` of the official code's least squares (``decompose_rcond``).
_OFFICIAL_RCOND = 1e-10


def _round_and_clip(C, params):
    """Signed powers of two of ``C``, clipped at ``2**max_exponent``: no exponent window.

    The official code's quantisation (``nearestpow2`` and ``np.clip``). Its
    tie rule is "down"; ``params.tie`` is honoured. Powers below
    ``2**-1000`` become zero, as in :func:`quantise_blocks`.
    """
    q = np.add(C.view(np.int64), _HALF_MANTISSA - (params.tie == "down"))
    np.bitwise_and(q, _EXPONENT_FIELD, out=q)
    np.minimum(q, np.int64((1023 + params.max_exponent) << 52), out=q)
    q[q < _FLOOR_BITS] = 0
    out = q.view(np.float64)
    np.copysign(out, C, out=out)
    out += 0.0  # -0.0 -> 0.0
    return out


def _official_thresholds(C, params, row_threshold):
    """The official sparsity step, in place: rows first, then entries.

    In the blocks flagged by ``row_threshold`` (N,), rows whose L1 norm of
    the least-squares Ce is below ``row_theta_factor * theta`` become zero;
    then every entry with ``|c| < theta``. Nothing happens for ``theta = 0``.
    """
    if params.theta <= 0:
        return
    if row_threshold.any():
        small = np.abs(C).sum(axis=2) < params.row_theta_factor * params.theta
        C[small & row_threshold[:, None]] = 0.0
    C[np.abs(C) < params.theta] = 0.0


def _decompose_official(A, params, row_threshold):
    """The official code's alternating minimisation on blocks ``A`` (N, R, 3).

    Per block, as ``core_decompose`` of smart_exchange.py does: ``Ce = A``;
    for at most ``iterations - 1`` steps: ``Q = round_and_clip(Ce)``; from
    the second step on, stop when the Frobenius norm of ``Q - Q_previous``
    is at most ``tol``; ``B = lstsq(Q, A)``, ``Ce = lstsq(B, A)`` (minimum
    norm, singular values up to ``1e-10`` times the largest dropped);
    :func:`_official_thresholds`. Then ``Q = round_and_clip(Ce)`` of the
    last ``Ce`` and ``B = lstsq(Q, A)``. No exponent window.

    Returns ``(Ce, B, fits)`` like :func:`decompose_blocks`; ``fits`` is the
    number of (B, Ce) fits before the block converged (``iterations - 1``
    if it never did).
    """
    n = A.shape[0]
    if n == 0 or A.shape[1] == 0:
        return np.zeros_like(A), np.zeros((n, 3, 3)), np.zeros(n, dtype=np.int64)
    coefficients = A.copy()
    fits = np.full(n, params.iterations - 1, dtype=np.int64)
    active = np.arange(n)
    previous = None
    for step in range(params.iterations - 1):
        current = _round_and_clip(coefficients[active], params)
        if step > 0:
            change = np.sqrt(np.square(current - previous).sum(axis=(1, 2)))
            stop = change <= params.tol
            if stop.any():
                fits[active[stop]] = step
                active, current = active[~stop], current[~stop]
                if not active.size:
                    break
        a = A[active]
        basis = np.matmul(np.linalg.pinv(current, rcond=_OFFICIAL_RCOND), a)
        fitted = np.matmul(a, np.linalg.pinv(basis, rcond=_OFFICIAL_RCOND))
        _official_thresholds(fitted, params, row_threshold[active])
        coefficients[active] = fitted
        previous = current
    quantised = _round_and_clip(coefficients, params)
    basis = np.matmul(np.linalg.pinv(quantised, rcond=_OFFICIAL_RCOND), A)
    return quantised, basis, fits


# --------------------------------------------------------------------------
# Layers

@dataclass(eq=False)
class DecomposedWeight:
    """SmartDeal factors of one layer.

    ``coefficients`` (M, R, 3): signed powers of two or zero, in the row
    layout of :func:`weight_to_rows`; ``basis`` (M, n_blocks, 3, 3); row ``r``
    of channel ``m`` belongs to block ``r // block_rows`` (the last block of a
    channel may be shorter). ``shape`` is the original weight shape;
    ``iterations`` (M, n_blocks), if known, the alternating updates each block
    needed (see :func:`decompose_blocks`).

    ``exponent_window`` is False when the decomposition did not keep each
    block's exponents within the ``2**code_bits`` values the hardware stores
    (the official preset); :func:`exponent_window_report` then lists the
    blocks that exceed it. ``skipped_rows``: rows at the end of every filter
    that the official block split leaves undecomposed (zero coefficients,
    zero basis); 0 except for the row counts of its fixed table (1638 rows:
    the last 99).

    ``shared_basis``: output channels per basis group (at most ``M``; 1 =
    per-filter bases). The channels ``g * shared_basis ...`` of group ``g``
    (the last group may have fewer) hold the same basis per block in
    ``basis``, and their blocks were decomposed as one block, with one
    exponent window.
    """

    shape: tuple
    coefficients: np.ndarray
    basis: np.ndarray
    block_rows: int
    iterations: np.ndarray = None
    exponent_window: bool = True
    skipped_rows: int = 0
    shared_basis: int = 1

    @property
    def out_channels(self):
        return self.coefficients.shape[0]

    @property
    def rows(self):
        return self.coefficients.shape[1]

    @property
    def n_blocks(self):
        return self.basis.shape[1]

    @property
    def basis_groups(self):
        """Number of basis groups: ``ceil(M / shared_basis)``."""
        return -(-self.out_channels // self.shared_basis)

    def group_basis(self):
        """One basis per (group, block): ``(basis_groups, n_blocks, 3, 3)``,
        the basis of each group's first channel."""
        return self.basis[::self.shared_basis]

    def block_of_row(self):
        """Block index of every Ce row, shape ``(R,)``."""
        return np.arange(self.rows) // self.block_rows

    def row_block(self, r):
        """Block of Ce row ``r``."""
        return r // self.block_rows

    def block_slice(self, b):
        """Rows of block ``b`` of every channel."""
        return slice(b * self.block_rows, min((b + 1) * self.block_rows, self.rows))

    def reconstructed_rows(self):
        """``Ce . B`` per block, shape (M, R, 3)."""
        m, rows = self.out_channels, self.rows
        padded = np.zeros((m, self.n_blocks * self.block_rows, 3))
        padded[:, :rows] = self.coefficients
        blocks = padded.reshape(m, self.n_blocks, self.block_rows, 3)
        return np.matmul(blocks, self.basis).reshape(m, -1, 3)[:, :rows]

    def reconstruct(self):
        """The float weight ``Ce . B`` in the original shape."""
        return rows_to_weight(self.reconstructed_rows(), self.shape)

    def zero_fraction(self):
        """Fractions of zero Ce entries and of all-zero Ce rows."""
        zero = self.coefficients == 0
        return float(zero.mean()), float(zero.all(axis=2).mean())

    def exponent_range(self):
        """Smallest and largest exponent of every block: two int arrays (M, n_blocks).

        A block without nonzero coefficients has ``e_min = 0`` and
        ``e_max = -1`` (a span ``e_max - e_min + 1`` of 0).
        """
        ce = np.asarray(self.coefficients, dtype=np.float64)
        m, rows, _ = ce.shape
        present = ce != 0
        exp = np.frexp(ce)[1].astype(np.int64) - 1  # |c| == 2**exp where present
        starts = np.arange(0, rows, self.block_rows)
        big = np.iinfo(np.int64).max
        low = np.minimum.reduceat(np.where(present, exp, big).min(axis=2), starts, axis=1)
        high = np.maximum.reduceat(np.where(present, exp, -big).max(axis=2), starts, axis=1)
        empty = low == big
        low[empty], high[empty] = 0, -1
        return low, high


@dataclass(frozen=True)
class WindowExcess:
    """A block whose exponents span more than its exponent window.

    ``layer``, ``filter`` (output channel) and ``block`` locate it; its
    nonzero coefficients have exponents ``e_min .. e_max``; ``window`` =
    ``2**code_bits`` is what the hardware stores per block.
    """

    layer: str
    filter: int
    block: int
    e_min: int
    e_max: int
    window: int

    @property
    def span(self):
        return self.e_max - self.e_min + 1

    def __str__(self):
        return (f"layer {self.layer!r}, filter {self.filter}, block {self.block}: exponents "
                f"2^{self.e_min} .. 2^{self.e_max} span {self.span} values, the window "
                f"holds {self.window}")


def exponent_window_report(decomposed, code_bits):
    """Blocks of ``decomposed`` (name -> :class:`DecomposedWeight`) whose
    exponents span more than ``2**code_bits`` values, as :class:`WindowExcess`
    in layer, filter, block order. Always empty for the sd-hw preset with the
    same ``code_bits``; the official preset applies no window, so its
    factors can exceed it.
    """
    code_bits = check_range("code_bits", code_bits, 1, 8)
    window = 2 ** code_bits
    report = []
    for name, factors in decomposed.items():
        low, high = factors.exponent_range()
        for f, b in zip(*np.nonzero(high - low + 1 > window)):
            report.append(WindowExcess(str(name), int(f), int(b), int(low[f, b]),
                                       int(high[f, b]), window))
    return report


@dataclass(eq=False)
class _LayerBlocks:
    """A layer's rows cut into blocks for the stacked solve.

    ``rows`` (M, R, 3); ``length`` rows per block; ``n_blocks`` =
    ``ceil(R / length)`` blocks per filter, of which the first ``solved``
    are decomposed (fewer only for the official table's 1638 rows);
    ``row_threshold``: the official preset's row threshold applies;
    ``shared``: filters per basis group (the groups' blocks stack the
    ``shared`` filters' blocks, a missing filter of the last group being
    zero rows).
    """

    rows: np.ndarray
    length: int
    n_blocks: int
    solved: int
    row_threshold: bool
    shared: int = 1

    @property
    def out_channels(self):
        return self.rows.shape[0]

    @property
    def groups(self):
        return -(-self.out_channels // self.shared)

    @property
    def stacked_length(self):
        """Rows of one solved block: ``shared * length``."""
        return self.shared * self.length

    @property
    def count(self):
        """Solved blocks: ``groups * solved``."""
        return self.groups * self.solved

    def blocks(self):
        """The solved blocks, (groups * solved, shared * length, 3).

        Block ``g * solved + b`` holds block ``b`` of filters ``g * shared``,
        ``g * shared + 1``, ... one after the other.
        """
        m, r, _ = self.rows.shape
        g, s = self.groups, self.shared
        padded = np.zeros((g * s, self.n_blocks * self.length, 3))
        padded[:m, :r] = self.rows
        blocks = padded.reshape(g, s, self.n_blocks, self.length, 3)[:, :, :self.solved]
        if s > 1:
            blocks = blocks.transpose(0, 2, 1, 3, 4)
        return blocks.reshape(-1, s * self.length, 3)

    def unstack(self, ce, basis, used):
        """Per-filter ``(Ce (M, R, 3), B (M, n_blocks, 3, 3), iterations (M, n_blocks))``
        from the solution of :meth:`blocks`; a group's basis is repeated for
        each of its filters."""
        m, r, _ = self.rows.shape
        g, s, nb, solved, length = (self.groups, self.shared, self.n_blocks, self.solved,
                                    self.length)
        ce = ce[:, :s * length].reshape(g, solved, s, length, 3)
        coefficients = np.zeros((g, s, nb, length, 3))
        coefficients[:, :, :solved] = ce.transpose(0, 2, 1, 3, 4)
        coefficients = coefficients.reshape(g * s, nb * length, 3)[:m, :r]
        layer_basis = np.zeros((g, nb, 3, 3))
        layer_basis[:, :solved] = basis.reshape(g, solved, 3, 3)
        iterations = np.zeros((g, nb), dtype=np.int64)
        iterations[:, :solved] = used.reshape(g, solved)
        if s > 1:
            layer_basis = np.repeat(layer_basis, s, axis=0)[:m]
            iterations = np.repeat(iterations, s, axis=0)[:m]
        return np.ascontiguousarray(coefficients), layer_basis, iterations


def _layer_blocks(W, prune, params):
    """Pruned rows of a layer cut into blocks (:class:`_LayerBlocks`)."""
    W = np.asarray(W, dtype=np.float64)
    kind = layer_kind(W.shape)
    _check_finite(W, "weight")
    official = params.preset == "official"
    if official:
        length = official_block_rows(W.shape)
        fit_rows = official_fit_rows(W.shape)
    if prune:
        W = np.where(group_prune_mask(W, prune, group=params.group), W, 0.0)
    rows = weight_to_rows(W)
    r = rows.shape[1]
    if not official:
        length = min(params.block_rows, r)
        n_blocks = -(-r // length)
        shared = min(params.shared_basis, rows.shape[0])
        return _LayerBlocks(rows, length, n_blocks, n_blocks, False, shared)
    n_blocks = -(-r // length)
    solved = min(n_blocks, fit_rows // length)
    return _LayerBlocks(rows, length, n_blocks, solved,
                        params.vector_wise and kind == "conv3x3")


def _solve_layers(layers, params):
    """Decompose the blocks of several layers in one stacked solve.

    Blocks shorter than the longest are zero-padded, which does not change
    their result (zero rows stay zero and add nothing to the least squares).
    Returns per layer ``(Ce (M, R, 3), B (M, n_blocks, 3, 3), iterations)``.
    """
    length = max(layer.stacked_length for layer in layers)
    counts = [layer.count for layer in layers]
    stacked = np.zeros((sum(counts), length, 3))
    flags = np.zeros(sum(counts), dtype=bool)
    start = 0
    for layer, count in zip(layers, counts):
        stacked[start:start + count, :layer.stacked_length] = layer.blocks()
        flags[start:start + count] = layer.row_threshold
        start += count
    if params.preset == "official":
        ce, basis, used = _decompose_official(stacked, params, flags)
    else:
        ce, basis, used = decompose_blocks(stacked, params)
    out = []
    start = 0
    for layer, count in zip(layers, counts):
        end = start + count
        out.append(layer.unstack(ce[start:end], basis[start:end], used[start:end]))
        start = end
    return out


def _factors(shape, layer, solution, params):
    coefficients, basis, iterations = solution
    official = params.preset == "official"
    return DecomposedWeight(
        shape=tuple(int(d) for d in shape), coefficients=coefficients, basis=basis,
        block_rows=layer.length if official else params.block_rows, iterations=iterations,
        exponent_window=not official, shared_basis=layer.shared,
        skipped_rows=max(0, layer.rows.shape[1] - layer.solved * layer.length))


def decompose_weights(weights, params=None, prune=None):
    """Decompose several layers with one stacked solve.

    ``weights`` maps names to weight arrays, ``prune`` names to pruning
    fractions (missing names: no pruning). Returns names -> :class:`DecomposedWeight`.
    Blocks shorter than the longest block are zero-padded for the stacked
    solve, which does not change their result. With the official preset,
    each layer gets the block length of :func:`official_block_rows` and the
    row threshold (``vector_wise``) applies to its 3x3 convolutions only.
    """
    params = DecomposeParams() if params is None else params
    prune = {} if prune is None else dict(prune)
    unknown = sorted(set(prune) - set(weights))
    if unknown:
        raise ParameterError(f"prune: no weight named {', '.join(map(repr, unknown))}")
    names = list(weights)
    layers = []
    for name in names:
        try:
            layers.append(_layer_blocks(weights[name], prune.get(name, 0.0), params))
        except SdHwError as error:
            raise type(error)(f"layer {name!r}: {error}") from None
    if not layers:
        return {}
    solutions = _solve_layers(layers, params)
    return {name: _factors(np.shape(weights[name]), layer, solution, params)
            for name, layer, solution in zip(names, layers, solutions)}


def decompose_weight(W, params=None, *, prune=0.0):
    """SmartDeal factors of one layer weight ``W`` (3x3 conv, 1x1 conv or linear).

    ``prune`` is the group-pruning fraction (see :func:`group_prune_mask`,
    with ``params.group``); pruned weights are zero before decomposing, so
    fully pruned Ce rows stay exactly zero.
    """
    params = DecomposeParams() if params is None else params
    layer = _layer_blocks(W, prune, params)
    return _factors(np.shape(W), layer, _solve_layers([layer], params)[0], params)
