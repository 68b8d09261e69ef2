"""Turn a float SmartDeal network into its exact integer form.

Input: the network description, float parameters, the SmartDeal factors of
every decomposed layer (:class:`sim.golden.decompose.DecomposedWeight`) and
activation scales. Output: an :class:`sd_hw.integer_network.IntegerNetwork`
whose arithmetic the accelerator reproduces to the bit.

The scale scheme (docs/number-formats.md):

* every block's exponent base ``2**e_min`` is folded into its basis, so the
  codes of a block are offsets ``0 .. 2**code_bits - 1`` from the block's
  smallest exponent and all blocks of an output channel share one weight
  scale; one accumulator per output channel therefore sums exact integers;
* hidden layers have one weight scale per output channel; the final layer
  has one per layer, so its int32 accumulators (the logits) are comparable
  across classes;
* with shared bases (``shared_basis`` G > 1) the exponent base of a block is
  the one of the whole group's block and hidden layers have one scale per
  group of G channels, so the G channels of a group get bit-identical
  int8 bases (the hardware computes ``z = B_int x`` once for the group);
* activations have one scale per tensor, calibrated on sample inputs.
"""

import numpy as np

from sd_hw.errors import SdHwError
from sd_hw.integer_network import (DecomposedWeights, DenseWeights, IntegerLayer,
                                   IntegerNetwork, MULTIPLIER_BITS, ACTIVATION_MAX)


__all__ = ["integerise_decomposed", "integerise_dense", "requantisation",
           "build_integer_network", "accumulator_bound"]

_BASIS_MAX = 127
_SHIFT_MAX = 62


def _channel_scale(magnitudes, per_layer):
    """Weight scale per output channel from each channel's largest magnitude."""
    peak = magnitudes.max() if per_layer else magnitudes
    scale = np.where(peak > 0, peak / _BASIS_MAX, 1.0)
    return np.broadcast_to(scale, magnitudes.shape).astype(np.float64)


#: code_bits the hardware accepts (sd_hw.config.AcceleratorConfig).
_MAX_CODE_BITS = 6


def _check_window(decomposed, code_bits, layer):
    """Refuse factors decomposed without an exponent window that exceed it.

    Dropping their coefficients below the window would silently change the
    decomposition (the official preset fits B to every coefficient it
    keeps), so the message names the worst block and the ``code_bits``
    that holds every block.
    """
    low, high = decomposed.exponent_range()
    span = high - low + 1
    window = 2 ** code_bits
    over = span > window
    if not over.any():
        return
    f, b = np.unravel_index(int(np.argmax(span)), span.shape)
    worst = int(span[f, b])
    need = (worst - 1).bit_length()
    where = f"layer {layer!r}: " if layer is not None else ""
    if need <= _MAX_CODE_BITS:
        fix = f"use code_bits = {need} (sd-hw compress --code-bits {need})"
    else:
        fix = (f"no code_bits up to {_MAX_CODE_BITS} holds it; use the sd-hw preset "
               f"(sd-hw compress --preset sd-hw), which fits B to windowed coefficients")
    raise SdHwError(
        f"{where}{int(over.sum())} block(s) span more exponents than the window of {window} "
        f"(code_bits = {code_bits}); worst: filter {f}, block {b}, 2^{int(low[f, b])} .. "
        f"2^{int(high[f, b])}, {worst} values. The factors were decomposed without an "
        f"exponent window (official preset) and dropping coefficients would change them: "
        f"{fix}")


