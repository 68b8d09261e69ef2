"""The element-serial core, SerialCore, running complete networks bit-exactly.

Random small networks on several configurations in Amaranth's simulator, and one on
the generated Verilog under Icarus and Verilator: every operation's result against
the golden model (sim/golden/reference.py), every counter against the golden counts
(sim/golden/serial_counts.py), both from the network alone.
"""

import dataclasses

import numpy as np
import pytest

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.mac_lanes import MAC_WEIGHT_BITS
from sd_hw.errors import ParameterError, SdHwError
from sd_hw.network import Network
from sd_hw.serial.compiler import compile_serial
from sd_hw.serial.config import SerialConfig
from sim.golden.reference import rebuild_weight_rows
from sim.simulate import simulate
from tests.factories import assert_passed, hardware_network, random_inputs


SMALL_CNN = Network.from_dict({"input_shape": [1, 6, 6], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
    {"type": "relu", "name": "r1"},
    {"type": "maxpool2d", "name": "p1"},
    {"type": "conv2d", "name": "c2", "in_channels": 4, "out_channels": 5, "kernel_size": 3},
    {"type": "relu", "name": "r2"},
    {"type": "flatten", "name": "flat"},
    {"type": "linear", "name": "fc1", "in_features": 45, "out_features": 6},
    {"type": "relu", "name": "r3"},
    {"type": "linear", "name": "fc2", "in_features": 6, "out_features": 3}]})

ODD_CNN = Network.from_dict({"input_shape": [2, 5, 7], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 2, "out_channels": 3, "kernel_size": 3},
    {"type": "maxpool2d", "name": "p1"},
    {"type": "relu", "name": "r1"},
    {"type": "flatten", "name": "flat"},
    {"type": "linear", "name": "fc", "in_features": 18, "out_features": 4}]})

MLP = Network.from_dict({"input_shape": [10], "layers": [
    {"type": "linear", "name": "fc1", "in_features": 10, "out_features": 7},
    {"type": "relu", "name": "r1"},
    {"type": "linear", "name": "fc2", "in_features": 7, "out_features": 4}]})


def fit_multipliers(net):
    """Lower the exponents of the coefficients of rows whose rebuilt weights do not fit
    the lanes' 16-bit multiplier input, until every weight fits (the network stays a
    valid SmartDeal network, and the accumulator bounds only shrink)."""
    limit = 1 << (MAC_WEIGHT_BITS - 1)
    for layer in net.layers.values():
        weights = layer.weights
        while True:
            rows = rebuild_weight_rows(weights)
            bad = ((rows < -limit) | (rows >= limit)).any(axis=2)
            if not bad.any():
                break
            lowered = np.where(weights.present & bad[..., None] & (weights.exponent > 0),
                               weights.exponent - 1, weights.exponent)
            weights.exponent = lowered.astype(np.uint8)
    return net


def serial_network(network, seed, *, lanes, block_rows=192):
    return fit_multipliers(hardware_network(network, seed, block_rows=block_rows, group=lanes))


def small_config(**datapath):
    return SerialConfig(datapath=AcceleratorConfig(**datapath), bank_depth=1024,
                        activation_bytes=1024, basis_depth=16, param_depth=64, output_depth=16,
                        program_depth=64)


#: (network, datapath parameters, network block_rows, seed)
CASES = [
    (SMALL_CNN, dict(lanes=4), 192, 1),
    (SMALL_CNN, dict(lanes=3), 5, 2),
    (ODD_CNN, dict(lanes=2), 4, 3),
    (MLP, dict(lanes=8), 2, 4),
    (MLP, dict(lanes=1), 192, 5),
]


@pytest.mark.parametrize("lanes, banks", [(16, 6), (2, 1), (5, 4)])
def test_other_bank_counts(lanes, banks, tmp_path):
    """Records spread over more or fewer weight banks (block RAM on larger chips)."""
    config = dataclasses.replace(small_config(lanes=lanes), weight_banks=banks, basis_depth=64)
    net = serial_network(SMALL_CNN, 30 + banks, lanes=lanes, block_rows=5)
    report = simulate(net, config, random_inputs(SMALL_CNN, 1, 3), simulator="amaranth",
                      build_dir=tmp_path)
    assert_passed(report)


