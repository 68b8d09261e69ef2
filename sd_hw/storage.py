"""Storage report: where the bits of a weight file go, layer by layer.

Every number is counted from the encoded data (:mod:`sd_hw.weight_file` and
:func:`sd_hw.coefficient_stream.bit_counts`), so the bits of all rows plus
the file overhead add up to ``8 * len(weight_file.write(net))``.

Per compute layer:

* ``code_bits``: coefficient codes (``code_bits + 1`` bits per coefficient);
* ``index_bits``: row bitmaps and element masks of the coefficient stream;
* ``basis_bits``: int8 bases, 72 bits per block; with shared bases
  (``basis_group`` G > 1) 72 bits per block of a group of G channels, as
  the weight file stores them;
* ``dense_bits``: int8 weights of a layer kept dense;
* ``padding_bits``: zero bits aligning the stream's blocks to bytes and the
  layer's file sections to 8 bytes;
* ``metadata_bits``: per channel bias (int32), weight scale (float64),
  requantisation multiplier (int32) and shift (uint8), plus the layer's
  128-byte layer table entry (flags, scales, section offsets).

``storage_bits`` (the weights proper) is codes + index + basis + dense;
``bits_per_weight`` divides it by the layer's number of weights,
``bits_per_weight_total`` divides ``total_bits`` (everything). The
reference sizes are 8 bits (``int8_bits``) and 32 bits (``float32_bits``)
per weight; ``int8_ratio`` and ``float32_ratio`` divide them by
``storage_bits``.
"""

from dataclasses import asdict, dataclass, field

from . import coefficient_stream, weight_file


__all__ = ["LayerStorage", "StorageReport", "storage_report"]


@dataclass
class LayerStorage:
    """The bits of one compute layer (or of the totals)."""

    name: str
    kind: str
    weights: int
    decomposed: bool
    code_bits: int = 0
    index_bits: int = 0
    basis_bits: int = 0
    dense_bits: int = 0
    padding_bits: int = 0
    metadata_bits: int = 0

    @property
    def storage_bits(self):
        return self.code_bits + self.index_bits + self.basis_bits + self.dense_bits

    @property
    def total_bits(self):
        return self.storage_bits + self.padding_bits + self.metadata_bits

    @property
    def bits_per_weight(self):
        return self.storage_bits / self.weights if self.weights else 0.0

    @property
    def bits_per_weight_total(self):
        return self.total_bits / self.weights if self.weights else 0.0

    @property
    def int8_bits(self):
        return 8 * self.weights

    @property
    def float32_bits(self):
        return 32 * self.weights

    @property
    def int8_ratio(self):
        return self.int8_bits / self.storage_bits if self.storage_bits else 0.0

    @property
    def float32_ratio(self):
        return self.float32_bits / self.storage_bits if self.storage_bits else 0.0

    def to_dict(self):
        out = asdict(self)
        for name in ("storage_bits", "total_bits", "bits_per_weight", "bits_per_weight_total",
                     "int8_bits", "float32_bits", "int8_ratio", "float32_ratio"):
            out[name] = getattr(self, name)
        return out


_COLUMNS = (("layer", "name", "{}"), ("kind", "kind", "{}"), ("weights", "weights", "{}"),
            ("SD", "decomposed", "{}"), ("code", "code_bits", "{}"),
            ("index", "index_bits", "{}"), ("basis", "basis_bits", "{}"),
            ("dense", "dense_bits", "{}"), ("pad", "padding_bits", "{}"),
            ("meta", "metadata_bits", "{}"), ("total", "total_bits", "{}"),
            ("b/w", "bits_per_weight", "{:.3f}"), ("b/w+meta", "bits_per_weight_total", "{:.3f}"),
            ("int8", "int8_bits", "{}"), ("float32", "float32_bits", "{}"),
            ("int8/SD", "int8_ratio", "{:.2f}"), ("f32/SD", "float32_ratio", "{:.2f}"))


