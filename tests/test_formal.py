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
* The SDCore's rebuild PE (ShiftAccumulatePE) emits, for every row it takes, the
  sum of the shifted entries of its active basis, for every code and basis.
* No read and write of one address of any memory of a small SerialCore in the
  same cycle (what the basis memories' ``no_rw_check`` attribute and the boards'
  ``-no-rw-check`` rely on): the core's gating for all time given the units'
  accesses only while busy, those accesses bounded, and a cover trace showing
  that the bound reaches real reads and writes.

docs/formal.md lists every property with its depth and what it leaves out.
"""

import pytest
from amaranth.hdl import (Assert, Assume, Cat, Cover, Elaboratable, Fragment, Module, Mux,
                          Signal, Value, signed)
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.basis_engine import BasisEngine
from sd_hw.datapath.coefficient_decoder import CoefficientDecoder
from sd_hw.datapath.layouts import basis_layout, row_layout
from sd_hw.datapath.mac_lanes import MAC_WEIGHT_BITS, MacLaneArray, basis_column_layout
from sd_hw.datapath.shift_accumulate import ShiftAccumulateArray, ShiftAccumulatePE
from sd_hw.primitives import Mac16, RegisteredReadPort
from sd_hw.serial.config import SerialConfig
from sd_hw.serial.core import SerialCore
from sd_hw.serial.element_issuer import ElementIssuer
from sim.formal import prove, reach, stream_rules
from sim.streams import _component_streams


def ports_of(component):
    return [Value.cast(value) for _, _, value in component.signature.flatten(component)]


def elaborated(component):
    """``component`` elaborated once, as an Elaboratable a harness can hold, and the
    ``(path, object, fragment)`` of every unit it is built from (so that a harness
    can state properties of their ports and internal signals)."""
    fragment = Fragment.get(component, None)
    parts = []

    def walk(fragment, path):
        for origin in fragment.origins or ():
            parts.append((path, origin, fragment))
        for subfragment, name, _ in fragment.subfragments:
            walk(subfragment, (*path, name))
    walk(fragment, ())

    class Elaborated(Elaboratable):
        def elaborate(self, platform):
            return fragment
    return Elaborated(), parts


def internal(fragment, name):
    """The signal called ``name`` that ``fragment``'s own statements drive."""
    for statements in fragment.statements.values():
        for signal in statements._lhs_signals():
            if signal.name == name:
                return signal
    raise LookupError(f"no signal {name!r} in {fragment.origins}")


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


def pe_rebuild_harness(config, *, break_sign=False):
    """The SDCore's rebuild PE (ShiftAccumulatePE, ``rebuild``): every row it takes
    leaves :attr:`~ShiftAccumulatePE.latency` cycles later (``weights`` always ready)
    as the sum of its shifted entries of the active basis bank, for every code and
    every basis. The harness reads the bank (an internal register) when the row is
    taken; loading and swapping the banks are the simulation tests' and the stream
    proof's part."""
    pe = ShiftAccumulatePE(config)
    dut, parts = elaborated(pe)
    active = basis_layout(config)(internal(next(f for _, origin, f in parts if origin is pe),
                                           "active"))
    m = Module()
    m.submodules.pe = dut
    row = Signal(row_layout(config))
    fed = Signal(row_layout(config))
    m.d.comb += [fed.eq(row), pe.rows.payload.eq(fed), pe.weights.ready.eq(1)]
    if break_sign:
        m.d.comb += fed.coefficients[2].negative.eq(0)
    wide = signed(config.weight_bits + 4)
    expected = [Signal(wide, name=f"expected_{c}") for c in range(3)]
    for c in range(3):
        terms = []
        for j in range(3):
            code = row.coefficients[j]
            shifted = active[j][c].as_signed() << code.exponent
            terms.append(Mux(row.present[j], Mux(code.negative, -shifted, shifted), 0))
        m.d.comb += expected[c].eq(terms[0] + terms[1] + terms[2])
    taken = pe.rows.valid & pe.rows.ready
    flag, values = taken, expected
    for stage in range(pe.latency):
        delayed_flag = Signal(name=f"taken_{stage}")
        delayed = [Signal(wide, name=f"expected_{stage}_{c}", reset_less=True) for c in range(3)]
        m.d.sync += [delayed_flag.eq(flag), *[d.eq(v) for d, v in zip(delayed, values)]]
        flag, values = delayed_flag, delayed
    m.d.comb += Assert(flag == pe.weights.valid, "one weight row per row taken")
    with m.If(flag):
        for c in range(3):
            m.d.comb += Assert(pe.weights.payload.row[c] == values[c],
                               "weight is the sum of shifted basis entries")
    ports = [pe.rows.valid, Value.cast(row), pe.basis.valid, Value.cast(pe.basis.payload),
             pe.weights.valid, Value.cast(pe.weights.payload), pe.rows.ready, pe.basis.ready]
    return m, ports


