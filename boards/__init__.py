"""Board top-levels, one module per board, and the table of them.

Each board module names its amaranth-boards platform, its oscillator, a
default PLL clock and a default :class:`~sd_hw.core.config.CoreConfig` that
fits its chip; the top-levels are thin (pins, the PLL of
:mod:`boards.clocking`, a LED) around :class:`sd_hw.system.AcceleratorSystem`.
"""

from dataclasses import dataclass

from sd_hw.errors import ParameterError


__all__ = ["Board", "BOARDS", "board"]


@dataclass(frozen=True)
class Board:
    name: str
    module: str         # the board module under boards/
    top: str            # its top-level class
    family: str         # "ice40" or "ecp5"
    description: str
    programmer: tuple   # the openFPGALoader board name, or the programmer command


BOARDS = {
    "icebreaker": Board("icebreaker", "boards.icebreaker", "ICEBreakerTop", "ice40",
                        "iCEBreaker, iCE40 UP5K", ("openFPGALoader", "-b", "ice40_generic")),
    "ulx3s": Board("ulx3s", "boards.ulx3s", "ULX3STop", "ecp5", "ULX3S, ECP5 LFE5U-85F",
                   ("openFPGALoader", "-b", "ulx3s")),
    "orangecrab": Board("orangecrab", "boards.orangecrab", "OrangeCrabTop", "ecp5",
                        "OrangeCrab r0.2, ECP5 LFE5U-25F", ("openFPGALoader", "-b", "orangeCrab")),
}


def board(name):
    """The :class:`Board` called ``name``; an unknown name lists the known ones."""
    if name not in BOARDS:
        raise ParameterError(f"unknown board {name!r}; boards are {', '.join(BOARDS)}")
    return BOARDS[name]


def board_module(spec):
    import importlib
    return importlib.import_module(spec.module)
