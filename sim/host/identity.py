"""A board's identity registers against the core configuration a network was compiled for.

Every core reports what it was built as in its registers (space
``REGISTERS``, :mod:`sd_hw.core.host_map`): ``IDENT`` names the kind of
core ("SDHW" an SDCore, "SDHS" a SerialCore), ``DATAPATH`` and ``WIDTHS``
pack the lanes and widths, and the registers from 4 on hold the memory
sizes. A program compiled for another configuration would run on the
wrong memory layout and compute garbage, so the host reads the registers
first (:func:`read_registers`, one READ through any transport) and refuses
a mismatch naming every field that differs (:func:`check_identity`).

The expected words are worked out here from the documented register map,
independently of the RTL; the tests compare them with what a simulated
board answers. Fields no register reports (a serial core's
``weight_banks`` and ``primitives``, whether the counters were built) are
not checked.
"""

from sd_hw.core.host_map import DEPTH_REGISTERS, IDENT, Register, Space, address
from sd_hw.errors import SdHwError


__all__ = ["CORE_IDENTS", "expected_registers", "read_registers", "identity_differences",
           "check_identity"]

#: IDENT register values and the core kind (``--core``) they name.
CORE_IDENTS = {IDENT: "sd", 0x53444853: "serial"}

#: A serial core's registers 4, 5, ...: its configuration's sizes, then the lanes
#: that share one basis memory (1 with the rebuild dataflow).
SERIAL_SIZE_REGISTERS = ("activation_bytes", "bank_depth", "basis_depth", "param_depth",
                         "output_depth", "program_depth", "shared_lanes")

#: The registers read: IDENT, DATAPATH, WIDTHS and the sizes.
_FIRST, _COUNT = Register.IDENT, 3 + len(DEPTH_REGISTERS)


def _kind(config):
    from sd_hw.core.config import CoreConfig
    from sd_hw.serial.config import SerialConfig
    if isinstance(config, CoreConfig):
        return "sd"
    if isinstance(config, SerialConfig):
        return "serial"
    raise SdHwError(f"no identity registers are known for a {type(config).__name__}")


def _fields(kind, words):
    """Named fields of the register ``words`` (offset -> word) of a core of ``kind``."""
    datapath, widths = words.get(Register.DATAPATH, 0), words.get(Register.WIDTHS, 0)
    fields = {"lanes": datapath & 0xFF, "stream_bits": datapath >> 8 & 0xFF,
              "code_bits": datapath >> 16 & 0xF, "activation_bits": datapath >> 24 & 0xFF,
              "basis_bits": widths & 0xFF, "accumulator_bits": widths >> 8 & 0xFF,
              "block_rows": widths >> 16 & 0xFFFF}
    if kind == "sd":
        fields.update(dataflow="factored" if datapath >> 20 & 1 else "rebuild",
                      coefficients="unpacked" if datapath >> 21 & 1 else "packed",
                      weights="dense" if datapath >> 22 & 1 else "smartdeal",
                      row_lookahead=2 if datapath >> 23 & 1 else 1)
        sizes = DEPTH_REGISTERS
    else:
        del fields["stream_bits"]          # the serial core's word is fixed
        fields["dataflow"] = "factored" if datapath >> 20 & 1 else "rebuild"
        sizes = SERIAL_SIZE_REGISTERS
    for k, name in enumerate(sizes):
        fields[name] = words.get(4 + k, 0)
    return fields


def expected_registers(config):
    """Register offset -> the word a core of ``config`` reports there."""
    kind = _kind(config)
    datapath = config.datapath
    words = {Register.IDENT: next(i for i, k in CORE_IDENTS.items() if k == kind),
             Register.WIDTHS: (datapath.basis_bits | datapath.accumulator_bits << 8
                               | datapath.block_rows << 16)}
    if kind == "sd":
        words[Register.DATAPATH] = (
            config.lanes | datapath.stream_bits << 8 | datapath.code_bits << 16
            | (datapath.dataflow == "factored") << 20 | (config.coefficients == "unpacked") << 21
            | (config.weights == "dense") << 22 | (config.row_lookahead == 2) << 23
            | datapath.activation_bits << 24)
        sizes = DEPTH_REGISTERS
    else:
        from sd_hw.serial.layouts import WORD_BITS
        words[Register.DATAPATH] = (config.lanes | WORD_BITS << 8 | datapath.code_bits << 16
                                    | config.factored << 20 | datapath.activation_bits << 24)
        sizes = SERIAL_SIZE_REGISTERS
    for k, name in enumerate(sizes):
        words[4 + k] = getattr(config, name)
    return words


def read_registers(transport):
    """Register offset -> word, read from ``transport`` (anything that executes bus scripts)."""
    from sim.host.script import BusScript
    script = BusScript()
    script.read(address(Space.REGISTERS, _FIRST), _COUNT, "identity")
    words = transport.execute(script)["identity"]
    return {_FIRST + k: int(word) & 0xFFFFFFFF for k, word in enumerate(words)}


def identity_differences(config, words):
    """``[(field, the board's value, the configuration's)]`` where registers ``words``
    and ``config`` disagree (the kind of core first, alone, if that differs)."""
    kind = _kind(config)
    ident = words.get(Register.IDENT)
    found = CORE_IDENTS.get(ident)
    if found != kind:
        return [("core", found or f"unknown (IDENT {ident:#010x})", kind)]
    expected = _fields(kind, expected_registers(config))
    got = _fields(kind, words)
    return [(name, got[name], expected[name]) for name in expected if got[name] != expected[name]]


def check_identity(transport, config, *, source="the board"):
    """Read ``transport``'s registers and raise :class:`SdHwError` unless they are those of
    ``config``'s core; returns the registers read."""
    words = read_registers(transport)
    differences = identity_differences(config, words)
    if differences:
        listed = "; ".join(f"{name} is {got} on the board, {want} in the configuration"
                           for name, got, want in differences)
        raise SdHwError(f"{source} runs another core than the one the network was compiled "
                        f"for: {listed}. Give the options (--board, --core, --config, ...) the "
                        f"bitstream was built with, or build and flash one for this "
                        f"configuration")
    return words
