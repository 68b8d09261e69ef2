"""Word layouts of the accelerator's memories and of its internal streams.

Each layout is defined once here; the sequencer's RTL reads these fields and
the compiler (:mod:`sd_hw.compiler`) packs its memory images with the very
same layout objects (:func:`pack_words`), so no bit offset is written twice.

The program memory holds :data:`OP_WORDS`-word operations
(:func:`op_layout`); the index memory holds :data:`GROUP_WORDS`-word group
headers (:func:`group_layout`) and one-word entries (:func:`entry_layout`);
the parameter memory holds two words per output channel (bias, then
:func:`requant_layout`).
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from ..datapath.layouts import vector3_layout
from .config import HOST_WORD_BITS


__all__ = ["OpKind", "Window", "op_layout", "group_layout", "entry_layout",
           "requant_layout", "row_request_layout", "row_pair_layout", "numbered_row_layout",
           "row_fetch_layout", "OP_WORDS", "GROUP_WORDS", "ROW_COUNT_BITS",
           "ROW_ORDINAL_BITS", "words_of", "pack_words"]

#: Width of the live/skipped row counts of a block header (block_rows <= 4096).
ROW_COUNT_BITS = 13
#: Width of a row's ordinal within a pass (a pass has at most 65535 index entries).
ROW_ORDINAL_BITS = 16


class OpKind(enum.Enum, shape=2):
    """What an operation of the program does."""
    #: A linear or convolution layer: lane groups of output channels, with
    #: bias, requantisation (or int32 outputs) and an optional ReLU.
    COMPUTE = 0
    #: 2x2 max pooling with stride 2 (odd rows and columns dropped), optional ReLU.
    POOL = 1
    #: An element-wise copy with optional ReLU.
    COPY = 2


class Window(enum.Enum, shape=2):
    """How a compute operation walks its input."""
    #: Linear layer: one pass; row ``r`` reads inputs ``3r .. 3r+2``.
    LINEAR = 0
    #: 3x3 convolution, stride 1, zero padding 1: a pass per output pixel.
    CONV3 = 1
    #: 1x1 convolution: a pass per pixel; row ``r`` reads channels ``3r .. 3r+2``.
    CONV1 = 2


def op_layout():
    """One operation of the program.

    ``origin`` is the activation address that row offsets and the pixel
    index are added to: ``in_base`` for LINEAR and CONV1, ``in_base - width
    - 1`` (modulo 2**16) for CONV3, so that element ``j`` of a row entry at
    pixel ``p`` lies at ``origin + p + offset + j * element_stride``.
    ``pixels`` is ``height * width`` (1 for LINEAR).
    """
    return data.StructLayout({
        "kind": OpKind,
        "window": Window,
        "relu": 1,
        "final": 1,
        "in_base": 16,
        "origin": 16,
        "out_base": 16,
        "height": 16,
        "width": 16,
        "pixels": 16,
        "element_stride": 16,
        "channels": 16,
        "groups": 16,
        "group_table": 16,
    })


def group_layout():
    """Header of one lane group of a compute operation (in the index memory).

    weight_base
        Address, in every lane's weight memory, of the group's region: word
        0 holds the number ``n`` of stream words, words ``1 .. n`` the
        lane's coefficient stream of one pass.
    basis_base, basis_words
        The group's bases in every lane's basis memory, one block's after
        the other: ``basis_words`` words in all.
    index_base, entries
        The ``entries`` index entries of one pass (block headers and rows).
    output_base
        Output address of lane 0 at pixel 0: ``out_base + channel * pixels``.
    param_base
        Parameter address of lane 0's channel (two words per channel).
    lanes
        Lanes that carry an output channel (the others are discarded).
    """
    return data.StructLayout({
        "weight_base": 16,
        "basis_base": 16,
        "basis_words": 16,
        "index_base": 16,
        "entries": 16,
        "output_base": 16,
        "param_base": 16,
        "lanes": 8,
    })


def _row_entry_layout():
    return data.StructLayout({
        "offset": 16,    # added to origin + pixel
        "tap": 2,        # kernel row of a CONV3 row (0..2); 1 elsewhere
        "columns": 3,    # elements that exist (a linear layer's last row may be short)
        "last": 1,       # the block's last row
    })


def _block_entry_layout():
    return data.StructLayout({
        "live": ROW_COUNT_BITS,     # rows of the block that are issued
        "skipped": ROW_COUNT_BITS,  # rows zero in every lane of the group: not issued
        "flush": 1,                 # the channel's last block: emit the sums
    })


def entry_layout():
    """One index entry: a block header (``is_block``) or a row to issue."""
    return data.StructLayout({
        "is_block": 1,
        "body": data.UnionLayout({"row": _row_entry_layout(), "block": _block_entry_layout()}),
    })


def requant_layout():
    """Second parameter word of a channel (the first is the int32 bias)."""
    return data.StructLayout({"multiplier": unsigned(16), "shift": unsigned(6)})


def row_request_layout():
    """An activation row to read: element 0's address and which elements exist."""
    return data.StructLayout({"address": 16, "valid": 3, "last": 1})


def row_pair_layout():
    """Up to two activation rows to read in one cycle (a core with ``row_lookahead=2``).

    ``first`` is always a row; ``second`` is one if ``both`` is set, and is
    then the row that follows ``first`` in the pass. ``ordinal`` counts the
    row entries of the pass before ``first`` (``second``'s is ``ordinal +
    1``): the position of the rows' weight records in each lane's region.
    """
    return data.StructLayout({"first": row_request_layout(), "second": row_request_layout(),
                              "both": 1, "ordinal": ROW_ORDINAL_BITS})


def numbered_row_layout(config):
    """An activation row for the lanes, with its ordinal within the pass
    (:func:`row_pair_layout`) and the block's ``last`` flag; ``config`` is the
    :class:`~sd_hw.config.AcceleratorConfig`."""
    return data.StructLayout({"row": vector3_layout(config.activation_bits), "last": 1,
                              "ordinal": ROW_ORDINAL_BITS})


def row_fetch_layout():
    """A weight record to fetch: the row's ordinal within the pass."""
    return data.StructLayout({"ordinal": ROW_ORDINAL_BITS})


def words_of(layout):
    """Host words (32 bits) that hold one ``layout``."""
    return -(-data.Layout.cast(layout).size // HOST_WORD_BITS)


OP_WORDS = words_of(op_layout())
GROUP_WORDS = words_of(group_layout())


def pack_words(layout, value):
    """``value`` (a dict as ``layout.const`` takes) as a list of 32-bit words, LSB first."""
    layout = data.Layout.cast(layout)
    raw = layout.const(value).as_value().value
    return [(raw >> (HOST_WORD_BITS * i)) & ((1 << HOST_WORD_BITS) - 1)
            for i in range(words_of(layout))]
