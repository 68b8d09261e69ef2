"""Formal proofs of properties the design and the synthesis rely on (sim/formal.py).

yosys's SMT flow with the Z3 solver: bounded model checking from the initial
state, then k-induction, which together prove a property for all time
("proven"); where induction is not conclusive the result is a bounded proof
("bounded": no counterexample within the depth), and the test says so. Every
property has a negative control: a deliberately broken variant the proof
must reject with a counterexample.

* The stream rules of every output stream of the datapath blocks, given that
  their input streams follow them (assumed).
* The rebuild of the element-serial lanes (MacLaneArray) equals the sum of
  the shifted basis entries for every code and every basis entry.
* No read and write of one address of a basis memory in the same cycle (what
  its ``no_rw_check`` attribute and the boards' ``-no-rw-check`` rely on).
"""

import pytest
from amaranth.hdl import Assert, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.basis_engine import BasisEngine
from sd_hw.datapath.coefficient_decoder import CoefficientDecoder
from sd_hw.datapath.layouts import row_layout
from sd_hw.datapath.mac_lanes import MAC_WEIGHT_BITS, MacLaneArray, basis_column_layout
from sd_hw.datapath.shift_accumulate import ShiftAccumulateArray, ShiftAccumulatePE
from sd_hw.serial.config import SerialConfig
from sd_hw.serial.core import SerialCore
from sd_hw.serial.element_issuer import ElementIssuer
from sim.formal import prove, stream_rules
from sim.streams import _component_streams


def ports_of(component):
    return [Value.cast(value) for _, _, value in component.signature.flatten(component)]


def stream_harness(dut):
    """``dut`` with the stream rules asserted on its output streams and assumed on
    its input streams; returns the harness and its free inputs."""
    m = Module()
    m.submodules.dut = dut
    for path, interface in _component_streams(dut, dut.signature, ()):
        inward = dut.signature.members[path[0]].flow == In
        stream_rules(m, interface, assume=inward, name="_".join(map(str, path)))
    return m, ports_of(dut)


# (a) Stream rules of the datapath blocks. -------------------------------------------

BLOCKS = [
    ("decoder-default", lambda: CoefficientDecoder(AcceleratorConfig())),
    ("decoder-one-word-bitmap", lambda: CoefficientDecoder(
        AcceleratorConfig(stream_bits=8, code_bits=1, block_rows=8))),
    ("decoder-narrow-words", lambda: CoefficientDecoder(
        AcceleratorConfig(stream_bits=8, code_bits=3, block_rows=33))),
    ("pe-rebuild", lambda: ShiftAccumulatePE(AcceleratorConfig(dataflow="rebuild"))),
    ("pe-factored", lambda: ShiftAccumulatePE(AcceleratorConfig(dataflow="factored"))),
    ("array-factored", lambda: ShiftAccumulateArray(
        AcceleratorConfig(dataflow="factored", lanes=2))),
    ("basis-engine-rebuild", lambda: BasisEngine(AcceleratorConfig(dataflow="rebuild"))),
    ("basis-engine-factored", lambda: BasisEngine(
        AcceleratorConfig(dataflow="factored", lanes=2))),
]


@pytest.mark.parametrize("make", [make for _, make in BLOCKS], ids=[n for n, _ in BLOCKS])
def test_datapath_outputs_keep_the_stream_rules(make, tmp_path):
    harness, ports = stream_harness(make())
    result = prove(harness, ports, depth=4, work_dir=tmp_path)
    assert result.proven, result.log


