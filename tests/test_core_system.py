"""The whole accelerator, SDCore, running complete networks bit-exactly.

Tier 1 runs random small networks on many configurations in Amaranth's
simulator; tier 2 runs the bundled digits MLP and CNN on the generated
Verilog under Icarus and Verilator through cocotb. Every run compares every
layer's result with the golden model (sim/golden/reference.py) and every
performance counter with the golden model's counts (sim/golden/counts.py),
both computed from the network alone.
"""

import dataclasses

import numpy as np
import pytest

from sd_hw.compiler import compile_network
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.core.host_map import Register, Space, address
from sd_hw.errors import ParameterError
from sd_hw.network import Network
from sim.compress import CompressOptions
from sim.flow import compress_model
from sim.golden.counts import expected_counters
from sim.golden.digits import DEFAULT_CNN, DEFAULT_MLP, load_digits_split
from sim.golden.model_file import FloatModel
from sim.golden.train import train_float
from sim.host.script import BusScript
from sim.simulate import (build_script, compare, core_shape, execute_script, layer_waveform,
                          simulate)
from tests.factories import TINY, assert_passed, hardware_network, random_inputs


CONV1X1 = Network.from_dict({"input_shape": [4, 3, 3], "layers": [
    {"type": "relu", "name": "relu0"},
    {"type": "conv2d", "name": "c1", "in_channels": 4, "out_channels": 5, "kernel_size": 1},
    {"type": "relu", "name": "relu1"},
    {"type": "flatten", "name": "flat"},
    {"type": "linear", "name": "fc", "in_features": 45, "out_features": 3},
    {"type": "relu", "name": "relu2"}]})

MLP = Network.from_dict({"input_shape": [10], "layers": [
    {"type": "linear", "name": "fc1", "in_features": 10, "out_features": 7},
    {"type": "relu", "name": "r1"},
    {"type": "linear", "name": "fc2", "in_features": 7, "out_features": 4}]})

#: (network, datapath overrides, core overrides, network block_rows, seed)
RANDOM_CASES = [
    (TINY, dict(lanes=2), {}, 4, 1),
    (TINY, dict(lanes=3, dataflow="factored"), {}, 5, 2),
    (TINY, dict(lanes=1, stream_bits=8), {}, 3, 3),
    (TINY, dict(lanes=4, stream_bits=32, code_bits=4, accumulator_bits=40), {}, 192, 4),
    (CONV1X1, dict(lanes=2, block_rows=8), {}, 2, 5),
    (CONV1X1, dict(lanes=5, dataflow="factored", stream_bits=8), {}, 6, 6),
    (MLP, dict(lanes=3, accumulator_bits=40), {}, 2, 7),
    # Activation memory too small for a region per tensor: tensors share two regions.
    (TINY, dict(lanes=2), dict(activation_depth=100), 4, 8),
    # Decoded row records in the weight memories instead of the packed stream; blocks
    # larger than the (unused) decoder's block_rows.
    (TINY, dict(lanes=1, block_rows=4), dict(coefficients="unpacked"), 7, 9),
    (CONV1X1, dict(lanes=3, dataflow="factored"), dict(coefficients="unpacked"), 4, 10),
    (MLP, dict(lanes=2, code_bits=4, accumulator_bits=40), dict(coefficients="unpacked"), 3, 11),
    # The dense int8 baseline: int8 weight rows, blocks of the datapath's block_rows.
    (TINY, dict(lanes=2, block_rows=5), dict(weights="dense"), 0, 12),
    (CONV1X1, dict(lanes=3), dict(weights="dense"), 0, 13),
    (MLP, dict(lanes=1, block_rows=2), dict(weights="dense"), 0, 14),
    # Lookahead 2: two rows per cycle, all-zero activation rows dropped before the lanes.
    (TINY, dict(lanes=2), dict(coefficients="unpacked", row_lookahead=2), 4, 15),
    (CONV1X1, dict(lanes=3, dataflow="factored"), dict(coefficients="unpacked",
                                                       row_lookahead=2), 4, 16),
    (TINY, dict(lanes=1), dict(coefficients="unpacked", row_lookahead=2,
                               activation_depth=100), 3, 17),
    (CONV1X1, dict(lanes=2, block_rows=4), dict(weights="dense", row_lookahead=2), 0, 18),
    (TINY, dict(lanes=3, block_rows=5), dict(weights="dense", row_lookahead=2), 0, 19),
]


