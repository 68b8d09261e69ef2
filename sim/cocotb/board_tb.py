"""cocotb test: a bus script through a board top-level's UART pins.

The script (``$SD_HW_SCRIPT``) becomes protocol requests
(:class:`sim.host.link.LinkSession`), the same bytes a host sends to the
board over its serial port; they are driven onto the top-level's ``rx``
pin, the replies read from its ``tx`` pin, and the words read written as
JSON to ``$SD_HW_RESULTS``, with the ``transcript``: every request and its
reply, as hex. ``$SD_HW_DIVISOR`` is the top-level's clock
cycles per UART bit. ``$SD_HW_RAW`` (optional) names a JSON list of raw
request frames (hex) to send first, each answered by one reply whose
status is recorded under the tag ``raw`` (malformed-frame tests).
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.triggers import with_timeout

from sd_hw.link import protocol
from sim.cocotb.clocking import CLOCK_PERIOD_NS, start_clock_and_reset
from sim.cocotb.uart import UARTSink, UARTSource
from sim.host.link import LinkSession
from sim.host.script import BusScript


async def receive_reply(sink, timeout_ns):
    header = [await with_timeout(sink.bytes.get(), timeout_ns, "ns") for _ in range(4)]
    _, length = protocol.parse_reply_header(bytes(header))
    rest = [await with_timeout(sink.bytes.get(), 1_000_000_000, "ns") for _ in range(length + 2)]
    return bytes(header), bytes(rest)


@cocotb.test()
async def run_script(dut):
    divisor = int(os.environ["SD_HW_DIVISOR"])
    byte_ns = 12 * divisor * CLOCK_PERIOD_NS
    await start_clock_and_reset(dut, impl="gpi")
    source = UARTSource(dut.rx, divisor)
    sink = UARTSink(dut.tx, divisor)
    cocotb.start_soon(sink.run())
    results = {}
    raw = os.environ.get("SD_HW_RAW")
    if raw:
        for frame in json.loads(Path(raw).read_text()):
            await source.send(bytes.fromhex(frame))
            header, rest = await receive_reply(sink, (len(frame) // 2 + 2000) * byte_ns)
            status, _ = protocol.parse_reply_header(header)
            results.setdefault("raw", []).append(status)
    session = LinkSession()
    script = BusScript.load(os.environ["SD_HW_SCRIPT"])
    transcript = []
    for request in session.requests(script):
        await source.send(request.frame)
        timeout = (len(request.frame) + 4 * request.count + 64) * byte_ns \
            + 2 * request.max_cycles * CLOCK_PERIOD_NS
        header, rest = await receive_reply(sink, timeout)
        transcript.append([request.frame.hex(), (header + rest).hex()])
        session.accept(request, protocol.check_reply(header, rest))
    results.update(session.words)
    results["transcript"] = transcript
    results["framing_errors"] = [sink.framing_errors]
    Path(os.environ["SD_HW_RESULTS"]).write_text(json.dumps(results))
