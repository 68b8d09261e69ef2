"""The compiler: operations, tensor placement, lane groups and refusals."""

import numpy as np
import pytest

from sd_hw.compiler import CompileError, compile_network
from sd_hw.compiler.groups import lane_groups
from sd_hw.compiler.plan import plan_ops
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.core.host_map import Space
from sd_hw.core.layouts import GROUP_WORDS, OP_WORDS, entry_layout
from sd_hw.integer_network import DenseWeights
from sd_hw.network import Network
from sim.golden.digits import DEFAULT_CNN
from sim.golden.integerise import accumulator_bound
from sim.golden.reference import rebuild_weight

from amaranth.lib import data

from factories import TINY, hardware_network


def entries_of(words):
    layout = entry_layout()
    size = data.Layout.cast(layout).size
    decoded = []
    for word in words:
        view = layout.from_bits(word & ((1 << size) - 1))
        if view.is_block:
            block = view.body.block
            decoded.append(("block", int(block.live), int(block.skipped), int(block.flush)))
        else:
            row = view.body.row
            decoded.append(("row", int(row.offset), int(row.tap), int(row.columns), int(row.last)))
    return decoded


def test_relu_and_flatten_join_the_operation_before():
    ops = plan_ops(DEFAULT_CNN)
    assert [op.name for op in ops] == ["conv1+relu1", "pool1", "conv2+relu2", "pool2+flatten",
                                       "fc"]
    assert [op.relu for op in ops] == [True, False, True, False, False]
    assert ops[-1].final and not any(op.final for op in ops[:-1])


def test_relu_on_the_input_is_a_copy():
    network = Network.from_dict({"input_shape": [6], "layers": [
        {"type": "relu", "name": "r"},
        {"type": "linear", "name": "fc", "in_features": 6, "out_features": 2},
        {"type": "relu", "name": "r2"}]})
    ops = plan_ops(network)
    assert [(op.kind.name, op.name, op.relu) for op in ops] == [("COPY", "r", True),
                                                               ("COMPUTE", "fc+r2", True)]


