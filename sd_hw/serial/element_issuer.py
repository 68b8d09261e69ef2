"""ElementIssuer: walks a lane group's output pixels and sends the lanes their activations."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import row_layout
from ..datapath.mac_lanes import basis_read_layout, element_layout
from ..errors import check_range
from .layouts import DIMENSION_BITS, ROW_JUMP_BITS, WORD_BITS
from .record_reader import offered_header_layout


__all__ = ["ElementIssuer", "ActivationReadPort", "DIMENSION_BITS"]


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
    layer: one pass). For each pass it takes the group's records in turn (the headers
    on ``headers``, the last of a pass marked ``last``; see
    :class:`~sd_hw.serial.record_reader.RecordReader`) and, for each of the record's
    three columns whose activation exists, reads that activation and sends it on
    ``elements`` with the record's rows (``rows``, which the reader switches to the
    record when ``next_rows`` is raised, as the record's first activation is read)
    and the column (``row_last`` on the record's last), and reads the lanes' basis
    column for it (``basis_base`` plus the number of ``new_block`` headers so far in
    the pass). Columns that fall into
    a 3x3 convolution's zero padding are not read and not sent; a linear layer's
    header gives in ``dy`` the number of the row's columns past the inputs, which
    are not read either. Output pixel ``(y, x)`` of a convolution of stride ``s`` and
    padding ``p`` reads input rows ``s * y - p + dy`` and columns ``s * x - p + j``.
    The pass's first element has ``first`` set and its last ``last``; a pass whose
    last record has no element (or that has no record) ends with an element of
    activation 0.

    Output pixels come in raster order or, with ``pool``, in 2x2 windows (the
    windows in raster order, each window's pixels in raster order), so that
    the sums of a window are consecutive; an odd last row or column is not
    computed (pooling drops it). The walk ends at the last pixel.

    A header is taken into a register one record ahead, where the record's first
    activation address and its columns are worked out; the activation and basis
    reads are then issued straight from registers, one a cycle.

    An element with ``last`` set waits for ``pass_ready``; ``pass_commit`` is
    high in the cycle it is taken.

    Members
    -------
    start : ``In(1)``
        Pulse while idle; the group's fields below are held until ``busy`` falls.
    conv, height, width, in_base, basis_base, pool, records, passes : ``In(...)``
        ``conv``: 3x3 convolution (else linear); ``height``, ``width``: the input
        image (conv); ``in_base``: byte address of the input in the activation
        memory; ``records``: records per pass; ``passes``: output pixels to compute
        (``out_height * out_width``, with ``pool``
        ``4 * (out_height // 2) * (out_width // 2)``; 1 for a linear layer; 0:
        nothing). Of ``records`` and ``passes`` only whether they are 0 is used.
    stride2, pad, out_height, out_width, row_jump : ``In(...)``
        A convolution's stride 2 (else 1), zero padding 1 (else 0; 0 for a linear
        layer), output image, and the step of the input address from the last pixel
        of a row (with ``pool``, of a row of windows) to the first of the next
        (``op_layout``'s ``row_jump``).
    busy : ``Out(1)``
    headers : ``In(stream.Signature(offered_header_layout()))``
    next_rows : ``Out(1)``
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
            "in_base": In(activation_addr_width),
            "basis_base": In(basis_addr_width),
            "pool": In(1),
            "stride2": In(1),
            "pad": In(1),
            "out_height": In(DIMENSION_BITS),
            "out_width": In(DIMENSION_BITS),
            "row_jump": In(ROW_JUMP_BITS),
            "records": In(16),
            "passes": In(16),
            "busy": Out(1),
            "headers": In(stream.Signature(offered_header_layout())),
            "next_rows": Out(1),
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
        width, height = self.width, self.height

        more = Signal()                # headers of the group are still to be taken
        empty = Signal()               # the group has no record: zero elements only

        # Output pixel walk: the pixel of the next header to be taken. ------------------------
        x = Signal(dim)
        y = Signal(dim)
        quarter = Signal(2)            # position in a 2x2 window
        pixel = Signal(aw)             # in_base + (s*y - p) * width + s*x - p, modulo 2**aw
        walk = Signal()                # move to the next pixel now (a cycle after its cause)
        moving = Signal()              # the cause: the walk moves next cycle
        # Where (x, y) is, registered: valid from the second cycle after a move; `open_`:
        # valid, and headers remain to be taken.
        open_ = Signal()
        left, right, top, bottom = Signal(), Signal(), Signal(), Signal()
        row_end = Signal()             # the last pixel of its row
        last_window_column = Signal()  # pool: the window is the last of its row
        final_pixel = Signal()         # the walk's last pixel
        out_width, out_height = self.out_width, self.out_height
        window_end = ((x + 1) >> 1) == (out_width >> 1)
        last_column = x + 1 == out_width
        last_row = y + 1 == out_height
        # With padding, only the first and the last pixel of a row or column can reach
        # past the image, by one pixel; with stride 2 the last does if the image's
        # size is odd (column 2x + 1 is then its width).
        m.d.sync += [
            left.eq(self.pad & (x == 0)),
            right.eq(self.pad & last_column & (~self.stride2 | width[0])),
            top.eq(self.pad & (y == 0)),
            bottom.eq(self.pad & last_row & (~self.stride2 | height[0])),
            row_end.eq(last_column),
            last_window_column.eq(window_end),
            final_pixel.eq(Mux(self.conv,
                               Mux(self.pool, (quarter == 3) & window_end
                                   & (((y + 1) >> 1) == (out_height >> 1)),
                                   last_column & last_row),
                               1)),
        ]

        # The record being issued (loaded from its header one record ahead). ---------------
        loaded = Signal()              # holds a record
        active = Signal()              # ... with a column to read
        ending = Signal()              # ... whose last action (read or none) is next
        started = Signal()             # its rows are on `rows` (its first read was issued)
        record_last = Signal()         # the last record of its pass
        byte = Signal(aw)              # byte address of the next read
        count = Signal(2)              # reads left
        column = Signal(2)             # column of the next read
        basis = Signal(self._basis_addr_width)   # basis_base + new_block headers in the pass
        pass_start = Signal(init=1)    # the next header taken is its pass's first
        first = Signal(init=1)         # the next element is its pass's first

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
            elements.payload.row_last.eq(out.row_last),
        ]
        sent = elements.valid & elements.ready
        m.d.comb += self.pass_commit.eq(sent & out.last)
        with m.If(sent):
            m.d.sync += out_valid.eq(0)
        free = ~out_valid | (elements.ready & (~out.last | self.pass_ready))
        # `advance` is the late signal every register of the issuer waits for: kept as
        # one net (two look-up tables of flip-flops) so that synthesis builds the rest
        # of the next state from registers and then selects with it, instead of
        # folding it into deep logic.
        advance = Signal(attrs={"keep": 1})
        m.d.comb += advance.eq(free & ~self.activations.blocked)

        # This cycle: read the record's next column, or pass over a record without one;
        # a pass whose last record has none gets an element of activation 0. A group
        # without records has one such record per pass, without a header.
        issue = advance & active
        passed_over = advance & ending & ~active
        zero_element = passed_over & record_last
        done = advance & ending
        m.d.comb += [self.activations.addr.eq(byte >> 1),
                     self.activations.en.eq(issue),
                     # A zero element reads a basis column too: its weight then comes from
                     # a column read in this group, never from the memory's power-up value.
                     self.basis_read.en.eq(issue | zero_element),
                     self.basis_read.basis.eq(basis),
                     self.basis_read.column.eq(column),
                     self.next_rows.eq(advance & loaded & ~started & ~empty)]

        with m.If(issue):
            m.d.sync += [byte.eq(byte + 1), column.eq(column + 1), count.eq(count - 1),
                         ending.eq(count <= 2), started.eq(1),
                         out_valid.eq(1), fresh.eq(1), zero.eq(0), high_byte.eq(byte[0]),
                         out.column.eq(column), out.first.eq(first),
                         out.last.eq(record_last & (count == 1)), out.row_last.eq(count == 1),
                         first.eq(0)]
        with m.If(zero_element):
            m.d.sync += [out_valid.eq(1), zero.eq(1), fresh.eq(0), out.column.eq(0),
                         out.first.eq(first), out.last.eq(1), out.row_last.eq(1), first.eq(0)]
        # (`active` stays set through the record's reads: `ending` says which is its last.)
        with m.If(done):
            m.d.sync += [loaded.eq(0), active.eq(0), ending.eq(0)]
            with m.If(record_last):
                m.d.sync += first.eq(1)

        # Take the next header: its first read's address and its columns. ------------------
        offered = self.headers.payload
        header = offered.header
        last = offered.last | empty
        # `offer` from registers, then `take` one look-up table after `advance` (both
        # kept, like `advance`).
        offer = Signal(attrs={"keep": 1})
        take = Signal(attrs={"keep": 1})
        m.d.comb += [offer.eq(open_ & (self.headers.valid | empty)),
                     take.eq(offer & (~loaded | done))]
        m.d.comb += self.headers.ready.eq(take)
        row_ok = Mux(header.dy == 0, ~top, Mux(header.dy == 1, 1, ~bottom))
        columns = Signal(2)
        m.d.comb += columns.eq(Mux(empty, 0, Mux(self.conv, Mux(row_ok, 3 - left - right, 0),
                                                 3 - header.dy)))
        with m.If(take):
            m.d.sync += [loaded.eq(1), started.eq(0), record_last.eq(last),
                         count.eq(columns), active.eq(columns != 0), ending.eq(columns <= 1),
                         # pixel + offset + left, as one carry chain:
                         byte.eq((Cat(left, pixel) + Cat(left, header.offset))[1:]),
                         column.eq(left),
                         pass_start.eq(last)]
            with m.If(pass_start):
                m.d.sync += basis.eq(self.basis_base)
            with m.Else():
                m.d.sync += basis.eq(basis + header.new_block)

        # The next pixel, once its pass's last header is taken.
        m.d.comb += moving.eq(take & last)
        m.d.sync += [walk.eq(moving), open_.eq(more & ~moving & ~walk)]
        with m.If(walk & final_pixel):     # (still the pixel of the pass just taken)
            m.d.sync += more.eq(0)
        # The next pixel, from registers only: (x, y) and the step of `pixel`, a
        # column or row of output pixels being `stride` columns or rows of the input.
        x_step = Signal(signed(2), init=1)
        y_step = Signal(signed(2))
        step = Signal(signed(dim + 2), init=1)
        jump = Signal()
        with m.If(self.pool):
            with m.Switch(quarter):
                with m.Case(1):
                    m.d.comb += [x_step.eq(-1), y_step.eq(1), step.eq(width - 1)]
                with m.Case(3):
                    with m.If(last_window_column):
                        m.d.comb += [x_step.eq(0), y_step.eq(1), jump.eq(1)]
                    with m.Else():
                        m.d.comb += [y_step.eq(-1), step.eq(1 - width)]
        with m.Elif(row_end):
            m.d.comb += [x_step.eq(0), y_step.eq(1), jump.eq(1)]
        # `delta` is registered (the image's width then does not reach `pixel` through
        # two carry chains): a walk comes at least three cycles after the walk or start
        # before it and the flags are valid from the second, so in a walk's cycle the
        # register holds the step of the pixel being left.
        delta = Signal(signed(dim + 3))
        m.d.sync += delta.eq(Mux(jump, self.row_jump, Mux(self.stride2, step << 1, step)))
        with m.If(walk):
            m.d.sync += [x.eq(Mux(x_step == 0, 0, x + x_step)), y.eq(y + y_step),
                         quarter.eq(quarter + 1), pixel.eq(pixel + delta)]

        m.d.comb += self.busy.eq(more | loaded | out_valid)
        # A group ends with no record loaded, `pass_start` and `first` set, no walk
        # pending: only the walk and `more` start afresh.
        with m.If(self.start & ~self.busy):
            m.d.sync += [
                more.eq(self.passes != 0), empty.eq(self.records == 0),
                x.eq(0), y.eq(0), quarter.eq(0),
                pixel.eq(Mux(self.pad, self.in_base - width - 1, self.in_base)),
            ]
        return m
