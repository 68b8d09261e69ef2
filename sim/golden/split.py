"""A fixed train/validation/test split of a labelled image data set.

:class:`LabelledSplit` is what training and retraining read
(``x_train, y_train, x_val, y_val, x_test, y_test``); each bundled data set
(:mod:`sim.golden.digits`, :mod:`sim.golden.mnist`) subclasses it with the
input shapes its images fit. :func:`stratified_indices` cuts every class on
its own, so each split keeps the class proportions.
"""

from dataclasses import dataclass

import numpy as np

from sd_hw.errors import ParameterError, SdHwError
from sd_hw.network import Network


__all__ = ["LabelledSplit", "SPLITS", "stratified_indices", "check_seed", "readonly"]

SPLITS = ("train", "val", "test")


def readonly(array):
    array.flags.writeable = False
    return array


def check_seed(seed):
    """``seed`` as an int, or :class:`ParameterError` naming the parameter."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"parameter 'seed' must be a non-negative integer, got {seed!r}")
    return int(seed)


def stratified_indices(y, rng, counts):
    """Indices of ``y`` cut per class: each class is shuffled with ``rng`` and
    cut into consecutive parts of ``counts(n_members)`` images (a tuple, one
    entry per part but the last, which takes the rest). Returns one sorted
    index array per part, so within a part the images are in data-set order."""
    parts = None
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cuts = np.cumsum(counts(len(members)))
        chunks = np.split(members, cuts)
        parts = [[] for _ in chunks] if parts is None else parts
        for part, chunk in zip(parts, chunks):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]


@dataclass(frozen=True, eq=False)
class LabelledSplit:
    """A fixed train/validation/test split. Inputs are float32, flat
    ``(N, pixels)`` in [0, 1] (read-only arrays), labels int64 class indices.

    Subclasses set ``INPUT_SHAPES`` (the network input shapes the images
    fit, the flat one first) and ``DESCRIPTION`` (for error messages).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int = 0

    INPUT_SHAPES = ()
    DESCRIPTION = "the data set"

    def split(self, name):
        """``(x, y)`` of split ``name`` (``train``, ``val`` or ``test``), x flat."""
        if name not in SPLITS:
            raise ParameterError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    @classmethod
    def input_shape_of(cls, network):
        """The input shape of ``network`` (a :class:`Network` or a shape) if
        the images fit it; else raise :class:`SdHwError`."""
        shape = tuple(network.input_shape if isinstance(network, Network) else network)
        if shape not in cls.INPUT_SHAPES:
            allowed = " or ".join(map(str, cls.INPUT_SHAPES))
            raise SdHwError(f"{cls.DESCRIPTION} fit input shape {allowed}, not {shape}")
        return shape

    def inputs_for(self, network, split):
        """Inputs of ``split`` shaped for ``network`` (a :class:`Network` or an
        input shape). Labels are ``y_<split>``."""
        x, _ = self.split(split)
        return x.reshape((len(x),) + self.input_shape_of(network))

    def for_network(self, network):
        """The same split with all inputs shaped for ``network``."""
        shape = self.input_shape_of(network)
        return type(self)(
            readonly(self.inputs_for(shape, "train")), self.y_train,
            readonly(self.inputs_for(shape, "val")), self.y_val,
            readonly(self.inputs_for(shape, "test")), self.y_test, seed=self.seed)
