"""OpSequencer: runs the program's operations, lane group by lane group."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import check_range
from .layouts import GROUP_WORDS, OP_WORDS, group_layout, op_layout


__all__ = ["OpSequencer", "ProgramPort"]


class ProgramPort(wiring.Signature):
    """A read port of the program memory (32-bit words): data one cycle after ``en``."""

    def __init__(self, addr_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(32)})


class OpSequencer(wiring.Component):
    """Runs ``op_count`` operations from ``first_op`` on, one lane group at a time.

    For each operation it reads its header (:func:`~sd_hw.serial.layouts.op_layout`,
    :data:`OP_WORDS` words at ``op * OP_WORDS``) into ``op``; for each of its lane
    groups it reads the group's descriptor into ``group``, works out the group's
    ``out_base``, ``param_base`` and valid lanes (``channels``), pulses
    ``group_start`` and waits until ``units_busy`` has fallen. ``op`` and ``group``
    and the derived fields hold from ``group_start`` until the next group's.

    Members
    -------
    start : ``In(1)``
        Pulse while idle, with ``first_op`` and ``op_count``.
    busy : ``Out(1)``
    done : ``Out(1)``
        One cycle, at the end of a run.
    program : ``Out(ProgramPort(addr_width))``
    op : ``Out(op_layout())``
    group : ``Out(group_layout())``
    out_base, param_base, channels : ``Out(16)``
    group_start : ``Out(1)``
    units_busy : ``In(1)``
    """

    def __init__(self, *, lanes, program_addr_width):
        check_range("lanes", lanes, 1, 255)
        check_range("program_addr_width", program_addr_width, 3, 16)
        self._lanes = lanes
        self._addr_width = program_addr_width
        super().__init__({
            "start": In(1),
            "first_op": In(16),
            "op_count": In(16),
            "busy": Out(1),
            "done": Out(1),
            "program": Out(ProgramPort(program_addr_width)),
            "op": Out(op_layout()),
            "group": Out(group_layout()),
            "out_base": Out(16),
            "param_base": Out(16),
            "channels": Out(16),
            "group_start": Out(1),
            "units_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        op_index = Signal(16)
        ops_left = Signal(16)
        group_index = Signal(16)
        channels_left = Signal(16)
        word = Signal(range(OP_WORDS + 1))      # words requested of the header being read
        arriving = Signal(range(OP_WORDS + 1))  # word whose data is on the port now
        fetching = Signal()
        op_bits = Signal(OP_WORDS * 32)
        group_bits = Signal(GROUP_WORDS * 32)
        m.d.comb += [self.op.eq(op_bits), self.group.eq(group_bits),
                     self.channels.eq(channels_left)]
        with m.If(channels_left > lanes):
            m.d.comb += self.channels.eq(lanes)

        def read(address, words, target):
            """Issue reads of ``words`` words from ``address``; store them in ``target``."""
            m.d.comb += [self.program.addr.eq(address + word), self.program.en.eq(word < words)]
            with m.If(word < words):
                m.d.sync += word.eq(word + 1)
            m.d.sync += [arriving.eq(word), fetching.eq(word < words)]
            with m.If(fetching):
                with m.Switch(arriving):
                    for k in range(words):
                        with m.Case(k):
                            m.d.sync += target[32 * k:32 * (k + 1)].eq(self.program.data)
            return fetching & (arriving == words - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [op_index.eq(self.first_op), ops_left.eq(self.op_count),
                                 word.eq(0), fetching.eq(0)]
                    with m.If(self.op_count != 0):
                        m.next = "OP"
                    with m.Else():
                        m.d.comb += self.done.eq(1)
            with m.State("OP"):
                m.d.comb += self.busy.eq(1)
                with m.If(read((op_index * OP_WORDS)[:self._addr_width], OP_WORDS, op_bits)):
                    m.d.sync += [word.eq(0), fetching.eq(0), group_index.eq(0)]
                    m.next = "FIRST_GROUP"
            with m.State("FIRST_GROUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [self.out_base.eq(self.op.out_base),
                             self.param_base.eq(self.op.param_base),
                             channels_left.eq(self.op.channels)]
                with m.If(self.op.groups == 0):
                    m.next = "NEXT_OP"
                with m.Else():
                    m.next = "GROUP"
            with m.State("GROUP"):
                m.d.comb += self.busy.eq(1)
                address = (self.op.group_table + group_index * GROUP_WORDS)[:self._addr_width]
                with m.If(read(address, GROUP_WORDS, group_bits)):
                    m.d.sync += [word.eq(0), fetching.eq(0)]
                    m.next = "START"
            with m.State("START"):
                m.d.comb += [self.busy.eq(1), self.group_start.eq(1)]
                m.next = "STARTED"
            with m.State("STARTED"):
                m.d.comb += self.busy.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(~self.units_busy):
                    m.d.sync += [group_index.eq(group_index + 1),
                                 self.out_base.eq(self.out_base + self.op.group_stride),
                                 self.param_base.eq(self.param_base + lanes),
                                 channels_left.eq(channels_left - lanes)]
                    with m.If(group_index + 1 == self.op.groups):
                        m.next = "NEXT_OP"
                    with m.Else():
                        m.next = "GROUP"
            with m.State("NEXT_OP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [op_index.eq(op_index + 1), ops_left.eq(ops_left - 1)]
                with m.If(ops_left == 1):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "OP"
        return m
