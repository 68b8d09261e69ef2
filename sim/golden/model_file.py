"""Float models as sd-hw reads them: one ``.npz`` file.

=====================  ====================================================
key                    content
=====================  ====================================================
``network``            the network description as a JSON string
                       (:class:`sd_hw.network.Network`)
``<layer>.weight``     float weights of each linear/conv2d layer, PyTorch
                       shape ``(out, in)`` or ``(out, in, k, k)``
``<layer>.bias``       float bias, shape ``(out,)``
``calibration``        optional: float sample inputs ``(N,) + input_shape``
                       used to choose activation scales
=====================  ====================================================

Every byte is checked before use (:func:`read_npz`, :func:`parse_npy`): a file that is
not such an archive, or holds another kind of array, raises
:class:`~sd_hw.errors.ModelFileError` naming the file and the member.
"""

import io
import json
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sd_hw.errors import ModelFileError, SdHwError
from sd_hw.network import Network


__all__ = ["FloatModel", "load_model", "save_model", "check_params", "check_inputs",
           "load_npy", "parse_npy", "read_npz"]


@dataclass(eq=False)
class FloatModel:
    network: Network
    params: dict
    calibration: np.ndarray = None


def check_params(network, params, *, source="model"):
    """Raise unless ``params`` has a finite float weight and bias of the right
    shape for every compute layer, and nothing else."""
    expected = {}
    for layer in network.compute_layers:
        expected[f"{layer.name}.weight"] = layer.weight_shape
        expected[f"{layer.name}.bias"] = (layer.out_size,)
    for key, shape in expected.items():
        if key not in params:
            raise SdHwError(f"{source}: missing array {key!r} (shape {shape})")
        value = np.asarray(params[key])
        if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
            raise SdHwError(f"{source}: array {key!r} must be numeric, got {value.dtype}")
        if value.shape != shape:
            raise SdHwError(f"{source}: array {key!r} has shape {value.shape}, "
                            f"the network needs {shape}")
        if not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise SdHwError(f"{source}: array {key!r} contains {bad} NaN or Inf value(s)")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise SdHwError(f"{source}: array(s) {', '.join(map(repr, extra))} belong to no "
                        f"linear or conv2d layer of the network")


def load_model(path):
    """The :class:`FloatModel` in the ``.npz`` file at ``path``.

    Every member is checked before use (:func:`read_npz`); any problem raises
    :class:`~sd_hw.errors.ModelFileError` naming the file and the member.
    """
    source = str(path)
    members = read_npz(path, what="model")
    if "network" not in members:
        raise ModelFileError(f"{source}: missing the 'network' entry (the JSON network "
                             f"description)")
    text = members.pop("network")
    if text.dtype.kind != "U" or text.size != 1:
        raise ModelFileError(f"{source}: entry 'network' must be one string (the JSON network "
                             f"description), got an array of {text.dtype} with shape "
                             f"{text.shape}")
    network = Network.from_json(str(text.reshape(())[()]), source=f"{source}: network")
    calibration = members.pop("calibration", None)
    params = {}
    for key, value in members.items():
        if value.dtype.kind not in "fiu":
            raise ModelFileError(f"{source}: array {key!r} must be integer or float, got "
                                 f"{_dtype_name(value.dtype)}")
        params[key] = value.astype(np.float64)
    check_params(network, params, source=source)
    if calibration is not None:
        calibration = check_inputs(network, calibration, source=f"{source}: calibration")
    return FloatModel(network, params, calibration)


# Reading .npy and .npz files without trusting them. ---------------------------
#
# NumPy's own loader reads lazily and raises whatever its zip, zlib and header
# parsers raise; here every byte is checked before an array is made: the zip
# archive (no encryption, stored or deflated members, each a .npy), the .npy
# header (parsed by a strict grammar, not evaluated), the dtype (plain numbers
# or text; no objects, records, complex or dates) and the data length.

