"""A UART on a simulated board's pins: bytes to its ``rx``, bytes from its ``tx``."""

from cocotb.queue import Queue
from cocotb.triggers import FallingEdge, Timer

from .clocking import CLOCK_PERIOD_NS


__all__ = ["UARTSource", "UARTSink"]


class UARTSource:
    """Drives 8N1 bytes onto ``pin``, ``divisor`` clock periods per bit."""

    def __init__(self, pin, divisor):
        self.pin = pin
        self.bit = Timer(divisor * CLOCK_PERIOD_NS, unit="ns")
        pin.value = 1

    async def send(self, data):
        for byte in bytes(data):
            for level in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                self.pin.value = level
                await self.bit


class UARTSink:
    """Receives 8N1 bytes from ``pin`` into :attr:`bytes` (a queue), sampling mid-bit."""

    def __init__(self, pin, divisor):
        self.pin = pin
        self.divisor = divisor
        self.bytes = Queue()
        self.framing_errors = 0

    async def run(self):
        bit = Timer(self.divisor * CLOCK_PERIOD_NS, unit="ns")
        half = Timer(self.divisor * CLOCK_PERIOD_NS // 2, unit="ns")
        while True:
            await FallingEdge(self.pin)
            await half
            if str(self.pin.value) != "0":
                continue  # a glitch
            value = 0
            for i in range(8):
                await bit
                value |= int(str(self.pin.value) == "1") << i
            await bit
            if str(self.pin.value) != "1":
                self.framing_errors += 1
            self.bytes.put_nowait(value)