def test_pooling_after_the_final_layer_is_refused():
    network = Network.from_dict({"input_shape": [1, 4, 4], "layers": [
        {"type": "conv2d", "name": "c", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
        {"type": "maxpool2d", "name": "p"}]})
    with pytest.raises(CompileError, match="layer 'p' \\(maxpool2d\\) follows the final "
                                           "compute layer 'c'"):
        plan_ops(network)


def test_tensors_get_their_own_regions_when_they_fit():
    net = hardware_network(TINY, 1, block_rows=4)
    program = compile_network(net, CoreConfig())
    assert not program.reuses_regions
    regions = [(program.input_base, 2 * 4 * 4)] + [
        (op.base, int(np.prod(op.shape))) for op in program.ops if op.memory == Space.ACTIVATIONS]
    ends = [base + size for base, size in regions]
    assert all(end <= start for end, (start, _) in zip(ends, regions[1:]))
    assert program.output.memory == Space.OUTPUTS and program.output.shape == (5,)


def test_tensors_alternate_between_two_regions_otherwise():
    net = hardware_network(TINY, 1, block_rows=4)
    program = compile_network(net, CoreConfig(activation_depth=96))
    assert program.reuses_regions
    assert program.input_base == 0
    assert [op.base for op in program.ops[:-1]] == [48, 0, 48]
    assert [program.survives(op) for op in program.ops] == [False, True, True, True]


def test_what_does_not_fit_is_named():
    net = hardware_network(TINY, 1, block_rows=4)
    with pytest.raises(CompileError, match="the output of c1\\+relu1 has 48 elements .* "
                                           "needs 96 entries; the core has activation_depth = 95"):
        compile_network(net, CoreConfig(activation_depth=95))
    one_lane = AcceleratorConfig(lanes=1)
    with pytest.raises(CompileError, match="layer 'fc': the weight memory needs \\d+ words; "
                                           "the core has weight_depth = 16"):
        compile_network(net, CoreConfig(datapath=one_lane, weight_depth=16))
    with pytest.raises(CompileError, match="the index memory needs \\d+ words; the core has "
                                           "index_depth = 16"):
        compile_network(net, CoreConfig(index_depth=16))
    with pytest.raises(CompileError, match="layer 'fc': the output memory \\(5 channels x 1 "
                                           "pixels\\) needs 5 words; the core has output_depth"
                                           " = 4"):
        compile_network(net, _with(CoreConfig(), output_depth=4))



def test_every_memory_that_does_not_fit_is_named_in_one_refusal():
    net = hardware_network(TINY, 1, block_rows=4)
    one_lane = AcceleratorConfig(lanes=1)
    usage = compile_network(net, CoreConfig(datapath=one_lane)).usage
    assert usage["weights"] > 16 and usage["index"] > 16
    small = CoreConfig(datapath=one_lane, activation_depth=16, weight_depth=16, index_depth=16)
    with pytest.raises(CompileError) as refusal:
        compile_network(net, small)
    message = str(refusal.value)
    assert message.startswith("the network does not fit the core: ")
    # The activation need: the two largest neighbouring tensors, c1's output (3 x 4 x 4) twice.
    assert "needs 96 entries; the core has activation_depth = 16" in message
    assert f"the weight memory needs {usage['weights']} words; the core has weight_depth = 16" \
        in message
    assert f"the index memory needs {usage['index']} words; the core has index_depth = 16" \
        in message
    assert "basis memory" not in message and "parameter memory" not in message


def _with(config, **changes):
    """A configuration bypassing the range check of one depth, for limits below the minimum."""
    import dataclasses
    clone = dataclasses.replace(config)
    for name, value in changes.items():
        object.__setattr__(clone, name, value)
    return clone


def test_mismatched_formats_are_refused():
    net = hardware_network(TINY, 1, block_rows=4, code_bits=4)
    with pytest.raises(CompileError, match="4 exponent bits; the core decodes code_bits = 3"):
        compile_network(net, CoreConfig())
    net = hardware_network(TINY, 1, block_rows=200)
    with pytest.raises(CompileError, match="layer 'c1' has blocks of 200 rows; the core's "
                                           "decoder takes at most block_rows = 192"):
        compile_network(net, CoreConfig())


def test_accumulators_are_checked_against_the_layers_bounds():
    # The core's accumulator width is checked against what each layer can reach (the
    # golden model's bound on its rebuilt weights), not against the width the network
    # was integerised for.
    net = hardware_network(TINY, 1, block_rows=4)
    first = next(iter(net.layers.values()))
    first.bias[1] = 2 ** 28 + 12345   # wider than the narrowest core, 26 bits
    need = {}
    specs = {spec.name: spec for spec in net.network.compute_layers}
    for name, layer in net.layers.items():
        spec = specs[name]
        bound = accumulator_bound(rebuild_weight(layer.weights, spec.weight_shape), layer.bias)
        need[name] = (int(bound.max()), int(bound.max()).bit_length() + 1, int(bound.argmax()))
    name, (bound, bits, channel) = max(need.items(), key=lambda item: item[1][1])
    config = CoreConfig(datapath=AcceleratorConfig(accumulator_bits=bits))
    net.accumulator_bits = 48
    compile_network(net, config)
    narrow = CoreConfig(datapath=AcceleratorConfig(accumulator_bits=bits - 1))
    with pytest.raises(CompileError, match=f"layer {name!r}, channel {channel}: its "
                                           f"accumulator can reach {bound} in magnitude, "
                                           f"which needs {bits} bits; the core has "
                                           f"accumulator_bits = {bits - 1}"):
        compile_network(net, narrow)


def test_dense_layers_are_refused_by_name():
    net = hardware_network(TINY, 1, block_rows=4)
    layer = net.layers["c2"]
    layer.weights = DenseWeights(np.zeros((2, 3, 1, 1), np.int8))
    with pytest.raises(CompileError, match="layer 'c2' is dense int8"):
        compile_network(net, CoreConfig())


def test_a_dense_core_refuses_decomposed_layers_by_name():
    net = hardware_network(TINY, 1, block_rows=4)
    with pytest.raises(CompileError, match="layer 'c1' is decomposed; a dense core"):
        compile_network(net, CoreConfig(weights="dense"))


def test_dense_weight_rows_by_hand():
    """Linear 4 -> 2 on two lanes, blocks of one row: each lane's words are its int8
    weights three by three (bits 7..0, 15..8, 23..16) with the last bit (24)."""
    network = Network.from_dict({"input_shape": [4], "layers": [
        {"type": "linear", "name": "fc", "in_features": 4, "out_features": 2}]})
    net = hardware_network(network, 3, dense=True, shared_zero_rows=0.0)
    net.layers["fc"].weights = DenseWeights(np.array([[1, -2, 3, -128], [0, 0, 0, 127]],
                                                     np.int8))
    config = CoreConfig(datapath=AcceleratorConfig(lanes=2, block_rows=1), weights="dense")
    program = compile_network(net, config)
    last = 1 << 24
    # One group: a length header (two rows), then row 0 and row 1, each a block of its own.
    assert program.images[(Space.WEIGHTS, 0)] == (0, [2, 0xFE01 | 0x03 << 16 | last,
                                                      0x80 | last])
    assert program.images[(Space.WEIGHTS, 1)] == (0, [2, last, 0x7F | last])
    assert program.images[(Space.BASES, 0)] == (0, [])
    assert [kind for kind, *_ in entries_of(program.images[(Space.INDEX, 0)][1][GROUP_WORDS:])] \
        == ["block", "row", "block", "row"]


def test_rows_zero_in_the_whole_group_are_skipped():
    """Linear 9 -> 3 (three rows), two lanes, blocks of two rows, rows by hand."""
    network = Network.from_dict({"input_shape": [8], "layers": [
        {"type": "linear", "name": "fc", "in_features": 8, "out_features": 3}]})
    net = hardware_network(network, 2, block_rows=2, shared_zero_rows=0.0)
    weights = net.layers["fc"].weights
    weights.present[:] = False
    weights.negative[:] = False
    weights.exponent[:] = 0
    weights.present[0, 2, 1] = True   # group 0 (channels 0, 1): row 2 only
    weights.present[1, 2, 0] = True
    weights.present[2, 0, 2] = True   # group 1 (channel 2): row 0 only
    groups = lane_groups(network.layers[0], net.layers["fc"], (8,), AcceleratorConfig(lanes=2),
                         code_bits=3)
    assert [list(g.channels) for g in groups] == [[0, 1], [2]]
    # Group 0: block 0 (rows 0, 1) is empty and disappears; its two rows count with block 1,
    # whose row 3 (past the last row) does not exist: rows are 0, 1, 2.
    assert entries_of(groups[0].entries) == [("block", 1, 2, 1), ("row", 6, 1, 0b011, 1)]
    assert (groups[0].blocks, groups[0].live_rows, groups[0].skipped_rows) == (1, 1, 2)
    # Group 1: row 1 is skipped in block 0, and block 1 (row 2) has no live row: one
    # header, flushing, counts both.
    assert entries_of(groups[1].entries) == [("block", 1, 2, 1), ("row", 0, 1, 0b111, 1)]


def test_an_all_zero_group_still_issues_one_row():
    network = Network.from_dict({"input_shape": [3], "layers": [
        {"type": "linear", "name": "fc", "in_features": 3, "out_features": 2}]})
    net = hardware_network(network, 3, block_rows=4)
    net.layers["fc"].weights.present[:] = False
    net.layers["fc"].weights.negative[:] = False
    net.layers["fc"].weights.exponent[:] = 0
    (group,) = lane_groups(network.layers[0], net.layers["fc"], (3,),
                           AcceleratorConfig(lanes=2), code_bits=3)
    assert entries_of(group.entries) == [("block", 1, 0, 1), ("row", 0, 1, 0b111, 1)]
    # Each lane's stream: the one-row bitmap, zero.
    assert group.streams == [[0], [0]]


def test_conv3_rows_address_channel_and_kernel_row():
    network = Network.from_dict({"input_shape": [2, 3, 5], "layers": [
        {"type": "conv2d", "name": "c", "in_channels": 2, "out_channels": 1, "kernel_size": 3}]})
    net = hardware_network(network, 4, block_rows=192, shared_zero_rows=0.0)
    weights = net.layers["c"].weights
    weights.present[:] = True
    (group,) = lane_groups(network.layers[0], net.layers["c"], (2, 3, 5),
                           AcceleratorConfig(lanes=1), code_bits=3)
    rows = [e for e in entries_of(group.entries) if e[0] == "row"]
    # Row c*3 + k reads channel c (15 pixels each) from kernel row k (5 columns each).
    assert [(offset, tap) for _, offset, tap, _, _ in rows] == [
        (0, 0), (5, 1), (10, 2), (15, 0), (20, 1), (25, 2)]
    program = compile_network(net, CoreConfig(datapath=AcceleratorConfig(lanes=1)))
    assert len(program.images[(Space.PROGRAM, 0)][1]) == OP_WORDS
    assert len(program.images[(Space.INDEX, 0)][1]) == GROUP_WORDS + 7