class Withdrawing(wiring.Component):
    """A deliberately broken producer: a PE's ``weights`` whose offer is withdrawn
    in the second cycle it waits for ``ready``."""

    def __init__(self, config):
        self.pe = ShiftAccumulatePE(config)
        pe = self.pe.signature.members
        super().__init__({"basis": pe["basis"], "rows": pe["rows"], "weights": pe["weights"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = self.pe
        wiring.connect(m, wiring.flipped(self.basis), self.pe.basis)
        wiring.connect(m, wiring.flipped(self.rows), self.pe.rows)
        waited = Signal()
        m.d.sync += waited.eq(self.pe.weights.valid & ~self.weights.ready)
        m.d.comb += [self.weights.payload.eq(self.pe.weights.payload),
                     self.weights.valid.eq(self.pe.weights.valid & ~waited),
                     self.pe.weights.ready.eq(self.weights.ready)]
        return m


def test_stream_rule_proof_negative_control(tmp_path):
    harness, ports = stream_harness(Withdrawing(AcceleratorConfig(dataflow="rebuild")))
    result = prove(harness, ports, depth=6, work_dir=tmp_path)
    assert result.status == "failed"
    assert any("sim/formal.py" in where for where in result.failed), result.failed


# (c) The serial lanes' rebuild equals the sum of shifted basis entries. --------------

def rebuild_harness(config, *, break_sign=False):
    """MacLaneArray's one-element rebuild against a direct sum, for all inputs.

    The rebuild registers its shifted terms: its output belongs to the inputs of
    the cycle before, which the harness keeps (reset-less, like the terms).
    """
    m = Module()
    row = Signal(row_layout(config))
    column = Signal(basis_column_layout(config))
    fed = Signal(row_layout(config))
    m.d.comb += fed.eq(row)
    if break_sign:
        m.d.comb += fed.coefficients[2].negative.eq(0)
    # The method needs no state of the array (it builds into ``m``).
    weight = MacLaneArray._rebuild(None, m, fed, column, 0)
    last_row = Signal(row_layout(config), reset_less=True)
    last_column = Signal(basis_column_layout(config), reset_less=True)
    m.d.sync += [last_row.eq(row), last_column.eq(column)]
    wide = signed(MAC_WEIGHT_BITS + 2 ** config.code_bits + config.basis_bits)
    expected = Signal(wide)
    terms = []
    for j in range(3):
        code = last_row.coefficients[j]
        shifted = last_column[j].as_signed() << code.exponent
        terms.append(Mux(last_row.present[j], Mux(code.negative, -shifted, shifted), 0))
    m.d.comb += expected.eq(terms[0] + terms[1] + terms[2])
    m.d.comb += Assert(weight == expected[:MAC_WEIGHT_BITS].as_signed(),
                       "rebuilt weight is the sum of shifted basis entries")
    return m, [Value.cast(row), Value.cast(column)]


@pytest.mark.parametrize("overrides", [
    {"code_bits": 2, "basis_bits": 6},
    pytest.param({}, marks=[pytest.mark.slow, pytest.mark.duration(190)]),
], ids=["narrow", "default"])
def test_serial_rebuild_is_the_sum_of_shifted_basis_entries(overrides, tmp_path):
    """Every register of the rebuild is loaded in every cycle, so one induction step
    (any state, any inputs) is the whole equivalence."""
    harness, ports = rebuild_harness(AcceleratorConfig(**overrides))
    result = prove(harness, ports, depth=1, work_dir=tmp_path)
    assert result.proven, result.log


def test_serial_rebuild_proof_negative_control(tmp_path):
    """A rebuild fed the third coefficient's sign as always positive is rejected."""
    harness, ports = rebuild_harness(AcceleratorConfig(), break_sign=True)
    result = prove(harness, ports, depth=2, induction=False, work_dir=tmp_path)
    assert result.status == "failed"
    assert any("test_formal.py" in where for where in result.failed), result.failed


# (b) No read and write of one basis-memory word in the same cycle. -------------------

def test_issuer_reads_bases_only_while_busy(tmp_path):
    """The core's host writes a basis memory only while the core is idle (its write
    enable is gated by the sequencer's ``busy``); the issuer, the only reader,
    reads only while busy. Bounded: k-induction is not conclusive here (the
    issuer's internal invariants, e.g. ``active`` implies ``loaded``, are not
    stated), so the depth bounds the proof."""
    dut = ElementIssuer(AcceleratorConfig(lanes=2), basis_addr_width=4, activation_addr_width=6)
    m = Module()
    m.submodules.issuer = dut
    m.d.comb += Assert(~dut.basis_read.en | dut.busy, "basis reads only while busy")
    result = prove(m, ports_of(dut), depth=12, work_dir=tmp_path)
    assert result.status in ("proven", "bounded"), result.log


def test_issuer_proof_negative_control(tmp_path):
    """The same property with the host's write added as a read makes it fail: a read
    while idle is found."""
    dut = ElementIssuer(AcceleratorConfig(lanes=2), basis_addr_width=4, activation_addr_width=6)
    m = Module()
    m.submodules.issuer = dut
    host_read = Signal()
    m.d.comb += Assert(~(dut.basis_read.en | host_read) | dut.busy, "basis reads only while busy")
    result = prove(m, [*ports_of(dut), host_read], depth=4, work_dir=tmp_path)
    assert result.status == "failed"


def serial_basis_harness(*, host_writes_while_busy=False):
    """A small SerialCore whose lanes' basis memories are watched: no cycle reads and
    writes one word. ``host_writes_while_busy`` is the negative control: a second
    write port, like the host's but not gated by ``busy``."""
    from amaranth.hdl import Elaboratable, Fragment
    core = SerialCore(SerialConfig(datapath=AcceleratorConfig(lanes=1, block_rows=4),
                                   bank_depth=64, activation_bytes=64, basis_depth=2,
                                   param_depth=4, output_depth=2, program_depth=8))
    fragment = Fragment.get(core, None)
    units = {}

    def walk(fragment):
        for origin in fragment.origins or ():
            units.setdefault(type(origin).__name__, origin)
        for subfragment, _, _ in fragment.subfragments:
            walk(subfragment)
    walk(fragment)

    class Elaborated(Elaboratable):
        def elaborate(self, platform):
            return fragment

    m = Module()
    m.submodules.core = Elaborated()
    array, issuer = units["MacLaneArray"], units["ElementIssuer"]
    write, read = array.basis_write, array.basis_read
    write_en, write_addr = write.en, write.addr
    extra = []
    if host_writes_while_busy:
        write_en, write_addr = Signal(), Signal(len(write.addr))
        extra = [write_en, write_addr]
    m.d.comb += Assert(~(write_en & read.en & (write_addr == read.basis * 4 + read.column)),
                       "no read and write of one basis word in a cycle")
    return m, [*ports_of(core), *extra]


@pytest.mark.slow
@pytest.mark.duration(160)
def test_serial_core_never_reads_and_writes_one_basis_word(tmp_path):
    """Bounded: 20 cycles from reset with every host bus input free (the host may
    write memories and start a run in that time)."""
    harness, ports = serial_basis_harness()
    result = prove(harness, ports, depth=20, induction=False, work_dir=tmp_path)
    assert result.status == "bounded", result.log


def test_serial_core_basis_proof_negative_control(tmp_path):
    harness, ports = serial_basis_harness(host_writes_while_busy=True)
    result = prove(harness, ports, depth=12, induction=False, work_dir=tmp_path)
    assert result.status == "failed"
