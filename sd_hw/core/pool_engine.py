"""2x2 max pooling and element-wise copies within the activation memory."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .layouts import OpKind


__all__ = ["PoolEngine"]


class PoolEngine(wiring.Component):
    """Runs a POOL or COPY operation of the program.

    POOL reads a ``(channels, height, width)`` tensor from ``in_base`` and
    writes its 2x2 maxima, stride 2, odd last rows and columns dropped, as a
    ``(channels, height // 2, width // 2)`` tensor from ``out_base`` on:
    two cycles per output (two elements per cycle, on read ports 0 and 1).
    COPY copies ``pixels`` elements (the whole tensor), one per cycle. Both
    apply ``max(x, 0)`` with ``relu``.

    Members
    -------
    start : ``In(1)``
        Pulse while idle to begin; the driver holds the other inputs from
        ``start`` until ``busy`` falls.
    kind, in_base, out_base, channels, height, width, pixels, relu : ``In(...)``
        ``pixels`` is ``height * width`` (POOL) or the element count (COPY).
    busy : ``Out(1)``
    ports : ``In(memory.ReadPort.Signature(...)).array(2)``
        Read ports of two copies of the activation memory.
    activation_write : the activation memory's write port.
    reads : ``Out(2)``
        Elements read in this cycle.
    """

    def __init__(self, config, *, addr_width):
        self._config = config
        self._addr_width = addr_width
        width = config.activation_bits
        super().__init__({
            "start": In(1),
            "kind": In(OpKind),
            "in_base": In(16),
            "out_base": In(16),
            "channels": In(16),
            "height": In(16),
            "width": In(16),
            "pixels": In(16),
            "relu": In(1),
            "busy": Out(1),
            "ports": In(memory.ReadPort.Signature(addr_width=addr_width, shape=width)).array(2),
            "activation_write": In(memory.WritePort.Signature(addr_width=addr_width,
                                                              shape=width)),
            "reads": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._config.activation_bits

        # The driver holds the inputs while busy.
        kind, relu, channels = self.kind, self.relu, self.channels
        row_stride = self.width        # of the input
        channel_stride = self.pixels   # of the input
        out_columns = self.width >> 1
        out_rows = self.height >> 1
        channel = Signal(16)
        out_row = Signal(16)
        out_column = Signal(16)
        # Addresses wrap at the memory's size, like the operation's 16-bit ones do at 2**16.
        channel_start = Signal(self._addr_width)
        row_start = Signal(self._addr_width)
        element = Signal(self._addr_width)      # top-left element of the window (COPY: the element)
        out_address = Signal(self._addr_width)
        count = Signal(16)                      # COPY: elements left
        second = Signal()                       # POOL: reading the window's lower row

        port0, port1 = self.ports
        issue_top = Signal()
        issue_bottom = Signal()
        issue_copy = Signal()
        m.d.comb += [
            port0.addr.eq(Mux(second, element + row_stride, element)),
            port1.addr.eq(Mux(second, element + row_stride + 1, element + 1)),
            port0.en.eq(issue_top | issue_bottom | issue_copy),
            port1.en.eq(issue_top | issue_bottom),
            self.reads.eq(Mux(issue_top | issue_bottom, 2, issue_copy)),
        ]

        # Results: the top pair's maximum is held until the bottom pair arrives.
        got_top = Signal()
        got_bottom = Signal()
        got_copy = Signal()
        m.d.sync += [got_top.eq(issue_top), got_bottom.eq(issue_bottom), got_copy.eq(issue_copy)]

        def maximum(a, b):
            return Mux(a > b, a, b)

        a = port0.data.as_signed()
        b = port1.data.as_signed()
        pair = Signal(signed(width))
        top = Signal(signed(width))
        m.d.comb += pair.eq(maximum(a, b))
        with m.If(got_top):
            m.d.sync += top.eq(pair)
        value = Signal(signed(width))
        m.d.comb += value.eq(Mux(got_copy, a, maximum(top, pair)))
        write = got_bottom | got_copy
        m.d.comb += [
            self.activation_write.addr.eq(out_address),
            self.activation_write.data.eq(Mux(relu & (value < 0), 0, value)),
            self.activation_write.en.eq(write),
        ]
        with m.If(write):
            m.d.sync += out_address.eq(out_address + 1)

        with m.FSM():
            with m.State("Idle"):
                with m.If(self.start):
                    m.d.sync += [
                        channel.eq(0), out_row.eq(0),
                        out_column.eq(0), channel_start.eq(self.in_base),
                        row_start.eq(self.in_base), element.eq(self.in_base),
                        count.eq(self.pixels),
                        out_address.eq(self.out_base), second.eq(0),
                    ]
                    m.next = "Start"
            with m.State("Start"):
                m.d.comb += self.busy.eq(1)
                with m.If(kind == OpKind.COPY):
                    m.next = "Copy"
                with m.Elif((out_rows == 0) | (out_columns == 0) | (channels == 0)):
                    m.next = "Drain"
                with m.Else():
                    m.next = "Pool"
            with m.State("Copy"):
                m.d.comb += self.busy.eq(1)
                with m.If(count == 0):
                    m.next = "Drain"
                with m.Else():
                    m.d.comb += issue_copy.eq(1)
                    m.d.sync += [count.eq(count - 1), element.eq(element + 1)]
            with m.State("Pool"):
                m.d.comb += self.busy.eq(1)
                with m.If(~second):
                    m.d.comb += issue_top.eq(1)
                    m.d.sync += second.eq(1)
                with m.Else():
                    m.d.comb += issue_bottom.eq(1)
                    m.d.sync += second.eq(0)
                    with m.If(out_column == out_columns - 1):
                        m.d.sync += out_column.eq(0)
                        with m.If(out_row == out_rows - 1):
                            m.d.sync += [out_row.eq(0), channel.eq(channel + 1),
                                         channel_start.eq(channel_start + channel_stride),
                                         row_start.eq(channel_start + channel_stride),
                                         element.eq(channel_start + channel_stride)]
                            with m.If(channel == channels - 1):
                                m.next = "Drain"
                        with m.Else():
                            m.d.sync += [out_row.eq(out_row + 1),
                                         row_start.eq(row_start + 2 * row_stride),
                                         element.eq(row_start + 2 * row_stride)]
                    with m.Else():
                        m.d.sync += [out_column.eq(out_column + 1), element.eq(element + 2)]
            with m.State("Drain"):
                m.d.comb += self.busy.eq(1)
                with m.If(~(got_top | got_bottom | got_copy)):
                    m.next = "Idle"
        return m
