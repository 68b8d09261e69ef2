"""The configuration of a whole accelerator: its datapath and its buffers.

:class:`CoreConfig` is frozen and validated at construction, like the
datapath's :class:`~sd_hw.config.AcceleratorConfig`; every memory of
:class:`~sd_hw.core.core.SDCore` is sized from it, and the compiler refuses
networks that do not fit it.
"""

from dataclasses import dataclass, field

from ..config import AcceleratorConfig, core_config_from_description
from ..datapath.layouts import dense_row_layout, row_layout
from ..errors import ParameterError, check_range


__all__ = ["CoreConfig", "BASIS_WORD_BITS", "HOST_WORD_BITS", "COEFFICIENT_FORMATS",
           "WEIGHT_KINDS", "ROW_LOOKAHEADS"]

#: Width of a word of a lane's basis memory.
BASIS_WORD_BITS = 16
#: Values of :attr:`CoreConfig.coefficients`.
COEFFICIENT_FORMATS = ("packed", "unpacked")
#: Values of :attr:`CoreConfig.weights`.
WEIGHT_KINDS = ("smartdeal", "dense")
#: Values of :attr:`CoreConfig.row_lookahead`.
ROW_LOOKAHEADS = (1, 2)
#: Width of the host bus and of the program, index, parameter and output memories.
HOST_WORD_BITS = 32

