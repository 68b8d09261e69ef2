"""The MNIST CNN on the element-serial core's RTL: exactness, cycles, MACs per cycle.

    python bench/bench_serial.py [--out docs/serial-results.md] [--json docs/serial-results.json]
                                 [--mnist build/mnist] [--images 1000] [--build]

Takes the packed MNIST weight files that ``bench/bench_mnist.py`` leaves under
``--mnist`` (the network at its default pruning, and the other fractions of its
sweep if present) and runs each on the iCEBreaker-sized SerialCore
(:data:`UP5K_SERIAL`: 8 lanes, the four SPRAMs as three weight banks and the
activation memory) under Verilator: every test image, every layer's result of
the first eight and the final outputs of all compared with the golden model, the
counters with the golden counts. Reports cycles per inference, dense-equivalent
MACs per cycle (the MACs of the unpruned dense network over the cycles), the
lanes' multiply-accumulates per cycle, the memory the program takes and the
accuracy on the RTL. With ``--build`` it also places and routes the design for
the iCEBreaker (one seed) and reports its resources, or why it does not fit.
"""

import argparse
import json
import sys
import time
from math import prod
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run_stamp import run_stamp  # noqa: E402
from boards.icebreaker import DEFAULT_CONFIG as ICEBREAKER_CONFIG  # noqa: E402
from sd_hw import weight_file  # noqa: E402
from sd_hw.errors import SdHwError  # noqa: E402
from sd_hw.serial.compiler import compile_serial  # noqa: E402
from sim.simulate import simulate  # noqa: E402

#: The iCEBreaker's default core (boards/icebreaker.py): the element-serial core with
#: 8 lanes (the UP5K's 8 SB_MAC16), three SPRAMs as weight banks, one as the
#: activation memory, block RAM for the rest.
UP5K_SERIAL = ICEBREAKER_CONFIG
#: Inputs whose every layer is compared (the others: the final outputs).
LAYER_CHECKS = 8


def dense_macs(network):
    """Multiply-accumulates of one inference of the dense network."""
    total = 0
    for index, layer in enumerate(network.layers):
        if layer.kind == "linear":
            total += layer.in_size * layer.out_size
        elif layer.kind == "conv2d":
            _, height, width = network.output_shape_of(index)
            total += height * width * layer.out_size * layer.in_size * layer.kernel_size ** 2
    return total


def weight_files(folder):
    """``(label, path)`` of the default weight file and of each pruning sweep's."""
    files = []
    default = folder / "mnist-cnn.sdw"
    if default.is_file():
        files.append(("default pruning", default))
    for path in sorted(folder.glob("prune-*/mnist-cnn.sdw")):
        files.append((f"pruned {path.parent.name.split('-', 1)[1]}", path))
    if not files:
        raise SdHwError(f"{folder}: no MNIST weight file; run bench/bench_mnist.py first "
                        f"(it writes {default})")
    return files


