"""The weight file: exact round trips, and every kind of bad file refused
with a WeightFileError that names the file and the problem."""

import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from factories import TINY, assert_networks_equal, networks, random_integer_network
from sd_hw import weight_file
from sd_hw.errors import SdHwError, WeightFileError
from sd_hw.integer_network import DenseWeights
from sd_hw.network import Network

HEADER = weight_file.HEADER_SIZE
ENTRY = weight_file.TABLE_ENTRY_SIZE


def tiny(**options):
    options.setdefault("dense", {"c2"})
    options.setdefault("metadata", {"retrain": "ste", "epochs": 3})
    return random_integer_network(TINY, 7, **options)


def with_crc(body):
    """``body`` (a file without its CRC) with a correct CRC appended."""
    return body + struct.pack("<I", zlib.crc32(body))


def patch(data, offset, fmt, *values):
    """``data`` with ``values`` packed at ``offset`` and the CRC recomputed."""
    body = bytearray(data[:-4])
    struct.pack_into("<" + fmt, body, offset, *values)
    return with_crc(bytes(body))


def read_error(data, match):
    with pytest.raises(WeightFileError, match=match) as info:
        weight_file.read(data, source="net.sdw")
    assert str(info.value).startswith("net.sdw: ")
    return str(info.value)


def entry_offset(position, field):
    """Offset of a field of layer table entry ``position``."""
    fields = {"layer_index": 0, "flags": 4, "block_rows": 8, "basis_group": 12,
              "input_scale": 16, "output_scale": 24}
    for i, name in enumerate(weight_file.SECTIONS):
        fields[name + ".offset"] = 32 + 16 * i
        fields[name + ".length"] = 40 + 16 * i
    return HEADER + position * ENTRY + fields[field]


# Round trips. -------------------------------------------------------------

def test_round_trip_tiny():
    net = tiny()
    data = weight_file.write(net)
    assert data[:8] == b"\x89SDW\r\n\x1a\n"
    assert struct.unpack_from("<HHIQI", data, 8) == (1, 1, HEADER, len(data), 3)
    back = weight_file.read(data)
    assert_networks_equal(net, back)
    assert weight_file.write(back) == data


def test_header_and_table_sizes():
    assert HEADER == 88 and ENTRY == 128


@settings(max_examples=60, deadline=None)
@given(networks(), st.integers(0, 2 ** 32 - 1), st.integers(1, 6), st.integers(1, 10),
       st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.booleans(), st.data())
def test_round_trip_random(network, seed, code_bits, block_rows, density, extreme, data):
    names = [spec.name for spec in network.compute_layers]
    dense = data.draw(st.sets(st.sampled_from(names)))
    net = random_integer_network(network, seed, code_bits=code_bits, block_rows=block_rows,
                                 dense=dense, density=density, extreme=extreme,
                                 metadata=data.draw(st.dictionaries(
                                     st.text(max_size=5), st.integers() | st.text(), max_size=3)))
    encoded = weight_file.write(net)
    back = weight_file.read(encoded)
    assert_networks_equal(net, back)
    assert weight_file.write(back) == encoded


def test_round_trip_through_the_integeriser():
    """The dtypes the integeriser produces are the file's canonical dtypes."""
    from sim.golden.integerise import build_integer_network
    from sim.golden.reference import rebuild_weight

    rng = np.random.default_rng(3)
    params, decomposed, scales = {}, {}, {}
    for spec in TINY.compute_layers:
        params[f"{spec.name}.weight"] = rng.normal(size=spec.weight_shape) * 0.3
        params[f"{spec.name}.bias"] = rng.normal(size=spec.out_size) * 0.1
        scales[spec.name] = 0.05
    rows = 6  # c1: 3 x 2 input channels
    coefficients = np.where(rng.random((3, rows, 3)) < 0.5,
                            rng.choice([-1.0, 1.0], (3, rows, 3))
                            * np.exp2(rng.integers(-5, 2, (3, rows, 3))), 0.0)
    decomposed["c1"] = SimpleNamespace(coefficients=coefficients,
                                       basis=rng.normal(size=(3, 2, 3, 3)), block_rows=4)
    net = build_integer_network(TINY, params, decomposed, scales, block_rows=4,
                                rebuild=rebuild_weight, metadata={"retrain": "none"})
    assert_networks_equal(net, weight_file.read(weight_file.write(net)))


def test_save_and_load(tmp_path):
    net = tiny()
    path = tmp_path / "net.sdw"
    weight_file.save(net, path)
    assert_networks_equal(net, weight_file.load(path))
    with pytest.raises(WeightFileError, match="missing.sdw: cannot read weight file"):
        weight_file.load(tmp_path / "missing.sdw")
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(WeightFileError, match=f"{path}: truncated"):
        weight_file.load(path)


