"""The ``sd-hw`` command."""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from sd_hw.errors import SdHwError, ParameterError


def _prune_option(text):
    """``0.5`` (every decomposed layer) or ``LAYER=0.5``."""
    name, _, value = text.rpartition("=")
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected FRACTION or LAYER=FRACTION, got {text!r}") from None
    return (name or None, fraction)


def _add_decompose_options(parser):
    group = parser.add_argument_group("decomposition")
    group.add_argument("--preset", default="sd-hw", metavar="NAME",
                       help="decomposition semantics: sd-hw (default) or official (the "
                            "authors' smart_exchange.py: its fit count, threshold order and "
                            "block split, no exponent window; docs/decomposition.md)")
    group.add_argument("--block-rows", type=int,
                       help="Ce rows per basis block (default 192 = 64 channels x 3 kernel "
                            "rows; the official preset computes its own, up to 192)")
    group.add_argument("--code-bits", type=int,
                       help="exponent bits per coefficient code; a code is sign + these bits "
                            "(default 3)")
    group.add_argument("--theta", type=float,
                       help="coefficients below this magnitude become zero (default 1e-3)")
    group.add_argument("--iterations", type=int,
                       help="alternating-minimisation iterations per block (default 30; "
                            "the official preset makes one fit fewer)")
    group.add_argument("--vector-wise", dest="vector_wise", action="store_const", const=True,
                       help="zero whole Ce rows with small L1 norm (default with the sd-hw "
                            "preset; the official preset then applies it to 3x3 convs only)")
    group.add_argument("--no-vector-wise", dest="vector_wise", action="store_const",
                       const=False, help="do not zero whole Ce rows with small L1 norm "
                                         "(default with the official preset)")
    group.add_argument("--prune", type=_prune_option, action="append", default=[],
                       metavar="[LAYER=]FRACTION",
                       help="structured sparsity: fraction of Ce rows (3x3) or input channels "
                            "(1x1, linear) removed per group of 32 output filters; repeatable")
    group.add_argument("--dense", action="append", default=[], metavar="LAYER",
                       help="keep this layer as dense int8; repeatable")
    group.add_argument("--accumulator-bits", type=int, default=32,
                       help="output accumulator width the integer network must fit, 16..48 "
                            "(default 32; wider codes, --code-bits above 3, can need more)")


def _compress_options(args):
    from sim.compress import CompressOptions
    from sim.golden.decompose import DecomposeParams
    given = {name: getattr(args, name)
             for name in ("block_rows", "code_bits", "theta", "iterations", "vector_wise")
             if getattr(args, name) is not None}
    params = DecomposeParams(preset=args.preset, **given)
    per_layer = {name: fraction for name, fraction in args.prune if name is not None}
    default = [fraction for name, fraction in args.prune if name is None]
    return CompressOptions(decompose=params, prune=per_layer,
                           default_prune=default[-1] if default else 0.0,
                           dense=frozenset(args.dense), accumulator_bits=args.accumulator_bits)


#: AcceleratorConfig field -> (meaning, allowed values) for its option's help.
_CONFIG_HELP = {
    "lanes": ("processing elements in parallel, one output channel each", "1..64"),
    "activation_bits": ("width of signed activations", "2..16"),
    "basis_bits": ("width of signed basis entries", "2..16"),
    "code_bits": ("exponent bits per coefficient code; a code is sign + these bits", "1..6"),
    "block_rows": ("largest number of Ce rows sharing one basis", "1..4096"),
    "accumulator_bits": ("width of an output accumulator", "16..48"),
    "stream_bits": ("width of a word of the packed coefficient stream", "8, 16 or 32"),
    "dataflow": ("rebuild: rebuild weights, then multiply-accumulate; factored: multiply "
                 "activations by the basis, then shift-accumulate", "rebuild or factored"),
}