def integerise_decomposed(decomposed, *, code_bits, per_layer_scale=False, layer=None):
    """Integer SmartDeal factors of one layer.

    Returns ``(DecomposedWeights, weight_scale)`` with ``weight_scale`` of
    shape ``(M,)``. Factors with shared bases (``decomposed.shared_basis``
    G > 1) get one exponent base per (group, block) and, unless
    ``per_layer_scale``, one scale per group of G channels: the int8 bases
    of a group's channels are identical (``shared_basis`` of the result is
    ``min(G, M)``). Coefficients below the block's exponent window (none,
    if the decomposition used the same ``code_bits``) are dropped, except
    for factors decomposed without a window (``decomposed.exponent_window``
    False, the official preset): a block of those whose exponents span more
    than ``2**code_bits`` values is refused with an :class:`SdHwError`
    naming ``layer``, the block and the ``code_bits`` that would hold it.
    """
    if not getattr(decomposed, "exponent_window", True):
        _check_window(decomposed, code_bits, layer)
    ce = np.asarray(decomposed.coefficients, dtype=np.float64)
    basis = np.asarray(decomposed.basis, dtype=np.float64)
    block_rows = decomposed.block_rows
    m, rows, _ = ce.shape
    shared = _shared_basis(decomposed, basis, layer)
    n_blocks = basis.shape[1]
    present = ce != 0
    mantissa, exp = np.frexp(ce)
    if np.any(present & (np.abs(mantissa) != 0.5)):
        raise SdHwError("integerise: coefficients must be signed powers of two")
    exp = exp.astype(np.int64) - 1  # |c| == 2**exp
    block = np.arange(rows) // block_rows

    # Largest exponent per (group, block), the same for every channel of a
    # group; blocks empty in the whole group get 0.
    lowest = np.iinfo(np.int64).min
    row_max = np.where(present, exp, lowest).max(axis=2)
    e_max = np.maximum.reduceat(row_max, np.arange(0, rows, block_rows), axis=1)
    if shared > 1:
        group_max = np.maximum.reduceat(e_max, np.arange(0, m, shared), axis=0)
        e_max = np.repeat(group_max, shared, axis=0)[:m]
    empty = e_max == lowest
    e_max[empty] = 0
    e_min = e_max - (2 ** code_bits - 1)
    offset = exp - e_min[:, block][:, :, None]
    present &= offset >= 0
    offset = np.where(present, offset, 0)

    folded = basis * np.exp2(e_min)[:, :, None, None]
    folded[empty] = 0.0
    peak = np.abs(folded).reshape(m, -1).max(axis=1)
    if shared > 1 and not per_layer_scale:
        peak = np.repeat(np.maximum.reduceat(peak, np.arange(0, m, shared)), shared)[:m]
    scale = _channel_scale(peak, per_layer_scale)
    basis_int = np.clip(np.rint(folded / scale[:, None, None, None]), -128, 127)
    weights = DecomposedWeights(
        present=present,
        negative=present & (ce < 0),
        exponent=offset.astype(np.uint8),
        basis=basis_int.astype(np.int8),
        block_rows=block_rows,
        shared_basis=shared)
    return weights, scale


def _shared_basis(decomposed, basis, layer):
    """Channels per basis group of ``decomposed`` (1..M), after checking that
    the channels of every group hold the same bases."""
    m = basis.shape[0]
    shared = min(int(getattr(decomposed, "shared_basis", 1)), m)
    if shared > 1:
        first = np.repeat(basis[::shared], shared, axis=0)[:m]
        differ = np.flatnonzero(np.any(first != basis, axis=(1, 2, 3)))
        if differ.size:
            where = f"layer {layer!r}: " if layer is not None else ""
            channel = int(differ[0])
            raise SdHwError(
                f"{where}shared_basis is {shared}, but channel {channel} has other bases than "
                f"channel {channel // shared * shared}, the first of its group")
    return shared


def integerise_dense(weight, *, per_layer_scale=False):
    """int8 weights with one scale per output channel (or per layer)."""
    weight = np.asarray(weight, dtype=np.float64)
    peak = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    scale = _channel_scale(peak, per_layer_scale)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    q = np.clip(np.rint(weight / scale.reshape(shape)), -128, 127).astype(np.int8)
    return DenseWeights(q), scale


def requantisation(real_multiplier, *, layer):
    """Fixed-point ``(multiplier, shift)`` with ``multiplier * 2**-shift ~= real``.

    ``multiplier`` lies in ``[2**(MULTIPLIER_BITS-1), 2**MULTIPLIER_BITS)``
    (or is smaller when ``shift`` saturates at 62 for tiny multipliers).
    """
    real = np.asarray(real_multiplier, dtype=np.float64)
    if np.any(~np.isfinite(real)) or np.any(real <= 0):
        raise SdHwError(f"layer {layer!r}: requantisation multiplier must be a positive "
                        f"finite number")
    fraction, exp = np.frexp(real)  # real = fraction * 2**exp, fraction in [0.5, 1)
    mult = np.rint(fraction * 2.0 ** MULTIPLIER_BITS).astype(np.int64)
    carry = mult == 2 ** MULTIPLIER_BITS
    mult[carry] //= 2
    exp = exp + carry
    shift = MULTIPLIER_BITS - exp
    if np.any(shift < 1):
        raise SdHwError(
            f"layer {layer!r}: requantisation multiplier {real.max():.4g} is too large "
            f"(at most {2.0 ** (MULTIPLIER_BITS - 1):.0f} is representable); "
            f"the activation scales are inconsistent")
    tiny = shift > _SHIFT_MAX
    mult[tiny] = np.rint(real[tiny] * 2.0 ** _SHIFT_MAX).astype(np.int64)
    shift = np.minimum(shift, _SHIFT_MAX)
    return mult.astype(np.int32), shift.astype(np.uint8)


