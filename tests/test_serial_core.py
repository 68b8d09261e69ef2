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


def factored_config(*, basis_group=None, **datapath):
    return dataclasses.replace(small_config(dataflow="factored", **datapath),
                               basis_group=basis_group, basis_depth=32)


#: (network, datapath parameters, basis group, network block_rows, seed)
FACTORED_CASES = [
    (SMALL_CNN, dict(lanes=4), None, 192, 41),
    (SMALL_CNN, dict(lanes=4), 2, 5, 42),
    (SMALL_CNN, dict(lanes=3), 1, 4, 43),
    (ODD_CNN, dict(lanes=2), None, 4, 44),
    (MLP, dict(lanes=8), 4, 2, 45),
    (MLP, dict(lanes=1), None, 192, 46),
]


@pytest.mark.parametrize("index", range(len(FACTORED_CASES)))
def test_factored_networks_in_amaranth(index, tmp_path):
    """The factored lanes, bases shared by groups of lanes: every operation against the
    golden model's factored dataflow, every counter against its counts."""
    network, datapath, group, block_rows, seed = FACTORED_CASES[index]
    config = factored_config(basis_group=group, block_rows=max(block_rows, 4), **datapath)
    net = hardware_network(network, seed, block_rows=block_rows, group=config.lanes,
                           shared_basis=config.shared_lanes)
    report = simulate(net, config, random_inputs(network, 2, seed), simulator="amaranth",
                      build_dir=tmp_path)
    assert_passed(report)
    assert report.layers_checked == 2 * len(network.compute_layers)


def test_factored_ulx3s_shape(tmp_path):
    """The ULX3S's shared-basis core (32 lanes, four basis engines of 8, eleven banks)
    with small memories."""
    from boards.ulx3s import SHARED_CONFIG
    config = dataclasses.replace(SHARED_CONFIG, bank_depth=1024, activation_bytes=1024,
                                 basis_depth=16, param_depth=64, output_depth=16,
                                 program_depth=64)
    net = hardware_network(SMALL_CNN, 70, block_rows=5, group=32, shared_basis=8)
    report = simulate(net, config, random_inputs(SMALL_CNN, 1, 70), simulator="amaranth",
                      build_dir=tmp_path)
    assert_passed(report)


def test_factored_lanes_take_weights_the_multipliers_could_not():
    """No weight is rebuilt: a row whose rebuilt weight exceeds 16 bits compiles for the
    factored lanes and is refused for the rebuilding ones."""
    net = hardware_network(MLP, 47, group=2, shared_basis=2)
    weights = net.layers["fc1"].weights
    weights.present[0, 0, :] = True
    weights.exponent[0, 0, :] = 7
    weights.basis[0:2, 0] = -128
    with pytest.raises(SdHwError, match="16-bit"):
        compile_serial(net, small_config(lanes=2))
    program = compile_serial(net, factored_config(lanes=2))
    assert program.usage["bases per lane"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("primitives", ["generic", "ice40"])
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_factored_generated_verilog(simulator, primitives, tmp_path):
    """The factored core's Verilog (with ``"ice40"``, its SB_MAC16 in 8x8 mode and the
    SPRAMs as yosys' models), two basis engines of two lanes."""
    config = dataclasses.replace(factored_config(lanes=4, basis_group=2),
                                 primitives=primitives)
    net = hardware_network(SMALL_CNN, 48, block_rows=5, group=4, shared_basis=2)
    report = simulate(net, config, random_inputs(SMALL_CNN, 2, 48), simulator=simulator,
                      build_dir=tmp_path)
    assert_passed(report)


def test_bases_not_shared_within_a_basis_group_are_refused():
    net = hardware_network(SMALL_CNN, 49, block_rows=5, group=4, shared_basis=2)
    weights = net.layers["c2"].weights
    used = np.flatnonzero(weights.present[0:4].any(axis=(0, 2)))
    block = int(used[-1]) // weights.block_rows
    weights.basis[3, block, 1, 2] ^= 1
    compile_serial(net, factored_config(lanes=4, basis_group=1))
    with pytest.raises(SdHwError, match=rf"layer 'c2', lane group 0, block {block}: channel 3 "
                                        rf".*channel 2.*--shared-basis 2"):
        compile_serial(net, factored_config(lanes=4, basis_group=2))


@pytest.mark.parametrize("fields, match", [
    (dict(basis_group=2), "basis_group.*factored"),
    (dict(dataflow="factored", basis_group=3), "basis_group.*divide.*1, 2, 4"),
    (dict(dataflow="factored", basis_group=0), "basis_group"),
    (dict(dataflow="factored", activation_bits=10), "activation_bits.*8x8"),
])
def test_bad_factored_configuration_is_refused(fields, match):
    group = fields.pop("basis_group", None)
    with pytest.raises(ParameterError, match=match):
        SerialConfig(datapath=AcceleratorConfig(lanes=4, **fields), basis_group=group)


def test_factored_configuration_round_trips():
    config = factored_config(lanes=4, basis_group=2)
    assert SerialConfig.from_dict(config.to_dict()) == config
    assert (config.shared_lanes, config.basis_memories) == (2, 2)
    assert factored_config(lanes=4).shared_lanes == 4
    assert small_config(lanes=4).basis_memories == 4


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