def add_config_options(parser):
    """Add one option per :class:`~sd_hw.config.AcceleratorConfig` field to ``parser``.

    ``--lanes``, ``--activation-bits``, ... default to the field's default.
    Values are checked by :func:`config_from_args`, so that an out-of-range
    value gets the configuration's own one-line message.
    """
    from sd_hw.config import AcceleratorConfig
    group = parser.add_argument_group("accelerator configuration")
    for field in dataclasses.fields(AcceleratorConfig):
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=f"config_{field.name}",
                           metavar="N" if isinstance(field.default, int) else "NAME",
                           help="{} ({}; default {})".format(
                               *_CONFIG_HELP.get(field.name, (field.name, "see sd_hw.config")),
                               field.default))


def config_from_args(args):
    """The :class:`~sd_hw.config.AcceleratorConfig` of options added by :func:`add_config_options`.

    Raises :class:`ParameterError` naming the parameter for a value that is
    not an integer or out of range.
    """
    from sd_hw.config import AcceleratorConfig
    values = {}
    for field in dataclasses.fields(AcceleratorConfig):
        text = getattr(args, f"config_{field.name}", None)
        if text is None:
            continue
        if isinstance(field.default, int):
            try:
                values[field.name] = int(text)
            except ValueError:
                raise ParameterError(f"parameter {field.name!r} must be an integer, "
                                     f"got {text!r}") from None
        else:
            values[field.name] = text
    return AcceleratorConfig(**values)


#: CoreConfig depth -> meaning, for its option's help.
_DEPTH_HELP = {
    "activation_depth": "int8 entries of the activation memory",
    "weight_depth": "words of each lane's weight memory",
    "basis_depth": "16-bit words of each lane's basis memory",
    "index_depth": "32-bit words of the index memory",
    "param_depth": "32-bit words of the channel-parameter memory",
    "output_depth": "32-bit words of the output memory",
    "program_depth": "32-bit words of the program memory",
}


def add_core_options(parser):
    """:func:`add_config_options` plus the buffer depths of a whole core and ``--config``."""
    from sd_hw.core.config import CoreConfig
    add_config_options(parser)
    group = parser.add_argument_group("core buffers")
    group.add_argument("--core", dest="core_kind", choices=CORE_KINDS,
                       help="'sd' (SDCore, the default) or 'serial' (SerialCore: one DSP a lane, "
                            "one activation element a cycle, weights as records in three "
                            "single-port banks; its sizes come from --config) or 'shared' "
                            "(SerialCore with the factored dataflow: groups of lanes share "
                            "one basis engine; networks decomposed with --shared-basis)")
    group.add_argument("--config", dest="core_config_file", metavar="FILE",
                       help="core configuration as JSON (as `sd-hw config` prints it); the "
                            "options here override its fields")
    for field in dataclasses.fields(CoreConfig):
        if field.name not in _DEPTH_HELP:
            continue
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=f"core_{field.name}",
                           metavar="N", help=f"{_DEPTH_HELP[field.name]} "
                                             f"(default {field.default})")
    group.add_argument("--coefficients", dest="core_coefficients", metavar="FORMAT",
                       help="weight-memory format: 'packed' (the weight file's coefficient "
                            "stream, decoded on chip) or 'unpacked' (one decoded 16-bit row "
                            "record per row, no decoder; smaller logic, more memory)")
    group.add_argument("--weights", dest="core_weights", metavar="KIND",
                       help="'smartdeal' (decomposed layers, the default) or 'dense' (int8 "
                            "layers compressed with --dense: the dense baseline core)")
    group.add_argument("--row-lookahead", dest="core_row_lookahead", metavar="N",
                       help="rows the front end looks at per cycle: 1 (the default) or 2 "
                            "(two rows per cycle, all-zero activation rows dropped before "
                            "the lanes; needs --coefficients unpacked or --weights dense)")
    group.add_argument("--no-counters", dest="core_no_counters", action="store_true",
                       help="build the cycle counter only, not the other performance counters")


#: Values of ``--core``: the SDCore, the element-serial SerialCore, and the SerialCore
#: with the factored dataflow (lanes sharing basis engines).
CORE_KINDS = ("sd", "serial", "shared")
#: The kinds that are a SerialCore.
_SERIAL_KINDS = ("serial", "shared")
#: Options that only an SDCore has.
_SD_ONLY = (*_DEPTH_HELP, "coefficients", "weights", "row_lookahead")


