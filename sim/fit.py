"""Does a network fit a core, and if not, what would make it fit.

:func:`check_fit` compiles an integer network for a core configuration (the
compiler is the judge: its refusal names the memory or width that is too
small). When the network does not fit, it works out, by compiling again,

* the smallest widths, and the smallest powers of two for the memory sizes,
  that make it fit on the same kind of core (e.g. ``--accumulator-bits 28``),
  each value found by compiling, the whole set confirmed by one more compile;
* which boards' own configurations (``sd-hw boards``) hold it as they are.

Nothing here guesses: a suggestion is given only once the compiler has
accepted the network with it. Whether a changed core still fits the chip's
logic and memory is for ``sd-hw build`` to say.
"""

import dataclasses
from dataclasses import dataclass, field

from sd_hw.errors import SdHwError


__all__ = ["FitError", "FitReport", "check_fit", "require_fit", "board_configurations",
           "option_text"]

#: Datapath widths a network can need more of; lanes, stream_bits and the
#: dataflow change the core's shape, not its capacity, and are never suggested.
_WIDTHS = ("accumulator_bits", "code_bits", "block_rows", "activation_bits", "basis_bits")


class FitError(SdHwError):
    """A network that does not fit the core: the compiler's refusal and what would
    make it fit (:attr:`report`, a :class:`FitReport`)."""

    def __init__(self, report):
        super().__init__(report.describe())
        self.report = report


@dataclass(frozen=True)
class FitReport:
    """The verdict of :func:`check_fit`.

    ``problem`` is the compiler's refusal (``None`` when the network fits);
    ``changes`` maps configuration fields to the smallest values (powers of two for
    memory sizes) that make it fit on the same kind of core (empty if no change of widths and memory
    sizes does), ``config`` is that changed configuration; ``boards`` lists
    ``(board, core kind option, kind)`` of the board configurations that hold it
    unchanged; ``selected`` the options that chose the core (e.g. ``--board
    icebreaker --core sd``), which the advice repeats.
    """

    fits: bool
    problem: str = None
    changes: dict = field(default_factory=dict)
    config: object = None
    boards: tuple = ()
    selected: str = ""

    def advice(self):
        """What would make it fit, as command-line options; ``None`` if it fits."""
        if self.fits:
            return None
        parts = []
        if self.changes:
            options = " ".join(filter(None, (self.selected,
                                             option_text(self.config, self.changes))))
            parts.append(f"{options} (a core of its own: simulate, build and run it with the "
                         f"same options)")
        if self.boards:
            parts.append(("or " if parts else "") + "a board configuration that holds it: "
                         + ", ".join(_board_option(*entry) for entry in self.boards))
        if not parts:
            return "no change of memory sizes or widths and no board configuration holds it"
        return "; ".join(parts)

    def describe(self):
        """The refusal and the advice, one line for the user."""
        if self.fits:
            return "the network fits the core"
        return f"{self.problem}; to fit: {self.advice()}"


def _board_option(name, option, kind):
    return f"--board {name}" + (f" --core {option}" if option else f" (its {kind} core)")


def _kind_name(config):
    from sd_hw.core.config import CoreConfig
    from sd_hw.serial.config import SerialConfig
    if isinstance(config, SerialConfig) and config.factored:
        return "shared"
    return {CoreConfig: "sd", SerialConfig: "serial"}.get(type(config), type(config).__name__)


def _is_datapath(name):
    return name in _WIDTHS


def option_text(config, changes):
    """``changes`` (field -> value) as the options of ``sd-hw simulate``/``build``/``run``.

    Datapath widths and an SDCore's memory depths have options of their own;
    other fields (the serial core's sizes) go into a ``--config`` file.
    """
    from sd_hw.core.config import CoreConfig
    flags, in_file = [], []
    for name, value in changes.items():
        if _is_datapath(name) or (isinstance(config, CoreConfig) and name.endswith("_depth")):
            flags.append(f"--{name.replace('_', '-')} {value}")
        else:
            in_file.append(f'"{name}": {value}')
    if in_file:
        flags.append(f"--config FILE with {', '.join(in_file)} (sd-hw config prints the "
                     f"rest)")
    return " ".join(flags)


def _compiles(net, config):
    from sim.simulate import compile_for
    try:
        compile_for(net, config)
    except SdHwError as error:
        return str(error)
    return None


def _capacity_fields(config):
    """Names of the fields a larger value of which can only help a network fit."""
    names = [name for name in _WIDTHS]
    for f in dataclasses.fields(config):
        if f.name.endswith(("_depth", "_bytes")) and isinstance(getattr(config, f.name), int):
            names.append(f.name)
    return names


def _value(config, name):
    return getattr(config.datapath, name) if _is_datapath(name) else getattr(config, name)