# (name, smallest, largest) of every buffer depth; addresses are 16 bits wide.
_DEPTHS = (
    ("activation_depth", 16, 65536),
    ("weight_depth", 16, 65536),
    ("basis_depth", 16, 65536),
    ("index_depth", 16, 65536),
    ("param_depth", 16, 65536),
    ("output_depth", 16, 65536),
    ("program_depth", 8, 4096),
)


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """Parameters of an :class:`~sd_hw.core.core.SDCore`.

    datapath
        The :class:`~sd_hw.config.AcceleratorConfig` of the lanes: lane
        count, widths, block size, dataflow.
    activation_depth
        int8 entries of the activation memory, which holds the network input
        and every layer's output (16..65536).
    weight_depth
        Words (:attr:`weight_word_bits` wide) of each lane's weight memory:
        the coefficients of the lane's output channels (16..65536).
    basis_depth
        16-bit words of each lane's basis memory (16..65536).
    index_depth
        32-bit words of the index memory: group headers, block headers and
        the row entries of the rows that are not skipped (16..65536).
    param_depth
        32-bit words of the channel-parameter memory, two per output channel
        of every layer: bias, then multiplier and shift (16..65536).
    output_depth
        32-bit words of the output memory: the final layer's accumulators
        (16..65536).
    program_depth
        32-bit words of the program memory (8..4096).
    coefficients
        How the lanes' weight memories hold the Ce rows. ``"packed"``: the
        weight file's coefficient stream (row bitmap, element masks and
        codes, ``datapath.stream_bits``-bit words), decoded on chip by one
        :class:`~sd_hw.datapath.coefficient_decoder.CoefficientDecoder` per
        lane. ``"unpacked"``: one decoded row record
        (:func:`~sd_hw.datapath.layouts.row_layout`, 16 bits at
        ``code_bits = 3``) per issued row, decoded by the compiler; no
        decoder, which saves about 1100 iCE40 logic cells for more weight
        memory per row.
    weights
        What the lanes compute with. ``"smartdeal"``: decomposed layers,
        weights rebuilt from Ce coefficients and bases (:attr:`coefficients`
        says how the Ce rows are stored). ``"dense"``: undecomposed int8
        layers; each lane's weight memory holds one int8 weight row
        (:func:`~sd_hw.datapath.layouts.dense_row_layout`, 25 bits) per
        issued row, straight into the multipliers: no decoder, no
        shift-accumulate PE, no basis memory. The dense core is the
        baseline SmartDeal is measured against; it needs
        ``dataflow="rebuild"``. A core runs layers of its own kind only.
    counters
        ``True``: every performance counter of
        :data:`~sd_hw.core.host_map.COUNTERS`; ``False``: ``cycles`` only
        (the others read 0), which saves about 800 iCE40 logic cells.
    row_lookahead
        Candidate rows the front end looks at per cycle. ``1``: one index
        entry and one activation row per cycle; every issued row goes to
        the lanes, all-zero activation rows included. ``2``: the
        :class:`~sd_hw.core.row_issuer.RowIssuer` reads two index entries
        per cycle (a second copy of the index memory), the
        :class:`~sd_hw.core.activation_pair_reader.ActivationPairReader`
        reads two activation rows per cycle (six copies of the activation
        memory instead of three) and drops the rows whose three
        activations are zero, except a block's last row; each lane's
        :class:`~sd_hw.core.row_fetcher.RowFetcher` then reads only the
        weight records of the rows that are forwarded. Zero activation rows
        cost no weight fetch, no multiply and, mostly, no cycle. It needs
        fixed-size weight records (``coefficients="unpacked"`` or
        ``weights="dense"``), which can be fetched by row number.
    """

    datapath: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    activation_depth: int = 2048
    weight_depth: int = 4096
    basis_depth: int = 1024
    index_depth: int = 2048
    param_depth: int = 1024
    output_depth: int = 256
    program_depth: int = 128
    coefficients: str = "packed"
    weights: str = "smartdeal"
    counters: bool = True
    row_lookahead: int = 1

    def __post_init__(self):
        if not isinstance(self.datapath, AcceleratorConfig):
            raise ParameterError(f"parameter 'datapath' must be an AcceleratorConfig, "
                                 f"got {self.datapath!r}")
        for name, low, high in _DEPTHS:
            check_range(name, getattr(self, name), low, high)
        if self.coefficients not in COEFFICIENT_FORMATS:
            raise ParameterError(f"parameter 'coefficients' is {self.coefficients!r}, allowed "
                                 f"values are {', '.join(map(repr, COEFFICIENT_FORMATS))}")
        if self.weights not in WEIGHT_KINDS:
            raise ParameterError(f"parameter 'weights' is {self.weights!r}, allowed values "
                                 f"are {', '.join(map(repr, WEIGHT_KINDS))}")
        if self.weights == "dense" and self.datapath.dataflow != "rebuild":
            raise ParameterError(f"parameter 'weights' is 'dense', which multiplies weight rows "
                                 f"with activations: it needs dataflow 'rebuild', got "
                                 f"{self.datapath.dataflow!r}")
        if not isinstance(self.counters, bool):
            raise ParameterError(f"parameter 'counters' must be true or false, "
                                 f"got {self.counters!r}")
        if isinstance(self.row_lookahead, bool) or self.row_lookahead not in ROW_LOOKAHEADS:
            raise ParameterError(f"parameter 'row_lookahead' is {self.row_lookahead!r}, allowed "
                                 f"values are {', '.join(map(repr, ROW_LOOKAHEADS))}")
        if (self.row_lookahead == 2 and self.coefficients == "packed"
                and self.weights == "smartdeal"):
            raise ParameterError(
                "parameter 'row_lookahead' is 2, which fetches a lane's weight record by row "
                "number; with parameter 'coefficients' = 'packed' the coefficient stream has "
                "rows of varying length that must be decoded in order: use coefficients "
                "'unpacked' (or weights 'dense'), or row_lookahead 1")
        if self.datapath.lanes > 255:
            raise ParameterError(f"parameter 'lanes' is {self.datapath.lanes}, the host bus "
                                 f"addresses at most 255 lanes")

    @property
    def lanes(self):
        return self.datapath.lanes

    @property
    def weight_word_bits(self):
        """Width of a word of a lane's weight memory."""
        if self.weights == "dense":
            return dense_row_layout().size
        if self.coefficients == "unpacked":
            return row_layout(self.datapath).size
        return self.datapath.stream_bits

    @property
    def basis_words(self):
        """Words of the basis memory that hold one 3x3 basis."""
        return -(-9 * self.datapath.basis_bits // BASIS_WORD_BITS)

    def to_dict(self):
        """A JSON-ready description (the datapath as a nested dict)."""
        from dataclasses import asdict
        return asdict(self)

    @classmethod
    def from_dict(cls, description):
        """Inverse of :meth:`to_dict`; unknown or bad fields raise :class:`ParameterError`."""
        known = {name for name, _, _ in _DEPTHS} | {"coefficients", "weights", "counters",
                                                     "row_lookahead"}
        return core_config_from_description(cls, description, known=known, what="core")
