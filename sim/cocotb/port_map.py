"""Payload packing for cocotb test benches, driven by a block's port map.

The port map (``<block>.ports.json``, written by :func:`sd_hw.generate.generate`)
describes every stream payload with the field offsets and widths of its
``lib.data`` layout. :class:`PayloadCodec` packs nested Python values into
the flat payload vector and unpacks them again, so that no test bench writes
a bit offset by hand. This module imports neither Amaranth nor cocotb.
"""

import json
import os
from pathlib import Path


__all__ = ["PayloadCodec", "PortMap", "PORT_MAP_ENV"]

#: Environment variable through which a test bench is told its port map file.
PORT_MAP_ENV = "SD_HW_PORT_MAP"


class PayloadCodec:
    """Packs and unpacks values of one shape described in a port map.

    A struct packs from a dict of its fields, an array from a sequence of its
    elements, a plain shape from an int (range-checked; signed shapes take
    negative values), or any of them from an already packed int. Unpacking
    gives the same nesting with signed fields sign-extended.
    """

    def __init__(self, description):
        self.description = description
        self.width = description["width"]

    def pack(self, value):
        return self._pack(self.description, value, ())

    def unpack(self, raw):
        raw = int(raw)
        if not 0 <= raw < 1 << self.width:
            raise ValueError(f"raw payload {raw} does not fit {self.width} bits")
        return self._unpack(self.description, raw)

    def _pack(self, desc, value, path):
        kind = desc["kind"]
        if kind in ("struct", "union", "array") and isinstance(value, int):
            if not 0 <= value < 1 << desc["width"]:
                raise ValueError(f"raw payload {value} does not fit {desc['width']} bits")
            return value
        if kind == "struct":
            if not isinstance(value, dict) or set(value) != set(desc["fields"]):
                raise ValueError(f"payload{''.join(f'[{p!r}]' for p in path)} must be a dict "
                                 f"with fields {sorted(desc['fields'])}, got {value!r}")
            return self._pack_fields(desc["fields"].items(), value, path)
        if kind == "union":
            if not isinstance(value, dict) or len(value) != 1:
                raise ValueError(f"a union payload takes a dict of one field, got {value!r}")
            return self._pack_fields(((n, desc["fields"][n]) for n in value), value, path)
        if kind == "array":
            if len(value) != desc["length"]:
                raise ValueError(f"payload{''.join(f'[{p!r}]' for p in path)} must have "
                                 f"{desc['length']} elements, got {len(value)}")
            return self._pack_fields(enumerate(desc["elements"]), value, path)
        low, high = ((-(1 << desc["width"] - 1), (1 << desc["width"] - 1) - 1)
                     if kind == "signed" else (0, (1 << desc["width"]) - 1))
        value = int(value)
        if not low <= value <= high:
            raise ValueError(f"payload{''.join(f'[{p!r}]' for p in path)} is {value}, "
                             f"a {kind} {desc['width']}-bit field holds {low} to {high}")
        return value & ((1 << desc["width"]) - 1)

    def _pack_fields(self, fields, value, path):
        raw = 0
        for key, field in fields:
            raw |= self._pack(field["shape"], value[key], (*path, key)) << field["offset"]
        return raw

    def _unpack(self, desc, raw):
        kind = desc["kind"]
        if kind in ("struct", "union"):
            return {name: self._field(field, raw) for name, field in desc["fields"].items()}
        if kind == "array":
            return [self._field(field, raw) for field in desc["elements"]]
        raw &= (1 << desc["width"]) - 1
        if kind == "signed" and raw >> (desc["width"] - 1):
            raw -= 1 << desc["width"]
        return raw

    def _field(self, field, raw):
        return self._unpack(field["shape"], raw >> field["offset"])


class PortMap:
    """A block's port map: ports, streams with their codecs, and its configuration."""

    def __init__(self, description):
        self.description = description
        self.top = description["top"]
        self.ports = description["ports"]
        self.streams = description["streams"]
        self.config = description["config"]
        self.clock = description.get("clock")
        self.reset = description.get("reset")

    @classmethod
    def load(cls, path=None):
        """Read a port map file; by default the one named by ``$SD_HW_PORT_MAP``."""
        if path is None:
            path = os.environ.get(PORT_MAP_ENV)
            if not path:
                raise RuntimeError(f"${PORT_MAP_ENV} is not set: pass the port map file to "
                                   f"run_cocotb through extra_env")
        return cls(json.loads(Path(path).read_text()))

    def codec(self, stream):
        """The :class:`PayloadCodec` of the payload of stream ``stream`` (its name prefix)."""
        return PayloadCodec(self.streams[stream]["layout"])

    def port_codec(self, port):
        """The :class:`PayloadCodec` of a plain port, e.g. a configuration input."""
        return PayloadCodec(self.ports[port]["shape"])
