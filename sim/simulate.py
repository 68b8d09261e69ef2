"""Running a weight file on the generated RTL and checking it layer by layer.

:func:`simulate` compiles an integer network for a core configuration, runs
inputs on the core in a simulator (Icarus or Verilator through cocotb, or
Amaranth's own) with one bus script, and compares the result of every
operation, and every performance counter, with the golden model. On a
mismatch it names the layer and the first differing element, and can
record a waveform of that layer alone.
"""

import json
import time
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np

from sd_hw.compiler import compile_network
from sd_hw.core.layouts import GROUP_WORDS, OP_WORDS
from sd_hw.core.host_map import Space
from sd_hw.errors import ParameterError, SdHwError
from sd_hw.serial.compiler import compile_serial
from sd_hw.serial.config import SerialConfig
from sd_hw.serial.layouts import record_reads
from sim.golden.counts import CoreShape, cycle_estimate, expected_counters
from sim.golden.serial_counts import (SerialShape, expected_serial_counters,
                                      serial_cycle_estimate)
from sim.golden.reference import checked_inputs, run
from sim.host import runtime
from sim.host.script import BusScript


__all__ = ["SIMULATORS", "Mismatch", "SimulationReport", "simulate", "build_script",
           "execute_script", "compare", "layer_waveform", "core_shape", "compile_for",
           "estimate", "golden_counters"]

SIMULATORS = ("icarus", "verilator", "amaranth")


@dataclass(frozen=True)
class Mismatch:
    """The first element where the RTL and the golden model differ."""

    input_index: int
    op: str            # the operation (its layers joined with '+')
    layer: str         # the network layer whose output it is
    index: tuple       # element index within the layer's output
    expected: int
    got: int

    def __str__(self):
        return (f"input {self.input_index}, layer {self.layer!r} (operation {self.op}): "
                f"element {self.index} is {self.got}, expected {self.expected}")


@dataclass
class SimulationReport:
    simulator: str
    outputs: np.ndarray              # (N, ...) int32 outputs of the RTL
    golden: np.ndarray               # the golden model's
    counters: list                   # per input, dict of counters
    expected_counters: list          # per input, the golden model's counts
    cycle_estimate: int
    mismatches: list = field(default_factory=list)
    counter_mismatches: list = field(default_factory=list)  # (input, name, expected, got)
    layers_checked: int = 0
    seconds: float = 0.0
    waveform: Path = None

    @property
    def passed(self):
        return not self.mismatches and not self.counter_mismatches

    @property
    def cycles(self):
        return [c["cycles"] for c in self.counters]


def core_shape(config):
    """What the golden model's counts need of a core configuration."""
    if isinstance(config, SerialConfig):
        return SerialShape(lanes=config.lanes,
                           record_reads=record_reads(config.lanes, config.weight_banks))
    return CoreShape(lanes=config.lanes, stream_bits=config.datapath.stream_bits,
                     code_bits=config.datapath.code_bits, basis_words=config.basis_words,
                     op_words=OP_WORDS, group_words=GROUP_WORDS,
                     coefficients=config.coefficients, weights=config.weights,
                     block_rows=config.datapath.block_rows,
                     row_lookahead=config.row_lookahead)


def compile_for(net, config):
    """The program of ``net`` for the core of ``config`` (an SDCore or a SerialCore)."""
    if isinstance(config, SerialConfig):
        return compile_serial(net, config)
    return compile_network(net, config)


def estimate(net, config):
    """The golden model's cycle estimate of one inference on the core of ``config``."""
    if isinstance(config, SerialConfig):
        return serial_cycle_estimate(net, core_shape(config))
    return cycle_estimate(net, core_shape(config))


def golden_counters(net, x, config):
    """Every counter but ``cycles`` of one inference of ``x`` (empty for a core built
    without its counters)."""
    if not config.counters:
        return {}
    if isinstance(config, SerialConfig):
        return expected_serial_counters(net, core_shape(config))
    return expected_counters(net, x, core_shape(config))


