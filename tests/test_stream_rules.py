"""The stream rule checker of the Amaranth-simulator tests (sim/streams.py).

Every block and system test simulates through :func:`sim.streams.checked_simulator`,
which watches every stream of every component in the design. Here: the
checker finds the streams nested inside a core, passes a producer that keeps
the rules under random back-pressure, and fails one that drops ``valid`` or
changes its payload before ``ready`` (the negative controls).
"""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.core.core import SDCore
from sd_hw.serial.config import SerialConfig
from sd_hw.serial.core import SerialCore
from sim.streams import StreamRuleError, checked_simulator, design_streams, stream_get


class CountingSource(wiring.Component):
    """Sends 0, 1, 2, ... on ``out``; ``fault`` picks a deliberate rule break:
    ``"drop"`` withdraws an offer ``ready`` has not taken, ``"change"`` replaces it."""

    out: Out(stream.Signature(8))

    def __init__(self, fault=None):
        self.fault = fault
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        waited = Signal()
        m.d.comb += self.out.valid.eq(1)
        if self.fault == "drop":
            m.d.comb += self.out.valid.eq(~waited)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [self.out.payload.eq(self.out.payload + 1), waited.eq(0)]
        with m.Elif(self.out.valid):
            m.d.sync += waited.eq(1)
            if self.fault == "change":
                m.d.sync += self.out.payload.eq(self.out.payload + 7)
        with m.If(waited & ~self.out.valid):
            m.d.sync += waited.eq(0)
        return m


def run_source(fault, *, stall=0.5, count=40):
    dut = CountingSource(fault)
    received = []

    async def testbench(ctx):
        received.extend(await stream_get(ctx, dut.out, count, stall=stall,
                                         rng=random.Random(3)))

    sim = checked_simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return received


def test_rule_keeping_source_passes_under_back_pressure():
    assert run_source(None) == list(range(40))


@pytest.mark.parametrize("fault, message", [
    ("drop", r"stream top\.out: valid fell in cycle \d+ before ready took the payload"),
    ("change", r"stream top\.out: payload changed from 0x\w+ to 0x\w+ in cycle \d+"),
])
def test_rule_breaking_source_fails(fault, message):
    """Negative controls: the same source with a deliberate fault fails the simulation."""
    with pytest.raises(StreamRuleError, match=message):
        run_source(fault)


def test_without_back_pressure_a_faulty_source_breaks_no_rule():
    """The faults only act on an offer that waits: with ready always high, none."""
    assert run_source("drop", stall=0.0) == list(range(40))


@pytest.mark.parametrize("kind", ["sd_core", "serial_core"])
def test_every_stream_inside_a_core_is_found(kind):
    datapath = AcceleratorConfig(lanes=2)
    if kind == "sd_core":
        core = SDCore(CoreConfig(datapath=datapath))
    else:
        core = SerialCore(SerialConfig(datapath=datapath, bank_depth=1024,
                                       activation_bytes=1024, basis_depth=16, param_depth=64,
                                       output_depth=16, program_depth=64))
    _, streams = design_streams(core)
    names = {name for name, _, _ in streams}
    if isinstance(core, SDCore):
        expected = {"top.decoder0.rows", "top.decoder0.words", "top.decoder1.rows",
                    "top.issuer.commands", "top.lanes.weights[1]", "top.lanes.pe1.weights",
                    "top.basis_engine.sums[0]", "top.issuer.reader.words"}
    else:
        expected = {"top.record_reader.headers", "top.element_issuer.headers",
                    "top.element_issuer.elements"}
    assert expected <= names, sorted(names)
