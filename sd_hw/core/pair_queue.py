"""A queue that takes up to two entries per cycle and hands out one."""

from amaranth.hdl import Array, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["PairQueue"]


class PairQueue(wiring.Component):
    """First in, first out; up to two writes and one read per cycle.

    Parameters
    ----------
    shape
        Entry shape (a layout, or anything ``Shape.cast`` takes).
    depth
        Entries it holds (>= 2).

    Members
    -------
    w_data : ``In(data.ArrayLayout(shape, 2))``
    w_count : ``In(2)``
        Entries ``0 .. w_count - 1`` of ``w_data`` are written in this cycle,
        ``w_data[0]`` first. The writer keeps ``w_count <= depth - level``
        (there is no ready: the writer knows how many entries it may send
        before it has them); more is undefined.
    level : ``Out(range(depth + 1))``
        Entries held (those written in this cycle not yet counted).
    r : ``Out(stream.Signature(shape))``
        The oldest entry; an entry written in cycle ``t`` can be taken from
        cycle ``t + 1`` on. One per cycle while ``ready`` stays high.
    """

    def __init__(self, shape, depth):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer of at least 2, got {depth!r}")
        self._shape = shape
        self._depth = depth
        super().__init__({
            "w_data": In(data.ArrayLayout(shape, 2)),
            "w_count": In(2),
            "level": Out(range(depth + 1)),
            "r": Out(stream.Signature(shape)),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        width = Shape.cast(self._shape).width
        storage = [Signal(width, name=f"entry{k}") for k in range(depth)]
        head = Signal(range(depth))
        tail = Signal(range(depth))

        def plus(pointer, amount):
            total = pointer + amount
            return Mux(total >= depth, total - depth, total)[:len(pointer)]

        pop = Signal()
        m.d.comb += [
            self.r.valid.eq(self.level != 0),
            self.r.payload.eq(Array(storage)[head]),
            pop.eq(self.r.valid & self.r.ready),
        ]
        second = plus(tail, 1)
        for k, entry in enumerate(storage):
            with m.If((self.w_count != 0) & (tail == k)):
                m.d.sync += entry.eq(self.w_data[0])
            with m.If((self.w_count == 2) & (second == k)):
                m.d.sync += entry.eq(self.w_data[1])
        m.d.sync += [
            tail.eq(plus(tail, self.w_count)),
            head.eq(plus(head, pop)),
            self.level.eq(self.level + self.w_count - pop),
        ]
        return m
