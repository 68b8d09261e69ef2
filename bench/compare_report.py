"""The markdown report of bench_compare.py: tables, definitions, and the kept analysis.

The analysis section is prose written by hand after reading the numbers;
the script keeps it, between its markers, when it rewrites the report.
"""

from pathlib import Path

import compare_metrics
import energy_model
from report_sections import UP5K_TABLE, marked

__all__ = ["markdown", "kept_analysis", "kept_up5k_table", "MARLANN", "ANALYSIS_BEGIN",
           "ANALYSIS_END"]

ANALYSIS_BEGIN = ("<!-- analysis: written by hand; bench_compare.py keeps it when it "
                  "rewrites this file -->")
ANALYSIS_END = "<!-- end of analysis -->"

#: The best published hand-written int8 CNN coprocessor on the UP5K: quoted, not measured here.
MARLANN = {
    "name": "MARLANN (SymbioticEDA, github.com/SymbioticEDA/MARLANN), hand-written Verilog",
    "chip": "iCE40 UP5K",
    "mac_per_s": 154e6, "clock_mhz": 12.0, "fmax_mhz": (23.42, 29.26),
    "note": "int8 weights and activations; published 154 MMAC/s at 12 MHz and 256 MMAC/s at "
            "20 MHz (real MACs on its own CNNs); fmax 23.42-29.26 MHz over 50 nextpnr runs "
            "(its benchmark/perf.md, 2018 nextpnr)",
}
_MARLANN_LABEL = "**MARLANN, published, not re-measured**"

_LABELS = {"smartdeal": "SD", "dense": "dense"}


def kept_analysis(path):
    """The hand-written analysis of an earlier report at ``path``, or a placeholder."""
    text = Path(path).read_text() if Path(path).exists() else ""
    if ANALYSIS_BEGIN in text and ANALYSIS_END in text:
        return text.split(ANALYSIS_BEGIN, 1)[1].split(ANALYSIS_END, 1)[0].strip("\n")
    return "(Not written yet: to be written after reading the numbers above.)"


def kept_up5k_table(path):
    """bench_up5k.py's section of an earlier report at ``path``, or None."""
    return marked(Path(path).read_text(), UP5K_TABLE) if Path(path).exists() else None


def _si(value, unit=""):
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def _table(head, rows, align):
    return ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"] + \
        ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _chip(design):
    return f"{design.board} ({design.chip})"


def _design_rows(designs):
    rows = []
    for d in designs:
        config = d.config
        memory = f"{config.lanes} x {config.weight_depth} x {config.weight_word_bits} bit"
        if d.build is None:
            reason = d.build_error or "not built (--quick)"
            rows.append([_chip(d), _LABELS[d.kind], config.lanes, memory, reason, "", "", "",
                         "", f"{d.clock_mhz:g}", ""])
            continue
        r = compare_metrics.resources(d.build, d.family)
        fmax = [d.build.fmax_summary(clock) for clock in d.build.fmax_mhz]
        low, median, high = min(fmax, key=lambda f: f[1])
        minutes = sum(d.build.seconds.values()) / 60
        rows.append([_chip(d), _LABELS[d.kind], config.lanes, memory,
                     f"{r['logic']} / {r['logic_available']}", r["ff"], r["dsp"], r["memory"],
                     f"{low:.1f} / **{median:.1f}** / {high:.1f}", f"{d.clock_mhz:g}",
                     f"{minutes:.1f}"])
    low, high = MARLANN["fmax_mhz"]
    rows.append([f"({MARLANN['chip']})", _MARLANN_LABEL, "", "", "", "", "", "",
                 f"{low:.1f} to {high:.1f}", f"{MARLANN['clock_mhz']:g}", ""])
    return rows


def _performance_rows(runs, network):
    rows = []
    for run in (r for r in runs if r.network == network):
        f = compare_metrics.figures(run)
        rows.append([_chip(run.design), run.variant, f"{f['cycles']:.0f}", f["estimate"],
                     "yes" if f["exact"] else "**no**", f"{f['clock_mhz']:.1f}",
                     f"{f['inferences_per_s']:,.0f}", _si(f["dense_mac_per_s"], "MAC/s"),
                     _si(f["mac_per_s"], "MAC/s"), _si(f["shift_add_per_s"], "op/s")])
    if network == "cnn":
        rows.append([f"({MARLANN['chip']})", _MARLANN_LABEL, "", "", "",
                     f"{MARLANN['clock_mhz']:g}", "", "", _si(MARLANN["mac_per_s"], "MAC/s"),
                     ""])
    return rows


