"""The Python API: the steps of the ``sd-hw`` command as functions.

::

    from sim import api
    model = api.load_model("model.onnx", calibration="x_cal.npy")
    packed = api.compress(model, output="model.sdw", board="icebreaker")
    print(packed.storage.format_table(), packed.fit.fits)
    result = api.evaluate("model.sdw", "x_test.npy", labels="y_test.npy")
    print(result.accuracy, result.saturation)
    rtl = api.simulate(packed.network, "x_test.npy", board="icebreaker", count=4)
    print(rtl.passed, rtl.cycles)

Every function takes what the command takes (a file path, or the object
already in memory: a :class:`~sim.golden.model_file.FloatModel`, an
:class:`~sd_hw.integer_network.IntegerNetwork`, a NumPy array) and returns
a small result object; files are read and checked as the command reads
them. Errors are the command's: :class:`sd_hw.errors.SdHwError` (and its
subclasses :class:`~sd_hw.errors.ParameterError`, the compiler's
``CompileError``, :class:`sim.fit.FitError`) with the same one-line message
``sd-hw`` prints after ``sd-hw: error:``.

A core configuration is chosen as on the command line: ``config`` (a
:class:`~sd_hw.core.config.CoreConfig` or :class:`~sd_hw.serial.config.SerialConfig`,
its JSON description as a dict, or a JSON file as ``sd-hw config`` writes
it), else ``board`` (that board's default core, with ``core="sd"`` its
SDCore configuration, with ``core="shared"`` its shared-basis serial core), else the
SDCore defaults (``core="serial"``: the serial core's, ``core="shared"``: the serial
core's with the factored dataflow). ``progress`` is a function that gets a line at each step of
anything long (training epochs, place and route phases, the first
Verilator compile); by default nothing is printed.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sd_hw.errors import ParameterError, SdHwError


__all__ = ["load_model", "train", "compress", "evaluate", "simulate", "generate", "build",
           "run_on_board", "core_config", "CompressResult", "EvaluateResult", "SimulateResult",
           "GenerateResult", "BuildResult", "RunResult"]


def _array(value, what):
    """``value`` as an array: a NumPy array, or a .npy file read as the command reads it."""
    if isinstance(value, (str, Path)):
        from sim.cli import _load_array
        return _load_array(value, what)
    return np.asarray(value)


def _network(net):
    """An IntegerNetwork, or a weight file's."""
    from sd_hw import weight_file
    from sd_hw.integer_network import IntegerNetwork
    if isinstance(net, IntegerNetwork):
        return net
    if isinstance(net, (str, Path)):
        return weight_file.load(net)
    raise ParameterError(f"expected an IntegerNetwork or a weight file path, got {net!r}")


def _inputs(net, inputs, progress):
    """int8 inputs and their :class:`~sim.inputs.Saturation` (``None`` for int8 ones);
    the saturation's description goes to ``progress``."""
    from sim.inputs import quantize_inputs
    source = str(inputs) if isinstance(inputs, (str, Path)) else "inputs"
    x, saturation = quantize_inputs(net, _array(inputs, "inputs"), source=source)
    line = saturation.describe(source) if saturation is not None else None
    if line and progress:
        progress(f"warning: {line}")
    return x, saturation