def case_id(case):
    network, datapath, core, block_rows, seed = case
    name = {id(TINY): "tiny", id(CONV1X1): "conv1x1", id(MLP): "mlp"}[id(network)]
    parts = [f"{k}={v}" for k, v in {**datapath, **core}.items()]
    return "-".join([name, *parts, f"rows{block_rows}"])


@pytest.mark.parametrize("case", RANDOM_CASES, ids=case_id)
def test_random_networks_in_amaranth(case, tmp_path):
    network, datapath, core, block_rows, seed = case
    config = CoreConfig(datapath=AcceleratorConfig(**datapath), **core)
    dense = config.weights == "dense"
    net = hardware_network(network, seed, block_rows=block_rows or 192, code_bits=3,
                           group=config.lanes, dense=dense)
    x = random_inputs(network, 2, seed)
    program = compile_network(net, config)
    assert program.reuses_regions == ("activation_depth" in core)
    report = simulate(net, config, x, simulator="amaranth", build_dir=tmp_path)
    assert_passed(report)
    assert report.layers_checked == 2 * len(program.ops)
    # Structured sparsity was there to skip, and the skipped rows cost no row cycles.
    assert report.counters[0]["skipped_rows"] > 0
    assert report.counters[0]["rows"] + report.counters[0]["skipped_rows"] > 0
    assert (report.counters[0]["basis_reads"] == 0) == dense
    if config.row_lookahead == 2:
        # Zero activation rows (ReLU outputs) were there to drop: fewer rows reached the
        # lanes than the index issued.
        issued = [expected_counters(net, xi, dataclasses.replace(core_shape(config),
                                                                 row_lookahead=1))["rows"]
                  for xi in x]
        assert sum(c["rows"] for c in report.counters) < sum(issued)


def test_zero_activation_rows_are_counted(tmp_path):
    """An all-zero input makes every first-layer row zero; the counter sees them."""
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2))
    net = hardware_network(MLP, 11, block_rows=4, group=2)
    x = np.zeros((1, 10), np.int8)
    report = simulate(net, config, x, simulator="amaranth", build_dir=tmp_path)
    assert_passed(report)
    program = compile_network(net, config)
    first = net.layers["fc1"].weights
    groups = -(-first.out_channels // 2)
    live = sum(first.row_nonzero()[g * 2:(g + 1) * 2].any(axis=0).sum() or 1
               for g in range(groups))
    assert report.counters[0]["zero_rows"] >= live
    assert program.op_count == 2


SPARSE_INPUT = Network.from_dict({"input_shape": [8, 3, 3], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 8, "out_channels": 4, "kernel_size": 3},
    {"type": "relu", "name": "r1"},
    {"type": "flatten", "name": "flat"},
    {"type": "linear", "name": "fc", "in_features": 36, "out_features": 3}]})


@pytest.mark.parametrize("core", [dict(coefficients="unpacked"), dict(weights="dense")],
                         ids=["unpacked", "dense"])
