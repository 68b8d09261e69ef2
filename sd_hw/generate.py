"""Verilog generation of the datapath blocks, with a port map for test benches.

:func:`generate` elaborates one block of :data:`BLOCKS` for an
:class:`~sd_hw.config.AcceleratorConfig` and writes two files to a folder:

``<block>.v``
    The Verilog of the block, top module named ``<block>``.
``<block>.ports.json``
    The port map: every port with its Verilog name, direction and width; for
    each valid/ready stream its three ports and its payload layout, with the
    offset and width of every field derived from the ``lib.data`` layout
    objects; and the configuration the block was built from. cocotb test
    benches pack and unpack payloads with it (see :mod:`sim.cocotb`).
"""

import dataclasses
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Const, Shape, ShapeCastable, Value, ValueCastable
from amaranth.lib import data, stream, wiring

from .config import AcceleratorConfig
from .errors import SdHwError


__all__ = ["BLOCKS", "GeneratedBlock", "generate", "generate_component", "port_map",
           "layout_description"]


class _Block:
    """A lazily imported block constructor: ``module.cls(config)``."""

    def __init__(self, module, cls):
        self.module = module
        self.cls = cls

    def __call__(self, config):
        try:
            constructor = getattr(importlib.import_module(self.module), self.cls)
        except (ImportError, AttributeError) as error:
            raise SdHwError(f"block {self.cls} ({self.module}) is not available: "
                            f"{type(error).__name__}: {error}") from error
        return constructor(config)

    def __repr__(self):
        return f"{self.module}.{self.cls}"


#: Block name -> callable taking an :class:`AcceleratorConfig` and returning the
#: block's ``wiring.Component``. The block modules are imported on first use,
#: so that one missing or broken block fails only when it is asked for.
BLOCKS = {
    "coefficient_decoder": _Block("sd_hw.datapath.coefficient_decoder", "CoefficientDecoder"),
    "shift_accumulate_pe": _Block("sd_hw.datapath.shift_accumulate", "ShiftAccumulatePE"),
    "shift_accumulate_array": _Block("sd_hw.datapath.shift_accumulate", "ShiftAccumulateArray"),
    "basis_engine": _Block("sd_hw.datapath.basis_engine", "BasisEngine"),
}


@dataclass(frozen=True)
class GeneratedBlock:
    """The files :func:`generate` wrote, and the port map they describe."""

    name: str
    verilog_path: Path
    port_map_path: Path
    port_map: dict


def layout_description(shape):
    """A JSON-ready description of a shape, with field offsets from the layout objects.

    A :class:`data.StructLayout` or :class:`data.UnionLayout` gives
    ``{"kind": "struct"|"union", "width", "fields": {name: {"offset", "width",
    "shape"}}}``; a :class:`data.ArrayLayout` gives ``{"kind": "array", "width",
    "length", "elements": [{"offset", "width", "shape"}, ...]}``; any other shape
    ``{"kind": "signed"|"unsigned", "width"}``.
    """
    if isinstance(shape, data.Layout):
        def field(f):
            return {"offset": f.offset, "width": f.width, "shape": layout_description(f.shape)}
        if isinstance(shape, data.ArrayLayout):
            return {"kind": "array", "width": shape.size, "length": shape.length,
                    "elements": [field(f) for _, f in shape]}
        if isinstance(shape, (data.StructLayout, data.UnionLayout)):
            kind = "union" if isinstance(shape, data.UnionLayout) else "struct"
            return {"kind": kind, "width": shape.size,
                    "fields": {name: field(f) for name, f in shape}}
        raise SdHwError(f"layout {shape!r} has no port-map description")
    cast = Shape.cast(shape)
    return {"kind": "signed" if cast.signed else "unsigned", "width": cast.width}


def _streams(signature, prefix=(), flipped=False):
    """Yield ``(path, is_sink, stream.Signature)`` for each stream in ``signature``."""
    for name, member in signature.members.items():
        if not member.is_signature:
            continue
        inward = (member.flow == wiring.In) != flipped
        paths = [prefix + (name,)]
        for size in member.dimensions:
            paths = [path + (index,) for path in paths for index in range(size)]
        inner = member.signature
        if isinstance(inner, wiring.FlippedSignature):
            inner = inner.flip()
        for path in paths:
            if isinstance(inner, stream.Signature):
                yield path, inward, inner
            else:
                yield from _streams(inner, path, inward)


def _verilog_name(path):
    return "__".join(map(str, path))


def port_map(component, *, name, config=None):
    """The port map of ``component`` as a JSON-ready dict (see the module doc)."""
    if not isinstance(getattr(component, "signature", None), wiring.Signature):
        raise SdHwError(f"{component!r} is not a wiring.Component with a signature")
    ports = {}
    for path, member, value in component.signature.flatten(component):
        shape = value.shape() if isinstance(value, ValueCastable) else Value.cast(value).shape()
        if isinstance(value, ValueCastable):
            value = value.as_value()
        entry = {
            "name": _verilog_name(path),
            "direction": "input" if member.flow == wiring.In else "output",
            "width": len(value),
            "signed": Shape.cast(shape).signed,
            "shape": layout_description(shape),
        }
        if isinstance(value, Const):
            entry["constant"] = value.value
        ports[entry["name"]] = entry
    streams = {}
    for path, is_sink, signature in _streams(component.signature):
        prefix = _verilog_name(path)
        streams[prefix] = {
            "direction": "sink" if is_sink else "source",
            "valid": f"{prefix}__valid",
            "ready": f"{prefix}__ready",
            "payload": f"{prefix}__payload",
            "always_valid": signature.always_valid,
            "always_ready": signature.always_ready,
            "layout": layout_description(signature.members["payload"].shape),
        }
    if config is not None and dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return {"top": name, "ports": ports, "streams": streams, "config": config}


