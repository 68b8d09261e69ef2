"""Shared bases in hardware: the factored serial core against the rebuild one, on the boards.

    python bench/bench_shared.py [--shared build/shared] [--images 1000] [--ecp5-images 16]
                                 [--seeds 2] [--builds build/bench-shared] [--reuse]
                                 [--out docs/benchmarks.md] [--json docs/benchmarks.json]

The MNIST CNN decomposed with ``--shared-basis 8`` (conv2 and fc1 pruned 0.75,
retrained; ``bench_shared_basis.py --datasets mnist --groups 8`` leaves it in
``--shared`` as ``mnist-cnn-g8.sdw`` with its int8 test inputs) runs under
Verilator on the RTL of

* the iCEBreaker's shared-basis core (``boards/icebreaker.py`` SHARED_CONFIG:
  the factored dataflow, one basis engine for 8 lanes) and its default rebuild
  core (DEFAULT_CONFIG), the same network on both;
* the ULX3S's shared-basis core (``boards/ulx3s.py`` SHARED_CONFIG: 32 lanes,
  four basis engines, eleven weight banks) and its default rebuild core.

Every output and counter is compared with the golden model (``bench_serial.measure``).
The boards are built as ``sd-hw build`` builds them: the iCEBreaker's two cores at
30 MHz (``--seeds`` seeds for the shared one, one for the rebuild one), the ULX3S's
shared core at 40 MHz (one seed); ``--reuse`` takes a build's report.json from
``--builds`` when it was made for the same configuration (``sd-hw build -o``).

The section also works out, from the golden model's cycle estimate
(``sim/golden/serial_counts.py``), what limits the element-serial cores: a lane
group reads one record of ``1 + lanes`` 16-bit words per output pixel and Ce row,
``ceil((1 + lanes) / banks)`` reads, and uses it for three cycles at least.
The table goes between its markers in ``--out``; one record per board x design
x network into ``--json`` (design ``sd-shared`` for the shared-basis cores).
"""

import argparse
import json
import math
import statistics
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
from report_sections import with_marked  # noqa: E402
from run_stamp import run_stamp  # noqa: E402
from boards import board_module, board as board_spec  # noqa: E402
from sd_hw import weight_file  # noqa: E402
from sd_hw.errors import SdHwError  # noqa: E402
from sim.golden.serial_counts import (SerialShape, serial_cycle_estimate,  # noqa: E402
                                     serial_pass_cycles, _groups)

WRITER = "bench_shared.py"
SECTION = ("<!-- shared-basis table: written by bench/bench_shared.py; bench_compare.py keeps "
           "it when it rewrites this file -->", "<!-- end of shared-basis table -->")
NETWORK = "mnist-cnn, pruned 0.75, shared bases G = 8"
#: Multiply-accumulates a cycle the UP5K's DSPs can do at most: 8 SB_MAC16, two
#: signed 8x8 products each.
UP5K_ROOFLINE = 16
#: MARLANN on the UP5K, re-measured on the same tools (bench_up5k.py, quoted).
MARLANN_MMACS = 376
#: (board, kind, config attribute, clock MHz, family).
DESIGNS = (("icebreaker", "shared", "SHARED_CONFIG", 30, "ice40"),
           ("icebreaker", "rebuild", "DEFAULT_CONFIG", 30, "ice40"),
           ("ulx3s", "shared", "SHARED_CONFIG", 40, "ecp5"),
           ("ulx3s", "rebuild", "DEFAULT_CONFIG", 40, "ecp5"))
#: Designs built (the ULX3S's rebuild core is only simulated: docs/serial-core.md
#: has its build).
BUILT = {("icebreaker", "shared"), ("icebreaker", "rebuild"), ("ulx3s", "shared")}


def config_of(board, attribute):
    return getattr(board_module(board_spec(board)), attribute)


