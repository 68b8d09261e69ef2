"""The verification and synthesis infrastructure, on a tiny test-only component.

Generation and the port map, cocotb on Icarus and Verilator (with a negative
control), Verilator lint, synthesis for iCE40 and ECP5 with the latch check,
and place-and-route through the pin harness.
"""

from pathlib import Path

import pytest
from amaranth.hdl import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sd_hw import generate as generate_module
from sd_hw.errors import SdHwError
from sd_hw.generate import BLOCKS, generate, generate_component
from sd_hw.lint import LintError, verilator_lint
from sd_hw.synth import LatchError, harness_place_and_route, synthesise
from sim.cocotb import PayloadCodec
from sim.cocotb_runner import CocotbFailure, run_cocotb_on


COCOTB_TESTS = Path(__file__).parent / "cocotb_tests"

OPERANDS = data.StructLayout({"a": signed(8), "b": data.ArrayLayout(signed(6), 2), "negate": 1})
RESULT = data.StructLayout({"value": signed(16), "odd": 1})


class ScaledSum(wiring.Component):
    """Test-only: ``a * (b[0] + b[1])``, negated if ``negate``, one register stage.

    The product is 8 x 7 bits: one DSP on either family.
    """

    i: In(stream.Signature(OPERANDS))
    o: Out(stream.Signature(RESULT))

    def elaborate(self, platform):
        m = Module()
        operands = self.i.payload
        product = operands.a * (operands.b[0] + operands.b[1])
        with m.If(self.o.ready | ~self.o.valid):
            m.d.comb += self.i.ready.eq(1)
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [
                    self.o.payload.value.eq(product),
                    self.o.payload.odd.eq(product[0]),
                ]
                with m.If(operands.negate):
                    m.d.sync += self.o.payload.value.eq(-product)
        return m


LATCH_VERILOG = """\
module latchy(input en, input [3:0] d, output reg [3:0] q);
  always @* if (en) q = d;
endmodule
"""


@pytest.fixture
def scaled_sum(tmp_path):
    return generate_component(ScaledSum(), "scaled_sum", tmp_path / "verilog")


def _field_checks(description, layout):
    """Compare a port-map layout description with the layout object, recursively."""
    assert description["width"] == layout.size
    if isinstance(layout, data.ArrayLayout):
        assert description["length"] == layout.length
        pairs = zip(description["elements"], (field for _, field in layout))
    else:
        assert list(description["fields"]) == [name for name, _ in layout]
        pairs = zip(description["fields"].values(), (field for _, field in layout))
    for entry, field in pairs:
        assert (entry["offset"], entry["width"]) == (field.offset, field.width)
        if isinstance(field.shape, data.Layout):
            _field_checks(entry["shape"], field.shape)


def test_generate_writes_verilog_and_port_map(scaled_sum):
    assert scaled_sum.verilog_path.read_text().count("module scaled_sum(") == 1
    assert scaled_sum.port_map_path.exists()
    ports = scaled_sum.port_map["ports"]
    assert {name: (p["direction"], p["width"]) for name, p in ports.items()} == {
        "i__payload": ("input", OPERANDS.size), "i__valid": ("input", 1),
        "i__ready": ("output", 1), "o__payload": ("output", RESULT.size),
        "o__valid": ("output", 1), "o__ready": ("input", 1)}
    streams = scaled_sum.port_map["streams"]
    assert {name: s["direction"] for name, s in streams.items()} == {"i": "sink", "o": "source"}
    _field_checks(streams["i"]["layout"], OPERANDS)
    _field_checks(streams["o"]["layout"], RESULT)
    assert (scaled_sum.port_map["clock"], scaled_sum.port_map["reset"]) == ("clk", "rst")


@pytest.mark.parametrize("value", [
    {"a": -128, "b": [-32, 31], "negate": 1},
    {"a": 127, "b": [0, -1], "negate": 0},
    {"a": -1, "b": [-1, -1], "negate": 1},
])
def test_payload_codec_agrees_with_amaranth(scaled_sum, value):
    codec = PayloadCodec(scaled_sum.port_map["streams"]["i"]["layout"])
    raw = codec.pack(value)
    assert raw == OPERANDS.const(value).as_value().value
    assert codec.unpack(raw) == value


