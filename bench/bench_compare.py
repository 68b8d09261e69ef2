"""SmartDeal against dense int8: the same generator and boards, measured side by side.

    python bench/bench_compare.py [--out docs/benchmarks.md] [--json docs/benchmarks.json]
                                  [--seeds 3] [--boards icebreaker ulx3s] [--quick]
                                  [--reuse-builds]

For each board (iCEBreaker: iCE40 UP5K; ULX3S: ECP5 85F) two designs come
from the board's SDCore configuration (``SD_CORE_CONFIG``; the boards' defaults
are the serial core): the SmartDeal core, and the
dense int8 core (``weights="dense"``: the same lanes, multipliers and
buffer depths, int8 weight rows instead of Ce codes and bases). Each is
built for its board (synthesis once, place and route once per seed) and
runs the bundled digits MLP and CNN (trained with a fixed seed, not
retrained: accuracy is not the point) on its RTL under Verilator, checked
against the golden model. The SmartDeal networks are group-pruned as in
``bench_simulate.py``; the dense core runs them unpruned, and, as an
ablation, with the very same pruning. Tool speed (decomposition, Verilog
generation, simulation) is measured in the same run. Results go to the
markdown report and to PNG plots next to it, in ``img/``, and one record per
board, design and network to the JSON file (``benchmark_records.py``; the
records of other benchmarks in it are kept, and so is bench_up5k.py's section
of the report).

``--quick`` skips the board builds (no resources; throughput at the board
clock) and uses fewer inputs; ``--reuse-builds`` takes the report of an
earlier build instead of building again when the configuration, the seed
count and the sources of ``sd_hw/`` and ``boards/`` are the same.
"""

import argparse
import hashlib
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from boards import board as board_spec, board_module
from boards.build import BuildReport, build_board
from boards.clocking import pll_for
from sd_hw.compiler import compile_network
from sd_hw.errors import SdHwError
from sd_hw.generate import generate_core
from sd_hw.storage import storage_report
from sim.compress import CompressOptions
from sim.flow import compress_model
from sim.golden.decompose import DecomposeParams, decompose_weights, group_prune_mask
from sim.golden.digits import load_digits_split
from sim.golden.model_file import FloatModel
from sim.golden.train import train_float
from sim.simulate import simulate

import bench_decompose
import bench_simulate
import benchmark_records
import compare_metrics
import compare_plots
import compare_report
from run_stamp import run_stamp

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ("icebreaker", "ulx3s")
#: What runs on which core: variant -> (the core's ``weights``, group-pruned).
VARIANTS = {"SD": ("smartdeal", True), "dense": ("dense", False),
            "dense, pruned": ("dense", True)}
WRITER = "bench_compare.py"
#: The design name of each variant in docs/benchmarks.json.
RECORD_DESIGNS = {"SD": "SDCore SD", "dense": "SDCore dense int8",
                  "dense, pruned": "SDCore dense int8, pruned"}
#: Test images run per network and design (full run, quick run).
INPUTS = (8, 2)
#: Simulation-speed batches per simulator (small, large), full and quick.
SPEED_BATCHES = {"verilator": ((20, 220), (2, 22)), "icarus": ((1, 3), (1, 2)),
                 "amaranth": ((1, 2), (1, 2))}


@dataclass
class Design:
    """One core configuration on one board, and what its build gave."""

    board: str
    kind: str
    config: object
    generate_seconds: float = 0.0
    build: BuildReport = None
    build_error: str = ""
    build_reused: bool = False

    @property
    def family(self):
        return board_spec(self.board).family

    @property
    def chip(self):
        return board_spec(self.board).description.split(", ")[-1]

    @property
    def clock_mhz(self):
        """The PLL clock the build chose, or the board's default clock when not built."""
        if self.build is not None:
            return self.build.clock_hz / 1e6
        module = board_module(board_spec(self.board))
        return pll_for(self.family, module.OSCILLATOR_HZ, module.DEFAULT_CLOCK_HZ).output_hz / 1e6

    @property
    def fmax_mhz(self):
        """Median fmax over the seeds of the slowest clock; None when not built."""
        if self.build is None:
            return None
        return min(self.build.fmax_summary(clock)[1] for clock in self.build.fmax_mhz)


@dataclass
class Run:
    """One network run on one design's RTL."""

    design: Design
    variant: str
    network: str
    net: object
    program: object
    report: object
    storage: object = field(init=False)

    def __post_init__(self):
        self.storage = storage_report(self.net)

    @property
    def counters(self):
        """Every performance counter, averaged over the inputs."""
        counters = self.report.counters
        return {name: statistics.fmean(c[name] for c in counters) for name in counters[0]}