def core_config_from_args(args, base=None):
    """The core configuration of :func:`add_core_options`' options: a
    :class:`~sd_hw.core.config.CoreConfig`, or with ``--core serial`` (or a ``--config``
    file naming ``"core": "serial"``) a :class:`~sd_hw.serial.config.SerialConfig`.

    Fields no option sets come from ``--config``, else from ``base`` (a CoreConfig
    or a SerialConfig, e.g. a board's default, whose kind is then the default of
    ``--core``), else from the defaults.
    """
    from sd_hw.core.config import CoreConfig
    from sd_hw.serial.config import SerialConfig
    description = base.to_dict() if base is not None else {}
    base_kind = "sd"
    if isinstance(base, SerialConfig):
        base_kind = "shared" if base.factored else "serial"
    if getattr(args, "core_config_file", None):
        path = Path(args.core_config_file)
        try:
            description = json.loads(path.read_text())
        except FileNotFoundError:
            raise SdHwError(f"{path}: no such file (core configuration)") from None
        except (OSError, ValueError) as error:
            raise SdHwError(f"{path}: not a JSON core configuration ({error})") from None
        if not isinstance(description, dict):
            raise SdHwError(f"{path}: a core configuration is a JSON object")
    description = dict(description)
    kind = getattr(args, "core_kind", None) or description.pop("core", base_kind)
    description.pop("core", None)
    if kind not in CORE_KINDS:
        raise ParameterError(f"parameter 'core' is {kind!r}, allowed values are "
                             f"{', '.join(map(repr, CORE_KINDS))}")
    if kind != base_kind and getattr(args, "core_config_file", None) is None:
        description = {}  # a base of the other kind says nothing about this one
    if kind in _SERIAL_KINDS:
        for name in _SD_ONLY:
            if getattr(args, f"core_{name}", None) is not None:
                raise ParameterError(f"option --{name.replace('_', '-')} applies to the sd "
                                     f"core, not to --core {kind}")
    datapath = dict(description.get("datapath", {}))
    for field in dataclasses.fields(config_from_args(args)):
        if getattr(args, f"config_{field.name}", None) is not None:
            datapath[field.name] = getattr(config_from_args(args), field.name)
    description["datapath"] = datapath
    if getattr(args, "core_no_counters", False):
        description["counters"] = False
    if kind in _SERIAL_KINDS:
        datapath.setdefault("lanes", SerialConfig().lanes)
        if kind == "shared":
            if datapath.setdefault("dataflow", "factored") != "factored":
                raise ParameterError(f"--core shared is the factored dataflow, but the "
                                     f"configuration asks for dataflow "
                                     f"{datapath['dataflow']!r}")
        return SerialConfig.from_dict(description)
    for name in ("coefficients", "weights"):
        if getattr(args, f"core_{name}", None) is not None:
            description[name] = getattr(args, f"core_{name}")
    for name in (*_DEPTH_HELP, "row_lookahead"):
        text = getattr(args, f"core_{name}", None)
        if text is None:
            continue
        try:
            description[name] = int(text)
        except ValueError:
            raise ParameterError(f"parameter {name!r} must be an integer, "
                                 f"got {text!r}") from None
    return CoreConfig.from_dict(description)


def _load_inputs(net, path):
    """int8 network inputs from a .npy file: float ones are quantised with the file's scale."""
    from sim.golden.model_file import check_inputs
    x = _load_array(path, "inputs")
    if x.dtype == np.int8:
        return check_inputs(net.network, x, source=str(path)).astype(np.int8)
    return net.quantize_input(check_inputs(net.network, x, source=str(path)))


def _load_array(path, what):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SdHwError(f"{path}: no such file ({what})") from None
    except (ValueError, OSError) as error:
        raise SdHwError(f"{path}: not a readable .npy array ({what}): {error}") from None


