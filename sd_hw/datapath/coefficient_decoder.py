"""Coefficient decoder: the packed Ce stream of a block in, one decoded row per cycle out."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..errors import ParameterError
from .layouts import block_layout, coefficient_layout, row_layout


__all__ = ["CoefficientDecoder"]


def _popcount(bits):
    """Number of set bits of ``bits``, as a balanced adder tree."""
    terms = [bit for bit in bits]
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + terms[len(terms) - len(terms) % 2:]
    return terms[0]


class CoefficientDecoder(wiring.Component):
    """Decodes the coefficient stream of Ce blocks into rows.

    The stream of one block is its row bitmap (one bit per row, 1 = the row
    has a coefficient), then, for each nonzero row in order, a 3-bit element
    mask followed by one ``code_bits + 1``-bit code per present column
    (:func:`~sd_hw.datapath.layouts.coefficient_layout`), all least
    significant bit first (:mod:`sd_hw.coefficient_stream`).

    Word-alignment contract: the stream arrives in words of
    ``config.stream_bits`` bits, little endian (bit ``i`` of a block's
    bitstream is bit ``i % stream_bits`` of the block's word
    ``i // stream_bits``), and every block starts on a word boundary. The
    unused tail of a block's last word is discarded. The decoder reads
    exactly the words of a block and never accepts a word of the next block
    before that block's command has started.

    A block command with ``rows = 0`` is an empty block: it is consumed and
    neither reads a word nor emits a row. ``rows > config.block_rows``, and
    a row marked in the bitmap with an empty element mask, are protocol
    errors with undefined results (the decoder still makes progress).

    Parameters
    ----------
    config : :class:`~sd_hw.config.AcceleratorConfig`
        Supplies ``stream_bits``, ``block_rows`` and ``code_bits``.

    Members
    -------
    block : ``In(stream.Signature(block_layout(config)))``
        Block commands: the number of rows of the next block. One command
        is buffered while the previous block is decoded.
    words : ``In(stream.Signature(config.stream_bits))``
        The packed coefficient stream.
    rows : ``Out(stream.Signature(row_layout(config)))``
        Exactly ``rows`` records per block, in row order; a zero row has
        ``present = 0`` and all coefficients 0; ``last`` marks the block's
        last row.

    Latency and throughput (no back-pressure, words always available)
    -------------------------------------------------------------------
    * A command accepted in cycle ``t`` by an idle decoder has its first
      word accepted in cycle ``t + start_latency``.
    * The bitmap takes :meth:`bitmap_cycles` words, one per cycle.
    * The first row is valid the cycle after the last bitmap word, or one
      cycle later if row 0 is nonzero and its record does not fit in the
      rest of that word (a refill cycle).
    * If :attr:`sustains_one_row_per_cycle` (``stream_bits >=
      config.record_bits``), one row per cycle follows until the block's
      last row; zero rows read no stream bits.
    * With the next command queued, its first word is accepted the cycle
      after the previous block's last row, so a block of ``n`` rows occupies
      ``bitmap_cycles(n) + n`` or ``+ 1`` cycles (:meth:`max_block_cycles`).

    ``words.ready`` and ``rows.valid`` are functions of registers only: there
    is no combinational path from ``rows.ready`` to ``words.ready`` or from
    ``words.valid`` to ``rows.valid``. The price is a bit buffer of
    :attr:`buffer_bits` = ``2 * record_bits + stream_bits - 1`` bits instead
    of ``record_bits + stream_bits - 1``: a word is requested whenever the
    current record or the one after it is incomplete, before knowing whether
    the current row leaves this cycle.
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise ParameterError(f"parameter 'config' must be an AcceleratorConfig, "
                                 f"got {config!r}")
        self._config = config
        super().__init__({
            "block": In(stream.Signature(block_layout(config))),
            "words": In(stream.Signature(config.stream_bits)),
            "rows": Out(stream.Signature(row_layout(config))),
        })

    @property
    def config(self):
        return self._config

    @property
    def buffer_bits(self):
        """Width of the bit buffer that holds record bits between words."""
        return 2 * self._config.record_bits + self._config.stream_bits - 1

    @property
    def sustains_one_row_per_cycle(self):
        """Whether one word always holds a whole record (``stream_bits >= record_bits``)."""
        return self._config.stream_bits >= self._config.record_bits

    @property
    def start_latency(self):
        """Cycles from an idle decoder accepting a command to accepting its first word."""
        return 2

    def bitmap_cycles(self, rows):
        """Words (and cycles, at one word per cycle) to load a block's row bitmap."""
        if isinstance(rows, bool) or not isinstance(rows, int) \
                or not 0 <= rows <= self._config.block_rows:
            raise ParameterError(f"parameter 'rows' is {rows!r}, allowed range is 0 to "
                                 f"{self._config.block_rows}")
        return -(-rows // self._config.stream_bits)

    def max_block_cycles(self, rows):
        """Cycles a block of ``rows`` rows occupies in the sustained case.

        From the cycle its first word is accepted to the cycle its last row
        is accepted, inclusive, with no back-pressure and words always
        available; valid when :attr:`sustains_one_row_per_cycle`. The bound
        is met exactly when the block's row 0 needs a refill cycle, and is
        one less otherwise.
        """
        if not self.sustains_one_row_per_cycle:
            raise ParameterError(
                f"parameter 'stream_bits' is {self._config.stream_bits}; one row per cycle "
                f"needs at least record_bits = {self._config.record_bits}")
        return self.bitmap_cycles(rows) + rows + (1 if rows else 0)

    def elaborate(self, platform):
        config = self._config
        word_bits = config.stream_bits
        code_width = config.code_width
        block_rows = config.block_rows
        capacity = self.buffer_bits
        code = coefficient_layout(config)
        assert code.size == code_width

        m = Module()

        command_valid = Signal()
        command_rows = Signal(len(self.block.payload.rows))
        # Rows still to emit, rows of the bitmap still to load, and nonzero
        # rows whose records have not been consumed yet.
        remaining = Signal.like(command_rows)
        to_load = Signal.like(command_rows)
        pending = Signal(range(block_rows + 1))
        slot = Signal(range(-(-block_rows // word_bits)))
        bitmap = Signal(block_rows)
        buffer = Signal(capacity)
        level = Signal(range(capacity + 1))

        m.d.comb += self.block.ready.eq(~command_valid)
        with m.If(self.block.valid & self.block.ready):
            m.d.sync += [command_valid.eq(1), command_rows.eq(self.block.payload.rows)]

        # The head of the buffer is the record of the next nonzero row.
        mask = buffer[:3]
        present_before = [Const(0, 2), mask[0], mask[0] + mask[1], mask[0] + mask[1] + mask[2]]
        record_length = Array(Const(3 + n * code_width, range(capacity + 1)) for n in range(4))
        head_length = record_length[present_before[3]]
        next_mask = Array(buffer[3 + n * code_width:][:3] for n in range(4))[present_before[3]]
        next_length = record_length[next_mask[0] + next_mask[1] + next_mask[2]]
        head_complete = level >= head_length
        next_complete = level >= head_length + next_length

        row_nonzero = bitmap[0]
        fetch = Signal()
        advance = Signal()
        m.d.comb += advance.eq(self.rows.valid & self.rows.ready)

        payload = self.rows.payload
        m.d.comb += [
            payload.present.eq(Mux(row_nonzero, mask, 0)),
            payload.last.eq(remaining == 1),
        ]
        for column in range(3):
            codes = Array(buffer[3 + n * code_width:][:code_width] for n in range(column + 1))
            with m.If(row_nonzero & mask[column]):
                m.d.comb += payload.coefficients[column].eq(
                    data.View(code, codes[present_before[column]]))

        # A word lands in the buffer just above its valid bits; the last
        # bitmap word lands shifted down so that its first record bit is
        # bit 0 (its bitmap bits fall off the bottom).
        landing = Signal(range(capacity + word_bits + 1))
        landed = Signal(capacity)
        m.d.comb += landed.eq((self.words.payload << landing)[word_bits:])

        def begin():
            m.d.sync += [
                command_valid.eq(0),
                remaining.eq(command_rows),
                to_load.eq(command_rows),
                pending.eq(0),
                slot.eq(0),
                buffer.eq(0),
                level.eq(0),
            ]
            with m.If(command_rows == 0):
                m.next = "Idle"
            with m.Else():
                m.next = "Bitmap"

        with m.FSM():
            with m.State("Idle"):
                with m.If(command_valid):
                    begin()

            with m.State("Bitmap"):
                m.d.comb += [
                    self.words.ready.eq(1),
                    landing.eq(word_bits - to_load),
                ]
                # Bits at or past `block_rows` are never in a block (`to_load` cannot
                # reach them): constant, not a comparison that always fails.
                in_block = Cat((to_load > bit) if bit < block_rows else Const(0, 1)
                               for bit in range(word_bits))
                with m.If(self.words.valid):
                    with m.Switch(slot):
                        for index in range(-(-block_rows // word_bits)):
                            with m.Case(index):
                                field = bitmap[index * word_bits:(index + 1) * word_bits]
                                m.d.sync += field.eq(self.words.payload[:len(field)])
                    m.d.sync += [
                        pending.eq(pending + _popcount(self.words.payload & in_block)),
                        slot.eq(slot + 1),
                        to_load.eq(to_load - word_bits),
                    ]
                    with m.If(to_load <= word_bits):
                        m.d.sync += [
                            buffer.eq(landed),
                            level.eq(word_bits - to_load),
                        ]
                        m.next = "Emit"

            with m.State("Emit"):
                m.d.comb += [
                    self.rows.valid.eq(~row_nonzero | head_complete),
                    fetch.eq(((pending != 0) & ~head_complete)
                             | ((pending >= 2) & ~next_complete)),
                    self.words.ready.eq(fetch),
                    landing.eq(level + word_bits),
                ]
                filled = buffer | Mux(self.words.valid & fetch, landed, 0)
                consumed = Mux(advance & row_nonzero, head_length, 0)
                shifted = Array(filled >> (3 + n * code_width) for n in range(4))
                m.d.sync += [
                    buffer.eq(Mux(advance & row_nonzero, shifted[present_before[3]], filled)),
                    level.eq(level + Mux(self.words.valid & fetch, word_bits, 0) - consumed),
                ]
                with m.If(advance):
                    m.d.sync += [
                        remaining.eq(remaining - 1),
                        bitmap.eq(bitmap >> 1),
                        pending.eq(pending - row_nonzero),
                    ]
                    with m.If(payload.last):
                        with m.If(command_valid):
                            begin()
                        with m.Else():
                            m.next = "Idle"

        return m