def test_without_counters_only_cycles_count(tmp_path):
    config = SerialConfig(datapath=AcceleratorConfig(lanes=2), bank_depth=1024,
                          activation_bytes=1024, basis_depth=16, param_depth=64,
                          output_depth=16, program_depth=64, counters=False)
    net = serial_network(MLP, 9, lanes=2)
    report = simulate(net, config, random_inputs(MLP, 1, 9), simulator="amaranth",
                      build_dir=tmp_path)
    assert_passed(report)
    counters = report.counters[0]
    assert counters["cycles"] > 0
    assert all(value == 0 for name, value in counters.items() if name != "cycles")


@pytest.mark.parametrize("index", range(len(CASES)))
def test_random_networks_in_amaranth(index, tmp_path):
    network, datapath, block_rows, seed = CASES[index]
    config = small_config(block_rows=max(block_rows, 4), **datapath)
    net = serial_network(network, seed, lanes=config.lanes, block_rows=block_rows)
    report = simulate(net, config, random_inputs(network, 2, seed), simulator="amaranth",
                      build_dir=tmp_path)
    assert_passed(report)
    assert report.layers_checked == 2 * len(network.compute_layers)
    assert all(c["cycles"] > 0 for c in report.counters)


@pytest.mark.slow
@pytest.mark.parametrize("primitives", ["generic", "ice40"])
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_generated_verilog(simulator, primitives, tmp_path):
    """The generated Verilog; with ``primitives="ice40"`` the UP5K netlist, whose
    SB_SPRAM256KA and SB_MAC16 run as yosys' simulation models. Icarus, a four-state
    simulator, fails the run on any undefined bit read back."""
    config = dataclasses.replace(small_config(lanes=4), primitives=primitives)
    net = serial_network(SMALL_CNN, 21, lanes=4, block_rows=5)
    report = simulate(net, config, random_inputs(SMALL_CNN, 2, 21), simulator=simulator,
                      build_dir=tmp_path)
    assert_passed(report)


def test_refusals_name_the_problem():
    config = small_config(lanes=2)
    net = serial_network(MLP, 7, lanes=2)
    net.layers["fc1"].weights.exponent[0, 0, :] = 7
    net.layers["fc1"].weights.present[0, 0, :] = True
    net.layers["fc1"].weights.basis[0, 0] = -128
    with pytest.raises(SdHwError, match=r"layer 'fc1'.*channel 0, Ce row 0.*16-bit"):
        compile_serial(net, config)
    small = SerialConfig(datapath=AcceleratorConfig(lanes=2), bank_depth=16,
                         activation_bytes=32, basis_depth=1, param_depth=4, output_depth=1,
                         program_depth=8)
    with pytest.raises(SdHwError) as error:
        compile_serial(serial_network(SMALL_CNN, 8, lanes=2), small)
    message = str(error.value)
    for what in ("weight bank words", "bases per lane", "channel parameters", "program words",
                 "activation bytes", "output words"):
        assert what in message


def test_unsupported_layers_are_refused():
    conv1x1 = Network.from_dict({"input_shape": [4, 3, 3], "layers": [
        {"type": "conv2d", "name": "c1", "in_channels": 4, "out_channels": 5,
         "kernel_size": 1}]})
    with pytest.raises(SdHwError, match=r"layer 'c1'.*1x1"):
        compile_serial(serial_network(conv1x1, 1, lanes=2), small_config(lanes=2))
    pooled_last = Network.from_dict({"input_shape": [1, 4, 4], "layers": [
        {"type": "conv2d", "name": "c1", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
        {"type": "maxpool2d", "name": "p1"}]})
    with pytest.raises(SdHwError, match="does not pool"):
        compile_serial(serial_network(pooled_last, 1, lanes=2), small_config(lanes=2))


@pytest.mark.parametrize("field, value", [("bank_depth", 8), ("activation_bytes", 33),
                                          ("basis_depth", 0)])
def test_bad_configuration_is_refused(field, value):
    with pytest.raises(ParameterError, match=field):
        SerialConfig(**{field: value})


def test_configuration_round_trips():
    config = small_config(lanes=3)
    assert SerialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ParameterError, match="unknown serial core parameter"):
        SerialConfig.from_dict({"weight_depth": 3})