def measure(label, path, x, labels, *, images, build_dir, log, config=UP5K_SERIAL):
    """The record of the weight file at ``path`` on the SerialCore of ``config``: its run
    on the RTL over the first ``images`` of ``x``, or the compiler's refusal."""
    net = weight_file.load(path)
    try:
        program = compile_serial(net, config)
    except SdHwError as error:
        log(f"{label}: {error}")
        return {"network": "mnist-cnn", "variant": label, "weight_file": str(path),
                "refused": str(error)}
    started = time.perf_counter()
    report = simulate(net, config, x[:images], simulator="verilator",
                      build_dir=build_dir, layers=LAYER_CHECKS)
    seconds = time.perf_counter() - started
    cycles = np.asarray(report.cycles)
    counters = report.counters[0]
    macs = dense_macs(net.network)
    predictions = np.argmax(report.outputs, axis=1)
    golden = np.argmax(report.golden, axis=1)
    record = {
        "network": "mnist-cnn", "variant": label, "weight_file": str(path),
        "parameters": int(sum(prod(layer.weight_shape) + layer.out_size
                              for layer in net.network.compute_layers)),
        "images": int(len(cycles)), "bit_exact": bool(report.passed),
        "layers_checked": int(report.layers_checked),
        "mismatches": [str(m) for m in report.mismatches[:3]],
        "counter_mismatches": [list(map(str, c)) for c in report.counter_mismatches[:3]],
        "accuracy_rtl": float(np.mean(predictions == labels[:len(cycles)])),
        "accuracy_golden": float(np.mean(golden == labels[:len(cycles)])),
        "cycles_per_inference": int(cycles.max()), "cycles_min": int(cycles.min()),
        "cycle_estimate": int(report.cycle_estimate),
        "dense_equivalent_macs": macs,
        "dense_equivalent_macs_per_cycle": macs / float(cycles.mean()),
        "lane_macs_per_cycle": counters["elements"] * config.lanes / float(cycles.mean()),
        "counters": {name: int(value) for name, value in counters.items()},
        "usage": program.usage,
        "weight_bits_on_chip": int(program.usage["weight bank words"] * config.weight_banks * 16
                                   + program.usage["bases per lane"] * 24
                                   * (config.lanes // config.shared_lanes)),
        "int8_weight_bits": int(sum(prod(layer.weight_shape) * 8
                                    for layer in net.network.compute_layers)),
        "simulation_seconds": seconds,
    }
    log(f"{label}: {'bit-exact' if record['bit_exact'] else 'MISMATCH'} over {images} images, "
        f"{record['cycles_per_inference']} cycles, "
        f"{record['dense_equivalent_macs_per_cycle']:.2f} dense-equivalent MACs/cycle")
    return record


def board_build(out_dir, log):
    from boards.build import build_board
    started = time.perf_counter()
    try:
        report = build_board("icebreaker", UP5K_SERIAL, out_dir=out_dir, seeds=1, log=log)
    except SdHwError as error:
        return {"fits": False, "error": str(error), "seconds": time.perf_counter() - started}
    return {"fits": True, "utilisation": report.utilisation, "fmax_mhz": report.fmax_mhz,
            "seconds": time.perf_counter() - started}


def write_markdown(path, records, build, stamp):
    lines = [
        "# The MNIST CNN on the element-serial core",
        "",
        "`python bench/bench_serial.py` runs the MNIST CNN of "
        "[mnist-results.md](mnist-results.md) (153,898 parameters, more than the UP5K's "
        "1 Mbit of SPRAM as int8) on the RTL of the iCEBreaker-sized SerialCore "
        "([serial-core.md](serial-core.md): 8 lanes, three SPRAM weight banks, one SPRAM of "
        "activations) under Verilator. Every image's output, every layer of the first "
        f"{LAYER_CHECKS} images and every counter are compared with the golden model.",
        "",
        "| weights | images | bit-exact | accuracy on the RTL (golden) | cycles / inference "
        "(estimate) | dense-eq. MACs / cycle | lane MACs / cycle | weight bank words "
        "(of 49,152) | weight bits on chip | int8 weight bits |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if "refused" in r:
            lines.append(f"| {r['variant']} | - | refused: {r['refused']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['images']} | {'yes' if r['bit_exact'] else '**no**'} | "
            f"{100 * r['accuracy_rtl']:.2f} % ({100 * r['accuracy_golden']:.2f} %) | "
            f"{r['cycles_per_inference']:,} ({r['cycle_estimate']:,}) | "
            f"{r['dense_equivalent_macs_per_cycle']:.2f} | {r['lane_macs_per_cycle']:.2f} | "
            f"{3 * r['usage']['weight bank words']:,} | {r['weight_bits_on_chip']:,} | "
            f"{r['int8_weight_bits']:,} |")
    measured = [r for r in records if "refused" not in r]
    lines += ["", "Dense-equivalent MACs per inference: "
              f"{measured[0]['dense_equivalent_macs']:,}. At a clock of f MHz the core does "
              "f x (dense-eq. MACs / cycle) dense-equivalent MMAC/s.", ""]
    if build is not None:
        lines += ["## iCEBreaker build", ""]
        if build["fits"]:
            lines.append(f"Placed and routed (one seed): {json.dumps(build['utilisation'])}; "
                         f"fmax {json.dumps(build['fmax_mhz'])}.")
        else:
            lines.append(f"Not placed: {build['error']}")
        lines.append("")
    lines += [f"Run: {stamp}.", ""]
    Path(path).write_text("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/serial-results.md")
    parser.add_argument("--json", default="docs/serial-results.json")
    parser.add_argument("--mnist", default="build/mnist",
                        help="where bench_mnist.py left the weight files and test vectors")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--build", action="store_true",
                        help="also place and route the design for the iCEBreaker")
    parser.add_argument("--build-dir", default="build/bench-serial")
    args = parser.parse_args(argv)
    folder = Path(args.mnist)
    x = np.load(folder / "test_inputs_int8.npy")
    labels = np.load(folder / "test_labels.npy")
    stamp = run_stamp()
    records = [measure(label, path, x, labels, images=args.images,
                       build_dir=Path(args.build_dir) / "sim", log=print)
               for label, path in weight_files(folder)]
    build = board_build(Path(args.build_dir) / "boards", print) if args.build else None
    write_markdown(args.out, records, build, stamp)
    Path(args.json).write_text(json.dumps({"stamp": stamp, "config": UP5K_SERIAL.to_dict(),
                                           "records": records, "build": build}, indent=1)
                               + "\n")
    print(f"wrote {args.out} and {args.json}")
    return 0 if all(r.get("bit_exact", True) for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
