"""iCEBreaker (iCE40 UP5K): 12 MHz oscillator, FTDI UART, LED1 shows a run."""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.serial.config import SerialConfig

from .clocking import pll_for
from .top import BoardTop


__all__ = ["ICEBreakerTop", "PLATFORM", "OSCILLATOR_HZ", "DEFAULT_CLOCK_HZ", "DEFAULT_CONFIG",
           "SD_CORE_CONFIG", "SHARED_CONFIG"]

PLATFORM = ICEBreakerPlatform
OSCILLATOR_HZ = 12_000_000
#: The clock a top-level asks its PLL for unless given one; ``sd-hw build``
#: measures the design and chooses its own (docs/boards.md).
DEFAULT_CLOCK_HZ = 18_000_000

#: The element-serial core (docs/serial-core.md) sized for the UP5K: 8 lanes, one
#: SB_MAC16 each; the four SPRAMs hold three banks of weight records (3 x 16K
#: words) and 32 KB of activations; bases, parameters, program and outputs in
#: the 30 EBRs. It holds the bundled MNIST CNN (153,898 parameters, more than
#: the SPRAMs' 1 Mbit as int8) once decomposed.
DEFAULT_CONFIG = SerialConfig(
    datapath=AcceleratorConfig(lanes=8), bank_depth=16384, activation_bytes=32768,
    basis_depth=64, param_depth=256, output_depth=64, program_depth=256, counters=True)

#: The element-serial core with the factored dataflow (``--core shared``): the
#: default's memories, 8 lanes sharing one basis engine (two SB_MAC16 in 8x8 mode,
#: one basis memory) and shifting its products. The weight banks, not the logic
#: cells, bound the lanes that help: a record of ``1 + lanes`` words is read from
#: the three SPRAM banks in ``ceil((1 + lanes) / 3)`` cycles, and gives every lane
#: one Ce row (three dense-equivalent multiply-accumulates) per output pixel, so
#: more than 8 lanes add at most 9 * lanes / (lanes + 1) - 8 < 1 of them a cycle
#: (docs/serial-core.md). Needs networks decomposed with ``--shared-basis 8``.
SHARED_CONFIG = SerialConfig(
    datapath=AcceleratorConfig(lanes=8, dataflow="factored"), basis_group=8,
    bank_depth=16384, activation_bytes=32768, basis_depth=64, param_depth=256,
    output_depth=64, program_depth=256, counters=True)

#: The SDCore configuration that fits the UP5K (``--core sd``): one lane and
#: buffers sized for the bundled digits networks. To fit,
#: the weight memory holds decoded row records (``coefficients="unpacked"``: no
#: coefficient decoder), the performance counters but ``cycles`` are left out,
#: and the accumulators are 27 bits, what the bundled digits CNN needs.
SD_CORE_CONFIG = CoreConfig(
    datapath=AcceleratorConfig(lanes=1, accumulator_bits=27),
    activation_depth=1024, weight_depth=1024, basis_depth=256, index_depth=1024,
    param_depth=256, output_depth=64, program_depth=64, coefficients="unpacked",
    counters=False)


class ICEBreakerTop(BoardTop):
    def __init__(self, config=DEFAULT_CONFIG, *, clock_hz=DEFAULT_CLOCK_HZ, **kwargs):
        super().__init__(config, pll=pll_for("ice40", OSCILLATOR_HZ, clock_hz), **kwargs)
