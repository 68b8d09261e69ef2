"""The host's view of the accelerator: its bus, address map and registers.

The host (a test bench, or the UART bridge of a board) reads and writes
32-bit words. An address is ``space << 24 | lane << 16 | offset``
(:func:`address`); ``lane`` selects the lane of the per-lane weight and
basis memories and is 0 elsewhere.

Registers (space :attr:`Space.REGISTERS`):

====== ====================== ==================================================
offset name                   meaning
====== ====================== ==================================================
0      ``CONTROL``            write: start ``op_count`` (bits 31..16) operations
                              from operation ``first_op`` (bits 15..0); read:
                              bit 0 busy, bit 1 done (set when a run ends,
                              cleared by the next start)
1      ``IDENT``              :data:`IDENT` ("SDHW")
2      ``DATAPATH``           lanes (7..0), stream_bits (15..8), code_bits
                              (19..16), dataflow (20: 1 = factored),
                              coefficients (21: 1 = unpacked),
                              weights (22: 1 = dense),
                              row_lookahead (23: 1 = two rows per cycle),
                              activation_bits (28..24)
3      ``WIDTHS``             basis_bits (7..0), accumulator_bits (15..8),
                              block_rows (31..16)
4..10  depths                 of the activation, weight, basis, index,
                              parameter, output and program memories
16..   :data:`COUNTERS`       performance counters of the last run
====== ====================== ==================================================

Reads return their data in the cycle after ``r_en``; writes take effect at
once. Memories other than the registers, activations and outputs are
write-only. The host must not write while the accelerator is busy; its reads of
the activations and outputs, which a run writes, are not performed while busy
and return 0 (so no memory is read and written at one address in one cycle).
"""

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from .config import HOST_WORD_BITS


__all__ = ["Space", "Register", "COUNTERS", "COUNTER_BASE", "IDENT", "HostBus", "address",
           "DEPTH_REGISTERS"]

IDENT = 0x53444857  # "SDHW"


class Space(enum.Enum, shape=8):
    REGISTERS = 0
    PROGRAM = 1
    INDEX = 2
    PARAMS = 3
    ACTIVATIONS = 4
    OUTPUTS = 5
    WEIGHTS = 6
    BASES = 7


class Register(enum.IntEnum):
    CONTROL = 0
    IDENT = 1
    DATAPATH = 2
    WIDTHS = 3


#: Core configuration fields reported by registers 4, 5, ... in order.
DEPTH_REGISTERS = ("activation_depth", "weight_depth", "basis_depth", "index_depth",
                   "param_depth", "output_depth", "program_depth")

COUNTER_BASE = 16

#: Performance counters (32 bits, wrapping), cleared at every start:
COUNTERS = (
    "cycles",             # cycles from start to done
    "rows",               # activation rows sent to the lanes (row_lookahead 1: one per Ce
                          # row issued; 2: the issued rows not dropped as all zero)
    "zero_rows",          # activation rows read whose three activations are all zero
    "skipped_rows",       # Ce rows zero in every lane of their group: never issued
    "weight_reads",       # reads of the lanes' weight memories (all lanes)
    "basis_reads",        # reads of the lanes' basis memories (all lanes)
    "index_reads",        # words read from the index memory (either copy)
    "param_reads",        # reads of the channel-parameter memory
    "activation_reads",   # activations read (elements, not rows)
    "activation_writes",  # activations written
    "output_writes",      # int32 outputs written
    "program_reads",      # reads of the program memory
)


class HostBus(wiring.Signature):
    """The host bus, from the host's side: ``addr``, ``w_data``, ``w_en``, ``r_en`` out,
    ``r_data`` in.

    ``r_data`` answers a read (``r_en``) in the next cycle and holds that
    word until the next read, while the core is idle.
    """

    def __init__(self):
        super().__init__({
            "addr": Out(32),
            "w_data": Out(HOST_WORD_BITS),
            "w_en": Out(1),
            "r_en": Out(1),
            "r_data": In(HOST_WORD_BITS),
        })


def address(space, offset=0, lane=0):
    """The bus address of word ``offset`` of ``space`` (of lane ``lane``)."""
    space = Space(space)
    if not 0 <= offset < 1 << 16:
        raise ValueError(f"offset {offset} is outside 0..65535")
    if not 0 <= lane < 1 << 8:
        raise ValueError(f"lane {lane} is outside 0..255")
    return space.value << 24 | lane << 16 | offset