def test_lookahead_two_saves_cycles_on_zero_rows(core, tmp_path):
    """The same network and inputs: with many zero activation rows, lookahead 2 needs
    far fewer cycles than lookahead 1; with few (padding and ReLU zeros only), no more."""
    dense = core.get("weights") == "dense"
    net = hardware_network(SPARSE_INPUT, 51, block_rows=12, group=4, shared_zero_rows=0.0,
                           row_density=1.0, dense=dense)
    rng = np.random.default_rng(51)
    x = rng.integers(1, 128, size=(2, 8, 3, 3)).astype(np.int8)
    x[0, 2:] = 0            # six of eight input channels zero
    cycles = {}
    for lookahead in (1, 2):
        config = CoreConfig(datapath=AcceleratorConfig(lanes=4), row_lookahead=lookahead,
                            **core)
        report = simulate(net, config, x, simulator="amaranth", build_dir=tmp_path)
        assert_passed(report)
        cycles[lookahead] = report.cycles
    (sparse1, full1), (sparse2, full2) = cycles[1], cycles[2]
    assert sparse2 < 0.75 * sparse1, cycles
    assert full2 <= 1.05 * full1, cycles


def test_row_lookahead_configuration():
    assert CoreConfig().row_lookahead == 1
    for config in (CoreConfig(coefficients="unpacked", row_lookahead=2),
                   CoreConfig(weights="dense", row_lookahead=2)):
        assert CoreConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ParameterError, match=r"parameter 'row_lookahead' is 2.*parameter "
                                             r"'coefficients' = 'packed'.*decoded in order"):
        CoreConfig(row_lookahead=2)
    for bad in (0, 3, True, "2"):
        with pytest.raises(ParameterError, match=r"parameter 'row_lookahead' is .*, allowed "
                                                 r"values are 1, 2"):
            CoreConfig(coefficients="unpacked", row_lookahead=bad)


@pytest.mark.parametrize("lookahead", [1, 2])
def test_datapath_register_reports_the_lookahead(lookahead, tmp_path):
    config = CoreConfig(datapath=AcceleratorConfig(lanes=1), coefficients="unpacked",
                        row_lookahead=lookahead)
    script = BusScript()
    script.read(address(Space.REGISTERS, Register.DATAPATH), 1, "datapath")
    words, _ = execute_script(script, config, simulator="amaranth", build_dir=tmp_path)
    (word,) = words["datapath"]
    assert (word & 0xFF, word >> 21 & 1, word >> 22 & 1) == (1, 1, 0)
    assert word >> 23 & 1 == (lookahead == 2)


def test_negative_control_names_layer_and_element(tmp_path):
    """The comparison is live: a golden model with one bias changed is caught."""
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2))
    net = hardware_network(TINY, 21, block_rows=4, group=2)
    x = random_inputs(TINY, 1, 21)
    program = compile_network(net, config)
    words, _ = execute_script(build_script(net, program, x), config, simulator="amaranth",
                              build_dir=tmp_path)
    assert compare(net, program, x, words, simulator="amaranth").passed
    wrong = dataclasses.replace(net, layers=dict(net.layers))
    wrong.layers["fc"] = dataclasses.replace(net.layers["fc"],
                                             bias=net.layers["fc"].bias.copy())
    wrong.layers["fc"].bias[3] += 1
    report = compare(wrong, program, x, words, simulator="amaranth")
    assert not report.passed
    (mismatch,) = report.mismatches
    assert (mismatch.layer, mismatch.index) == ("fc", (3,))
    assert mismatch.expected == mismatch.got + 1
    assert "'fc'" in str(mismatch) and "(3,)" in str(mismatch)


# Tier 2: the digits networks on the generated Verilog. ------------------------------

@pytest.fixture(scope="module")
def digits_networks():
    """The bundled MLP and CNN, briefly trained and compressed with group pruning."""
    data = load_digits_split(seed=0)
    nets = {}
    for name, network, prune in (("mlp", DEFAULT_MLP, {"fc1": 0.5}),
                                 ("cnn", DEFAULT_CNN, {"conv2": 0.5, "fc": 0.5})):
        params = train_float(network, data, epochs=3, seed=0)
        x_train = data.inputs_for(network, "train")
        model = FloatModel(network, params, calibration=x_train[:128])
        nets[name] = compress_model(model, CompressOptions(prune=prune)).integer_network
        every_layer = frozenset(spec.name for spec in network.compute_layers)
        nets[f"{name}-dense"] = compress_model(
            model, CompressOptions(dense=every_layer)).integer_network
    return nets, data


