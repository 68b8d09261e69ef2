"""RecordReader: a lane group's Ce row records, read from the weight banks pass after pass."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import row_layout
from ..errors import check_range
from .layouts import WEIGHT_BANKS, WORD_BITS, record_header_layout, record_reads, record_words


__all__ = ["RecordReader", "BankPort"]


class BankPort(wiring.Signature):
    """A read port of one weight bank: data one cycle after ``en``."""

    def __init__(self, addr_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(WORD_BITS)})


class RecordReader(wiring.Component):
    """Reads ``count`` records from ``base`` on, ``passes`` times over.

    Every cycle it reads one word of each of the ``banks`` weight banks, so a record
    (:mod:`sd_hw.serial.layouts`) takes ``record_reads(lanes, banks)`` cycles. A
    complete record waits in an assembly buffer: its header is offered on
    ``headers``; when the consumer takes the header, the record's row words move
    to ``rows``, where they stay until the next header is taken, and the buffer
    is free for the next record. So the consumer can look at a record's header
    while still working with the previous record's rows.

    Members
    -------
    start : ``In(1)``
        Pulse while idle; ``base``, ``count`` and ``passes`` are sampled then.
    base, count, passes : ``In(...)``
        Bank address of the first record, records per pass (0 allowed: nothing is
        read) and passes (at least 1).
    busy : ``Out(1)``
        Until the last record's header has been taken.
    headers : ``Out(stream.Signature(record_header_layout()))``
    rows : ``Out(data.ArrayLayout(row_layout(config), lanes))``
        The row words of the record whose header was taken last.
    banks : ``Out(BankPort(addr_width)).array(banks)``
    """

    def __init__(self, config, *, addr_width, banks=WEIGHT_BANKS):
        check_range("addr_width", addr_width, 1, 16)
        check_range("banks", banks, 1, 64)
        self._banks = banks
        self._config = config
        self._lanes = config.lanes
        self._addr_width = addr_width
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "count": In(16),
            "passes": In(16),
            "busy": Out(1),
            "headers": Out(stream.Signature(record_header_layout())),
            "rows": Out(data.ArrayLayout(row_layout(config), config.lanes)),
            "banks": Out(BankPort(addr_width)).array(banks),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        reads = record_reads(lanes, self._banks)
        words = record_words(lanes)

        base = Signal(self._addr_width)
        count = Signal(16)
        passes_left = Signal(16)
        record = Signal(16)                 # index of the record being read, in its pass
        address = Signal(self._addr_width)  # bank address of the next read
        step = Signal(range(reads))         # which read of the record comes next
        reading = Signal()
        arriving = Signal()                 # the banks' data of the last read is valid now
        arriving_step = Signal(range(reads))
        buffer = Signal(reads * self._banks * WORD_BITS)
        complete = Signal()                 # the buffer holds a whole record, not yet taken

        # The record is complete once the data of its last read arrives; it can be taken
        # in that very cycle, straight from the banks, so that records follow each other
        # every `reads` cycles.
        span = self._banks * WORD_BITS
        arrived = Cat(port.data for port in self.banks)
        last_arriving = arriving & (arriving_step == reads - 1)
        record_bits = Signal(reads * span)
        m.d.comb += record_bits.eq(buffer)
        with m.If(last_arriving):
            m.d.comb += record_bits[(reads - 1) * span:].eq(arrived)
        available = complete | last_arriving
        taken = self.headers.valid & self.headers.ready
        m.d.comb += [self.headers.valid.eq(available),
                     self.headers.payload.eq(record_bits[:WORD_BITS]),
                     self.busy.eq(reading | available | arriving)]

        # A read is issued while the buffer is free or being emptied this cycle; its data
        # lands in the buffer the next cycle, in the order of the reads.
        issue = reading & (~available | taken)
        for port in self.banks:
            m.d.comb += [port.addr.eq(address), port.en.eq(issue)]
        m.d.sync += [arriving.eq(issue), arriving_step.eq(step)]
        with m.If(arriving):
            with m.Switch(arriving_step):
                for s in range(reads):
                    with m.Case(s):
                        m.d.sync += buffer[s * span:(s + 1) * span].eq(arrived)
        with m.If(taken):
            m.d.sync += [self.rows.eq(record_bits[WORD_BITS:words * WORD_BITS]), complete.eq(0)]
        with m.Elif(last_arriving):
            m.d.sync += complete.eq(1)

        with m.If(issue):
            m.d.sync += address.eq(address + 1)
            with m.If(step == reads - 1):
                m.d.sync += [step.eq(0), record.eq(record + 1)]
                with m.If(record + 1 == count):
                    m.d.sync += [record.eq(0), address.eq(base), passes_left.eq(passes_left - 1)]
                    with m.If(passes_left == 1):
                        m.d.sync += reading.eq(0)
            with m.Else():
                m.d.sync += step.eq(step + 1)

        with m.If(self.start & ~self.busy):
            m.d.sync += [base.eq(self.base), count.eq(self.count), passes_left.eq(self.passes),
                         record.eq(0), address.eq(self.base), step.eq(0),
                         reading.eq((self.count != 0) & (self.passes != 0))]
        return m
