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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sd_hw.errors import ParameterError, SdHwError
from sd_hw.network import Layer, Network


__all__ = ["DigitsSplit", "load_digits_split", "DEFAULT_MLP", "DEFAULT_CNN",
           "SPLITS", "FRACTIONS"]

SPLITS = ("train", "val", "test")
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


@dataclass(frozen=True, eq=False)
class DigitsSplit:
    """A fixed train/validation/test split. Inputs are float32 ``(N, 64)`` in
    [0, 1] (read-only arrays), labels int64 in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int = 0

    def split(self, name):
        """``(x, y)`` of split ``name`` (``train``, ``val`` or ``test``), x flat."""
        if name not in SPLITS:
            raise ParameterError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def inputs_for(self, network, split):
        """Inputs of ``split`` shaped for ``network`` (a :class:`Network` or an
        input shape): ``(N, 64)`` or ``(N, 1, 8, 8)``. Labels are ``y_<split>``."""
        x, _ = self.split(split)
        return x.reshape((len(x),) + input_shape_of(network))

    def for_network(self, network):
        """The same split with all inputs shaped for ``network``."""
        shape = input_shape_of(network)
        return DigitsSplit(
            _readonly(self.inputs_for(shape, "train")), self.y_train,
            _readonly(self.inputs_for(shape, "val")), self.y_val,
            _readonly(self.inputs_for(shape, "test")), self.y_test, seed=self.seed)


def input_shape_of(network):
    """``(64,)`` or ``(1, 8, 8)`` from a :class:`Network` or a shape; else raise."""
    shape = tuple(network.input_shape if isinstance(network, Network) else network)
    if shape not in ((64,), IMAGE_SHAPE):
        raise SdHwError(f"the 8x8 digits fit input shape (64,) or (1, 8, 8), "
                        f"not {shape}")
    return shape


def _readonly(array):
    array.flags.writeable = False
    return array


@lru_cache(maxsize=None)
def _load_raw():
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / np.float32(16.0))
    y = np.asarray(digits.target, dtype=np.int64)
    return _readonly(x), _readonly(y)


@lru_cache(maxsize=16)
def load_digits_split(seed=0):
    """The digits split with ``seed`` (the same seed gives the same split).

    Each class is shuffled on its own and cut 60/20/20, so every split keeps
    the class proportions; within a split the images are in data-set order.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"parameter 'seed' must be a non-negative integer, got {seed!r}")
    x, y = _load_raw()
    rng = np.random.default_rng(int(seed))
    parts = ([], [], [])
    for label in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(y == label))
        n_train = int(round(FRACTIONS[0] * len(members)))
        n_val = int(round(FRACTIONS[1] * len(members)))
        for part, chunk in zip(parts, np.split(members, [n_train, n_train + n_val])):
            part.append(chunk)
    indices = [np.sort(np.concatenate(part)) for part in parts]
    arrays = []
    for index in indices:
        arrays += [_readonly(x[index]), _readonly(y[index])]
    return DigitsSplit(*arrays, seed=int(seed))
