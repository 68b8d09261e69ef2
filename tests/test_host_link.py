# amaranth: UnusedElaboratable=no
# (test_divisor_is_validated builds a receiver whose constructor refuses its divisor.)
"""The UART and the framed host protocol, in Amaranth's simulator.

The link is driven with the bytes :mod:`sd_hw.link.protocol` builds (the
same a host sends); every reply is checked with the protocol's own CRC and
parser. Malformed requests must each get their error status, change
nothing, and leave the link ready for the next request.
"""

import random
import struct

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from sd_hw.compiler import compile_network
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.core.core import SDCore
from sd_hw.core.host_map import COUNTER_BASE, IDENT, Register, Space, address
from sd_hw.link import protocol
from sd_hw.link.host_link import HostLink
from sd_hw.link.protocol import Command, Status
from sd_hw.link.uart import UARTReceiver, UARTTransmitter
from sd_hw.errors import ParameterError
from sim.golden.reference import run
from sim.host import runtime
from sim.host.link import LinkSession
from sim.host.script import BusScript
from sim.streams import checked_simulator, stream_get, stream_put

from factories import hardware_network

CONFIG = CoreConfig(datapath=AcceleratorConfig(lanes=1), activation_depth=256, weight_depth=256,
                    basis_depth=64, index_depth=128, param_depth=64, output_depth=16,
                    program_depth=32)
TIMEOUT = 200