def test_payload_codec_rejects_out_of_range(scaled_sum):
    codec = PayloadCodec(scaled_sum.port_map["streams"]["i"]["layout"])
    with pytest.raises(ValueError, match=r"\['a'\] is 128"):
        codec.pack({"a": 128, "b": [0, 0], "negate": 0})
    with pytest.raises(ValueError, match="fields"):
        codec.pack({"a": 1, "b": [0, 0]})


def test_generate_unknown_and_unavailable_blocks(tmp_path, monkeypatch):
    with pytest.raises(SdHwError, match="unknown block 'adder'"):
        generate("adder", None, tmp_path)
    monkeypatch.setitem(BLOCKS, "coefficient_decoder",
                        generate_module._Block("sd_hw.datapath.no_such_module", "Nothing"))
    with pytest.raises(SdHwError, match="Nothing .* is not available"):
        generate("coefficient_decoder", None, tmp_path)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_passes(scaled_sum, tmp_path, simulator):
    result = run_cocotb_on(scaled_sum, "scaled_sum_tb", simulator=simulator,
                           build_dir=tmp_path / "sim", module_dirs=[COCOTB_TESTS])
    assert result.tests == 2
    assert result.build_dir.name == f"scaled_sum-default-{simulator}"


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_negative_control_fails(scaled_sum, tmp_path, simulator):
    failed = "(?s)1 of 1 cocotb tests failed.*wrong_expectation: transfer 0"
    with pytest.raises(CocotbFailure, match=failed):
        run_cocotb_on(scaled_sum, "scaled_sum_negative_tb", simulator=simulator,
                      build_dir=tmp_path / "sim", module_dirs=[COCOTB_TESTS])


def test_cocotb_no_test_ran_is_a_failure(scaled_sum, tmp_path):
    with pytest.raises(CocotbFailure, match="no cocotb test ran"):
        run_cocotb_on(scaled_sum, "scaled_sum_tb", simulator="icarus",
                      build_dir=tmp_path / "sim", module_dirs=[COCOTB_TESTS],
                      testcase="no_such_test")


def test_verilator_lint_passes(scaled_sum):
    report = verilator_lint(scaled_sum.verilog_path)
    assert set(report.allowed) <= {"PROCASSINIT", "UNUSEDSIGNAL", "WIDTHEXPAND", "WIDTHTRUNC"}


def test_verilator_lint_rejects_a_latch(tmp_path):
    path = tmp_path / "latchy.v"
    path.write_text(LATCH_VERILOG)
    with pytest.raises(LintError, match="LATCH"):
        verilator_lint(path)


@pytest.mark.parametrize("family, dsp", [("ice40", "SB_MAC16"), ("ecp5", "MULT18X18D")])
def test_synthesise_maps_the_product_to_one_dsp(scaled_sum, tmp_path, family, dsp):
    report = synthesise(scaled_sum.verilog_path, "scaled_sum", family, out_dir=tmp_path)
    assert report.cells.get(dsp) == 1 and report.dsps == 1
    assert report.ffs == RESULT.size + 1
    assert report.luts > 0 and report.brams == 0
    assert report.netlist.exists()


@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_synthesise_detects_a_latch(tmp_path, family):
    path = tmp_path / "latchy.v"
    path.write_text(LATCH_VERILOG)
    with pytest.raises(LatchError, match=r"latchy holds latches \(1 \$dlatch\)"):
        synthesise(path, "latchy", family, out_dir=tmp_path)


@pytest.mark.parametrize("device", ["up5k", "85k"])
def test_place_and_route_through_the_pin_harness(tmp_path, device):
    synth, pnr = harness_place_and_route(ScaledSum(), device, tmp_path)
    # Inputs: 21 payload bits, i.valid, o.ready; outputs: 3 ports; one digest register.
    assert pnr.harness_ffs == 21 + 2 + 3 + 1
    assert synth.dsps == 1
    assert synth.ffs == pnr.harness_ffs + RESULT.size + 1
    assert pnr.logic_cells > synth.ffs // 2
    assert pnr.fmax > 20
