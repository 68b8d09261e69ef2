"""The compression flow: float model in, integer SmartDeal network out.

:func:`compress_model` chains the steps of :mod:`sim.compress` with optional
SmartDeal retraining; :mod:`sim.demo` runs the same steps on a bundled
model (digits or MNIST) and measures accuracy after each.
"""

from dataclasses import dataclass, field

from sd_hw.errors import SdHwError
from sim.compress import (calibrate, decompose, decomposition_notes, integerise, project,
                          project_int8, prune_masks)


__all__ = ["CompressionResult", "compress_model", "retrain", "RETRAIN_METHODS",
           "load_float_model"]

RETRAIN_METHODS = ("none", "projection", "ste")


@dataclass(eq=False)
class CompressionResult:
    params: dict            # float parameters the factors were taken from
    decomposed: dict        # layer name -> DecomposedWeight
    integer_network: object  # IntegerNetwork
    history: list = field(default_factory=list)


def load_float_model(path, *, log=None):
    """The :class:`~sim.golden.model_file.FloatModel` of ``path``: an ONNX file
    (by its ``.onnx`` suffix, :func:`sim.onnx_import.import_onnx`; its notes go
    to ``log``) or an sd-hw model ``.npz``."""
    from sim.golden.model_file import load_model
    from sim.onnx_import import import_onnx, is_onnx_path
    if not is_onnx_path(path):
        return load_model(path)
    imported = import_onnx(path)
    if log:
        for note in imported.notes:
            log(f"{path}: {note}")
    return imported.model


def retrain(network, params, data, masks, options, *, method, epochs, seed=0, log=None,
            progress=None):
    """SmartDeal retraining with the sparsity masks held fixed.

    The projection is :func:`sim.compress.project_int8`: the weights the
    integer factors stand for (int8 bases), so what is trained through and
    validated is what the accelerator computes with.

    ``projection``: train an epoch in float, project every weight onto its
    SmartDeal reconstruction, validate, repeat
    (:func:`sim.golden.train.retrain_projection`). ``ste``: train through the
    projection with a straight-through gradient, distillation from the float
    model and weight decay (:func:`sim.golden.train.retrain_ste`, its
    defaults). ``seed`` orders the mini-batches. Returns the parameters
    whose projection had the lowest validation loss (decomposing them with
    ``masks`` and ``options`` gives exactly the validated factors) and the
    per-epoch :class:`sim.golden.train.Validation`. ``progress`` gets a line
    per epoch (validation accuracy and loss).
    """
    from sim.golden.train import retrain_projection, retrain_ste

    def to_smartdeal(current):
        return project_int8(network, current, decompose(network, current, masks, options),
                            options)

    if method == "projection":
        run = retrain_projection
    elif method == "ste":
        run = retrain_ste
    else:
        raise SdHwError(f"retraining method must be one of projection, ste; got {method!r}")
    best, history = run(network, params, data, to_smartdeal, epochs=epochs, seed=seed,
                        log=progress)
    if log:
        log(f"retraining ({method}): validation accuracy per epoch "
            + " ".join(f"{v.accuracy:.3f}" for v in history))
    return best, history


def compress_model(model, options, *, retrain_method="none", epochs=10, seed=0, dataset=None,
                   log=None, data=None, progress=None):
    """Decompose (and optionally retrain) ``model``; return the integer network.

    Retraining uses ``data`` (a :class:`sim.golden.user_data.TrainingData`,
    e.g. the user's own arrays) if given, else the bundled data set named
    ``dataset`` (see :mod:`sim.golden.datasets`; by default the one whose
    images fit the network), its split with seed 0. ``progress`` gets a line
    per retraining epoch.
    """
    network, params = model.network, model.params
    if model.calibration is None:
        raise SdHwError("activation scales need calibration inputs: the model has no "
                        "'calibration' array; pass --calibration X.npy")
    masks = prune_masks(network, params, options)
    history = []
    if retrain_method != "none":
        if data is None:
            from sim.golden.user_data import training_data
            data = training_data(network, dataset=dataset)
        params, history = retrain(network, params, data, masks, options,
                                  method=retrain_method, epochs=epochs, seed=seed, log=log,
                                  progress=progress)
    decomposed = decompose(network, params, masks, options)
    if log:
        for note in decomposition_notes(decomposed, options):
            log(note)
    scales = calibrate(network, project(params, decomposed), model.calibration)
    net = integerise(network, params, decomposed, scales, options,
                     metadata={"retrain": retrain_method})
    return CompressionResult(params, decomposed, net, history)
