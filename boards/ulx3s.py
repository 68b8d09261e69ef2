"""ULX3S 85F (ECP5 LFE5U-85F): 25 MHz oscillator, FTDI UART, LED 0 shows a run."""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig

from .clocking import pll_for
from .top import BoardTop


__all__ = ["ULX3STop", "PLATFORM", "OSCILLATOR_HZ", "DEFAULT_CLOCK_HZ", "DEFAULT_CONFIG"]

PLATFORM = ULX3S_85F_Platform
OSCILLATOR_HZ = 25_000_000
#: The clock a top-level asks its PLL for unless given one; ``sd-hw build``
#: measures the design and chooses its own (docs/boards.md). The default
#: design's placements reached 46.3 to 59.7 MHz, one missed 50 MHz.
DEFAULT_CLOCK_HZ = 40_000_000

#: Four lanes and the default buffers.
DEFAULT_CONFIG = CoreConfig(datapath=AcceleratorConfig(lanes=4))


class ULX3STop(BoardTop):
    def __init__(self, config=DEFAULT_CONFIG, *, clock_hz=DEFAULT_CLOCK_HZ, **kwargs):
        super().__init__(config, pll=pll_for("ecp5", OSCILLATOR_HZ, clock_hz), **kwargs)
