"""Accuracy and storage of shared bases: G filters with one basis per block.

    OMP_NUM_THREADS=1 python bench/bench_shared_basis.py [--datasets digits,mnist]
        [--groups 1,4,8,16] [--out docs/shared-basis.md] [--json docs/shared-basis.json]
        [--build build/shared] [--merge] [--seeds 1,2,3,4] [--rewrite]

For the digits CNN and the MNIST CNN, trains the float model once (the
demo's epochs and seed), then for every basis group size G (1 = a basis per
filter): group-prunes (digits: conv2 and fc 0.25, the digits demo; MNIST:
conv2 and fc1 0.75, the smallest MNIST weight file of docs/mnist-results.md),
decomposes with ``DecomposeParams(shared_basis=G)``, measures the float
SmartDeal model and the exact integer model on the test images, retrains
straight-through through the int8 projection (the demo's epochs; the
projection re-decomposes with the same G) and measures again. Per run:
reconstruction error (relative Frobenius norm of ``W - Ce.B`` against the
pruned weight ``W``, per layer and overall), storage report of the weight
file (basis bits counted once per group), decomposition time. Results are
written after every run, so an interrupted sweep keeps what it measured.

``--seeds`` repeats the runs from float models trained with other seeds and
keeps the accuracies and errors (a table of mean, min and max per G), to
tell a difference between two G from seed noise. ``--merge`` keeps the
results of ``--json`` that a call does not repeat; ``--rewrite`` only
rewrites the markdown from the JSON.

The MNIST weight file of each G is left in ``--build`` (``mnist-cnn-g<G>.sdw``,
with ``test_inputs.npy``, ``test_labels.npy`` and ``test_inputs_int8-g<G>.npy``,
the inputs quantised with that file's input scale) for runs on the RTL.
"""

import argparse
import json
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
from sim.compress import (CompressOptions, calibrate, decompose, integerise,  # noqa: E402
                          project, prune_masks)
from sim.demo import DEMO_EPOCHS, MNIST_EPOCHS  # noqa: E402
from sim.flow import retrain  # noqa: E402
from sim.golden.datasets import dataset  # noqa: E402
from sim.golden.decompose import DecomposeParams  # noqa: E402
from sim.golden.nn import accuracy  # noqa: E402
from sim.golden.reference import run  # noqa: E402
from sim.golden.train import train_float  # noqa: E402

#: Pruning per data set (CNN): the digits demo's, and MNIST's 0.75 sweep point.
PRUNE = {"digits": {"conv2": 0.25, "fc": 0.25}, "mnist": {"conv2": 0.75, "fc1": 0.75}}
EPOCHS = {"digits": DEMO_EPOCHS, "mnist": MNIST_EPOCHS}
#: Heading of the hand-written part of the markdown, kept when it is rewritten.
FINDINGS = "## Findings"


def reconstruction_error(network, params, masks, decomposed):
    """Relative Frobenius error ``|W - Ce.B| / |W|`` of the pruned weights, per layer and overall."""
    layers, num, den = {}, 0.0, 0.0
    for name, factors in decomposed.items():
        w = params[f"{name}.weight"] * masks[name]
        err = float(np.sum((w - factors.reconstruct()) ** 2))
        ref = float(np.sum(w ** 2))
        layers[name] = float(np.sqrt(err / ref)) if ref else 0.0
        num, den = num + err, den + ref
    return {"layers": layers, "overall": float(np.sqrt(num / den)) if den else 0.0}


def integer_accuracy(net, x, y):
    """Test accuracy of the exact integer model, and whether both dataflows agree."""
    x_int = net.quantize_input(x)
    logits = run(net, x_int, dataflow="rebuild")
    agree = bool(np.array_equal(logits, run(net, x_int, dataflow="factored")))
    return float(np.mean(np.argmax(logits, axis=1) == y)), agree