def cmd_train(args):
    from sim.golden.datasets import dataset
    from sim.golden.model_file import save_model
    from sim.golden.nn import accuracy
    from sim.golden.train import train_float
    data_set = dataset(args.dataset)
    network = data_set.model(args.model)
    epochs = data_set.train_epochs if args.epochs is None else args.epochs
    data = data_set.load(seed=args.seed)
    params = train_float(network, data, epochs=epochs, seed=args.seed)
    x_test = data.inputs_for(network, "test")
    print(f"float test accuracy: {accuracy(network, params, x_test, data.y_test):.4f}")
    x_cal = data.inputs_for(network, "train")
    save_model(args.output, network, params, calibration=x_cal[:256])
    print(f"wrote {args.output}")


def cmd_compress(args):
    from sd_hw import weight_file
    from sd_hw.storage import storage_report
    from sim.flow import compress_model
    from sim.golden.model_file import check_inputs, load_model
    if args.dataset is not None:
        from sim.golden.datasets import dataset
        dataset(args.dataset)
    model = load_model(args.model)
    if args.calibration is not None:
        model.calibration = check_inputs(model.network, _load_array(args.calibration,
                                                                    "calibration inputs"),
                                         source=str(args.calibration))
    result = compress_model(model, _compress_options(args), retrain_method=args.retrain,
                            epochs=args.epochs, dataset=args.dataset, log=print)
    weight_file.save(result.integer_network, args.output)
    report = storage_report(result.integer_network)
    print(report.format_table())
    print(f"wrote {args.output} ({Path(args.output).stat().st_size} bytes)")


def cmd_inspect(args):
    from sd_hw import weight_file
    from sd_hw.storage import storage_report
    net = weight_file.load(args.file)
    report = storage_report(net)
    if args.json:
        print(json.dumps({"network": net.network.to_dict(), "code_bits": net.code_bits,
                          "block_rows": net.block_rows, "input_scale": net.input_scale,
                          "accumulator_bits": net.accumulator_bits,
                          "storage": report.to_dict()}, indent=1))
        return
    print(f"{args.file}: sd-hw weight file")
    print(f"  input shape {tuple(net.network.input_shape)}, input scale {net.input_scale:.6g}, "
          f"code bits {net.code_bits}, block rows {net.block_rows}, "
          f"accumulator {net.accumulator_bits} bits")
    for index, spec in enumerate(net.network.layers):
        line = f"  {index:2d} {spec.kind:9s} {spec.name:12s} -> {net.network.output_shape_of(index)}"
        if spec.is_compute:
            layer = net.layers[spec.name]
            form = "decomposed" if layer.decomposed else "dense int8"
            extra = f", {layer.weights.n_blocks} blocks/channel" if layer.decomposed else ""
            line += f"  [{form}{extra}{', final (int32 logits)' if layer.final else ''}]"
        print(line)
    print(report.format_table())


def cmd_evaluate(args):
    from sd_hw import weight_file
    from sim.golden.reference import run
    net = weight_file.load(args.file)
    x_int = _load_inputs(net, args.inputs)
    logits = run(net, x_int, dataflow=args.dataflow)
    if logits.ndim == 2:
        predictions = np.argmax(logits, axis=1)
        if args.labels is not None:
            labels = _load_array(args.labels, "labels")
            if labels.shape != predictions.shape:
                raise SdHwError(f"{args.labels}: {labels.shape[0] if labels.ndim else 0} labels "
                                f"for {len(predictions)} inputs")
            print(f"accuracy: {np.mean(predictions == labels):.4f} "
                  f"({int(np.sum(predictions == labels))}/{len(labels)})")
        else:
            print(" ".join(map(str, predictions.tolist())))
    if args.output:
        np.save(args.output, logits)
        print(f"wrote {args.output}")


def cmd_generate(args):
    from sd_hw.generate import CORE_TOP, generate, generate_core
    try:
        if args.block == CORE_TOP:
            generated = generate_core(core_config_from_args(args), args.out_dir, reuse=False)
        else:
            generated = generate(args.block, config_from_args(args), args.out_dir)
    except OSError as error:
        raise SdHwError(f"{args.out_dir}: cannot write the generated files there "
                        f"({error.strerror or error})") from None
    print(f"wrote {generated.verilog_path}")
    print(f"wrote {generated.port_map_path}")
    if args.lint:
        from sd_hw.lint import verilator_lint
        report = verilator_lint(generated.verilog_path, top=generated.name)
        allowed = ", ".join(f"{n} {code}" for code, n in sorted(report.allowed.items()))
        print(f"verilator lint passed ({allowed or 'no warnings'} allowed)")


