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

    The link works a byte at a time: the payload is buffered as bytes
    (one EBR), and words are assembled from the buffer, and taken apart
    for the reply, in one 32-bit shift register. One down-counter counts
    the request's payload bytes, then the bytes the buffer still holds, then
    the reply's payload bytes; the reply's length field is that counter.

    The state machine acts every other cycle (``act``): in the cycle between,
    the received byte, its validity and every comparison the next decision
    needs are registered, and the CRC takes the last byte in. No decision
    thus depends on a comparison, an adder or an input in the same cycle,
    so the link, which handles a byte in hundreds of cycles, never limits
    the clock of the core behind it.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Received bytes.
    tx : ``Out(stream.Signature(8))``
        Bytes to send.
    bus : ``Out(HostBus())``
        To the core's ``host``. ``w_en`` and ``r_en`` come from flip-flops;
        ``r_data`` is taken in the cycle after ``r_en``. A word is written, or
        read, at most every fourth cycle; reads and writes of a request go to
        consecutive addresses.
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
        buffer_bytes = 4 + 4 * MAX_WORDS
        m.submodules.buffer = buffer = memory.Memory(shape=8, depth=buffer_bytes, init=[])
        buffer_write = buffer.write_port()
        # An asynchronous read port behind a register: yosys merges the two into the
        # EBR's synchronous read port without emulating read-before-write (the link
        # never reads and writes the buffer in one cycle).
        buffer_read = buffer.read_port(domain="comb")
        buffered = Signal(8)

        crc = Signal(16)
        crc_low_ok = Signal()
        # The request's command: its two low bits, and whether the others are zero.
        command = Signal(2)
        known = Signal()
        ptr = Signal(range(buffer_bytes + 1))       # buffer address
        overflow = Signal()
        # Payload bytes still to come; then buffered bytes still to load; then reply
        # payload bytes still to send.
        remaining = Signal(16)
        word = Signal(32)                           # bytes in at the top, out at the bottom
        bus_address = Signal(32)
        have_address = Signal()
        is_ident = Signal()
        status = Signal(range(len(Status) + 1))
        # Cycles left before a half-received request times out; negative: timed out.
        idle = Signal(range(-1, self._timeout))

        # The state machine acts in every other cycle; what it decides on is registered
        # in the cycle before, when none of the values it compares changes.
        act = Signal()
        m.d.sync += act.eq(~act)

        rx = self.rx
        rx_seen = Signal()          # rx.valid, a cycle ago: the byte is held until taken
        byte = Signal(8)            # rx.payload, a cycle ago
        is_sync = Signal()
        m.d.sync += [rx_seen.eq(rx.valid), byte.eq(rx.payload),
                     is_sync.eq(rx.payload == REQUEST_SYNC)]
        got = Signal()
        m.d.comb += got.eq(rx_seen & rx.ready)

        # Transmit side: one byte register in front of the UART.
        tx = self.tx
        send = Signal()
        send_byte = Signal(8)
        tx_free = ~tx.valid | tx.ready
        with m.If(tx.valid & tx.ready):
            m.d.sync += tx.valid.eq(0)
        with m.If(send):
            m.d.sync += [tx.payload.eq(send_byte), tx.valid.eq(1)]

        # Every byte received between the sync byte and the CRC goes into the request's
        # CRC, every byte sent between the sync byte and the CRC into the reply's.
        # The byte goes in in the cycle after it was taken or sent (between two acting
        # cycles), from flip-flops.
        counted = Signal()
        crc_checked = Signal()
        crc_pending = Signal()
        crc_sent = Signal()
        crc_byte = Signal(8)
        m.d.sync += crc_pending.eq((got & crc_checked) | (send & counted))
        with m.If(got):
            m.d.sync += [crc_byte.eq(byte), crc_sent.eq(0)]
        with m.If(send):
            m.d.sync += crc_sent.eq(1)
        with m.If(crc_pending):
            m.d.sync += crc.eq(crc16_step(crc, Mux(crc_sent, tx.payload, crc_byte)))

        # The bus strobes come from flip-flops, a cycle after the state that asks for
        # them, so that no path runs from the link's state machine into the core's
        # decoding; the address moves on in the cycle the core takes the word.
        # Likewise the address is loaded a cycle after the state that asks for it (`word`
        # and the request's fields hold for that cycle), from a registered choice.
        write_word = Signal()
        read_word = Signal()
        m.d.sync += [self.bus.w_en.eq(write_word), self.bus.r_en.eq(read_word)]
        load_address = Signal()
        address_source = Signal(2)   # 0: `word`; 1: IDENT; 2: the counters; 3: 0
        m.d.sync += load_address.eq(0)

        def set_address(source):
            m.d.sync += [load_address.eq(1), address_source.eq(source)]

        with m.If(load_address):
            m.d.sync += bus_address.eq(
                Mux(address_source[1],
                    Mux(address_source[0], 0, address(Space.REGISTERS, COUNTER_BASE)),
                    Mux(address_source[0], address(Space.REGISTERS, Register.IDENT), word)))
        with m.Elif(self.bus.w_en | self.bus.r_en):
            m.d.sync += bus_address.eq(bus_address + 1)
        m.d.comb += [buffer_write.addr.eq(ptr), buffer_write.data.eq(byte),
                     buffer_read.addr.eq(ptr),
                     self.bus.addr.eq(bus_address), self.bus.w_data.eq(word)]
        next_remaining = remaining - 1

        # Comparisons, registered every cycle: right in every acting cycle, since their
        # operands only change at the end of one.
        def flag(value, name):
            registered = Signal(name=name)
            m.d.sync += registered.eq(value)
            return registered

        remaining_0 = flag(remaining == 0, "remaining_0")
        remaining_1 = flag(remaining == 1, "remaining_1")
        remaining_4 = flag(remaining == 4, "remaining_4")
        remaining_word_end = flag(remaining[:2] == 1, "remaining_word_end")
        ptr_full = flag(ptr == buffer_bytes, "ptr_full")
        ptr_word_start = flag(ptr[:2] == 0, "ptr_word_start")
        ptr_ident = flag(ptr == 0, "ptr_ident")
        ptr_write = flag((ptr >= 8) & (ptr[:2] == 0), "ptr_write")
        ptr_read = flag(ptr == 6, "ptr_read")
        ptr_run = flag(ptr == 4, "ptr_run")
        count_ok = flag((word[16:] != 0) & (word[16:] <= MAX_READ_WORDS), "count_ok")
        crc_high_ok = Signal()

        def emit(value, then, *, update_crc=True):
            m.d.comb += [send_byte.eq(value), counted.eq(update_crc)]
            with m.If(tx_free):
                m.d.comb += send.eq(1)
                m.next = then

        def reply(code, *, length=0):
            m.d.sync += [status.eq(code), remaining.eq(length)]
            m.next = "ReplyStart"

        with m.If(act), m.FSM() as fsm:
            with m.State("Sync"):
                m.d.comb += rx.ready.eq(rx_seen)
                with m.If(got & is_sync):
                    m.d.sync += [crc.eq(0xFFFF), ptr.eq(0), overflow.eq(0),
                                 idle.eq(self._timeout // 2 - 1),
                                 have_address.eq(0), is_ident.eq(0)]
                    set_address(3)
                    m.next = "Command"

            def receiving(name, body, *, checked=False):
                with m.State(name):
                    m.d.comb += rx.ready.eq(rx_seen)
                    if checked:
                        m.d.comb += crc_checked.eq(1)
                    with m.If(got):
                        m.d.sync += idle.eq(self._timeout // 2 - 1)
                        body()
                    with m.Elif(idle[-1]):
                        reply(Status.TIMEOUT)
                    with m.Else():
                        m.d.sync += idle.eq(idle - 1)

            def on_command():
                m.d.sync += [command.eq(byte[:2]), known.eq(byte[2:] == 0)]
                m.next = "LengthLow"

            def on_length_low():
                m.d.sync += remaining[:8].eq(byte)
                m.next = "LengthHigh"

            def on_length_high():
                m.d.sync += remaining[8:].eq(byte)
                m.next = "Length"

            def on_payload():
                m.d.sync += remaining.eq(next_remaining)
                with m.If(ptr_full):
                    m.d.sync += overflow.eq(1)
                with m.Else():
                    m.d.comb += buffer_write.en.eq(1)
                    m.d.sync += ptr.eq(ptr + 1)
                with m.If(remaining_1):
                    m.next = "CrcLow"

            def on_crc_low():
                m.d.sync += crc_low_ok.eq(byte == crc[:8])
                m.next = "CrcHigh"

            def on_crc_high():
                m.d.sync += crc_high_ok.eq(byte == crc[8:])
                m.next = "CrcCheck"

            receiving("Command", on_command, checked=True)
            receiving("LengthLow", on_length_low, checked=True)
            receiving("LengthHigh", on_length_high, checked=True)
            receiving("Payload", on_payload, checked=True)
            receiving("CrcLow", on_crc_low)
            receiving("CrcHigh", on_crc_high)

            with m.State("Length"):
                with m.If(remaining_0):
                    m.next = "CrcLow"
                with m.Else():
                    m.next = "Payload"

            with m.State("CrcCheck"):
                with m.If(crc_low_ok & crc_high_ok):
                    m.next = "Check"
                with m.Else():
                    reply(Status.BAD_CRC)

            # The payload's length is `ptr` from here on, unless it overflowed.
            def load():
                m.d.sync += [remaining.eq(ptr), ptr.eq(0)]
                m.next = "LoadRead"

            with m.State("Check"):
                with m.If(overflow):
                    reply(Status.OVERFLOW)
                with m.Elif(~known):
                    reply(Status.UNKNOWN_COMMAND)
                with m.Elif(command == Command.IDENT):
                    with m.If(ptr_ident):
                        m.d.sync += is_ident.eq(1)
                        set_address(1)
                        reply(Status.OK, length=16)
                    with m.Else():
                        reply(Status.BAD_LENGTH)
                with m.Elif(command == Command.WRITE):
                    with m.If(ptr_write):
                        load()
                    with m.Else():
                        reply(Status.BAD_LENGTH)
                with m.Elif(command == Command.READ):
                    with m.If(ptr_read):
                        load()
                    with m.Else():
                        reply(Status.BAD_LENGTH)
                with m.Else():  # RUN
                    with m.If(ptr_run):
                        load()
                    with m.Else():
                        reply(Status.BAD_LENGTH)

            # Load the buffered payload a byte at a time into `word`. After each word:
            # WRITE and READ take the first as the address, WRITE writes the others.
            with m.State("LoadRead"):
                m.d.sync += [buffered.eq(buffer_read.data), ptr.eq(ptr + 1),
                             remaining.eq(next_remaining)]
                m.next = "LoadShift"
            with m.State("LoadShift"):
                m.d.sync += word.eq(Cat(word[8:], buffered))
                with m.If(ptr_word_start):
                    m.next = "LoadWord"
                with m.Elif(remaining_0):
                    m.next = "Loaded"
                with m.Else():
                    m.next = "LoadRead"
            with m.State("LoadWord"):
                with m.If((command != Command.RUN) & ~have_address):
                    m.d.sync += have_address.eq(1)
                    set_address(0)
                with m.Elif(command == Command.WRITE):
                    m.d.comb += write_word.eq(1)
                with m.If(remaining_0):
                    m.next = "Loaded"
                with m.Else():
                    m.next = "LoadRead"
            with m.State("Loaded"):
                with m.If(command == Command.WRITE):
                    reply(Status.OK)
                with m.Elif(command == Command.READ):
                    with m.If(count_ok):
                        reply(Status.OK, length=Cat(Const(0, 2), word[16:]))
                    with m.Else():
                        reply(Status.BAD_LENGTH)
                with m.Else():  # RUN: `word` is the CONTROL word, `bus_address` still 0
                    m.d.comb += write_word.eq(1)
                    m.next = "RunLaunched"

            with m.State("RunLaunched"):   # the core takes the CONTROL word, clears `done`
                m.next = "RunWait"
            with m.State("RunWait"):
                with m.If(self.done):
                    set_address(2)
                    reply(Status.OK, length=4)

            with m.State("ReplyStart"):
                m.d.sync += crc.eq(0xFFFF)
                emit(REPLY_SYNC, "ReplyStatus", update_crc=False)
            with m.State("ReplyStatus"):
                emit(status, "ReplyLengthLow")
            with m.State("ReplyLengthLow"):
                emit(remaining[:8], "ReplyLengthHigh")
            with m.State("ReplyLengthHigh"):
                with m.If(remaining_0):
                    emit(remaining[8:], "ReplyCrcLow")
                with m.Else():
                    emit(remaining[8:], "ReplyFetch")
            with m.State("ReplyFetch"):
                m.d.comb += read_word.eq(1)
                m.next = "ReplyTake"      # two cycles on: `r_data` a cycle after `r_en`
            with m.State("ReplyTake"):
                last_ident = is_ident & remaining_4
                m.d.sync += word.eq(Mux(last_ident, MAX_WORDS, self.bus.r_data))
                m.next = "ReplyWord"
            with m.State("ReplyWord"):
                m.d.comb += [send_byte.eq(word[:8]), counted.eq(1)]
                with m.If(tx_free):
                    m.d.comb += send.eq(1)
                    m.d.sync += [word.eq(word >> 8), remaining.eq(next_remaining)]
                    with m.If(remaining_1):
                        m.next = "ReplyCrcLow"
                    with m.Elif(remaining_word_end):
                        m.next = "ReplyFetch"
            with m.State("ReplyCrcLow"):
                emit(crc[:8], "ReplyCrcHigh", update_crc=False)
            with m.State("ReplyCrcHigh"):
                emit(crc[8:], "Sync", update_crc=False)
        # One flip-flop a state: yosys does not recode a state register that has an
        # initial value by itself (it warns that the initial value is ignored: the
        # domain's reset puts the recoded register in its first state all the same).
        fsm.state.attrs["fsm_encoding"] = "one-hot"
        return m
