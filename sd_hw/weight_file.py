"""The versioned binary weight file of an :class:`IntegerNetwork`.

docs/weight-file.md is the byte-level specification; in short::

    header (88 bytes) | layer table (128 bytes per compute layer)
    | network description (JSON) | metadata (JSON)
    | per compute layer: weights, basis, bias, weight_scale, multiplier, shift
    | CRC-32 of everything before it (4 bytes)

Everything is little-endian; sections start on 8-byte boundaries (zero
padding). Version 1.1 adds shared bases: a decomposed layer's table entry
gives its ``basis_group`` (output channels per basis group) and its basis
section holds one basis per (group, block). Version 1.0 files (the field
reserved, zero; a basis per channel and block) still load.
:func:`read` checks, in this order, the magic, the version, the length,
the CRC, then every field of the body, and raises
:class:`WeightFileError` naming the file and the problem; it never returns a
network that differs from the one written.
"""

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import coefficient_stream
from .errors import NetworkSpecError, SdHwError, WeightFileError
from .integer_network import (MULTIPLIER_BITS, DecomposedWeights, DenseWeights, IntegerLayer,
                              IntegerNetwork, rows_per_channel)
from .network import Network


__all__ = ["MAGIC", "VERSION", "HEADER_SIZE", "TABLE_ENTRY_SIZE", "SECTIONS",
           "write", "read", "save", "load", "write_with_layout", "FileLayout",
           "LayerLayout"]

MAGIC = b"\x89SDW\r\n\x1a\n"
VERSION = (1, 1)
ALIGN = 8
CRC_SIZE = 4

# magic, major, minor, header_size, file_length, layer_count, table_entry_size,
# network_offset, network_length, metadata_offset, metadata_length, table_offset,
# input_scale, code_bits, accumulator_bits, reserved, block_rows
_HEADER = struct.Struct("<8sHHIQIIQQQQQdBBHI")
HEADER_SIZE = _HEADER.size  # 88
# layer_index, flags, block_rows, basis_group (reserved, 0, in version 1.0),
# input_scale, output_scale, then (offset, length) of each section in SECTIONS
SECTIONS = ("weights", "basis", "bias", "weight_scale", "multiplier", "shift")
_ENTRY = struct.Struct("<IIIIdd" + "QQ" * len(SECTIONS))
TABLE_ENTRY_SIZE = _ENTRY.size  # 128

FLAG_DECOMPOSED = 1
FLAG_DENSE = 2
FLAG_FINAL = 4
_KNOWN_FLAGS = FLAG_DECOMPOSED | FLAG_DENSE | FLAG_FINAL

# Canonical in-memory dtype and file dtype of the per-channel arrays.
_CHANNEL_ARRAYS = (("bias", np.int32, "<i4"), ("weight_scale", np.float64, "<f8"),
                   ("multiplier", np.int32, "<i4"), ("shift", np.uint8, "u1"))
_MAX_CODE_BITS = coefficient_stream.MAX_CODE_BITS
# Accumulator widths the hardware builds (AcceleratorConfig.accumulator_bits).
ACCUMULATOR_BITS = (16, 48)
# Requantisation of a hidden layer: the core's 6-bit shift field, at least 1 for the
# rounding term 2**(shift - 1); multipliers below 2**MULTIPLIER_BITS.
SHIFT_RANGE = (1, 62)
MULTIPLIER_RANGE = (0, 2 ** MULTIPLIER_BITS - 1)


@dataclass
class LayerLayout:
    """Where one compute layer's data lies in the file (byte offsets)."""

    name: str
    entry_offset: int
    sections: dict  # section name -> (offset, length)
    padding_bytes: int  # alignment padding after this layer's sections


@dataclass
class FileLayout:
    """Byte accounting of one written weight file."""

    file_length: int
    header_bytes: int
    network_bytes: int
    metadata_bytes: int
    padding_bytes: int  # alignment padding outside the layer sections
    crc_bytes: int
    layers: dict = field(default_factory=dict)  # layer name -> LayerLayout


