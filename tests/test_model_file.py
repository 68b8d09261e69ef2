"""Float model files: round trip and a clear error for each bad input."""

import json

import numpy as np
import pytest

from sd_hw.errors import SdHwError
from sd_hw.network import Network
from sim.golden.model_file import load_model, save_model

NETWORK = Network.from_dict({"input_shape": [6], "layers": [
    {"type": "linear", "name": "fc", "in_features": 6, "out_features": 2}]})


def good_params():
    return {"fc.weight": np.arange(12, dtype=np.float32).reshape(2, 6) / 10,
            "fc.bias": np.array([0.5, -0.5], np.float32)}


def test_round_trip(tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, NETWORK, good_params(), calibration=np.ones((3, 6)))
    model = load_model(path)
    assert model.network == NETWORK
    np.testing.assert_array_equal(model.params["fc.weight"], good_params()["fc.weight"])
    assert model.calibration.shape == (3, 6)


def write(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update({"fc.weight": np.full((2, 6), np.nan)}),
     r"array 'fc.weight' contains 12 NaN or Inf value\(s\)"),
    (lambda p: p.update({"fc.bias": np.array([np.inf, 0.0])}),
     r"array 'fc.bias' contains 1 NaN or Inf"),
    (lambda p: p.pop("fc.bias"), r"missing array 'fc.bias' \(shape \(2,\)\)"),
    (lambda p: p.update({"fc.weight": np.zeros((6, 2))}),
     r"array 'fc.weight' has shape \(6, 2\), the network needs \(2, 6\)"),
    (lambda p: p.update({"fc2.weight": np.zeros(3)}),
     r"array\(s\) 'fc2.weight' belong to no linear or conv2d layer"),
])
def test_bad_arrays_are_named(tmp_path, edit, message):
    params = good_params()
    edit(params)
    path = write(tmp_path, network=np.array(NETWORK.to_json()), **params)
    with pytest.raises(SdHwError, match=message):
        load_model(path)


def test_bad_files(tmp_path):
    with pytest.raises(SdHwError, match="no such file"):
        load_model(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(SdHwError, match="not a readable .npz model"):
        load_model(junk)
    with pytest.raises(SdHwError, match="missing the 'network' entry"):
        load_model(write(tmp_path, **good_params()))
    bad_net = json.dumps({"input_shape": [6], "layers": [{"type": "lstm"}]})
    with pytest.raises(SdHwError, match="unsupported layer type 'lstm'"):
        load_model(write(tmp_path, network=np.array(bad_net), **good_params()))
    with pytest.raises(SdHwError, match=r"calibration: inputs have shape \(3, 5\)"):
        load_model(write(tmp_path, network=np.array(NETWORK.to_json()),
                         calibration=np.ones((3, 5)), **good_params()))
