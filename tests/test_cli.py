"""The ``sd-hw`` command end to end, through :func:`sim.cli.main`.

A float model file is written directly (He-initialised weights, no
training), compressed without retraining, inspected and evaluated; the
evaluation is compared with the golden reference on the same weight file.
``generate`` writes a block's Verilog and port map. Bad input must end with
exit code 2 and one line ``sd-hw: error: ...`` naming the file or
parameter, never a traceback.
"""

import contextlib
import io
import json
import re

import numpy as np
import pytest

from sd_hw import weight_file
from sd_hw.errors import SdHwError
from sd_hw.generate import BLOCKS
from sim.cli import main
from sim.golden.digits import DEFAULT_MLP
from sim.golden.model_file import save_model
from sim.golden.nn import init_params
from sim.golden.reference import run

from factories import TINY


NETWORKS = {"mlp": DEFAULT_MLP, "cnn": TINY}


def float_inputs(network, count, seed):
    return np.random.default_rng(seed).random((count, *network.input_shape))


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def compressed(request, tmp_path_factory):
    """``(network, model path, weight file path, stdout of compress)`` of one network."""
    network = NETWORKS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    model = folder / "model.npz"
    save_model(model, network, init_params(network, seed=1),
               calibration=float_inputs(network, 32, seed=2))
    output = folder / "model.sdw"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compress", str(model), "-o", str(output), "--retrain", "none",
                     "--iterations", "5", "--block-rows", "12"])
    assert code == 0
    return network, model, output, stdout.getvalue()