# Writing. -----------------------------------------------------------------

def _align(n):
    return -(-n // ALIGN) * ALIGN


def _canonical(name, array, dtype, shape, what):
    """``array`` as ``dtype`` and ``shape``, refusing any change of value."""
    array = np.asarray(array)
    if array.shape != tuple(shape):
        raise SdHwError(f"cannot write weight file: {what}: {name!r} has shape "
                        f"{array.shape}, expected {tuple(shape)}")
    if array.dtype == dtype:
        return array
    allowed = "biu" if np.dtype(dtype).kind in "iu" else "biuf"
    if array.dtype.kind in allowed:
        with np.errstate(all="ignore"):
            converted = array.astype(dtype)
        if np.array_equal(converted, array):
            return converted
    raise SdHwError(f"cannot write weight file: {what}: {name!r} (dtype {array.dtype}) "
                    f"is not representable as {np.dtype(dtype).name}")


def _check_scale(value, what, *, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SdHwError(f"cannot write weight file: {what} must be a number, "
                        f"got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise SdHwError(f"cannot write weight file: {what} must be a finite "
                        f"{'non-negative' if allow_zero else 'positive'} number, got {value}")
    return value


def _layer_sections(net, spec, layer, final):
    """``(flags, block_rows, basis_group, scales, {section: bytes})`` of one compute layer."""
    what = f"layer {spec.name!r}"
    if not isinstance(layer, IntegerLayer):
        raise SdHwError(f"cannot write weight file: {what} is not an IntegerLayer")
    if bool(layer.final) != final:
        raise SdHwError(f"cannot write weight file: {what}: final is {layer.final}, but "
                        f"exactly the last compute layer must be final")
    m = spec.out_size
    flags = FLAG_FINAL if final else 0
    weights = layer.weights
    if isinstance(weights, DecomposedWeights):
        flags |= FLAG_DECOMPOSED
        rows = rows_per_channel(spec)
        block_rows = weights.block_rows
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) \
                or not 1 <= block_rows <= 2 ** 32 - 1:
            raise SdHwError(f"cannot write weight file: {what}: block_rows must be a "
                            f"positive integer, got {block_rows!r}")
        block_rows = int(block_rows)
        n_blocks = -(-rows // block_rows)
        for name in ("present", "negative", "exponent"):
            shape = np.shape(getattr(weights, name))
            if shape != (m, rows, 3):
                raise SdHwError(f"cannot write weight file: {what}: {name!r} has shape "
                                f"{shape}, expected {(m, rows, 3)}")
        try:
            stream = coefficient_stream.encode(weights, net.code_bits)
        except SdHwError as error:
            raise SdHwError(f"cannot write weight file: {what}: {error}") from None
        basis = _canonical("basis", weights.basis, np.int8, (m, n_blocks, 3, 3), what)
        try:
            basis = DecomposedWeights(weights.present, weights.negative, weights.exponent,
                                      basis, block_rows, weights.shared_basis).group_basis()
        except SdHwError as error:
            raise SdHwError(f"cannot write weight file: {what}: {error}") from None
        basis_group = int(weights.shared_basis)
        data = {"weights": stream, "basis": basis.tobytes()}
    elif isinstance(weights, DenseWeights):
        flags |= FLAG_DENSE
        block_rows = basis_group = 0
        dense = _canonical("weight", weights.weight, np.int8, spec.weight_shape, what)
        data = {"weights": dense.tobytes(), "basis": b""}
    else:
        raise SdHwError(f"cannot write weight file: {what}: weights must be "
                        f"DecomposedWeights or DenseWeights, got {type(weights).__name__}")
    for name, dtype, file_dtype in _CHANNEL_ARRAYS:
        array = _canonical(name, getattr(layer, name), dtype, (m,), what)
        if name == "weight_scale" and not (np.isfinite(array).all() and (array > 0).all()):
            raise SdHwError(f"cannot write weight file: {what}: weight_scale must be "
                            f"finite and positive")
        data[name] = array.astype(file_dtype).tobytes()
    scales = (_check_scale(layer.input_scale, f"{what}: input_scale"),
              _check_scale(layer.output_scale, f"{what}: output_scale", allow_zero=True))
    return flags, block_rows, basis_group, scales, data


def _json_bytes(value, what):
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
        same = json.loads(text) == value
    except (TypeError, ValueError) as error:
        raise SdHwError(f"cannot write weight file: {what} is not JSON data ({error})") from None
    if not same:
        raise SdHwError(f"cannot write weight file: {what} does not survive a JSON round "
                        f"trip (use str keys, lists, numbers, strings, booleans, null)")
    return text.encode("utf-8")


def write_with_layout(net):
    """The weight file of ``net`` as bytes, and its :class:`FileLayout`."""
    if not isinstance(net, IntegerNetwork) or not isinstance(net.network, Network):
        raise SdHwError("cannot write weight file: expected an IntegerNetwork")
    for name, low, high in (("code_bits", 1, _MAX_CODE_BITS), ("block_rows", 1, 2 ** 32 - 1),
                            ("accumulator_bits", *ACCUMULATOR_BITS)):
        value = getattr(net, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not low <= value <= high:
            raise SdHwError(f"cannot write weight file: {name} must be an integer from "
                            f"{low} to {high}, got {value!r}")
    input_scale = _check_scale(net.input_scale, "input_scale")
    compute = [(index, spec) for index, spec in enumerate(net.network.layers) if spec.is_compute]
    if not isinstance(net.layers, dict) or set(net.layers) != {s.name for _, s in compute}:
        have = sorted(net.layers) if isinstance(net.layers, dict) else net.layers
        raise SdHwError(f"cannot write weight file: the integer layers {have} are not the "
                        f"compute layers {[s.name for _, s in compute]} of the network")
    network_json = net.network.to_json().encode("utf-8")
    metadata_json = _json_bytes(net.metadata, "metadata")

    table_offset = HEADER_SIZE
    network_offset = table_offset + len(compute) * TABLE_ENTRY_SIZE
    metadata_offset = network_offset + len(network_json)
    pos = _align(metadata_offset + len(metadata_json))
    file_padding = pos - (metadata_offset + len(metadata_json))
    parts = [None, None, network_json, metadata_json, bytes(file_padding)]
    entries = []
    layout_layers = {}
    for position, (index, spec) in enumerate(compute):
        final = position == len(compute) - 1
        flags, block_rows, basis_group, scales, data = _layer_sections(
            net, spec, net.layers[spec.name], final)
        sections = {}
        padding = 0
        for name in SECTIONS:
            chunk = data[name]
            if not chunk:
                sections[name] = (0, 0)
                continue
            sections[name] = (pos, len(chunk))
            pad = _align(len(chunk)) - len(chunk)
            parts += [chunk, bytes(pad)]
            pos += len(chunk) + pad
            padding += pad
        entries.append(_ENTRY.pack(index, flags, block_rows, basis_group, *scales,
                                   *(v for name in SECTIONS for v in sections[name])))
        layout_layers[spec.name] = LayerLayout(
            spec.name, table_offset + position * TABLE_ENTRY_SIZE, sections, padding)
    file_length = pos + CRC_SIZE
    parts[0] = _HEADER.pack(
        MAGIC, VERSION[0], VERSION[1], HEADER_SIZE, file_length, len(compute),
        TABLE_ENTRY_SIZE, network_offset, len(network_json), metadata_offset,
        len(metadata_json), table_offset, input_scale, int(net.code_bits),
        int(net.accumulator_bits), 0, int(net.block_rows))
    parts[1] = b"".join(entries)
    body = b"".join(parts)
    assert len(body) == pos
    data = body + struct.pack("<I", zlib.crc32(body))
    layout = FileLayout(file_length=file_length, header_bytes=HEADER_SIZE,
                        network_bytes=len(network_json), metadata_bytes=len(metadata_json),
                        padding_bytes=file_padding, crc_bytes=CRC_SIZE, layers=layout_layers)
    return data, layout


def write(net):
    """The weight file of an :class:`IntegerNetwork`, as bytes."""
    return write_with_layout(net)[0]


def save(net, path):
    """Write the weight file of ``net`` to ``path``."""
    data = write(net)
    try:
        Path(path).write_bytes(data)
    except OSError as error:
        raise WeightFileError(f"{path}: cannot write weight file ({error.strerror or error})") \
            from None


# Reading. -----------------------------------------------------------------

def read(data, *, source="<bytes>"):
    """Parse a weight file; raise :class:`WeightFileError` on any problem."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WeightFileError(f"{source}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    return _Reader(data, source).network()


def load(path):
    """Read the weight file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise WeightFileError(f"{path}: cannot read weight file ({error.strerror or error})") \
            from None
    return read(data, source=str(path))


class _Reader:
    def __init__(self, data, source):
        self.data = data
        self.source = source

    def fail(self, message):
        raise WeightFileError(f"{self.source}: {message}")

    def network(self):
        data = self.data
        size = len(data)
        if size == 0:
            self.fail("empty file, not an sd-hw weight file")
        if data[:len(MAGIC)] != MAGIC[:size]:
            self.fail("not an sd-hw weight file (wrong magic number)")
        if size < 12:
            self.fail(f"truncated: expected at least {HEADER_SIZE} bytes of header, got {size}")
        major, minor = struct.unpack_from("<HH", data, 8)
        if major != VERSION[0] or minor > VERSION[1]:
            self.fail(f"unsupported weight file version {major}.{minor}; this sd-hw reads "
                      f"version {VERSION[0]}.0 to {VERSION[0]}.{VERSION[1]}")
        if size < HEADER_SIZE:
            self.fail(f"truncated: expected at least {HEADER_SIZE} bytes of header, got {size}")
        (_, _, _, header_size, file_length, count, entry_size, network_offset,
         network_length, metadata_offset, metadata_length, table_offset, input_scale,
         code_bits, accumulator_bits, reserved, block_rows) = _HEADER.unpack_from(data)
        if size < file_length:
            self.fail(f"truncated: expected {file_length} bytes, got {size}")
        if size > file_length:
            self.fail(f"trailing data: expected {file_length} bytes, got {size}")
        if file_length < HEADER_SIZE + CRC_SIZE:
            self.fail(f"corrupt header: file length {file_length} is shorter than the "
                      f"header and checksum")
        body_end = file_length - CRC_SIZE
        (stored,) = struct.unpack_from("<I", data, body_end)
        computed = zlib.crc32(data[:body_end])
        if stored != computed:
            self.fail(f"checksum mismatch: stored CRC-32 0x{stored:08x}, computed "
                      f"0x{computed:08x}; the file is corrupted")
        self.body_end = body_end
        self.minor = minor

        # Header fields.
        if header_size != HEADER_SIZE:
            self.fail(f"corrupt header: header size {header_size}, expected {HEADER_SIZE}")
        if entry_size != TABLE_ENTRY_SIZE:
            self.fail(f"corrupt header: layer table entry size {entry_size}, "
                      f"expected {TABLE_ENTRY_SIZE}")
        if reserved:
            self.fail("corrupt header: reserved field is not zero")
        if not 1 <= code_bits <= _MAX_CODE_BITS:
            self.fail(f"corrupt header: code_bits is {code_bits}, allowed 1 to {_MAX_CODE_BITS}")
        if not ACCUMULATOR_BITS[0] <= accumulator_bits <= ACCUMULATOR_BITS[1]:
            self.fail(f"corrupt header: accumulator_bits is {accumulator_bits}, allowed "
                      f"{ACCUMULATOR_BITS[0]} to {ACCUMULATOR_BITS[1]}")
        if block_rows < 1:
            self.fail("corrupt header: block_rows is 0")
        if not (math.isfinite(input_scale) and input_scale > 0):
            self.fail(f"corrupt header: input_scale is {input_scale}, expected a finite "
                      f"positive number")
        ranges = [("header", 0, HEADER_SIZE)]
        ranges.append(self.range("layer table", table_offset, count * entry_size))
        ranges.append(self.range("network description", network_offset, network_length))
        ranges.append(self.range("metadata", metadata_offset, metadata_length))

        network = self.network_description(network_offset, network_length)
        metadata = self.metadata(metadata_offset, metadata_length)
        compute = [(index, spec) for index, spec in enumerate(network.layers)
                   if spec.is_compute]
        if count != len(compute):
            self.fail(f"inconsistent layer table: it has {count} entries, but the network "
                      f"has {len(compute)} compute layers")
        layers = {}
        for position, (index, spec) in enumerate(compute):
            layer, sections = self.layer(network, position, table_offset + position * entry_size,
                                         index, spec, code_bits, position == len(compute) - 1)
            layers[spec.name] = layer
            ranges += sections
        self.check_overlaps(ranges)
        for layer in layers.values():
            self.check_channel_ranges(layer, accumulator_bits)
        net = IntegerNetwork(network=network, layers=layers, input_scale=input_scale,
                             code_bits=code_bits, block_rows=block_rows,
                             accumulator_bits=accumulator_bits, metadata=metadata)
        if (major, minor) == VERSION:
            self.check_canonical(net)
        return net

    def check_channel_ranges(self, layer, accumulator_bits):
        """Per-channel parameters within what the golden model and the core compute exactly."""
        what = f"layer {layer.name!r}"
        limit = 2 ** (accumulator_bits - 1)
        bias = layer.bias.astype(np.int64)
        if np.any((bias < -limit) | (bias >= limit)):
            channel = int(np.argmax((bias < -limit) | (bias >= limit)))
            self.fail(f"{what}: bias of channel {channel} is {int(bias[channel])}, outside the "
                      f"{accumulator_bits}-bit accumulator ({-limit} to {limit - 1})")
        if layer.final:
            ranges = {"multiplier": (0, 0), "shift": (0, 0)}
        else:
            ranges = {"multiplier": MULTIPLIER_RANGE, "shift": SHIFT_RANGE}
        for name, (low, high) in ranges.items():
            values = getattr(layer, name).astype(np.int64)
            bad = (values < low) | (values > high)
            if bad.any():
                channel = int(np.argmax(bad))
                role = "the final layer outputs its accumulators" if layer.final \
                    else "a hidden layer requantises"
                self.fail(f"{what}: {name} of channel {channel} is {int(values[channel])}, "
                          f"allowed {low} to {high} ({role})")

    def check_canonical(self, net):
        """Refuse a file that is not exactly what :func:`write` makes of what it holds:
        reformatted JSON, nonzero padding or reordered sections would otherwise be
        accepted and then lost on the next write."""
        try:
            again, layout = write_with_layout(net)
        except SdHwError as error:
            self.fail(f"holds a network that cannot be written back ({error})")
        if again == self.data:
            return
        offset = next(i for i, (a, b) in enumerate(zip(again, self.data)) if a != b) \
            if len(again) == len(self.data) else min(len(again), len(self.data))
        self.fail(f"not in canonical form: byte {offset} ({_region(layout, offset)}) differs "
                  f"from the encoding of the data it holds")

    def range(self, what, offset, length):
        if length and (offset < HEADER_SIZE or offset + length > self.body_end):
            self.fail(f"inconsistent layer table: {what} at offset {offset}, length {length} "
                      f"lies outside the file data (bytes {HEADER_SIZE} to {self.body_end})")
        return (what, offset, length)

    def check_overlaps(self, ranges):
        ranges = sorted((r for r in ranges if r[2]), key=lambda r: r[1])
        for (what_a, off_a, len_a), (what_b, off_b, _) in zip(ranges, ranges[1:]):
            if off_a + len_a > off_b:
                self.fail(f"inconsistent layer table: {what_b} at offset {off_b} overlaps "
                          f"{what_a} (bytes {off_a} to {off_a + len_a})")

    def text(self, what, offset, length):
        try:
            return self.data[offset:offset + length].decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"corrupt {what}: not UTF-8 text")

    def network_description(self, offset, length):
        text = self.text("network description", offset, length)
        try:
            return Network.from_json(text, source=f"{self.source}: network description")
        except NetworkSpecError as error:
            raise WeightFileError(str(error)) from None
        except RecursionError:
            self.fail("corrupt network description: JSON nested too deeply")

    def metadata(self, offset, length):
        text = self.text("metadata", offset, length)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            self.fail("corrupt metadata: not a JSON object")
        return value

    def layer(self, network, position, entry_offset, index, spec, code_bits, final):
        (table_index, flags, block_rows, basis_group, in_scale, out_scale,
         *spans) = _ENTRY.unpack_from(self.data, entry_offset)
        where = f"layer table entry {position}"
        if table_index >= len(network.layers) or not network.layers[table_index].is_compute:
            self.fail(f"inconsistent layer table: {where} names layer index {table_index}, "
                      f"which is not a compute layer of the network")
        if table_index != index:
            self.fail(f"inconsistent layer table: {where} names layer {table_index} "
                      f"({network.layers[table_index].name!r}), expected compute layer "
                      f"{index} ({spec.name!r}); entries must follow the network order")
        what = f"layer {spec.name!r}"
        if flags & ~_KNOWN_FLAGS or bin(flags & (FLAG_DECOMPOSED | FLAG_DENSE)).count("1") != 1:
            self.fail(f"inconsistent layer table: {what} has flags 0x{flags:x}; exactly one "
                      f"of decomposed (1) and dense (2), and optionally final (4), is allowed")
        if bool(flags & FLAG_FINAL) != final:
            self.fail(f"inconsistent layer table: {what} is {'' if final else 'not '}the last "
                      f"compute layer but its final flag is {'clear' if final else 'set'}")
        if basis_group and self.minor == 0:
            self.fail(f"inconsistent layer table: {what}: reserved field is not zero")
        if not (math.isfinite(in_scale) and in_scale > 0):
            self.fail(f"inconsistent layer table: {what}: input_scale is {in_scale}")
        if not (math.isfinite(out_scale) and out_scale >= 0):
            self.fail(f"inconsistent layer table: {what}: output_scale is {out_scale}")
        decomposed = bool(flags & FLAG_DECOMPOSED)
        m = spec.out_size
        sections = {name: (spans[2 * i], spans[2 * i + 1]) for i, name in enumerate(SECTIONS)}
        ranges = [self.range(f"{what} {name}", offset, length)
                  for name, (offset, length) in sections.items()]

        def array(name, dtype, file_dtype, shape, why=""):
            offset, length = sections[name]
            count = int(np.prod(shape))
            expected = count * np.dtype(file_dtype).itemsize
            if length != expected:
                self.fail(f"inconsistent layer table: {what} {name} has {length} bytes, "
                          f"expected {expected} for shape {shape}{why}")
            return (np.frombuffer(self.data, file_dtype, count, offset)
                    .astype(dtype).reshape(shape))

        if decomposed:
            rows = rows_per_channel(spec)
            if block_rows < 1:
                self.fail(f"inconsistent layer table: {what}: block_rows is 0")
            n_blocks = -(-rows // block_rows)
            offset, length = sections["weights"]
            if m * rows > 8 * length:
                self.fail(f"{what}: coefficient stream of {length} bytes is shorter than the "
                          f"row bitmaps of {m} channels x {rows} rows alone")
            try:
                present, negative, exponent = coefficient_stream.decode(
                    self.data[offset:offset + length], out_channels=m, rows=rows,
                    block_rows=block_rows, code_bits=code_bits)
            except WeightFileError as error:
                self.fail(f"{what}: {error}")
            shared = 1 if self.minor == 0 else basis_group
            if not 1 <= shared <= m:
                self.fail(f"inconsistent layer table: {what}: basis_group is {shared}, but the "
                          f"layer has {m} output channels (allowed basis_group 1 to {m})")
            groups = -(-m // shared)
            basis = array("basis", np.int8, "i1", (groups, n_blocks, 3, 3),
                          f" ({groups} group(s) of basis_group = {shared} channels, "
                          f"{n_blocks} block(s))")
            weights = DecomposedWeights(present, negative, exponent,
                                        np.repeat(basis, shared, axis=0)[:m], block_rows,
                                        shared_basis=shared)
        else:
            if block_rows:
                self.fail(f"inconsistent layer table: {what} is dense but has block_rows "
                          f"{block_rows}")
            if basis_group:
                self.fail(f"inconsistent layer table: {what} is dense but has basis_group "
                          f"{basis_group}")
            weights = DenseWeights(array("weights", np.int8, "i1", spec.weight_shape))
            if sections["basis"][1]:
                self.fail(f"inconsistent layer table: {what} is dense but has a basis")
        channel = {name: array(name, dtype, file_dtype, (m,))
                   for name, dtype, file_dtype in _CHANNEL_ARRAYS}
        scale = channel["weight_scale"]
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            self.fail(f"{what}: weight_scale is not finite and positive")
        layer = IntegerLayer(name=spec.name, weights=weights, input_scale=in_scale,
                             output_scale=out_scale, final=final, **channel)
        return layer, ranges


_HEADER_FIELDS = ("magic", "major", "minor", "header_size", "file_length", "layer_count",
                  "table_entry_size", "network_offset", "network_length", "metadata_offset",
                  "metadata_length", "table_offset", "input_scale", "code_bits",
                  "accumulator_bits", "reserved", "block_rows")
_ENTRY_FIELDS = ("layer_index", "flags", "block_rows", "reserved", "input_scale",
                 "output_scale", *(f"{name}_{part}" for name in SECTIONS
                                   for part in ("offset", "length")))


def _field_at(layout, offset):
    """Name of the struct field of ``layout`` (a :class:`struct.Struct` format) at ``offset``."""
    position = 0
    for code, name in zip(_struct_codes(layout.format), _HEADER_FIELDS if layout is _HEADER
                          else _ENTRY_FIELDS):
        size = struct.calcsize("<" + code)
        if offset < position + size:
            return name
        position += size
    return "?"


def _struct_codes(fmt):
    codes, count = [], ""
    for char in fmt.lstrip("<"):
        if char.isdigit():
            count += char
        else:
            codes += [count + char] if char == "s" else [char] * int(count or 1)
            count = ""
    return codes


def _region(layout, offset):
    """What lies at byte ``offset`` of a file with :class:`FileLayout` ``layout``."""
    if offset < HEADER_SIZE:
        return f"header field {_field_at(_HEADER, offset)}"
    for name, layer in layout.layers.items():
        start = layer.entry_offset
        if start <= offset < start + TABLE_ENTRY_SIZE:
            return f"layer table entry of {name!r}, field {_field_at(_ENTRY, offset - start)}"
    network_offset = HEADER_SIZE + len(layout.layers) * TABLE_ENTRY_SIZE
    if offset < network_offset + layout.network_bytes:
        return "network description"
    if offset < network_offset + layout.network_bytes + layout.metadata_bytes:
        return "metadata"
    for name, layer in layout.layers.items():
        for section, (start, length) in layer.sections.items():
            if start <= offset < start + length:
                return f"layer {name!r} {section}"
    if offset >= layout.file_length - CRC_SIZE:
        return "checksum or file end"
    return "alignment padding"