def _accuracy(outputs, labels, count=None):
    if labels is None or outputs.ndim != 2:
        return None
    source = str(labels) if isinstance(labels, (str, Path)) else "labels"
    labels = _array(labels, "labels")
    if count is not None:
        labels = labels[:count]
    if labels.shape != (len(outputs),) or not np.issubdtype(labels.dtype, np.integer):
        raise SdHwError(f"{source}: expected {len(outputs)} integer labels, got an array of "
                        f"shape {labels.shape} and type {labels.dtype}")
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def core_config(*, config=None, board=None, core=None):
    """The core configuration that ``config``, ``board`` and ``core`` select (module
    docstring); a board's configuration of the other kind when ``core`` asks for it."""
    from sd_hw.core.config import CoreConfig
    from sd_hw.serial.config import SerialConfig
    kinds = {"sd": CoreConfig, "serial": SerialConfig, "shared": SerialConfig}
    if core is not None and core not in kinds:
        raise ParameterError(f"parameter 'core' is {core!r}, allowed values are "
                             f"{', '.join(map(repr, kinds))}")
    if config is not None:
        if board is not None:
            raise ParameterError("give either config or board, not both")
        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                config = json.loads(path.read_text())
            except FileNotFoundError:
                raise SdHwError(f"{path}: no such file (core configuration)") from None
            except (OSError, ValueError) as error:
                raise SdHwError(f"{path}: not a JSON core configuration ({error})") from None
        if isinstance(config, dict):
            description = dict(config)
            kind = description.pop("core", core or "sd")
            if kind not in kinds:
                raise ParameterError(f"parameter 'core' is {kind!r}, allowed values are "
                                     f"{', '.join(map(repr, kinds))}")
            if kind == "shared":
                datapath = dict(description.get("datapath", {}))
                datapath.setdefault("dataflow", "factored")
                description["datapath"] = datapath
            return kinds[kind].from_dict(description)
        if not isinstance(config, tuple(kinds.values())):
            raise ParameterError(f"config must be a CoreConfig, a SerialConfig, a dict or a "
                                 f"JSON file, got {config!r}")
        return config
    if board is not None:
        from boards import board as board_spec, board_module
        module = board_module(board_spec(board))
        chosen = module.DEFAULT_CONFIG
        if core == "shared":
            chosen = getattr(module, "SHARED_CONFIG", None)
            if chosen is None:
                raise SdHwError(f"board {board!r} has no shared-basis core configuration")
        elif core is not None and not isinstance(chosen, kinds[core]):
            chosen = getattr(module, "SD_CORE_CONFIG", None) if core == "sd" else None
            if not isinstance(chosen, kinds[core]):
                chosen = kinds[core]()
        return chosen
    if core == "shared":
        from sd_hw.config import AcceleratorConfig
        return SerialConfig(datapath=AcceleratorConfig(lanes=SerialConfig().lanes,
                                                       dataflow="factored"))
    return kinds[core or "sd"]()