def cmd_config(args):
    from sd_hw.generate import core_description
    print(json.dumps(core_description(core_config_from_args(args)), indent=1))


def _print_counters(report):
    print(f"performance counters of input 0 (RTL / golden model):")
    for name in report.counters[0]:
        got = report.counters[0][name]
        expected = report.expected_counters[0].get(name)
        mark = "" if expected is None or expected == got else "   <- DIFFERS"
        shown = "-" if expected is None else expected
        print(f"  {name:18s} {got:10d} {shown:>10}{mark}")


def cmd_simulate(args):
    from sd_hw import weight_file
    from sim.simulate import simulate
    net = weight_file.load(args.file)
    x = _load_inputs(net, args.inputs)
    if args.count is not None:
        if args.count < 1:
            raise ParameterError(f"parameter 'count' is {args.count}, it must be at least 1")
        x = x[:args.count]
    config = core_config_from_args(args)
    report = simulate(net, config, x, simulator=args.sim, build_dir=args.build_dir,
                      layers=not args.outputs_only, waves_on_mismatch=args.waves,
                      log=print)
    cycles = np.asarray(report.cycles)
    print(f"{len(x)} input(s) on {args.sim}: {report.layers_checked} layer results compared "
          f"with the golden model, {len(report.mismatches)} mismatching input(s)")
    print(f"cycles per inference: {int(cycles.min())}..{int(cycles.max())} "
          f"(mean {cycles.mean():.1f}); golden model's estimate {report.cycle_estimate}")
    _print_counters(report)
    if report.outputs.ndim == 2:
        predictions = np.argmax(report.outputs, axis=1)
        golden = np.argmax(report.golden, axis=1)
        print(f"predictions equal the golden model's: {int(np.sum(predictions == golden))}"
              f"/{len(x)}")
        if args.labels is not None:
            labels = _load_array(args.labels, "labels")[:len(x)]
            if labels.shape != predictions.shape:
                raise SdHwError(f"{args.labels}: {labels.size} labels for {len(x)} inputs")
            print(f"accuracy on the RTL: {np.mean(predictions == labels):.4f} "
                  f"(golden model {np.mean(golden == labels):.4f})")
    if args.output:
        np.save(args.output, report.outputs)
        print(f"wrote {args.output}")
    for mismatch in report.mismatches[:5]:
        print(f"MISMATCH: {mismatch}")
    for index, name, expected, got in report.counter_mismatches[:5]:
        print(f"COUNTER MISMATCH: input {index}: {name} is {got}, expected {expected}")
    if report.waveform:
        print(f"waveform of the mismatching layer: {report.waveform}")
    print(f"simulation took {report.seconds:.1f} s")
    return 0 if report.passed else 1


def _board_config(args):
    from boards import board, board_module
    from sd_hw.core.config import CoreConfig
    module = board_module(board(args.board))
    base = module.DEFAULT_CONFIG
    if getattr(args, "core_kind", None) == "sd" and not isinstance(base, CoreConfig):
        base = module.SD_CORE_CONFIG  # the board's SDCore configuration
    if getattr(args, "core_kind", None) == "shared":
        base = getattr(module, "SHARED_CONFIG", None)  # the board's shared-basis core
        if base is None:
            raise SdHwError(f"board {args.board!r} has no shared-basis core configuration; "
                            f"use --core serial or --core sd, or give one with --config")
    return core_config_from_args(args, base=base)


