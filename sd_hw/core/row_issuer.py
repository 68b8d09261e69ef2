"""The index selector: walks a lane group's index entries once per output pixel."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import block_end_layout, block_layout
from .config import HOST_WORD_BITS
from .layouts import (ROW_COUNT_BITS, Window, entry_layout, row_pair_layout,
                      row_request_layout)
from .region_reader import RegionReader


__all__ = ["RowIssuer"]

#: Block commands and block-end tokens that may wait for the lanes.
QUEUE_DEPTH = 2
#: The same with a lookahead of 2, which may hand on a block header in consecutive cycles
#: (a SyncFIFOBuffered of depth 2 takes one every other cycle).
PAIR_QUEUE_DEPTH = 3


class RowIssuer(wiring.Component):
    """Turns the index entries of one lane group into work for the lanes.

    For each of ``passes`` output pixels (``p = 0, 1, ...``; for CONV3 and
    CONV1 pixel ``p`` is row ``p // width``, column ``p % width``) it reads
    the group's ``entries`` index entries (:func:`~sd_hw.core.layouts.entry_layout`)
    and, in order:

    * for a block header, sends the block's live row count to every lane's
      coefficient decoder (``commands``) and its ``flush`` flag to the lanes'
      accumulators (``block_ends``), and reports the rows it skips
      (``skipped``: rows that are zero in every lane are never issued);
    * for a row, sends an activation row request (``requests``): element
      0's address ``origin + p + offset`` and which of the three elements
      exist. An element is absent if its ``columns`` bit is clear or, for
      CONV3, if it falls into the zero padding (kernel row ``tap`` above the
      first or below the last image row, column left of the first or right
      of the last image column).

    With ``lookahead=2`` it reads two entries per cycle, ``k`` from the
    index memory and ``k + 1`` from a second, identical copy of it
    (``second_port``), and hands on two rows of a pass in one cycle
    (``requests`` then carries :func:`~sd_hw.core.layouts.row_pair_layout`
    payloads with the rows' ordinal within the pass). Entries are read in
    aligned pairs ``(index_base + 2i, index_base + 2i + 1)`` of a pass (the
    last pair of a pass with an odd number of entries has one), and a pair
    is handed on in one cycle: its rows as one request (``both`` set if it
    has two), its block header, if any, to ``commands`` and ``block_ends``.
    A pair holds at most one header, since a block has at least one row.

    Members
    -------
    start : ``In(1)``
        Pulse while idle to begin; the driver holds the other inputs from
        ``start`` until ``busy`` falls.
    index_base, entries, passes, window, origin, width, height : ``In(...)``
    busy : ``Out(1)``
        Until every entry has been read and handed on.
    port : the index memory's read port.
    second_port : the read port of the index memory's second copy (``lookahead=2``
        only).
    commands : ``Out(stream.Signature(block_layout(config)))``
    block_ends : ``Out(stream.Signature(block_end_layout()))``
    requests : ``Out(stream.Signature(row_request_layout()))``
        (``lookahead=2``: ``row_pair_layout()``)
    read : ``Out(lookahead)``
        Index memory words read in this cycle.
    skipped : ``Out(ROW_COUNT_BITS)``
        Rows skipped by the block header handed on in this cycle (else 0).
    """

    def __init__(self, config, *, addr_width, lookahead=1):
        if lookahead not in (1, 2):
            raise ValueError(f"lookahead must be 1 or 2, got {lookahead!r}")
        self._config = config
        self._addr_width = addr_width
        self._lookahead = lookahead
        members = {
            "start": In(1),
            "index_base": In(addr_width),
            "entries": In(16),
            "passes": In(16),
            "window": In(Window),
            "origin": In(16),
            "width": In(16),
            "height": In(16),
            "busy": Out(1),
            "port": In(memory.ReadPort.Signature(addr_width=addr_width, shape=HOST_WORD_BITS)),
            "commands": Out(stream.Signature(block_layout(config))),
            "block_ends": Out(stream.Signature(block_end_layout())),
            "requests": Out(stream.Signature(row_pair_layout() if lookahead == 2
                                             else row_request_layout())),
            "read": Out(lookahead),
            "skipped": Out(ROW_COUNT_BITS),
        }
        if lookahead == 2:
            members["second_port"] = In(memory.ReadPort.Signature(addr_width=addr_width,
                                                                  shape=HOST_WORD_BITS))
        super().__init__(members)

    @property
    def lookahead(self):
        return self._lookahead

    def elaborate(self, platform):
        if self._lookahead == 2:
            return self._elaborate_pairs()
        m = Module()
        m.submodules.reader = reader = RegionReader(addr_width=self._addr_width,
                                                    data_width=HOST_WORD_BITS)
        commands, ends = self._queues(m, QUEUE_DEPTH)
        wiring.connect(m, wiring.flipped(self.port), reader.port)

        # The driver holds the inputs while busy.
        entries = self.entries
        entry_index = Signal(16)
        pixel, column, row = position = self._position(m)

        m.d.comb += [
            reader.start.eq(self.start),
            reader.base.eq(self.index_base),
            reader.length.eq(self.entries),
            reader.repeats.eq(self.passes),
            self.busy.eq(reader.busy),
            self.read.eq(reader.read),
        ]
        with m.If(self.start):
            m.d.sync += entry_index.eq(0)

        entry_bits = data.Layout.cast(entry_layout()).size
        entry = data.View(entry_layout(), reader.words.payload[:entry_bits])
        header = entry.body.block

        # Block headers go to both queues at once.
        m.d.comb += [commands.w_data.eq(header.live), ends.w_data.eq(header.flush)]
        header_room = commands.w_rdy & ends.w_rdy
        self._describe(m, self.requests.payload, entry.body.row, position)

        consumed = Signal()
        with m.If(entry.is_block):
            m.d.comb += [
                consumed.eq(reader.words.valid & header_room),
                commands.w_en.eq(consumed),
                ends.w_en.eq(consumed),
            ]
            with m.If(consumed):
                m.d.comb += self.skipped.eq(header.skipped)
        with m.Else():
            m.d.comb += [
                self.requests.valid.eq(reader.words.valid),
                consumed.eq(reader.words.valid & self.requests.ready),
            ]
        m.d.comb += reader.words.ready.eq(consumed)

        with m.If(consumed):
            with m.If(entry_index == entries - 1):
                m.d.sync += entry_index.eq(0)
                self._next_pixel(m, position)
            with m.Else():
                m.d.sync += entry_index.eq(entry_index + 1)
        return m

    def _queues(self, m, depth):
        """The block command and block-end queues, connected to their outputs."""
        command_layout = block_layout(self._config)
        m.submodules.command_queue = commands = SyncFIFOBuffered(
            width=data.Layout.cast(command_layout).size, depth=depth)
        m.submodules.end_queue = ends = SyncFIFOBuffered(
            width=data.Layout.cast(block_end_layout()).size, depth=depth)
        wiring.connect(m, commands.r_stream, wiring.flipped(self.commands))
        wiring.connect(m, ends.r_stream, wiring.flipped(self.block_ends))
        return commands, ends

    def _position(self, m):
        """The pass's pixel and its column and row, cleared at ``start``."""
        pixel = Signal(16)
        column = Signal(16)
        row = Signal(16)
        with m.If(self.start):
            m.d.sync += [pixel.eq(0), column.eq(0), row.eq(0)]
        return pixel, column, row

    def _next_pixel(self, m, position):
        pixel, column, row = position
        m.d.sync += pixel.eq(pixel + 1)
        with m.If(column == self.width - 1):
            m.d.sync += [column.eq(0), row.eq(row + 1)]
        with m.Else():
            m.d.sync += column.eq(column + 1)

    def _describe(self, m, request, row_entry, position):
        """Drive ``request`` (a ``row_request_layout``) for ``row_entry`` at ``position``."""
        pixel, column, row = position
        conv3 = self.window == Window.CONV3
        horizontal = Mux(conv3, Cat(column != 0, Const(1), column != self.width - 1), 0b111)
        vertical = Mux(conv3 & (row_entry.tap == 0), row != 0,
                       Mux(conv3 & (row_entry.tap == 2), row != self.height - 1, 1))
        m.d.comb += [
            request.address.eq(self.origin + pixel + row_entry.offset),
            request.valid.eq(row_entry.columns & horizontal & vertical.replicate(3)),
            request.last.eq(row_entry.last),
        ]

    def _elaborate_pairs(self):
        m = Module()
        # The reader streams pairs of words: pair i of a pass is entries 2i and 2i + 1,
        # read from the two copies at once.
        m.submodules.reader = reader = RegionReader(addr_width=self._addr_width,
                                                    data_width=2 * HOST_WORD_BITS)
        commands, ends = self._queues(m, PAIR_QUEUE_DEPTH)
        entries = self.entries
        pairs = Signal(16)
        odd = entries[0]
        m.d.comb += pairs.eq((entries + 1) >> 1)
        pair_address = Signal(self._addr_width)
        m.d.comb += [
            pair_address.eq(self.index_base + (reader.port.addr << 1)),
            self.port.addr.eq(pair_address),
            self.port.en.eq(reader.port.en),
            self.second_port.addr.eq(pair_address + 1),
            # The last pair of a pass with an odd number of entries has one entry.
            self.second_port.en.eq(reader.port.en & ~(odd & (reader.port.addr == pairs - 1))),
            reader.port.data.eq(Cat(self.port.data, self.second_port.data)),
            reader.start.eq(self.start),
            reader.base.eq(0),
            reader.length.eq(pairs),
            reader.repeats.eq(self.passes),
            self.busy.eq(reader.busy),
            self.read.eq(self.port.en + self.second_port.en),
        ]

        pair_index = Signal(16)    # the pair's position in the pass
        ordinal = Signal(16)       # row entries of the pass before the pair
        position = self._position(m)
        with m.If(self.start):
            m.d.sync += [pair_index.eq(0), ordinal.eq(0)]

        entry_bits = data.Layout.cast(entry_layout()).size
        words = [data.View(entry_layout(), reader.words.payload[HOST_WORD_BITS * k:]
                           [:entry_bits]) for k in range(2)]
        second_exists = ~(odd & (pair_index == pairs - 1))
        # A pair holds at most one block header (a block has at least one row).
        is_row = [~words[0].is_block, second_exists & ~words[1].is_block]
        has_header = ~is_row[0] | (second_exists & ~is_row[1])
        header = Mux(is_row[0], words[1].as_value(), words[0].as_value())
        header = data.View(entry_layout(), header).body.block
        m.d.comb += [commands.w_data.eq(header.live), ends.w_data.eq(header.flush)]

        request = self.requests.payload
        first = data.View(entry_layout(), Mux(is_row[0], words[0].as_value(),
                                              words[1].as_value()))
        self._describe(m, request.first, first.body.row, position)
        self._describe(m, request.second, words[1].body.row, position)
        has_rows = is_row[0] | is_row[1]
        m.d.comb += [request.both.eq(is_row[0] & is_row[1]), request.ordinal.eq(ordinal)]

        # The header and the rows of a pair are handed on in the same cycle.
        header_done = ~has_header | (commands.w_rdy & ends.w_rdy)
        rows_done = ~has_rows | self.requests.ready
        consumed = Signal()
        m.d.comb += [
            self.requests.valid.eq(reader.words.valid & has_rows & header_done),
            consumed.eq(reader.words.valid & header_done & rows_done),
            commands.w_en.eq(consumed & has_header),
            ends.w_en.eq(consumed & has_header),
            reader.words.ready.eq(consumed),
        ]
        with m.If(consumed & has_header):
            m.d.comb += self.skipped.eq(header.skipped)

        with m.If(consumed):
            with m.If(pair_index == pairs - 1):
                m.d.sync += [pair_index.eq(0), ordinal.eq(0)]
                self._next_pixel(m, position)
            with m.Else():
                m.d.sync += [pair_index.eq(pair_index + 1),
                             ordinal.eq(ordinal + is_row[0] + is_row[1])]
        return m
