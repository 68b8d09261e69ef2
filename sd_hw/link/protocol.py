"""The framed host protocol over a board's UART (docs/host-protocol.md).

One definition, used by the RTL (:mod:`sd_hw.link.host_link`) and by the
host runtime. A request is::

    0xA5 | command (u8) | length (u16) | payload (length bytes) | CRC-16 (u16)

and every request gets one reply::

    0x5A | status (u8) | length (u16) | payload | CRC-16 (u16)

All multi-byte fields are little endian. The CRC is CRC-16/CCITT-FALSE
(polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR) over
everything between the sync byte and the CRC.
"""

import enum
import struct


__all__ = ["REQUEST_SYNC", "REPLY_SYNC", "Command", "Status", "MAX_WORDS", "MAX_READ_WORDS",
           "crc16", "request", "reply", "ProtocolError", "parse_reply_header"]

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
#: Data words one WRITE request may carry (the link buffers a request before acting).
MAX_WORDS = 64
#: Words one READ request may ask for.
MAX_READ_WORDS = 1024


class Command(enum.IntEnum):
    #: Reply: the IDENT, DATAPATH and WIDTHS registers and MAX_WORDS.
    IDENT = 0x00
    #: Payload: address (u32), then 1..MAX_WORDS words (u32) to write from there on.
    WRITE = 0x01
    #: Payload: address (u32), count (u16, 1..MAX_READ_WORDS). Reply: the words.
    READ = 0x02
    #: Payload: first_op (u16), op_count (u16). Replies when the run has ended, with
    #: the cycles counter (u32).
    RUN = 0x03


class Status(enum.IntEnum):
    OK = 0
    #: The CRC did not match: nothing was done.
    BAD_CRC = 1
    #: The payload length does not fit the command.
    BAD_LENGTH = 2
    UNKNOWN_COMMAND = 3
    #: The payload is longer than the link's buffer.
    OVERFLOW = 4
    #: The request stopped arriving halfway; what had arrived was dropped.
    TIMEOUT = 5


class ProtocolError(RuntimeError):
    """A reply that cannot be understood, or that reports an error."""


def crc16(data, crc=0xFFFF):
    for byte in bytes(data):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _frame(sync, code, payload):
    body = struct.pack("<BH", code, len(payload)) + bytes(payload)
    return bytes([sync]) + body + struct.pack("<H", crc16(body))


def request(command, payload=b""):
    """The bytes of a request."""
    return _frame(REQUEST_SYNC, int(command), payload)


def reply(status, payload=b""):
    """The bytes of a reply (what the device sends)."""
    return _frame(REPLY_SYNC, int(status), payload)


def write_request(address, words):
    words = list(words)
    if not 1 <= len(words) <= MAX_WORDS:
        raise ValueError(f"a WRITE carries 1 to {MAX_WORDS} words, not {len(words)}")
    return request(Command.WRITE, struct.pack(f"<I{len(words)}I", address, *words))


def read_request(address, count):
    if not 1 <= count <= MAX_READ_WORDS:
        raise ValueError(f"a READ asks for 1 to {MAX_READ_WORDS} words, not {count}")
    return request(Command.READ, struct.pack("<IH", address, count))


def run_request(first_op, op_count):
    return request(Command.RUN, struct.pack("<HH", first_op, op_count))


def parse_reply_header(header):
    """``(status, length)`` of a reply's first four bytes."""
    if len(header) != 4 or header[0] != REPLY_SYNC:
        raise ProtocolError(f"expected a reply starting with 0x{REPLY_SYNC:02X}, got "
                            f"{bytes(header).hex(' ') or 'nothing'}")
    status, length = struct.unpack("<BH", bytes(header[1:]))
    return status, length


def check_reply(header, rest):
    """The payload of a complete reply (header: 4 bytes, rest: payload and CRC)."""
    status, length = parse_reply_header(header)
    if len(rest) != length + 2:
        raise ProtocolError(f"reply ended after {len(rest)} of {length + 2} bytes")
    body = bytes(header[1:]) + bytes(rest[:length])
    (crc,) = struct.unpack("<H", bytes(rest[length:]))
    if crc != crc16(body):
        raise ProtocolError(f"reply CRC is 0x{crc:04X}, expected 0x{crc16(body):04X}")
    if status != Status.OK:
        name = Status(status).name if status in Status._value2member_map_ else str(status)
        raise ProtocolError(f"the device answered {name}")
    return bytes(rest[:length])