def run_ok(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    return out


def test_compress_writes_the_weight_file(compressed):
    network, _, path, stdout = compressed
    net = weight_file.load(path)
    assert net.network == network
    assert net.block_rows == 12
    assert net.metadata["retrain"] == "none"
    assert all(layer.decomposed for layer in net.layers.values())
    assert f"wrote {path} ({path.stat().st_size} bytes)" in stdout
    for layer in network.compute_layers:
        assert f"\n{layer.name} " in stdout  # a row of the storage table


def test_inspect_text(compressed, capsys):
    network, _, path, _ = compressed
    out = run_ok(capsys, "inspect", path)
    assert out.startswith(f"{path}: sd-hw weight file\n")
    assert f"input shape {tuple(network.input_shape)}" in out
    for index, layer in enumerate(network.layers):
        line = next(line for line in out.splitlines() if line.startswith(f"  {index:2d} "))
        assert f" {layer.name} " in line
        if layer.is_compute:
            assert "[decomposed" in line


def test_inspect_json(compressed, capsys):
    network, _, path, _ = compressed
    report = json.loads(run_ok(capsys, "inspect", path, "--json"))
    assert [layer["name"] for layer in report["network"]["layers"]] == \
        [layer.name for layer in network.layers]
    assert [layer["name"] for layer in report["storage"]["layers"]] == \
        [layer.name for layer in network.compute_layers]
    assert report["storage"]["file_bytes"] == path.stat().st_size
    assert (report["code_bits"], report["block_rows"]) == (3, 12)


@pytest.mark.parametrize("dtype", ["int8", "float"])
def test_evaluate_matches_the_reference(compressed, capsys, tmp_path, dtype):
    network, _, path, _ = compressed
    net = weight_file.load(path)
    if dtype == "int8":
        x = np.random.default_rng(4).integers(-128, 128, (16, *network.input_shape))
        x = x_int = x.astype(np.int8)
    else:
        x = float_inputs(network, 16, seed=3)
        x_int = net.quantize_input(x)
    np.save(tmp_path / "x.npy", x)
    expected = run(net, x_int)

    out = run_ok(capsys, "evaluate", path, "--inputs", tmp_path / "x.npy")
    assert [int(p) for p in out.split()] == np.argmax(expected, axis=1).tolist()

    out = run_ok(capsys, "evaluate", path, "--inputs", tmp_path / "x.npy",
                 "--dataflow", "factored", "-o", tmp_path / "logits.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)

    labels = np.argmax(expected, axis=1)
    labels[:4] = (labels[:4] + 1) % expected.shape[1]
    np.save(tmp_path / "labels.npy", labels)
    out = run_ok(capsys, "evaluate", path, "--inputs", tmp_path / "x.npy",
                 "--labels", tmp_path / "labels.npy")
    assert out == f"accuracy: {12 / 16:.4f} (12/16)\n"


def test_generate_writes_verilog_and_port_map(capsys, tmp_path):
    out = run_ok(capsys, "generate", "coefficient_decoder", "-o", tmp_path,
                 "--stream-bits", "8", "--code-bits", "2", "--block-rows", "20", "--lint")
    verilog, ports = tmp_path / "coefficient_decoder.v", tmp_path / "coefficient_decoder.ports.json"
    assert out.splitlines()[:2] == [f"wrote {verilog}", f"wrote {ports}"]
    assert "verilator lint passed" in out
    assert "module coefficient_decoder(" in verilog.read_text()
    port_map = json.loads(ports.read_text())
    assert port_map["top"] == "coefficient_decoder"
    assert {name: s["direction"] for name, s in port_map["streams"].items()} == \
        {"block": "sink", "words": "sink", "rows": "source"}
    assert port_map["ports"]["words__payload"]["width"] == 8
    assert (port_map["config"]["stream_bits"], port_map["config"]["code_bits"],
            port_map["config"]["block_rows"]) == (8, 2, 20)


def test_generate_lanes_and_dataflow(capsys, tmp_path):
    run_ok(capsys, "generate", "basis_engine", "-o", tmp_path, "--lanes", "2",
           "--dataflow", "factored")
    port_map = json.loads((tmp_path / "basis_engine.ports.json").read_text())
    assert set(port_map["streams"]) == {"activations", "active_basis__0", "active_basis__1",
                                        "products__0", "products__1"}


# Bad input. -------------------------------------------------------------------

def flip_byte(data):
    data = bytearray(data)
    data[len(data) // 2] ^= 0x40
    return bytes(data)


def truncate(data):
    return data[: len(data) - 7]


@pytest.fixture
def bad_files(compressed, tmp_path):
    network, model, path, _ = compressed
    data = path.read_bytes()
    (tmp_path / "corrupted.sdw").write_bytes(flip_byte(data))
    (tmp_path / "truncated.sdw").write_bytes(truncate(data))
    np.save(tmp_path / "x.npy", float_inputs(network, 2, seed=5))
    np.save(tmp_path / "wrong_shape.npy", np.zeros((2, 3)))
    (tmp_path / "model.npz").write_bytes(model.read_bytes())
    (tmp_path / "model.sdw").write_bytes(data)
    np.savez(tmp_path / "x.npz", x=float_inputs(network, 2, seed=5))
    np.save(tmp_path / "string_labels.npy", np.array(["cat", "dog"]))
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (tmp_path / "mistyped.json").write_text(json.dumps({"datapath": 8}))
    (tmp_path / "lanes.json").write_text(json.dumps({"datapath": {"lanes": "eight"}}))
    return tmp_path


BAD = {
    # Inputs a hostile user tried (issue 16): each one error line, exit status 2.
    "output into a missing folder": (["compress", "{d}/model.npz", "-o", "{d}/no/out.sdw"],
                                     "no/out.sdw: folder"),
    "output is a folder": (["evaluate", "{d}/model.sdw", "--inputs", "{d}/x.npy", "-o", "{d}"],
                           "is a folder, the outputs file to write is a file"),
    "inputs given an npz": (["evaluate", "{d}/model.sdw", "--inputs", "{d}/x.npz"],
                            "x.npz: a .npz archive, the inputs must be one .npy array"),
    "string labels": (["evaluate", "{d}/model.sdw", "--inputs", "{d}/x.npy", "--labels",
                       "{d}/string_labels.npy"],
                      "string_labels.npy (labels): array of text (<U3), expected integers"),
    "deeply nested config": (["config", "--config", "{d}/deep.json"],
                             "deep.json: not a JSON core configuration (nested too deeply)"),
    "mistyped config": (["config", "--config", "{d}/mistyped.json"],
                        "mistyped.json: field 'datapath' must be an object, got 8"),
    "mistyped config field": (["config", "--config", "{d}/lanes.json"],
                              "lanes.json (with the options given): parameter 'lanes' must be "
                              "an integer, got 'eight'"),
    "negative baud": (["run", "{d}/model.sdw", "--port", "/dev/null", "--inputs", "{d}/x.npy",
                       "--baud", "-1"], "argument --baud: -1 is not allowed (1 to 100000000)"),
    "zero epochs": (["train", "-o", "{d}/m.npz", "--epochs", "0"],
                    "argument --epochs: 0 is not allowed (1 to 100000)"),
    "missing model": (["compress", "{d}/absent.npz", "-o", "{d}/out.sdw"],
                      "absent.npz: no such file"),
    "not a model": (["compress", "{d}/x.npy", "-o", "{d}/out.sdw"], "x.npy: not a .npz model"),
    "missing weight file": (["inspect", "{d}/absent.sdw"], "absent.sdw: cannot read"),
    "corrupted weight file": (["inspect", "{d}/corrupted.sdw"],
                              "corrupted.sdw: checksum mismatch"),
    "corrupted weight file, evaluate": (["evaluate", "{d}/corrupted.sdw", "--inputs",
                                         "{d}/x.npy"], "corrupted.sdw: checksum mismatch"),
    "truncated weight file": (["evaluate", "{d}/truncated.sdw", "--inputs", "{d}/x.npy"],
                              "truncated.sdw: truncated"),
    "model as weight file": (["inspect", "{d}/model.npz"], "model.npz: not an sd-hw weight file"),
    "missing inputs": (["evaluate", "{d}/model.sdw", "--inputs", "{d}/absent.npy"],
                       "absent.npy: no such file"),
    "inputs of the wrong shape": (["evaluate", "{d}/model.sdw", "--inputs",
                                   "{d}/wrong_shape.npy"], "wrong_shape.npy: inputs have shape"),
    "compress code bits": (["compress", "{d}/model.npz", "-o", "{d}/out.sdw", "--code-bits", "9"],
                           "parameter 'code_bits' is 9"),
    "compress preset": (["compress", "{d}/model.npz", "-o", "{d}/out.sdw", "--preset", "fast"],
                        "parameter 'preset' is 'fast', allowed values are 'sd-hw', 'official'"),
    "compress accumulator bits": (["compress", "{d}/model.npz", "-o", "{d}/out.sdw",
                                   "--accumulator-bits", "8"],
                                  "parameter 'accumulator_bits' is 8, allowed range is 16 to 48"),
    "generate code bits": (["generate", "coefficient_decoder", "-o", "{d}/v", "--code-bits", "9"],
                           "parameter 'code_bits' is 9, allowed range is 1 to 6"),
    "generate lanes": (["generate", "basis_engine", "-o", "{d}/v", "--lanes", "0"],
                       "parameter 'lanes' is 0, allowed range is 1 to 64"),
    "generate lanes not a number": (["generate", "basis_engine", "-o", "{d}/v", "--lanes", "two"],
                                    "parameter 'lanes' must be an integer, got 'two'"),
    "generate stream bits": (["generate", "coefficient_decoder", "-o", "{d}/v",
                              "--stream-bits", "12"], "parameter 'stream_bits' is 12"),
    "generate dataflow": (["generate", "basis_engine", "-o", "{d}/v", "--dataflow", "fast"],
                          "parameter 'dataflow' is 'fast'"),
    "generate accumulator too narrow": (["generate", "basis_engine", "-o", "{d}/v",
                                         "--accumulator-bits", "20"],
                                        "parameter 'accumulator_bits' is 20"),
    "unknown block": (["generate", "adder", "-o", "{d}/v"],
                      "unknown block 'adder'; blocks are sd_core (the whole accelerator), "
                      + ", ".join(BLOCKS)),
    "simulate inputs of the wrong shape": (["simulate", "{d}/model.sdw", "--inputs",
                                            "{d}/wrong_shape.npy", "--sim", "amaranth"],
                                           "wrong_shape.npy: inputs have shape"),
    "simulate lanes": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy", "--lanes", "0"],
                       "parameter 'lanes' is 0, allowed range is 1 to 64"),
    "simulate activation memory too small": (["simulate", "{d}/model.sdw", "--inputs",
                                              "{d}/x.npy", "--activation-depth", "16"],
                                             "activation_depth = 16"),
    "simulate weight memory too small": (["simulate", "{d}/model.sdw", "--inputs",
                                          "{d}/x.npy", "--weight-depth", "16", "--lanes", "1"],
                                         "weight_depth = 16"),
    "simulate unknown depth value": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy",
                                      "--index-depth", "many"],
                                     "parameter 'index_depth' must be an integer, got 'many'"),
    "simulate missing config file": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy",
                                      "--config", "{d}/absent.json"],
                                     "absent.json: no such file (core configuration)"),
    "simulate weight kind": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy",
                              "--weights", "sparse"],
                             "parameter 'weights' is 'sparse', allowed values are "
                             "'smartdeal', 'dense'"),
    "simulate dense factored": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy",
                                 "--weights", "dense", "--dataflow", "factored"],
                                "it needs dataflow 'rebuild', got 'factored'"),
    "build clock not a number": (["build", "--board", "icebreaker", "--clock", "fast",
                                  "-o", "{d}/v"],
                                 "parameter 'clock' is 'fast'; it must be 'auto' or a frequency "
                                 "in MHz"),
    "build clock below the PLL's": (["build", "--board", "icebreaker", "--clock", "12",
                                     "-o", "{d}/v"],
                                    "--clock 12: iCE40 PLL: requested clock 12 MHz is outside "
                                    "16.125 MHz to 270 MHz, the outputs it makes from 12 MHz"),
    "build clock above the PLL's": (["build", "--board", "ulx3s", "--clock", "500",
                                     "-o", "{d}/v"],
                                    "--clock 500: ECP5 PLL: requested clock 500 MHz is outside "
                                    "3.125 MHz to 400 MHz"),
    "simulate lookahead on packed coefficients": (
        ["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy", "--row-lookahead", "2"],
        "parameter 'row_lookahead' is 2, which fetches a lane's weight record by row number; "
        "with parameter 'coefficients' = 'packed'"),
    "simulate lookahead 3": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy",
                              "--row-lookahead", "3", "--coefficients", "unpacked"],
                             "parameter 'row_lookahead' is 3, allowed values are 1, 2"),
    "simulate lookahead not a number": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy",
                                         "--row-lookahead", "two"],
                                        "parameter 'row_lookahead' must be an integer, "
                                        "got 'two'"),
    "simulate decomposed model on a dense core": (["simulate", "{d}/model.sdw", "--inputs",
                                                   "{d}/x.npy", "--weights", "dense"],
                                                  "is decomposed; a dense core"),
    "simulate count": (["simulate", "{d}/model.sdw", "--inputs", "{d}/x.npy", "--count", "0"],
                       "sd-hw simulate: argument --count: 0 is not allowed (at least 1)"),
    "output folder is a file": (["generate", "basis_engine", "-o", "{d}/x.npy"],
                                "x.npy: is a file, --out-dir must name a folder"),
}


