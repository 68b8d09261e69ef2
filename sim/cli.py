"""The ``sd-hw`` command."""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from sd_hw.errors import (ConfigFileError, OutputPathError, ParameterError, SdHwError,
                          shown)


def _integer(low, high=None):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound if None)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {shown(text)}") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{shown(value)} is not allowed ({allowed})")
        return value
    parse.__name__ = "integer"
    return parse


#: Seeds of NumPy's generators: non-negative.
_SEED = _integer(0, 2 ** 63 - 1)


def check_output_path(path, what):
    """Refuse, before any work, an output file whose folder is missing or that is a folder."""
    target = Path(path)
    try:
        is_folder, folder_exists = target.is_dir(), target.parent.is_dir()
    except OSError as error:  # a name too long, for one
        raise OutputPathError(f"{shown(str(path))}: cannot write the {what} "
                              f"({error.strerror or error})") from None
    if is_folder:
        raise OutputPathError(f"{path}: is a folder, the {what} to write is a file")
    folder = target.parent
    if not folder_exists:
        raise OutputPathError(f"{path}: folder {str(folder)!r} does not exist (the {what} is "
                              f"written there)")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"{path}: folder {str(folder)!r} is not writable")


def check_output_folder(path, option):
    """Refuse, before any work, an output folder (given with ``option``) that is a file."""
    try:
        is_file = Path(path).exists() and not Path(path).is_dir()
    except OSError as error:  # a name too long, for one
        raise OutputPathError(f"{shown(str(path))}: cannot use it as {option} "
                              f"({error.strerror or error})") from None
    if is_file:
        raise OutputPathError(f"{path}: is a file, {option} must name a folder")


def check_input_name(path, what):
    """Refuse, before any work, an input file name the system cannot even look up."""
    try:
        Path(path).exists()
    except OSError as error:  # a name too long, for one
        raise SdHwError(f"{shown(str(path))}: cannot read the {what} "
                        f"({error.strerror or error})") from None


def save_npy(path, array):
    """Write ``array`` as .npy to exactly ``path`` (NumPy would append '.npy')."""
    try:
        with open(path, "wb") as file:
            np.save(file, array)
    except OSError as error:
        raise OutputPathError(f"{path}: cannot write ({error.strerror or error})") from None


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
    group.add_argument("--shared-basis", type=int, metavar="G",
                       help="output filters sharing one basis per block, in groups of G "
                            "consecutive filters (the last group may be smaller), 1..65535 "
                            "(default 1: a basis per filter; the official preset takes 1 only)")
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
             for name in ("block_rows", "code_bits", "theta", "iterations", "vector_wise",
                          "shared_basis")
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
        description = _read_config_file(path)
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
    datapath = description.get("datapath", {})
    if not isinstance(datapath, dict):
        raise ConfigFileError(f"{args.core_config_file}: field 'datapath' must be an object, "
                              f"got {shown(datapath)}")
    datapath = dict(datapath)
    for field in dataclasses.fields(config_from_args(args)):
        if getattr(args, f"config_{field.name}", None) is not None:
            datapath[field.name] = getattr(config_from_args(args), field.name)
    description["datapath"] = datapath
    if getattr(args, "core_no_counters", False):
        description["counters"] = False
    try:
        return _core_config(kind, description, args)
    except ParameterError as error:
        if getattr(args, "core_config_file", None) is None:
            raise
        raise ConfigFileError(f"core configuration {args.core_config_file} (with the options "
                              f"given): {error}") from None


def _core_config(kind, description, args):
    from sd_hw.core.config import CoreConfig
    from sd_hw.serial.config import SerialConfig
    if kind in _SERIAL_KINDS:
        datapath = description["datapath"]
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