def measure(network, params, masks, options, calibration, x_test, y_test):
    """Decompose ``params``; float and integer test accuracy, errors, storage."""
    t = time.perf_counter()
    decomposed = decompose(network, params, masks, options)
    seconds = time.perf_counter() - t
    sd_params = project(params, decomposed)
    net = integerise(network, params, decomposed, calibrate(network, sd_params, calibration),
                     options)
    int_acc, agree = integer_accuracy(net, x_test, y_test)
    loaded = weight_file.read(weight_file.write(net))
    round_trip = bool(np.array_equal(run(loaded, net.quantize_input(x_test)),
                                     run(net, net.quantize_input(x_test))))
    report = storage_report(loaded)
    shared = {name: layer.weights.shared_basis for name, layer in loaded.layers.items()
              if layer.decomposed}
    return {
        "float": float(accuracy(network, sd_params, x_test, y_test)),
        "integer": int_acc,
        "dataflows_agree": agree,
        "file_round_trip": round_trip,
        "decompose_seconds": seconds,
        "error": reconstruction_error(network, params, masks, decomposed),
        "shared_basis": shared,
        "storage": {"weight_bits": report.total.storage_bits,
                    "basis_bits": report.total.basis_bits,
                    "code_bits": report.total.code_bits,
                    "index_bits": report.total.index_bits,
                    "file_bytes": report.file_bytes,
                    "layers": {r.name: {"storage_bits": r.storage_bits,
                                        "basis_bits": r.basis_bits} for r in report.layers}},
        "storage_table": report.format_table(),
    }, net


def sweep(name, groups, build, results, save, log):
    data_set = dataset(name)
    network = data_set.model("cnn")
    data = data_set.load(seed=0)
    x_train = data.inputs_for(network, "train")
    x_test = data.inputs_for(network, "test")
    calibration = x_train[:256]
    epochs = EPOCHS[name]
    log(f"\n=== {name}: float training, {epochs['train']} epochs ===")
    t = time.perf_counter()
    params = train_float(network, data, epochs=epochs["train"], seed=0)
    train_seconds = time.perf_counter() - t
    entry = results.setdefault(name, {})
    entry.update({"float": float(accuracy(network, params, x_test, data.y_test)),
                  "train_seconds": train_seconds, "epochs": dict(epochs),
                  "prune": PRUNE[name], "test_images": int(len(x_test))})
    entry.setdefault("runs", {})
    log(f"float test accuracy {100 * entry['float']:.2f} % ({train_seconds:.0f} s)")
    if name == "mnist":
        build.mkdir(parents=True, exist_ok=True)
        np.save(build / "test_inputs.npy", x_test)
        np.save(build / "test_labels.npy", data.y_test)
    for g in groups:
        log(f"\n--- {name}, shared_basis = {g} ---")
        options = CompressOptions(decompose=DecomposeParams(shared_basis=g), prune=PRUNE[name])
        masks = prune_masks(network, params, options)
        before, _ = measure(network, params, masks, options, calibration, x_test, data.y_test)
        log(f"no retraining: float {100 * before['float']:.2f} %, integer "
            f"{100 * before['integer']:.2f} %, error {before['error']['overall']:.4f}, "
            f"decomposed in {before['decompose_seconds']:.2f} s")
        t = time.perf_counter()
        retrained, history = retrain(network, params, data, masks, options, method="ste",
                                     epochs=epochs["retrain"], log=log)
        retrain_seconds = time.perf_counter() - t
        after, net = measure(network, retrained, masks, options, calibration, x_test,
                             data.y_test)
        log(f"retrained: float {100 * after['float']:.2f} %, integer "
            f"{100 * after['integer']:.2f} %, error {after['error']['overall']:.4f}, "
            f"weight bits {after['storage']['weight_bits']:,} "
            f"({retrain_seconds:.0f} s)")
        log(after["storage_table"])
        if name == "mnist":
            path = build / f"mnist-cnn-g{g}.sdw"
            weight_file.save(net, path)
            np.save(build / f"test_inputs_int8-g{g}.npy", net.quantize_input(x_test))
            log(f"wrote {path}")
        entry["runs"][str(g)] = {
            "shared_basis": g, "before": before, "after": after,
            "retrain_seconds": retrain_seconds,
            "validation": [{"accuracy": v.accuracy, "loss": v.loss} for v in history],
            "chosen_epoch": int(np.argmin([v.loss for v in history])) + 1 if history else 0}
        save()


