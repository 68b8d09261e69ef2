"""The bundled end-to-end job: a bundled network (the 8x8 digits CNN or MLP,
or the 28x28 MNIST CNN), trained, decomposed, retrained, integerised,
packed and measured.

It reports the accuracy at every step on the held-out test split (the float
model, the SmartDeal model before and after retraining, in float and in the
exact integer arithmetic, and a dense int8 model for comparison) and the
storage of the packed weight file against dense int8 and float32.

The retrained integer SmartDeal model must stay within :data:`ACCURACY_BAR`
points of the float model on the test split; :func:`run_demo` raises
:class:`AccuracyBarMissed` when it does not (after writing the report).
"""

import inspect
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from sd_hw import weight_file
from sd_hw.storage import storage_report
from sim.compress import CompressOptions, calibrate, decompose, integerise, project, prune_masks
from sim.flow import retrain
from sim.golden.datasets import dataset
from sim.golden.decompose import DecomposeParams
from sim.golden.model_file import save_model
from sim.golden.nn import accuracy
from sim.golden.reference import run
from sim.golden.train import train_float


__all__ = ["run_demo", "DEMO_PRUNE", "DEMO_EPOCHS", "MNIST_EPOCHS", "ACCURACY_BAR",
           "AccuracyBarMissed"]

# Structured sparsity of the bundled networks, per data set and model: the
# first conv layer has one input channel (three Ce rows per filter) and
# stays unpruned.
DEMO_PRUNE = {
    "digits": {"cnn": {"conv2": 0.25, "fc": 0.25}, "mlp": {"fc1": 0.5, "fc2": 0.25}},
    "mnist": {"cnn": {"conv2": 0.5, "fc1": 0.5}},
}
#: Float training and retraining epochs of the digits demo.
DEMO_EPOCHS = {"train": 40, "retrain": 60}
#: The same for MNIST (3,500 training images against the digits' 1,078).
MNIST_EPOCHS = {"train": 20, "retrain": 20}
_EPOCHS = {"digits": DEMO_EPOCHS, "mnist": MNIST_EPOCHS}

#: How far (in points of test accuracy) the retrained integer SmartDeal model
#: may fall below the float model.
ACCURACY_BAR = 1.0


