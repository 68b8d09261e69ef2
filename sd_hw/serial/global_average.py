"""Global average pooling on the element-serial core, as an operation of its own.

A global average pooling of a ``C x H x W`` int8 tensor gives, per channel, the mean
of its ``n = H * W`` values rounded half up: ``(2 * T + n) // (2 * n)`` for the sum
``T`` (docs/model-format.md, the golden model's definition). The core runs it as a
linear operation over the ``C * n`` inputs whose output channel ``c`` has the weight
``w`` on channel ``c``'s inputs and 0 elsewhere: its lanes sum ``w * T``, the output
unit adds the bias ``b`` and requantises with a multiplier ``M`` and a shift ``s``
(``(acc * M + 2**(s - 1)) >> s``), a fixed-point multiplication by ``1 / (w * n)``.
:func:`average_parameters` finds ``w``, ``b``, ``M`` and ``s`` that give the exact
mean for every sum a channel can have, ``-128 * n .. 127 * n``, checking each one;
for a power-of-two ``n`` that is ``w = 1, b = 0, M = 2**14, s = 14 + log2(n)``.
Other sizes are exact where the 15-bit multiplier is fine enough (every ``n`` up to
256, and most larger ones); the others are refused.

The operation's weights are SmartDeal factors like any layer's: one block whose basis
is ``w`` times the identity and, in Ce row ``r`` (inputs ``3r .. 3r + 2``), a
coefficient ``+2**0`` in each column whose input belongs to the channel.
"""

import numpy as np

from ..errors import SdHwError
from ..integer_network import (ACTIVATION_MAX, ACTIVATION_MIN, MULTIPLIER_BITS,
                               DecomposedWeights, IntegerLayer)


__all__ = ["average_parameters", "average_layer", "MAX_WEIGHT"]

#: The largest weight ``w`` tried (the basis is ``w`` times the identity).
MAX_WEIGHT = 7
# Requantisation shifts the output unit applies (param_layout's 6-bit field).
_SHIFTS = range(1, 63)


def _exact(n, weight, bias, multiplier, shift, sums, mean):
    acc = weight * sums + bias
    got = np.clip((acc * multiplier + (1 << (shift - 1))) >> shift,
                  ACTIVATION_MIN, ACTIVATION_MAX)
    return np.array_equal(got, mean)


def average_parameters(n):
    """``(weight, bias, multiplier, shift)`` whose requantisation of ``weight * T + bias``
    is the mean of ``n`` int8 values rounded half up, for every sum ``T`` of them; None
    if there is none (with ``weight`` up to :data:`MAX_WEIGHT`)."""
    if n < 1:
        raise SdHwError(f"an average over {n} values is not defined")
    sums = np.arange(ACTIVATION_MIN * n, ACTIVATION_MAX * n + 1, dtype=np.int64)
    mean = (2 * sums + n) // (2 * n)
    # The sums of largest magnitude are where an inexact multiplier shows first.
    edge = np.concatenate([sums[:4 * n], sums[-4 * n:]])
    edge_mean = (2 * edge + n) // (2 * n)
    limit = 1 << MULTIPLIER_BITS
    for weight in range(1, MAX_WEIGHT + 1):
        divisor = weight * n
        for shift in _SHIFTS:
            ideal = (1 << shift) / divisor
            if ideal < limit / 4 or ideal >= limit:
                continue
            for multiplier in sorted({int(np.floor(ideal)), int(np.ceil(ideal))}):
                if not 1 <= multiplier < limit:
                    continue
                for bias in range(-weight, weight + 1):
                    candidate = (weight, bias, multiplier, shift)
                    if (_exact(n, *candidate, edge, edge_mean)
                            and _exact(n, *candidate, sums, mean)):
                        return candidate
    return None


def average_layer(name, channels, n):
    """An :class:`~sd_hw.integer_network.IntegerLayer` averaging each of ``channels``
    groups of ``n`` consecutive inputs, for a linear operation over ``channels * n``
    inputs; refuses (:class:`~sd_hw.errors.SdHwError`, naming layer ``name``) an ``n``
    without exact parameters."""
    found = average_parameters(n)
    if found is None:
        raise SdHwError(
            f"layer {name!r} (global_avgpool2d): the element-serial core cannot average "
            f"{n} values exactly with its 15-bit requantisation multiplier; input maps of "
            f"up to 256 pixels, or a power-of-two number of pixels, are averaged exactly")
    weight, bias, multiplier, shift = found
    inputs = channels * n
    rows = -(-inputs // 3)
    index = np.arange(rows * 3).reshape(rows, 3)
    present = (index[None] // n == np.arange(channels)[:, None, None]) & (index[None] < inputs)
    zeros = np.zeros(present.shape, np.uint8)
    basis = np.broadcast_to(np.eye(3, dtype=np.int8) * weight, (channels, 1, 3, 3)).copy()
    weights = DecomposedWeights(present=present, negative=zeros.astype(bool),
                                exponent=zeros, basis=basis, block_rows=max(rows, 1))
    return IntegerLayer(name=name, weights=weights,
                        bias=np.full(channels, bias, np.int32),
                        weight_scale=np.ones(channels), input_scale=1.0, output_scale=1.0,
                        multiplier=np.full(channels, multiplier, np.int32),
                        shift=np.full(channels, shift, np.uint8))
