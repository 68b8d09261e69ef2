"""Float models as sd-hw reads them: one ``.npz`` file.

=====================  ====================================================
key                    content
=====================  ====================================================
``network``            the network description as a JSON string
                       (:class:`sd_hw.network.Network`)
``<layer>.weight``     float weights of each linear/conv2d layer, PyTorch
                       shape ``(out, in)`` or ``(out, in, k, k)``
``<layer>.bias``       float bias, shape ``(out,)``
``calibration``        optional: float sample inputs ``(N,) + input_shape``
                       used to choose activation scales
=====================  ====================================================

Arrays are loaded with ``allow_pickle=False``.
"""

import json
import zipfile
from dataclasses import dataclass

import numpy as np

from sd_hw.errors import SdHwError
from sd_hw.network import Network


__all__ = ["FloatModel", "load_model", "save_model", "check_params"]


@dataclass(eq=False)
class FloatModel:
    network: Network
    params: dict
    calibration: np.ndarray = None


def check_params(network, params, *, source="model"):
    """Raise unless ``params`` has a finite float weight and bias of the right
    shape for every compute layer, and nothing else."""
    expected = {}
    for layer in network.compute_layers:
        expected[f"{layer.name}.weight"] = layer.weight_shape
        expected[f"{layer.name}.bias"] = (layer.out_size,)
    for key, shape in expected.items():
        if key not in params:
            raise SdHwError(f"{source}: missing array {key!r} (shape {shape})")
        value = np.asarray(params[key])
        if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
            raise SdHwError(f"{source}: array {key!r} must be numeric, got {value.dtype}")
        if value.shape != shape:
            raise SdHwError(f"{source}: array {key!r} has shape {value.shape}, "
                            f"the network needs {shape}")
        if not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise SdHwError(f"{source}: array {key!r} contains {bad} NaN or Inf value(s)")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise SdHwError(f"{source}: array(s) {', '.join(map(repr, extra))} belong to no "
                        f"linear or conv2d layer of the network")


def load_model(path):
    source = str(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SdHwError(f"{source}: no such file") from None
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise SdHwError(f"{source}: not a readable .npz model ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SdHwError(f"{source}: not a .npz model (it holds a single array, "
                        f"not the network description and weights)")
    with archive:
        keys = set(archive.files)
        if "network" not in keys:
            raise SdHwError(f"{source}: missing the 'network' entry (the JSON network "
                            f"description)")
        try:
            text = str(archive["network"][()])
        except ValueError as error:
            raise SdHwError(f"{source}: entry 'network' is not a string ({error})") from None
        network = Network.from_json(text, source=f"{source}: network")
        params = {key: np.asarray(archive[key], dtype=np.float64)
                  for key in keys - {"network", "calibration"}}
        calibration = archive["calibration"] if "calibration" in keys else None
    check_params(network, params, source=source)
    if calibration is not None:
        calibration = check_inputs(network, calibration, source=f"{source}: calibration")
    return FloatModel(network, params, calibration)


def check_inputs(network, x, *, source):
    """Float inputs of shape ``(N,) + input_shape`` (one unbatched input is accepted)."""
    x = np.asarray(x)
    shape = tuple(network.input_shape)
    if x.shape == shape:
        x = x[None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or len(x) == 0:
        raise SdHwError(f"{source}: inputs have shape {x.shape}, the network expects "
                        f"(N, {', '.join(map(str, shape))}) with N >= 1")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise SdHwError(f"{source}: inputs must be numeric, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise SdHwError(f"{source}: inputs contain NaN or Inf")
    return x.astype(np.float64)


def save_model(path, network, params, calibration=None):
    arrays = {"network": np.array(json.dumps(network.to_dict()))}
    arrays.update({key: np.asarray(value, dtype=np.float32) for key, value in params.items()})
    if calibration is not None:
        arrays["calibration"] = np.asarray(calibration, dtype=np.float32)
    np.savez_compressed(path, **arrays)