@pytest.mark.parametrize("overrides", [
    {"code_bits": 2, "basis_bits": 6},
    pytest.param({}, marks=[pytest.mark.slow, pytest.mark.duration(140)]),
], ids=["narrow", "default"])
def test_rebuild_pe_is_the_sum_of_shifted_basis_entries(overrides, tmp_path):
    """For all time: BMC and 3-induction (the property of a row depends on the cycle
    it was taken in and the two after, so no invariant is needed)."""
    harness, ports = pe_rebuild_harness(AcceleratorConfig(dataflow="rebuild", **overrides))
    result = prove(harness, ports, depth=3, work_dir=tmp_path)
    assert result.proven, result.log


def test_rebuild_pe_proof_negative_control(tmp_path):
    """A PE fed the third coefficient's sign as always positive is rejected."""
    harness, ports = pe_rebuild_harness(AcceleratorConfig(dataflow="rebuild"), break_sign=True)
    result = prove(harness, ports, depth=4, induction=False, work_dir=tmp_path)
    assert result.status == "failed"
    assert any("test_formal.py" in where for where in result.failed), result.failed


# (d) No accumulator overflow for the bounds the compiler checks. ----------------------

def accumulator_harness(config, *, slack_bits=0, invariants=True):
    """The lanes' running sums (MacLaneArray, generic lowering) never wrap when the
    compiler's bound holds: for every lane, while ``128 * sum|w|`` over the elements
    of its current sum fits ``accumulator_bits`` (plus ``slack_bits``: the negative
    control), the accumulator read at ``accumulator_bits`` (what the lanes emit)
    equals the exact sum of the products.

    The harness follows each lane's Mac16 (``acc16x16``) from its internal product
    register: the exact sum restarts and adds with the accumulator, the weight and
    "an element was taken" travel along with the product. Activations are int8 by
    width (``activation_bits`` 8, ``-128..127``), so a product's magnitude is at most
    ``128 * |w|``; that arithmetic fact is assumed, so that the solver need not
    reason about the multiplier (whose products the simulation tests check).
    Invariants for the induction, asserted: the accumulator is the exact sum modulo
    2**32, and ``|exact| <= 128 * sum|w|``."""
    array = MacLaneArray(config, basis_depth=2, lowering="generic")
    dut, parts = elaborated(array)
    macs = [(origin, fragment) for _, origin, fragment in parts if isinstance(origin, Mac16)]
    assert len(macs) == config.lanes
    m = Module()
    m.submodules.array = dut
    acc_bits = config.accumulator_bits
    limit = (1 << (acc_bits - 1 + slack_bits)) - 1
    wide = acc_bits + MAC_WEIGHT_BITS
    # The product pipeline is reset-less, and so is what follows it here.
    took = Signal(reset_less=True)
    m.d.sync += took.eq(array.elements.valid & array.elements.ready)
    summed = []
    for lane, (mac, fragment) in enumerate(macs):
        product, restart, accumulator = (internal(fragment, name) for name in
                                         ("product_2", "clear_2", "accumulator"))
        weight, counted = mac.a.as_signed(), took
        for stage in range(3):   # from the Mac16's input to its product register
            delayed_weight = Signal(signed(MAC_WEIGHT_BITS), reset_less=True,
                                    name=f"weight{lane}_{stage}")
            delayed_count = Signal(reset_less=True, name=f"counted{lane}_{stage}")
            m.d.sync += [delayed_weight.eq(weight), delayed_count.eq(counted)]
            weight, counted = delayed_weight, delayed_count
        size = Mux(counted, Mux(weight < 0, -weight, weight), 0)
        exact = Signal(signed(wide), reset_less=True, name=f"exact{lane}")
        magnitude = Signal(wide, reset_less=True, name=f"magnitude{lane}")
        m.d.sync += [exact.eq(Mux(restart, 0, exact + product)),
                     magnitude.eq(Mux(restart, 0, magnitude + size))]
        m.d.comb += [
            Assume((magnitude << 7) <= limit),
            Assume(~counted | (Mux(product < 0, -product, product) <= (size << 7))),
            Assert(accumulator[:acc_bits].as_signed() == exact, "the sum never wraps"),
        ]
        if invariants:
            m.d.comb += [
                Assert(accumulator.as_unsigned() == exact[:32], "accumulator = exact mod 2**32"),
                Assert(Mux(exact < 0, -exact, exact) <= (magnitude << 7), "|exact| <= 128 sum|w|"),
            ]
        summed.append(exact > 1000)
    m.d.comb += Cover(Cat(*summed).all())
    return m, ports_of(array)


