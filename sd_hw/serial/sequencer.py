"""OpSequencer: runs the program's operations, lane group by lane group."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ParameterError
from .config import SerialConfig
from .layouts import (PROGRAM_WORD_BITS, address_bits, group_layout, op_layout,
                      program_words)


__all__ = ["OpSequencer", "ProgramPort"]


class ProgramPort(wiring.Signature):
    """A read port of the program memory (32-bit words): data one cycle after ``en``,
    held while ``en`` is low."""

    def __init__(self, addr_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1),
                          "data": In(PROGRAM_WORD_BITS)})


class OpSequencer(wiring.Component):
    """Runs ``op_count`` operations from ``first_op`` on, one lane group at a time.

    It reads the program (:mod:`sd_hw.serial.layouts`) of a core of ``config`` (a
    :class:`~sd_hw.serial.config.SerialConfig`): operation ``first_op``'s entry of
    the operation table, then from the address found there on, for each operation its
    header into ``op`` and, for each of its lane groups, the group's descriptor into
    ``group``; then it pulses ``group_start`` and waits until ``units_busy`` is low
    (from the next cycle on). The group marked ``last`` ends the operation.

    Every word of a header or a descriptor but the last is copied into flip-flops;
    the descriptor's last word is the program memory's read data, which holds since
    nothing is read while a group runs. ``op`` and ``group`` are valid from
    ``group_start`` until ``units_busy`` has fallen.

    Members
    -------
    start : ``In(1)``
        Pulse while idle, with ``first_op`` and ``op_count`` (``first_op + op_count``
        at most the program's operations; ``op_count`` 0: nothing is run).
    busy : ``Out(1)``
    done : ``Out(1)``
        One cycle, at the end of a run.
    program : ``Out(ProgramPort(address_bits(config.program_depth)))``
    op : ``Out(op_layout(config))``
    group : ``Out(group_layout(config))``
    group_start : ``Out(1)``
    units_busy : ``In(1)``
    """

    def __init__(self, config):
        if not isinstance(config, SerialConfig):
            raise ParameterError(f"parameter 'config' must be a SerialConfig, got {config!r}")
        self._op_layout = op_layout(config)
        self._group_layout = group_layout(config)
        self._addr_width = address_bits(config.program_depth)
        super().__init__({
            "start": In(1),
            "first_op": In(16),
            "op_count": In(16),
            "busy": Out(1),
            "done": Out(1),
            "program": Out(ProgramPort(self._addr_width)),
            "op": Out(self._op_layout),
            "group": Out(self._group_layout),
            "group_start": Out(1),
            "units_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bits = PROGRAM_WORD_BITS
        aw = self._addr_width
        op_words = program_words(self._op_layout)
        words = op_words + program_words(self._group_layout)
        program = self.program

        # A header and a descriptor, as read: both are aligned to their last word's end.
        stored = Signal((words - 1) * bits)
        stream = Cat(stored, program.data)
        op_end = op_words * bits
        op_size = data.Layout.cast(self._op_layout).size
        group_size = data.Layout.cast(self._group_layout).size
        m.d.comb += [self.op.eq(stream[op_end - op_size:op_end]),
                     self.group.eq(stream[len(stream) - group_size:])]

        address = Signal(aw)                          # of the next read
        ops_left = Signal(aw)
        word = Signal(range(words), init=words - 1)   # of the header or descriptor read now
        arriving = Signal(range(words), init=words - 1)
        m.d.comb += program.addr.eq(address)
        # `word` rests on the last word while nothing is read, so a word is stored exactly
        # in the cycle after its read.
        m.d.sync += arriving.eq(word)
        for k in range(words - 1):
            with m.If(arriving == k):
                m.d.sync += stored[k * bits:(k + 1) * bits].eq(program.data)

        # `busy` is a flip-flop (the host's write enables of the shared memories hang
        # on it): set when a run leaves IDLE, cleared when it returns there.
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        with m.FSM():
            with m.State("IDLE"):
                # Loaded in every idle cycle, so `start` (decoded from the host bus,
                # late) only chooses the next state.
                m.d.sync += [address.eq(self.first_op), ops_left.eq(self.op_count)]
                with m.If(self.start):
                    with m.If(self.op_count == 0):
                        m.d.comb += self.done.eq(1)
                    with m.Else():
                        m.d.sync += busy.eq(1)
                        m.next = "TABLE"
            with m.State("TABLE"):
                m.d.comb += program.en.eq(1)
                m.next = "LOCATE"
            with m.State("LOCATE"):
                m.d.sync += [address.eq(program.data), word.eq(0)]
                m.next = "READ"
            with m.State("READ"):
                m.d.comb += program.en.eq(1)
                m.d.sync += address.eq(address + 1)
                with m.If(word == words - 1):
                    m.next = "START"
                with m.Else():
                    m.d.sync += word.eq(word + 1)
            with m.State("START"):
                m.d.comb += self.group_start.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(~self.units_busy):
                    with m.If(~self.group.last):
                        m.d.sync += word.eq(op_words)
                        m.next = "READ"
                    with m.Elif(ops_left == 1):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += busy.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [word.eq(0), ops_left.eq(ops_left - 1)]
                        m.next = "READ"
        return m