class AccuracyBarMissed(Exception):
    """The retrained integer SmartDeal model is more than the bar below float;
    ``result`` is what :func:`run_demo` would have returned."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


def integer_accuracy(net, x, y):
    """Test accuracy of the exact integer model, and whether both dataflows agree."""
    x_int = net.quantize_input(x)
    logits = run(net, x_int, dataflow="rebuild")
    agree = np.array_equal(logits, run(net, x_int, dataflow="factored"))
    return float(np.mean(np.argmax(logits, axis=1) == y)), agree


def run_demo(*, dataset_name="digits", model="cnn", retrain_method="ste",
             out_dir=Path("build/demo"), report_path=None, simulator="verilator", train_seed=0,
             prune=None, accuracy_bar=ACCURACY_BAR, log=print):
    """Train, decompose, retrain, integerise and pack the bundled ``model``
    of ``dataset_name`` (digits: "cnn" or "mlp"; mnist: "cnn", see
    :mod:`sim.golden.datasets`), logging the test accuracy of every
    step; write the model and weight file to ``out_dir``, run the weight
    file on the RTL under ``simulator`` (None skips it) and write a markdown
    report to ``report_path`` (if given).

    ``train_seed`` seeds the float training (initialisation and mini-batch
    order; the data split is always the data set's split with seed 0).
    ``prune`` maps layer names to pruning fractions (default
    ``DEMO_PRUNE[dataset_name][model]``).
    ``retrain_method`` is a :func:`sim.flow.retrain` method, run for
    ``DEMO_EPOCHS["retrain"]`` epochs (``MNIST_EPOCHS`` for mnist). Returns
    a dict with the float and retrained integer test accuracies ("float",
    "sd_integer"), every step's accuracy ("steps": ``(step, accuracy,
    note)``), the seconds each phase took ("seconds"), the epochs, the
    pruning, the validation history, the storage report, the paths written
    and the RTL results. Raises :class:`AccuracyBarMissed`, after
    everything else, if the integer model is more than ``accuracy_bar``
    points below float.
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_set = dataset(dataset_name)
    network = data_set.model(model)
    epochs = _EPOCHS[data_set.name]
    prune = DEMO_PRUNE[data_set.name][model] if prune is None else prune
    data = data_set.load(seed=0)
    x_train, x_val, x_test = (data.inputs_for(network, split) for split in
                              ("train", "val", "test"))
    calibration = x_train[:256]
    rows = []

    def record(step, acc, note=""):
        rows.append((step, acc, note))
        log(f"{step:<44s} {100 * acc:6.2f} %  {note}")

    log(f"sd-hw demo: {model} on {data_set.description} ({len(x_train)} train / {len(x_val)} "
        f"validation / {len(x_test)} test images)")
    t = time.perf_counter()
    params = train_float(network, data, epochs=epochs["train"], seed=train_seed)
    train_seconds = time.perf_counter() - t
    model_path = out_dir / f"{data_set.name}-{model}.npz"
    save_model(model_path, network, params, calibration=calibration)
    float_acc = accuracy(network, params, x_test, data.y_test)
    record("float32", float_acc, f"trained in {train_seconds:.1f} s")

    dense_options = CompressOptions(dense=frozenset(l.name for l in network.compute_layers))
    dense_net = integerise(network, params, {}, calibrate(network, params, calibration),
                           dense_options)
    dense_acc, _ = integer_accuracy(dense_net, x_test, data.y_test)
    record("dense int8 (integer model)", dense_acc)

    options = CompressOptions(decompose=DecomposeParams(), prune=prune)
    masks = prune_masks(network, params, options)
    t = time.perf_counter()
    decomposed = decompose(network, params, masks, options)
    decompose_seconds = time.perf_counter() - t
    sd_params = project(params, decomposed)
    record("SmartDeal, no retraining (float)", accuracy(network, sd_params, x_test, data.y_test),
           f"decomposed in {decompose_seconds:.2f} s")
    net = integerise(network, params, decomposed, calibrate(network, sd_params, calibration),
                     options)
    acc, agree = integer_accuracy(net, x_test, data.y_test)
    record("SmartDeal, no retraining (integer model)", acc)

    t = time.perf_counter()
    params, history = retrain(network, params, data, masks, options, method=retrain_method,
                              epochs=epochs["retrain"], log=log)
    retrain_seconds = time.perf_counter() - t
    decomposed = decompose(network, params, masks, options)
    sd_params = project(params, decomposed)
    record(f"SmartDeal, retrained ({retrain_method}) (float)",
           accuracy(network, sd_params, x_test, data.y_test),
           f"retrained in {retrain_seconds:.1f} s")
    net = integerise(network, params, decomposed, calibrate(network, sd_params, calibration),
                     options)
    final_acc, agree = integer_accuracy(net, x_test, data.y_test)
    record(f"SmartDeal, retrained ({retrain_method}) (integer model)", final_acc,
           "rebuild and factored dataflows agree" if agree else "DATAFLOWS DISAGREE")

    path = out_dir / f"{data_set.name}-{model}.sdw"
    weight_file.save(net, path)
    loaded = weight_file.load(path)
    from sim.inputs import quantize_inputs
    x_int, saturation = quantize_inputs(net, x_test, source="test inputs")
    if saturation.clipped:
        log(saturation.describe("test inputs"))
    round_trip = np.array_equal(run(loaded, x_int), run(net, x_int))
    report = storage_report(loaded)
    log(f"\nwrote {path} ({path.stat().st_size} bytes); reloaded file gives "
        f"{'identical' if round_trip else 'DIFFERENT'} outputs")
    log(report.format_table())
    gap = 100 * (float_acc - final_acc)
    within = gap <= accuracy_bar
    verdict = f"{'within' if within else 'NOT within'} the bar of {_points(accuracy_bar)}"
    log(f"\nretrained integer SmartDeal model: {100 * final_acc:.2f} % against float "
        f"{100 * float_acc:.2f} %, {gap:.2f} points below ({verdict}); "
        f"total {time.perf_counter() - start:.1f} s")
    if not (agree and round_trip):
        raise RuntimeError("demo self-check failed: dataflows or weight-file round trip differ")

    rtl = None
    if simulator:
        rtl = _run_on_rtl(loaded, x_int, data.y_test, simulator=simulator, log=log,
                          build_dir=out_dir.parent / "simulate")
    if report_path:
        _write_report(report_path, data_set, model, retrain_method, rows, report, float_acc,
                      final_acc, history, rtl, verdict, prune)
        log(f"wrote {report_path}")
    result = {"float": float_acc, "sd_integer": final_acc, "report": report, "rtl": rtl,
              "steps": rows, "history": history, "epochs": dict(epochs), "prune": dict(prune),
              "seconds": {"train": train_seconds, "decompose": decompose_seconds,
                          "retrain": retrain_seconds, "total": time.perf_counter() - start},
              "network": loaded, "dense_network": dense_net, "model_path": model_path,
              "weight_path": path, "within_bar": within}
    if not within:
        raise AccuracyBarMissed(
            f"the retrained integer SmartDeal model ({100 * final_acc:.2f} %) is {gap:.2f} points "
            f"below float ({100 * float_acc:.2f} %); the bar is {_points(accuracy_bar)}", result)
    return result


