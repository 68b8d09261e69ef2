"""ONNX import (sim/onnx_import.py): models built here with onnx.helper (no torch, no
network), imported float outputs against onnxruntime on random inputs, batch-norm
folding, and one-line refusals naming the node, its op type and the attribute."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sd_hw.errors import SdHwError  # noqa: E402
from sim.cli import main  # noqa: E402
from sim.golden.model_file import load_model  # noqa: E402
from sim.golden.nn import forward  # noqa: E402
from sim.onnx_import import MAX_OPSET, MIN_OPSET, import_onnx  # noqa: E402


def _const(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype), name)


def _model(nodes, inits, input_shape, output="y", *, opset=13, ir_version=8,
           output_shape=None):
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape or ["N", "d"])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=ir_version)


def _save(model, tmp_path, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _onnxruntime(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0]


def cnn_model(seed=0):
    """Conv 3x3 stride 2 (no bias) + BatchNormalization, Relu, Conv 3x3 padding 0,
    Relu, MaxPool, Conv 1x1 stride 2 + Add (bias), Relu, AveragePool,
    GlobalAveragePool, torch-style Shape/Gather/Unsqueeze/Concat/Reshape, Gemm
    (transB 0), Dropout, Relu, MatMul + Add, BatchNormalization, Identity."""
    rng = np.random.default_rng(seed)
    inits = [
        _const("w1", rng.standard_normal((8, 3, 3, 3)) * 0.4),
        _const("bn_g", rng.random(8) + 0.5), _const("bn_b", rng.standard_normal(8) * 0.2),
        _const("bn_m", rng.standard_normal(8) * 0.3), _const("bn_v", rng.random(8) + 0.3),
        _const("w2", rng.standard_normal((12, 8, 3, 3)) * 0.2),
        _const("b2", rng.standard_normal(12) * 0.1),
        _const("w3", rng.standard_normal((16, 12, 1, 1)) * 0.3),
        _const("b3", rng.standard_normal((1, 16, 1, 1)) * 0.1),
        _const("minus_one", [-1], np.int64), _const("zero", 0, np.int64),
        _const("fw", rng.standard_normal((16, 20)) * 0.3),
        _const("fb", rng.standard_normal(20) * 0.1),
        _const("mw", rng.standard_normal((20, 10)) * 0.3),
        _const("mb", rng.standard_normal(10) * 0.1),
        _const("bn2_g", rng.random(10) + 0.5), _const("bn2_b", rng.standard_normal(10)),
        _const("bn2_m", rng.standard_normal(10) * 0.2), _const("bn2_v", rng.random(10) + 0.2),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], name="/features/0/Conv", strides=[2, 2],
          pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["n1"],
          name="/features/1/BatchNormalization", epsilon=1e-3),
        n("Relu", ["n1"], ["r1"], name="/features/2/Relu"),
        n("Conv", ["r1", "w2", "b2"], ["c2"], name="/features/3/Conv", pads=[0, 0, 0, 0]),
        n("Relu", ["c2"], ["r2"]),
        n("MaxPool", ["r2"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "w3"], ["c3"], name="/features/6/Conv", strides=[2, 2]),
        n("Add", ["c3", "b3"], ["a3"]),
        n("Relu", ["a3"], ["r3"]),
        n("AveragePool", ["r3"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        n("GlobalAveragePool", ["p2"], ["gap"]),
        n("Shape", ["gap"], ["shape"]),
        n("Gather", ["shape", "zero"], ["batch"], axis=0),
        n("Unsqueeze", ["batch", "zero_axis"], ["batch1"]),
        n("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        n("Reshape", ["gap", "target"], ["flat"]),
        n("Gemm", ["flat", "fw", "fb"], ["h"], name="/classifier/0/Gemm"),
        n("Dropout", ["h"], ["d"]),
        n("Relu", ["d"], ["r4"]),
        n("MatMul", ["r4", "mw"], ["mm"], name="/classifier/3/MatMul"),
        n("Add", ["mm", "mb"], ["logits"]),
        n("BatchNormalization", ["logits", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["nb"]),
        n("Identity", ["nb"], ["y"]),
    ]
    inits.append(_const("zero_axis", [0], np.int64))
    return _model(nodes, inits, [3, 20, 20])


def test_cnn_imports_with_every_supported_layer_and_matches_onnxruntime(tmp_path):
    model = cnn_model()
    imported = import_onnx(_save(model, tmp_path))
    network = imported.model.network
    assert [layer.kind for layer in network.layers] == [
        "conv2d", "relu", "conv2d", "relu", "maxpool2d", "conv2d", "relu", "avgpool2d",
        "global_avgpool2d", "flatten", "linear", "relu", "linear"]
    conv1, conv2, conv3 = network.compute_layers[:3]
    assert (conv1.stride, conv1.padding, conv2.stride, conv2.padding) == (2, 1, 1, 0)
    assert (conv3.kernel_size, conv3.stride, conv3.padding) == (1, 2, 0)
    assert network.shapes[1] == (8, 10, 10) and network.shapes[3] == (12, 8, 8)
    assert network.output_shape == (10,)
    assert "BatchNormalization" in " ".join(imported.origins["conv1"])
    x = np.random.default_rng(1).standard_normal((16, 3, 20, 20))
    expected = _onnxruntime(model, x)
    got = forward(network, imported.model.params, x)
    assert np.abs(expected).max() > 0.5          # a live comparison
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_batch_norm_folding_is_exact_formula(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 2, 3, 3))
    b = rng.standard_normal(4)
    g, beta, mean, var = rng.random(4) + 0.5, rng.standard_normal(4), rng.standard_normal(4), \
        rng.random(4) + 0.1
    eps = 0.25
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["y"],
                              epsilon=eps)]
    inits = [_const("w", w, np.float64), _const("b", b, np.float64),
             _const("g", g, np.float64), _const("beta", beta, np.float64),
             _const("m", mean, np.float64), _const("v", var, np.float64)]
    model = _model(nodes, inits, [2, 5, 5])
    params = import_onnx(_save(model, tmp_path)).model.params
    factor = g / np.sqrt(var + eps)
    np.testing.assert_allclose(params["conv1.weight"], w * factor[:, None, None, None],
                               rtol=1e-15)
    np.testing.assert_allclose(params["conv1.bias"], (b - mean) * factor + beta, rtol=1e-14)


def _mlp_model(opset, *, softmax):
    rng = np.random.default_rng(opset)
    n = helper.make_node
    nodes = [n("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             n("Relu", ["h"], ["r"]),
             n("Dropout", ["r"], ["d"], **({"ratio": 0.3} if opset < 12 else {})),
             n("Gemm", ["d", "w2"] + (["b2"] if opset < 11 else []), ["z"], transB=0)]
    if softmax:
        nodes.append(n("Softmax", ["z"], ["y"], axis=1))
    else:
        nodes[-1].output[0] = "y"
    inits = [_const("w1", rng.standard_normal((24, 64)) * 0.2),
             _const("b1", rng.standard_normal((1, 24)) * 0.1),
             _const("w2", rng.standard_normal((24, 10)) * 0.3), _const("b2", np.zeros(10))]
    return _model(nodes, inits, [64], opset=opset, ir_version=6 if opset < 13 else 8)


@pytest.mark.parametrize("opset", [MIN_OPSET, 11, 17])
def test_mlp_over_opsets_and_a_final_softmax_is_dropped(tmp_path, opset):
    x = np.random.default_rng(3).standard_normal((32, 64))
    plain = _mlp_model(opset, softmax=False)
    imported = import_onnx(_save(plain, tmp_path))
    np.testing.assert_allclose(forward(imported.model.network, imported.model.params, x),
                               _onnxruntime(plain, x), rtol=1e-4, atol=1e-5)
    with_softmax = _mlp_model(opset, softmax=True)
    imported = import_onnx(_save(with_softmax, tmp_path, "softmax.onnx"))
    assert any("Softmax" in note for note in imported.notes)
    logits = forward(imported.model.network, imported.model.params, x)
    probabilities = _onnxruntime(with_softmax, x)
    np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(probabilities, axis=1))
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probabilities,
                               atol=1e-5)


def test_keras_style_squeeze_after_global_pooling(tmp_path):
    rng = np.random.default_rng(4)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER"),
             n("Relu", ["c"], ["r"]),
             n("GlobalAveragePool", ["r"], ["g"]),
             n("Squeeze", ["g"], ["s"], axes=[2, 3]),
             n("MatMul", ["s", "m"], ["y"])]
    inits = [_const("w", rng.standard_normal((5, 1, 3, 3))), _const("m", rng.standard_normal((5, 3)))]
    model = _model(nodes, inits, [1, 7, 7], opset=11, ir_version=6)
    imported = import_onnx(_save(model, tmp_path))
    assert imported.model.network.layers[0].padding == 1
    x = rng.standard_normal((8, 1, 7, 7))
    np.testing.assert_allclose(forward(imported.model.network, imported.model.params, x),
                               _onnxruntime(model, x), rtol=1e-4, atol=1e-5)


def test_import_command_writes_a_model_file_with_the_same_outputs(tmp_path, capsys):
    model = cnn_model(5)
    path = _save(model, tmp_path)
    calibration = np.random.default_rng(0).standard_normal((4, 3, 20, 20))
    np.save(tmp_path / "cal.npy", calibration)
    assert main(["import", str(path), "-o", str(tmp_path / "m.npz"),
                 "--calibration", str(tmp_path / "cal.npy")]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "'/features/1/BatchNormalization' (BatchNormalization) folded" in out
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.calibration.shape == (4, 3, 20, 20)
    x = np.random.default_rng(6).standard_normal((4, 3, 20, 20))
    expected = _onnxruntime(model, x)
    np.testing.assert_allclose(forward(loaded.network, loaded.params, x), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# ---------------------------------------------------------------------------
# Refusals

def _one_node(op, inputs=("x",), inits=(), input_shape=(2, 6, 6), name="bad", **attrs):
    nodes = [helper.make_node(op, list(inputs), ["y"], name=name, **attrs)]
    return _model(nodes, list(inits), list(input_shape))


_W3 = _const("w", np.ones((4, 2, 3, 3)))
_W1 = _const("w", np.ones((4, 2, 1, 1)))
_STATS = [_const(k, np.ones(2)) for k in ("g", "b", "m", "v")]


@pytest.mark.parametrize("model, message", [
    (_one_node("Conv", ("x", "w"), [_W3], group=2),
     r"node 'bad' \(Conv\): attribute group = 2 is not supported"),
    (_one_node("Conv", ("x", "w"), [_W3], dilations=[2, 2]),
     r"node 'bad' \(Conv\): attribute dilations = \[2, 2\] is not supported"),
    (_one_node("Conv", ("x", "w"), [_const("w", np.ones((4, 2, 5, 5)))]),
     r"node 'bad' \(Conv\): weight of shape \(4, 2, 5, 5\): only 3x3 and 1x1"),
    (_one_node("Conv", ("x", "w"), [_W3], strides=[3, 3]),
     r"node 'bad' \(Conv\): attribute strides = \[3, 3\] is not supported"),
    (_one_node("Conv", ("x", "w"), [_W3], strides=[1, 2]),
     r"attribute strides = \[1, 2\]"),
    (_one_node("Conv", ("x", "w"), [_W3], pads=[1, 1, 0, 0]),
     r"node 'bad' \(Conv\): attribute pads = \[1, 1, 0, 0\] is not supported"),
    (_one_node("Conv", ("x", "w"), [_W1], pads=[1, 1, 1, 1]),
     r"attribute pads = \[1, 1, 1, 1\] is not supported for a 1x1 kernel"),
    (_one_node("Conv", ("x", "w"), [_W3], strides=[2, 2], auto_pad="SAME_UPPER"),
     r"attribute auto_pad = SAME_UPPER is not supported with strides 2"),
    (_one_node("LeakyRelu"), r"node 'bad' \(LeakyRelu\): op type LeakyRelu is not supported"),
    (_one_node("MaxPool", kernel_shape=[3, 3], strides=[2, 2]),
     r"node 'bad' \(MaxPool\): attribute kernel_shape = \[3, 3\] is not supported"),
    (_one_node("MaxPool", kernel_shape=[2, 2]),
     r"node 'bad' \(MaxPool\): attribute strides = \[1, 1\] is not supported"),
    (_one_node("AveragePool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]),
     r"node 'bad' \(AveragePool\): attribute pads = \[1, 1, 1, 1\] is not supported"),
    (_one_node("AveragePool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
     r"node 'bad' \(AveragePool\): attribute ceil_mode = 1 is not supported"),
    (_one_node("Gemm", ("x", "w"), [_const("w", np.ones((3, 4)))], input_shape=(4,), alpha=2.0),
     r"node 'bad' \(Gemm\): attribute alpha = 2.0 is not supported"),
    (_one_node("Gemm", ("x", "w"), [_const("w", np.ones((3, 4)))], input_shape=(4,), transA=1),
     r"node 'bad' \(Gemm\): attribute transA = 1 is not supported"),
    (_one_node("Add", ("x", "c"), [_const("c", np.ones((2, 1, 1)))]),
     r"node 'bad' \(Add\): an Add of a constant \(a bias\) must directly follow a Conv, "
     r"Gemm or MatMul .* follows the graph's input"),
    (_one_node("BatchNormalization", ("x", "g", "b", "m", "v"), _STATS),
     r"node 'bad' \(BatchNormalization\): BatchNormalization must directly follow a Conv, "
     r"Gemm or MatMul .* follows the graph's input"),
    (_one_node("Flatten", axis=2), r"node 'bad' \(Flatten\): attribute axis = 2 is not supported"),
    (_one_node("Reshape", ("x", "s"), [_const("s", [1, 2, 36], np.int64)]),
     r"node 'bad' \(Reshape\): reshapes \(N, 2, 6, 6\) to \[1, 2, 36\]; only flattening"),
    (_one_node("Softmax", input_shape=(4,), axis=0),
     r"node 'bad' \(Softmax\): is supported only as the last node"),
])
def test_unsupported_nodes_are_refused_naming_node_op_and_attribute(tmp_path, model, message):
    with pytest.raises(SdHwError, match=message):
        import_onnx(_save(model, tmp_path))


def test_graph_level_refusals(tmp_path):
    n = helper.make_node
    residual = _model([n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                       n("Add", ["c", "x"], ["y"], name="skip")],
                      [_const("w", np.ones((2, 2, 3, 3)))], [2, 6, 6])
    with pytest.raises(SdHwError, match=r"node 'skip' \(Add\): input 'x' is an activation, not "
                                        r"a constant: the graph branches or merges"):
        import_onnx(_save(residual, tmp_path))
    not_a_bias = _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                         n("Add", ["c", "row"], ["y"], name="add_row")],
                        [_const("w", np.ones((2, 2, 3, 3))), _const("row", np.arange(6.0))],
                        [2, 6, 6])
    with pytest.raises(SdHwError, match=r"node 'add_row' \(Add\): adds a constant of shape "
                                        r"\(6,\) that is not one value per output channel"):
        import_onnx(_save(not_a_bias, tmp_path))
    after_relu = _model([n("Relu", ["x"], ["r"]),
                         n("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"])],
                        _STATS, [2, 6, 6])
    with pytest.raises(SdHwError, match=r"node #1 \(output 'y'\) \(BatchNormalization\): .*"
                                        r"here it follows a relu layer"):
        import_onnx(_save(after_relu, tmp_path))
    training = _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                       n("BatchNormalization", ["c", "g", "b", "m", "v"], ["y", "rm", "rv"],
                         name="bn", training_mode=1)],
                      [_const("w", np.ones((2, 2, 3, 3)))] + _STATS, [2, 6, 6], opset=15)
    with pytest.raises(SdHwError, match=r"node 'bn' \(BatchNormalization\): attribute "
                                        r"training_mode = 1 is not supported"):
        import_onnx(_save(training, tmp_path))
    for opset in (MIN_OPSET - 1, MAX_OPSET + 1):
        old = _model([n("Relu", ["x"], ["y"])], [], [4], opset=opset,
                     ir_version=3 if opset < 9 else 10)
        with pytest.raises(SdHwError, match=rf"opset {opset} is not supported; sd-hw reads "
                                            rf"opsets {MIN_OPSET} to {MAX_OPSET}"):
            import_onnx(_save(old, tmp_path))
    rank3 = _model([n("Relu", ["x"], ["y"])], [], [4, 5])
    with pytest.raises(SdHwError, match=r"input 'x' has shape \(N, 4, 5\); sd-hw reads"):
        import_onnx(_save(rank3, tmp_path))
    graph = helper.make_graph([n("Relu", ["x"], ["y"], name="custom", domain="com.example")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    custom = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                     helper.make_opsetid("com.example", 1)],
                               ir_version=8)
    with pytest.raises(SdHwError, match=r"node 'custom' \(Relu\): operator domain "
                                        r"'com.example' is not supported"):
        import_onnx(_save(custom, tmp_path))


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(SdHwError, match=r"missing.onnx: no such file"):
        import_onnx(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00not a protobuf\x13" * 7)
    with pytest.raises(SdHwError, match=r"garbage.onnx: not a (readable|valid) ONNX model"):
        import_onnx(garbage)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(SdHwError, match=r"empty.onnx: "):
        import_onnx(empty)


def test_cli_refusal_is_one_line_with_exit_status_2(tmp_path, capsys):
    path = _save(_one_node("Conv", ("x", "w"), [_W3], group=2), tmp_path)
    for command in (["import", str(path), "-o", str(tmp_path / "m.npz")],
                    ["compress", str(path), "-o", str(tmp_path / "m.sdw")]):
        assert main(command) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("sd-hw: error: ")
        assert "node 'bad' (Conv): attribute group = 2" in lines[0]
        assert "Traceback" not in captured.err
    assert not (tmp_path / "m.npz").exists() and not (tmp_path / "m.sdw").exists()
