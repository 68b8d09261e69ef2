"""Fit checks and feedback: what would make a network fit (sim/fit.py), the identity
registers a board is checked by (sim/host/identity.py), saturating inputs
(sim/inputs.py) and progress lines (nextpnr's phases, simulator builds).

The advice is checked against the compiler and the golden model, not against
itself: the width a network needs is worked out here from its rebuilt integer
weights, a suggested memory size must compile while half of it must not, and
every board configuration named must compile while every other must not. The
expected register words come from the documented register map and are
compared with what the cores answer in Amaranth's simulator.
"""

import dataclasses
import re
import time

import numpy as np
import pytest

from boards.build import PlaceAndRouteProgress, _run
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.core.host_map import IDENT
from sd_hw.errors import SdHwError
from sd_hw.generate import core_component
from sd_hw.serial.config import SerialConfig
from sim.amaranth_executor import execute
from sim.fit import FitError, board_configurations, check_fit, require_fit
from sim.golden.reference import rebuild_weight
from sim.host.identity import (check_identity, expected_registers, identity_differences,
                               read_registers)
from sim.inputs import quantize_inputs
from sim.simulate import compile_for

from factories import TINY, hardware_network


def _compiles(net, config):
    try:
        compile_for(net, config)
    except SdHwError:
        return False
    return True


def _accumulator_need(net):
    """Signed bits of the largest |sum(w * x) + b| any int8 input gives, from the
    rebuilt integer weights."""
    worst = 0
    for spec in net.network.compute_layers:
        layer = net.layers[spec.name]
        if layer.decomposed:
            weights = rebuild_weight(layer.weights, spec.weight_shape)
        else:
            weights = layer.weights.weight
        magnitude = np.abs(weights.astype(np.int64)).reshape(len(weights), -1).sum(axis=1)
        worst = max(worst, int(np.max(128 * magnitude + np.abs(layer.bias.astype(np.int64)))))
    return worst.bit_length() + 1


@pytest.fixture(scope="module")
def tiny():
    return hardware_network(TINY, 5, block_rows=12, group=2)


def test_a_too_narrow_accumulator_names_the_width_that_fits():
    tiny = hardware_network(TINY, 5, block_rows=12, group=2)
    tiny.layers["fc"].bias[3] = 2 ** 27 - 5    # past what a 26-bit core can hold
    need = _accumulator_need(tiny)
    assert 27 < need < 32
    narrow = CoreConfig(datapath=AcceleratorConfig(lanes=2, accumulator_bits=need - 1))
    report = check_fit(tiny, narrow, boards=False, selected="--board x")
    assert not report.fits and f"needs {need} bits" in report.problem
    assert report.changes == {"accumulator_bits": need}
    assert _compiles(tiny, report.config)
    assert f"to fit: --board x --accumulator-bits {need} " in report.describe()
    assert "\n" not in report.describe()
    with pytest.raises(FitError, match=f"--accumulator-bits {need}") as raised:
        require_fit(tiny, narrow)
    assert raised.value.report.changes == {"accumulator_bits": need}
    assert check_fit(tiny, report.config).fits


