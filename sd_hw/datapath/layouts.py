"""Bit layouts shared by the datapath blocks, their tests and drivers.

Each layout is a function of the :class:`~sd_hw.config.AcceleratorConfig`,
defined once here; nothing else writes bit offsets by hand.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data


__all__ = ["coefficient_layout", "row_layout", "basis_layout", "vector3_layout",
           "block_layout", "weight_row_layout", "dense_row_layout", "activation_row_layout",
           "block_end_layout", "DENSE_WEIGHT_BITS"]

#: Width of a weight of an undecomposed (dense int8) layer.
DENSE_WEIGHT_BITS = 8


def coefficient_layout(config):
    """One Ce coefficient code, as the weight file stores it: offset, then sign."""
    return data.StructLayout({"exponent": unsigned(config.code_bits), "negative": 1})


def row_layout(config):
    """One decoded Ce row.

    ``present`` bit ``j`` says column ``j`` has a coefficient (0: the row is
    zero and can be skipped); absent coefficients read as zero. ``last``
    marks the block's last row.
    """
    return data.StructLayout({
        "present": 3,
        "coefficients": data.ArrayLayout(coefficient_layout(config), 3),
        "last": 1,
    })


def basis_layout(config):
    """A 3x3 basis, ``basis[j][c]``: row ``j`` multiplies coefficient ``j``."""
    return data.ArrayLayout(data.ArrayLayout(signed(config.basis_bits), 3), 3)


def vector3_layout(width):
    """Three signed values: a weight row, an activation row or basis products."""
    return data.ArrayLayout(signed(width), 3)


def block_layout(config):
    """A block command for the coefficient decoder: how many rows it has."""
    return data.StructLayout({"rows": unsigned((config.block_rows).bit_length())})


def weight_row_layout(config):
    """One rebuilt integer weight row; ``last`` marks the block's last row."""
    return data.StructLayout({"row": vector3_layout(config.weight_bits), "last": 1})


def dense_row_layout():
    """One int8 weight row of a dense layer, as a dense core's weight memory holds it;
    ``last`` marks the block's last row."""
    return data.StructLayout({"row": vector3_layout(DENSE_WEIGHT_BITS), "last": 1})


def activation_row_layout(config):
    """One activation row of the factored dataflow; ``last`` marks the block's last row.

    The basis engine releases a block's basis when it takes the row with
    ``last`` set.
    """
    return data.StructLayout({"row": vector3_layout(config.activation_bits), "last": 1})


def block_end_layout():
    """Accumulator control, one per block, taken with the block's last row.

    ``flush`` set: the accumulator (the block's sum included) is emitted and
    cleared; clear: it keeps accumulating into the next block.
    """
    return data.StructLayout({"flush": 1})