def _read_config_file(path):
    """The JSON object of a ``--config`` file; problems raise :class:`ConfigFileError`
    naming the file (its fields are checked by :func:`core_config_from_args`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such file (core configuration)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"{path}: cannot read the core configuration "
                              f"({getattr(error, 'strerror', None) or error})") from None
    try:
        description = json.loads(text)
    except RecursionError:
        raise ConfigFileError(f"{path}: not a JSON core configuration (nested too "
                              f"deeply)") from None
    except ValueError as error:
        raise ConfigFileError(f"{path}: not a JSON core configuration "
                              f"({str(error)[:100]})") from None
    if not isinstance(description, dict):
        raise ConfigFileError(f"{path}: a core configuration is a JSON object, got "
                              f"{shown(description)}")
    kind = description.get("core", "sd")
    if not isinstance(kind, str) or kind not in CORE_KINDS:
        raise ConfigFileError(f"{path}: field 'core' is {shown(kind)}, allowed values are "
                              f"{', '.join(map(repr, CORE_KINDS))}")
    return description


def _load_inputs(net, path):
    """int8 network inputs from a .npy file: float ones are quantised with the file's scale
    (values outside the calibrated range are counted on stderr, :func:`_report_saturation`)."""
    from sim.inputs import quantize_inputs
    x, saturation = quantize_inputs(net, _load_array(path, "inputs"), source=str(path))
    _report_saturation(saturation, path)
    return x


def _report_saturation(saturation, source):
    """Say on stderr how many float input values saturated when quantised to int8."""
    line = saturation.describe(str(source)) if saturation is not None else None
    if line:
        print(f"sd-hw: warning: {line}", file=sys.stderr)


def _load_array(path, what):
    from sim.golden.model_file import load_npy
    return load_npy(path, what=what)


def _load_labels(path, count):
    """Integer class labels, one per input (the first ``count`` of the file)."""
    from sim.golden.model_file import load_npy
    labels = load_npy(path, what="labels", kinds="iu")
    if labels.ndim != 1 or len(labels) < count:
        raise SdHwError(f"{path}: labels have shape {labels.shape}, expected ({count},): one "
                        f"integer label per input")
    return labels[:count]


#: Set by ``--quiet``: no progress lines.
_quiet = False


def _progress(line):
    """Progress of a long step (a training epoch, a place and route phase, a
    simulator build), on stderr (stdout keeps the results); nothing with ``--quiet``."""
    if not _quiet:
        print(line, file=sys.stderr, flush=True)


def _add_quiet_option(parser):
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines on stderr (results and errors still print)")


def _add_board_option(parser, *, core=False):
    """``--board NAME`` (and, where the command has no core options, ``--core``)."""
    from boards import BOARDS
    parser.add_argument("--board", choices=sorted(BOARDS),
                        help="use this board's core configuration (its default core; --core sd "
                             "its SDCore configuration); see sd-hw boards")
    if core:
        parser.add_argument("--core", dest="core_kind", choices=CORE_KINDS,
                            help="with --board: which of the board's cores (default its own)")


def _selected_config(args):
    """The core configuration of ``--board`` (and the core options), or of the core
    options alone."""
    if getattr(args, "board", None):
        return _board_config(args)
    return core_config_from_args(args)


def _report_fit(net, config, args):
    """Print whether ``net`` fits the core and what would make it fit; True if it fits."""
    from sim.fit import check_fit
    report = check_fit(net, config, selected=_where(args))
    if report.fits:
        print(f"fit: the network fits the core of {_where(args) or 'these options'}")
    else:
        print(f"fit: the network does not fit the core of {_where(args) or 'these options'}: "
              f"{report.describe()}")
    return report.fits


def _where(args):
    """The core the options chose, as the user named it."""
    if getattr(args, "board", None):
        kind = getattr(args, "core_kind", None)
        return f"--board {args.board}" + (f" --core {kind}" if kind else "")
    kind = getattr(args, "core_kind", None)
    return f"--core {kind}" if kind else ""


def _add_training_data_options(parser, *, what):
    group = parser.add_argument_group(
        "training data", f"labelled data for {what}: your own .npy arrays, or a bundled "
                         "data set (--dataset)")
    group.add_argument("--train-data", metavar="X.npy",
                       help="training inputs, (N, *input_shape) or flat (N, features), float")
    group.add_argument("--train-labels", metavar="Y.npy",
                       help="integer class labels 0..classes-1, shape (N,)")
    group.add_argument("--val-data", metavar="X.npy", help="validation inputs (default: hold "
                                                           "out --val-fraction of the training "
                                                           "inputs)")
    group.add_argument("--val-labels", metavar="Y.npy", help="validation labels")
    group.add_argument("--val-fraction", type=float, metavar="F",
                       help="fraction of the training inputs held out for validation, per "
                            "class, when no --val-data is given (default 0.2)")


def _training_data(args, network, *, seed=0):
    from sim.golden.user_data import training_data
    return training_data(network, dataset=args.dataset, train_data=args.train_data,
                         train_labels=args.train_labels, val_data=args.val_data,
                         val_labels=args.val_labels, val_fraction=args.val_fraction, seed=seed)


def _training_network(args):
    """``(network, params or None)`` of ``sd-hw train --model``: a bundled model
    name, or a file (.json network description, .npz model, .onnx)."""
    from sim.api import load_model
    from sim.golden.datasets import dataset
    if args.model in ("cnn", "mlp"):
        return dataset(args.dataset or "digits").model(args.model), None
    model = load_model(args.model, progress=_progress)
    return model.network, model.params


def cmd_train(args):
    from sim.golden.datasets import dataset
    from sim.golden.model_file import save_model
    from sim.golden.nn import accuracy
    from sim.golden.train import train_float
    check_output_path(args.output, "model file")
    network, params = _training_network(args)
    if args.fine_tune and params is None:
        raise ParameterError("--fine-tune needs --model to be a model file with weights "
                             "(.npz or .onnx)")
    data = _training_data(args, network, seed=args.seed)
    if args.epochs is not None:
        epochs = args.epochs
    elif args.train_data is None:
        epochs = dataset(args.dataset or "digits").train_epochs if args.model in (
            "cnn", "mlp") else 30
    else:
        epochs = 30
    _progress(f"training on {data.description}")
    params = train_float(network, data, epochs=epochs, seed=args.seed, log=_progress,
                         init=params if args.fine_tune else None)
    if data.x_test is not None:
        print(f"float test accuracy: {accuracy(network, params, data.x_test, data.y_test):.4f}")
    else:
        print(f"float validation accuracy: "
              f"{accuracy(network, params, data.x_val, data.y_val):.4f}")
    save_model(args.output, network, params, calibration=data.x_train[:256])
    print(f"wrote {args.output}")



def cmd_import(args):
    from sim.golden.model_file import check_inputs, save_model
    from sim.onnx_import import import_onnx
    check_output_path(args.output, "model file")
    imported = import_onnx(args.model)
    model = imported.model
    calibration = None
    if args.calibration is not None:
        calibration = check_inputs(model.network, _load_array(args.calibration,
                                                              "calibration inputs"),
                                   source=str(args.calibration))
    network = model.network
    print(f"{args.model}: input {tuple(network.input_shape)}")
    for index, spec in enumerate(network.layers):
        origin = " + ".join(imported.origins.get(spec.name, []))
        print(f"  {index:2d} {spec.kind:16s} {spec.name:10s} -> "
              f"{str(network.output_shape_of(index)):14s} from {origin}")
    for note in imported.notes:
        print(f"  note: {note}")
    save_model(args.output, network, model.params, calibration=calibration)
    print(f"wrote {args.output}")


def cmd_compress(args):
    from sd_hw import weight_file
    from sd_hw.storage import storage_report
    from sim.flow import compress_model, load_float_model
    from sim.golden.model_file import check_inputs
    check_output_path(args.output, "weight file")
    if args.dataset is not None:
        from sim.golden.datasets import dataset
        dataset(args.dataset)
    model = load_float_model(args.model, log=print)
    if args.board or args.core_kind:
        _selected_config(args)  # a bad --board/--core fails before the work
    if args.calibration is not None:
        model.calibration = check_inputs(model.network, _load_array(args.calibration,
                                                                    "calibration inputs"),
                                         source=str(args.calibration))
    data = None
    if args.train_data is not None:
        data = _training_data(args, model.network)
        if model.calibration is None:
            model.calibration = data.x_train[:256]
        if args.retrain == "none":
            print("note: --train-data without --retrain only calibrates the activation scales")
    elif args.val_data is not None or args.val_fraction is not None:
        raise ParameterError("--val-data/--val-labels/--val-fraction need --train-data and "
                             "--train-labels")
    result = compress_model(model, _compress_options(args), retrain_method=args.retrain,
                            epochs=args.epochs, dataset=args.dataset, log=print, data=data,
                            progress=_progress)
    weight_file.save(result.integer_network, args.output)
    report = storage_report(result.integer_network)
    print(report.format_table())
    print(f"wrote {args.output} ({Path(args.output).stat().st_size} bytes)")
    if args.board or args.core_kind:
        return 0 if _report_fit(result.integer_network, _selected_config(args), args) else 1


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
            if layer.decomposed and layer.weights.shared_basis > 1:
                extra += f", bases shared by {layer.weights.shared_basis} channels"
            line += f"  [{form}{extra}{', final (int32 logits)' if layer.final else ''}]"
        print(line)
    print(report.format_table())


def cmd_evaluate(args):
    from sd_hw import weight_file
    from sim.golden.reference import run
    if args.output:
        check_output_path(args.output, "outputs file")
    net = weight_file.load(args.file)
    config = _selected_config(args) if args.board or args.core_kind else None
    dataflow = args.dataflow or (config.datapath.dataflow if config else "rebuild")
    x_int = _load_inputs(net, args.inputs)
    labels = None if args.labels is None else _load_labels(args.labels, len(x_int))
    logits = run(net, x_int, dataflow=dataflow)
    if logits.ndim == 2:
        predictions = np.argmax(logits, axis=1)
        if labels is not None:
            print(f"accuracy: {np.mean(predictions == labels):.4f} "
                  f"({int(np.sum(predictions == labels))}/{len(labels)})")
        else:
            print(" ".join(map(str, predictions.tolist())))
    if args.output:
        save_npy(args.output, logits)
        print(f"wrote {args.output}")
    if config is not None:
        return 0 if _report_fit(net, config, args) else 1


def cmd_generate(args):
    from sd_hw.generate import CORE_TOP, generate, generate_core
    check_output_folder(args.out_dir, "--out-dir")
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
    print(json.dumps(core_description(_selected_config(args)), indent=1))


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
    if args.output:
        check_output_path(args.output, "outputs file")
    check_output_folder(args.build_dir, "--build-dir")
    net = weight_file.load(args.file)
    x = _load_inputs(net, args.inputs)
    if args.count is not None:
        x = x[:args.count]
    labels = None if args.labels is None else _load_labels(args.labels, len(x))
    config = _selected_config(args)
    from sim.fit import require_fit
    require_fit(net, config, selected=_where(args))
    report = simulate(net, config, x, simulator=args.sim, build_dir=args.build_dir,
                      layers=not args.outputs_only, waves_on_mismatch=args.waves,
                      log=print, progress=_progress)
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
        if labels is not None:
            print(f"accuracy on the RTL: {np.mean(predictions == labels):.4f} "
                  f"(golden model {np.mean(golden == labels):.4f})")
    if args.output:
        save_npy(args.output, report.outputs)
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
    check_output_folder(args.out_dir, "--out-dir")
    config = _board_config(args)
    report = build_board(args.board, config, out_dir=args.out_dir, seeds=args.seeds,
                         first_seed=args.first_seed, clock=args.clock, log=_progress)
    print(format_report(report))
    print(f"wrote {Path(args.out_dir) / args.board / 'report.json'} and report.txt")
    return 0 if report.meets_timing else 1


def cmd_flash(args):
    from boards.flash import flash
    check_input_name(args.bitstream, "bitstream")
    command = flash(args.board, args.bitstream, dry_run=args.dry_run)
    print(("would run: " if args.dry_run else "ran: ") + " ".join(command))


def cmd_run(args):
    from sd_hw import weight_file
    from sim.api import run_on_board
    if args.output:
        check_output_path(args.output, "outputs file")
    net = weight_file.load(args.file)
    x = _load_inputs(net, args.inputs)
    if args.count is not None:
        x = x[:args.count]
    result = run_on_board(net, x, board=args.board, port=args.port, baud=args.baud,
                          config=_board_config(args), progress=_progress)
    if result.outputs.ndim == 2:
        print(" ".join(map(str, np.argmax(result.outputs, axis=1).tolist())))
    print(f"outputs {'equal' if result.passed else 'DIFFER FROM'} the golden model's; "
          f"{np.mean(result.cycles):.0f} cycles per inference")
    if args.output:
        save_npy(args.output, result.outputs)
        print(f"wrote {args.output}")
    return 0 if result.passed else 1


def cmd_demo(args):
    from sim.demo import AccuracyBarMissed, run_demo
    from sim.golden.datasets import dataset
    dataset(args.dataset).model(args.model)
    check_output_folder(args.out, "--out")
    if args.report:
        check_output_path(args.report, "report")
    simulator = args.sim or ("verilator" if args.dataset == "digits" else "none")
    try:
        run_demo(dataset_name=args.dataset, model=args.model, retrain_method=args.retrain,
                 out_dir=Path(args.out), report_path=Path(args.report) if args.report else None,
                 simulator=None if simulator == "none" else simulator, train_seed=args.seed)
    except AccuracyBarMissed as error:
        print(f"sd-hw: error: {error}", file=sys.stderr)
        return 1
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with sd-hw's error format: one line ``sd-hw: error: ...``, exit status 2."""

    def error(self, message):
        self.exit(2, f"sd-hw: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser():
    from sim.golden.datasets import DATASETS
    dataset_names = " or ".join(f"{d.name} ({d.description})" for d in DATASETS.values())
    parser = _Parser(
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
    demo.add_argument("--seed", type=_SEED, default=0,
                      help="seed of the float training (default 0)")
    demo.add_argument("--sim", choices=("verilator", "icarus", "amaranth", "none"),
                      help="run the packed model on the accelerator's RTL with this simulator "
                           "(default verilator for digits, none for mnist; none skips it)")
    demo.set_defaults(func=cmd_demo)

    train = commands.add_parser("train", help="train a float network on a bundled data set or "
                                              "on your own .npy arrays")
    train.add_argument("--dataset", metavar="NAME",
                       help=f"bundled data set: {dataset_names} (default digits, unless "
                            f"--train-data is given)")
    train.add_argument("--model", default="cnn", metavar="NAME|FILE",
                       help="bundled network cnn or mlp (default cnn; mnist has cnn only), or "
                            "a file: a network description (.json), a model (.npz) or an ONNX "
                            "model (.onnx); training starts from He initialisation unless "
                            "--fine-tune")
    train.add_argument("--fine-tune", action="store_true",
                       help="start from the weights of the --model file instead")
    train.add_argument("--epochs", type=_integer(1, 100000),
                       help="training epochs (default 30; 20 for the bundled mnist)")
    train.add_argument("--seed", type=_SEED, default=0)
    train.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    _add_training_data_options(train, what="training")
    _add_quiet_option(train)
    train.set_defaults(func=cmd_train)

    import_parser = commands.add_parser(
        "import", help="convert an ONNX model into an sd-hw float model (.npz)",
        description="Read an ONNX model (Conv, Gemm/MatMul, BatchNormalization folded, Relu, "
                    "MaxPool, AveragePool, GlobalAveragePool, Flatten; docs/model-format.md), "
                    "print the network it becomes and write it as an sd-hw model .npz.")
    import_parser.add_argument("model", help="ONNX model (.onnx)")
    import_parser.add_argument("-o", "--output", required=True, help="model file to write "
                                                                     "(.npz)")
    import_parser.add_argument("--calibration", help=".npy float inputs stored as the model's "
                                                     "calibration array")
    import_parser.set_defaults(func=cmd_import)

    compress = commands.add_parser(
        "compress", help="decompose a float model (.npz or .onnx) and write a SmartDeal "
                         "weight file")
    compress.add_argument("model", help="float model: .npz with the network description "
                                        "(docs/model-format.md) or an ONNX model (.onnx)")
    compress.add_argument("-o", "--output", required=True, help="weight file to write")
    compress.add_argument("--calibration", help=".npy float inputs for activation scales "
                                                "(default: the model's 'calibration' array)")
    compress.add_argument("--retrain", choices=("none", "projection", "ste"), default="none",
                          help="SmartDeal retraining on --train-data/--train-labels or a "
                               "bundled data set (--dataset)")
    compress.add_argument("--dataset", metavar="NAME",
                          help=f"bundled data set for --retrain: {dataset_names} (default: the "
                               "one whose images fit the model's input)")
    compress.add_argument("--epochs", type=_integer(1, 100000), default=10,
                          help="retraining epochs")
    _add_board_option(compress, core=True)
    _add_quiet_option(compress)
    _add_training_data_options(compress, what="--retrain (and calibration)")
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
    evaluate.add_argument("--dataflow", choices=("rebuild", "factored"),
                          help="default: the --board core's, else rebuild")
    _add_board_option(evaluate, core=True)
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
    _add_board_option(config)
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
    simulate.add_argument("--count", type=_integer(1), help="simulate only the first N inputs")
    simulate.add_argument("--labels", help=".npy integer labels: print the accuracy")
    simulate.add_argument("--outputs-only", action="store_true",
                          help="compare the final outputs only, not every layer")
    simulate.add_argument("--waves", action="store_true",
                          help="on a mismatch, record a waveform (FST/VCD) of that layer alone")
    simulate.add_argument("--build-dir", default="build/simulate",
                          help="folder for Verilog and simulator builds (default build/simulate)")
    simulate.add_argument("-o", "--output", help="write the RTL's outputs as .npy")
    add_core_options(simulate)
    _add_board_option(simulate)
    _add_quiet_option(simulate)
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
    build.add_argument("--seeds", type=_integer(1, 1000), default=1,
                       help="place-and-route seeds to measure fmax over (default 1)")
    build.add_argument("--first-seed", type=_integer(1, 1000000), default=1, metavar="N",
                       help="nextpnr seed of the first place and route, the one packed; the "
                            "others follow it (default 1). Another seed is the way out when "
                            "nextpnr's router does not converge on a nearly full chip")
    build.add_argument("--clock", default="auto",
                       help="the design's clock: 'auto' (default: the fastest PLL clock that "
                            "meets timing on every seed) or a frequency in MHz (the fastest "
                            "PLL output not above it; refused unless every seed meets it)")
    build.add_argument("-o", "--out-dir", default="build/boards",
                       help="folder for the builds (default build/boards)")
    add_core_options(build)
    _add_quiet_option(build)
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
    run_parser.add_argument("--baud", type=_integer(1, 100_000_000), default=115200)
    run_parser.add_argument("--count", type=_integer(1), help="run only the first N inputs")
    run_parser.add_argument("-o", "--output", help="write the outputs as .npy")
    add_core_options(run_parser)
    _add_quiet_option(run_parser)
    run_parser.set_defaults(func=cmd_run)
    return parser


#: Exit status when the reader of standard output went away (``sd-hw inspect F | head -1``):
#: 128 + SIGPIPE, what a shell reports for a command that a closed pipe ended.
BROKEN_PIPE_STATUS = 141


def main(argv=None):
    """Run the ``sd-hw`` command; return its exit status.

    0 on success, 1 when a check the command makes fails (a simulation or a
    board run that differs from the golden model, a build that misses timing,
    a network that does not fit the core ``--board`` chose), 2 on bad input or
    a bad option (one line ``sd-hw: error: ...`` on stderr),
    :data:`BROKEN_PIPE_STATUS` when stdout was closed early. It never raises
    SystemExit: ``--help`` returns 0.
    """
    global _quiet
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help, or a bad option that argparse has reported
            return stop.code or 0
        _quiet = getattr(args, "quiet", False)
        status = args.func(args)
        sys.stdout.flush()
    except SdHwError as error:
        print(f"sd-hw: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_STATUS
    return status or 0


def _discard_stdout():
    """Point stdout at the null device, so that the interpreter's final flush of what is
    still buffered cannot fail again (the recipe of Python's signal module docs)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor: nothing to redirect
        pass


if __name__ == "__main__":
    sys.exit(main())