#: Inputs whose every layer the demo compares; the rest are checked at the output.
DEMO_LAYER_INPUTS = 16


def _run_on_rtl(net, x_int, labels, *, simulator, log, build_dir):
    """The packed network on the default SDCore's RTL, over the whole test split."""
    from sd_hw.core.config import CoreConfig
    from sim.simulate import simulate
    config = CoreConfig()
    log(f"\nrunning the weight file on the SDCore RTL ({simulator}, {config.lanes} lanes, "
        f"{config.datapath.dataflow} dataflow): {len(x_int)} test images, every layer of "
        f"the first {DEMO_LAYER_INPUTS} compared with the golden model")
    sim_report = simulate(net, config, x_int, simulator=simulator, build_dir=build_dir,
                          layers=DEMO_LAYER_INPUTS)
    rtl_predictions = np.argmax(sim_report.outputs, axis=1)
    golden_predictions = np.argmax(sim_report.golden, axis=1)
    rtl_acc = float(np.mean(rtl_predictions == labels))
    golden_acc = float(np.mean(golden_predictions == labels))
    cycles = np.asarray(sim_report.cycles)
    log(f"RTL accuracy {100 * rtl_acc:.2f} %, golden model {100 * golden_acc:.2f} % "
        f"({'equal' if rtl_acc == golden_acc else 'DIFFERENT'}); outputs "
        f"{'bit-exact' if np.array_equal(sim_report.outputs, sim_report.golden) else 'DIFFER'} "
        f"on all {len(x_int)} images; {sim_report.layers_checked} layer results compared")
    log(f"cycles per inference: {int(cycles.mean())} measured, {sim_report.cycle_estimate} "
        f"estimated by the golden model; performance counters "
        f"{'match' if not sim_report.counter_mismatches else 'DO NOT match'} the golden "
        f"model's counts on every image; simulated in {sim_report.seconds:.1f} s")
    if not sim_report.passed or rtl_acc != golden_acc:
        raise RuntimeError("demo self-check failed: the RTL differs from the golden model: "
                           + "; ".join(map(str, sim_report.mismatches[:3]))
                           + "; ".join(map(str, sim_report.counter_mismatches[:3])))
    return {"simulator": simulator, "accuracy": rtl_acc, "golden_accuracy": golden_acc,
            "cycles": int(cycles.mean()), "cycles_min": int(cycles.min()),
            "cycles_max": int(cycles.max()), "estimate": sim_report.cycle_estimate,
            "images": len(x_int), "layers_checked": sim_report.layers_checked,
            "seconds": sim_report.seconds, "counters": sim_report.counters[0],
            "lanes": config.lanes, "dataflow": config.datapath.dataflow}