def test_writer_converts_lossless_dtypes_only():
    net = tiny()
    layer = net.layers["c1"]
    layer.bias = layer.bias.astype(np.int64)
    layer.shift = layer.shift.astype(np.int64)
    back = weight_file.read(weight_file.write(net)).layers["c1"]
    assert back.bias.dtype == np.int32 and back.shift.dtype == np.uint8
    layer.bias = layer.bias + 2.5
    with pytest.raises(SdHwError, match="layer 'c1': 'bias'.*not representable as int32"):
        weight_file.write(net)


def test_writer_refuses_invalid_networks():
    net = tiny()
    net.layers["c1"].final = True
    with pytest.raises(SdHwError, match="exactly the last compute layer must be final"):
        weight_file.write(net)
    net = tiny()
    net.layers["c2"].weights = DenseWeights(np.zeros((2, 3), np.int8))
    with pytest.raises(SdHwError, match=r"layer 'c2': 'weight' has shape \(2, 3\)"):
        weight_file.write(net)
    net = tiny(metadata={"when": object()})
    with pytest.raises(SdHwError, match="metadata is not JSON"):
        weight_file.write(net)
    net = tiny(metadata={1: "int key"})
    with pytest.raises(SdHwError, match="JSON round trip"):
        weight_file.write(net)
    net = tiny()
    del net.layers["fc"]
    with pytest.raises(SdHwError, match="not the compute layers"):
        weight_file.write(net)


# Bad files. ---------------------------------------------------------------

def test_empty_file():
    read_error(b"", "empty file, not an sd-hw weight file")


@pytest.mark.parametrize("data", [b"PK\x03\x04" + bytes(200), b"\x89PNG\r\n\x1a\n" + bytes(200),
                                  b"x", b"\x89SDX"])
def test_wrong_magic(data):
    read_error(data, "not an sd-hw weight file")


def test_truncated_at_several_points():
    data = weight_file.write(tiny())
    for cut in (1, 7, 8, 11, 12, 40, HEADER - 1):
        read_error(data[:cut], f"truncated: expected at least {HEADER} bytes of header, "
                               f"got {cut}")
    for cut in (HEADER, HEADER + 1, HEADER + ENTRY, len(data) // 2, len(data) - 5,
                len(data) - 1):
        read_error(data[:cut], f"truncated: expected {len(data)} bytes, got {cut}")


def test_trailing_data():
    data = weight_file.write(tiny())
    read_error(data + b"\x00", f"trailing data: expected {len(data)} bytes, got {len(data) + 1}")


def test_flipped_byte_anywhere():
    data = weight_file.write(tiny())
    stable = {range(0, 8): "not an sd-hw weight file",
              range(8, 12): "unsupported weight file version",
              range(16, 24): "truncated|trailing data"}
    for position in range(len(data)):
        bad = bytearray(data)
        bad[position] ^= 0x5A
        match = next((m for r, m in stable.items() if position in r), "checksum mismatch")
        message = read_error(bytes(bad), match)
        if match == "checksum mismatch":
            stored, = struct.unpack_from("<I", bad, len(data) - 4)
            assert f"stored CRC-32 0x{stored:08x}" in message


@pytest.mark.parametrize("major, minor", [(2, 0), (0, 0), (1, 2), (65535, 65535)])
def test_unsupported_version_with_correct_crc(major, minor):
    data = patch(weight_file.write(tiny()), 8, "HH", major, minor)
    read_error(data, f"unsupported weight file version {major}.{minor}; this sd-hw reads "
                     f"version 1.0 to 1.1")


def test_section_outside_the_file_with_correct_crc():
    data = weight_file.write(tiny())
    bad = patch(data, entry_offset(0, "bias.offset"), "Q", len(data) + 100)
    read_error(bad, "inconsistent layer table: layer 'c1' bias at offset .* lies outside "
                    "the file data")
    bad = patch(data, entry_offset(2, "weights.length"), "Q", 2 ** 64 - 1)
    read_error(bad, "layer 'fc' weights .* lies outside the file data")
    bad = patch(data, 64, "Q", len(data))  # table offset
    read_error(bad, "layer table at offset .* lies outside the file data")
    bad = patch(data, 32, "Q", 4)  # network description inside the header
    read_error(bad, "network description at offset 4, .* lies outside the file data")


