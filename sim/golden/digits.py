"""The bundled data set: scikit-learn's 8x8 handwritten digits (no download).

1797 grey-scale images of 8x8 pixels with values 0..16, ten classes. They
are scaled to [0, 1] (divided by 16) and split once, stratified by class and
with a fixed seed, into 60 % training, 20 % validation and 20 % test images.

Inputs are stored flat, ``(N, 64)``; :meth:`DigitsSplit.inputs_for` gives
them in the shape a network takes: ``(N, 64)`` for an MLP, ``(N, 1, 8, 8)``
for a CNN (row-major pixels, as ``load_digits().images``).

``DEFAULT_MLP`` and ``DEFAULT_CNN`` are the bundled networks; they are kept
small enough for the accelerator to run them in RTL simulation.
"""

from functools import lru_cache

import numpy as np

from sd_hw.network import Layer, Network
from .split import SPLITS, LabelledSplit, check_seed, readonly, stratified_indices


__all__ = ["DigitsSplit", "load_digits_split", "DEFAULT_MLP", "DEFAULT_CNN",
           "SPLITS", "FRACTIONS"]

FRACTIONS = (0.6, 0.2, 0.2)
IMAGE_SHAPE = (1, 8, 8)
N_CLASSES = 10


DEFAULT_MLP = Network(input_shape=(64,), layers=(
    Layer("linear", "fc1", 64, 32),
    Layer("relu", "relu1"),
    Layer("linear", "fc2", 32, 10),
))

DEFAULT_CNN = Network(input_shape=IMAGE_SHAPE, layers=(
    Layer("conv2d", "conv1", 1, 8, 3),   # 8x8x1  -> 8x8x8
    Layer("relu", "relu1"),
    Layer("maxpool2d", "pool1"),         # -> 4x4x8
    Layer("conv2d", "conv2", 8, 16, 3),  # -> 4x4x16
    Layer("relu", "relu2"),
    Layer("maxpool2d", "pool2"),         # -> 2x2x16
    Layer("flatten", "flatten"),         # -> 64
    Layer("linear", "fc", 64, 10),
))


class DigitsSplit(LabelledSplit):
    """A fixed train/validation/test split of the digits. Inputs are float32
    ``(N, 64)`` in [0, 1] (read-only arrays), labels int64 in 0..9;
    :meth:`inputs_for` shapes them ``(N, 64)`` or ``(N, 1, 8, 8)``."""

    INPUT_SHAPES = ((64,), IMAGE_SHAPE)
    DESCRIPTION = "the 8x8 digits"


def input_shape_of(network):
    """``(64,)`` or ``(1, 8, 8)`` from a :class:`Network` or a shape; else raise."""
    return DigitsSplit.input_shape_of(network)


@lru_cache(maxsize=None)
def _load_raw():
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / np.float32(16.0))
    y = np.asarray(digits.target, dtype=np.int64)
    return readonly(x), readonly(y)


@lru_cache(maxsize=16)
def load_digits_split(seed=0):
    """The digits split with ``seed`` (the same seed gives the same split).

    Each class is shuffled on its own and cut 60/20/20, so every split keeps
    the class proportions; within a split the images are in data-set order.
    """
    seed = check_seed(seed)
    x, y = _load_raw()
    rng = np.random.default_rng(seed)
    indices = stratified_indices(y, rng, lambda n: (int(round(FRACTIONS[0] * n)),
                                                    int(round(FRACTIONS[1] * n))))
    arrays = []
    for index in indices:
        arrays += [readonly(x[index]), readonly(y[index])]
    return DigitsSplit(*arrays, seed=seed)
