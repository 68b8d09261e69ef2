"""The layer sequencer: steps through the program, one operation and lane group at a time."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .config import HOST_WORD_BITS
from .layouts import GROUP_WORDS, OP_WORDS, OpKind, group_layout, op_layout


__all__ = ["LayerSequencer"]


def _times(value, constant):
    """``value * constant`` as shifts and adds (not a multiplier, which yosys puts on a DSP)."""
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    return sum(terms[1:], terms[0])


class LayerSequencer(wiring.Component):
    """Runs ``op_count`` operations of the program from operation ``first_op`` on.

    For each operation it reads the :data:`~sd_hw.core.layouts.OP_WORDS`
    program words into ``op``. A COMPUTE operation runs its lane groups one
    after the other: the sequencer reads group ``g``'s header from the index
    memory (``op.group_table + g * GROUP_WORDS``) into ``group``, pulses
    ``compute_start`` and waits until ``compute_busy`` falls. POOL and COPY
    operations pulse ``pool_start`` and wait for ``pool_busy``. Operations
    of one program run strictly one after the other, so every operation sees
    the complete output of the one before.

    Members
    -------
    start : ``In(1)``
        Pulse while idle.
    first_op, op_count : ``In(16)``
        Latched at ``start``.
    busy : ``Out(1)``
    done : ``Out(1)``
        Pulses in the cycle the last operation has finished.
    op : ``Out(op_layout())``
    group : ``Out(group_layout())``
        Held while the operation (group) runs.
    op_index : ``Out(16)``
        Index of the operation running.
    program_port, index_port : read ports of the program and index memories
        (the index port is used only between lane groups).
    compute_start, pool_start : ``Out(1)``
    compute_busy, pool_busy : ``In(1)``
    """

    def __init__(self, *, program_addr_width, index_addr_width):
        self._program_addr_width = program_addr_width
        super().__init__({
            "start": In(1),
            "first_op": In(16),
            "op_count": In(16),
            "busy": Out(1),
            "done": Out(1),
            "op": Out(op_layout()),
            "group": Out(group_layout()),
            "op_index": Out(16),
            "program_port": In(memory.ReadPort.Signature(addr_width=program_addr_width,
                                                         shape=HOST_WORD_BITS)),
            "index_port": In(memory.ReadPort.Signature(addr_width=index_addr_width,
                                                       shape=HOST_WORD_BITS)),
            "compute_start": Out(1),
            "pool_start": Out(1),
            "compute_busy": In(1),
            "pool_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        op_bits = Signal(OP_WORDS * HOST_WORD_BITS)
        group_bits = Signal(GROUP_WORDS * HOST_WORD_BITS)
        m.d.comb += [
            self.op.eq(op_bits[:data.Layout.cast(op_layout()).size]),
            self.group.eq(group_bits[:data.Layout.cast(group_layout()).size]),
        ]

        remaining = Signal(16)
        op_address = Signal(16)
        group_index = Signal(16)
        group_address = Signal(16)
        word = Signal(range(max(OP_WORDS, GROUP_WORDS) + 1))
        arrived = Signal()  # a word read in the previous cycle is on the port's data

        m.d.comb += [
            self.program_port.addr.eq(op_address + word),
            self.program_port.en.eq(0),
            self.index_port.addr.eq(group_address + word),
            self.index_port.en.eq(0),
        ]
        m.d.sync += arrived.eq(0)

        def read_words(port, target, count, then):
            with m.If(word < count):
                m.d.comb += port.en.eq(1)
                m.d.sync += [word.eq(word + 1), arrived.eq(1)]
            with m.If(arrived):
                m.d.sync += target.eq(Cat(target, port.data)[HOST_WORD_BITS:])
            with m.If((word == count) & ~arrived):
                m.d.sync += word.eq(0)
                m.next = then

        with m.FSM():
            with m.State("Idle"):
                with m.If(self.start):
                    m.d.sync += [remaining.eq(self.op_count), self.op_index.eq(self.first_op),
                                 op_address.eq(_times(self.first_op, OP_WORDS)), word.eq(0)]
                    m.next = "Next"
            with m.State("Next"):
                m.d.comb += self.busy.eq(1)
                with m.If(remaining == 0):
                    m.d.comb += self.done.eq(1)
                    m.next = "Idle"
                with m.Else():
                    m.next = "FetchOp"
            with m.State("FetchOp"):
                m.d.comb += self.busy.eq(1)
                read_words(self.program_port, op_bits, OP_WORDS, "Dispatch")
            with m.State("Dispatch"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.op.kind == OpKind.COMPUTE):
                    m.d.sync += [group_index.eq(0), group_address.eq(self.op.group_table)]
                    with m.If(self.op.groups == 0):
                        m.next = "Finish"
                    with m.Else():
                        m.next = "FetchGroup"
                with m.Else():
                    m.d.comb += self.pool_start.eq(1)
                    m.next = "Launched"
            with m.State("FetchGroup"):
                m.d.comb += self.busy.eq(1)
                read_words(self.index_port, group_bits, GROUP_WORDS, "StartGroup")
            with m.State("StartGroup"):
                m.d.comb += [self.busy.eq(1), self.compute_start.eq(1)]
                m.next = "Launched"
            with m.State("Launched"):
                m.d.comb += self.busy.eq(1)
                m.next = "Wait"
            with m.State("Wait"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.op.kind == OpKind.COMPUTE):
                    with m.If(~self.compute_busy):
                        m.d.sync += [group_index.eq(group_index + 1),
                                     group_address.eq(group_address + GROUP_WORDS)]
                        with m.If(group_index == self.op.groups - 1):
                            m.next = "Finish"
                        with m.Else():
                            m.next = "FetchGroup"
                with m.Elif(~self.pool_busy):
                    m.next = "Finish"
            with m.State("Finish"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [remaining.eq(remaining - 1), self.op_index.eq(self.op_index + 1),
                             op_address.eq(op_address + OP_WORDS)]
                m.next = "Next"
        return m
