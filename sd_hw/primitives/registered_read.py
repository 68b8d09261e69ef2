"""A block RAM read port built so that yosys need not emulate read-before-write."""

import weakref

from amaranth.hdl import Signal


__all__ = ["RegisteredReadPort"]


class RegisteredReadPort:
    """A synchronous read port of ``memory`` (``addr``, ``en``; ``data`` a cycle after
    ``en``, held while ``en`` is low) built as an asynchronous port and a register.

    yosys merges the two into the block RAM's read port and, unlike for a synchronous
    Amaranth port, does not delay the write port with flip-flops to emulate
    read-before-write (on iCE40 about one flip-flop per data and address bit). Use it
    only where a read and a write of one address never meet in one cycle.

    :meth:`of` lists the ports built on a memory, so that a proof of that rule
    (``tests/test_formal.py``) can find the read enables.
    """

    _ports = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, memory):
        """The :class:`RegisteredReadPort` objects built on ``memory`` so far."""
        return tuple(cls._ports.get(memory, ()))

    def __init__(self, m, memory, *, name=None, reset_less=False):
        port = memory.read_port(domain="comb")
        self.addr = port.addr
        self.en = Signal(name=None if name is None else f"{name}_en")
        self.data = Signal(port.data.shape(), name=name, reset_less=reset_less)
        with m.If(self.en):
            m.d.sync += self.data.eq(port.data)
        RegisteredReadPort._ports.setdefault(memory, []).append(self)