def test_too_small_memories_get_the_least_power_of_two_that_fits(tiny):
    small = CoreConfig(datapath=AcceleratorConfig(lanes=2), weight_depth=16, param_depth=16)
    report = check_fit(tiny, small, boards=False)
    assert not report.fits
    assert set(report.changes) <= {"weight_depth", "param_depth"} and report.changes
    for name, value in report.changes.items():
        assert value & (value - 1) == 0
        assert f"--{name.replace('_', '-')} {value}" in report.advice()
        halved = dataclasses.replace(report.config, **{name: value // 2})
        assert value // 2 < getattr(small, name) or not _compiles(tiny, halved)
    assert _compiles(tiny, report.config)


def test_a_serial_core_memory_goes_into_a_config_file():
    net = hardware_network(TINY.__class__.from_dict({"input_shape": [16], "layers": [
        {"type": "linear", "name": "fc1", "in_features": 16, "out_features": 24},
        {"type": "relu"},
        {"type": "linear", "name": "fc2", "in_features": 24, "out_features": 4}]}), 2,
        block_rows=12, group=4)
    small = SerialConfig(datapath=AcceleratorConfig(lanes=4), bank_depth=16)
    report = check_fit(net, small, boards=False)
    assert not report.fits and "bank_depth" in report.problem
    depth = report.changes["bank_depth"]
    assert f'--config FILE with "bank_depth": {depth}' in report.advice()
    assert _compiles(net, report.config)
    assert not _compiles(net, dataclasses.replace(small, bank_depth=depth // 2))


def test_the_boards_named_are_exactly_those_whose_configuration_holds_it(tiny):
    small = CoreConfig(datapath=AcceleratorConfig(lanes=2), weight_depth=16)
    report = check_fit(tiny, small)
    named = {(name, option) for name, option, _ in report.boards}
    for name, option, config in board_configurations():
        assert ((name, option) in named) == _compiles(tiny, config), (name, option)
    # TINY has a 1x1 convolution, which only the SDCores run.
    assert named and all(option == "sd" for _, option in named)
    assert "--board ulx3s --core sd" in report.advice()


def test_a_network_no_size_makes_fit_says_so():
    net = hardware_network(TINY, 1, block_rows=12, group=2)
    report = check_fit(net, SerialConfig(datapath=AcceleratorConfig(lanes=2)), boards=False)
    assert not report.fits and report.changes == {} and "1x1 convolution" in report.problem
    assert report.advice().startswith("no change of memory sizes or widths")


class _CoreTransport:
    """A bare core of ``config`` in Amaranth's simulator, as a transport."""

    def __init__(self, config):
        self.config = config

    def execute(self, script):
        return execute(core_component(self.config), script)


@pytest.mark.parametrize("config", [
    CoreConfig(datapath=AcceleratorConfig(lanes=3, accumulator_bits=27, dataflow="factored",
                                          block_rows=96), activation_depth=256,
               weight_depth=128, program_depth=64, coefficients="unpacked", row_lookahead=2),
    CoreConfig(datapath=AcceleratorConfig(lanes=2), weights="dense", counters=False),
    SerialConfig(datapath=AcceleratorConfig(lanes=2, accumulator_bits=30), bank_depth=256,
                 activation_bytes=512, program_depth=32)],
    ids=["sd-unpacked-factored", "sd-dense", "serial"])
def test_identity_registers_are_those_the_core_reports(config):
    transport = _CoreTransport(config)
    words = read_registers(transport)
    # Registers 1..10 are read; those a core does not have read 0.
    assert words == {**dict.fromkeys(range(1, 11), 0), **expected_registers(config)}
    assert identity_differences(config, words) == []
    assert check_identity(transport, config) == words
    other = dataclasses.replace(config, datapath=dataclasses.replace(config.datapath, lanes=4),
                                program_depth=config.program_depth * 2)
    assert identity_differences(other, words) == [
        ("lanes", config.lanes, 4),
        ("program_depth", config.program_depth, 2 * config.program_depth)]
    with pytest.raises(SdHwError, match=r"^the board runs another core than the one the "
                                        r"network was compiled for: lanes is \d on the board, "
                                        r"4 in the configuration; program_depth is"):
        check_identity(transport, other)


def test_identity_of_another_kind_of_core():
    words = expected_registers(CoreConfig())
    assert words[1] == IDENT
    assert identity_differences(SerialConfig(), words) == [("core", "sd", "serial")]
    words[1] = 0x12345678
    assert identity_differences(CoreConfig(), words) == [
        ("core", "unknown (IDENT 0x12345678)", "sd")]


def test_float_inputs_outside_the_calibrated_range_are_counted(tiny):
    scale = tiny.input_scale
    rng = np.random.default_rng(4)
    x = rng.uniform(-100 * scale, 100 * scale, size=(6, *TINY.input_shape))
    x[1, 0, 0, 0] = 500 * scale      # above: clipped to 127
    x[1, 1, 2, 3] = 128 * scale
    x[4, 0, 3, 3] = -300 * scale     # below: clipped to -128
    q, saturation = quantize_inputs(tiny, x)
    assert np.array_equal(q, tiny.quantize_input(x))
    assert (saturation.above, saturation.below, saturation.inputs) == (2, 1, 2)
    assert (saturation.count, saturation.values) == (6, x.size)
    line = saturation.describe("x.npy")
    assert line.startswith(f"x.npy: 3 of {x.size} input values (2 of 6 inputs) lie outside")
    assert "(1 at -128, 2 at 127)" in line
    inside, none = quantize_inputs(tiny, x[[0, 2, 3, 5]])
    assert none.clipped == 0 and none.describe() is None
    int8 = rng.integers(-128, 128, size=(2, *TINY.input_shape)).astype(np.int8)
    same, nothing = quantize_inputs(tiny, int8)
    assert nothing is None and np.array_equal(same, int8)


#: Lines of real nextpnr-ecp5 and -ice40 logs (the ULX3S and iCEBreaker designs) and what a
#: user is told of them.
NEXTPNR_LINES = """\
Info: Packing IOs..
Info: Packing constants..
Info: Packing carries...
Info: Device utilisation:
Info: Creating initial analytic placement for 7404 cells, random placement wirelen = 946989.
Info:     at initial placer iter 0, wirelen = 2375
Info: Running main analytical placer, max placement attempts per cell = 17829406.
Info: HeAP Placer Time: 27.30s
Info: Running simulated annealing placer for refinement.
Info: SA placement time 21.98s
Info: Max frequency for clock '$glbnet$clk': 44.03 MHz (FAIL at 50.00 MHz)
Info: Max frequency for clock '$PACKER_GND_NET': 386.25 MHz (PASS at 12.00 MHz)
Info: Routing globals...
Info: Routing..
Info: Setting up routing queue.
Info: Routing 35139 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|
Info:       1000 |      301        698 |  301   698 |     34721|       1.32       1.32|
Info:       2000 |      501       1498 |  200   800 |     34046|       1.06       2.37|
Info:      10000 |     1778       8221 |  101   899 |     28187|       0.68      12.74|
Info: Routing complete.
Info: Router1 time 27.72s
Info: Max frequency for clock '$glbnet$clk': 46.30 MHz (FAIL at 50.00 MHz)
Info: Max frequency for clock             'clk': 22.77 MHz (PASS at 18.00 MHz)
ERROR: Max frequency for clock 'clk': 46.30 MHz (FAIL at 50.00 MHz)
"""


def test_nextpnr_phases_become_short_progress_lines():
    lines = []
    progress = PlaceAndRouteProgress("seed 2 at 48 MHz", lines.append, every=10)
    for line in NEXTPNR_LINES.splitlines():
        progress(line)
    assert lines == [
        "  seed 2 at 48 MHz: packing",
        "  seed 2 at 48 MHz: placing 7404 cells (analytic placer)",
        "  seed 2 at 48 MHz: refining the placement (simulated annealing)",
        "  seed 2 at 48 MHz: clk reaches 44.03 MHz estimated after placement (FAIL at 50.00 MHz)",
        "  seed 2 at 48 MHz: routing 35139 arcs",
        "  seed 2 at 48 MHz: routing, 34721 arcs left after 1 s",
        "  seed 2 at 48 MHz: routing, 28187 arcs left after 13 s",
        "  seed 2 at 48 MHz: routed in 27.72 s",
        "  seed 2 at 48 MHz: clk reaches 46.30 MHz after routing (FAIL at 50.00 MHz)",
        "  seed 2 at 48 MHz: clk reaches 22.77 MHz after routing (PASS at 18.00 MHz)",
        "  seed 2 at 48 MHz: ERROR: Max frequency for clock 'clk': 46.30 MHz (FAIL at 50.00 MHz)"]


def test_a_build_step_streams_its_stderr_as_it_runs(tmp_path):
    seen = []
    line = "echo out; echo one >&2; sleep 0.5; echo two >&2"
    result = _run(line, tmp_path, None, "place and route", "pnr.log",
                  on_line=lambda text: seen.append((text, time.perf_counter())))
    assert result.returncode == 0 and (result.stdout, result.stderr) == ("out\n", "one\ntwo\n")
    assert [text for text, _ in seen] == ["one", "two"]
    assert seen[1][1] - seen[0][1] >= 0.4          # "one" arrived before the step ended
    assert sorted((tmp_path / "pnr.log").read_text().split()) == ["one", "out", "two"]
    with pytest.raises(SdHwError, match="place and route did not finish within"):
        _run("echo routing >&2; sleep 617.5 & wait", tmp_path, None, "place and route",
             "pnr.log", timeout=1.0, on_line=seen.append)
    assert "routing" in seen and (tmp_path / "pnr.log").read_text() == "routing\n"


def test_the_first_simulator_build_reports_progress(tmp_path):
    from sd_hw.generate import generate_component
    from sim.cocotb_runner import run_cocotb_on
    from test_infrastructure import COCOTB_TESTS, ScaledSum
    generated = generate_component(ScaledSum(), "scaled_sum", tmp_path / "verilog")
    lines = []
    tests_dir = COCOTB_TESTS
    run_cocotb_on(generated, "scaled_sum_tb", simulator="icarus", build_dir=tmp_path / "sim",
                  module_dirs=[tests_dir], progress=lines.append, rebuild=False)
    assert re.fullmatch(r"compiling scaled_sum \(\d+ lines of Verilog\) with icarus; once per "
                        r"configuration, reused afterwards \.\.\.", lines[0]), lines
    assert re.fullmatch(r"compiled scaled_sum with icarus in \d+ s", lines[-1]), lines
    lines.clear()
    run_cocotb_on(generated, "scaled_sum_tb", simulator="icarus", build_dir=tmp_path / "sim",
                  module_dirs=[tests_dir], progress=lines.append, rebuild=False)
    assert lines == []                              # the build was reused
