"""Stride-2 and unpadded 3x3 convolutions, 2x2 and global average pooling on the
element-serial core: small networks with each layer, and one combining them, run
bit-exactly in Amaranth's simulator (and the combination on Verilator) against the
golden model (sim/golden/reference.py) and the golden counts
(sim/golden/serial_counts.py); those counts worked out by hand on tiny cases; the
global average's requantisation parameters against the golden mean for every sum.
"""

import dataclasses

import numpy as np
import pytest

from sd_hw.errors import SdHwError
from sd_hw.integer_network import DecomposedWeights, IntegerLayer, IntegerNetwork
from sd_hw.network import Network
from sd_hw.serial.compiler import compile_serial
from sd_hw.serial.global_average import average_parameters
from sim.golden.reference import _global_avgpool, requantise, run
from sim.golden.serial_counts import SerialShape, expected_serial_counters
from sim.simulate import simulate
from tests.factories import assert_passed, random_inputs
from tests.test_serial_core import serial_network, small_config


def conv(name, c_in, c_out, **options):
    return {"type": "conv2d", "name": name, "in_channels": c_in, "out_channels": c_out,
            "kernel_size": 3, **options}


def linear(name, n_in, n_out):
    return {"type": "linear", "name": name, "in_features": n_in, "out_features": n_out}


RELU, FLAT = {"type": "relu"}, {"type": "flatten"}

NETWORKS = {
    "stride2": Network.from_dict({"input_shape": [2, 7, 6], "layers": [
        conv("c1", 2, 3, stride=2), RELU, FLAT, linear("fc", 3 * 4 * 3, 3)]}),
    "padding0": Network.from_dict({"input_shape": [2, 6, 7], "layers": [
        conv("c1", 2, 3, padding=0), RELU, conv("c2", 3, 4, stride=2, padding=0), FLAT,
        linear("fc", 4 * 1 * 2, 3)]}),
    "stride2-padding0-maxpool": Network.from_dict({"input_shape": [1, 11, 10], "layers": [
        conv("c1", 1, 3, stride=2, padding=0), {"type": "maxpool2d"}, RELU, FLAT,
        linear("fc", 3 * 2 * 2, 2)]}),
    "avgpool-relu-before": Network.from_dict({"input_shape": [2, 6, 7], "layers": [
        conv("c1", 2, 3), RELU, {"type": "avgpool2d"}, FLAT, linear("fc", 3 * 3 * 3, 2)]}),
    "avgpool-relu-after": Network.from_dict({"input_shape": [1, 7, 6], "layers": [
        conv("c1", 1, 4, stride=2), {"type": "avgpool2d"}, RELU, FLAT,
        linear("fc", 4 * 2 * 1, 2)]}),
    "global-avgpool": Network.from_dict({"input_shape": [2, 5, 5], "layers": [
        conv("c1", 2, 5), RELU, {"type": "global_avgpool2d", "name": "gap"}, FLAT,
        linear("fc", 5, 2)]}),
    # The combination: conv stride 2, conv padding 0, global average pooling, linear.
    "combination": Network.from_dict({"input_shape": [2, 9, 8], "layers": [
        conv("c1", 2, 4, stride=2), RELU, conv("c2", 4, 5, padding=0), RELU,
        {"type": "global_avgpool2d", "name": "gap"}, FLAT, linear("fc", 5, 3)]}),
}

#: (network, lanes, seed)
CASES = [
    ("stride2", 2, 1), ("stride2", 3, 2), ("padding0", 4, 3),
    ("stride2-padding0-maxpool", 1, 4), ("avgpool-relu-before", 3, 5),
    ("avgpool-relu-after", 2, 6), ("avgpool-relu-after", 8, 7),
    ("global-avgpool", 2, 8), ("global-avgpool", 3, 9), ("combination", 4, 10),
    ("combination", 1, 11),
]


def layer_config(lanes):
    return dataclasses.replace(small_config(lanes=lanes, block_rows=4), basis_depth=64)


def ops_of(network):
    """Operations the core runs: one per compute layer and per global average pooling."""
    return sum(layer.is_compute or layer.kind == "global_avgpool2d"
               for layer in network.layers)


