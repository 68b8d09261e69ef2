"""Fetches a lane's weight records by row number, for the rows that reach the lanes."""

from amaranth.hdl import Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .layouts import row_fetch_layout


__all__ = ["RowFetcher"]

#: Words the output queue holds: with one read in flight, a full-rate stream.
QUEUE_DEPTH = 3


class RowFetcher(wiring.Component):
    """Reads word ``base + header_words + ordinal`` of a weight memory per request.

    A lane's weight region (see :class:`~sd_hw.core.region_reader.RegionReader`
    with ``header=True``) holds a length header of ``header_words`` words
    and then one fixed-size record per row entry of a pass, in index order.
    With a core's ``row_lookahead=2``, rows whose activations are all zero
    never reach the lanes; each lane fetches the records of the rows that
    do, by their ordinal within the pass, and so never reads a dropped
    row's record (nor the length header).

    Parameters
    ----------
    addr_width, data_width
        Of the memory's read port (synchronous, one cycle of latency).
    header_words
        Words in front of the records (the region's length header).

    Members
    -------
    base : ``In(addr_width)``
        The region's first address; held by the driver while requests flow.
    requests : ``In(stream.Signature(row_fetch_layout()))``
    port : ``In(memory.ReadPort.Signature(addr_width=addr_width, shape=data_width))``
        The memory's read port, which this block drives.
    words : ``Out(stream.Signature(data_width))``
        One record per request, in request order. A request taken in cycle
        ``t`` is valid from cycle ``t + 2`` (one read cycle, one queue
        cycle); one per cycle while ``ready`` stays high.
    read : ``Out(1)``
        The memory is read in this cycle.
    busy : ``Out(1)``
        A record is being read or waits in the queue.
    """

    def __init__(self, *, addr_width, data_width, header_words):
        self._addr_width = addr_width
        self._data_width = data_width
        self._header_words = header_words
        super().__init__({
            "base": In(addr_width),
            "requests": In(stream.Signature(row_fetch_layout())),
            "port": In(memory.ReadPort.Signature(addr_width=addr_width, shape=data_width)),
            "words": Out(stream.Signature(data_width)),
            "read": Out(1),
            "busy": Out(1),
        })

    @property
    def header_words(self):
        return self._header_words

    @property
    def latency(self):
        """Cycles from a request's transfer to its record's first valid cycle."""
        return 2

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = SyncFIFO(width=self._data_width, depth=QUEUE_DEPTH)
        in_flight = Signal()
        take = Signal()
        m.d.comb += [
            take.eq(self.requests.valid & (queue.level + in_flight < QUEUE_DEPTH)),
            self.requests.ready.eq(take),
            self.port.addr.eq(self.base + self._header_words + self.requests.payload.ordinal),
            self.port.en.eq(take),
            self.read.eq(take),
            queue.w_en.eq(in_flight),
            queue.w_data.eq(self.port.data),
            self.words.valid.eq(queue.r_rdy),
            self.words.payload.eq(queue.r_data),
            queue.r_en.eq(self.words.ready),
            self.busy.eq(in_flight | queue.r_rdy),
        ]
        m.d.sync += in_flight.eq(take)
        return m