_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER = 10000
# A member's declared size; a larger one is refused before it is inflated.
_MAX_MEMBER_BYTES = 1 << 32
_HEADER_ITEM = re.compile(r"\s*'(descr|fortran_order|shape)'\s*:\s*"
                          r"('[^']*'|True|False|\([0-9,\s]*\))\s*(,|$)")
_DESCR = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,6}")
# What zipfile raises for a damaged or unsupported archive: its BadZipFile, and
# the errors of the decompressor and the stream beneath it.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
               OSError, ValueError)
_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "M": "dates", "m": "time deltas",
               "O": "Python objects", "S": "bytes", "U": "text", "V": "raw records"}


def _dtype_name(dtype):
    return f"{_KIND_NAMES.get(dtype.kind, dtype.name)} ({dtype.str})"


def parse_npy(data, *, source, kinds="fiuU"):
    """The array in the ``.npy`` bytes ``data``; raise :class:`ModelFileError` unless it
    is a well-formed array of one of the dtype ``kinds`` (NumPy's kind letters)."""
    data = bytes(data)
    if data[:len(_NPY_MAGIC)] != _NPY_MAGIC:
        raise ModelFileError(f"{source}: not a .npy array (wrong magic number)")
    if len(data) < 10:
        raise ModelFileError(f"{source}: truncated .npy header ({len(data)} bytes)")
    version = (data[6], data[7])
    if version == (1, 0):
        (length,), start, encoding = struct.unpack_from("<H", data, 8), 10, "latin1"
    elif version in ((2, 0), (3, 0)) and len(data) >= 12:
        (length,), start = struct.unpack_from("<I", data, 8), 12
        encoding = "latin1" if version == (2, 0) else "utf-8"
    else:
        raise ModelFileError(f"{source}: unsupported .npy format version "
                             f"{version[0]}.{version[1]} (1.0, 2.0 and 3.0 are read)")
    if length > _NPY_MAX_HEADER:
        raise ModelFileError(f"{source}: .npy header of {length} bytes, at most "
                             f"{_NPY_MAX_HEADER} are read")
    if start + length > len(data):
        raise ModelFileError(f"{source}: truncated .npy header ({len(data)} bytes, the header "
                             f"ends at byte {start + length})")
    try:
        text = data[start:start + length].decode(encoding).strip()
    except UnicodeDecodeError:
        raise ModelFileError(f"{source}: .npy header is not {encoding} text") from None
    fields = {}
    body = text[1:-1].rstrip() if text[:1] == "{" and text[-1:] == "}" else None
    position = 0
    while body is not None and position < len(body):
        match = _HEADER_ITEM.match(body, position)
        if match is None or match.group(1) in fields or match.end() == position:
            body = None
            break
        fields[match.group(1)] = match.group(2)
        position = match.end()
    if body is None or set(fields) != {"descr", "fortran_order", "shape"}:
        raise ModelFileError(f"{source}: .npy header is not a plain array description "
                             f"(descr, fortran_order, shape)")
    descr = fields["descr"][1:-1]
    if not fields["descr"].startswith("'") or not _DESCR.fullmatch(descr):
        raise ModelFileError(f"{source}: .npy dtype {fields['descr'][:40]} is not a plain "
                             f"number or text type")
    try:
        dtype = np.dtype(descr)
    except TypeError:
        raise ModelFileError(f"{source}: .npy dtype {descr!r} is not a NumPy type") from None
    if dtype.kind not in kinds or dtype.itemsize == 0:
        allowed = " or ".join(_KIND_NAMES.get(k, {"f": "floats", "i": "integers",
                                                   "u": "unsigned integers"}[k]) for k in kinds)
        raise ModelFileError(f"{source}: array of {_dtype_name(dtype)}, expected {allowed}")
    shape_text = fields["shape"]
    if not shape_text.startswith("("):
        raise ModelFileError(f"{source}: .npy shape {shape_text} is not a tuple")
    parts = [p.strip() for p in shape_text[1:-1].split(",")]
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) > 32 or any(not p.isdecimal() or len(p) > 18 for p in parts):
        raise ModelFileError(f"{source}: .npy shape {shape_text[:60]} is not a tuple of at "
                             f"most 32 sizes")
    shape = tuple(int(p) for p in parts)
    count = math.prod(shape)
    have = len(data) - start - length
    if count * dtype.itemsize != have:
        raise ModelFileError(f"{source}: .npy data of {have} bytes, but shape {shape} of "
                             f"{dtype.str} needs {count * dtype.itemsize}")
    order = "F" if fields["fortran_order"] == "True" else "C"
    return np.frombuffer(data, dtype, count, start + length).reshape(shape, order=order)