@pytest.mark.parametrize("name, lanes, seed", CASES)
def test_networks_in_amaranth(name, lanes, seed, tmp_path):
    network = NETWORKS[name]
    config = layer_config(lanes)
    net = serial_network(network, seed, lanes=lanes, block_rows=4)
    report = simulate(net, config, random_inputs(network, 2, seed), simulator="amaranth",
                      build_dir=tmp_path)
    assert_passed(report)
    assert report.layers_checked == 2 * ops_of(network)


@pytest.mark.slow
@pytest.mark.duration(90)
def test_combination_on_verilator(tmp_path):
    network = NETWORKS["combination"]
    config = layer_config(4)
    net = serial_network(network, 12, lanes=4, block_rows=4)
    report = simulate(net, config, random_inputs(network, 3, 12), simulator="verilator",
                      build_dir=tmp_path)
    assert_passed(report)
    assert report.layers_checked == 3 * ops_of(network)


def dense_rows(out_channels, rows):
    """Factors whose every Ce row is present in every channel (identity bases)."""
    present = np.ones((out_channels, rows, 3), bool)
    return DecomposedWeights(present=present, negative=~present,
                             exponent=np.zeros(present.shape, np.uint8),
                             basis=np.broadcast_to(np.eye(3, dtype=np.int8),
                                                   (out_channels, 1, 3, 3)).copy(),
                             block_rows=rows)