def seed_sweep(name, groups, seeds, results, save, log):
    """The runs of :func:`sweep` for other float-training seeds (the
    retraining seed stays 0), keeping the accuracies and errors only: how
    much of a difference between two G is seed noise."""
    data_set = dataset(name)
    network = data_set.model("cnn")
    data = data_set.load(seed=0)
    x_test = data.inputs_for(network, "test")
    calibration = data.inputs_for(network, "train")[:256]
    epochs = EPOCHS[name]
    entry = results.setdefault(f"{name} seeds", {"runs": {}})
    entry.update({"prune": PRUNE[name], "epochs": dict(epochs),
                  "test_images": int(len(x_test))})
    for seed in seeds:
        params = train_float(network, data, epochs=epochs["train"], seed=seed)
        float_acc = float(accuracy(network, params, x_test, data.y_test))
        for g in groups:
            options = CompressOptions(decompose=DecomposeParams(shared_basis=g),
                                      prune=PRUNE[name])
            masks = prune_masks(network, params, options)
            before, _ = measure(network, params, masks, options, calibration, x_test,
                                data.y_test)
            retrained, _ = retrain(network, params, data, masks, options, method="ste",
                                   epochs=epochs["retrain"])
            after, _ = measure(network, retrained, masks, options, calibration, x_test,
                               data.y_test)
            log(f"{name} seed {seed}, G = {g}: float {100 * float_acc:.2f} %, integer "
                f"{100 * before['integer']:.2f} % -> {100 * after['integer']:.2f} % retrained")
            runs = entry["runs"].setdefault(str(g), [])
            runs[:] = [r for r in runs if r["seed"] != seed]
            runs.append({"seed": seed, "float": float_acc,
                         "integer_before": before["integer"], "integer_after": after["integer"],
                         "float_after": after["float"],
                         "error_before": before["error"]["overall"],
                         "error_after": after["error"]["overall"],
                         "weight_bits": after["storage"]["weight_bits"],
                         "checks": all(m[k] for m in (before, after)
                                       for k in ("dataflows_agree", "file_round_trip"))})
            save()