def load_model(path, *, calibration=None, progress=None):
    """A float model (:class:`~sim.golden.model_file.FloatModel`) from a file.

    ``.npz``: an sd-hw model (docs/model-format.md); ``.onnx``: an ONNX model
    (its import notes go to ``progress``); ``.json``: a network description
    alone, whose ``params`` are ``None`` until :func:`train` trains it.
    ``calibration`` (array or .npy) replaces the model's calibration inputs.
    """
    from sim.golden.model_file import FloatModel, check_inputs
    path = Path(path)
    if path.suffix.lower() == ".json":
        from sd_hw.network import Network
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SdHwError(f"{path}: no such file (network description)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise SdHwError(f"{path}: not a readable network description ({error})") from None
        model = FloatModel(Network.from_json(text, source=str(path)), None)
    else:
        from sim.flow import load_float_model
        model = load_float_model(path, log=progress)
    if calibration is not None:
        source = str(calibration) if isinstance(calibration, (str, Path)) else "calibration"
        model.calibration = check_inputs(model.network, _array(calibration, "calibration inputs"),
                                         source=source)
    return model


def _training_data(network, data, dataset, train_data, train_labels, val_data, val_labels,
                   val_fraction, seed):
    if data is not None:
        return data
    from sim.golden.user_data import training_data
    return training_data(network, dataset=dataset, train_data=train_data,
                         train_labels=train_labels, val_data=val_data, val_labels=val_labels,
                         val_fraction=val_fraction, seed=seed)


def train(model, *, data=None, dataset=None, train_data=None, train_labels=None, val_data=None,
          val_labels=None, val_fraction=None, epochs=30, seed=0, fine_tune=False,
          progress=None):
    """Train ``model`` (a FloatModel, or a file for :func:`load_model`) in float.

    The data: ``data`` (a :class:`~sim.golden.user_data.TrainingData` of arrays),
    else .npy files ``train_data``/``train_labels`` (validation from
    ``val_data``/``val_labels`` or a held-out ``val_fraction``), else the bundled
    data set ``dataset``. Training starts from He initialisation unless
    ``fine_tune``. Returns a new FloatModel (calibrated on 256 training inputs);
    ``progress`` gets a line per epoch.
    """
    from sim.golden.model_file import FloatModel
    from sim.golden.train import train_float
    if not isinstance(model, FloatModel):
        model = load_model(model, progress=progress)
    if fine_tune and model.params is None:
        raise ParameterError("fine_tune needs a model with weights (.npz or .onnx)")
    data = _training_data(model.network, data, dataset, train_data, train_labels, val_data,
                          val_labels, val_fraction, seed)
    params = train_float(model.network, data, epochs=epochs, seed=seed, log=progress,
                         init=model.params if fine_tune else None)
    return FloatModel(model.network, params, calibration=data.x_train[:256])


@dataclass
class CompressResult:
    """What :func:`compress` made: the integer network (what the weight file
    stores), its storage report, the retraining's per-epoch validation, the
    weight file written (or ``None``) and, for a chosen core, whether it fits
    (a :class:`~sim.fit.FitReport`)."""

    network: object
    storage: object
    history: list = field(default_factory=list)
    path: Path = None
    fit: object = None


def compress(model, *, output=None, options=None, retrain="none", epochs=10, seed=0,
             data=None, dataset=None, train_data=None, train_labels=None, val_data=None,
             val_labels=None, val_fraction=None, config=None, board=None, core=None,
             progress=None):
    """Decompose (and optionally retrain) a float model into a SmartDeal network.

    ``model``: a FloatModel or a file (.npz, .onnx). ``options``: a
    :class:`~sim.compress.CompressOptions` (decomposition parameters, pruning,
    dense layers, accumulator width), by default the command's defaults.
    ``retrain``: ``"none"``, ``"projection"`` or ``"ste"``, on the data given
    as for :func:`train` (the bundled data set that fits the network if none).
    ``output``: write the weight file there. With ``config``/``board``/``core``,
    the result's ``fit`` says whether the network fits that core and what
    would make it fit (:func:`sim.fit.check_fit`); it is not raised.
    """
    from sd_hw import weight_file
    from sd_hw.storage import storage_report
    from sim.compress import CompressOptions
    from sim.flow import compress_model
    from sim.golden.model_file import FloatModel
    if not isinstance(model, FloatModel):
        model = load_model(model, progress=progress)
    if model.params is None:
        raise SdHwError("the model has no weights (a network description alone): train it "
                        "first")
    options = CompressOptions() if options is None else options
    if data is None and train_data is not None:
        data = _training_data(model.network, None, None, train_data, train_labels, val_data,
                              val_labels, val_fraction, 0)
    if data is not None and model.calibration is None:
        model.calibration = data.x_train[:256]
    target = None
    if config is not None or board is not None or core is not None:
        target = core_config(config=config, board=board, core=core)
    result = compress_model(model, options, retrain_method=retrain, epochs=epochs, seed=seed,
                            dataset=dataset, log=progress, data=data, progress=progress)
    net = result.integer_network
    path = None
    if output is not None:
        path = Path(output)
        weight_file.save(net, path)
    fit = None
    if target is not None:
        from sim.fit import check_fit
        fit = check_fit(net, target, log=progress)
    return CompressResult(net, storage_report(net), result.history, path, fit)


@dataclass
class EvaluateResult:
    """The golden integer model's outputs (logits), the predicted classes (for
    a classifier), the accuracy (with labels), the inputs' saturation
    (:class:`~sim.inputs.Saturation`, ``None`` for int8 inputs) and, for a
    chosen core, the :class:`~sim.fit.FitReport`."""

    outputs: np.ndarray
    predictions: np.ndarray = None
    accuracy: float = None
    saturation: object = None
    fit: object = None


def evaluate(net, inputs, *, labels=None, dataflow=None, config=None, board=None, core=None,
             progress=None):
    """Run the golden integer model of ``net`` (an IntegerNetwork or weight file) on
    ``inputs`` (float, quantised with the file's input scale, or int8).

    ``dataflow``: ``"rebuild"`` or ``"factored"`` (by default the chosen core's,
    else rebuild). With a core chosen, ``fit`` tells whether the network fits it.
    """
    from sim.golden.reference import run
    net = _network(net)
    target = None
    if config is not None or board is not None or core is not None:
        target = core_config(config=config, board=board, core=core)
    if dataflow is None:
        dataflow = target.datapath.dataflow if target is not None else "rebuild"
    x, saturation = _inputs(net, inputs, progress)
    outputs = run(net, x, dataflow=dataflow)
    predictions = np.argmax(outputs, axis=1) if outputs.ndim == 2 else None
    fit = None
    if target is not None:
        from sim.fit import check_fit
        fit = check_fit(net, target, log=progress)
    return EvaluateResult(outputs, predictions, _accuracy(outputs, labels), saturation, fit)


@dataclass
class SimulateResult:
    """A simulation on the RTL: ``passed`` (every layer and counter equal to the
    golden model's), the RTL's ``outputs`` and the golden model's, cycles and
    performance counters per input, the mismatches, the accuracy (with labels),
    the inputs' saturation, the configuration simulated and the full
    :class:`~sim.simulate.SimulationReport`."""

    passed: bool
    outputs: np.ndarray
    golden: np.ndarray
    cycles: list
    counters: list
    expected_counters: list
    mismatches: list
    accuracy: float
    saturation: object
    config: object
    report: object


def simulate(net, inputs, *, labels=None, count=None, config=None, board=None, core=None,
             simulator="verilator", build_dir="build/simulate", layers=True, progress=None):
    """Run ``net`` on the core's RTL and compare every layer with the golden model.

    A network that does not fit the core raises :class:`sim.fit.FitError`,
    whose message says what would make it fit. ``count`` simulates the first
    inputs only.
    """
    from sim.fit import require_fit
    from sim.simulate import simulate as run_simulation
    net = _network(net)
    chosen = core_config(config=config, board=board, core=core)
    x, saturation = _inputs(net, inputs, progress)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ParameterError(f"parameter 'count' is {count!r}, it must be at least 1")
        x = x[:count]
    require_fit(net, chosen)
    report = run_simulation(net, chosen, x, simulator=simulator, build_dir=build_dir,
                            layers=layers, log=progress, progress=progress)
    return SimulateResult(report.passed, report.outputs, report.golden, report.cycles,
                          report.counters, report.expected_counters, report.mismatches,
                          _accuracy(report.outputs, labels, len(x)), saturation, chosen, report)


@dataclass
class GenerateResult:
    """The Verilog and port map written, and the lint warnings allowed (``None``
    without lint)."""

    verilog: Path
    port_map: Path
    lint_allowed: dict = None


def generate(block="sd_core", *, config=None, board=None, core=None, out_dir="build/verilog",
             lint=False):
    """Write the Verilog and JSON port map of the whole core (``"sd_core"``, of the
    selected configuration) or of a datapath block (``config`` then an
    :class:`~sd_hw.config.AcceleratorConfig`, default its defaults)."""
    from sd_hw.config import AcceleratorConfig
    from sd_hw.generate import CORE_TOP, generate as generate_block, generate_core
    try:
        if block == CORE_TOP:
            generated = generate_core(core_config(config=config, board=board, core=core),
                                      out_dir, reuse=False)
        else:
            if config is not None and not isinstance(config, AcceleratorConfig):
                raise ParameterError(f"a block's config is an AcceleratorConfig, got {config!r}")
            generated = generate_block(block, config or AcceleratorConfig(), out_dir)
    except OSError as error:
        raise SdHwError(f"{out_dir}: cannot write the generated files there "
                        f"({error.strerror or error})") from None
    allowed = None
    if lint:
        from sd_hw.lint import verilator_lint
        allowed = dict(verilator_lint(generated.verilog_path, top=generated.name).allowed)
    return GenerateResult(Path(generated.verilog_path), Path(generated.port_map_path), allowed)


@dataclass
class BuildResult:
    """A bitstream build: its :class:`~boards.build.BuildReport` (clock, cells,
    utilisation, fmax per seed), the bitstream, report.json, and whether timing
    is met."""

    report: object
    bitstream: Path
    report_path: Path
    meets_timing: bool

    @property
    def resources(self):
        """nextpnr's utilisation: bel type -> {"used", "available"}."""
        return self.report.utilisation


def build(board, *, config=None, core=None, seeds=1, clock="auto", out_dir="build/boards",
          progress=None, first_seed=1):
    """Synthesise, place and route (once per seed) and pack ``board``'s bitstream
    with the selected core (:func:`boards.build.build_board`); ``progress`` gets
    the steps and nextpnr's phases. Takes minutes."""
    from boards.build import build_board
    chosen = core_config(config=config, board=None if config is not None else board, core=core)
    report = build_board(board, chosen, out_dir=out_dir, seeds=seeds, clock=clock, log=progress,
                         first_seed=first_seed)
    return BuildResult(report, Path(report.bitstream), Path(out_dir) / board / "report.json",
                       report.meets_timing)


@dataclass
class RunResult:
    """A run on a board: ``passed`` (outputs equal the golden model's), the
    outputs and the golden model's, cycles and counters per input, the
    accuracy (with labels), the inputs' saturation and the board's identity
    registers (offset -> word) as read before loading."""

    passed: bool
    outputs: np.ndarray
    golden: np.ndarray
    cycles: list
    counters: list
    accuracy: float
    saturation: object
    identity: dict
    report: object


def run_on_board(net, inputs, *, board="icebreaker", port=None, transport=None, baud=115200,
                 labels=None, count=None, config=None, core=None, progress=None):
    """Load ``net`` into a board's core and run ``inputs`` on it, checked against the
    golden model.

    The board is reached over ``port`` (a serial port, at ``baud``) or any
    ``transport`` that executes bus scripts (e.g. :class:`sim.board_sim.SimulatedBoard`).
    Its identity registers are read first and compared with the selected
    configuration (``config``, or ``board``'s with ``core``): a board that runs
    another core is refused (:func:`sim.host.identity.check_identity`) before
    anything is loaded. A network that does not fit raises :class:`sim.fit.FitError`.
    """
    from sim.fit import require_fit
    from sim.host.board import run_network
    from sim.host.identity import check_identity
    net = _network(net)
    chosen = core_config(config=config, board=None if config is not None else board, core=core)
    x, saturation = _inputs(net, inputs, progress)
    if count is not None:
        x = x[:count]
    require_fit(net, chosen)
    opened = None
    if transport is None:
        if port is None:
            raise ParameterError("run_on_board needs a serial port or a transport")
        from boards import board as board_spec, board_module
        from boards.clocking import slowest_clock_hz
        from sim.host.link import SerialTransport
        # The clock only bounds how long a RUN may take: assume the slowest the
        # board's PLL makes, which covers whatever clock its bitstream was built for.
        spec = board_spec(board)
        clock_hz = slowest_clock_hz(spec.family, board_module(spec).OSCILLATOR_HZ)
        transport = opened = SerialTransport(port, baud=baud, clock_hz=clock_hz)
    source = port or f"the {board}"
    try:
        identity = check_identity(transport, chosen, source=source)
        if progress:
            progress(f"{source}: its core is the configuration compiled for "
                     f"(registers {' '.join(f'{w:08x}' for w in identity.values())})")
        report = run_network(transport, net, chosen, x, log=progress)
    except Exception as error:
        from sd_hw.link.protocol import ProtocolError
        if isinstance(error, ProtocolError):
            raise SdHwError(f"{source}: {error}") from None
        raise
    finally:
        if opened is not None:
            opened.close()
    return RunResult(report.passed, report.outputs, report.golden, report.cycles,
                     report.counters, _accuracy(report.outputs, labels, len(x)), saturation,
                     identity, report)
