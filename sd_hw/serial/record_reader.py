"""RecordReader: a lane group's Ce row records, read from the weight banks pass after pass."""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath.layouts import row_layout
from ..errors import check_range
from .layouts import WEIGHT_BANKS, WORD_BITS, record_header_layout, record_reads


__all__ = ["RecordReader", "BankPort", "offered_header_layout"]


class BankPort(wiring.Signature):
    """A read port of one weight bank: data one cycle after ``en``, held while ``en``
    is low."""

    def __init__(self, addr_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(WORD_BITS)})


def offered_header_layout():
    """A record's header as the reader offers it, and whether the record is the last
    of its pass."""
    return data.StructLayout({"header": record_header_layout(), "last": 1})


class RecordReader(wiring.Component):
    """Reads ``count`` records from ``base`` on (the last at ``last_record``), over and
    over, until ``stop``.

    Every cycle it reads one word of each of the ``banks`` weight banks, so a record
    (:mod:`sd_hw.serial.layouts`) takes ``reads = record_reads(lanes, banks)`` cycles.
    The words of all reads but the last go to a stage register; those of the last
    stay on the banks' outputs, which hold them, so the record is not copied twice.
    Once all its reads are issued (and at the earliest two cycles after the first),
    the record's header is offered on ``headers`` with ``last`` set for the last
    record of a pass. Some cycle after taking it the consumer raises ``next_rows``:
    the record's row words then move to ``rows`` (at that clock edge), where they
    stay until the next ``next_rows``; the next record's reads start in that cycle.
    So the consumer can prepare a record from its header while still working with
    the previous record's rows, and a record follows the previous one every
    ``max(3, reads)`` cycles.

    Members
    -------
    start : ``In(1)``
        Pulse while idle; ``base``, ``count`` and ``last_record`` are held from then
        until ``stop``.
    base, count, last_record : ``In(...)``
        Bank address of the first record, records per pass (0: nothing is read; any
        other value: only that it is not 0 is used) and bank address of the last
        record (``base + (count - 1) * reads``).
    stop : ``In(1)``
        Stop reading (the consumer has all the records it needs); ``rows`` holds.
    busy : ``Out(1)``
        Reading, until ``stop``.
    headers : ``Out(stream.Signature(offered_header_layout()))``
    next_rows : ``In(1)``
        At most once per header taken, at least one cycle after it.
    rows : ``Out(data.ArrayLayout(row_layout(config), lanes))``
        The row words of the record of the last ``next_rows`` (their ``last`` bit,
        unused by the lanes, reads 0).
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
            "last_record": In(addr_width),
            "stop": In(1),
            "busy": Out(1),
            "headers": Out(stream.Signature(offered_header_layout())),
            "next_rows": In(1),
            "rows": Out(data.ArrayLayout(row_layout(config), config.lanes)),
            "banks": Out(BankPort(addr_width)).array(banks),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        banks = self._banks
        reads = record_reads(lanes, banks)
        aw = self._addr_width
        row_bits = len(self.rows[0].as_value())
        last_bit = row_layout(self._config)["last"].offset

        reading = Signal()
        address = Signal(aw)                # bank address of the next read
        step = Signal(range(reads))         # which read of the record comes next
        staged = Signal()                   # a record is read (or being read), rows not taken
        record_last = Signal()              # it is the last of its pass
        arriving = Signal()                 # the banks' data of the last read is valid now
        arriving_step = Signal(range(reads))
        header = Signal(record_header_layout())
        header_in = Signal()                # `header` holds a header not yet taken
        # The words of every read but the last, except the header; row bits but `last`.
        stage_words = [Signal(WORD_BITS, name=f"stage{i}")
                       for i in range(1, banks * (reads - 1))]

        m.d.comb += self.busy.eq(reading)
        # The header can be taken once all its record's reads are issued: the last read's
        # words are on the banks' outputs from the next cycle on, held until `next_rows`.
        last_read_issued = (step == 0) | (step == reads - 1)
        m.d.comb += [self.headers.valid.eq(header_in & last_read_issued),
                     self.headers.payload.header.eq(header),
                     self.headers.payload.last.eq(record_last)]
        with m.If(self.headers.valid & self.headers.ready):
            m.d.sync += header_in.eq(0)

        arrived = [port.data for port in self.banks]
        row_words = []
        for lane in range(lanes):
            i = 1 + lane
            source = stage_words[i - 1] if i < banks * (reads - 1) else arrived[i % banks]
            row_words.append(source)
        with m.If(self.next_rows):
            m.d.sync += self.rows.eq(Cat(Cat(word[:last_bit], Const(0, 1),
                                             word[last_bit + 1:row_bits])
                                         for word in row_words))

        # A record's first read is issued once the previous record's rows are taken (in
        # that very cycle); its other reads follow in the next cycles.
        issue = reading & ((step != 0) | ~staged | self.next_rows)
        for port in self.banks:
            m.d.comb += [port.addr.eq(address), port.en.eq(issue)]
        m.d.sync += [arriving.eq(issue), arriving_step.eq(step)]
        with m.If(self.next_rows):
            m.d.sync += staged.eq(0)
        with m.If(arriving):
            with m.If(arriving_step == 0):
                m.d.sync += [header.eq(arrived[0]), header_in.eq(1)]
            for i, word in enumerate(stage_words, start=1):
                with m.If(arriving_step == i // banks):
                    m.d.sync += word.eq(arrived[i % banks])

        at_last = address == self.last_record
        record_is_last = at_last if reads == 1 else record_last
        with m.If(issue):
            m.d.sync += address.eq(address + 1)
            with m.If(step == 0):
                m.d.sync += [staged.eq(1), record_last.eq(at_last), header_in.eq(0)]
            with m.If(step == reads - 1):
                m.d.sync += step.eq(0)
                with m.If(record_is_last):
                    m.d.sync += address.eq(self.base)
            with m.Else():
                m.d.sync += step.eq(step + 1)

        with m.If(self.stop):
            m.d.sync += reading.eq(0)
        with m.If(self.start & ~self.busy):
            m.d.sync += [address.eq(self.base), step.eq(0),
                         staged.eq(0), header_in.eq(0), arriving.eq(0),
                         reading.eq(self.count != 0)]
        return m