#: Two lanes, 25-bit accumulators (the least the lanes allow) and 6-bit bases, so that a
#: sum can reach the limit in a few elements (|w| <= 3 * 32 * 2**7 = 12288).
ACCUMULATOR_CONFIG = AcceleratorConfig(lanes=2, accumulator_bits=25, basis_bits=6)


@pytest.mark.slow
@pytest.mark.duration(180)
def test_lane_sums_never_wrap_within_the_compilers_bound(tmp_path):
    """For all time, i.e. for sums of any length: BMC and 5-induction."""
    harness, ports = accumulator_harness(ACCUMULATOR_CONFIG)
    result = prove(harness, ports, depth=5, work_dir=tmp_path, timeout=1200)
    assert result.proven, result.log


def test_lane_sums_are_not_ruled_out_by_the_assumptions(tmp_path):
    """The assumptions leave real sums: both lanes' exceed 1000 within 10 cycles."""
    harness, ports = accumulator_harness(ACCUMULATOR_CONFIG)
    result = reach(harness, ports, depth=10, work_dir=tmp_path)
    assert result.all_reached, result.log


def test_lane_sum_proof_negative_control(tmp_path):
    """A bound one bit too generous is not proven: the induction finds a sum near that
    bound that one more element makes wrap (from reset, a wrapping sum takes 11
    elements of the largest weight, more cycles than this quick check runs)."""
    harness, ports = accumulator_harness(ACCUMULATOR_CONFIG, slack_bits=1)
    result = prove(harness, ports, depth=5, work_dir=tmp_path, timeout=1200)
    assert result.status == "bounded", result.log
    assert "Status: FAILED" in result.log.split("Status: PASSED", 1)[1]


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


SMALL_SERIAL = SerialConfig(datapath=AcceleratorConfig(lanes=1, block_rows=4), bank_depth=64,
                            activation_bytes=64, basis_depth=2, param_depth=4, output_depth=2,
                            program_depth=8)


def memory_accesses(parts):
    """Every memory of an elaborated design: ``(name, reads, writes)``, a read being
    ``(enable, address, write ports it is transparent for)`` (a RegisteredReadPort's
    register enable, or a synchronous port's), a write ``(enable, address, port)``."""
    found = []
    for path, origin, _ in parts:
        if not isinstance(origin, memory.Memory):
            continue
        registered = RegisteredReadPort.of(origin)
        asynchronous = [port for port in origin.read_ports if port.domain == "comb"]
        # Every asynchronous port is a RegisteredReadPort's: none escapes the check.
        assert len(asynchronous) == len(registered), path
        reads = [(port.en, port.addr, ()) for port in registered]
        reads += [(port.en, port.addr, port.transparent_for) for port in origin.read_ports
                  if port.domain != "comb"]
        writes = [(port.en.any(), port.addr, port) for port in origin.write_ports]
        found.append((".".join(map(str, path)), reads, writes))
    return found


#: Cycles from reset within which a small SerialCore's memories have all been read and
#: written (a cover trace; see the test that looks for it).
COVER_DEPTH = 30


def serial_memory_harness(*, units="assert", extra_output_read=False, host_writes_bases=False):
    """A small SerialCore in which no memory is read and written at one address in one
    cycle (a read port transparent for the write port excepted: its collision is
    defined, and synthesis keeps it).

    The units' part of the rule, that their accesses to the memories the host also
    uses happen only while the core is busy, is asserted (``units="assert"``) or
    assumed (``"assume"``: then the rest, the core's multiplexing of the ports and
    its gating by ``busy``, is what is proven). Negative controls: an ungated host read
    of the output memory (``extra_output_read``, as the core had it) or an ungated
    host write of the basis memory (``host_writes_bases``)."""
    core = SerialCore(SMALL_SERIAL)
    dut, parts = elaborated(core)
    units_by_type = {type(origin).__name__: origin for _, origin, _ in parts}
    sequencer, output = units_by_type["OpSequencer"], units_by_type["OutputUnit"]
    issuer = units_by_type["ElementIssuer"]
    m = Module()
    m.submodules.core = dut
    busy = sequencer.busy
    check = Assume if units == "assume" else Assert
    m.d.comb += [check(~sequencer.program.en | busy, "program read only while busy"),
                 check(~output.param_read.en | busy, "parameter read only while busy"),
                 check(~output.output_write.en | busy, "output write only while busy"),
                 check(~issuer.basis_read.en | busy, "basis read only while busy")]
    extra = []
    accesses = memory_accesses(parts)
    host = core.host
    if extra_output_read:
        name, reads, writes = next(a for a in accesses if a[0] == "outputs")
        offset = host.addr[:len(reads[0][1])]
        reads.append((host.r_en & (host.addr[24:32] == 5), offset, ()))
    if host_writes_bases:
        name, reads, writes = next(a for a in accesses if a[0] == "lanes.bases0")
        write_en, write_addr = Signal(), Signal(len(writes[0][1]))
        writes.append((write_en, write_addr, None))
        extra = [write_en, write_addr]
    for name, reads, writes in accesses:
        for read_en, read_addr, transparent in reads:
            for write_en, write_addr, port in writes:
                if port is not None and port in transparent:
                    continue
                m.d.comb += Assert(~(read_en & write_en & (read_addr == write_addr)),
                                   f"{name}: no read and write of one address in a cycle")
    return m, [*ports_of(core), *extra], accesses