def _points(value):
    return f"{value:g} point{'' if value == 1 else 's'}"


def _recipe(method):
    """The retraining recipe of ``method`` in words, from the defaults that
    :func:`sim.flow.retrain` uses."""
    from sim.golden.train import retrain_projection, retrain_ste
    run = {"ste": retrain_ste, "projection": retrain_projection}[method]
    d = {name: p.default for name, p in inspect.signature(run).parameters.items()}
    if method == "ste":
        return (f"straight-through (Adam, lr {d['lr']:g} on a cosine decay, weight decay "
                f"{d['weight_decay']:g}, distillation from the float model with weight "
                f"{d['distill']:g} at temperature {d['temperature']:g})")
    return f"projection loop (Adam, lr {d['lr']:g} on a cosine decay)"


def _write_report(path, data_set, model, method, rows, report, float_acc, final_acc, history,
                  rtl, verdict, prune):
    prune = ", ".join(f"{k} {v}" for k, v in prune.items())
    digits = data_set.name == "digits"
    lines = [
        f"# {'Digits' if digits else data_set.name.upper()} results ({model})",
        "",
        f"Produced by "
        + ("`make demo` (" if digits else "")
        + f"`sd-hw demo {'' if digits else f'--dataset {data_set.name} '}--model {model}`"
        + (")" if digits else "")
        + f" on {date.today().isoformat()}, "
        f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}.",
        f"Accuracy on the held-out test split of {data_set.description}; "
        "\"integer model\" is the exact integer golden model that the accelerator "
        "reproduces bit for bit.",
        "",
        "| step | test accuracy | note |",
        "|---|---:|---|",
    ]
    lines += [f"| {step} | {100 * acc:.2f} % | {note} |" for step, acc, note in rows]
    lines += [
        "",
        f"Decomposition: S = 3, blocks of 192 rows, 3-bit exponent codes, theta = 1e-3, "
        f"structured row/channel pruning per group of 32 filters: {prune}. Retraining: "
        f"{_recipe(method)}, {len(history)} epochs, masks fixed, the epoch with the lowest "
        f"validation loss kept; validation accuracy per epoch: "
        + ", ".join(f"{100 * v.accuracy:.1f}" for v in history) + ".",
        "",
        f"Retrained integer SmartDeal model vs float: {100 * (final_acc - float_acc):+.2f} points "
        f"({verdict}).",
        "",
        "## Storage of the packed weight file",
        "",
        "```",
        report.format_table(),
        "```",
        "",
    ]
    if rtl:
        counters = ", ".join(f"{name} {value}" for name, value in rtl["counters"].items())
        lines += [
            "## On the accelerator's RTL",
            "",
            f"The packed file runs on the generated SDCore (default configuration: "
            f"{rtl['lanes']} lanes, {rtl['dataflow']} dataflow) under {rtl['simulator']}, "
            f"over all {rtl['images']} test images: accuracy {100 * rtl['accuracy']:.2f} % "
            f"(golden integer model {100 * rtl['golden_accuracy']:.2f} %), outputs bit-exact "
            f"on every image, {rtl['layers_checked']} layer results compared bit for bit, "
            f"and every performance counter equal to the golden model's count.",
            "",
            f"Cycles per inference: {rtl['cycles']} (the golden model's analytic estimate: "
            f"{rtl['estimate']}). Counters of one inference: {counters}.",
            "",
        ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines))
