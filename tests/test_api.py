"""The Python API (sim/api.py) and the command's --board, fit and input feedback.

Each function runs on small networks (the bundled digits MLP trained for an
epoch, TINY with random integer weights); results are compared with the golden
model run directly, files with what the library reads back. A board run goes
through the OrangeCrab top-level's UART pins under Icarus, as
tests/test_boards.py does; a real bitstream build is left to that file's slow
tests.
"""

import json

import numpy as np
import pytest

from boards import board, board_module
from sd_hw import weight_file
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.errors import ParameterError, SdHwError
from sd_hw.generate import core_description
from sd_hw.serial.config import SerialConfig
from sim import api
from sim.board_sim import SimulatedBoard
from sim.cli import main
from sim.compress import CompressOptions
from sim.fit import FitError
from sim.golden.digits import DEFAULT_MLP, load_digits_split
from sim.golden.model_file import FloatModel, save_model
from sim.golden.nn import accuracy as float_accuracy
from sim.golden.reference import run
from sim.golden.user_data import TrainingData

from factories import TINY, hardware_network


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(seed=0)


@pytest.fixture(scope="module")
def mlp(digits):
    """The digits MLP trained for one epoch through the API, and the data."""
    data = TrainingData(digits.inputs_for(DEFAULT_MLP, "train"), digits.y_train,
                        digits.inputs_for(DEFAULT_MLP, "val"), digits.y_val, "digits")
    lines = []
    model = api.train(FloatModel(DEFAULT_MLP, None), data=data, epochs=1, progress=lines.append)
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1")
    return model


@pytest.fixture(scope="module")
def packed(mlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "mlp.sdw"
    result = api.compress(mlp, output=path, options=CompressOptions(), board="icebreaker")
    return result, path


def test_load_model_reads_npz_json_and_onnx(tmp_path, mlp):
    save_model(tmp_path / "m.npz", mlp.network, mlp.params, calibration=mlp.calibration)
    loaded = api.load_model(tmp_path / "m.npz")
    assert loaded.network == mlp.network
    # Model files hold float32 weights.
    assert all(np.array_equal(loaded.params[k], mlp.params[k].astype(np.float32))
               for k in mlp.params)
    (tmp_path / "net.json").write_text(json.dumps(DEFAULT_MLP.to_dict()))
    described = api.load_model(tmp_path / "net.json")
    assert described.network == DEFAULT_MLP and described.params is None
    with pytest.raises(SdHwError, match="no weights .* train it first"):
        api.compress(described)
    with pytest.raises(SdHwError, match=r"nothing\.npz: no such file"):
        api.load_model(tmp_path / "nothing.npz")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "m.onnx")
    calibration = np.random.default_rng(1).random((8, 64))
    imported = api.load_model(tmp_path / "m.onnx", calibration=calibration)
    assert imported.network.compute_layers[0].weight_shape == (10, 64)
    assert np.array_equal(imported.params[f"{imported.network.compute_layers[0].name}.weight"], w)
    assert np.array_equal(imported.calibration, calibration)


def test_compress_returns_the_network_its_storage_and_the_fit(packed, digits, mlp):
    result, path = packed
    again = weight_file.load(path)
    x = again.quantize_input(digits.inputs_for(DEFAULT_MLP, "test"))
    assert np.array_equal(run(again, x), run(result.network, x))
    total = result.storage.total
    assert result.path == path and 0 < total.storage_bits < total.int8_bits
    assert result.fit.fits and result.history == []
    assert float_accuracy(mlp.network, mlp.params, digits.inputs_for(DEFAULT_MLP, "test"),
                          digits.y_test) > 0.5


def test_evaluate_is_the_golden_model_with_accuracy_and_saturation(packed, digits):
    result, path = packed
    x = digits.inputs_for(DEFAULT_MLP, "test")[:40]
    labels = digits.y_test[:40]
    evaluated = api.evaluate(path, x, labels=labels, board="ulx3s", core="sd")
    golden = run(result.network, result.network.quantize_input(x))
    assert np.array_equal(evaluated.outputs, golden)
    assert evaluated.accuracy == np.mean(np.argmax(golden, axis=1) == labels)
    assert evaluated.saturation.clipped == 0 and evaluated.fit.fits
    # Pixels 0..255 for a model calibrated on 0..1: nearly all saturate, and it is said.
    lines = []
    bright = api.evaluate(result.network, (x * 255).astype(np.uint8), progress=lines.append)
    over = int(np.count_nonzero(np.rint(x * 255 / result.network.input_scale) > 127))
    assert bright.saturation.above == over > x.size // 4
    assert lines and lines[0].startswith(f"warning: inputs: {over} of {x.size} input values")
    with pytest.raises(SdHwError, match="expected 40 integer labels"):
        api.evaluate(path, x, labels=labels[:3])