def _weight_rows(runs, network):
    rows = []
    for run in (r for r in runs if r.network == network):
        f = compare_metrics.figures(run)
        energy = f["energy"]
        memory = sum(v for k, v in energy.parts.items() if "memor" in k)
        rows.append([_chip(run.design), run.variant, f"{f['bits_stored']:,}",
                     f"{f['file_weight_bits']:,}", f"{f['file_bytes']:,}",
                     f"{f['bits_moved']:,.0f}", f"{energy.total / 1e3:.1f}",
                     f"{memory / energy.total:.0%}", f"{f['dram_weights_pj'] / 1e3:.1f}"])
    return rows


def _pairs(runs, variant="dense"):
    """``(board, network, SD run, other run)`` for every board and network."""
    for sd in (r for r in runs if r.variant == "SD"):
        other = next((r for r in runs if r.variant == variant and r.network == sd.network
                      and r.design.board == sd.design.board), None)
        if other is not None:
            yield sd.design.board, sd.network, sd, other


def _logic(design):
    if design.build is None:
        return None
    return compare_metrics.resources(design.build, design.family)["logic"]


def _ratio_rows(runs, variant):
    rows = []
    for board, network, sd, other in _pairs(runs, variant):
        a, b = compare_metrics.figures(sd), compare_metrics.figures(other)
        logic = _logic(sd.design), _logic(other.design)
        fmax = sd.design.fmax_mhz, other.design.fmax_mhz
        rows.append([_chip(sd.design), network,
                     _ratio(*logic) if None not in logic else "-",
                     _ratio(*fmax) if None not in fmax else "-",
                     _ratio(a["cycles"], b["cycles"]),
                     _ratio(a["dense_mac_per_s"], b["dense_mac_per_s"]),
                     _ratio(a["bits_stored"], b["bits_stored"]),
                     _ratio(a["file_weight_bits"], b["file_weight_bits"]),
                     _ratio(a["bits_moved"], b["bits_moved"]),
                     _ratio(a["energy"].total, b["energy"].total),
                     _ratio(a["energy"].total + a["dram_weights_pj"],
                            b["energy"].total + b["dram_weights_pj"])])
    return rows


def _energy_rows(runs):
    parts = None
    rows = []
    for run in runs:
        energy = compare_metrics.figures(run)["energy"]
        parts = parts or list(energy.parts)
        rows.append([_chip(run.design), run.network, run.variant]
                    + [f"{energy.parts[p] / 1e3:.2f}" for p in parts]
                    + [f"{energy.total / 1e3:.2f}"])
    return parts or [], rows


def _goal_rows(runs):
    rows = []
    for board, network, sd, dense in _pairs(runs):
        if board != "icebreaker":
            continue
        a, b = compare_metrics.figures(sd), compare_metrics.figures(dense)
        rows.append([network, "dense-equivalent MAC/s higher",
                     _si(a["dense_mac_per_s"], "MAC/s"), _si(b["dense_mac_per_s"], "MAC/s"),
                     "yes" if a["dense_mac_per_s"] > b["dense_mac_per_s"] else "**no**"])
        rows.append([network, "at least 4x fewer weight bits on chip",
                     f"{a['bits_stored']:,}", f"{b['bits_stored']:,}",
                     f"{'yes' if 4 * a['bits_stored'] <= b['bits_stored'] else '**no**'} "
                     f"({b['bits_stored'] / a['bits_stored']:.2f}x)"])
        fmax = sd.design.fmax_mhz, dense.design.fmax_mhz
        if None in fmax:
            rows.append([network, "fmax equal or better", "not built", "not built", "-"])
        else:
            rows.append([network, "fmax equal or better", f"{fmax[0]:.1f} MHz",
                         f"{fmax[1]:.1f} MHz", "yes" if fmax[0] >= fmax[1] else "**no**"])
    return rows


def _speed_rows(designs, speed, decomposition):
    rows = [[f"decomposition, ResNet-18-sized weights ({r['parameters']:,} parameters, "
             f"{r['blocks']:,} blocks), {label}", f"{r['seconds']:.2f} s wall, "
             f"{r['cpu_seconds']:.2f} s CPU"] for label, r in decomposition]
    rows += [[f"Verilog generation, {_chip(d)} {_LABELS[d.kind]} core",
              f"{d.generate_seconds:.1f} s"] for d in designs]
    run, measured = speed
    rows += [[f"simulation, {simulator}: digits {run.network} on the {_chip(run.design)} SD "
              "core", f"{cycles:,.0f} cycles/s ({per_s:.2f} inferences/s)"]
             for simulator, per_s, cycles in measured]
    return rows


