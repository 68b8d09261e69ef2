"""From a float model to a packed SmartDeal network.

The steps, each usable on its own:

1. :func:`prune_masks` fixes SmartDeal's group-structured sparsity per layer;
2. :func:`decompose` factors every decomposed layer into Ce and B;
   :func:`project` turns float parameters into their SmartDeal
   reconstruction, and :func:`project_int8` into the weights that the
   integer factors (int8 bases) stand for: the projection retraining uses;
3. :func:`calibrate` picks activation scales on sample inputs;
4. :func:`integerise` builds the exact integer network that the weight file
   stores and the accelerator runs.
"""

from dataclasses import dataclass, field

import numpy as np

from sd_hw.errors import ParameterError, check_range
from sim.golden.decompose import (DecomposeParams, decompose_weight, exponent_window_report,
                                  group_prune_mask)
from sim.golden.integerise import (activation_scale, build_integer_network,
                                   integerise_decomposed)
from sim.golden.nn import layer_inputs
from sim.golden.reference import rebuild_weight


__all__ = ["CompressOptions", "prune_masks", "decompose", "project", "project_int8",
           "calibrate", "integerise", "decomposition_notes"]


@dataclass(frozen=True)
class CompressOptions:
    """What to decompose and how.

    ``prune`` maps layer names to the fraction of Ce rows (3x3 conv) or
    input channels (1x1 conv, linear) removed per group of output filters;
    ``default_prune`` applies to decomposed layers not named there. Layers in
    ``dense`` keep int8 weights.
    """

    decompose: DecomposeParams = field(default_factory=DecomposeParams)
    prune: dict = field(default_factory=dict)
    default_prune: float = 0.0
    dense: frozenset = frozenset()
    accumulator_bits: int = 32

    def __post_init__(self):
        check_range("default_prune", self.default_prune, 0.0, 0.99, kind=float)
        for name, fraction in self.prune.items():
            check_range(f"prune[{name}]", fraction, 0.0, 0.99, kind=float)
        check_range("accumulator_bits", self.accumulator_bits, 16, 48)
        object.__setattr__(self, "dense", frozenset(self.dense))

    def check_layers(self, network):
        """Refuse options that name layers the network does not have."""
        names = {layer.name for layer in network.compute_layers}
        for option, given in (("prune", set(self.prune)), ("dense", set(self.dense))):
            unknown = sorted(given - names)
            if unknown:
                raise ParameterError(
                    f"{option}: no linear or conv2d layer named {', '.join(map(repr, unknown))}; "
                    f"the network has {', '.join(sorted(names))}")

    def decomposed_layers(self, network):
        return [layer for layer in network.compute_layers if layer.name not in self.dense]

    def prune_fraction(self, name):
        return self.prune.get(name, self.default_prune)


def prune_masks(network, params, options):
    """Kept-weight masks of every decomposed layer (fixed for retraining)."""
    options.check_layers(network)
    return {layer.name: group_prune_mask(params[f"{layer.name}.weight"],
                                         options.prune_fraction(layer.name),
                                         group=options.decompose.group)
            for layer in options.decomposed_layers(network)}


def decompose(network, params, masks, options):
    """SmartDeal factors of every masked layer."""
    return {name: decompose_weight(params[f"{name}.weight"] * mask, options.decompose)
            for name, mask in masks.items()}


def project(params, decomposed):
    """``params`` with each decomposed weight replaced by its reconstruction."""
    projected = dict(params)
    for name, factors in decomposed.items():
        projected[f"{name}.weight"] = factors.reconstruct()
    return projected


def project_int8(network, params, decomposed, options):
    """``params`` with each decomposed weight replaced by what its integer
    factors stand for: the int8 bases and exponent codes that
    :func:`integerise` stores, times their weight scale.

    It differs from :func:`project` by the rounding of the bases to int8,
    which matters where a block's Ce is nearly singular and its rows
    reconstruct small weights as differences of large basis entries (a
    3-row block, as a one-channel 3x3 convolution has): retraining through
    this projection sees, and selects on, the weights the accelerator uses.
    """
    projected = dict(params)
    final = network.compute_layers[-1].name
    shapes = {layer.name: layer.weight_shape for layer in network.compute_layers}
    for name, factors in decomposed.items():
        weights, scale = integerise_decomposed(factors, code_bits=options.decompose.code_bits,
                                               per_layer_scale=name == final, layer=name)
        integer = rebuild_weight(weights, shapes[name]).astype(np.float64)
        projected[f"{name}.weight"] = integer * scale.reshape((-1,) + (1,) * (integer.ndim - 1))
    return projected


def calibrate(network, params, x):
    """Input scale of every compute layer, from float activations on ``x``."""
    inputs = layer_inputs(network, params, x)
    return {layer.name: activation_scale(inputs[layer.name])
            for layer in network.compute_layers}


def integerise(network, params, decomposed, scales, options, *, metadata=None):
    """The :class:`IntegerNetwork` of the factors (see :func:`build_integer_network`).

    Its network-wide ``block_rows`` is ``options.decompose.block_rows``, or
    the longest block of a layer if that is longer (the official preset's
    block lengths are per layer and can exceed 192). Factors of the official
    preset whose blocks exceed the exponent window of ``code_bits`` are
    refused (:func:`sim.golden.integerise.integerise_decomposed`).
    """
    block_rows = max([options.decompose.block_rows]
                     + [factors.block_rows for factors in decomposed.values()])
    return build_integer_network(
        network, params, decomposed, scales,
        code_bits=options.decompose.code_bits, block_rows=block_rows,
        accumulator_bits=options.accumulator_bits, rebuild=rebuild_weight,
        metadata=metadata)


def decomposition_notes(decomposed, options):
    """Lines worth telling the user about the factors, for the log.

    The official preset: blocks whose exponents exceed the window of
    ``code_bits`` (counted per layer, with the worst block) and rows its
    block split leaves undecomposed. Empty for the sd-hw preset.
    """
    notes = []
    for name, factors in decomposed.items():
        if factors.skipped_rows:
            notes.append(f"layer {name!r}: the official block split (blocks of "
                         f"{factors.block_rows} rows) leaves the last {factors.skipped_rows} "
                         f"of {factors.rows} rows of every filter undecomposed (zero weights)")
    excess = exponent_window_report(
        {name: f for name, f in decomposed.items() if not f.exponent_window},
        options.decompose.code_bits)
    for name in dict.fromkeys(e.layer for e in excess):
        blocks = [e for e in excess if e.layer == name]
        worst = max(blocks, key=lambda e: e.span)
        notes.append(f"layer {name!r}: {len(blocks)} block(s) exceed the exponent window of "
                     f"{worst.window} (code_bits = {options.decompose.code_bits}); worst: "
                     f"filter {worst.filter}, block {worst.block}, 2^{worst.e_min} .. "
                     f"2^{worst.e_max}, {worst.span} values")
    return notes
