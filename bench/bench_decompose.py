"""Benchmark the vectorised SmartDeal decomposition on ResNet-18-sized weights.

    python bench/bench_decompose.py [--out docs/bench-decompose.md]

Random weights (normal * sqrt(2 / fan_in), fixed seed) with the real
ResNet-18 shapes: every 3x3 conv of layers 1-4, the three 1x1 downsample
convs and the 1000x512 classifier (the 7x7 stem stays dense and is
skipped). All layers are decomposed in one stacked call, once with the
default parameters and once with group pruning of 0.5 on every layer.
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.golden.decompose import (DecomposeParams, decompose_weights,  # noqa: E402
                                  group_prune_mask)
from sim.golden.pow2 import round_pow2  # noqa: E402


def resnet18_shapes():
    """Weight shapes of ResNet-18's decomposable layers, by name."""
    shapes = {}
    in_ch = 64
    for stage, out_ch in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            first_in = in_ch if block == 0 else out_ch
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1"] = (out_ch, first_in, 3, 3)
            shapes[f"{prefix}.conv2"] = (out_ch, out_ch, 3, 3)
            if block == 0 and first_in != out_ch:
                shapes[f"{prefix}.downsample"] = (out_ch, first_in, 1, 1)
        in_ch = out_ch
    shapes["fc"] = (1000, 512)
    return shapes


def random_weights(seed=0):
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in resnet18_shapes().items():
        fan_in = int(np.prod(shape[1:]))
        weights[name] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return weights


def run(weights, params, prune):
    """Decompose all layers once; return timing and quality figures."""
    start, cpu = time.perf_counter(), time.process_time()
    factors = decompose_weights(weights, params,
                                prune={name: prune for name in weights} if prune else None)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    num = den = num_pruned = den_pruned = 0.0
    zero_entries = zero_rows = entries = rows = 0
    for name, w in weights.items():
        f = factors[name]
        rebuilt = f.reconstruct()
        num += float(np.square(rebuilt - w).sum())
        den += float(np.square(w).sum())
        kept = np.where(group_prune_mask(w, prune, group=params.group), w, 0.0)
        num_pruned += float(np.square(rebuilt - kept).sum())
        den_pruned += float(np.square(kept).sum())
        zero = f.coefficients == 0
        zero_entries += int(zero.sum())
        entries += zero.size
        zero_rows += int(zero.all(axis=2).sum())
        rows += zero.shape[0] * zero.shape[1]
    used = np.concatenate([f.iterations.ravel() for f in factors.values()])
    return {
        "parameters": sum(w.size for w in weights.values()),
        "blocks": sum(f.out_channels * f.n_blocks for f in factors.values()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "mean_iterations": float(used.mean()),
        "capped": float((used == params.iterations).mean()),
        "rel_error": (num / den) ** 0.5,
        "rel_error_pruned": (num_pruned / den_pruned) ** 0.5,
        "zero_entries": zero_entries / entries,
        "zero_rows": zero_rows / rows,
    }


def markdown(results, params, naive, cold):
    lines = [
        "# Decomposition benchmark",
        "",
        "`python bench/bench_decompose.py --out docs/bench-decompose.md`: random "
        "ResNet-18-shaped weights (normal x sqrt(2/fan_in), seed 0; every 3x3 conv of "
        "layers 1-4, the 1x1 downsample convs and fc 1000x512; the 7x7 stem is dense "
        "and skipped), all layers decomposed in one stacked `decompose_blocks` call.",
        "",
        f"Parameters: `{params}`.",
        "",
        "| run | parameters | blocks | seconds (wall) | seconds (CPU) | mean iterations "
        "| blocks at the cap | rel. error vs W | rel. error vs pruned W "
        "| zero Ce entries | zero Ce rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results:
        lines.append(
            f"| {label} | {r['parameters']:,} | {r['blocks']:,} | {r['seconds']:.2f} "
            f"| {r['cpu_seconds']:.2f} | {r['mean_iterations']:.2f} | {r['capped']:.1%} "
            f"| {r['rel_error']:.4f} | {r['rel_error_pruned']:.4f} "
            f"| {r['zero_entries']:.1%} | {r['zero_rows']:.1%} |")
    lines += [
        "",
        "Relative error is ||Ce.B - W||_F / ||W||_F over all layers, against the "
        "original W (the pruned run then includes the pruning loss) and against the "
        "pruned W (the decomposition's own error). For comparison, rounding every "
        "weight to its nearest power of two (Ce = pow2(W), B = I) gives a relative "
        f"error of {naive:.4f}. Mean iterations counts alternating (B, Ce) updates per "
        "block before the quantised Ce stopped changing; \"at the cap\" blocks used all "
        f"{params.iterations}. Timings follow one warm-up run of the default setting "
        f"({cold:.2f} s wall: the first touch of fresh memory is slow on this VM); "
        "wall time is on a machine shared with other jobs (load average below), "
        "CPU time is the process's own.",
        "",
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (nproc); Python {platform.python_version()}, "
        f"NumPy {np.__version__}; load average {os.getloadavg()[0]:.2f}; "
        f"{datetime.date.today().isoformat()}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    weights = random_weights(args.seed)
    params = DecomposeParams()
    start = time.perf_counter()
    decompose_weights(weights, params)  # warm-up: imports, BLAS, first touch of memory
    cold = time.perf_counter() - start
    results = []
    for label, prune in (("default", 0.0), ("prune=0.5", 0.5)):
        results.append((label, run(weights, params, prune)))
        print(label, results[-1], flush=True)
    num = sum(float(np.square(round_pow2(w) - w).sum()) for w in weights.values())
    naive = (num / sum(float(np.square(w).sum()) for w in weights.values())) ** 0.5
    text = markdown(results, params, naive, cold)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