def cmd_boards(args):
    from boards import BOARDS, board_module
    for name, spec in BOARDS.items():
        module = board_module(spec)
        print(f"{name:11s} {spec.description}, {module.OSCILLATOR_HZ / 1e6:g} MHz oscillator, "
              f"PLL clock chosen by the build; default core: "
              f"{_core_summary(module.DEFAULT_CONFIG)}")
        shared = getattr(module, "SHARED_CONFIG", None)
        if shared is not None:
            print(f"{'':11s} --core shared: {_core_summary(shared)}")


def _core_summary(config):
    from sd_hw.serial.config import SerialConfig
    if isinstance(config, SerialConfig):
        text = (f"serial, {config.lanes} lane(s), weights {config.weight_banks} x "
                f"{config.bank_depth} words, activations {config.activation_bytes} bytes")
        if config.factored:
            text += f", factored, {config.shared_lanes} lanes a basis engine"
    else:
        text = (f"sd, {config.lanes} lane(s), {config.datapath.dataflow}, activations "
                f"{config.activation_depth}, weights {config.weight_depth} words/lane")
    return text + ("" if config.counters else ", cycle counter only")


def cmd_build(args):
    from boards.build import build_board, format_report
    config = _board_config(args)
    report = build_board(args.board, config, out_dir=args.out_dir, seeds=args.seeds,
                         clock=args.clock, log=print)
    print(format_report(report))
    print(f"wrote {Path(args.out_dir) / args.board / 'report.json'} and report.txt")
    return 0 if report.meets_timing else 1


def cmd_flash(args):
    from boards.flash import flash
    command = flash(args.board, args.bitstream, dry_run=args.dry_run)
    print(("would run: " if args.dry_run else "ran: ") + " ".join(command))


def cmd_run(args):
    from boards import board, board_module
    from boards.clocking import slowest_clock_hz
    from sd_hw import weight_file
    from sim.host.board import run_network
    from sim.host.link import SerialTransport
    net = weight_file.load(args.file)
    x = _load_inputs(net, args.inputs)
    if args.count is not None:
        x = x[:args.count]
    config = _board_config(args)
    # The clock only bounds how long a RUN may take: assume the slowest the
    # board's PLL makes, which covers whatever clock its bitstream was built for.
    spec = board(args.board)
    clock_hz = slowest_clock_hz(spec.family, board_module(spec).OSCILLATOR_HZ)
    transport = SerialTransport(args.port, baud=args.baud, clock_hz=clock_hz)
    try:
        ident = transport.ident()
        print(f"{args.port}: sd-hw core, registers {' '.join(f'{w:08x}' for w in ident)}")
        report = run_network(transport, net, config, x, log=print)
    except Exception as error:
        from sd_hw.link.protocol import ProtocolError
        if isinstance(error, ProtocolError):
            raise SdHwError(f"{args.port}: {error}") from None
        raise
    finally:
        transport.close()
    if report.outputs.ndim == 2:
        print(" ".join(map(str, np.argmax(report.outputs, axis=1).tolist())))
    print(f"outputs {'equal' if report.passed else 'DIFFER FROM'} the golden model's; "
          f"{np.mean(report.cycles):.0f} cycles per inference")
    if args.output:
        np.save(args.output, report.outputs)
    return 0 if report.passed else 1


def cmd_demo(args):
    from sim.demo import AccuracyBarMissed, run_demo
    from sim.golden.datasets import dataset
    dataset(args.dataset).model(args.model)
    simulator = args.sim or ("verilator" if args.dataset == "digits" else "none")
    try:
        run_demo(dataset_name=args.dataset, model=args.model, retrain_method=args.retrain,
                 out_dir=Path(args.out), report_path=Path(args.report) if args.report else None,
                 simulator=None if simulator == "none" else simulator, train_seed=args.seed)
    except AccuracyBarMissed as error:
        print(f"sd-hw: error: {error}", file=sys.stderr)
        return 1
    return 0


