"""An 8N1 UART: a receiver and a transmitter with a fixed divisor."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ParameterError


__all__ = ["UARTReceiver", "UARTTransmitter", "check_divisor"]


def check_divisor(divisor):
    """Clock cycles per bit: an integer of at least 4."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 4:
        raise ParameterError(f"parameter 'divisor' (clock cycles per UART bit) is "
                             f"{divisor!r}; it must be an integer of at least 4")
    return divisor


class UARTReceiver(wiring.Component):
    """Receives 8N1 bytes on ``rx``, LSB first, ``divisor`` clock cycles per bit.

    ``rx`` passes two synchronising flip-flops. A start bit is a low level
    seen half a bit after a falling edge; each data bit is sampled in the
    middle of its bit time. A byte whose stop bit is low is dropped and
    pulses ``framing_error``; the receiver then waits for the line to go
    high before it looks for the next start bit.

    Members
    -------
    rx : ``In(1, init=1)``
    bytes : ``Out(stream.Signature(8))``
        A received byte stays valid until taken; a byte that arrives while
        the previous one waits is dropped and pulses ``overrun``.
    framing_error, overrun : ``Out(1)``
    """

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "bytes": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        meta = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [meta.eq(self.rx), line.eq(meta)]

        timer = Signal(range(divisor))
        bit = Signal(range(9))
        shift = Signal(8)

        with m.If(self.bytes.valid & self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        with m.FSM():
            with m.State("Idle"):
                with m.If(~line):
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "Start"
            with m.State("Start"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):  # a glitch, not a start bit
                    m.next = "Idle"
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), bit.eq(0)]
                    m.next = "Data"
            with m.State("Data"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), shift.eq(Cat(shift[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "Stop"
            with m.State("Stop"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    with m.If(self.bytes.valid & ~self.bytes.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.bytes.payload.eq(shift), self.bytes.valid.eq(1)]
                    m.next = "Idle"
                with m.Else():
                    m.d.comb += self.framing_error.eq(1)
                    m.next = "Break"
            with m.State("Break"):
                with m.If(line):
                    m.next = "Idle"
        return m


class UARTTransmitter(wiring.Component):
    """Sends the bytes of ``bytes`` as 8N1 on ``tx``, ``divisor`` clock cycles per bit.

    Members
    -------
    bytes : ``In(stream.Signature(8))``
        Taken when the transmitter is idle, one byte per 10 bit times.
    tx : ``Out(1, init=1)``
    """

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({"bytes": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        timer = Signal(range(divisor))
        frame = Signal(10, init=0x3FF)   # stop bit, 8 data bits, start bit: LSB goes out first
        bits = Signal(range(11))
        m.d.comb += [self.tx.eq(frame[0]), self.bytes.ready.eq(bits == 0)]
        with m.If(self.bytes.valid & self.bytes.ready):
            m.d.sync += [frame.eq(Cat(0, self.bytes.payload, 1)), bits.eq(10),
                         timer.eq(divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits.eq(bits - 1),
                             timer.eq(divisor - 1)]
        return m
