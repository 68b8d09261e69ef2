"""Collects the words of a basis from a lane's basis memory into one basis."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import basis_layout
from .config import BASIS_WORD_BITS


__all__ = ["BasisAssembler"]


class BasisAssembler(wiring.Component):
    """``words_per_basis`` 16-bit words in, one 3x3 basis out.

    A basis is stored as its :func:`~sd_hw.datapath.layouts.basis_layout`
    bits, LSB first, over ``ceil(9 * basis_bits / 16)`` words; the unused
    top bits of the last word are ignored.

    Members
    -------
    repeats : ``In(16)``
        How many times each basis is sent (at least 1), held by the driver
        while bases flow. A lane group with a single block sends its one
        basis once per pass (output pixel) but reads it from memory once.
    words : ``In(stream.Signature(16))``
    basis : ``Out(stream.Signature(basis_layout(config)))``
        The assembled words themselves (no further register): the next
        basis's words are taken once this one has been taken ``repeats``
        times.
    """

    def __init__(self, config):
        self._config = config
        self._layout = basis_layout(config)
        self.words_per_basis = -(-data.Layout.cast(self._layout).size // BASIS_WORD_BITS)
        super().__init__({
            "repeats": In(16),
            "words": In(stream.Signature(BASIS_WORD_BITS)),
            "basis": Out(stream.Signature(self._layout)),
        })

    def elaborate(self, platform):
        m = Module()
        count = self.words_per_basis
        shift = Signal(count * BASIS_WORD_BITS)
        taken = Signal(range(count + 1))
        sent = Signal(16)
        size = data.Layout.cast(self._layout).size

        # The assembled words are the payload: valid once all have arrived.
        full = taken == count
        m.d.comb += [self.basis.valid.eq(full), self.basis.payload.eq(shift[:size]),
                     self.words.ready.eq(~full)]
        with m.If(self.words.valid & self.words.ready):
            m.d.sync += [shift.eq(Cat(shift, self.words.payload)[BASIS_WORD_BITS:]),
                         taken.eq(taken + 1)]
        with m.Elif(self.basis.valid & self.basis.ready):
            with m.If(sent + 1 >= self.repeats):
                m.d.sync += [taken.eq(0), sent.eq(0)]
            with m.Else():
                m.d.sync += sent.eq(sent + 1)
        return m
