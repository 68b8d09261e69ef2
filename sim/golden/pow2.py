"""Signed powers of two: SmartDeal's coefficient values.

:func:`round_pow2` is the reference rounding (nearest power of two in the
linear domain, decided exactly with :func:`numpy.frexp`, never with a
rounded logarithm). For ``|x|`` in ``[2**(k-1), 2**k)`` the decision point
is ``1.5 * 2**(k-1)``: above it ``x`` rounds to ``2**k``, below it to
``2**(k-1)``; at the point itself ``tie`` decides (``"down"`` in
decomposition, ``"up"`` in training). The sign is kept and zero stays zero.
"""

import numpy as np

from sd_hw.errors import ParameterError


__all__ = ["TIES", "round_pow2", "pow2_exponent", "is_pow2", "check_tie"]

TIES = ("down", "up")


def check_tie(tie):
    """Return ``tie`` if it is ``"down"`` or ``"up"``, else raise :class:`ParameterError`."""
    if not isinstance(tie, str) or tie not in TIES:
        raise ParameterError(f"parameter 'tie' must be 'down' or 'up', got {tie!r}")
    return tie


def round_pow2(x, *, tie="down"):
    """Nearest signed power of two of every entry of ``x`` (float64 array).

    Zero stays zero (``-0.0`` stays ``-0.0``); NaN and infinities pass
    through unchanged. Subnormal inputs round exactly as normal ones do.
    A value above ``1.5 * 2**1023`` rounds up to ``2**1024``, i.e. infinity.
    """
    check_tie(tie)
    x = np.asarray(x, dtype=np.float64)
    mantissa, exponent = np.frexp(x)  # x = mantissa * 2**exponent, |mantissa| in [0.5, 1)
    magnitude = np.abs(mantissa)
    up = magnitude > 0.75 if tie == "down" else magnitude >= 0.75
    # |result| is 2**(exponent - 1) or 2**exponent; ldexp keeps the sign of the mantissa.
    half = np.copysign(np.where(up, 1.0, 0.5), mantissa)
    with np.errstate(over="ignore"):
        result = np.ldexp(half, exponent)
    # frexp(0) gives mantissa 0, frexp(nan/inf) gives the input back.
    return np.where(magnitude == 0, x, np.where(np.isfinite(x), result, x))


def is_pow2(x):
    """Boolean array: the entry is zero or an exact signed power of two."""
    x = np.asarray(x, dtype=np.float64)
    mantissa, _ = np.frexp(x)
    return (np.abs(mantissa) == 0.5) | (x == 0)


def pow2_exponent(x):
    """Integer exponent ``k`` with ``|x| == 2**k`` for every nonzero entry.

    Zero entries give 0 (test ``x != 0`` for presence). Raises
    :class:`ParameterError` if a nonzero entry is not a signed power of two.
    """
    x = np.asarray(x, dtype=np.float64)
    mantissa, exponent = np.frexp(x)
    nonzero = x != 0
    if np.any(nonzero & (np.abs(mantissa) != 0.5)):
        raise ParameterError("pow2_exponent: every nonzero entry must be a signed power of two")
    return np.where(nonzero, exponent.astype(np.int64) - 1, 0)