def execute_script(script, config, *, simulator, build_dir, waves=False, rebuild=False,
                   progress=None):
    """Run ``script`` on a core of ``config``; returns ``({tag: words}, waveform path)``.

    ``progress`` gets the simulator build's start, heartbeat and end."""
    build_dir = Path(build_dir)
    if simulator == "amaranth":
        from sd_hw.generate import core_component
        from sim.amaranth_executor import execute
        waveform = build_dir / "amaranth.vcd" if waves else None
        if waveform:
            waveform.parent.mkdir(parents=True, exist_ok=True)
        return execute(core_component(config), script, vcd_path=waveform), waveform
    if simulator not in SIMULATORS:
        raise ParameterError(f"simulator is {simulator!r}, allowed are {', '.join(SIMULATORS)}")
    from sd_hw.generate import generate_core
    from sim.cocotb.script_tb import RESULTS_ENV, SCRIPT_ENV
    from sim.cocotb_runner import CocotbFailure, run_cocotb_on
    generated = generate_core(config, build_dir / "verilog")
    models = {}
    if getattr(config, "primitives", "generic") == "ice40":
        # The netlist instantiates SB_SPRAM256KA and SB_MAC16: simulate them with yosys'
        # models.
        from sim.primitive_models import CELLS_SIM, CELLS_SIM_ARGS
        models = {"extra_sources": [CELLS_SIM], "build_args": CELLS_SIM_ARGS[simulator]}
    work = build_dir / "scripts"
    work.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns()}"
    script_path = script.save(work / f"script-{stamp}.json")
    results_path = work / f"results-{stamp}.json"
    try:
        result = run_cocotb_on(generated, "sim.cocotb.script_tb", simulator=simulator,
                               build_dir=build_dir / "sim", waves=waves, rebuild=rebuild,
                               extra_env={SCRIPT_ENV: str(script_path.resolve()),
                                          RESULTS_ENV: str(results_path.resolve())},
                               progress=progress, **models)
    except CocotbFailure as error:
        raise SdHwError(f"the {simulator} simulation failed: {error}") from None
    words = json.loads(results_path.read_text())
    script_path.unlink()
    results_path.unlink()
    waveform = None
    if waves:
        candidates = sorted(result.build_dir.glob("*.fst")) + sorted(result.build_dir.glob("*.vcd"))
        waveform = candidates[0] if candidates else None
    return words, waveform


def _max_cycles(estimate):
    return 20 * estimate + 100000


def _first_difference(got, expected):
    where = np.argwhere(got != expected)
    if not len(where):
        return None
    index = tuple(int(i) for i in where[0])
    return index, int(expected[index]), int(got[index])


def build_script(net, program, x, *, layers=True):
    """The bus script that loads ``program`` and runs every input of ``x``.

    ``layers`` as for :func:`simulate`. Each input's results are tagged
    ``x<i>``; a rerun of a program prefix for operation ``k`` ``x<i>/prefix<k>``.
    """
    script = runtime.load(BusScript(), program)
    limit = _max_cycles(estimate(net, program.config))
    layer_inputs = len(x) if layers is True else int(layers)
    for i in range(len(x)):
        check_layers = i < layer_inputs
        runtime.infer(script, program, x[i], tag=f"x{i}", max_cycles=limit, layers=check_layers)
        if check_layers:
            for info in program.ops:
                if not program.survives(info):
                    runtime.infer(script, program, x[i], tag=f"x{i}/prefix{info.index}",
                                  max_cycles=limit, layers=False, op_count=info.index + 1)
    return script


