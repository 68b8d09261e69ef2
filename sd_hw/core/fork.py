"""One stream to several consumers, each taking every payload once."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["StreamFork"]


class StreamFork(wiring.Component):
    """Copies every payload of ``i`` to each of ``count`` outputs.

    Each output takes the payload in its own cycle; ``i`` is released once
    every output has taken it (in the cycle the last one does). The payload
    passes through without a register: ``o[k].payload`` is ``i.payload``,
    ``o[k].valid`` is ``i.valid`` until output ``k`` has taken it, and
    ``i.ready`` depends combinationally on the outputs' ``ready``.

    Parameters
    ----------
    shape
        Payload shape.
    count
        Number of outputs (>= 1).

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape)).array(count)``
    """

    def __init__(self, shape, count):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        self._count = count
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)).array(count),
        })

    def elaborate(self, platform):
        m = Module()
        taken = Signal(self._count)
        done = []
        for k, out in enumerate(self.o):
            m.d.comb += [out.valid.eq(self.i.valid & ~taken[k]), out.payload.eq(self.i.payload)]
            done.append(taken[k] | out.ready)
        all_done = Signal()
        m.d.comb += [all_done.eq(Cat(*done).all()), self.i.ready.eq(all_done)]
        with m.If(self.i.valid):
            with m.If(all_done):
                m.d.sync += taken.eq(0)
            with m.Else():
                for k, out in enumerate(self.o):
                    with m.If(out.ready):
                        m.d.sync += taken[k].eq(1)
        return m