_PORT_DECLARATION = re.compile(r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?"
                               r"(\\?\S+?)\s*;", re.M)


def _verilog_ports(verilog_text, top):
    """``{name: (direction, width)}`` of the ports of module ``top`` in ``verilog_text``."""
    match = re.search(rf"^module\s+\\?{re.escape(top)}\s*\(.*?^endmodule", verilog_text,
                      re.M | re.S)
    if match is None:
        raise SdHwError(f"module {top!r} not found in the generated Verilog")
    return {name.lstrip("\\"): (direction, int(msb) - int(lsb) + 1 if msb else 1)
            for direction, msb, lsb, name in _PORT_DECLARATION.findall(match.group(0))}


def generate_component(component, name, out_dir, *, config=None):
    """Write ``<name>.v`` and ``<name>.ports.json`` of ``component`` to ``out_dir``.

    The Verilog ports are checked against the port map, so that a test bench
    reading the map never drives a port that does not exist.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ports = port_map(component, name=name, config=config)
    text = verilog.convert(component, name=name)
    declared = _verilog_ports(text, name)
    for port in ports["ports"].values():
        if "constant" in port and port["name"] not in declared:
            continue
        found = declared.get(port["name"])
        if found != (port["direction"], port["width"]):
            raise SdHwError(f"port {port['name']} of {name} is {found} in the Verilog, "
                            f"but {(port['direction'], port['width'])} in the signature")
    extra = set(declared) - set(ports["ports"]) - {"clk", "rst"}
    if extra:
        raise SdHwError(f"Verilog ports {sorted(extra)} of {name} are not in its signature")
    ports["clock"] = "clk" if "clk" in declared else None
    ports["reset"] = "rst" if "rst" in declared else None
    verilog_path = out_dir / f"{name}.v"
    port_map_path = out_dir / f"{name}.ports.json"
    verilog_path.write_text(text)
    port_map_path.write_text(json.dumps(ports, indent=1) + "\n")
    return GeneratedBlock(name, verilog_path, port_map_path, ports)


def generate(block, config=None, out_dir="build/verilog"):
    """Generate block ``block`` of :data:`BLOCKS` for ``config`` into ``out_dir``.

    ``config`` defaults to ``AcceleratorConfig()``. Returns a :class:`GeneratedBlock`.
    """
    if block not in BLOCKS:
        raise SdHwError(f"unknown block {block!r}; blocks are {CORE_TOP} (the whole "
                        f"accelerator), {', '.join(BLOCKS)}")
    config = AcceleratorConfig() if config is None else config
    # Before the block is built: a block that is never elaborated warns when collected.
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return generate_component(BLOCKS[block](config), block, out_dir, config=config)


CORE_TOP = "sd_core"


def _source_digest():
    """A digest of the generator's own sources: a cached core is stale when they change."""
    import hashlib
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def core_component(config):
    """The accelerator a configuration describes: an :class:`~sd_hw.core.core.SDCore` for a
    :class:`~sd_hw.core.config.CoreConfig`, a :class:`~sd_hw.serial.core.SerialCore` for
    a :class:`~sd_hw.serial.config.SerialConfig`."""
    from .core.config import CoreConfig
    from .serial.config import SerialConfig
    if isinstance(config, CoreConfig):
        from .core.core import SDCore
        return SDCore(config)
    if isinstance(config, SerialConfig):
        from .serial.core import SerialCore
        return SerialCore(config)
    raise SdHwError(f"a core configuration is a CoreConfig or a SerialConfig, got {config!r}")


def core_description(config):
    """The JSON description of a core configuration, naming the core for a serial one."""
    from .core.config import CoreConfig
    from .serial.config import SerialConfig
    if not isinstance(config, (CoreConfig, SerialConfig)):
        raise SdHwError(f"a core configuration is a CoreConfig or a SerialConfig, "
                        f"got {config!r}")
    description = config.to_dict()
    if isinstance(config, SerialConfig):
        description = {"core": "serial", **description}
    return description


def generate_core(config, out_dir="build/core", *, reuse=True):
    """Write the Verilog and port map of the core of ``config`` (:func:`core_component`).

    The files go to ``out_dir/<tag>/sd_core.{v,ports.json}``, the tag naming
    the configuration and the generator's sources; with ``reuse``, files
    written earlier for the same tag are used as they are (a core of the
    default configuration takes seconds to convert).
    """
    import hashlib
    description = core_description(config)
    tag = hashlib.sha1((json.dumps(description, sort_keys=True) + _source_digest())
                       .encode()).hexdigest()[:12]
    folder = Path(out_dir) / tag
    verilog_path = folder / f"{CORE_TOP}.v"
    port_map_path = folder / f"{CORE_TOP}.ports.json"
    if reuse and verilog_path.is_file() and port_map_path.is_file():
        ports = json.loads(port_map_path.read_text())
        if ports.get("config") == description:
            return GeneratedBlock(CORE_TOP, verilog_path, port_map_path, ports)
    folder.mkdir(parents=True, exist_ok=True)
    return generate_component(core_component(config), CORE_TOP, folder, config=description)
