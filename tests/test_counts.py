"""The golden model's performance counts, checked by hand on tiny layers, and on the RTL."""

import dataclasses

import numpy as np

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.network import Network
from sim.golden.counts import CoreShape, cycle_estimate, expected_counters, layer_plan
from sim.simulate import core_shape, simulate

from factories import hardware_network

SHAPE = CoreShape(lanes=2, stream_bits=16, code_bits=3, basis_words=5, op_words=6,
                  group_words=4)


def single_layer(network, seed=0):
    net = hardware_network(network, seed, block_rows=2, shared_zero_rows=0.0)
    weights = next(iter(net.layers.values())).weights
    for array in (weights.present, weights.negative):
        array[:] = False
    weights.exponent[:] = 0
    return net, weights


def test_linear_layer_by_hand(tmp_path):
    network = Network.from_dict({"input_shape": [6], "layers": [
        {"type": "linear", "name": "fc", "in_features": 6, "out_features": 2}]})
    net, weights = single_layer(network)
    weights.present[0, 0, [0, 2]] = True     # channel 0: row 0 has two coefficients
    weights.negative[0, 0, 2] = True
    weights.exponent[0, 0, 2] = 1
    weights.present[1, 1, 1] = True          # channel 1: row 1 has one
    weights.exponent[1, 1, 1] = 2
    x = np.array([0, 0, 0, 1, 2, 3], np.int8)
    assert expected_counters(net, x, SHAPE) == {
        "rows": 2,               # one pass, rows 0 and 1 live in the group
        "zero_rows": 1,          # inputs 0..2 are zero
        "skipped_rows": 0,
        # lane 0: 2 bitmap bits + (3 mask + 2 codes x 4) = 13 bits -> 1 word; lane 1:
        # 2 + 3 + 4 = 9 bits -> 1 word; each lane also reads its length header.
        "weight_reads": 4,
        "basis_reads": 10,       # 2 lanes x 1 block x 5 words
        "index_reads": 7,        # group header (4) + block header + 2 rows
        "param_reads": 4,
        "activation_reads": 6,
        "activation_writes": 0,
        "output_writes": 2,
        "program_reads": 6,
    }
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2))
    report = simulate(net, config, x[None], simulator="amaranth", build_dir=tmp_path)
    assert report.passed
    assert {k: report.counters[0][k] for k in report.expected_counters[0]} \
        == report.expected_counters[0]


def test_lookahead_two_linear_layer_by_hand(tmp_path):
    network = Network.from_dict({"input_shape": [9], "layers": [
        {"type": "linear", "name": "fc", "in_features": 9, "out_features": 2}]})
    net, weights = single_layer(network)     # blocks of two rows: (0, 1), (2)
    weights.present[0, :, 0] = True          # every row live in the group
    x = np.array([0, 0, 0, 0, 0, 0, 5, 0, 0], np.int8)
    shape = dataclasses.replace(SHAPE, coefficients="unpacked", row_lookahead=2)
    counts = expected_counters(net, x, shape)
    # Row 0 is zero and not its block's last: dropped. Row 1 is zero but ends block 0,
    # row 2 (nonzero) ends block 1: both reach the lanes.
    assert (counts["rows"], counts["zero_rows"]) == (2, 2)
    assert counts["weight_reads"] == 2 * 2          # one record per lane and row, no header
    assert counts["index_reads"] == 4 + 2 + 3       # group header, two block headers, rows
    assert counts["activation_reads"] == 9
    one = expected_counters(net, x, dataclasses.replace(shape, row_lookahead=1))
    assert (one["rows"], one["zero_rows"], one["weight_reads"]) == (3, 2, 2 * (1 + 3))
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2), coefficients="unpacked",
                        row_lookahead=2)
    report = simulate(net, config, x[None], simulator="amaranth", build_dir=tmp_path)
    assert report.passed
    assert {k: report.counters[0][k] for k in counts} == counts


def test_lookahead_two_estimate_follows_the_input():
    network = Network.from_dict({"input_shape": [60], "layers": [
        {"type": "linear", "name": "fc", "in_features": 60, "out_features": 2}]})
    net, weights = single_layer(network)
    weights.present[:, :, 1] = True
    shape = dataclasses.replace(SHAPE, coefficients="unpacked", row_lookahead=2)
    ones = np.ones(60, np.int8)
    zeros = np.zeros(60, np.int8)
    # Ten blocks of two rows: entries H R R H R R ..., read in aligned pairs (H, R),
    # (R, H), (R, R) per two blocks, a pair per cycle and a row per cycle to the lanes.
    # With a nonzero input: 1 + 1 + 2 cycles; with a zero one, the first row of each
    # block is dropped (the last is not): 1 + 1 + 1. Five cycles saved.
    assert cycle_estimate(net, shape, ones) == cycle_estimate(net, shape)
    assert cycle_estimate(net, shape) - cycle_estimate(net, shape, zeros) == 5
    big = hardware_network(network, 3, block_rows=192, shared_zero_rows=0.0, row_density=1.0)
    assert big.layers["fc"].weights.row_nonzero().any(axis=0).all()
    saved = cycle_estimate(big, shape) - cycle_estimate(big, shape, zeros)
    # 20 rows in one block: (header, row), 9 pairs of rows, then the last row alone. All
    # zero, the 9 pairs of rows take a cycle each instead of two.
    assert saved == 9


def test_conv3_padding_rows_by_hand(tmp_path):
    network = Network.from_dict({"input_shape": [1, 2, 2], "layers": [
        {"type": "conv2d", "name": "c", "in_channels": 1, "out_channels": 1, "kernel_size": 3}]})
    net, weights = single_layer(network)
    weights.present[0, :, :] = True
    x = np.ones((1, 2, 2), np.int8)
    counts = expected_counters(net, x, SHAPE)
    # Four pixels, three kernel rows each; on a 2x2 image every pixel has one kernel row
    # in the padding (all three elements absent: a zero row) and two elements per other row.
    assert counts["rows"] == 12
    assert counts["zero_rows"] == 4
    assert counts["activation_reads"] == 4 * 2 * 2
    assert counts["output_writes"] == 4
    config = CoreConfig(datapath=AcceleratorConfig(lanes=1))
    report = simulate(net, config, x[None], simulator="amaranth", build_dir=tmp_path)
    assert report.passed
    assert report.counters[0]["zero_rows"] == 4


def test_plan_and_estimate():
    network = Network.from_dict({"input_shape": [1, 4, 4], "layers": [
        {"type": "relu", "name": "r0"},
        {"type": "conv2d", "name": "c", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
        {"type": "relu", "name": "r1"},
        {"type": "maxpool2d", "name": "p"},
        {"type": "flatten", "name": "f"},
        {"type": "linear", "name": "fc", "in_features": 8, "out_features": 3}]})
    assert layer_plan(network) == [("copy", 0), ("compute", 1), ("pool", 3), ("compute", 5)]
    net = hardware_network(network, 5, block_rows=4)
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2))
    estimate = cycle_estimate(net, core_shape(config))
    assert estimate > 16 + 2 * 4 + 16 * 3  # at least the copy, the pool and one row per pixel