def records(runs, stamp):
    """The docs/benchmarks.json record of every run."""
    result = []
    for run in runs:
        design = run.design
        f = compare_metrics.figures(run)
        figures = {"clock_mhz": f["clock_mhz"], "images": len(run.report.cycles),
                   "bit_exact": bool(f["exact"])}
        if design.build is not None:
            r = compare_metrics.resources(design.build, design.family)
            spram = design.build.utilisation.get("ICESTORM_SPRAM", {}).get("used", 0) \
                if design.family == "ice40" else None
            figures.update(lut_or_lc=r["logic"], dsp=r["dsp"], bram=r["memory"], spram=spram,
                           fmax_mhz_median=design.fmax_mhz)
        elif design.build_error:
            figures["build_refused"] = design.build_error
        result.append(benchmark_records.record(
            board=design.board, design=RECORD_DESIGNS[run.variant],
            network=f"digits-{run.network}", source="measured", stamp=stamp,
            cycles_per_inference=f["cycles"],
            dense_equivalent_macs_per_s=f["dense_mac_per_s"],
            multiplier_macs_per_s=f["mac_per_s"], weight_bits_on_chip=f["bits_stored"],
            parameters=compare_metrics.parameters(run.net.network), **figures))
    return result


def trained_models(data):
    """The digits MLP and CNN, trained as bench_simulate trains them."""
    models = {}
    for name, (network, _) in bench_simulate.NETWORKS.items():
        params = train_float(network, data, epochs=10, seed=0)
        models[name] = FloatModel(network, params,
                                  calibration=data.inputs_for(network, "train")[:256])
    return models


def compressed(model, prune, variant):
    """The integer network of ``variant`` for ``model`` (``prune``: fraction per layer)."""
    kind, pruned = VARIANTS[variant]
    if kind == "smartdeal":
        return compress_model(model, CompressOptions(prune=prune)).integer_network
    params = dict(model.params)
    group = DecomposeParams().group
    for name, fraction in (prune.items() if pruned else ()):
        weight = params[f"{name}.weight"]
        params[f"{name}.weight"] = weight * group_prune_mask(weight, fraction, group=group)
    dense = frozenset(layer.name for layer in model.network.compute_layers)
    return compress_model(replace(model, params=params),
                          CompressOptions(dense=dense)).integer_network


def designs_of(boards):
    designs = []
    for name in boards:
        module = board_module(board_spec(name))
        default = module.SD_CORE_CONFIG
        designs += [Design(name, "smartdeal", default),
                    Design(name, "dense", replace(default, weights="dense"))]
    return designs


def time_generation(design, out_dir):
    started = time.perf_counter()
    generate_core(design.config, out_dir, reuse=False)
    design.generate_seconds = time.perf_counter() - started


