"""The accelerator configuration: one frozen, validated object drives generation.

Every width in the generated hardware is derived here from a handful of
parameters, so that the bounds in docs/number-formats.md hold by
construction.
"""

from dataclasses import dataclass

from .errors import ParameterError, check_range


__all__ = ["AcceleratorConfig", "DATAFLOWS", "core_config_from_description"]

DATAFLOWS = ("rebuild", "factored")


def signed_bits(magnitude):
    """Width of a signed number that holds every value in ``[-magnitude, magnitude]``."""
    return int(magnitude).bit_length() + 1


@dataclass(frozen=True, kw_only=True)
class AcceleratorConfig:
    """Parameters of a SmartDeal accelerator.

    lanes
        Processing elements working in parallel, one output channel each
        (1..64).
    activation_bits
        Width of signed activations (2..16, default 8).
    basis_bits
        Width of signed basis entries (2..16, default 8).
    code_bits
        Exponent-offset bits of a coefficient code (1..6, default 3); a code
        is ``code_bits + 1`` bits with the sign on top.
    block_rows
        Largest number of Ce rows sharing one basis (1..4096, default 192).
    accumulator_bits
        Width of an output accumulator (16..48, default 32).
    stream_bits
        Width of a word of the packed coefficient stream (8, 16 or 32).
    dataflow
        ``"rebuild"`` (rebuild weights, then multiply-accumulate) or
        ``"factored"`` (multiply activations by the basis, then shift-accumulate).
    """

    lanes: int = 4
    activation_bits: int = 8
    basis_bits: int = 8
    code_bits: int = 3
    block_rows: int = 192
    accumulator_bits: int = 32
    stream_bits: int = 16
    dataflow: str = "rebuild"

    def __post_init__(self):
        for name, low, high in (("lanes", 1, 64), ("activation_bits", 2, 16),
                                ("basis_bits", 2, 16), ("code_bits", 1, 6),
                                ("block_rows", 1, 4096), ("accumulator_bits", 16, 48)):
            check_range(name, getattr(self, name), low, high)
        if self.stream_bits not in (8, 16, 32):
            raise ParameterError(f"parameter 'stream_bits' is {self.stream_bits!r}, "
                                 f"allowed values are 8, 16 and 32")
        if self.dataflow not in DATAFLOWS:
            raise ParameterError(f"parameter 'dataflow' is {self.dataflow!r}, "
                                 f"allowed values are {', '.join(DATAFLOWS)}")
        need = self.product_bits + 2
        if self.accumulator_bits < need:
            raise ParameterError(
                f"parameter 'accumulator_bits' is {self.accumulator_bits}, but one product "
                f"of a rebuilt weight ({self.weight_bits} bits) and an activation "
                f"({self.activation_bits} bits) needs {self.product_bits} bits; "
                f"use at least {need}")

    # Derived widths. -------------------------------------------------------

    @property
    def code_width(self):
        """Bits of one coefficient code: exponent offset plus sign."""
        return self.code_bits + 1

    @property
    def max_shift(self):
        """Largest exponent offset."""
        return 2 ** self.code_bits - 1

    @property
    def record_bits(self):
        """Largest stream record of one nonzero Ce row: 3-bit mask and 3 codes."""
        return 3 + 3 * self.code_width

    @property
    def max_weight(self):
        """Largest |rebuilt weight|: three basis entries of -2**(b-1) at the top shift."""
        return 3 * 2 ** (self.basis_bits - 1) * 2 ** self.max_shift

    @property
    def weight_bits(self):
        """Signed width of a rebuilt weight (17 for the defaults)."""
        return signed_bits(self.max_weight)

    @property
    def product_bits(self):
        """Signed width of a rebuilt weight times an activation."""
        return signed_bits(self.max_weight * 2 ** (self.activation_bits - 1))

    @property
    def basis_product_bits(self):
        """Signed width of a basis row times an activation row (factored dataflow)."""
        return signed_bits(3 * 2 ** (self.basis_bits - 1) * 2 ** (self.activation_bits - 1))

    @property
    def shifted_product_bits(self):
        """Signed width of a basis product shifted by the largest exponent offset."""
        return signed_bits(3 * 2 ** (self.basis_bits - 1) * 2 ** (self.activation_bits - 1)
                           * 2 ** self.max_shift)

    @property
    def row_index_bits(self):
        return max(1, (self.block_rows - 1).bit_length())


def core_config_from_description(cls, description, *, known, what):
    """``cls(datapath=AcceleratorConfig(...), **fields)`` from a JSON-ready description.

    ``known`` are the fields besides ``datapath`` that ``cls`` takes; ``what`` names
    the configuration in messages. Unknown or bad fields raise :class:`ParameterError`.
    """
    if not isinstance(description, dict):
        raise ParameterError(f"a {what} configuration must be an object, got {description!r}")
    description = dict(description)
    datapath = description.pop("datapath", {})
    unknown = sorted(set(description) - set(known))
    if unknown:
        raise ParameterError(f"unknown {what} parameter(s) {', '.join(map(repr, unknown))}; "
                             f"known are datapath, {', '.join(sorted(known))}")
    if not isinstance(datapath, dict):
        raise ParameterError(f"parameter 'datapath' must be an object, got {datapath!r}")
    fields = set(AcceleratorConfig.__dataclass_fields__)
    unknown = sorted(set(datapath) - fields)
    if unknown:
        raise ParameterError(f"unknown datapath parameter(s) {', '.join(map(repr, unknown))}; "
                             f"known are {', '.join(sorted(fields))}")
    try:
        return cls(datapath=AcceleratorConfig(**datapath), **description)
    except TypeError as error:
        raise ParameterError(str(error)) from None