def _seed_table(name, entry):
    runs = sorted(entry["runs"].items(), key=lambda item: int(item[0]))
    seeds = sorted({r["seed"] for _, rs in runs for r in rs})

    def stat(values, fmt):
        values = np.asarray(values)
        return f"{fmt(values.mean())} ({fmt(values.min())} .. {fmt(values.max())})"

    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [f"## {name.split()[0]} CNN over float-training seeds {', '.join(map(str, seeds))}",
             "",
             "The same runs (retraining seed 0) from float models trained with other seeds: "
             "mean (min .. max) over the seeds; the float models score "
             + stat([r["float"] for r in runs[0][1]], pct) + " %.", "",
             "| G | integer, no retraining | integer, retrained | float SD, retrained "
             "| error, no retraining | error, retrained | weight bits |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for g, rs in runs:
        lines.append(f"| {g} | {stat([r['integer_before'] for r in rs], pct)} | "
                     f"{stat([r['integer_after'] for r in rs], pct)} | "
                     f"{stat([r['float_after'] for r in rs], pct)} | "
                     f"{stat([r['error_before'] for r in rs], lambda v: f'{v:.4f}')} | "
                     f"{stat([r['error_after'] for r in rs], lambda v: f'{v:.4f}')} | "
                     f"{stat([r['weight_bits'] for r in rs], lambda v: f'{v:,.0f}')} |")
    checks = all(r["checks"] for _, rs in runs for r in rs)
    lines += ["", "Dataflows agree and weight files read back in every run: "
              + ("yes." if checks else "NO (see the JSON)."), ""]
    return lines


def _pct(value):
    return f"{100 * value:.2f}"


def markdown(results, stamp, command):
    lines = [
        "# Shared bases: accuracy and storage",
        "",
        f"Last call: `{command}` (the calls that made this page are listed under Findings, "
        "when there is more than one).",
        "",
        "`shared_basis` = G gives the G consecutive output filters of a group one 3x3 basis per "
        "block of rows (docs/decomposition.md, \"Shared bases\"); G = 1 is SmartDeal's basis "
        "per filter. Hardware with a basis engine per lane group computes `z = B x` once for "
        "the group's lanes. Each data set's float model is trained once (seed 0), then for "
        "every G: group pruning, decomposition, straight-through retraining through the int8 "
        "projection (the demo's recipe and epochs; the projection re-decomposes with the same "
        "G), integerisation. Accuracies in % on the test images; \"integer\" is the exact "
        "integer golden model. Error: relative Frobenius norm of `W - Ce.B` over all "
        "decomposed layers, `W` the pruned weight (before retraining: the float model's; after: "
        "the retrained one's). Weight bits: codes + index + bases of the weight file "
        "(storage report; a shared basis is stored once per group). Decomposition: seconds "
        "for all layers once, NumPy on one thread (OMP_NUM_THREADS=1) on a shared machine.",
        "",
    ]
    for name, entry in results.items():
        if name.endswith(" seeds"):
            lines += _seed_table(name, entry)
            continue
        prune = ", ".join(f"{k} {v}" for k, v in entry["prune"].items())
        lines += [
            f"## {name} CNN",
            "",
            f"Float model: {_pct(entry['float'])} % on {entry['test_images']} test images "
            f"({entry['epochs']['train']} epochs). Pruning per 32 filters: {prune}. "
            f"Retraining: {entry['epochs']['retrain']} epochs, the epoch with the lowest "
            f"validation loss kept.",
            "",
            "| G | float SD, no retraining | integer, no retraining | error, no retraining "
            "| float SD, retrained | integer, retrained | error, retrained | weight bits "
            "| of which basis | file bytes | decomposition s | retraining s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        runs = sorted(entry["runs"].items(), key=lambda item: int(item[0]))
        for g, r in runs:
            b, a = r["before"], r["after"]
            s = a["storage"]
            lines.append(
                f"| {g} | {_pct(b['float'])} | {_pct(b['integer'])} | "
                f"{b['error']['overall']:.4f} | {_pct(a['float'])} | {_pct(a['integer'])} | "
                f"{a['error']['overall']:.4f} | {s['weight_bits']:,} | {s['basis_bits']:,} | "
                f"{s['file_bytes']:,} | {b['decompose_seconds']:.3f} | {r['retrain_seconds']:.0f} |")
        checks = all(r[when][key] for _, r in runs for when in ("before", "after")
                     for key in ("dataflows_agree", "file_round_trip"))
        lines += ["", "Rebuild and factored integer dataflows agree, and the weight file "
                      "reads back to the same outputs, in every run: "
                      + ("yes." if checks else "NO (see the JSON)."),
                  "", "Reconstruction error per layer, no retraining / retrained:", "",
                  "| G | " + " | ".join(next(iter(entry["runs"].values()))["before"]["error"]
                                       ["layers"]) + " |",
                  "|---:|" + "---:|" * len(next(iter(entry["runs"].values()))["before"]
                                           ["error"]["layers"])]
        for g, r in runs:
            cells = [f"{r['before']['error']['layers'][n]:.4f} / "
                     f"{r['after']['error']['layers'][n]:.4f}"
                     for n in r["before"]["error"]["layers"]]
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Run: {stamp}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--groups", default="1,4,8,16",
                        help="basis group sizes G, comma separated (default 1,4,8,16)")
    parser.add_argument("--out", type=Path, help="write the markdown results here")
    parser.add_argument("--json", type=Path, help="write the JSON results here")
    parser.add_argument("--build", type=Path, default=Path("build/shared"),
                        help="folder for the MNIST weight files (default build/shared)")
    parser.add_argument("--seeds", default="",
                        help="other float-training seeds, comma separated: the --groups runs "
                             "again from each seed's float model, accuracies and errors only")
    parser.add_argument("--rewrite", action="store_true",
                        help="only rewrite --out from the results in --json (no runs)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of --json that this call does not repeat (the "
                             "float models are deterministic: same seed, same model)")
    args = parser.parse_args(argv)
    groups = [int(g) for g in args.groups.split(",") if g]
    names = [n for n in args.datasets.split(",") if n]
    command = "OMP_NUM_THREADS=1 python bench/bench_shared_basis.py " + " ".join(
        a if " " not in a else repr(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = {}
    if args.rewrite:
        if not (args.json and args.out):
            parser.error("--rewrite needs --json and --out")
        payload = json.loads(args.json.read_text())
        old = args.out.read_text() if args.out.exists() else ""
        findings = old[old.index(FINDINGS):] if FINDINGS in old else ""
        args.out.write_text(markdown(payload["results"], payload["run"], payload["command"])
                            + ("\n" + findings if findings else ""))
        return 0
    if args.merge and args.json and args.json.exists():
        results = json.loads(args.json.read_text())["results"]
    start = time.perf_counter()

    def save():
        stamp = run_stamp()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            payload = {"run": stamp, "command": command, "load_average": os.getloadavg()[0],
                       "results": results}
            args.json.write_text(json.dumps(payload, indent=1) + "\n")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            # A hand-written "## Findings" section of an earlier file is kept.
            old = args.out.read_text() if args.out.exists() else ""
            findings = old[old.index(FINDINGS):] if FINDINGS in old else ""
            args.out.write_text(markdown(results, stamp, command)
                                + ("\n" + findings if findings else ""))

    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    for name in names:
        if seeds:
            seed_sweep(name, groups, seeds, results, save, print)
        else:
            sweep(name, groups, args.build, results, save, print)
    print(markdown(results, run_stamp(), command))
    print(f"bench_shared_basis: {time.perf_counter() - start:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