def record_reads(config):
    return -(-(1 + config.lanes) // config.weight_banks)


def peak_lane_macs(config):
    """Lane multiply-accumulates a cycle when every record is a full row: 3 a lane per
    record, a record every max(3, reads) cycles."""
    return 3 * config.lanes / max(3, record_reads(config))


def layer_estimate(net, config):
    """``{layer: estimated cycles}`` of the passes per compute layer (records, zero
    elements, the lanes' capture spacing; not the fixed costs)."""
    shape = SerialShape(lanes=config.lanes, record_reads=record_reads(config))
    cycles = {}
    network = net.network
    for op, _, columns in _groups(net, shape):
        name = network.layers[op.compute].name
        cycles[name] = cycles.get(name, 0) + int(serial_pass_cycles(columns, shape).sum())
    return cycles


def load_build(path, config):
    """The figures of the build whose report.json is ``path`` if it was made for
    ``config``, else None."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    if report["config"] != config.to_dict():
        return None
    return report


def build(board, config, clock, seeds, out_dir, log):
    from boards.build import build_board
    report = build_board(board, config, out_dir=out_dir, seeds=seeds, clock=clock, log=log)
    return report.to_dict()


def build_figures(report, family):
    """``{lut_or_lc, dsp, bram, spram, fmax (min, median, max), meets_timing}``."""
    logic, memory, dsp, _ = compare_metrics._BELS[family]
    use = report["utilisation"]
    fmax = min((values for values in report["fmax_mhz"].values()),
               key=lambda v: statistics.median(v))
    return {"lut_or_lc": use[logic]["used"], "logic_available": use[logic]["available"],
            "dsp": use[dsp]["used"], "bram": use[memory]["used"],
            "spram": use.get("ICESTORM_SPRAM", {}).get("used", 0),
            "fmax": (min(fmax), statistics.median(fmax), max(fmax)),
            "seeds": len(fmax), "meets_timing": report["meets_timing"],
            "clock_mhz": report["clock_hz"] / 1e6}


def hypotheses(net, fmax_mhz):
    """Golden-model estimates for UP5K-sized cores with more record bandwidth."""
    rows = []
    for lanes, banks, note in ((8, 3, "the iCEBreaker's cores: three SPRAM banks"),
                               (11, 4, "all four SPRAMs as banks (activations in EBR)"),
                               (16, 6, "16 lanes, six 16-bit banks (no UP5K has them)"),
                               (32, 11, "32 lanes, eleven banks (the ULX3S's shared core)")):
        shape = SerialShape(lanes=lanes, record_reads=-(-(1 + lanes) // banks))
        cycles = serial_cycle_estimate(net, shape)
        dense = bench_serial.dense_macs(net.network) / cycles
        rows.append({"lanes": lanes, "banks": banks, "note": note, "cycles": cycles,
                     "dense_macs_per_cycle": dense, "mmacs": dense * fmax_mhz})
    return rows


def markdown(results, builds, hypothesis_rows, layer_rows, *, stamp, images, ecp5_images,
             minutes):
    def cell(value, digits=0):
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "### Shared bases in hardware (`bench/bench_shared.py`)",
        "",
        f"The MNIST CNN decomposed with `--shared-basis 8` (conv2 and fc1 pruned 0.75, "
        f"retrained: [shared-basis.md](shared-basis.md)) on the RTL of each board's "
        f"shared-basis core (design `sd-shared`, the factored dataflow: one basis "
        f"engine computes `z = B x` for 8 lanes on two SB_MAC16 / MULT18X18D, each lane "
        f"shift-adds its three coefficients' terms) and of its default rebuild core, "
        f"the same weight file on both. Verilator, every output and counter against "
        f"the golden model: {images} test images on the iCEBreaker's cores, "
        f"{ecp5_images} on the ULX3S's (an inference's cycles do not depend on the "
        f"image). Builds as `sd-hw build` makes them (every counter, host link, UART, "
        f"PLL), every seed required to meet the clock; MMAC/s at the median fmax.",
        "",
        "| board | core | lanes / banks | LC or LUT4 | DSP | block RAM | SPRAM | fmax MHz (seeds) "
        "| cycles / inference | dense-eq. MACs / cycle | peak lane MACs / cycle | dense-eq. "
        "MMAC/s | accuracy RTL (golden) | bit-exact |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|"]
    for (board, kind), run in results.items():
        config = run["config"]
        b = builds.get((board, kind))
        if b is not None:
            low, median, high = b["fmax"]
            fmax = (f"{median:.2f} ({', '.join(f'{v:.2f}' for v in sorted({low, median, high}))};"
                    f" {b['seeds']} seed{'s' * (b['seeds'] > 1)} at {b['clock_mhz']:g})")
            resources = [f"{b['lut_or_lc']:,} / {b['logic_available']:,}", str(b["dsp"]),
                         str(b["bram"]), str(b["spram"])]
            mmacs = cell(run["dense_equivalent_macs_per_cycle"] * median, 0)
        else:
            fmax, resources, mmacs = "not built", ["-"] * 4, "-"
        lines.append(
            f"| {board} | {kind} | {config.lanes} / {config.weight_banks} | "
            + " | ".join(resources)
            + f" | {fmax} | {run['cycles_per_inference']:,} | "
            f"{run['dense_equivalent_macs_per_cycle']:.2f} | {peak_lane_macs(config):.2f} | "
            f"{mmacs} | {100 * run['accuracy_rtl']:.2f} % ({100 * run['accuracy_golden']:.2f} %)"
            f" | {'yes' if run['bit_exact'] and not run['counter_mismatches'] else 'NO'} |")
    lines += [
        "",
        f"Against the UP5K's DSP roofline ({UP5K_ROOFLINE} MACs a cycle: 8 SB_MAC16 x two "
        f"8x8 products) and MARLANN's {MARLANN_MMACS} MMAC/s (re-measured, quoted). "
        "Where the cycles go (golden-model estimate of the passes' time per layer: "
        "records, zero elements, the lanes' capture spacing; the measured total includes "
        "fixed costs per operation and group):",
        "",
        "| board | core | " + " | ".join(layer_rows[0][2]) + " |",
        "|---|---|" + "---:|" * len(layer_rows[0][2])]
    for board, kind, cycles in layer_rows:
        lines.append(f"| {board} | {kind} | " + " | ".join(f"{c:,}" for c in cycles.values())
                     + " |")
    lines += [
        "",
        "Two limits show. A record is read again for every output pixel, so the weight "
        "banks bound the lanes' rate (peak lane MACs / cycle above); and a pass's sums "
        "leave the lanes one a cycle, so a pass takes at least `lanes` cycles: a layer "
        "with few input rows and few output channels (conv1: one input channel, 8 "
        "filters) gets slower with more lanes, a wide linear layer (fc1) faster. What "
        "would change it (golden-model cycle estimates of the same network, the "
        "element-serial front end unchanged; MMAC/s at the iCEBreaker shared core's "
        "median fmax):",
        "",
        "| lanes | 16-bit weight banks | record reads | cycles / inference | dense-eq. MACs / "
        "cycle | MMAC/s | |",
        "|---:|---:|---:|---:|---:|---:|---|"]
    for row in hypothesis_rows:
        lines.append(f"| {row['lanes']} | {row['banks']} | "
                     f"{-(-(1 + row['lanes']) // row['banks'])} | {row['cycles']:,} | "
                     f"{row['dense_macs_per_cycle']:.2f} | {row['mmacs']:.0f} | {row['note']} |")
    lines += ["", f"Run on {stamp}; {minutes:.0f} min."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("build/shared"),
                        help="where bench_shared_basis.py left mnist-cnn-g8.sdw")
    parser.add_argument("--images", type=int, default=1000,
                        help="test images on the iCEBreaker's cores")
    parser.add_argument("--ecp5-images", type=int, default=16,
                        help="test images on the ULX3S's cores")
    parser.add_argument("--seeds", type=int, default=2,
                        help="place-and-route seeds of the iCEBreaker's shared core")
    parser.add_argument("--builds", type=Path, default=Path("build/bench-shared"))
    parser.add_argument("--reuse", action="store_true",
                        help="take builds made for the same configuration from --builds")
    parser.add_argument("--no-build", action="store_true", help="simulate only")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    path = args.shared / "mnist-cnn-g8.sdw"
    if not path.is_file():
        raise SdHwError(f"{path}: no such file; run python bench/bench_shared_basis.py "
                        f"--datasets mnist --groups 8 --build {args.shared}")
    net = weight_file.load(path)
    x = np.load(args.shared / "test_inputs_int8-g8.npy")
    labels = np.load(args.shared / "test_labels.npy")
    stamp = run_stamp()

    results, builds = {}, {}
    for board, kind, attribute, clock, family in DESIGNS:
        config = config_of(board, attribute)
        images = args.images if family == "ice40" else args.ecp5_images
        run = bench_serial.measure(f"{board} {kind}", path, x, labels, images=images,
                                   build_dir=args.builds / "sim" / f"{board}-{kind}", log=print,
                                   config=config)
        if "refused" in run:
            raise SdHwError(f"{board} {kind}: {run['refused']}")
        run["config"] = config
        results[(board, kind)] = run
        if args.no_build or (board, kind) not in BUILT:
            continue
        folder = args.builds / kind
        report = load_build(folder / board / "report.json", config) if args.reuse else None
        if report is None:
            seeds = args.seeds if (board, kind) == ("icebreaker", "shared") else 1
            try:
                report = build(board, config, clock, seeds, folder, print)
            except SdHwError as error:
                print(f"{board} {kind}: build refused: {error}")
                continue
        builds[(board, kind)] = build_figures(report, family)

    shared_fmax = builds.get(("icebreaker", "shared"), {}).get("fmax", (30, 30, 30))[1]
    hypothesis_rows = hypotheses(net, shared_fmax)
    layer_rows = [(board, kind, layer_estimate(net, run["config"]))
                  for (board, kind), run in results.items()]
    records = []
    for (board, kind), run in results.items():
        config = run["config"]
        b = builds.get((board, kind), {})
        cycles = run["cycles_per_inference"]
        dense = run["dense_equivalent_macs"] / cycles
        median = b.get("fmax", (None, None, None))[1]
        records.append(benchmark_records.record(
            board=board, design="sd-shared" if kind == "shared" else
            f"SerialCore SD, {config.lanes} lanes (rebuild)", network=NETWORK,
            source="measured", stamp=stamp, lut_or_lc=b.get("lut_or_lc"), dsp=b.get("dsp"),
            bram=b.get("bram"), spram=b.get("spram"), fmax_mhz_median=median,
            cycles_per_inference=cycles,
            dense_equivalent_macs_per_s=None if median is None else dense * median * 1e6,
            weight_bits_on_chip=run["weight_bits_on_chip"], parameters=run["parameters"],
            dense_equivalent_macs_per_cycle=dense,
            peak_lane_macs_per_cycle=peak_lane_macs(config),
            roofline_macs_per_cycle=UP5K_ROOFLINE if board == "icebreaker" else None,
            accuracy_rtl=run["accuracy_rtl"], accuracy_golden=run["accuracy_golden"],
            images=run["images"],
            bit_exact=run["bit_exact"] and not run["counter_mismatches"],
            dataflow=config.datapath.dataflow, lanes=config.lanes,
            weight_banks=config.weight_banks))
    text = markdown(results, builds, hypothesis_rows, layer_rows, stamp=stamp,
                    images=args.images, ecp5_images=args.ecp5_images,
                    minutes=(time.perf_counter() - started) / 60)
    page = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(with_marked(page, SECTION, text, before="## Designs"))
    benchmark_records.write_merged(args.json, WRITER, records)
    print(text)
    print(f"wrote {args.out} and {args.json}")
    return 0 if all(r["bit_exact"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