def integer_network(network):
    layers = {}
    for spec in network.compute_layers:
        rows = 3 * spec.in_size if spec.kind == "conv2d" else -(-spec.in_size // 3)
        m = spec.out_size
        layers[spec.name] = IntegerLayer(
            name=spec.name, weights=dense_rows(m, rows), bias=np.zeros(m, np.int32),
            weight_scale=np.ones(m), multiplier=np.full(m, 1 << 14, np.int32),
            shift=np.full(m, 20, np.uint8), input_scale=1.0, output_scale=1.0,
            final=spec is network.compute_layers[-1])
    return IntegerNetwork(network=network, layers=layers, input_scale=1.0)


def test_counts_of_a_strided_convolution_by_hand():
    """A 1x4x4 input, stride 2, padding 1: a 2x2 output. Its three Ce rows (kernel rows
    0..2) have a record at every pixel. Pixel (0, 0) reads input rows -1..1 and
    columns -1..1: kernel rows 1 and 2, two columns each (4 elements); (0, 1): columns
    1..3, 2 x 3 = 6; (1, 0): rows 1..3, 3 x 2 = 6; (1, 1): 9. Row 2 is never outside
    the image, so no pass ends with a zero element. The linear layer: 12 inputs, 4 rows,
    one pass, 12 elements."""
    network = Network.from_dict({"input_shape": [1, 4, 4], "layers": [
        conv("c", 1, 3, stride=2), FLAT, linear("fc", 12, 2)]})
    counts = expected_serial_counters(integer_network(network),
                                      SerialShape(lanes=4, record_reads=3))
    assert counts == {"elements": 25 + 12, "records": 4 * 3 + 4, "passes": 4 + 1,
                      "write_cycles": 12}


def test_counts_of_an_unpadded_convolution_and_a_global_average_by_hand():
    """Padding 0, 2x6x6 -> 5x4x4 (stride 1): every pixel reads all 6 rows' 3 columns,
    16 x 18 elements, 16 x 6 records, per lane group (2 groups of 3 lanes). Then the
    global average over 5 channels of 16 pixels, 80 inputs in 27 Ce rows (the last
    with 2): group 0 (channels 0..2, inputs 0..47) has rows 0..15, 48 elements;
    group 1 (channels 3, 4, inputs 48..79) rows 16..26, 32 elements."""
    network = Network.from_dict({"input_shape": [2, 6, 6], "layers": [
        conv("c", 2, 5, padding=0), {"type": "global_avgpool2d"}, FLAT, linear("fc", 5, 2)]})
    counts = expected_serial_counters(integer_network(network),
                                      SerialShape(lanes=3, record_reads=2))
    conv_elements, conv_records = 2 * 16 * 18, 2 * 16 * 6
    assert counts == {"elements": conv_elements + 48 + 32 + 5,
                      "records": conv_records + 16 + 11 + 2,
                      "passes": 2 * 16 + 2 + 1, "write_cycles": 80 + 5}


@pytest.mark.parametrize("n", list(range(1, 50)) + [64, 81, 100, 121, 144, 169, 196, 225, 256])
def test_global_average_parameters_are_exact_for_every_sum(n):
    """For every sum T of n int8 values, an input reaching it goes through the golden
    model's global average pooling and through the requantisation of w * T + b."""
    weight, bias, multiplier, shift = average_parameters(n)
    sums = np.arange(-128 * n, 127 * n + 1)
    # n values summing to T: as many 127 (or -128) as fit, the remainder, then zeros.
    values = np.zeros((len(sums), n), np.int64)
    rest = sums.copy()
    for i in range(n):
        values[:, i] = np.clip(rest, -128, 127)
        rest -= values[:, i]
    assert not rest.any()
    golden = _global_avgpool(values.astype(np.int8).reshape(len(sums), 1, n, 1)).reshape(-1)
    acc = (weight * sums + bias)[:, None]
    requantised = requantise(acc, np.array([multiplier]), np.array([shift])).reshape(-1)
    assert np.array_equal(requantised, golden)


def test_global_average_parameters_of_powers_of_two():
    for k in range(14):
        assert average_parameters(1 << k) == (1, 0, 1 << 13, 13 + k)


def test_inexact_global_average_is_refused():
    network = Network.from_dict({"input_shape": [1, 15, 25], "layers": [
        conv("c", 1, 2, padding=0), {"type": "global_avgpool2d", "name": "gap"}, FLAT,
        linear("fc", 2, 2)]})
    net = serial_network(network, 1, lanes=2)
    with pytest.raises(SdHwError, match=r"layer 'gap' \(global_avgpool2d\).*299 values"):
        compile_serial(net, small_config(lanes=2))


def test_layers_the_serial_core_does_not_run_are_refused():
    pool_twice = Network.from_dict({"input_shape": [1, 8, 8], "layers": [
        conv("c", 1, 2), {"type": "avgpool2d", "name": "a"}, {"type": "maxpool2d", "name": "b"},
        FLAT, linear("fc", 8, 2)]})
    with pytest.raises(SdHwError, match=r"layer 'b'.*pools the output of a convolution, once"):
        compile_serial(serial_network(pool_twice, 1, lanes=2), small_config(lanes=2))
    pooled_logits = Network.from_dict({"input_shape": [1, 4, 4], "layers": [
        conv("c", 1, 2), {"type": "global_avgpool2d"}]})
    with pytest.raises(SdHwError, match="does not pool"):
        compile_serial(serial_network(pooled_logits, 1, lanes=2), small_config(lanes=2))
    strided_1x1 = Network.from_dict({"input_shape": [2, 4, 4], "layers": [
        {"type": "conv2d", "name": "pw", "in_channels": 2, "out_channels": 2,
         "kernel_size": 1, "stride": 2}, FLAT, linear("fc", 8, 2)]})
    with pytest.raises(SdHwError, match=r"layer 'pw'.*1x1"):
        compile_serial(serial_network(strided_1x1, 1, lanes=2), small_config(lanes=2))


def test_golden_model_runs_the_combination():
    """The combination's golden outputs have the shapes the core writes."""
    network = NETWORKS["combination"]
    outputs = run(serial_network(network, 3, lanes=2), random_inputs(network, 1, 3),
                  layer_outputs=True)
    assert [o.shape[1:] for o in outputs] == [s for s in network.shapes[1:]]


@pytest.mark.slow
def test_onnx_cnn_with_the_new_layers_runs_bit_exactly(tmp_path):
    """An ONNX CNN (Conv 3x3 stride 2 + BatchNormalization, Relu, Conv 3x3 padding 0,
    Relu, GlobalAveragePool, Flatten, Gemm) imported, decomposed, integerised and run on
    the serial core in Amaranth's simulator."""
    pytest.importorskip("onnx")
    from sim.compress import CompressOptions, calibrate, decompose, integerise, prune_masks
    from sim.onnx_import import import_onnx

    rng = np.random.default_rng(0)
    imported = import_onnx(_onnx_cnn(tmp_path, rng))
    network, params = imported.model.network, imported.model.params
    assert [layer.kind for layer in network.layers] == [
        "conv2d", "relu", "conv2d", "relu", "global_avgpool2d", "flatten", "linear"]
    assert network.shapes[3] == (8, 4, 3)            # a global average over 12 pixels
    options = CompressOptions()
    factors = decompose(network, params, prune_masks(network, params, options), options)
    x = rng.standard_normal((32, 2, 11, 10))
    net = integerise(network, params, factors, calibrate(network, params, x), options)
    x_int = np.clip(np.round(x[:1] / net.input_scale), -128, 127).astype(np.int8)
    config = dataclasses.replace(small_config(lanes=4), basis_depth=64)
    report = simulate(net, config, x_int, simulator="amaranth", build_dir=tmp_path)
    assert_passed(report)
    assert report.layers_checked == ops_of(network)


def _onnx_cnn(tmp_path, rng):
    """Conv 3x3 stride 2 + BatchNormalization, Relu, Conv 3x3 padding 0, Relu,
    GlobalAveragePool, Flatten, Gemm, as an ONNX file; and its input shape."""
    from onnx import helper
    from tests.test_onnx_import import _const, _model, _save
    inits = [
        _const("w1", rng.standard_normal((6, 2, 3, 3)) * 0.4),
        _const("bn_g", rng.random(6) + 0.5), _const("bn_b", rng.standard_normal(6) * 0.2),
        _const("bn_m", rng.standard_normal(6) * 0.3), _const("bn_v", rng.random(6) + 0.3),
        _const("w2", rng.standard_normal((8, 6, 3, 3)) * 0.2),
        _const("b2", rng.standard_normal(8) * 0.1),
        _const("fw", rng.standard_normal((8, 4)) * 0.3), _const("fb", np.zeros(4)),
    ]
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1],
             kernel_shape=[3, 3]),
        node("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["n1"],
             epsilon=1e-3),
        node("Relu", ["n1"], ["r1"]),
        node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[0, 0, 0, 0]),
        node("Relu", ["c2"], ["r2"]),
        node("GlobalAveragePool", ["r2"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("Gemm", ["flat", "fw", "fb"], ["y"]),
    ]
    return _save(_model(nodes, inits, [2, 11, 10]), tmp_path, "cnn.onnx")


@pytest.mark.slow
@pytest.mark.duration(120)
def test_onnx_cnn_retrained_on_npy_files_runs_on_the_rtl(tmp_path, capsys):
    """The whole path a user takes with an ONNX CNN that has a stride-2 convolution,
    batch norm, padding 0 and global average pooling: ``sd-hw compress model.onnx``
    retraining on .npy arrays, then ``sd-hw simulate`` on the iCEBreaker's core under
    Verilator, every layer and counter compared with the golden model."""
    pytest.importorskip("onnx")
    from sim.cli import main
    from sim.golden.nn import forward
    from sim.onnx_import import import_onnx
    rng = np.random.default_rng(3)
    path = _onnx_cnn(tmp_path, rng)
    imported = import_onnx(path).model
    x = rng.standard_normal((300, 2, 11, 10)).astype(np.float32)
    logits = forward(imported.network, imported.params, x)
    # Labels: the float network's own classes, balanced by centring its logits.
    y = np.argmax(logits - logits.mean(axis=0), axis=1)
    assert len(np.unique(y)) == 4
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    weights = tmp_path / "cnn.sdw"
    assert main(["compress", str(path), "-o", str(weights), "--retrain", "ste",
                 "--epochs", "2", "--train-data", str(tmp_path / "x.npy"),
                 "--train-labels", str(tmp_path / "y.npy"), "--board", "icebreaker"]) == 0
    capsys.readouterr()
    code = main(["simulate", str(weights), "--inputs", str(tmp_path / "x.npy"),
                 "--count", "3", "--sim", "verilator", "--board", "icebreaker",
                 "--build-dir", str(tmp_path / "sim")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert ", 0 mismatching input(s)" in out