def compare(net, program, x, words, *, simulator):
    """Check the words a run of :func:`build_script` read against the golden model of ``net``.

    Returns a :class:`SimulationReport` (its ``seconds`` left at 0).
    """
    config = program.config
    golden = run(net, x, layer_outputs=True, dataflow=config.datapath.dataflow)
    outputs, counters, mismatches, counter_mismatches, expected_list = [], [], [], [], []
    checked = 0
    for i in range(len(x)):
        result = runtime.results_of(program, words, f"x{i}")
        if not result.done:
            raise SdHwError(f"input {i}: the core did not report done")
        ops = dict(result.ops)
        for info in program.ops:
            if info.index not in ops and f"x{i}/prefix{info.index}/op{info.index}" in words:
                ops[info.index] = runtime.results_of(
                    program, words, f"x{i}/prefix{info.index}").ops[info.index]
        for info in program.ops:
            if info.index not in ops:
                continue
            reference = golden[info.last_layer][i]
            got = ops[info.index].reshape(reference.shape)
            checked += 1
            difference = _first_difference(got, reference)
            if difference is not None:
                layer = net.network.layers[info.last_layer].name
                mismatches.append(Mismatch(i, info.name, layer, *difference))
                break
        outputs.append(ops[program.output.index].reshape(golden[-1][i].shape))
        counters.append(result.counters)
        # A core built without its performance counters has the cycle counter only.
        expected = golden_counters(net, x[i], config)
        expected_list.append(expected)
        for name, value in expected.items():
            if result.counters[name] != value:
                counter_mismatches.append((i, name, value, result.counters[name]))
    return SimulationReport(simulator, np.stack(outputs), golden[-1], counters, expected_list,
                            estimate(net, config), mismatches, counter_mismatches, checked)


def simulate(net, config, x, *, simulator="verilator", build_dir="build/simulate",
             layers=True, waves_on_mismatch=False, rebuild=False, log=None, progress=None):
    """Run int8 inputs ``x`` (N, *input_shape) on the RTL of ``config`` and check them.

    Returns a :class:`SimulationReport`. With ``layers`` (True, or the
    number of leading inputs to do it for), every operation's result is
    compared (operations whose memory a later one reuses are run again on
    their own prefix of the program); otherwise the outputs only. ``log``
    gets what is simulated, ``progress`` the simulator build's progress.
    """
    started = time.perf_counter()
    x = checked_inputs(net, x)
    program = compile_for(net, config)
    script = build_script(net, program, x, layers=layers)
    if log:
        log(f"simulating {len(x)} input(s) on {simulator} "
            f"({sum(len(s[2]) for s in script.steps if s[0] == 'write')} words written)")
    words, _ = execute_script(script, config, simulator=simulator, build_dir=build_dir,
                              rebuild=rebuild, progress=progress)
    report = compare(net, program, x, words, simulator=simulator)
    if report.mismatches and waves_on_mismatch:
        first = report.mismatches[0]
        report.waveform = layer_waveform(net, program, x[first.input_index], first.op,
                                         simulator=simulator, build_dir=build_dir)
    report.seconds = time.perf_counter() - started
    return report


def layer_waveform(net, program, x, op_name, *, simulator, build_dir):
    """A waveform of operation ``op_name`` run on its own, from its golden input for ``x``.

    The program and its images are loaded, the golden model's input of the
    operation is written to where the operation reads it, and only that
    operation runs; returns the waveform's path (FST for Icarus, VCD
    otherwise).
    """
    config = program.config
    info = next((op for op in program.ops if op.name == op_name), None)
    if info is None:
        raise SdHwError(f"the program has no operation {op_name!r}; it has "
                        f"{', '.join(op.name for op in program.ops)}")
    if info.index == 0:
        tensor = x
    else:
        golden = run(net, x[None], layer_outputs=True, dataflow=config.datapath.dataflow)
        tensor = golden[program.ops[info.index - 1].last_layer][0]
    script = runtime.load(BusScript(), program)
    runtime.infer(script, program, tensor, tag="layer", max_cycles=_max_cycles(
        estimate(net, config)), first_op=info.index, op_count=1)
    _, waveform = execute_script(script, config, simulator=simulator,
                                 build_dir=Path(build_dir) / "waves", waves=True, rebuild=True)
    return waveform
