"""cocotb drivers for the valid/ready streams of generated Verilog.

A stream named ``words`` in a block's signature becomes the ports
``words__valid``, ``words__ready`` and ``words__payload``.
:class:`StreamDriver` feeds a sink stream of the block, :class:`StreamMonitor`
drains a source stream; both stall at random so that every block is tested
under bubbles and back-pressure.

:class:`StreamRuleChecker` watches any stream and fails the test when its
producer breaks the stream rules (drops ``valid`` or changes the payload
before ``ready`` took it).

Timing: all act once per clock cycle, at the falling edge (outputs change),
then look at the settled signals in the read-only phase before the next
rising edge. A transfer is counted when ``valid`` and ``ready`` are both high
there, which is exactly when the rising edge transfers it, on Icarus and
Verilator alike.
"""

import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly


__all__ = ["StreamDriver", "StreamMonitor", "StreamRuleChecker", "StreamRuleError"]


def _high(handle):
    return str(handle.value) == "1"


class _Stream:
    def __init__(self, dut, prefix, *, codec=None, port_map=None, clock=None,
                 stall=0.0, rng=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clock = clock if clock is not None else dut.clk
        if codec is None and port_map is not None:
            codec = port_map.codec(prefix)
        self.codec = codec
        self.stall = stall
        self.rng = rng or random.Random(prefix)
        self.prefix = prefix

    def _stalls(self):
        return bool(self.stall) and self.rng.random() < self.stall


class StreamDriver(_Stream):
    """Drives ``valid`` and ``payload`` of a sink stream of the DUT.

    ``codec`` (or ``port_map``, a :class:`~sim.cocotb.PortMap`) packs the
    payloads; without either, payloads are raw ints. With ``stall`` > 0,
    ``valid`` is withheld for that fraction of cycles. ``break_rules`` makes it
    a faulty producer for negative controls: while ``ready`` is low it drops
    ``valid`` for a cycle.
    """

    def __init__(self, dut, prefix, *, break_rules=False, **kwargs):
        super().__init__(dut, prefix, **kwargs)
        self.valid.value = 0
        self.sent = 0
        self.break_rules = break_rules

    async def send(self, payloads):
        """Send every payload; returns once the last one was accepted."""
        for payload in payloads:
            raw = self.codec.pack(payload) if self.codec else int(payload)
            await FallingEdge(self.clock)
            while self._stalls():
                self.valid.value = 0
                await FallingEdge(self.clock)
            self.valid.value = 1
            self.payload.value = raw
            await ReadOnly()
            while not _high(self.ready):
                await FallingEdge(self.clock)
                if self.break_rules:
                    self.valid.value = 0
                    await FallingEdge(self.clock)
                    self.valid.value = 1
                await ReadOnly()
            self.sent += 1
        await FallingEdge(self.clock)
        self.valid.value = 0


class StreamMonitor(_Stream):
    """Drives ``ready`` of a source stream of the DUT and collects its payloads.

    Payloads are unpacked with ``codec`` (or ``port_map``) into nested ints,
    signed fields sign-extended; without either they are raw unsigned ints.
    With ``stall`` > 0, ``ready`` is withheld for that fraction of cycles.
    """

    def __init__(self, dut, prefix, **kwargs):
        super().__init__(dut, prefix, **kwargs)
        self.ready.value = 0

    async def receive(self, count, *, timeout_cycles=None):
        """Collect ``count`` payloads; fail after ``timeout_cycles`` cycles without them."""
        received, cycles = [], 0
        while len(received) < count:
            if timeout_cycles is not None and cycles >= timeout_cycles:
                raise AssertionError(f"{self.prefix}: {len(received)} of {count} payloads "
                                     f"after {cycles} cycles")
            await FallingEdge(self.clock)
            cycles += 1
            ready = not self._stalls()
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and _high(self.valid):
                raw = self.payload.value.to_unsigned()
                received.append(self.codec.unpack(raw) if self.codec else raw)
        await FallingEdge(self.clock)
        self.ready.value = 0
        return received

    async def expect_idle(self, cycles):
        """Hold ``ready`` high for ``cycles`` cycles and fail if anything is sent."""
        for _ in range(cycles):
            await FallingEdge(self.clock)
            self.ready.value = 1
            await ReadOnly()
            if _high(self.valid):
                raise AssertionError(f"{self.prefix}: unexpected payload "
                                     f"{self.payload.value.to_unsigned():#x}")
        await FallingEdge(self.clock)
        self.ready.value = 0


class StreamRuleError(AssertionError):
    """A producer dropped ``valid`` or changed the payload before ``ready``."""


class StreamRuleChecker:
    """Fails the test when stream ``prefix`` of ``dut`` breaks the stream rules.

    Once per cycle, where transfers are judged (see the module doc), it
    remembers an offer that ``ready`` did not take; in the next cycle
    ``valid`` must still be high and the payload the same. :meth:`start`
    begins watching; a violation raises :class:`StreamRuleError` in the
    watching task (failing the test) and is kept in :attr:`violations`.
    """

    def __init__(self, dut, prefix, *, clock=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clock = clock if clock is not None else dut.clk
        self.prefix = prefix
        self.violations = []

    def start(self):
        return cocotb.start_soon(self._watch())

    async def _watch(self):
        held, cycle = None, 0
        while True:
            await FallingEdge(self.clock)
            await ReadOnly()
            valid, ready = _high(self.valid), _high(self.ready)
            payload = str(self.payload.value)
            if held is not None:
                problem = None
                if not valid:
                    problem = f"valid fell in cycle {cycle} before ready took the payload"
                elif payload != held:
                    problem = f"payload changed in cycle {cycle} before ready took it"
                if problem:
                    self.violations.append(problem)
                    raise StreamRuleError(f"stream {self.prefix}: {problem}")
            held = payload if valid and not ready else None
            cycle += 1
