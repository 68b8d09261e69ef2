"""The index selector: walks a lane group's index entries once per output pixel."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import block_end_layout, block_layout
from .config import HOST_WORD_BITS
from .layouts import ROW_COUNT_BITS, Window, entry_layout, row_request_layout
from .region_reader import RegionReader


__all__ = ["RowIssuer"]

#: Block commands and block-end tokens that may wait for the lanes.
QUEUE_DEPTH = 2


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

    Members
    -------
    start : ``In(1)``
        Pulse while idle to begin; the driver holds the other inputs from
        ``start`` until ``busy`` falls.
    index_base, entries, passes, window, origin, width, height : ``In(...)``
    busy : ``Out(1)``
        Until every entry has been read and handed on.
    port : the index memory's read port.
    commands : ``Out(stream.Signature(block_layout(config)))``
    block_ends : ``Out(stream.Signature(block_end_layout()))``
    requests : ``Out(stream.Signature(row_request_layout()))``
    read : ``Out(1)``
        An index memory read in this cycle.
    skipped : ``Out(ROW_COUNT_BITS)``
        Rows skipped by the block header handed on in this cycle (else 0).
    """

    def __init__(self, config, *, addr_width):
        self._config = config
        self._addr_width = addr_width
        super().__init__({
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
            "requests": Out(stream.Signature(row_request_layout())),
            "read": Out(1),
            "skipped": Out(ROW_COUNT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = RegionReader(addr_width=self._addr_width,
                                                    data_width=HOST_WORD_BITS)
        command_layout = block_layout(self._config)
        m.submodules.command_queue = commands = SyncFIFOBuffered(
            width=data.Layout.cast(command_layout).size, depth=QUEUE_DEPTH)
        m.submodules.end_queue = ends = SyncFIFOBuffered(
            width=data.Layout.cast(block_end_layout()).size, depth=QUEUE_DEPTH)
        wiring.connect(m, wiring.flipped(self.port), reader.port)
        wiring.connect(m, commands.r_stream, wiring.flipped(self.commands))
        wiring.connect(m, ends.r_stream, wiring.flipped(self.block_ends))

        # The driver holds the inputs while busy.
        window, origin, width, height = self.window, self.origin, self.width, self.height
        entries = self.entries
        entry_index = Signal(16)
        pixel = Signal(16)
        column = Signal(16)
        row = Signal(16)

        m.d.comb += [
            reader.start.eq(self.start),
            reader.base.eq(self.index_base),
            reader.length.eq(self.entries),
            reader.repeats.eq(self.passes),
            self.busy.eq(reader.busy),
            self.read.eq(reader.read),
        ]
        with m.If(self.start):
            m.d.sync += [entry_index.eq(0), pixel.eq(0), column.eq(0), row.eq(0)]

        entry_bits = data.Layout.cast(entry_layout()).size
        entry = data.View(entry_layout(), reader.words.payload[:entry_bits])
        header = entry.body.block
        row_entry = entry.body.row

        # Block headers go to both queues at once.
        m.d.comb += [commands.w_data.eq(header.live), ends.w_data.eq(header.flush)]
        header_room = commands.w_rdy & ends.w_rdy

        conv3 = window == Window.CONV3
        horizontal = Mux(conv3, Cat(column != 0, Const(1), column != width - 1), 0b111)
        vertical = Mux(conv3 & (row_entry.tap == 0), row != 0,
                       Mux(conv3 & (row_entry.tap == 2), row != height - 1, 1))
        request = self.requests.payload
        m.d.comb += [
            request.address.eq(origin + pixel + row_entry.offset),
            request.valid.eq(row_entry.columns & horizontal & vertical.replicate(3)),
            request.last.eq(row_entry.last),
        ]

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
                m.d.sync += [entry_index.eq(0), pixel.eq(pixel + 1)]
                with m.If(column == width - 1):
                    m.d.sync += [column.eq(0), row.eq(row + 1)]
                with m.Else():
                    m.d.sync += column.eq(column + 1)
            with m.Else():
                m.d.sync += entry_index.eq(entry_index + 1)
        return m