def _with(config, values):
    """``config`` with ``values`` (field -> value); ``None`` if it is not a valid one."""
    datapath = {k: v for k, v in values.items() if _is_datapath(k)}
    rest = {k: v for k, v in values.items() if not _is_datapath(k)}
    try:
        if datapath:
            rest["datapath"] = dataclasses.replace(config.datapath, **datapath)
        return dataclasses.replace(config, **rest)
    except SdHwError:
        return None


def _largest(config, name):
    """The largest value of field ``name`` the configuration accepts (others unchanged)."""
    current = _value(config, name)
    for exponent in range(24, -1, -1):
        value = 1 << exponent
        if value <= current:
            break
        if _with(config, {name: value}) is not None:
            # Between a valid power of two and the next, the exact limit (e.g. 48 bits).
            low, high = value, 1 << (exponent + 1)
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if _with(config, {name: middle}) else (low, middle)
            return low
    return current


class _Compiler:
    """Compiles ``net`` for configurations, each once: the refusal, or ``None``."""

    def __init__(self, net):
        self.net = net
        self._seen = {}

    def refuses(self, config):
        if config not in self._seen:
            self._seen[config] = _compiles(self.net, config)
        return self._seen[config]

    def fits(self, config, values):
        trial = _with(config, values)
        return trial is not None and self.refuses(trial) is None


def _first_fitting(compiler, config, others, name, low, high, *, powers):
    """The smallest value of field ``name`` in ``(low, high]`` with which the network
    compiles (the other fields at ``others``), ``high`` known to fit. Memory sizes
    (``powers``) go up in powers of two, widths one by one."""
    if powers:
        value = 1 << low.bit_length()
        while value < high:
            if compiler.fits(config, {**others, name: value}):
                return value
            value <<= 1
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = ((low, middle) if compiler.fits(config, {**others, name: middle})
                     else (middle, high))
    return high


def _smallest_changes(compiler, config):
    """``(changes, changed config)``: the least the capacity fields must grow, or
    ``({}, None)`` if even the largest of them all does not make the network fit.

    One field alone is tried first (the usual case: one width or one memory too
    small); else each field's least value with all others at their largest.
    """
    names = _capacity_fields(config)
    largest = {name: _largest(config, name) for name in names}
    growable = [name for name in names if largest[name] > _value(config, name)]
    for name in growable:
        if compiler.fits(config, {name: largest[name]}):
            value = _first_fitting(compiler, config, {}, name, _value(config, name),
                                   largest[name], powers=not _is_datapath(name))
            return {name: value}, _with(config, {name: value})
    if not compiler.fits(config, largest):
        return {}, None
    changes = {}
    for name in growable:
        others = {n: v for n, v in largest.items() if n != name}
        if compiler.fits(config, {**others, name: _value(config, name)}):
            continue
        changes[name] = _first_fitting(compiler, config, others, name, _value(config, name),
                                       largest[name], powers=not _is_datapath(name))
    if not compiler.fits(config, changes):
        return {}, None
    return changes, _with(config, changes)


def board_configurations():
    """``[(board, core kind or None, config)]``: every board's configurations.

    The kind is ``None`` for a board's default core and the ``--core`` value
    that selects any other (``SD_CORE_CONFIG``: ``"sd"``, ``SHARED_CONFIG``:
    ``"shared"``).
    """
    from boards import BOARDS, board_module
    found = []
    for name, spec in BOARDS.items():
        module = board_module(spec)
        found.append((name, None, module.DEFAULT_CONFIG))
        other = getattr(module, "SD_CORE_CONFIG", None)
        if other is not None and type(other) is not type(module.DEFAULT_CONFIG):
            found.append((name, "sd", other))
        shared = getattr(module, "SHARED_CONFIG", None)
        if shared is not None:
            found.append((name, "shared", shared))
    return found


def check_fit(net, config, *, boards=True, selected="", log=None):
    """A :class:`FitReport` of integer network ``net`` on the core of ``config``.

    With ``boards``, a network that does not fit is also compiled for every
    board's configurations (:func:`board_configurations`). ``selected``: the
    options that chose ``config``, repeated in the advice. The search for
    what would fit compiles the network a few dozen times (seconds for the
    digits CNN); ``log`` gets a line when it starts.
    """
    compiler = _Compiler(net)
    problem = compiler.refuses(config)
    if problem is None:
        return FitReport(True, selected=selected)
    if log:
        log("the network does not fit the core; working out what would ...")
    changes, changed = _smallest_changes(compiler, config)
    holding = ()
    if boards:
        holding = tuple((name, option, _kind_name(other))
                        for name, option, other in board_configurations()
                        if other != config and compiler.refuses(other) is None)
    return FitReport(False, problem, changes, changed, holding, selected)


def require_fit(net, config, *, selected="", log=None):
    """Raise :class:`FitError` unless ``net`` fits the core of ``config``."""
    report = check_fit(net, config, selected=selected, log=log)
    if not report.fits:
        raise FitError(report)
    return report
