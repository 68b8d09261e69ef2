"""The registers and performance counters a core shows on the host bus.

Both cores (:class:`~sd_hw.core.core.SDCore`, :class:`~sd_hw.serial.core.SerialCore`)
build them the same way: 32-bit counters cleared at every start, identification
registers from offset 0 and the counters from :data:`~sd_hw.core.host_map.COUNTER_BASE`
on, read a cycle after the host's read like the memories.
"""

from amaranth.hdl import Const, Signal


__all__ = ["performance_counters", "register_read"]


def performance_counters(m, increments, *, clear, every=True):
    """One 32-bit counter per entry of ``increments`` (name -> what to add each cycle),
    cleared while ``clear`` is high; without ``every``, only ``cycles`` counts and the
    others read 0. Returns the counters' values in the order of ``increments``."""
    counters = []
    for name, increment in increments.items():
        if not every and name != "cycles":
            counters.append(Const(0, 32))
            continue
        counter = Signal(32, name=f"counter_{name}")
        counters.append(counter)
        with m.If(clear):
            m.d.sync += counter.eq(0)
        with m.Else():
            m.d.sync += counter.eq(counter + increment)
    return counters


def register_read(m, *, read, space, offset, registers, counters, counter_base):
    """The value of register ``offset`` (``registers``: offset -> value, then
    ``counters`` from ``counter_base`` on), and ``space``, both taken at a ``read``.

    Returns ``(read_space, read_register)``: the space and the register value of the
    last read, for the core's read-data multiplexer."""
    register_value = Signal(32)
    with m.Switch(offset):
        for number, value in registers.items():
            with m.Case(int(number)):
                m.d.comb += register_value.eq(value)
        for k, counter in enumerate(counters):
            with m.Case(counter_base + k):
                m.d.comb += register_value.eq(counter)
    read_space = Signal(8)
    read_register = Signal(32)
    with m.If(read):
        m.d.sync += [read_space.eq(space), read_register.eq(register_value)]
    return read_space, read_register
