"""The device side of the framed host protocol: UART bytes in and out, host bus out."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..core.host_map import COUNTER_BASE, HostBus, Register, Space, address
from .protocol import (MAX_READ_WORDS, MAX_WORDS, REPLY_SYNC, REQUEST_SYNC, Command, Status,
                       crc16)


__all__ = ["HostLink", "crc16_step"]


def _crc16_taps():
    """For each bit of the next CRC, the CRC bits and byte bits it is the XOR of.

    The CRC update is linear over GF(2), so the taps follow from updating
    every unit vector with the software definition (:func:`crc16`).
    """
    taps = [([], []) for _ in range(16)]
    for source in range(24):
        crc, byte = (1 << source, 0) if source < 16 else (0, 1 << (source - 16))
        # crc16(bytes([byte]), crc) without its initial value: linear in (crc, byte).
        value = crc16(bytes([byte]), crc)
        for bit in range(16):
            if value >> bit & 1:
                taps[bit][0 if source < 16 else 1].append(source % 16 if source < 16
                                                          else source - 16)
    return taps


_TAPS = _crc16_taps()


def crc16_step(crc, byte):
    """CRC-16/CCITT-FALSE of ``crc`` after one more ``byte`` (Amaranth values), as XORs."""
    byte = Cat(byte, Const(0, 8))[:8]
    bits = []
    for crc_taps, byte_taps in _TAPS:
        terms = [crc[i] for i in crc_taps] + [byte[i] for i in byte_taps]
        bits.append(Cat(*terms).xor() if terms else Const(0))
    return Cat(*bits)


class HostLink(wiring.Component):
    """Executes protocol requests (:mod:`sd_hw.link.protocol`) on an SDCore's host bus.

    A request is received completely, its payload buffered
    (:data:`~sd_hw.link.protocol.MAX_WORDS` words), and only acted on if
    its CRC, command and length are right; every request gets exactly one
    reply, an error status otherwise (bad CRC, bad length, unknown command,
    overflow of the buffer), after which the link waits for the next sync
    byte. A request that stops arriving for ``timeout_cycles`` is dropped
    with a TIMEOUT reply. RUN replies when the core reports ``done``.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Received bytes.
    tx : ``Out(stream.Signature(8))``
        Bytes to send.
    bus : ``Out(HostBus())``
        To the core's ``host``.
    done : ``In(1)``
        The core's ``done``.
    """

    def __init__(self, *, timeout_cycles):
        if not isinstance(timeout_cycles, int) or timeout_cycles < 16:
            raise ValueError(f"timeout_cycles must be an integer >= 16, got {timeout_cycles!r}")
        self._timeout = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(HostBus()),
            "done": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = buffer = memory.Memory(shape=32, depth=MAX_WORDS, init=[])
        buffer_write = buffer.write_port()
        buffer_read = buffer.read_port()

        crc = Signal(16)
        command = Signal(8)
        length = Signal(16)
        received = Signal(16)      # payload bytes received
        current = Signal(32)       # the payload word being assembled, bytes LE
        word0 = Signal(32)
        crc_low = Signal(8)
        overflow = Signal()
        idle = Signal(range(self._timeout + 1))
        status = Signal(8)

        rx = self.rx
        byte = rx.payload
        got = Signal()
        m.d.comb += got.eq(rx.valid & rx.ready)

        # Transmit side: one byte register in front of the UART.
        tx = self.tx
        send = Signal()
        send_byte = Signal(8)
        tx_free = ~tx.valid | tx.ready
        with m.If(tx.valid & tx.ready):
            m.d.sync += tx.valid.eq(0)
        with m.If(send):
            m.d.sync += [tx.payload.eq(send_byte), tx.valid.eq(1)]

        # Reply state. The reply's CRC goes into `crc` too: the request's check is over.
        reply_words = Signal(range(MAX_READ_WORDS + 1))
        reply_index = Signal(range(MAX_READ_WORDS + 1))
        # The reply's bus address reuses a register of the request, which is not needed
        # any more by then. WRITE and READ step the address in word0 itself. The word
        # being sent is not copied: the bus holds its read data until the next read.
        reply_address = word0
        reply_byte = Signal(range(4))
        is_ident = Signal()
        write_index = Signal(range(MAX_WORDS + 1))
        write_count = Signal(range(MAX_WORDS + 1))
        fetched = Signal()

        count = current[16:32]   # READ: the count is the payload's last two bytes
        data_words = (length - 4) >> 2

        # Every byte received between the sync byte and the CRC goes into the request's
        # CRC, every byte sent between the sync byte and the CRC into the reply's.
        counted = Signal()
        crc_checked = Signal()
        with m.If((got & crc_checked) | (send & counted)):
            m.d.sync += crc.eq(crc16_step(crc, Mux(counted, send_byte, byte)))

        def emit(value, then, *, update_crc=True):
            m.d.comb += [send_byte.eq(value), counted.eq(update_crc)]
            with m.If(tx_free):
                m.d.comb += send.eq(1)
                m.next = then

        with m.FSM():
            with m.State("Sync"):
                m.d.comb += rx.ready.eq(1)
                with m.If(got & (byte == REQUEST_SYNC)):
                    m.d.sync += [crc.eq(0xFFFF), received.eq(0), overflow.eq(0), idle.eq(0),
                                 reply_words.eq(0), reply_index.eq(0), is_ident.eq(0)]
                    m.next = "Command"

            def receiving(name, body, *, checked=False):
                with m.State(name):
                    m.d.comb += rx.ready.eq(1)
                    if checked:
                        m.d.comb += crc_checked.eq(1)
                    with m.If(got):
                        m.d.sync += idle.eq(0)
                        body()
                    with m.Elif(idle == self._timeout):
                        m.d.sync += status.eq(Status.TIMEOUT)
                        m.next = "ReplyStart"
                    with m.Else():
                        m.d.sync += idle.eq(idle + 1)

            def on_command():
                m.d.sync += command.eq(byte)
                m.next = "LengthLow"

            def on_length_low():
                m.d.sync += length[:8].eq(byte)
                m.next = "LengthHigh"

            def on_length_high():
                m.d.sync += length[8:].eq(byte)
                with m.If(Cat(length[:8], byte) == 0):
                    m.next = "CrcLow"
                with m.Else():
                    m.next = "Payload"

            def on_payload():
                m.d.sync += [received.eq(received + 1), current.eq(Cat(current[8:], byte))]
                word = received >> 2
                with m.If(received[:2] == 3):
                    with m.If(word == 0):
                        m.d.sync += word0.eq(Cat(current[8:], byte))
                    with m.Elif(word <= MAX_WORDS):
                        m.d.comb += [buffer_write.addr.eq(word - 1),
                                     buffer_write.data.eq(Cat(current[8:], byte)),
                                     buffer_write.en.eq(1)]
                    with m.Else():
                        m.d.sync += overflow.eq(1)
                with m.If(received + 1 == length):
                    m.next = "CrcLow"

            def on_crc_low():
                m.d.sync += crc_low.eq(byte)
                m.next = "CrcHigh"

            def on_crc_high():
                with m.If(Cat(crc_low, byte) != crc):
                    m.d.sync += status.eq(Status.BAD_CRC)
                    m.next = "ReplyStart"
                with m.Else():
                    m.next = "Check"

            receiving("Command", on_command, checked=True)
            receiving("LengthLow", on_length_low, checked=True)
            receiving("LengthHigh", on_length_high, checked=True)
            receiving("Payload", on_payload, checked=True)
            receiving("CrcLow", on_crc_low)
            receiving("CrcHigh", on_crc_high)

            with m.State("Check"):
                with m.If(overflow | (length > 4 + 4 * MAX_WORDS)):
                    m.d.sync += status.eq(Status.OVERFLOW)
                    m.next = "ReplyStart"
                with m.Elif(command == Command.IDENT):
                    with m.If(length == 0):
                        m.d.sync += [status.eq(Status.OK), reply_words.eq(4), is_ident.eq(1),
                                     reply_address.eq(address(Space.REGISTERS,
                                                              Register.IDENT))]
                    with m.Else():
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                    m.next = "ReplyStart"
                with m.Elif(command == Command.WRITE):
                    with m.If((length >= 8) & (length[:2] == 0)):
                        m.d.sync += [write_index.eq(0), write_count.eq(data_words),
                                     fetched.eq(0)]
                        m.next = "Write"
                    with m.Else():
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                        m.next = "ReplyStart"
                with m.Elif(command == Command.READ):
                    with m.If((length == 6) & (count != 0) & (count <= MAX_READ_WORDS)):
                        m.d.sync += [status.eq(Status.OK), reply_words.eq(count)]
                    with m.Else():
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                    m.next = "ReplyStart"
                with m.Elif(command == Command.RUN):
                    with m.If(length == 4):
                        m.next = "RunStart"
                    with m.Else():
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                        m.next = "ReplyStart"
                with m.Else():
                    m.d.sync += status.eq(Status.UNKNOWN_COMMAND)
                    m.next = "ReplyStart"

            with m.State("Write"):
                # Read buffer word `write_index`; a cycle later write it to the bus.
                m.d.comb += [buffer_read.addr.eq(write_index), buffer_read.en.eq(~fetched)]
                with m.If(~fetched):
                    m.d.sync += fetched.eq(1)
                with m.Else():
                    m.d.comb += [self.bus.addr.eq(word0),
                                 self.bus.w_data.eq(buffer_read.data), self.bus.w_en.eq(1)]
                    m.d.sync += [fetched.eq(0), write_index.eq(write_index + 1),
                                 word0.eq(word0 + 1)]
                    with m.If(write_index + 1 == write_count):
                        m.d.sync += status.eq(Status.OK)
                        m.next = "ReplyStart"

            with m.State("RunStart"):
                m.d.comb += [self.bus.addr.eq(address(Space.REGISTERS, Register.CONTROL)),
                             self.bus.w_data.eq(word0), self.bus.w_en.eq(1)]
                m.next = "RunLaunched"
            with m.State("RunLaunched"):
                m.next = "RunWait"
            with m.State("RunWait"):
                with m.If(self.done):
                    m.d.sync += [status.eq(Status.OK), reply_words.eq(1),
                                 reply_address.eq(address(Space.REGISTERS, COUNTER_BASE))]
                    m.next = "ReplyStart"

            with m.State("ReplyStart"):
                m.d.sync += crc.eq(0xFFFF)
                emit(REPLY_SYNC, "ReplyStatus", update_crc=False)
            with m.State("ReplyStatus"):
                emit(status, "ReplyLengthLow")
            with m.State("ReplyLengthLow"):
                emit((reply_words << 2)[:8], "ReplyLengthHigh")
            with m.State("ReplyLengthHigh"):
                with m.If(reply_words == 0):
                    emit((reply_words << 2)[8:16], "ReplyCrcLow")
                with m.Else():
                    emit((reply_words << 2)[8:16], "ReplyFetch")
            with m.State("ReplyFetch"):
                m.d.comb += [self.bus.addr.eq(reply_address), self.bus.r_en.eq(1)]
                m.d.sync += [reply_address.eq(reply_address + 1), reply_byte.eq(0)]
                m.next = "ReplyWord"
            with m.State("ReplyWord"):
                last_ident = is_ident & (reply_index == 3)
                word = Mux(last_ident, MAX_WORDS, self.bus.r_data)
                m.d.comb += [send_byte.eq(word.word_select(reply_byte, 8)), counted.eq(1)]
                with m.If(tx_free):
                    m.d.comb += send.eq(1)
                    m.d.sync += reply_byte.eq(reply_byte + 1)
                    with m.If(reply_byte == 3):
                        m.d.sync += reply_index.eq(reply_index + 1)
                        with m.If(reply_index + 1 == reply_words):
                            m.next = "ReplyCrcLow"
                        with m.Else():
                            m.next = "ReplyFetch"
            with m.State("ReplyCrcLow"):
                emit(crc[:8], "ReplyCrcHigh", update_crc=False)
            with m.State("ReplyCrcHigh"):
                emit(crc[8:], "Sync", update_crc=False)
        return m