def test_overlapping_sections_with_correct_crc():
    data = weight_file.write(tiny())
    offset, = struct.unpack_from("<Q", data, entry_offset(1, "bias.offset"))
    bad = patch(data, entry_offset(0, "bias.offset"), "Q", offset)
    read_error(bad, "overlaps")


def test_layer_count_mismatch_with_correct_crc():
    data = weight_file.write(tiny())
    read_error(patch(data, 24, "I", 2),
               "inconsistent layer table: it has 2 entries, but the network has 3 compute layers")
    read_error(patch(data, 24, "I", 10 ** 6), "layer table .* lies outside the file data")


def test_table_names_a_layer_that_is_not_compute():
    data = weight_file.write(tiny())
    read_error(patch(data, entry_offset(0, "layer_index"), "I", 1),
               r"layer table entry 0 names layer index 1, which is not a compute layer")
    read_error(patch(data, entry_offset(0, "layer_index"), "I", 99),
               "names layer index 99, which is not a compute layer")
    read_error(patch(data, entry_offset(0, "layer_index"), "I", 2),
               "entries must follow the network order")


def test_bad_flags_with_correct_crc():
    data = weight_file.write(tiny())
    for flags, match in ((3, "flags 0x3"), (0, "flags 0x0"), (9, "flags 0x9"),
                         (5, "not the last compute layer but its final flag is set")):
        read_error(patch(data, entry_offset(0, "flags"), "I", flags), match)
    read_error(patch(data, entry_offset(2, "flags"), "I", 1),
               "is the last compute layer but its final flag is clear")
    # Dense <-> decomposed swapped: the sections no longer fit.
    read_error(patch(data, entry_offset(1, "flags"), "I", 1), "layer 'c2'")


def test_array_size_mismatch_with_correct_crc():
    data = weight_file.write(tiny())
    read_error(patch(data, entry_offset(0, "bias.length"), "Q", 8),
               r"layer 'c1' bias has 8 bytes, expected 12 for shape \(3,\)")
    read_error(patch(data, entry_offset(1, "weights.length"), "Q", 5),
               r"layer 'c2' weights has 5 bytes, expected 6")
    read_error(patch(data, entry_offset(0, "basis.length"), "Q", 0), "layer 'c1' basis")


def test_corrupt_coefficient_stream_with_correct_crc():
    data = weight_file.write(tiny())
    offset, length = struct.unpack_from("<QQ", data, entry_offset(0, "weights.offset"))
    read_error(patch(data, entry_offset(0, "weights.length"), "Q", length - 1),
               "layer 'c1': coefficient stream is too short")
    read_error(patch(data, entry_offset(0, "block_rows"), "I", 1), "layer 'c1': ")
    read_error(patch(data, entry_offset(0, "block_rows"), "I", 0), "block_rows is 0")
    bad = bytearray(data[:-4])
    bad[offset + length - 1] = 0xFF  # last block's padding and codes
    read_error(with_crc(bytes(bad)), "layer 'c1': ")


def test_corrupt_network_description_with_correct_crc():
    net = tiny()
    data = weight_file.write(net)
    offset, = struct.unpack_from("<Q", data, 32)
    text = net.network.to_json().encode()
    body = bytearray(data[:-4])
    position = offset + text.index(b'"conv2d"') + 1
    body[position:position + 6] = b"conv5d"
    read_error(with_crc(bytes(body)), "network description.*unsupported layer type 'conv5d'")
    body = bytearray(data[:-4])
    body[offset] = 0xFF
    read_error(with_crc(bytes(body)), "corrupt network description: not UTF-8")
    read_error(patch(data, 40, "Q", 3), "network description: not valid JSON")
    read_error(patch(data, 56, "Q", 0), "corrupt metadata: not a JSON object")


