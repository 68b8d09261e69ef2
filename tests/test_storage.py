"""The storage report: a hand count for a tiny layer, and totals that add
up to the weight file size."""

import json

import numpy as np
from hypothesis import given, settings, strategies as st

from factories import TINY, networks, random_integer_network
from sd_hw import weight_file
from sd_hw.integer_network import DecomposedWeights, IntegerLayer, IntegerNetwork
from sd_hw.network import Network
from sd_hw.storage import storage_report


def hand_network():
    """linear 4 -> 2: R = 2 rows per channel, block_rows 1, 3-bit codes.

    channel 0: row 0 has columns 0 and 1, row 1 is empty;
    channel 1: row 0 is empty, row 1 has column 0.
    """
    network = Network.from_dict({"input_shape": [4], "layers": [
        {"type": "linear", "name": "fc", "in_features": 4, "out_features": 2}]})
    present = np.zeros((2, 2, 3), bool)
    present[0, 0, 0] = present[0, 0, 1] = present[1, 1, 0] = True
    exponent = np.where(present, 5, 0).astype(np.uint8)
    weights = DecomposedWeights(present, present & False, exponent,
                                np.full((2, 2, 3, 3), -128, np.int8), block_rows=1)
    layer = IntegerLayer("fc", weights, bias=np.array([1, -1], np.int32),
                         weight_scale=np.array([0.5, 0.25]), multiplier=np.zeros(2, np.int32),
                         shift=np.zeros(2, np.uint8), input_scale=0.1, output_scale=0.0,
                         final=True)
    return IntegerNetwork(network, {"fc": layer}, input_scale=0.1, code_bits=3, block_rows=1)


def test_hand_count():
    net = hand_network()
    report = storage_report(net)
    (row,) = report.layers
    assert (row.name, row.kind, row.weights, row.decomposed) == ("fc", "linear", 8, True)
    # Blocks (channel, block): (0,0) bitmap 1 + mask 3 + 2 codes x 4 = 12 bits -> 16;
    # (0,1) and (1,0): bitmap 1 -> 8; (1,1): 1 + 3 + 4 = 8. Stream: 40 bits, 5 bytes.
    assert row.code_bits == 3 * 4
    assert row.index_bits == 4 + 2 * 3
    assert row.basis_bits == 2 * 2 * 72
    assert row.dense_bits == 0
    # Stream padding 4 + 7 + 7 + 0; section alignment: stream 5 -> 8 bytes, basis
    # 36 -> 40, bias 8, weight_scale 16, multiplier 8, shift 2 -> 8 bytes.
    assert row.padding_bits == 18 + 8 * (3 + 4 + 0 + 0 + 0 + 6)
    # Table entry 128 bytes; per channel int32 bias, f64 scale, int32 multiplier, u8 shift.
    assert row.metadata_bits == 128 * 8 + 2 * (32 + 64 + 32 + 8)
    assert row.storage_bits == 12 + 10 + 288
    assert row.total_bits == 310 + 122 + 1296
    assert row.bits_per_weight == 310 / 8
    assert row.bits_per_weight_total == 1728 / 8
    assert (row.int8_bits, row.float32_bits) == (64, 256)
    assert row.int8_ratio == 64 / 310 and row.float32_ratio == 256 / 310
    data = weight_file.write(net)
    assert report.file_bytes == len(data)
    network_json = len(net.network.to_json().encode())
    overhead = 88 + network_json + len(b"{}") + (-(128 + network_json + 2) % 8) + 4
    assert report.file_overhead_bits == 8 * overhead
    assert report.total.total_bits == 8 * len(data) == 8 * (overhead + 1728 // 8)


def test_dense_layer_is_eight_bits_per_weight():
    net = random_integer_network(TINY, 1, dense=True)
    for row in storage_report(net).layers:
        assert not row.decomposed and row.code_bits == row.index_bits == row.basis_bits == 0
        assert row.dense_bits == row.int8_bits == 8 * row.weights
        assert row.bits_per_weight == 8.0 and row.int8_ratio == 1.0
        assert row.float32_ratio == 4.0


@settings(max_examples=30, deadline=None)
@given(networks(), st.integers(0, 2 ** 32 - 1), st.integers(1, 6), st.integers(1, 9),
       st.booleans())
def test_totals_add_up_to_the_file(network, seed, code_bits, block_rows, some_dense):
    dense = {network.compute_layers[0].name} if some_dense else ()
    net = random_integer_network(network, seed, code_bits=code_bits, block_rows=block_rows,
                                 dense=dense)
    report = storage_report(net)
    assert report.file_bytes == len(weight_file.write(net))
    assert report.total.total_bits == 8 * report.file_bytes
    assert sum(row.total_bits for row in report.layers) + report.file_overhead_bits \
        == report.total.total_bits
    assert report.total.weights == sum(row.weights for row in report.layers)
    assert [row.name for row in report.layers] == [s.name for s in network.compute_layers]


def test_format_table_and_dict():
    net = random_integer_network(TINY, 2, dense={"c2"}, metadata={"retrain": "x"})
    report = storage_report(net)
    text = report.format_table()
    lines = text.splitlines()
    assert f"{report.file_bytes} bytes" in lines[0]
    header = lines[1].split()
    assert header[:4] == ["layer", "kind", "weights", "SD"] and "int8/SD" in header
    by_name = {line.split()[0]: line for line in lines[3:]}
    assert set(by_name) >= {"c1", "c2", "fc", "(file)", "total"}
    assert by_name["c1"].split()[1:3] == ["conv2d", "3x3"]
    assert str(report.total.total_bits) in by_name["total"].split()
    # Columns are aligned: every numeric column ends at the same place.
    end = lines[1].index("total") + len("total")
    for name in ("c1", "c2", "fc", "total"):
        assert by_name[name][:end].endswith(str(
            next(r for r in report.layers + [report.total] if r.name == name).total_bits))
    out = json.loads(json.dumps(report.to_dict()))
    assert out["file_bytes"] == report.file_bytes
    assert [row["name"] for row in out["layers"]] == ["c1", "c2", "fc"]
    assert out["total"]["total_bits"] == 8 * report.file_bytes
    assert out["layers"][0]["bits_per_weight"] == report.layers[0].bits_per_weight
