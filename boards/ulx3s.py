"""ULX3S 85F (ECP5 LFE5U-85F): 25 MHz oscillator, FTDI UART, LED 0 shows a run."""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.serial.config import SerialConfig

from .clocking import pll_for
from .top import BoardTop


__all__ = ["ULX3STop", "PLATFORM", "OSCILLATOR_HZ", "DEFAULT_CLOCK_HZ", "DEFAULT_CONFIG",
           "SD_CORE_CONFIG", "SHARED_CONFIG"]

PLATFORM = ULX3S_85F_Platform
OSCILLATOR_HZ = 25_000_000
#: The clock a top-level asks its PLL for unless given one; ``sd-hw build``
#: measures the design and chooses its own (docs/boards.md). The default
#: design reached 64.35 MHz at this constraint (the SDCore one's placements
#: 46.3 to 59.7 MHz, one missed 50 MHz).
DEFAULT_CLOCK_HZ = 40_000_000

#: The element-serial core (docs/serial-core.md) in the 85F's block RAM: 16 lanes
#: (16 of its multipliers), eight banks of 16K words of weight records (2 Mbit,
#: 128 of the 208 DP16KD) and 32 KB of activations: networks of a few hundred
#: thousand parameters once decomposed.
DEFAULT_CONFIG = SerialConfig(
    datapath=AcceleratorConfig(lanes=16), weight_banks=8, bank_depth=16384,
    activation_bytes=32768, basis_depth=64, param_depth=512, output_depth=64,
    program_depth=256, counters=True)

#: The element-serial core with the factored dataflow (``--core shared``): 32 lanes in
#: four groups of 8 sharing a basis engine (12 8x8 products a cycle), eleven banks of
#: 8K words (88 DP16KD) so that a record of 33 words arrives in three cycles: 96
#: dense-equivalent multiply-accumulates every three cycles. Needs networks
#: decomposed with ``--shared-basis 8``.
SHARED_CONFIG = SerialConfig(
    datapath=AcceleratorConfig(lanes=32, dataflow="factored"), basis_group=8,
    weight_banks=11, bank_depth=8192, activation_bytes=32768, basis_depth=64,
    param_depth=512, output_depth=64, program_depth=256, counters=True)

#: The SDCore configuration (``--core sd``): four lanes and the default buffers.
SD_CORE_CONFIG = CoreConfig(datapath=AcceleratorConfig(lanes=4))


class ULX3STop(BoardTop):
    def __init__(self, config=DEFAULT_CONFIG, *, clock_hz=DEFAULT_CLOCK_HZ, **kwargs):
        super().__init__(config, pll=pll_for("ecp5", OSCILLATOR_HZ, clock_hz), **kwargs)