def test_corrupt_header_fields_with_correct_crc():
    data = weight_file.write(tiny())
    read_error(patch(data, 80, "B", 0), "code_bits is 0")
    read_error(patch(data, 80, "B", 9), "code_bits is 9")
    read_error(patch(data, 72, "d", float("nan")), "input_scale is nan")
    read_error(patch(data, 12, "I", 96), "header size 96")
    read_error(patch(data, 28, "I", 64), "table entry size 64")
    read_error(patch(data, entry_offset(1, "input_scale"), "d", -1.0), "input_scale is -1.0")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_files_with_correct_crc_raise_only_weight_file_error(data):
    original = weight_file.write(tiny())
    body = bytearray(original[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(12, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    try:
        weight_file.read(with_crc(bytes(body)))
    except WeightFileError:
        pass


def test_read_refuses_non_bytes():
    with pytest.raises(WeightFileError, match="expected bytes"):
        weight_file.read(12)


def test_network_description_is_validated():
    # A file whose description is a valid network without compute layers
    # that match the table.
    data = weight_file.write(tiny())
    other = Network.from_dict({"input_shape": [4], "layers": [
        {"type": "linear", "name": "x", "in_features": 4, "out_features": 2}]})
    text = other.to_json().encode()
    body = bytearray(data[:-4])
    offset, length = struct.unpack_from("<QQ", body, 32)
    assert len(text) <= length
    body[offset:offset + length] = text + b" " * (length - len(text))
    read_error(with_crc(bytes(body)), "it has 3 entries, but the network has 1 compute layers")


# Fields behind a valid CRC, range-checked (issue 16). ----------------------

def section(data, position, name):
    return struct.unpack_from("<QQ", data, entry_offset(position, name + ".offset"))


@pytest.mark.parametrize("name, fmt, value, message", [
    ("bias", "i", 2 ** 31 - 1, r"layer 'c1': bias of channel 0 is 2147483647, outside the "
                               r"\d+-bit accumulator"),
    ("shift", "B", 0, "layer 'c1': shift of channel 0 is 0, allowed 1 to 62"),
    ("shift", "B", 63, "layer 'c1': shift of channel 0 is 63, allowed 1 to 62"),
    ("multiplier", "i", 2 ** 15, "layer 'c1': multiplier of channel 0 is 32768, allowed 0 to "
                                 "32767"),
    ("multiplier", "i", -1, "layer 'c1': multiplier of channel 0 is -1"),
])
def test_channel_parameters_out_of_range_with_correct_crc(name, fmt, value, message):
    net = tiny()
    net.accumulator_bits = 24
    for layer in net.layers.values():
        layer.bias >>= 8
    data = weight_file.write(net)
    offset, _ = section(data, 0, name)
    read_error(patch(data, offset, fmt, value), message)


def test_final_layer_requantises_nothing():
    data = weight_file.write(tiny())
    offset, _ = section(data, 2, "shift")
    read_error(patch(data, offset, "B", 5), "layer 'fc': shift of channel 0 is 5, allowed 0 "
                                            "to 0 \\(the final layer outputs its accumulators\\)")


def test_accumulator_bits_outside_the_hardware_range():
    data = weight_file.write(tiny())
    read_error(patch(data, 81, "B", 200), "accumulator_bits is 200, allowed 16 to 48")


def replace_network_text(data, old, new):
    """``data`` with ``old`` replaced by ``new`` (same length) in the description, CRC fixed."""
    assert len(old) == len(new)
    offset, length = struct.unpack_from("<QQ", data, 32)
    body = bytearray(data[:-4])
    text = bytes(body[offset:offset + length])
    assert old in text
    body[offset:offset + length] = text.replace(old, new, 1)
    return with_crc(bytes(body))


def test_unprintable_layer_name_with_correct_crc():
    data = weight_file.write(tiny())
    bad = replace_network_text(data, b'"c1"', b'"\\ud800"'[:4])  # '"\ud' is not JSON
    read_error(bad, "network description")
    bad = replace_network_text(data, b'"name": "c1"', b'"name": "\x01"'.ljust(12)[:12])
    read_error(bad, "network description")


def test_huge_integer_in_the_network_description():
    net = tiny()
    text = net.network.to_json()
    huge = text.replace('"out_features": 5', '"out_features": 1' + "0" * 5000)
    data = bytearray(weight_file.write(net))
    body = data[:-4]
    offset, length = struct.unpack_from("<QQ", body, 32)
    # A description this long does not fit in place: the file is rebuilt around it.
    new_body = body[:offset] + huge.encode() + body[offset + length:]
    struct.pack_into("<Q", new_body, 40, len(huge))
    struct.pack_into("<Q", new_body, 16, len(new_body) + 4)
    message = read_error(with_crc(bytes(new_body)), "network description")
    assert len(message) < 300


def test_reformatted_description_is_not_canonical():
    data = weight_file.write(tiny())
    read_error(replace_network_text(data, b'"input_shape": [\n  2,',
                                    b'"input_shape": [\n 2 ,'),
               r"not in canonical form: byte \d+ \(network description\)")


def test_nonzero_padding_is_not_canonical():
    net = tiny()
    data, layout = weight_file.write_with_layout(net)
    layer = layout.layers["c1"]
    offset, length = layer.sections["bias"]
    if weight_file._align(length) == length:
        pytest.skip("no padding after this section")
    body = bytearray(data[:-4])
    body[offset + length] = 1
    read_error(with_crc(bytes(body)), r"not in canonical form: byte \d+ \(alignment padding\)")