@dataclass
class StorageReport:
    """One :class:`LayerStorage` per compute layer, the file overhead and totals.

    ``file_overhead_bits`` are the header, network description, metadata,
    their alignment padding and the CRC; ``total.total_bits`` equals
    ``8 * file_bytes``.
    """

    layers: list
    file_overhead_bits: int
    file_bytes: int
    code_bits: int
    block_rows: int
    total: LayerStorage = field(init=False)

    def __post_init__(self):
        total = LayerStorage("total", "", sum(r.weights for r in self.layers),
                             any(r.decomposed for r in self.layers))
        for name in ("code_bits", "index_bits", "basis_bits", "dense_bits", "padding_bits",
                     "metadata_bits"):
            setattr(total, name, sum(getattr(r, name) for r in self.layers))
        total.metadata_bits += self.file_overhead_bits
        self.total = total

    def format_table(self):
        """An aligned plain-text table: one line per layer, then the totals."""
        def cells(row):
            out = []
            for _, attr, fmt in _COLUMNS:
                value = getattr(row, attr)
                if attr == "decomposed":
                    value = "yes" if value else "no"
                out.append(fmt.format(value))
            return out

        overhead = [""] * len(_COLUMNS)
        overhead[0], overhead[1] = "(file)", "overhead"
        overhead[[c[1] for c in _COLUMNS].index("metadata_bits")] = str(self.file_overhead_bits)
        overhead[[c[1] for c in _COLUMNS].index("total_bits")] = str(self.file_overhead_bits)
        total = cells(self.total)
        total[[c[1] for c in _COLUMNS].index("decomposed")] = ""
        body = [cells(r) for r in self.layers] + [overhead, total]
        head = [c[0] for c in _COLUMNS]
        widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]

        def line(values):
            return "  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                             for i, (v, w) in enumerate(zip(values, widths))).rstrip()

        rule = "-" * len(line(head))
        lines = [f"weight file: {self.file_bytes} bytes ({8 * self.file_bytes} bits); "
                 f"code bits {self.code_bits}, block rows {self.block_rows}; "
                 f"all sizes in bits", line(head), rule]
        lines += [line(v) for v in body[:-1]] + [rule, line(body[-1])]
        return "\n".join(lines)

    def to_dict(self):
        return {"file_bytes": self.file_bytes, "file_overhead_bits": self.file_overhead_bits,
                "code_bits": self.code_bits, "block_rows": self.block_rows,
                "layers": [r.to_dict() for r in self.layers], "total": self.total.to_dict()}


def _kind(spec):
    if spec.kind == "conv2d":
        return f"conv2d {spec.kernel_size}x{spec.kernel_size}"
    return spec.kind


def storage_report(net):
    """The :class:`StorageReport` of an :class:`IntegerNetwork`'s weight file."""
    _, layout = weight_file.write_with_layout(net)
    rows = []
    for spec in net.network.compute_layers:
        layer = net.layers[spec.name]
        where = layout.layers[spec.name]
        size = {name: length * 8 for name, (_, length) in where.sections.items()}
        weights = 1
        for d in spec.weight_shape:
            weights *= d
        row = LayerStorage(spec.name, _kind(spec), weights, layer.decomposed)
        if layer.decomposed:
            counts = coefficient_stream.bit_counts(layer.weights, net.code_bits)
            assert counts["total_bits"] == size["weights"]
            row.code_bits = counts["code_bits"]
            row.index_bits = counts["index_bits"]
            row.padding_bits = counts["padding_bits"]
            row.basis_bits = size["basis"]
        else:
            row.dense_bits = size["weights"]
        row.padding_bits += 8 * where.padding_bytes
        row.metadata_bits = (8 * weight_file.TABLE_ENTRY_SIZE + size["bias"]
                             + size["weight_scale"] + size["multiplier"] + size["shift"])
        rows.append(row)
    overhead = 8 * (layout.header_bytes + layout.network_bytes + layout.metadata_bytes
                    + layout.padding_bytes + layout.crc_bytes)
    report = StorageReport(rows, overhead, layout.file_length, net.code_bits, net.block_rows)
    assert report.total.total_bits == 8 * layout.file_length
    return report