@pytest.mark.parametrize("argv, message", list(BAD.values()), ids=list(BAD))
def test_bad_input_is_one_error_line(bad_files, capsys, argv, message):
    code = main([arg.format(d=bad_files) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sd-hw: error: ")
    assert message in lines[0]
    assert not (bad_files / "out.sdw").exists()
    assert not (bad_files / "v").exists()


def test_train_writes_a_model(tmp_path, capsys):
    assert main(["train", "--model", "mlp", "--epochs", "1", "-o", str(tmp_path / "m.npz")]) == 0
    out, err = capsys.readouterr()
    assert "float test accuracy" in out and (tmp_path / "m.npz").is_file()
    assert re.search(r"epoch 1/1: train loss \d+\.\d+, val accuracy 0\.\d+", err), err


def test_simulate_checks_every_layer(compressed, capsys, tmp_path):
    network, _, path, _ = compressed
    np.save(tmp_path / "x.npy", float_inputs(network, 2, seed=7))
    out = run_ok(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--sim", "amaranth",
                 "--lanes", "2", "--count", "1", "--build-dir", tmp_path / "build",
                 "-o", tmp_path / "out.npy")
    net = weight_file.load(path)
    assert "1 input(s) on amaranth" in out and "0 mismatching input(s)" in out
    assert "DIFFERS" not in out and "MISMATCH" not in out
    x = net.quantize_input(float_inputs(network, 2, seed=7))[:1]
    assert np.array_equal(np.load(tmp_path / "out.npy"), run(net, x))


def test_config_round_trips_through_a_file(capsys, tmp_path):
    out = run_ok(capsys, "config", "--lanes", "3", "--weight-depth", "512")
    (tmp_path / "core.json").write_text(out)
    again = run_ok(capsys, "config", "--config", tmp_path / "core.json", "--basis-depth", "64")
    description = json.loads(again)
    assert description["datapath"]["lanes"] == 3
    assert (description["weight_depth"], description["basis_depth"]) == (512, 64)


def test_config_row_lookahead(capsys):
    description = json.loads(run_ok(capsys, "config", "--coefficients", "unpacked",
                                    "--row-lookahead", "2"))
    assert (description["row_lookahead"], description["coefficients"]) == (2, "unpacked")
    assert json.loads(run_ok(capsys, "config"))["row_lookahead"] == 1


def test_simulate_on_the_serial_core(compressed, capsys, tmp_path):
    network, _, path, _ = compressed
    np.save(tmp_path / "x.npy", float_inputs(network, 1, seed=7))
    argv = ["simulate", path, "--inputs", tmp_path / "x.npy", "--sim", "amaranth", "--core",
            "serial", "--lanes", "4", "--build-dir", tmp_path / "build"]
    if any(layer.kind == "conv2d" and layer.kernel_size == 1 for layer in network.layers):
        code = main([str(arg) for arg in argv])
        _, err = capsys.readouterr()
        assert code == 2
        (line,) = err.strip().splitlines()
        assert line.startswith(
            "sd-hw: error: layer 'c2': the element-serial core runs 3x3 convolutions and "
            "linear layers, not a 1x1 convolution; to fit: a board configuration that holds "
            "it: ")
        assert "--board ulx3s --core sd" in line
        return
    out = run_ok(capsys, "simulate", path, "--inputs", tmp_path / "x.npy", "--sim", "amaranth",
                 "--core", "serial", "--lanes", "4", "--build-dir", tmp_path / "build",
                 "-o", tmp_path / "out.npy")
    net = weight_file.load(path)
    assert "1 input(s) on amaranth" in out and "0 mismatching input(s)" in out
    assert "elements" in out and "DIFFERS" not in out and "MISMATCH" not in out
    x = net.quantize_input(float_inputs(network, 1, seed=7))
    assert np.array_equal(np.load(tmp_path / "out.npy"), run(net, x))


def test_serial_config_round_trips_and_refuses_sd_options(capsys, tmp_path):
    out = run_ok(capsys, "config", "--core", "serial", "--lanes", "6")
    description = json.loads(out)
    assert description["core"] == "serial" and description["datapath"]["lanes"] == 6
    (tmp_path / "serial.json").write_text(out)
    again = json.loads(run_ok(capsys, "config", "--config", tmp_path / "serial.json",
                              "--no-counters"))
    assert again["core"] == "serial" and again["counters"] is False
    assert again["datapath"]["lanes"] == 6
    code = main(["config", "--core", "serial", "--weight-depth", "64"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip().splitlines() == ["sd-hw: error: option --weight-depth applies to the sd "
                                        "core, not to --core serial"]


def test_output_is_written_to_exactly_the_name_given(compressed, tmp_path, capsys):
    network, _, path, _ = compressed
    np.save(tmp_path / "x.npy", float_inputs(network, 2, seed=5))
    out = run_ok(capsys, "evaluate", path, "--inputs", tmp_path / "x.npy",
                 "-o", tmp_path / "logits")
    assert f"wrote {tmp_path / 'logits'}" in out
    assert np.array_equal(np.load(tmp_path / "logits"), run(weight_file.load(path),
                          weight_file.load(path).quantize_input(
                              np.load(tmp_path / "x.npy"))))
    assert not (tmp_path / "logits.npy").exists()


def test_a_closed_stdout_pipe_ends_quietly(compressed):
    """``sd-hw inspect F | head -1``: no traceback, exit status 141 (128 + SIGPIPE)."""
    import subprocess
    import sys
    _, _, path, _ = compressed
    code = ("import sys; from sim.cli import main; sys.exit(main(sys.argv[1:]))")
    with subprocess.Popen([sys.executable, "-c", code, "inspect", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()  # the reader goes away before the output (block-buffered) comes
        stderr = process.stderr.read().decode()
        assert process.wait() == 141
    assert stderr == ""


def test_shared_core_kind(capsys, tmp_path):
    """``--core shared``: the SerialCore with the factored dataflow; a board's
    SHARED_CONFIG; a board without one and a contradicting dataflow are refused."""
    description = json.loads(run_ok(capsys, "config", "--core", "shared", "--lanes", "4"))
    assert description["core"] == "serial"
    assert description["datapath"]["dataflow"] == "factored"
    assert description["datapath"]["lanes"] == 4
    (tmp_path / "shared.json").write_text(json.dumps(description))
    again = json.loads(run_ok(capsys, "config", "--config", tmp_path / "shared.json"))
    assert again == description
    code = main(["config", "--core", "shared", "--dataflow", "rebuild"])
    _, err = capsys.readouterr()
    assert code == 2 and "--core shared is the factored dataflow" in err
    out = run_ok(capsys, "boards")
    assert "--core shared: serial, 8 lane(s)" in out and "factored, 8 lanes a basis engine" in out
    from argparse import Namespace
    from boards.icebreaker import SHARED_CONFIG
    from sim.cli import _board_config
    assert _board_config(Namespace(board="icebreaker", core_kind="shared")) == SHARED_CONFIG
    with pytest.raises(SdHwError, match="'orangecrab' has no shared-basis"):
        _board_config(Namespace(board="orangecrab", core_kind="shared"))