def build_parser():
    from sim.golden.datasets import DATASETS
    dataset_names = " or ".join(f"{d.name} ({d.description})" for d in DATASETS.values())
    parser = argparse.ArgumentParser(
        prog="sd-hw", description="SmartDeal accelerator generator: compress networks into "
                                  "SmartDeal weight files and run them on the golden model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train, decompose, retrain and pack a bundled "
                                            "model, and report accuracy and storage")
    demo.add_argument("--dataset", default="digits", metavar="NAME",
                      help=f"bundled data set: {dataset_names} (default digits)")
    demo.add_argument("--model", choices=("cnn", "mlp"), default="cnn",
                      help="bundled network (default cnn; mnist has cnn only)")
    demo.add_argument("--retrain", choices=("ste", "projection"), default="ste",
                      help="SmartDeal retraining method (default ste)")
    demo.add_argument("--out", default="build/demo", help="output folder (default build/demo)")
    demo.add_argument("--report", help="also write the results as markdown to this file")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the float training (default 0)")
    demo.add_argument("--sim", choices=("verilator", "icarus", "amaranth", "none"),
                      help="run the packed model on the accelerator's RTL with this simulator "
                           "(default verilator for digits, none for mnist; none skips it)")
    demo.set_defaults(func=cmd_demo)

    train = commands.add_parser("train", help="train a bundled float network on a bundled "
                                              "data set")
    train.add_argument("--dataset", default="digits", metavar="NAME",
                       help=f"bundled data set: {dataset_names} (default digits)")
    train.add_argument("--model", choices=("cnn", "mlp"), default="cnn",
                       help="bundled network (default cnn; mnist has cnn only)")
    train.add_argument("--epochs", type=int,
                       help="training epochs (default 30 for digits, 20 for mnist)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    train.set_defaults(func=cmd_train)

    compress = commands.add_parser(
        "compress", help="decompose a float model (.npz) and write a SmartDeal weight file")
    compress.add_argument("model", help="float model: .npz with the network description "
                                        "(docs/model-format.md)")
    compress.add_argument("-o", "--output", required=True, help="weight file to write")
    compress.add_argument("--calibration", help=".npy float inputs for activation scales "
                                                "(default: the model's 'calibration' array)")
    compress.add_argument("--retrain", choices=("none", "projection", "ste"), default="none",
                          help="SmartDeal retraining on a bundled data set (--dataset)")
    compress.add_argument("--dataset", metavar="NAME",
                          help=f"bundled data set for --retrain: {dataset_names} (default: the "
                               "one whose images fit the model's input)")
    compress.add_argument("--epochs", type=int, default=10, help="retraining epochs")
    _add_decompose_options(compress)
    compress.set_defaults(func=cmd_compress)

    inspect = commands.add_parser("inspect", help="print a weight file's layers and storage")
    inspect.add_argument("file")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=cmd_inspect)

    evaluate = commands.add_parser("evaluate", help="run the golden integer model of a weight "
                                                    "file on inputs")
    evaluate.add_argument("file")
    evaluate.add_argument("--inputs", required=True,
                          help=".npy inputs (N, *input_shape): float (quantised with the "
                               "file's input scale) or int8")
    evaluate.add_argument("--labels", help=".npy integer labels: print the accuracy")
    evaluate.add_argument("--dataflow", choices=("rebuild", "factored"), default="rebuild")
    evaluate.add_argument("-o", "--output", help="write the outputs (logits) as .npy")
    evaluate.set_defaults(func=cmd_evaluate)

    from sd_hw.generate import BLOCKS
    generate = commands.add_parser(
        "generate", help="write the Verilog and JSON port map of the accelerator or a block",
        description="Write BLOCK.v and BLOCK.ports.json (every port, and each stream's "
                    "payload layout) for one accelerator configuration. BLOCK sd_core is "
                    "the whole accelerator (written to OUT_DIR/<configuration tag>/).")
    generate.add_argument("block", metavar="BLOCK",
                          help=f"sd_core or one of {', '.join(BLOCKS)}")
    generate.add_argument("-o", "--out-dir", default="build/verilog",
                          help="folder to write to (default build/verilog)")
    generate.add_argument("--lint", action="store_true",
                          help="also lint the Verilog with verilator --lint-only -Wall")
    add_core_options(generate)
    generate.set_defaults(func=cmd_generate)

    config = commands.add_parser("config", help="print a core configuration as JSON",
                                 description="Print the core configuration that the options "
                                             "describe, as `--config FILE` reads it.")
    add_core_options(config)
    config.set_defaults(func=cmd_config)

    from sim.simulate import SIMULATORS
    simulate = commands.add_parser(
        "simulate", help="run a weight file on the generated RTL and check every layer",
        description="Compile the weight file for a core configuration, run the inputs on "
                    "the core's RTL and compare every layer's output and every performance "
                    "counter with the golden model. Exit status 1 on a mismatch.")
    simulate.add_argument("file", help="weight file (.sdw)")
    simulate.add_argument("--inputs", required=True,
                          help=".npy inputs (N, *input_shape): float (quantised with the "
                               "file's input scale) or int8")
    simulate.add_argument("--sim", choices=SIMULATORS, default="verilator",
                          help="simulator (default verilator)")
    simulate.add_argument("--count", type=int, help="simulate only the first N inputs")
    simulate.add_argument("--labels", help=".npy integer labels: print the accuracy")
    simulate.add_argument("--outputs-only", action="store_true",
                          help="compare the final outputs only, not every layer")
    simulate.add_argument("--waves", action="store_true",
                          help="on a mismatch, record a waveform (FST/VCD) of that layer alone")
    simulate.add_argument("--build-dir", default="build/simulate",
                          help="folder for Verilog and simulator builds (default build/simulate)")
    simulate.add_argument("-o", "--output", help="write the RTL's outputs as .npy")
    add_core_options(simulate)
    simulate.set_defaults(func=cmd_simulate)

    from boards import BOARDS
    boards_parser = commands.add_parser("boards", help="list the supported boards")
    boards_parser.set_defaults(func=cmd_boards)

    build = commands.add_parser(
        "build", help="build a board's bitstream and report resources and fmax",
        description="Synthesise (yosys) and place and route (nextpnr, once per seed) the "
                    "board's top-level with the accelerator, choose the PLL clock (by default "
                    "the fastest every seed meets, confirmed by a place and route at that "
                    "clock), pack the bitstream, and write report.json and report.txt: the "
                    "clock, its PLL parameters and why, resources against the chip's, fmax "
                    "per seed, the timing verdict. Exit status 1 if timing is not met.")
    build.add_argument("--board", required=True, choices=sorted(BOARDS))
    build.add_argument("--seeds", type=int, default=1,
                       help="place-and-route seeds to measure fmax over (default 1)")
    build.add_argument("--clock", default="auto",
                       help="the design's clock: 'auto' (default: the fastest PLL clock that "
                            "meets timing on every seed) or a frequency in MHz (the fastest "
                            "PLL output not above it; refused unless every seed meets it)")
    build.add_argument("-o", "--out-dir", default="build/boards",
                       help="folder for the builds (default build/boards)")
    add_core_options(build)
    build.set_defaults(func=cmd_build)

    flash = commands.add_parser("flash", help="program a board with a bitstream "
                                              "(openFPGALoader)")
    flash.add_argument("--board", required=True, choices=sorted(BOARDS))
    flash.add_argument("bitstream")
    flash.add_argument("--dry-run", action="store_true", help="print the command only")
    flash.set_defaults(func=cmd_flash)

    run_parser = commands.add_parser(
        "run", help="run a weight file on a board over its serial port",
        description="Load the weight file into the board's accelerator over the UART, run "
                    "the inputs and check the outputs against the golden model.")
    run_parser.add_argument("file", help="weight file (.sdw)")
    run_parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    run_parser.add_argument("--inputs", required=True, help=".npy inputs, float or int8")
    run_parser.add_argument("--board", default="icebreaker", choices=sorted(BOARDS),
                            help="the board (for its default core and the RUN timeout; default "
                                 "icebreaker)")
    run_parser.add_argument("--baud", type=int, default=115200)
    run_parser.add_argument("--count", type=int, help="run only the first N inputs")
    run_parser.add_argument("-o", "--output", help="write the outputs as .npy")
    add_core_options(run_parser)
    run_parser.set_defaults(func=cmd_run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except SdHwError as error:
        print(f"sd-hw: error: {error}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
