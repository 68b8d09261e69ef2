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

The program memory (32-bit words) holds the *operation table*, one word per
operation with the program address of its header, then for each operation its
header (:func:`op_layout`) followed by the descriptors of its lane groups
(:func:`group_layout`), the last marked ``last``; headers and descriptors take
:func:`program_words` words each (:func:`pack_program_words`). The sequencer
reads them in that order.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data


__all__ = ["WEIGHT_BANKS", "WORD_BITS", "OFFSET_BITS", "record_header_layout", "record_words",
           "record_reads", "record_word_address", "param_layout", "DIMENSION_BITS",
           "ROW_JUMP_BITS", "PROGRAM_WORD_BITS", "address_bits", "op_layout", "group_layout",
           "program_words", "pack_program_words"]

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
    ``offset + (s * y - p) * W + s * x - p + j`` past the input's base, ``j`` = 0..2,
    for stride ``s`` and padding ``p``, those outside the image being the zero
    padding); for a linear layer ``3 * r``
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


#: Width of an image height or width.
DIMENSION_BITS = 8
#: Width of an operation's ``row_jump`` (at most ``2 * (255 + 3)``).
ROW_JUMP_BITS = DIMENSION_BITS + 2
#: Width of a program memory word.
PROGRAM_WORD_BITS = 32


def address_bits(depth):
    """Address width of a memory of ``depth`` entries (at least 1)."""
    return max(1, (depth - 1).bit_length())


def op_layout(config):
    """One operation (a compute layer with the ReLU and pooling that follow it) of a
    core of ``config`` (a :class:`~sd_hw.serial.config.SerialConfig`).

    ``height`` and ``width``: a convolution's input image (0 for a linear layer);
    ``out_height`` and ``out_width``: its output before pooling; ``stride2``: stride 2
    (else 1); ``pad``: zero padding 1 (else 0); ``row_jump``: how far the input address
    of the walk's window moves from a row's last output pixel (with ``pool``, a row of
    2x2 windows' last) to the next row's first. ``in_base``: the byte address of its
    input in the activation memory; ``plane``: the output pixels of a channel (1 for a
    linear layer), which is the number of windows (output pixels) a lane group
    finishes, and the distance between two channels' outputs. ``pool``: 2x2 pooling,
    ``average`` (else max); ``relu``: ReLU on every output before pooling,
    ``relu_late``: on an average pooling's means. The widths are those of the memories
    the fields address.
    """
    activation = address_bits(config.activation_bytes)
    output = max(activation, address_bits(config.output_depth))
    return data.StructLayout({
        "conv": 1, "pool": 1, "relu": 1, "final": 1,
        "height": unsigned(DIMENSION_BITS), "width": unsigned(DIMENSION_BITS),
        "in_base": unsigned(activation), "plane": unsigned(output),
        "stride2": 1, "pad": 1, "average": 1, "relu_late": 1,
        "out_height": unsigned(DIMENSION_BITS), "out_width": unsigned(DIMENSION_BITS),
        "row_jump": unsigned(ROW_JUMP_BITS),
    })


def group_layout(config):
    """One lane group of an operation, of a core of ``config``.

    ``last``: the operation's last group. ``has_records``: the group has records (1)
    or none (0); they are stored from bank address ``record_base`` on, the last at
    ``last_record`` (``record_base + (records - 1) * record_reads``; ``record_base``
    without records). ``out_base``: where the group's lane-0 output plane goes
    (lane ``l``'s ``l * plane`` further); ``param_base``: lane 0's parameter word;
    ``channels``: the lanes with an output channel (1..lanes); ``basis_base``: the
    group's first basis in the lanes' basis memories. The widths are those of the
    memories the fields address.
    """
    activation = address_bits(config.activation_bytes)
    output = max(activation, address_bits(config.output_depth))
    bank = address_bits(config.bank_depth)
    return data.StructLayout({
        "last": 1, "has_records": 1, "out_base": unsigned(output),
        "last_record": unsigned(bank), "record_base": unsigned(bank),
        "basis_base": unsigned(address_bits(config.basis_depth)),
        "param_base": unsigned(address_bits(config.param_depth)),
        "channels": range(1, config.lanes + 1),
    })


def program_words(layout):
    """Program memory words a header of ``layout`` takes (:func:`pack_program_words`)."""
    return -(-data.Layout.cast(layout).size // PROGRAM_WORD_BITS)


def pack_program_words(layout, value):
    """``value`` (a dict for ``layout.const``) as :func:`program_words` 32-bit words, LSB
    first, *aligned to the end*: the layout's last bit is the last word's bit 31, the
    padding is in the first word's low bits. So the last word read of a header holds as
    many of its fields as it can."""
    layout = data.Layout.cast(layout)
    words = program_words(layout)
    raw = layout.const(value).as_value().value << (words * PROGRAM_WORD_BITS - layout.size)
    return [(raw >> (PROGRAM_WORD_BITS * i)) & ((1 << PROGRAM_WORD_BITS) - 1)
            for i in range(words)]