def source_digest():
    """A digest of the generator's and the board tops' sources, which a build depends on."""
    digest = hashlib.sha1()
    for path in sorted(p for folder in ("sd_hw", "boards") for p in (ROOT / folder).rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def reused_build(design, build_dir, seeds):
    """The earlier build in ``build_dir`` if it had this configuration, seeds and sources."""
    report, stamp = build_dir / "report.json", build_dir / "bench-sources.txt"
    if not (report.exists() and stamp.exists()) or stamp.read_text() != source_digest():
        return None
    saved = json.loads(report.read_text())
    if saved["config"] != design.config.to_dict() or len(saved["seeds"]) != seeds:
        return None
    return BuildReport(**{f.name: saved[f.name] for f in fields(BuildReport)})


def build(design, out_dir, seeds, reuse):
    out_dir = out_dir / design.kind
    build_dir = out_dir / design.board
    design.build = reused_build(design, build_dir, seeds) if reuse else None
    if design.build is not None:
        design.build_reused = True
        print(f"{design.board} {design.kind}: reusing {build_dir}", flush=True)
        return
    digest = source_digest()
    try:
        design.build = build_board(design.board, design.config, out_dir=out_dir, seeds=seeds,
                                   log=lambda line: print(f"{design.board} {design.kind}: "
                                                          f"{line}", flush=True))
    except SdHwError as error:
        design.build_error = str(error)
        print(f"{design.board} {design.kind}: build failed: {error}", flush=True)
        return
    (build_dir / "bench-sources.txt").write_text(digest)


def decomposition_speed():
    """Seconds to decompose the ResNet-18-sized weight set, as bench_decompose measures."""
    weights = bench_decompose.random_weights(0)
    params = DecomposeParams()
    decompose_weights(weights, params)  # warm-up: imports, BLAS, first touch of memory
    return [(label, bench_decompose.run(weights, params, prune))
            for label, prune in (("default", 0.0), ("prune=0.5", 0.5))]


def simulation_speed(run, x, build_dir, quick):
    """``[(simulator, inferences/s, cycles/s)]`` of ``run``'s network and core."""
    speed = []
    for simulator, batches in SPEED_BATCHES.items():
        small, large = batches[quick]
        bench_simulate.timed_run(run.net, run.program, x[:1], simulator, build_dir)  # builds
        t_small, _ = bench_simulate.timed_run(run.net, run.program, x[:small], simulator,
                                              build_dir)
        t_large, cycles = bench_simulate.timed_run(run.net, run.program, x[:large], simulator,
                                                   build_dir)
        per_inference = (t_large - t_small) / (large - small)
        speed.append((simulator, 1 / per_inference, cycles[0] / per_inference))
        print(f"{simulator}: {1 / per_inference:.2f} inferences/s, "
              f"{cycles[0] / per_inference:,.0f} cycles/s", flush=True)
    return speed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"),
                        help="the markdown report; plots go to img/ next to it")
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"),
                        help="the records of every board, design and network (merged)")
    parser.add_argument("--seeds", type=int, default=3, help="place-and-route seeds per build")
    parser.add_argument("--boards", nargs="+", choices=BOARDS, default=list(BOARDS))
    parser.add_argument("--quick", action="store_true",
                        help="no board builds, fewer inputs: a fast check of the flow")
    parser.add_argument("--reuse-builds", action="store_true",
                        help="reuse earlier builds of the same configuration, seeds and sources")
    parser.add_argument("--build-dir", type=Path, default=Path("build/bench"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = load_digits_split(seed=0)
    models = trained_models(data)
    designs = designs_of(args.boards)
    for design in designs:
        time_generation(design, args.build_dir / "verilog")
        print(f"{design.board} {design.kind}: Verilog in {design.generate_seconds:.1f} s",
              flush=True)

    sim_dir = args.build_dir / "sim"
    if sim_dir.exists():
        shutil.rmtree(sim_dir)
    runs = []
    for design in designs:
        for variant, (kind, _) in VARIANTS.items():
            if kind != design.kind:
                continue
            for name, model in models.items():
                net = compressed(model, bench_simulate.NETWORKS[name][1], variant)
                config = replace(design.config, counters=True)  # same schedule, all counters
                x = net.quantize_input(data.inputs_for(model.network, "test")
                                       [:INPUTS[args.quick]])
                report = simulate(net, config, x, simulator="verilator", build_dir=sim_dir,
                                  layers=False)
                run = Run(design, variant, name, net, compile_network(net, config), report)
                runs.append(run)
                print(f"{design.board} {variant} {name}: {statistics.fmean(report.cycles):.0f} "
                      f"cycles, {'matches' if report.passed else 'DIFFERS FROM'} the golden "
                      f"model", flush=True)

    anchor = next(r for r in runs if r.variant == "SD" and r.network == "cnn")
    x = anchor.net.quantize_input(data.inputs_for(models["cnn"].network, "test"))
    speed = simulation_speed(anchor, x, sim_dir, args.quick)
    decomposition = decomposition_speed()
    print("decomposition: " + ", ".join(f"{label} {r['seconds']:.2f} s"
                                        for label, r in decomposition), flush=True)

    if not args.quick:
        for design in designs:
            build(design, args.build_dir / "boards", args.seeds, args.reuse_builds)

    stamp = run_stamp()
    image_dir = args.out.parent / "img"
    images = compare_plots.plot_all(designs, runs, image_dir, stamp)
    text = compare_report.markdown(
        designs, runs, (anchor, speed), decomposition, stamp=stamp, seeds=args.seeds,
        quick=args.quick, images=[image.relative_to(args.out.parent) for image in images],
        analysis=compare_report.kept_analysis(args.out),
        minutes=(time.perf_counter() - started) / 60,
        up5k_table=compare_report.kept_up5k_table(args.out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    benchmark_records.write_merged(args.json, WRITER, records(runs, stamp))
    print(f"wrote {args.out}, {args.json} and {', '.join(map(str, images))}")


if __name__ == "__main__":
    main()