def test_serial_core_memory_ports_are_never_read_and_written_at_once(tmp_path):
    """For all time (BMC and 2-induction): every memory of a small SerialCore, given
    the units' accesses to the host-loaded memories only while busy (assumed here,
    asserted by the bounded proof below); what is proven is the core's gating by
    ``busy`` of the host's reads and writes and the units' own ports (the output
    unit's maxima, the single-port banks and activation memory)."""
    harness, ports, accesses = serial_memory_harness(units="assume")
    names = {name for name, _, _ in accesses}
    assert {"program", "params", "outputs", "lanes.bases0", "output_unit.maxima",
            "activations.memory", "bank0.memory"} <= names
    result = prove(harness, ports, depth=2, work_dir=tmp_path)
    assert result.proven, result.log


def test_serial_core_memory_proof_negative_control(tmp_path):
    """The host's output reads ungated (as before this rule was proven): the induction
    finds a state in which one meets an output write, so nothing is proven."""
    harness, ports, _ = serial_memory_harness(units="assume", extra_output_read=True)
    result = prove(harness, ports, depth=2, work_dir=tmp_path)
    assert not result.proven and result.status != "failed", result.log


@pytest.mark.slow
@pytest.mark.duration(300)
def test_serial_core_units_access_shared_memories_only_while_busy(tmp_path):
    """Bounded, nothing assumed: COVER_DEPTH cycles from reset (real reads and writes of
    every shared memory happen within them, see the cover test) with every host bus
    input free and every memory's contents free at the start (any image the host may
    have loaded), the units' accesses and every memory port pair as above."""
    harness, ports, _ = serial_memory_harness(units="assert")
    result = prove(harness, ports, depth=COVER_DEPTH, induction=False, work_dir=tmp_path,
                   timeout=1200)
    assert result.status == "bounded", result.log


def reached_accesses(harness, accesses, names):
    """Adds to ``harness`` one cover statement: every memory of ``names`` has been read
    and written (a read and a write each, not necessarily in one cycle)."""
    seen = []
    for name, reads, writes in accesses:
        if name not in names:
            continue
        for kind, enables in (("read", [r[0] for r in reads]), ("written", [w[0] for w in writes])):
            flag = Signal(name=f"{kind}_{name.replace('.', '_')}")
            harness.d.sync += flag.eq(flag | Cat(*enables).any())
            seen.append(flag)
    harness.d.comb += Cover(Cat(*seen).all())


@pytest.mark.slow
@pytest.mark.duration(600)
def test_serial_core_memories_are_read_and_written_within_the_bound(tmp_path):
    """The bounded proof's depth reaches real accesses: a trace from reset in which
    the program, parameter, basis and output memories have each been read and
    written (the output memory by a run's final operation, then read by the host)."""
    harness, ports, accesses = serial_memory_harness(units="assert")
    reached_accesses(harness, accesses, {"program", "params", "lanes.bases0", "outputs"})
    result = reach(harness, ports, depth=COVER_DEPTH, work_dir=tmp_path, timeout=1200)
    assert result.all_reached, result.log


def test_serial_core_basis_proof_negative_control(tmp_path):
    """A second basis write port, like the host's but not gated by ``busy``: a
    counterexample from reset (a run reads the basis while it writes)."""
    harness, ports, _ = serial_memory_harness(units="assert", host_writes_bases=True)
    result = prove(harness, ports, depth=12, induction=False, work_dir=tmp_path)
    assert result.status == "failed"
