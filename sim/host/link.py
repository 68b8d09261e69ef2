"""A bus script over the framed UART protocol (:mod:`sd_hw.link.protocol`).

:class:`LinkSession` turns the steps of a :class:`~sim.host.script.BusScript`
into protocol requests and the replies into the words read, by tag. Every
transport that speaks the protocol uses it: :class:`SerialTransport` over a
real serial port here, and the simulated board of :mod:`sim.cocotb.board_tb`
over the board top-level's UART pins in a simulator.
"""

import struct
from dataclasses import dataclass

from sd_hw.link import protocol
from sim.host.script import ScriptError


__all__ = ["Request", "LinkSession", "SerialTransport", "run_seconds", "SLOWEST_CLOCK_HZ"]

#: The slowest clock a supported board's PLL makes (an ECP5 EHXPLLL's lowest
#: output): a RUN's timeout assumes it unless told the board's clock, so it
#: never assumes a faster clock than the bitstream's.
SLOWEST_CLOCK_HZ = 3_125_000


@dataclass(frozen=True)
class Request:
    frame: bytes
    kind: str          # "write", "read", "run" or "ident"
    tag: str = None    # reads: where the words go
    count: int = 0     # reads: words expected
    max_cycles: int = 0  # runs: how long the device may take


def run_seconds(max_cycles, clock_hz, baud):
    """How long to wait for a RUN reply: the run itself plus the reply's bytes, doubled."""
    return 2 * (max_cycles / clock_hz + 12 * 10 / baud) + 1.0


class LinkSession:
    """The requests of a script, and the words its replies carry."""

    def __init__(self):
        self.words = {}

    def requests(self, script):
        steps = list(script.steps)
        for position, step in enumerate(steps):
            kind = step[0]
            if kind == "write":
                address, words = step[1], step[2]
                for start in range(0, len(words), protocol.MAX_WORDS):
                    chunk = words[start:start + protocol.MAX_WORDS]
                    yield Request(protocol.write_request(address + start, chunk), "write")
            elif kind == "start":
                following = steps[position + 1] if position + 1 < len(steps) else None
                if following is None or following[0] != "wait":
                    raise ScriptError("over the UART link a start must be followed by a wait")
                yield Request(protocol.run_request(step[1], step[2]), "run",
                              max_cycles=following[1])
            elif kind == "wait":
                continue  # the RUN reply comes when the run has ended
            elif kind == "read":
                address, count, tag = step[1], step[2], step[3]
                for start in range(0, count, protocol.MAX_READ_WORDS):
                    chunk = min(protocol.MAX_READ_WORDS, count - start)
                    yield Request(protocol.read_request(address + start, chunk), "read", tag,
                                  chunk)
            elif kind == "cycle":
                raise ScriptError("a board has no cycle count to read; use the cycles counter")
            else:
                raise ScriptError(f"unknown script step {step!r}")

    def accept(self, request, payload):
        """Take the payload of the reply to ``request``."""
        if request.kind == "read":
            if len(payload) != 4 * request.count:
                raise protocol.ProtocolError(f"READ of {request.count} words answered with "
                                             f"{len(payload)} bytes")
            self.words.setdefault(request.tag, []).extend(
                struct.unpack(f"<{request.count}I", payload))
        elif request.kind == "run" and len(payload) != 4:
            raise protocol.ProtocolError(f"RUN answered with {len(payload)} bytes, not 4")


class SerialTransport:
    """The protocol over a serial port (pyserial), for a board running the bitstream.

    ``clock_hz`` serves only to bound how long a RUN may take (:func:`run_seconds`):
    a lower bound of the board's clock, never more than its bitstream's.
    """

    def __init__(self, port, *, baud=115200, clock_hz=SLOWEST_CLOCK_HZ, timeout=2.0,
                 serial=None):
        if serial is None:
            import serial as pyserial
            try:
                serial = pyserial.Serial(port, baud, timeout=timeout)
            except (pyserial.SerialException, OSError) as error:
                from sd_hw.errors import SdHwError
                raise SdHwError(f"{port}: cannot open the serial port ({error}); is the "
                                f"board connected and the bitstream loaded?") from None
        self._serial = serial
        self._baud = baud
        self._clock_hz = clock_hz
        self._timeout = timeout

    def close(self):
        self._serial.close()

    def _exchange(self, frame, timeout):
        self._serial.timeout = timeout
        self._serial.write(frame)
        header = self._serial.read(4)
        if len(header) < 4:
            raise protocol.ProtocolError(f"no reply from the board within {timeout:.1f} s "
                                         f"(got {len(header)} bytes)")
        _, length = protocol.parse_reply_header(header)
        rest = self._serial.read(length + 2)
        return protocol.check_reply(header, rest)

    def ident(self):
        payload = self._exchange(protocol.request(protocol.Command.IDENT), self._timeout)
        return struct.unpack("<4I", payload)

    def execute(self, script):
        session = LinkSession()
        for request in session.requests(script):
            timeout = self._timeout
            if request.kind == "run":
                timeout = max(timeout, run_seconds(request.max_cycles, self._clock_hz, self._baud))
            session.accept(request, self._exchange(request.frame, timeout))
        return session.words