def markdown(designs, runs, speed, decomposition, *, stamp, seeds, quick, images, analysis,
             minutes, up5k_table=None):
    networks = list(dict.fromkeys(r.network for r in runs))
    built = "not built (`--quick`: throughput at the board clock)" if quick else \
        f"built with {seeds} place-and-route seed(s) each"
    if any(d.build_reused for d in designs):
        built += (" (builds reused from an earlier run of the same configurations and sources, "
                  "`--reuse-builds`)")
    lines = [
        "# SmartDeal against dense int8: benchmarks",
        "",
        "`make bench` (`python bench/bench_compare.py --out docs/benchmarks.md`) builds and "
        "measures, in one run, two accelerators generated by sd-hw for each board: the "
        "SmartDeal core (SD) of the board's SDCore configuration (its `--core sd` one; the "
        "boards' defaults are the serial core), and the dense int8 core "
        "of the same configuration with `weights=\"dense\"` (same lanes, multipliers and "
        "buffer depths; int8 weight rows instead of Ce codes and bases, no basis memories, "
        "no rebuild PEs). Both run the bundled digits MLP and CNN (trained 10 epochs with a "
        "fixed seed, not retrained: accuracy is not the point here) on their RTL under "
        f"Verilator, checked against the golden model. Designs {built}; this run took "
        f"{minutes:.0f} min.",
        "",
        f"Run on {stamp}.",
        "",
        "Networks: SD is group-pruned (MLP fc1 0.5; CNN conv2 0.5 and fc "
        "0.5, groups of 32 filters) and decomposed; \"dense\" is the same float network "
        "in int8, unpruned; \"dense, pruned\" (an ablation) is int8 with the very same "
        "pruning masks, on the dense core, which skips all-zero weight rows too.",
        "",
        "Every figure is also in [benchmarks.json](benchmarks.json), one record per board, "
        "design and network.",
        "",
    ]
    if up5k_table is not None:
        lines += [UP5K_TABLE[0], up5k_table, UP5K_TABLE[1], ""]
    lines += [
        "## Designs",
        "",
        "Resources after place and route of the whole board design (core, host link, UART), "
        "first seed; fmax min / **median** / max over the seeds of the core's clock.",
        "",
    ]
    lines += _table(["board (chip)", "design", "lanes", "weight memory", "logic (LC / LUT4)",
                     "FF", "DSP", "block RAM", "fmax (MHz)", "PLL clock (MHz)",
                     "build (min)"], _design_rows(designs),
                    ["---", "---", "---:", "---", "---:", "---:", "---:", "---:", "---", "---:",
                     "---:"])
    lines += [
        "",
        f"**Published anchor, not re-measured:** {MARLANN['name']} on the {MARLANN['chip']}: "
        f"{MARLANN['note']}. Its row in the CNN speed table gives its published real MAC/s at "
        "its 12 MHz clock, on its own networks, not on the digits networks; sd-hw's figures "
        "are at each design's median fmax (about twice that clock on the UP5K).",
        "",
    ]
    for network in networks:
        macs = compare_metrics.dense_macs(next(r for r in runs if r.network == network)
                                          .net.network)
        lines += [f"## Digits {network.upper()}: speed", "",
                  f"Dense-equivalent MACs per inference: {macs:,}.", ""]
        lines += _table(["board (chip)", "design", "cycles / inference (RTL)",
                         "golden estimate", "bit-exact, counters match", "clock (MHz)",
                         "inferences/s", "dense-eq. MAC/s", "multiplier MAC/s",
                         "shift-adds/s"], _performance_rows(runs, network),
                        ["---", "---"] + ["---:"] * 8)
        lines += ["", f"## Digits {network.upper()}: weights and energy", ""]
        lines += _table(["board (chip)", "design", "weight bits on chip",
                         "weight bits in the file", "weight file (bytes)",
                         "weight bits moved / inference", "energy estimate (nJ)",
                         "of which memories", "weights from DRAM (nJ)"],
                        _weight_rows(runs, network), ["---", "---"] + ["---:"] * 7)
        lines.append("")
    for variant, title in (("dense", "SD / dense"), ("dense, pruned",
                                                     "SD / dense with the same pruning")):
        lines += [f"## Ratios {title}", "",
                  "Below 1 means SD uses less, except for fmax and MAC/s (above 1: SD is "
                  "faster).", ""]
        lines += _table(["board (chip)", "network", "logic", "fmax", "cycles",
                         "dense-eq. MAC/s", "weight bits on chip", "weight bits in the file",
                         "weight bits moved", "energy", "energy + weights from DRAM"],
                        _ratio_rows(runs, variant), ["---", "---"] + ["---:"] * 9)
        lines.append("")
    parts, rows = _energy_rows(runs)
    lines += ["## Energy estimate by part (nJ per inference)", ""]
    lines += _table(["board (chip)", "network", "design"] + parts + ["total"], rows,
                    ["---", "---", "---"] + ["---:"] * (len(parts) + 1))
    lines += ["", "## The goal on the UP5K", "",
              "Higher dense-equivalent throughput than the dense design, at least 4x fewer "
              "weight bits, at equal or better fmax.", ""]
    lines += _table(["network", "criterion", "SD", "dense", "met"], _goal_rows(runs),
                    ["---", "---", "---:", "---:", "---"])
    lines += ["", "## Where SD does not win yet, and why", "", ANALYSIS_BEGIN, analysis,
              ANALYSIS_END, "", "## Tool speed", ""]
    lines += _table(["what", "time"], _speed_rows(designs, speed, decomposition),
                    ["---", "---:"])
    lines += [
        "",
        "Decomposition as `bench/bench_decompose.py` measures it (after one warm-up run); "
        "Verilog generation is `sd_hw.generate.generate_core` (elaboration and conversion "
        "of SDCore) for each design's configuration; simulation speed as "
        "`bench/bench_simulate.py` measures it (the difference of two batches, so start-up "
        "cancels out), on the first board's SD core with all counters. Wall times on a "
        "2-CPU machine shared with other jobs.",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{image.stem}]({image.as_posix()})" for image in images]
    lines += ["", "## Definitions", ""] + _definitions() + ["", f"Run on {stamp}.", ""]
    return "\n".join(lines)