def accumulator_bound(weights_int, bias_int):
    """Largest |accumulator| any int8 input can produce, per output channel."""
    flat = np.abs(np.asarray(weights_int, dtype=np.int64)).reshape(weights_int.shape[0], -1)
    return flat.sum(axis=1) * 128 + np.abs(np.asarray(bias_int, dtype=np.int64))


def build_integer_network(network, params, decomposed, activation_scales, *,
                          code_bits=3, block_rows=192, accumulator_bits=32,
                          rebuild=None, metadata=None):
    """Assemble the :class:`IntegerNetwork`.

    ``decomposed`` maps layer names to SmartDeal factors; compute layers not
    in it stay dense int8. ``activation_scales`` maps each compute layer name
    to the scale of its input tensor; ``activation_scales["<input>"]`` is
    unused (the first compute layer's scale is the network input scale).
    ``rebuild(weights, shape)`` returns the integer weights of a decomposed
    layer in PyTorch's shape; it is used to check the accumulator bound.
    """
    compute = network.compute_layers
    layers = {}
    for position, layer in enumerate(compute):
        final = position == len(compute) - 1
        weight = params[f"{layer.name}.weight"]
        bias = np.asarray(params[f"{layer.name}.bias"], dtype=np.float64)
        if layer.name in decomposed:
            weights, scale = integerise_decomposed(
                decomposed[layer.name], code_bits=code_bits, per_layer_scale=final,
                layer=layer.name)
            weights_int = rebuild(weights, layer.weight_shape)
        else:
            weights, scale = integerise_dense(weight, per_layer_scale=final)
            weights_int = weights.weight
        s_in = float(activation_scales[layer.name])
        bias_scale = scale * s_in
        bias_int = np.rint(bias / bias_scale)
        limit = 2 ** (accumulator_bits - 1) - 1
        if np.any(np.abs(bias_int) > limit):
            raise SdHwError(f"layer {layer.name!r}: bias does not fit the "
                            f"{accumulator_bits}-bit accumulator")
        bound = accumulator_bound(weights_int, bias_int)
        if np.any(bound > limit):
            worst = int(np.argmax(bound))
            need = int(bound[worst]).bit_length() + 1
            raise SdHwError(
                f"layer {layer.name!r}: output channel {worst} can reach |acc| = "
                f"{int(bound[worst])}, which needs a {need}-bit accumulator; "
                f"the limit is accumulator_bits = {accumulator_bits}; to fit: "
                f"sd-hw compress --accumulator-bits {need}")
        if final:
            mult = np.zeros(layer.out_size, np.int32)
            shift = np.zeros(layer.out_size, np.uint8)
            s_out = 0.0
        else:
            s_out = float(activation_scales[compute[position + 1].name])
            mult, shift = requantisation(scale * s_in / s_out, layer=layer.name)
        layers[layer.name] = IntegerLayer(
            name=layer.name, weights=weights, bias=bias_int.astype(np.int32),
            weight_scale=scale, multiplier=mult, shift=shift,
            input_scale=s_in, output_scale=s_out, final=final)
    return IntegerNetwork(
        network=network, layers=layers, input_scale=float(activation_scales[compute[0].name]),
        code_bits=code_bits, block_rows=block_rows, accumulator_bits=accumulator_bits,
        metadata=dict(metadata or {}))


def activation_scale(samples):
    """Symmetric int8 scale that covers the largest magnitude seen."""
    peak = float(np.max(np.abs(samples))) if np.size(samples) else 0.0
    return peak / ACTIVATION_MAX if peak > 0 else 1.0