def test_simulate_runs_the_rtl_and_refuses_a_core_too_small(tmp_path):
    net = hardware_network(TINY, 3, block_rows=12, group=2)
    x = np.random.default_rng(3).integers(-128, 128, size=(2, *TINY.input_shape)).astype(np.int8)
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2))
    result = api.simulate(net, x, config=config, simulator="amaranth", count=1,
                          build_dir=tmp_path)
    assert result.passed and result.config == config and result.saturation is None
    assert np.array_equal(result.outputs, run(net, x[:1]))
    assert result.cycles[0] > 0 and result.counters[0]["cycles"] == result.cycles[0]
    small = CoreConfig(datapath=AcceleratorConfig(lanes=2), weight_depth=16)
    with pytest.raises(FitError, match=r"the weight memory needs \d+ words.*; to fit: "
                                       r"--weight-depth \d+ .*--board ulx3s --core sd"):
        api.simulate(net, x, config=small, simulator="amaranth", build_dir=tmp_path)
    with pytest.raises(ParameterError, match="'count' is 0"):
        api.simulate(net, x, config=config, count=0)


def test_core_config_selection(tmp_path):
    module = board_module(board("icebreaker"))
    assert api.core_config(board="icebreaker") == module.DEFAULT_CONFIG
    assert api.core_config(board="icebreaker", core="sd") == module.SD_CORE_CONFIG
    assert api.core_config(board="icebreaker", core="serial") == module.DEFAULT_CONFIG
    assert api.core_config() == CoreConfig() and api.core_config(core="serial") == SerialConfig()
    (tmp_path / "core.json").write_text(json.dumps(core_description(module.SD_CORE_CONFIG)))
    assert api.core_config(config=tmp_path / "core.json") == module.SD_CORE_CONFIG
    with pytest.raises(ParameterError, match="unknown board 'nope'"):
        api.core_config(board="nope")
    with pytest.raises(ParameterError, match="'core' is 'dense'"):
        api.core_config(core="dense")


def test_generate_writes_verilog_and_port_map(tmp_path):
    block = api.generate("basis_engine", config=AcceleratorConfig(lanes=2), out_dir=tmp_path)
    assert block.verilog.read_text().count("module basis_engine(") == 1
    assert json.loads(block.port_map.read_text())["config"]["lanes"] == 2
    core = api.generate(config=CoreConfig(datapath=AcceleratorConfig(lanes=1),
                                          weight_depth=64), out_dir=tmp_path)
    assert core.verilog.is_file() and core.lint_allowed is None
    with pytest.raises(SdHwError, match="unknown block"):
        api.generate("adder", out_dir=tmp_path)


