"""Reads two activation rows per cycle and forwards only those the lanes need."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import numbered_row_layout, row_pair_layout
from .pair_queue import PairQueue


__all__ = ["ActivationPairReader"]

#: Rows the output queue holds: room for a pair in flight and a pair being taken while
#: the lanes take one row per cycle.
QUEUE_DEPTH = 6


class ActivationPairReader(wiring.Component):
    """Pair requests in, nonzero activation rows out, one per cycle.

    The activation memory is kept in six identical copies, two sets of
    three: row ``s`` of a pair (``first``, ``second``) reads its elements
    ``address + j * stride`` (``j = 0, 1, 2``) from copy ``3 * s + j``, so
    both rows are read in the cycle the pair is taken. Absent elements
    (``valid`` bit clear) are not read and read as zero.

    A row whose three activations are zero contributes nothing to any sum,
    so it is *dropped*: it never reaches the lanes, which then neither
    fetch its weight record nor multiply. A block's ``last`` row is always
    forwarded, zero or not, so that every block still ends (flush, basis
    switch) as the index says. Forwarded rows carry their ordinal within
    the pass (the pair's ``ordinal``, plus 1 for ``second``).

    Members
    -------
    stride : ``In(16)``
        Distance between a row's elements; held while requests flow.
    requests : ``In(stream.Signature(row_pair_layout()))``
    ports : ``In(memory.ReadPort.Signature(addr_width, activation_bits)).array(6)``
        Read port ``k`` of copy ``k``.
    rows : ``Out(stream.Signature(numbered_row_layout(config)))``
        The forwarded rows, in request order. A row read in cycle ``t`` is
        valid from cycle ``t + 2`` on. One row per cycle while ``ready``
        stays high; a pair is taken per cycle while at most one of its rows
        is forwarded.
    reads : ``Out(3)``
        Elements read from memory in this cycle.
    zero : ``Out(2)``
        Rows read in the previous cycle whose three activations are zero
        (forwarded or not).
    dropped : ``Out(2)``
        Of these, rows not forwarded.
    """

    def __init__(self, config, *, addr_width):
        self._config = config
        self._addr_width = addr_width
        super().__init__({
            "stride": In(16),
            "requests": In(stream.Signature(row_pair_layout())),
            "ports": In(memory.ReadPort.Signature(addr_width=addr_width,
                                                  shape=config.activation_bits)).array(6),
            "rows": Out(stream.Signature(numbered_row_layout(config))),
            "reads": Out(3),
            "zero": Out(2),
            "dropped": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        layout = numbered_row_layout(self._config)
        width = self._config.activation_bits
        m.submodules.queue = queue = PairQueue(layout, QUEUE_DEPTH)
        wiring.connect(m, queue.r, wiring.flipped(self.rows))

        request = self.requests.payload
        slots = (request.first, request.second)
        count = 1 + request.both
        in_flight = Signal(2)       # rows read in the previous cycle
        pending_valid = [Signal(3, name=f"pending_valid{s}") for s in range(2)]
        pending_last = [Signal(name=f"pending_last{s}") for s in range(2)]
        pending_ordinal = Signal.like(request.ordinal)

        take = Signal()
        m.d.comb += [
            take.eq(self.requests.valid & (queue.level + in_flight + count <= QUEUE_DEPTH)),
            self.requests.ready.eq(take),
        ]
        reads = 0
        for s, slot in enumerate(slots):
            live = take if s == 0 else take & request.both
            for j in range(3):
                port = self.ports[3 * s + j]
                m.d.comb += [port.addr.eq(slot.address + j * self.stride),
                             port.en.eq(live & slot.valid[j])]
                reads += port.en
            m.d.sync += [pending_valid[s].eq(slot.valid), pending_last[s].eq(slot.last)]
        m.d.comb += self.reads.eq(reads)
        m.d.sync += [in_flight.eq(Mux(take, count, 0)), pending_ordinal.eq(request.ordinal)]

        rows, zeros, keeps = [], [], []
        for s in range(2):
            row = Signal(layout, name=f"row{s}")
            elements = [Mux(pending_valid[s][j], self.ports[3 * s + j].data, 0)[:width]
                        for j in range(3)]
            arrived = in_flight > s
            zero = Signal(name=f"zero{s}")
            keep = Signal(name=f"keep{s}")
            m.d.comb += [
                row.row.eq(Cat(*elements)),
                row.last.eq(pending_last[s]),
                row.ordinal.eq(pending_ordinal + s),
                zero.eq(arrived & (row.row.as_value() == 0)),
                keep.eq(arrived & (~zero | pending_last[s])),
            ]
            rows.append(row)
            zeros.append(zero)
            keeps.append(keep)
        m.d.comb += [
            queue.w_count.eq(keeps[0] + keeps[1]),
            queue.w_data[0].eq(Mux(keeps[0], rows[0], rows[1])),
            queue.w_data[1].eq(rows[1]),
            self.zero.eq(zeros[0] + zeros[1]),
            self.dropped.eq((zeros[0] & ~pending_last[0]) + (zeros[1] & ~pending_last[1])),
        ]
        return m