def _read_file(path, what):
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file ({what})") from None
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the {what} "
                             f"({error.strerror or error})") from None


def load_npy(path, *, what, kinds="fiu"):
    """The array in the ``.npy`` file at ``path`` (the ``what`` of a command)."""
    data = _read_file(path, what)
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        raise ModelFileError(f"{path}: a .npz archive, the {what} must be one .npy array")
    if not data:
        raise ModelFileError(f"{path}: empty file, the {what} must be a .npy array")
    return parse_npy(data, source=f"{path} ({what})", kinds=kinds)


def read_npz(path, *, what):
    """``{name: array}`` of every member of the ``.npz`` archive at ``path``.

    Members are ``<name>.npy`` arrays of numbers or text; anything else raises
    :class:`ModelFileError`.
    """
    source = str(path)
    data = _read_file(path, what)
    if not data:
        raise ModelFileError(f"{source}: empty file, not a .npz {what}")
    if data[:len(_NPY_MAGIC)] == _NPY_MAGIC:
        raise ModelFileError(f"{source}: not a .npz {what} (it holds a single array, not the "
                             f"network description and weights)")
    if data[:2] != b"PK":
        raise ModelFileError(f"{source}: not a readable .npz {what} (not a zip archive)")
    members = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                name = info.filename
                where = f"{source}: member {name[:80]!r}"
                if not name.endswith(".npy") or name[:-4] in members:
                    raise ModelFileError(f"{where} is not a .npy array or is duplicated "
                                         f"(a .npz holds one <name>.npy per array)")
                if info.flag_bits & 0x41 or info.compress_type not in (zipfile.ZIP_STORED,
                                                                       zipfile.ZIP_DEFLATED):
                    raise ModelFileError(f"{where} is encrypted or compressed with method "
                                         f"{info.compress_type}; stored or deflated expected")
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise ModelFileError(f"{where} declares {info.file_size} bytes, more than "
                                         f"the {_MAX_MEMBER_BYTES} read")
                members[name[:-4]] = parse_npy(archive.read(info), source=where,
                                               kinds="fiubcUSVMm")
    except _ZIP_ERRORS as error:
        if isinstance(error, SdHwError):
            raise
        raise ModelFileError(f"{source}: not a readable .npz {what} ({type(error).__name__}: "
                             f"{str(error)[:100]})") from None
    return members


def check_inputs(network, x, *, source):
    """Float inputs of shape ``(N,) + input_shape`` (one unbatched input is accepted)."""
    x = np.asarray(x)
    shape = tuple(network.input_shape)
    if x.shape == shape:
        x = x[None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or len(x) == 0:
        raise SdHwError(f"{source}: inputs have shape {x.shape}, the network expects "
                        f"(N, {', '.join(map(str, shape))}) with N >= 1")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise SdHwError(f"{source}: inputs must be numeric, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise SdHwError(f"{source}: inputs contain NaN or Inf")
    return x.astype(np.float64)


def save_model(path, network, params, calibration=None):
    arrays = {"network": np.array(json.dumps(network.to_dict()))}
    arrays.update({key: np.asarray(value, dtype=np.float32) for key, value in params.items()})
    if calibration is not None:
        arrays["calibration"] = np.asarray(calibration, dtype=np.float32)
    # A file object, so that the archive is written to exactly ``path`` (given a name,
    # NumPy would append '.npz').
    try:
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot write the model "
                             f"({error.strerror or error})") from None
