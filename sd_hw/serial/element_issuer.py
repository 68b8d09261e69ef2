"""ElementIssuer: walks a lane group's output pixels and sends the lanes their activations."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import row_layout
from ..datapath.mac_lanes import basis_read_layout, element_layout
from ..errors import check_range
from .layouts import WORD_BITS, record_header_layout


__all__ = ["ElementIssuer", "ActivationReadPort", "DIMENSION_BITS"]

#: Width of an image height or width.
DIMENSION_BITS = 8


class ActivationReadPort(wiring.Signature):
    """Word reads of the activation memory (two int8 activations a word, the even one in
    the low byte): data one cycle after ``en``. ``blocked`` (from the memory's arbiter)
    means the port is taken by a write this cycle: no read may be issued."""

    def __init__(self, addr_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(WORD_BITS),
                          "blocked": In(1)})


class ElementIssuer(wiring.Component):
    """Sends the lanes one activation element a cycle for every record of every pass.

    A lane group computes ``passes`` sums per lane, one per output pixel (a linear
    layer: one pass). For each pass it takes the group's ``records`` records in turn
    (the header on ``headers``, the lanes' Ce rows on ``rows``, see
    :class:`~sd_hw.serial.record_reader.RecordReader`) and, for each of the record's
    three columns whose activation exists, reads that activation and sends it on
    ``elements`` with the record's rows and the column, and reads the lanes' basis
    column for it (``basis_base`` plus the number of ``new_block`` headers so far in
    the pass). Columns that
    fall into a 3x3 convolution's zero padding, or past a linear layer's
    ``in_size`` inputs, are not read and not sent. The pass's first element has
    ``first`` set and its last ``last``; a pass whose last record has no element
    (or that has no record) ends with an element of activation 0.

    Output pixels come in raster order or, with ``pool``, in 2x2 windows (the
    windows in raster order, each window's pixels in raster order), so that
    the sums of a window are consecutive; an odd last row or column is not
    computed (max pooling drops it).

    An element with ``last`` set waits for ``pass_ready``; ``pass_commit`` is
    high in the cycle it is taken.

    Members
    -------
    start : ``In(1)``
        Pulse while idle; the group's fields below are held until ``busy`` falls.
    conv, height, width, in_size, in_base, basis_base, pool, records, passes : ``In(...)``
        ``conv``: 3x3 convolution with zero padding 1 (else linear); ``height``,
        ``width``: the input image (conv); ``in_size``: inputs (linear);
        ``in_base``: byte address of the input in the activation memory;
        ``passes``: output pixels to compute (``height * width``, with ``pool``
        ``4 * (height // 2) * (width // 2)``; 1 for a linear layer).
    busy : ``Out(1)``
    headers : ``In(stream.Signature(record_header_layout()))``
    rows : ``In(data.ArrayLayout(row_layout(config), lanes))``
    activations : ``Out(ActivationReadPort(activation_addr_width - 1))``
    elements : ``Out(stream.Signature(element_layout(config, lanes)))``
    basis_read : ``Out(basis_read_layout(basis_addr_width))``
        Reads the lanes' basis column of an element as its activation is read, one
        cycle before the element is offered (see
        :class:`~sd_hw.datapath.mac_lanes.MacLaneArray`).
    pass_ready : ``In(1)``
    pass_commit : ``Out(1)``
    """

    def __init__(self, config, *, basis_addr_width, activation_addr_width):
        check_range("basis_addr_width", basis_addr_width, 1, 16)
        check_range("activation_addr_width", activation_addr_width, 2, 17)
        self._config = config
        self._basis_addr_width = basis_addr_width
        self._address_width = activation_addr_width
        super().__init__({
            "start": In(1),
            "conv": In(1),
            "height": In(DIMENSION_BITS),
            "width": In(DIMENSION_BITS),
            "in_size": In(16),
            "in_base": In(activation_addr_width),
            "basis_base": In(basis_addr_width),
            "pool": In(1),
            "records": In(16),
            "passes": In(16),
            "busy": Out(1),
            "headers": In(stream.Signature(record_header_layout())),
            "rows": In(data.ArrayLayout(row_layout(config), config.lanes)),
            "activations": Out(ActivationReadPort(activation_addr_width - 1)),
            "elements": Out(stream.Signature(element_layout(config, config.lanes))),
            "basis_read": Out(basis_read_layout(basis_addr_width)),
            "pass_ready": In(1),
            "pass_commit": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self._address_width
        dim = DIMENSION_BITS

        # Output pixel walk. ---------------------------------------------------------------
        running = Signal()
        passes_left = Signal(16)
        y = Signal(dim)
        x = Signal(dim)
        y_base = Signal(aw)            # in_base + (y - 1) * width, modulo 2**aw
        quarter = Signal(2)            # position in a 2x2 window
        last_window_column = Signal()  # the window is the last of its row
        win_x = Signal(dim)

        # The record being worked on. ---------------------------------------------------------
        current = Signal(record_header_layout())
        remaining = Signal(3)          # its columns still to read, bit j for column j
        taken_records = Signal(16)
        block = Signal(self._basis_addr_width)
        first = Signal()

        # The element on its way out: its activation arrives from the memory. -------------
        out_valid = Signal()
        out = Signal(element_layout(self._config, 0))
        zero = Signal()
        fresh = Signal()
        high_byte = Signal()
        held = Signal(8)
        word = self.activations.data
        arrived = Mux(high_byte, word[8:16], word[:8])
        activation = Signal(8)
        m.d.comb += activation.eq(Mux(zero, 0, Mux(fresh, arrived, held)))
        with m.If(fresh):
            m.d.sync += [held.eq(arrived), fresh.eq(0)]

        elements = self.elements
        m.d.comb += [
            elements.valid.eq(out_valid & (~out.last | self.pass_ready)),
            elements.payload.activation.eq(activation),
            elements.payload.column.eq(out.column),
            elements.payload.rows.eq(self.rows),
            elements.payload.first.eq(out.first),
            elements.payload.last.eq(out.last),
        ]
        sent = elements.valid & elements.ready
        m.d.comb += self.pass_commit.eq(sent & out.last)
        with m.If(sent):
            m.d.sync += out_valid.eq(0)
        advance = running & (~out_valid | sent) & ~self.activations.blocked

        # Which columns of a record exist at this pixel. -------------------------------------
        def columns(header):
            exists = Signal(3)
            with m.If(self.conv):
                row = y + header.dy           # the input row plus one
                row_ok = (row >= 1) & (row <= self.height)
                m.d.comb += exists.eq(Mux(row_ok, 0b111, 0)
                                      & Mux(x == 0, 0b110, 0b111)
                                      & Mux(x + 1 >= self.width, 0b011, 0b111))
            with m.Else():
                left = self.in_size - header.offset
                m.d.comb += exists.eq(Mux(left >= 3, 0b111, Mux(left == 2, 0b011, 0b001)))
            return exists

        def lowest(mask):
            return Mux(mask[0], 0, Mux(mask[1], 1, 2))

        offered = self.headers.payload
        offered_columns = columns(offered)
        current_columns = remaining
        last_record = taken_records == self.records
        # What to do this cycle: read a column of the current record, or take the next
        # record (reading its first column at once), or end the pass.
        reading_current = current_columns != 0
        take = ~reading_current & ~last_record & self.headers.valid
        use = Signal(record_header_layout())
        mask = Signal(3)
        m.d.comb += [use.eq(Mux(reading_current, current, offered)),
                     mask.eq(Mux(reading_current, current_columns, offered_columns))]
        column = lowest(mask)
        rest = mask & ~(1 << column)[:3]
        record_is_last = Mux(reading_current, last_record,
                             taken_records + 1 == self.records)
        next_block = block + (take & offered.new_block)
        pixel_base = (y_base + x - 1)[:aw]
        byte = (pixel_base + use.offset + column)[:aw]
        if_conv_or_linear_base = Mux(self.conv, byte, (self.in_base + use.offset + column)[:aw])

        issue_read = advance & (reading_current | take) & (mask != 0)
        # The pass ends with a zero element when its last record gives no element.
        end_pass = advance & ((take & (offered_columns == 0) & (taken_records + 1 == self.records))
                              | (~reading_current & last_record))
        m.d.comb += [self.activations.addr.eq(if_conv_or_linear_base >> 1),
                     self.activations.en.eq(issue_read),
                     # A zero element reads a basis column too: its weight then comes from
                     # a column read in this group, never from the memory's power-up value.
                     self.basis_read.en.eq(issue_read | end_pass),
                     self.basis_read.basis.eq(self.basis_base + next_block),
                     self.basis_read.column.eq(column),
                     self.headers.ready.eq(advance & take)]

        with m.If(advance & take):
            m.d.sync += [current.eq(offered), taken_records.eq(taken_records + 1),
                         block.eq(next_block)]
        with m.If(issue_read):
            m.d.sync += [remaining.eq(rest), out_valid.eq(1), fresh.eq(1), zero.eq(0),
                         high_byte.eq(if_conv_or_linear_base[0]),
                         out.column.eq(column),
                         out.first.eq(first), out.last.eq(record_is_last & (rest == 0)),
                         first.eq(0)]
        with m.Elif(advance & take):
            m.d.sync += remaining.eq(0)
        with m.If(end_pass & ~issue_read):
            m.d.sync += [out_valid.eq(1), zero.eq(1), fresh.eq(0), out.column.eq(0),
                         out.first.eq(first), out.last.eq(1),
                         first.eq(0)]

        # The pass is over once its last element has been issued: next pixel.
        pass_over = (issue_read & record_is_last & (rest == 0)) | end_pass
        with m.If(pass_over):
            m.d.sync += [taken_records.eq(0), block.eq(0), first.eq(1),
                         passes_left.eq(passes_left - 1)]
            with m.If(passes_left == 1):
                m.d.sync += running.eq(0)
            with m.If(self.pool):
                with m.Switch(quarter):
                    with m.Case(0, 2):
                        m.d.sync += x.eq(x + 1)
                    with m.Case(1):
                        m.d.sync += [x.eq(x - 1), y.eq(y + 1),
                                     y_base.eq(y_base + self.width)]
                    with m.Case(3):
                        with m.If(last_window_column):
                            m.d.sync += [x.eq(0), y.eq(y + 1), win_x.eq(0),
                                         y_base.eq(y_base + self.width)]
                        with m.Else():
                            m.d.sync += [x.eq(x + 1), y.eq(y - 1), win_x.eq(win_x + 1),
                                         y_base.eq(y_base - self.width)]
                m.d.sync += quarter.eq(quarter + 1)
            with m.Else():
                with m.If(x + 1 == self.width):
                    m.d.sync += [x.eq(0), y.eq(y + 1), y_base.eq(y_base + self.width)]
                with m.Else():
                    m.d.sync += x.eq(x + 1)
        m.d.comb += last_window_column.eq(win_x + 1 == (self.width >> 1))

        m.d.comb += self.busy.eq(running | out_valid)
        with m.If(self.start & ~self.busy):
            m.d.sync += [
                running.eq(self.passes != 0),
                passes_left.eq(self.passes),
                y.eq(0), x.eq(0), win_x.eq(0), quarter.eq(0),
                y_base.eq(self.in_base - self.width),
                taken_records.eq(0), block.eq(0), first.eq(1), remaining.eq(0),
            ]
        return m
