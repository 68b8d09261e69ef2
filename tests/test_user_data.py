"""Training and retraining on the user's own .npy arrays (sim/golden/user_data.py and the
--train-data options of `sd-hw train` and `sd-hw compress --retrain`)."""

import re

import numpy as np
import pytest

from sd_hw.errors import ParameterError, SdHwError
from sd_hw.network import Network
from sim.cli import main
from sim.golden.model_file import load_model
from sim.golden.nn import accuracy, forward
from sim.golden.user_data import training_data


NET = Network.from_dict({"input_shape": [1, 6, 6], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 1, "out_channels": 8, "kernel_size": 3,
     "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "global_avgpool2d"},
    {"type": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 8, "out_features": 3}]})


def _arrays(tmp_path, n=90, *, seed=0, **overrides):
    """Three classes of 6x6 images: horizontal stripes, vertical stripes, a flat
    grey, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.random((n, 1, 6, 6)) * 0.3
    x[y == 0, 0, ::2, :] += 1.0
    x[y == 1, 0, :, ::2] += 1.0
    x[y == 2] += 0.5
    arrays = {"x": x.astype(np.float32), "y": y.astype(np.int64)}
    arrays.update(overrides)
    paths = {}
    for key, value in arrays.items():
        paths[key] = tmp_path / f"{key}.npy"
        np.save(paths[key], value)
    return paths


def test_user_arrays_are_split_per_class_and_shaped_for_the_network(tmp_path):
    paths = _arrays(tmp_path)
    data = training_data(NET, train_data=paths["x"], train_labels=paths["y"], val_fraction=0.2)
    assert data.x_train.shape == (72, 1, 6, 6) and data.x_val.shape == (18, 1, 6, 6)
    assert np.bincount(data.y_val).tolist() == [6, 6, 6]
    assert data.x_test is None
    flat = _arrays(tmp_path, x=np.zeros((90, 36), np.float32))
    data = training_data(NET, train_data=flat["x"], train_labels=flat["y"],
                         val_data=flat["x"], val_labels=flat["y"])
    assert data.x_train.shape == (90, 1, 6, 6) and data.x_val.shape == (90, 1, 6, 6)
    again = training_data(NET, train_data=paths["x"], train_labels=paths["y"], seed=0)
    same = training_data(NET, train_data=paths["x"], train_labels=paths["y"], seed=0)
    np.testing.assert_array_equal(again.y_val, same.y_val)


@pytest.mark.parametrize("override, message", [
    ({"x": np.zeros((90, 1, 5, 6))}, r"x.npy: inputs have shape \(90, 1, 5, 6\); the network "
                                     r"takes \(N, 1, 6, 6\) or flat \(N, 36\)"),
    ({"x": np.full((90, 1, 6, 6), np.nan)}, r"x.npy: inputs contain NaN or Inf"),
    ({"x": np.array(["a"] * 90)}, r"x.npy: inputs must be numeric"),
    ({"y": np.zeros(90)}, r"y.npy: labels must be integers \(class indices\), got dtype float64"),
    ({"y": np.zeros(89, np.int64)}, r"y.npy: labels have shape \(89,\); expected \(90,\)"),
    ({"y": np.arange(90) % 4}, r"y.npy: label 3 is outside 0..2 \(the network has 3 outputs\); "
                               r"22 label\(s\) out of range"),
    ({"y": -(np.arange(90) % 2)}, r"label -1 is outside 0..2"),
])
def test_bad_user_arrays_name_the_file_and_the_rule(tmp_path, override, message):
    paths = _arrays(tmp_path, **override)
    with pytest.raises(SdHwError, match=message):
        training_data(NET, train_data=paths["x"], train_labels=paths["y"])


def test_option_combinations_are_checked(tmp_path):
    paths = _arrays(tmp_path)
    with pytest.raises(ParameterError, match="--train-data and --train-labels go together"):
        training_data(NET, train_data=paths["x"])
    with pytest.raises(ParameterError, match="either --dataset or --train-data"):
        training_data(NET, dataset="digits", train_data=paths["x"], train_labels=paths["y"])
    with pytest.raises(ParameterError, match="'val_fraction' must lie strictly between 0 and 1"):
        training_data(NET, train_data=paths["x"], train_labels=paths["y"], val_fraction=1.0)
    with pytest.raises(ParameterError, match="--val-data and --val-labels go together"):
        training_data(NET, train_data=paths["x"], train_labels=paths["y"], val_data=paths["x"])
    with pytest.raises(SdHwError, match=r"no bundled data set fits input \(1, 6, 6\).*give your "
                                        r"own data with --train-data"):
        training_data(NET)
    with pytest.raises(SdHwError, match=r"missing.npy: no such file \(training inputs\)"):
        training_data(NET, train_data=tmp_path / "missing.npy", train_labels=paths["y"])


def test_train_command_on_user_data_with_progress_on_stderr(tmp_path, capsys):
    paths = _arrays(tmp_path, 300)
    (tmp_path / "net.json").write_text(NET.to_json())
    code = main(["train", "--model", str(tmp_path / "net.json"), "--train-data", str(paths["x"]),
                 "--train-labels", str(paths["y"]), "--val-fraction", "0.2", "--epochs", "12",
                 "-o", str(tmp_path / "m.npz")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.findall(r"epoch (\d+)/12: train loss \d+\.\d+, val accuracy [01]\.\d+", err) == \
        [str(e) for e in range(1, 13)]
    match = re.search(r"float validation accuracy: (\d\.\d+)", out)
    assert match and float(match.group(1)) > 0.9          # the stripes are easy to tell apart
    model = load_model(tmp_path / "m.npz")
    assert model.network == NET and model.calibration.shape[1:] == (1, 6, 6)
    x = np.load(paths["x"])
    assert accuracy(NET, model.params, x, np.load(paths["y"])) > 0.9


def test_cli_refuses_bad_labels_in_one_line(tmp_path, capsys):
    paths = _arrays(tmp_path, y=np.arange(90) % 7)
    (tmp_path / "net.json").write_text(NET.to_json())
    code = main(["train", "--model", str(tmp_path / "net.json"), "--train-data", str(paths["x"]),
                 "--train-labels", str(paths["y"]), "-o", str(tmp_path / "m.npz")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "y.npy: label 3 is outside 0..2" in err


def test_fine_tune_starts_from_the_model_weights(tmp_path, capsys):
    paths = _arrays(tmp_path)
    (tmp_path / "net.json").write_text(NET.to_json())
    base = ["--train-data", str(paths["x"]), "--train-labels", str(paths["y"]), "--epochs", "8"]
    assert main(["train", "--model", str(tmp_path / "net.json"), *base,
                 "-o", str(tmp_path / "a.npz")]) == 0
    assert main(["train", "--model", str(tmp_path / "a.npz"), "--fine-tune", *base,
                 "--epochs", "1", "-o", str(tmp_path / "b.npz")]) == 0
    capsys.readouterr()
    a, b = load_model(tmp_path / "a.npz"), load_model(tmp_path / "b.npz")
    # One epoch of fine-tuning moves the weights a little, not back to a fresh start.
    change = np.abs(a.params["c1.weight"] - b.params["c1.weight"]).max()
    assert 0 < change < 0.5 * np.abs(a.params["c1.weight"]).max()
    assert main(["train", "--model", str(tmp_path / "net.json"), "--fine-tune", *base,
                 "-o", str(tmp_path / "c.npz")]) == 2
    assert "--fine-tune needs --model to be a model file" in capsys.readouterr().err


def test_onnx_cnn_compresses_and_retrains_on_npy_files(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from test_onnx_import import cnn_model
    model = cnn_model(7)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 3, 20, 20)).astype(np.float32)
    from sim.onnx_import import import_onnx
    onnx.save(model, str(tmp_path / "cnn.onnx"))
    imported = import_onnx(tmp_path / "cnn.onnx").model
    logits = forward(imported.network, imported.params, x)
    # Shift the last batch norm's offset so that the classes the float network
    # predicts spread out; the labels are its predictions.
    for tensor in model.graph.initializer:
        if tensor.name == "bn2_b":
            shifted = onnx.numpy_helper.to_array(tensor) - logits.mean(axis=0)
            tensor.CopyFrom(onnx.numpy_helper.from_array(shifted.astype(np.float32), "bn2_b"))
    onnx.save(model, str(tmp_path / "cnn.onnx"))
    imported = import_onnx(tmp_path / "cnn.onnx").model
    y = np.argmax(forward(imported.network, imported.params, x), axis=1)
    assert len(np.unique(y)) >= 5
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code = main(["compress", str(tmp_path / "cnn.onnx"), "-o", str(tmp_path / "cnn.sdw"),
                 "--retrain", "ste", "--epochs", "2", "--train-data", str(tmp_path / "x.npy"),
                 "--train-labels", str(tmp_path / "y.npy"), "--val-fraction", "0.25"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.findall(r"epoch (\d)/2: projected val accuracy", err) == ["1", "2"]
    assert "wrote" in out
    assert main(["evaluate", str(tmp_path / "cnn.sdw"), "--inputs", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.npy")]) == 0
    found = re.search(r"accuracy: (\d\.\d+)", capsys.readouterr().out)
    assert found and float(found.group(1)) > 0.5         # 10 classes: chance is about 0.1
