"""Word layouts of the element-serial core, shared by its RTL and its compiler.

A lane group's Ce rows are stored as *records*, one per Ce row that is not zero in
every lane of the group: a header word (:func:`record_header_layout`) and one
:func:`~sd_hw.datapath.layouts.row_layout` word per lane (lanes past the group's
channels hold zero rows; the row word's ``last`` bit is unused). The record's
words are spread over ``banks`` single-port memories (:data:`WEIGHT_BANKS` on the
UP5K: three of its SPRAMs) so that one record is read in
``ceil(record_words / banks)`` cycles: word ``i`` of record ``k`` of a group whose
records start at ``base`` is at address ``base + k * reads + i // banks`` of bank
``i % banks`` (:func:`record_word_address`).
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data


__all__ = ["WEIGHT_BANKS", "WORD_BITS", "OFFSET_BITS", "record_header_layout", "record_words",
           "record_reads", "record_word_address", "param_layout", "OP_WORDS", "GROUP_WORDS",
           "op_layout", "group_layout"]

#: Single-port memories that hold the records side by side, by default.
WEIGHT_BANKS = 3
#: Width of a record word (and of every single-port memory word).
WORD_BITS = 16
#: Width of a record's activation offset: the largest input tensor is
#: ``2**OFFSET_BITS`` int8 values.
OFFSET_BITS = 13


def record_header_layout():
    """The first word of a record: where the row's activations are.

    ``offset``: for a 3x3 convolution, ``c * H * W + dy * W`` for input channel ``c``
    and kernel row ``dy`` (the row's activations for output pixel ``(y, x)`` are
    ``offset + (y + dy - 1) * W + x - 1 + j`` past the input's base, ``j`` = 0..2,
    those outside the image being the zero padding); for a linear layer ``3 * r``
    for Ce row ``r`` (elements ``offset + j`` that are below the input size).
    ``dy``: the kernel row; for a linear layer, the number of the row's elements past
    the input size (0, 1 or 2). ``new_block``: the row is the first
    of a block other than the channel's first, whose basis is the next one.
    """
    return data.StructLayout({"offset": unsigned(OFFSET_BITS), "dy": unsigned(2),
                              "new_block": 1})


def record_words(lanes):
    """Words of one record: the header and one row word per lane."""
    return 1 + lanes


def record_reads(lanes, banks=WEIGHT_BANKS):
    """Cycles (reads of every bank) that one record takes."""
    return -(-record_words(lanes) // banks)


def record_word_address(base, record, word, lanes, banks=WEIGHT_BANKS):
    """``(bank, address)`` of word ``word`` of record ``record`` of a group at ``base``."""
    return word % banks, base + record * record_reads(lanes, banks) + word // banks


def param_layout():
    """One output channel's parameters, one 64-bit word: the int32 bias (accumulator
    units), the requantisation multiplier (15 bits, unsigned) and shift (1..62)."""
    return data.StructLayout({"bias": signed(32), "multiplier": unsigned(16),
                              "shift": unsigned(6)})


#: Words of an operation header in the program memory (:func:`op_layout`).
OP_WORDS = 6
#: Words of a lane group's descriptor in the program memory (:func:`group_layout`).
GROUP_WORDS = 2


def op_layout():
    """One operation (a compute layer with the ReLU and max pooling that follow it).

    ``groups`` lane groups, whose descriptors (:func:`group_layout`) start at program
    address ``group_table``; group ``g`` computes channels ``g * lanes ..`` of
    ``channels``, reads its parameters from ``param_base + g * lanes`` and writes its
    lane-0 output plane at ``out_base + g * group_stride`` (lane ``l``'s ``l * plane``
    further). ``passes`` output pixels per group (1 for a linear layer).
    """
    return data.StructLayout({
        "conv": 1, "pool": 1, "relu": 1, "final": 1, "_reserved": 12, "groups": unsigned(16),
        "height": unsigned(8), "width": unsigned(8), "in_size": unsigned(16),
        "in_base": unsigned(16), "out_base": unsigned(16),
        "passes": unsigned(16), "plane": unsigned(16),
        "group_stride": unsigned(16), "param_base": unsigned(16),
        "group_table": unsigned(16), "channels": unsigned(16),
    })


def group_layout():
    """One lane group: its records (``records`` of them from bank address
    ``record_base``, the last at ``last_record``, that is ``record_base + (records - 1)
    * record_reads``, 0 without records) and the address of its first basis in the
    lanes' basis memories."""
    return data.StructLayout({
        "record_base": unsigned(16), "records": unsigned(16),
        "basis_base": unsigned(16), "last_record": unsigned(16),
    })
