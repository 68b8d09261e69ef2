"""Labelled training data for a network: the user's own arrays or a bundled data set.

:func:`training_data` is the one path ``sd-hw train`` and ``sd-hw compress
--retrain`` take. Given ``.npy`` files (``--train-data X.npy --train-labels
y.npy``, and ``--val-data``/``--val-labels`` or ``--val-fraction``) it checks
them against the network; given a bundled data set name (``--dataset digits``
or ``mnist``) it takes that set's fixed split. Either way the result is a
:class:`TrainingData`: inputs shaped ``(N,) + network.input_shape``, int64
labels ``0 .. classes - 1``, what :mod:`sim.golden.train` reads.

Rules for the user's arrays:

* inputs are numeric and finite, shaped ``(N,) + input_shape`` or
  ``(N, prod(input_shape))`` (flat rows are reshaped in C, H, W order);
* labels are integers, shaped ``(N,)``, from 0 to the network's number of
  outputs minus one (the network's output must be flat);
* without validation files, a fraction (default 0.2) of the training
  inputs is held out, cut per class with the seed
  (:func:`sim.golden.split.stratified_indices`).
"""

import math
from dataclasses import dataclass

import numpy as np

from sd_hw.errors import ParameterError, SdHwError
from .split import readonly, stratified_indices


__all__ = ["TrainingData", "training_data", "check_labelled", "DEFAULT_VAL_FRACTION"]

DEFAULT_VAL_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Training and validation sets (and a test set for bundled data)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    description: str
    x_test: np.ndarray = None
    y_test: np.ndarray = None


def _load(path, what):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SdHwError(f"{path}: no such file ({what})") from None
    except (ValueError, OSError, EOFError) as error:
        raise SdHwError(f"{path}: not a readable .npy array ({what}): {error}") from None


def _classes(network):
    out = tuple(network.output_shape)
    if len(out) != 1:
        raise SdHwError(f"training needs a network whose output is (classes,), this one's is "
                        f"{out}")
    return out[0]


def check_labelled(network, x, y, *, source_x, source_y):
    """``(x, y)`` as float64 inputs of ``network`` and int64 labels, or raise
    :class:`SdHwError` naming the file (``source_x``/``source_y``) and the rule."""
    shape = tuple(network.input_shape)
    x = np.asarray(x)
    y = np.asarray(y)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise SdHwError(f"{source_x}: inputs must be numeric, got dtype {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise SdHwError(f"{source_x}: no inputs (shape {x.shape})")
    flat = (len(x), math.prod(shape))
    if x.shape[1:] != shape and x.shape != flat:
        raise SdHwError(f"{source_x}: inputs have shape {x.shape}; the network takes "
                        f"(N, {', '.join(map(str, shape))}) or flat (N, {flat[1]})")
    if not np.all(np.isfinite(x)):
        raise SdHwError(f"{source_x}: inputs contain NaN or Inf")
    if not np.issubdtype(y.dtype, np.integer):
        raise SdHwError(f"{source_y}: labels must be integers (class indices), got dtype "
                        f"{y.dtype}")
    if y.shape != (len(x),):
        raise SdHwError(f"{source_y}: labels have shape {y.shape}; expected ({len(x)},), one "
                        f"per input of {source_x}")
    classes = _classes(network)
    if y.min() < 0 or y.max() >= classes:
        bad = y[(y < 0) | (y >= classes)]
        raise SdHwError(f"{source_y}: label {int(bad[0])} is outside 0..{classes - 1} (the "
                        f"network has {classes} outputs); {len(bad)} label(s) out of range")
    return x.reshape((len(x),) + shape).astype(np.float64), y.astype(np.int64)


def _bundled(network, name, seed):
    from .datasets import dataset_for
    try:
        chosen = dataset_for(network, name)
    except SdHwError as error:
        raise SdHwError(f"{error}; give your own data with --train-data X.npy "
                        f"--train-labels y.npy") from None
    split = chosen.load(seed=seed).for_network(network)
    return TrainingData(split.x_train, split.y_train, split.x_val, split.y_val,
                        f"bundled data set {chosen.name!r} ({chosen.description})",
                        split.x_test, split.y_test)


def training_data(network, *, dataset=None, train_data=None, train_labels=None, val_data=None,
                  val_labels=None, val_fraction=None, seed=0):
    """The :class:`TrainingData` for ``network``: from the ``.npy`` files
    ``train_data``/``train_labels`` (validation from ``val_data``/``val_labels``
    or the held-out ``val_fraction``), else the bundled data set ``dataset``
    (by default the first whose images fit the network)."""
    if (train_data is None) != (train_labels is None):
        raise ParameterError("--train-data and --train-labels go together: give both")
    if (val_data is None) != (val_labels is None):
        raise ParameterError("--val-data and --val-labels go together: give both")
    if train_data is None:
        if val_data is not None or val_fraction is not None:
            raise ParameterError("--val-data/--val-labels/--val-fraction need --train-data "
                                 "and --train-labels")
        return _bundled(network, dataset, seed)
    if dataset is not None:
        raise ParameterError("give either --dataset or --train-data/--train-labels, not both")
    if val_data is not None and val_fraction is not None:
        raise ParameterError("give either --val-data/--val-labels or --val-fraction, not both")
    x, y = check_labelled(network, _load(train_data, "training inputs"),
                          _load(train_labels, "training labels"),
                          source_x=train_data, source_y=train_labels)
    if val_data is not None:
        x_val, y_val = check_labelled(network, _load(val_data, "validation inputs"),
                                      _load(val_labels, "validation labels"),
                                      source_x=val_data, source_y=val_labels)
        description = f"{train_data} ({len(x)} inputs), validation {val_data} ({len(x_val)})"
    else:
        fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        if isinstance(fraction, bool) or not 0.0 < fraction < 1.0:
            raise ParameterError(f"parameter 'val_fraction' must lie strictly between 0 and 1, "
                                 f"got {fraction!r}")
        rng = np.random.default_rng(seed)
        train_index, val_index = stratified_indices(
            y, rng, lambda n: (n - int(round(n * fraction)),))
        if len(train_index) == 0 or len(val_index) == 0:
            raise SdHwError(f"{train_data}: {len(x)} input(s) are too few to hold out a "
                            f"validation fraction of {fraction}; give --val-data/--val-labels")
        x, y, x_val, y_val = x[train_index], y[train_index], x[val_index], y[val_index]
        description = (f"{train_data} ({len(x)} for training, {len(x_val)} held out for "
                       f"validation)")
    return TrainingData(readonly(x), readonly(y), readonly(x_val), readonly(y_val), description)