def _definitions():
    costs = "; ".join(f"{name} {value:g} pJ" for name, value in energy_model.COSTS.items())
    return [
        "- **cycles / inference**: the core's `cycles` counter from start to done, mean over "
        "the test images run; *golden estimate* is `sim.golden.counts.cycle_estimate`. "
        "*Bit-exact, counters match*: every output equals the golden model's and every "
        "counter `sim.golden.counts.expected_counters`. The RTL is the core alone (no "
        "UART) with the design's configuration and every counter built (the iCEBreaker "
        "builds only `cycles`; the others do not change the schedule).",
        "- **clock**: the design's median fmax over the seeds (or the board's default PLL "
        "clock when not built); **inferences/s** = clock / cycles per inference.",
        "- **dense-equivalent MACs** per inference: those of the dense network of the same "
        "shapes, zeros included (linear: in x out; conv: out x in x k x k x output pixels). "
        "**Dense-eq. MAC/s** = dense-equivalent MACs x inferences/s: the throughput a dense "
        "accelerator would need to match.",
        "- **multiplier MAC/s**: multiplications the BasisEngine actually does: 3 per issued "
        "row (`rows` counter) per lane, zero rows and idle lanes included. **shift-adds/s**: "
        "the SD weight rebuild's additions: 3 per nonzero Ce coefficient of every issued row "
        "(one per element of the coefficient's shifted basis row), counted from the integer "
        "network's factors and the lane grouping; 0 on the dense core.",
        "- **weight bits on chip**: words of the lanes' weight memories the program fills x "
        "their width (SD: 16-bit words, unpacked row records on the iCEBreaker and the "
        "packed coefficient stream on the ULX3S; dense: 25-bit int8 rows; length headers "
        "and lane padding included) + basis words x 16 (`CompiledProgram.usage`). "
        "**Weight bits in the file**: codes + index + bases (SD) or int8 weights (dense) of "
        "the weight file (`sd_hw.storage`), **weight file**: its whole size with metadata.",
        "- **weight bits moved / inference**: `weight_reads` x weight word bits + "
        "`basis_reads` x 16 (the lanes read their records once per output pixel).",
        f"- **energy estimate**: counts x per-access costs from {energy_model.SOURCE}: "
        f"{costs} (the midpoint of the table's 1.3-2.6 nJ). These are 45 nm ASIC figures, "
        "used only for SD / dense ratios, never as absolute claims about an FPGA. Widths "
        "between the table's points: adders linear between 8 and 32 bits, multipliers by "
        "the product of operand widths, memory "
        "accesses by the bits moved (10 pJ per 64 bits). Counted: weight, basis, index, "
        "parameter, program, activation (writes x 3 copies) and output memory accesses from "
        "the counters; 3 multiplications (weight width x 8: 17 bits rebuilt on SD, 8 on "
        "dense) and 3 accumulator additions per issued row and lane; one rebuilt-weight-wide "
        "addition per shift-add. *Weights from DRAM* is the energy of fetching every weight "
        "bit on chip once per inference from DRAM: the case of a "
        "network too large for the chip, where SmartDeal's storage savings pay most.",
    ]