class LinkedCore(wiring.Component):
    """The link on the core's bus, byte streams outside (no UART)."""

    def __init__(self):
        self.link = HostLink(timeout_cycles=TIMEOUT)
        super().__init__({"rx": wiring.In(self.link.rx.signature.flip()),
                          "tx": wiring.Out(self.link.tx.signature.flip().flip())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = self.link
        m.submodules.core = core = SDCore(CONFIG)
        wiring.connect(m, self.link.bus, core.host)
        wiring.connect(m, wiring.flipped(self.rx), self.link.rx)
        wiring.connect(m, self.link.tx, wiring.flipped(self.tx))
        m.d.comb += self.link.done.eq(core.done)
        return m


def exchange(frames, *, pause_after=None, max_cycles=200000):
    """Send each frame and collect one reply per frame: ``[(status, payload)]``.

    ``pause_after``: index of a frame sent only in part (its first half), after
    which the bench waits longer than the link's timeout.
    """
    dut = LinkedCore()
    replies = []

    async def bench(ctx):
        rng = random.Random(1)
        for index, frame in enumerate(frames):
            if index == pause_after:
                await stream_put(ctx, dut.rx, frame[:len(frame) // 2])
                for _ in range(TIMEOUT + 20):
                    await ctx.tick()
            else:
                await stream_put(ctx, dut.rx, frame, stall=0.2, rng=rng)
            header = await stream_get(ctx, dut.tx, 4, stall=0.2, rng=rng)
            status, length = protocol.parse_reply_header(bytes(header))
            rest = await stream_get(ctx, dut.tx, length + 2, stall=0.2, rng=rng)
            body = bytes(header[1:]) + bytes(rest[:length])
            assert struct.unpack("<H", bytes(rest[length:]))[0] == protocol.crc16(body)
            replies.append((status, bytes(rest[:length])))

    async def watchdog(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
        raise AssertionError(f"no complete exchange within {max_cycles} cycles "
                             f"({len(replies)} replies)")

    simulator = checked_simulator(dut)
    simulator.add_clock(1e-6)
    simulator.add_testbench(bench)
    simulator.add_testbench(watchdog, background=True)
    simulator.run()
    assert len(replies) == len(frames), f"{len(replies)} replies to {len(frames)} requests"
    return replies


def words(payload):
    return list(struct.unpack(f"<{len(payload) // 4}I", payload))


ACTIVATIONS = address(Space.ACTIVATIONS, 10)
IDENT_REQUEST = protocol.request(Command.IDENT)


def test_ident():
    ((status, payload),) = exchange([IDENT_REQUEST])
    assert status == Status.OK
    ident, datapath, widths, max_words = words(payload)
    assert ident == IDENT and datapath & 0xFF == 1 and max_words == protocol.MAX_WORDS
    assert widths >> 16 == CONFIG.datapath.block_rows


def test_write_then_read_back():
    values = [5, -3 & 0xFFFFFFFF, 127, -128 & 0xFFFFFFFF]
    replies = exchange([protocol.write_request(ACTIVATIONS, values),
                        protocol.read_request(ACTIVATIONS, 4)])
    assert replies[0] == (Status.OK, b"")
    assert replies[1][0] == Status.OK and words(replies[1][1]) == values


def corrupt_crc(frame):
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


def with_length(command, payload, length):
    """A request whose length field says ``length`` whatever the payload."""
    body = struct.pack("<BH", command, length) + payload
    return bytes([protocol.REQUEST_SYNC]) + body + struct.pack("<H", protocol.crc16(body))


MALFORMED = {
    "bad crc": (corrupt_crc(protocol.write_request(ACTIVATIONS, [99])), Status.BAD_CRC),
    "write without data": (protocol.request(Command.WRITE, struct.pack("<I", ACTIVATIONS)),
                           Status.BAD_LENGTH),
    "write of a partial word": (protocol.request(Command.WRITE, struct.pack("<IH", ACTIVATIONS, 7)),
                                Status.BAD_LENGTH),
    "read of zero words": (protocol.request(Command.READ, struct.pack("<IH", ACTIVATIONS, 0)),
                           Status.BAD_LENGTH),
    "read too long": (protocol.request(Command.READ, struct.pack("<IH", ACTIVATIONS, 5000)),
                      Status.BAD_LENGTH),
    "ident with payload": (protocol.request(Command.IDENT, b"\x00"), Status.BAD_LENGTH),
    "run with a short payload": (protocol.request(Command.RUN, b"\x00\x00"), Status.BAD_LENGTH),
    "unknown command": (protocol.request(0x7F, b"abc"), Status.UNKNOWN_COMMAND),
    "overflow": (protocol.request(Command.WRITE, struct.pack(
        f"<I{protocol.MAX_WORDS + 1}I", ACTIVATIONS, *range(protocol.MAX_WORDS + 1))),
        Status.OVERFLOW),
    "garbage before sync": (b"\x00\x13\x37" + protocol.write_request(ACTIVATIONS, [42]),
                            Status.OK),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_get_an_error_and_change_nothing(name):
    frame, expected = MALFORMED[name]
    replies = exchange([protocol.write_request(ACTIVATIONS, [1]), frame,
                        protocol.read_request(ACTIVATIONS, 1), IDENT_REQUEST])
    assert replies[0][0] == Status.OK
    assert replies[1] == (expected, b"")
    assert words(replies[2][1]) == [42 if name == "garbage before sync" else 1]
    assert replies[3][0] == Status.OK  # still ready


@pytest.mark.parametrize("name", ["bad crc", "read too long", "unknown command"])
def test_an_error_after_a_read_carries_no_payload(name):
    # The reply length of the READ before must not leak into the error reply.
    frame, expected = MALFORMED[name]
    replies = exchange([protocol.read_request(ACTIVATIONS, 3), frame, IDENT_REQUEST])
    assert replies[0][0] == Status.OK and len(replies[0][1]) == 12
    assert replies[1] == (expected, b"")
    assert replies[2][0] == Status.OK


def test_a_request_that_stops_arriving_times_out():
    frame = protocol.write_request(ACTIVATIONS, [7, 8, 9])
    replies = exchange([protocol.write_request(ACTIVATIONS, [1]), frame,
                        protocol.read_request(ACTIVATIONS, 1)], pause_after=1)
    assert [status for status, _ in replies] == [Status.OK, Status.TIMEOUT, Status.OK]
    assert words(replies[2][1]) == [1]


def test_a_length_field_past_the_buffer_is_an_overflow():
    frame = with_length(Command.WRITE, struct.pack("<I", ACTIVATIONS), 4 + 4 * 300)
    replies = exchange([frame, IDENT_REQUEST], pause_after=0)
    assert [status for status, _ in replies] == [Status.TIMEOUT, Status.OK]


def test_a_network_runs_through_the_link():
    """Load a compiled network, run it with RUN, read the outputs: the golden model's."""
    from factories import TINY
    net = hardware_network(TINY, 7, block_rows=4, group=1)
    program = compile_network(net, CONFIG)
    x = np.random.default_rng(7).integers(-128, 128, size=(1, 2, 4, 4)).astype(np.int8)
    script = runtime.load(BusScript(), program)
    runtime.infer(script, program, x[0], tag="x0", max_cycles=100000, layers=False)
    session = LinkSession()
    requests = list(session.requests(script))
    replies = exchange([r.frame for r in requests], max_cycles=400000)
    for request, (status, payload) in zip(requests, replies):
        assert status == Status.OK
        session.accept(request, payload)
    result = runtime.results_of(program, session.words, "x0")
    assert result.done
    assert np.array_equal(result.ops[program.output.index], run(net, x)[0])
    run_reply = replies[[r.kind for r in requests].index("run")][1]
    assert words(run_reply)[0] == result.counters["cycles"] > 0


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_uart_loopback(divisor):
    data = bytes(random.Random(divisor).randrange(256) for _ in range(40))
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor)
    m.submodules.rx = rx = UARTReceiver(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    received = []

    async def sender(ctx):
        await stream_put(ctx, tx.bytes, data, stall=0.3, rng=random.Random(2))

    async def receiver(ctx):
        received.extend(await stream_get(ctx, rx.bytes, len(data)))

    async def watch(ctx):
        async for _, _, framing, overrun in ctx.tick().sample(rx.framing_error, rx.overrun):
            assert not framing and not overrun

    simulator = checked_simulator(m)
    simulator.add_clock(1e-6)
    simulator.add_testbench(sender)
    simulator.add_testbench(receiver)
    simulator.add_testbench(watch, background=True)
    simulator.run()
    assert bytes(received) == data


def test_uart_framing_error_is_reported_and_the_byte_dropped():
    divisor = 8
    m = Module()
    m.submodules.rx = rx = UARTReceiver(divisor)
    seen = {"framing": 0, "bytes": []}

    async def line(ctx):
        def bits(byte, stop):
            return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
        for level in [1] * 20 + bits(0x55, 0) + [0] * 30 + [1] * 20 + bits(0xA3, 1) + [1] * 20:
            ctx.set(rx.rx, level)
            for _ in range(divisor):
                await ctx.tick()

    async def monitor(ctx):
        ctx.set(rx.bytes.ready, 1)
        async for _, _, framing, valid, payload in ctx.tick().sample(
                rx.framing_error, rx.bytes.valid, rx.bytes.payload):
            seen["framing"] += framing
            if valid:
                seen["bytes"].append(payload)

    simulator = checked_simulator(m)
    simulator.add_clock(1e-6)
    simulator.add_testbench(line)
    simulator.add_testbench(monitor, background=True)
    simulator.run()
    assert seen["framing"] == 1 and seen["bytes"] == [0xA3]


def test_divisor_is_validated():
    with pytest.raises(ParameterError, match="'divisor'.*at least 4"):
        UARTReceiver(3)
