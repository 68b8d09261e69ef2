"""The configuration of an element-serial core: its lanes and its memories."""

from dataclasses import asdict, dataclass, field

from ..config import AcceleratorConfig, core_config_from_description
from ..errors import ParameterError, check_range
from ..primitives._lowering import LOWERINGS


__all__ = ["SerialConfig"]

# (name, smallest, largest) of every memory size.
_SIZES = (
    ("weight_banks", 1, 64),
    ("bank_depth", 16, 65536),
    ("activation_bytes", 32, 131072),
    ("basis_depth", 1, 16384),
    ("param_depth", 1, 65536),
    ("output_depth", 1, 65536),
    ("program_depth", 8, 65536),
)


def _default_datapath():
    return AcceleratorConfig(lanes=8)


@dataclass(frozen=True, kw_only=True)
class SerialConfig:
    """Parameters of a :class:`~sd_hw.serial.core.SerialCore`.

    datapath
        The :class:`~sd_hw.config.AcceleratorConfig` of the lanes (lane count,
        widths, block size). ``dataflow`` ``"rebuild"``: every lane rebuilds its
        weights and multiply-accumulates them in a DSP
        (:class:`~sd_hw.datapath.mac_lanes.MacLaneArray`); ``"factored"``: groups of
        ``basis_group`` lanes share one basis, one basis engine multiplies each
        activation row by it and the lanes shift-add the products
        (:class:`~sd_hw.datapath.factored_lanes.FactoredLaneArray`).
    basis_group
        Factored dataflow only: lanes that share one basis engine and one basis
        memory (a divisor of ``lanes``; ``None``, the default, means all of them).
        The network's bases must be identical within each such group of output
        channels. Must be ``None`` with ``"rebuild"``, whose lanes have a basis each.
    weight_banks
        Single-port weight memories read side by side (1..64, default 3: three of the
        UP5K's SPRAMs): a record of ``1 + lanes`` words takes
        ``ceil((1 + lanes) / weight_banks)`` cycles to read, and its three elements
        three cycles to use.
    bank_depth
        16-bit words of each weight bank, which hold the lane groups' records
        (16..65536; an iCE40 UP5K SPRAM holds 16384).
    activation_bytes
        int8 values of the activation memory, 16-bit words of two (32..131072).
    basis_depth
        Bases each basis memory (one per lane, or per basis engine) holds (1..16384).
    param_depth
        Output channels whose parameters (bias, multiplier, shift: one 64-bit word
        each) the parameter memory holds (1..65536).
    output_depth
        32-bit words of the output memory, which receives the last layer's
        accumulators (1..65536).
    program_depth
        32-bit words of the program memory: operation headers and lane-group
        descriptors (8..65536).
    primitives
        How the weight banks, the activation memory and the lanes' multiply-accumulate
        units are built: ``"auto"`` (SB_SPRAM256KA and SB_MAC16 when elaborated for an
        iCE40 UltraPlus platform, block RAM and plain logic otherwise), ``"ice40"``
        (always the iCE40 primitives, e.g. to simulate the UP5K netlist with yosys'
        models of them) or ``"generic"``.
    counters
        ``True``: every performance counter of
        :data:`~sd_hw.serial.core.SERIAL_COUNTERS`; ``False``: ``cycles`` only (the
        others read 0), which saves about 250 iCE40 logic cells.
    """

    datapath: AcceleratorConfig = field(default_factory=_default_datapath)
    weight_banks: int = 3
    bank_depth: int = 16384
    activation_bytes: int = 32768
    basis_depth: int = 64
    param_depth: int = 512
    output_depth: int = 64
    program_depth: int = 256
    primitives: str = "auto"
    counters: bool = True
    basis_group: int = None

    def __post_init__(self):
        if not isinstance(self.datapath, AcceleratorConfig):
            raise ParameterError(f"parameter 'datapath' must be an AcceleratorConfig, "
                                 f"got {self.datapath!r}")
        if self.datapath.dataflow == "rebuild":
            if self.basis_group is not None:
                raise ParameterError(
                    f"parameter 'basis_group' is {self.basis_group!r}, but it applies to the "
                    f"factored dataflow only (the rebuild lanes have a basis each): leave it "
                    f"out or use dataflow 'factored'")
        else:
            lanes = self.datapath.lanes
            group = self.basis_group
            if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                      or group < 1 or lanes % group):
                divisors = [d for d in range(1, lanes + 1) if lanes % d == 0]
                raise ParameterError(
                    f"parameter 'basis_group' is {group!r}; the lanes sharing a basis engine "
                    f"must divide lanes = {lanes}: use one of "
                    f"{', '.join(map(str, divisors))}")
            for name in ("activation_bits", "basis_bits"):
                if getattr(self.datapath, name) > 8:
                    raise ParameterError(
                        f"parameter {name!r} is {getattr(self.datapath, name)}; the factored "
                        f"lanes' basis engines multiply 8x8 bits (SB_MAC16 dual8x8): use at "
                        f"most 8")
        for name, low, high in _SIZES:
            check_range(name, getattr(self, name), low, high)
        if self.activation_bytes % 2:
            raise ParameterError(f"parameter 'activation_bytes' is {self.activation_bytes}; "
                                 f"the activation memory holds 16-bit words: use an even size")
        if self.primitives not in LOWERINGS:
            raise ParameterError(f"parameter 'primitives' is {self.primitives!r}, allowed "
                                 f"values are {', '.join(map(repr, LOWERINGS))}")
        if not isinstance(self.counters, bool):
            raise ParameterError(f"parameter 'counters' must be true or false, "
                                 f"got {self.counters!r}")
        if self.datapath.lanes > 255:
            raise ParameterError(f"parameter 'lanes' is {self.datapath.lanes}, the host bus "
                                 f"addresses at most 255 lanes")

    @property
    def lanes(self):
        return self.datapath.lanes

    @property
    def factored(self):
        """The lanes shift-add basis products (dataflow ``"factored"``)."""
        return self.datapath.dataflow == "factored"

    @property
    def shared_lanes(self):
        """Lanes per basis memory: ``basis_group`` (all lanes if unset) when factored,
        1 when rebuilding."""
        if not self.factored:
            return 1
        return self.lanes if self.basis_group is None else self.basis_group

    @property
    def basis_memories(self):
        """Basis memories (one per lane, or one per basis engine when factored)."""
        return self.lanes // self.shared_lanes

    def to_dict(self):
        """A JSON-ready description (the datapath as a nested dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, description):
        """Inverse of :meth:`to_dict`; unknown or bad fields raise :class:`ParameterError`."""
        known = {name for name, _, _ in _SIZES} | {"counters", "primitives", "basis_group"}
        return core_config_from_description(cls, description, known=known,
                                            what="serial core")
