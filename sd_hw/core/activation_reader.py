"""Reads the three activations of a row from the three copies of the activation memory."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import activation_row_layout
from .layouts import row_request_layout


__all__ = ["ActivationReader"]

#: Rows read ahead of the lanes. The row issuer can run only this far ahead of the
#: multipliers, and it hands on a pass's block command after the previous pass's last
#: row; the command must then cross the command queue and start the decoders (four
#: cycles) while the rebuild pipeline (decoder to multipliers) still drains the previous
#: pass, or the decoders wait between passes: with three rows, a pass of 18 rows took 25
#: cycles instead of 21; seven or more rows hide the wait.
QUEUE_DEPTH = 8


class ActivationReader(wiring.Component):
    """Row requests in, activation rows out, one per cycle.

    The activation memory is kept in three identical copies, so that the
    three elements of a row, at ``address + j * stride`` for ``j = 0, 1, 2``,
    are read in the same cycle, one from each copy. Absent elements
    (``valid`` bit clear: zero padding, or past a layer's last input) are not
    read and read as zero.

    Members
    -------
    stride : ``In(16)``
        Distance between a row's elements; held while requests flow.
    requests : ``In(stream.Signature(row_request_layout()))``
    ports : ``In(memory.ReadPort.Signature(addr_width, activation_bits)).array(3)``
        Read port ``j`` of copy ``j``.
    rows : ``Out(stream.Signature(activation_row_layout(config)))``
        The row and its request's ``last``.
    reads : ``Out(2)``
        Elements read from memory in this cycle.
    zero : ``Out(1)``
        A row whose three activations are all zero was read in the previous
        cycle (it will still be sent: the lanes stay in step).
    """

    def __init__(self, config, *, addr_width):
        self._config = config
        self._addr_width = addr_width
        super().__init__({
            "stride": In(16),
            "requests": In(stream.Signature(row_request_layout())),
            "ports": In(memory.ReadPort.Signature(addr_width=addr_width,
                                                  shape=config.activation_bits)).array(3),
            "rows": Out(stream.Signature(activation_row_layout(config))),
            "reads": Out(2),
            "zero": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = activation_row_layout(self._config)
        width = self._config.activation_bits
        m.submodules.queue = queue = SyncFIFO(width=data.Layout.cast(layout).size,
                                              depth=QUEUE_DEPTH)
        in_flight = Signal()
        pending_valid = Signal(3)
        pending_last = Signal()

        take = Signal()
        m.d.comb += [
            take.eq(self.requests.valid & (queue.level + in_flight < QUEUE_DEPTH)),
            self.requests.ready.eq(take),
        ]
        request = self.requests.payload
        for j, port in enumerate(self.ports):
            m.d.comb += [port.addr.eq(request.address + j * self.stride),
                         port.en.eq(take & request.valid[j])]
        m.d.comb += self.reads.eq(Mux(take, request.valid[0] + request.valid[1]
                                      + request.valid[2], 0))
        m.d.sync += [in_flight.eq(take), pending_valid.eq(request.valid),
                     pending_last.eq(request.last)]

        row = Signal(layout)
        elements = [Mux(pending_valid[j], port.data, 0) for j, port in enumerate(self.ports)]
        m.d.comb += [
            row.row.eq(Cat(*[element[:width] for element in elements])),
            row.last.eq(pending_last),
            queue.w_en.eq(in_flight),
            queue.w_data.eq(row),
            self.zero.eq(in_flight & (row.row.as_value() == 0)),
            self.rows.valid.eq(queue.r_rdy),
            self.rows.payload.eq(queue.r_data),
            queue.r_en.eq(self.rows.ready),
        ]
        return m
