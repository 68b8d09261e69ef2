"""Streams a region of a memory, several times over."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out


__all__ = ["RegionReader"]

#: Words the output queue holds: with one read in flight, a full-rate stream.
QUEUE_DEPTH = 3


class RegionReader(wiring.Component):
    """Reads ``length`` words from ``base`` on, ``repeats`` times, as a stream.

    With ``header=True`` the region describes itself: its first
    :attr:`header_words` words hold ``length`` (little endian) and the
    streamed words follow them; the ``length`` input is then unused.

    Parameters
    ----------
    addr_width, data_width
        Of the memory's read port (synchronous, one cycle of latency).
    header
        Whether the region starts with its length.
    queue_depth
        Words the output queue holds (default 3: one read in flight and a
        full-rate stream; 2 halves the rate).

    Members
    -------
    start : ``In(1)``
        Pulse while idle to begin. ``base``, ``length`` and ``repeats`` are
        not latched: the driver holds them from ``start`` until ``busy``
        falls (the core's sequencer holds its operation and group).
        ``length = 0`` or ``repeats = 0`` streams nothing.
    base : ``In(addr_width)``
    length : ``In(16)``
    repeats : ``In(16)``
    busy : ``Out(1)``
        From the cycle after ``start`` until the last word has been taken.
    port : ``In(memory.ReadPort.Signature(addr_width=addr_width, shape=data_width))``
        The memory's read port, which this block drives.
    words : ``Out(stream.Signature(data_width))``
        The words, in address order, region after region. One word per
        cycle while ``ready`` stays high.
    read : ``Out(1)``
        High in every cycle that reads the memory (headers included).
    """

    def __init__(self, *, addr_width, data_width, header=False, queue_depth=QUEUE_DEPTH):
        self._queue_depth = queue_depth
        self._addr_width = addr_width
        self._data_width = data_width
        self._header = header
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "length": In(16),
            "repeats": In(16),
            "busy": Out(1),
            "port": In(memory.ReadPort.Signature(addr_width=addr_width, shape=data_width)),
            "words": Out(stream.Signature(data_width)),
            "read": Out(1),
        })

    @property
    def header_words(self):
        """Words of the length header (0 without a header)."""
        return -(-16 // self._data_width) if self._header else 0

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = SyncFIFO(width=self._data_width, depth=self._queue_depth)

        # base, repeats and (without a header) length are held by the driver.
        base = self.base
        repeats = self.repeats
        length = Signal(16) if self._header else self.length
        index = Signal(16)
        repeat = Signal(16)
        in_flight = Signal()
        header_index = Signal(range(max(self.header_words, 1) + 1))
        header_pending = Signal()

        issue = Signal()
        m.d.comb += [
            self.port.addr.eq(base + self.header_words + index),
            self.port.en.eq(issue),
            self.read.eq(issue),
            queue.w_en.eq(in_flight),
            queue.w_data.eq(self.port.data),
            self.words.valid.eq(queue.r_rdy),
            self.words.payload.eq(queue.r_data),
            queue.r_en.eq(self.words.ready),
        ]
        m.d.sync += in_flight.eq(issue & ~header_pending)
        # Header words arrive a cycle after their read and are assembled LSB first.
        captured = Signal()
        assembled = Signal(max(self.header_words, 1) * self._data_width)
        m.d.sync += captured.eq(issue & header_pending)
        with m.If(captured):
            m.d.sync += assembled.eq(Cat(assembled, self.port.data)[self._data_width:])

        with m.FSM():
            with m.State("Idle"):
                with m.If(self.start):
                    m.d.sync += [index.eq(0), repeat.eq(0), header_index.eq(0)]
                    m.next = "Header" if self._header else "Check"

            if self._header:
                with m.State("Header"):
                    m.d.comb += self.busy.eq(1)
                    with m.If(header_index < self.header_words):
                        m.d.comb += [issue.eq(1), header_pending.eq(1),
                                     self.port.addr.eq(base + header_index)]
                        m.d.sync += header_index.eq(header_index + 1)
                    with m.Elif(~captured):
                        m.d.sync += length.eq(assembled[:16])
                        m.next = "Check"

            with m.State("Check"):
                m.d.comb += self.busy.eq(1)
                with m.If((length == 0) | (repeats == 0)):
                    m.next = "Idle"
                with m.Else():
                    m.next = "Stream"

            with m.State("Stream"):
                m.d.comb += self.busy.eq(1)
                room = Signal()
                m.d.comb += room.eq(queue.level + in_flight < self._queue_depth)
                with m.If(repeat != repeats):
                    m.d.comb += issue.eq(room)
                    with m.If(room):
                        with m.If(index == length - 1):
                            m.d.sync += [index.eq(0), repeat.eq(repeat + 1)]
                        with m.Else():
                            m.d.sync += index.eq(index + 1)
                with m.Elif(~in_flight & (queue.level == 0)):
                    m.next = "Idle"
        return m