def test_build_refuses_bad_parameters_before_any_tool_runs(tmp_path):
    with pytest.raises(SdHwError, match="'seeds' is 0"):
        api.build("icebreaker", seeds=0, out_dir=tmp_path)
    with pytest.raises(SdHwError, match="'first_seed' is 0, allowed range is 1 to"):
        api.build("icebreaker", first_seed=0, out_dir=tmp_path)
    with pytest.raises(ParameterError, match="unknown board"):
        api.build("nope", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def orangecrab(tmp_path_factory):
    """The OrangeCrab top-level with its SDCore configuration, under Icarus."""
    config = board_module(board("orangecrab")).SD_CORE_CONFIG
    return SimulatedBoard("orangecrab", config, simulator="icarus",
                          build_dir=tmp_path_factory.mktemp("orangecrab"))


def test_run_on_a_simulated_board_checks_its_identity_first(orangecrab):
    net = hardware_network(TINY, 3, block_rows=4, group=orangecrab.config.lanes)
    x = np.random.default_rng(3).integers(-128, 128, size=(1, *TINY.input_shape)).astype(np.int8)
    lines = []
    result = api.run_on_board(net, x, board="orangecrab", core="sd", transport=orangecrab,
                              progress=lines.append)
    assert result.passed and np.array_equal(result.outputs, run(net, x))
    assert result.identity[1] == 0x53444857 and result.identity[2] & 0xFF == orangecrab.config.lanes
    assert any("its core is the configuration compiled for" in line for line in lines)


def test_run_refuses_a_board_with_another_core(orangecrab):
    net = hardware_network(TINY, 3, block_rows=4, group=2)
    x = np.zeros((1, *TINY.input_shape), np.int8)
    other = CoreConfig(datapath=AcceleratorConfig(lanes=orangecrab.config.lanes + 1))
    with pytest.raises(SdHwError, match=rf"the orangecrab runs another core .*: lanes is "
                                        rf"{orangecrab.config.lanes} on the board, "
                                        rf"{other.lanes} in the configuration"):
        api.run_on_board(net, x, config=other, board="orangecrab", transport=orangecrab)
    # Refused after the identity read alone: nothing was loaded or run.
    assert len(orangecrab.transcript) == 1


def _run_cli(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_board_selects_the_board_configuration(capsys):
    code, out, err = _run_cli(capsys, "config", "--board", "icebreaker", "--core", "sd")
    assert code == 0 and err == ""
    module = board_module(board("icebreaker"))
    assert json.loads(out) == core_description(module.SD_CORE_CONFIG)
    code, out, _ = _run_cli(capsys, "config", "--board", "ulx3s", "--lanes", "4")
    expected = module = board_module(board("ulx3s")).DEFAULT_CONFIG
    assert json.loads(out)["datapath"]["lanes"] == 4
    assert json.loads(out)["bank_depth"] == expected.bank_depth


def test_cli_says_what_would_make_a_network_fit(capsys, tmp_path):
    net = hardware_network(TINY, 5, block_rows=12, group=2)
    net.layers["fc"].bias[3] = 2 ** 27 - 5
    weight_file.save(net, tmp_path / "t.sdw")
    np.save(tmp_path / "x.npy", np.zeros((2, *TINY.input_shape), np.int8))
    code, out, err = _run_cli(capsys, "evaluate", tmp_path / "t.sdw", "--inputs",
                              tmp_path / "x.npy", "--board", "icebreaker", "--core", "sd")
    assert code == 1
    assert ("fit: the network does not fit the core of --board icebreaker --core sd: "
            "the network does not match the core") in out
    assert "to fit: --board icebreaker --core sd --accumulator-bits 29 " in out
    code, out, err = _run_cli(capsys, "simulate", tmp_path / "t.sdw", "--inputs",
                              tmp_path / "x.npy", "--board", "icebreaker", "--core", "sd",
                              "--sim", "amaranth", "--build-dir", tmp_path)
    assert code == 2 and out == ""
    error = [line for line in err.splitlines() if line.startswith("sd-hw: error:")]
    assert len(error) == 1 and "--accumulator-bits 29" in error[0]
    code, out, err = _run_cli(capsys, "simulate", tmp_path / "t.sdw", "--inputs",
                              tmp_path / "x.npy", "--board", "icebreaker", "--core", "sd",
                              "--accumulator-bits", "29", "--sim", "amaranth", "--count", "1",
                              "--build-dir", tmp_path, "--quiet")
    assert code == 0 and "0 mismatching input(s)" in out and err == ""


def test_cli_reports_saturating_inputs_and_quiet_silences_progress(capsys, tmp_path):
    data = load_digits_split(seed=0)
    x = data.inputs_for(DEFAULT_MLP, "train")[:64]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", data.y_train[:64])
    code, out, err = _run_cli(capsys, "train", "--model", "mlp", "--epochs", "1", "-o",
                              tmp_path / "m.npz", "--quiet")
    assert code == 0 and err == "" and "float test accuracy" in out
    code, out, err = _run_cli(capsys, "compress", tmp_path / "m.npz", "-o", tmp_path / "m.sdw",
                              "--board", "icebreaker")
    assert code == 0 and "fit: the network fits the core of --board icebreaker" in out
    np.save(tmp_path / "bright.npy", (x * 255).astype(np.uint8))
    code, out, err = _run_cli(capsys, "evaluate", tmp_path / "m.sdw", "--inputs",
                              tmp_path / "bright.npy")
    assert code == 0
    assert err.startswith(f"sd-hw: warning: {tmp_path / 'bright.npy'}: ")
    assert "saturate" in err and len(err.splitlines()) == 1


def test_cli_run_refuses_a_network_the_core_cannot_run_before_opening_the_port(capsys,
                                                                              tmp_path):
    net = hardware_network(TINY, 1, block_rows=4)
    weight_file.save(net, tmp_path / "n.sdw")
    np.save(tmp_path / "x.npy", np.zeros((1, *TINY.input_shape), np.int8))
    code, out, err = _run_cli(capsys, "run", tmp_path / "n.sdw", "--port",
                              tmp_path / "ttyNONE", "--inputs", tmp_path / "x.npy")
    assert code == 2 and "serial port" not in err and len(err.splitlines()) == 1
    assert "not a 1x1 convolution; to fit: a board configuration that holds it: " in err
    assert "--board icebreaker --core sd" in err