def digits_inputs(nets_and_data, name, count):
    nets, data = nets_and_data
    network = DEFAULT_MLP if name.startswith("mlp") else DEFAULT_CNN
    x = data.inputs_for(network, "test")
    return nets[name], nets[name].quantize_input(x[:count])


@pytest.fixture(scope="module")
def core_builds(tmp_path_factory):
    """One simulator build folder per test worker, shared by the digits tests."""
    return tmp_path_factory.mktemp("core-builds")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_digits_on_icarus(name, digits_networks, core_builds):
    net, x = digits_inputs(digits_networks, name, 2)
    report = simulate(net, CoreConfig(), x, simulator="icarus", build_dir=core_builds)
    assert_passed(report)
    assert report.layers_checked == 2 * len(compile_network(net, CoreConfig()).ops)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_digits_on_verilator(name, digits_networks, core_builds):
    net, x = digits_inputs(digits_networks, name, 24)
    report = simulate(net, CoreConfig(), x, simulator="verilator", build_dir=core_builds)
    assert_passed(report)
    assert np.array_equal(np.argmax(report.outputs, axis=1), np.argmax(report.golden, axis=1))


@pytest.mark.slow
def test_factored_core_on_verilator(digits_networks, core_builds):
    config = CoreConfig(datapath=AcceleratorConfig(dataflow="factored", lanes=3))
    net, x = digits_inputs(digits_networks, "cnn", 6)
    assert_passed(simulate(net, config, x, simulator="verilator", build_dir=core_builds))


@pytest.mark.parametrize("name", ["mlp-dense", "cnn-dense"])
def test_dense_core_on_icarus(name, digits_networks, core_builds):
    """The dense int8 baseline core runs the undecomposed networks bit-exactly."""
    config = CoreConfig(weights="dense")
    net, x = digits_inputs(digits_networks, name, 2)
    assert not any(layer.decomposed for layer in net.layers.values())
    report = simulate(net, config, x, simulator="icarus", build_dir=core_builds)
    assert_passed(report)
    assert all(counters["basis_reads"] == 0 for counters in report.counters)


@pytest.mark.parametrize("overrides", [dict(lanes=1, stream_bits=8),
                                       dict(lanes=2, dataflow="factored")],
                         ids=["lanes1-stream8", "lanes2-factored"])
def test_random_network_on_icarus(overrides, tmp_path):
    config = CoreConfig(datapath=AcceleratorConfig(**overrides), activation_depth=256)
    net = hardware_network(CONV1X1, 31, block_rows=4, group=config.lanes)
    x = random_inputs(CONV1X1, 1, 31)
    assert_passed(simulate(net, config, x, simulator="icarus", build_dir=tmp_path))


def test_lookahead_two_on_icarus(tmp_path):
    """The lookahead-2 front end on the generated Verilog (one small case)."""
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2), coefficients="unpacked",
                        row_lookahead=2, activation_depth=256)
    net = hardware_network(CONV1X1, 33, block_rows=4, group=config.lanes)
    x = random_inputs(CONV1X1, 1, 33)
    report = simulate(net, config, x, simulator="icarus", build_dir=tmp_path)
    assert_passed(report)
    assert report.counters[0]["zero_rows"] > 0


def test_layer_waveform_records_one_layer(tmp_path):
    config = CoreConfig(datapath=AcceleratorConfig(lanes=1), activation_depth=256)
    net = hardware_network(MLP, 41, block_rows=4, group=1)
    x = random_inputs(MLP, 1, 41)
    program = compile_network(net, config)
    waveform = layer_waveform(net, program, x[0], "fc2", simulator="icarus",
                              build_dir=tmp_path)
    assert waveform.suffix == ".fst" and waveform.stat().st_size > 1000
