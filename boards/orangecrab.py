"""OrangeCrab r0.2 25F (ECP5 LFE5U-25F): 48 MHz oscillator.

The OrangeCrab has no USB-serial bridge: the UART is on the Feather header,
pin 0 (RX) and pin 1 (TX), for a 3.3 V USB-serial adapter. Its RGB LED's
red channel shows a run.
"""

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.lib import io
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.serial.config import SerialConfig

from .clocking import pll_for
from .top import BoardTop


__all__ = ["OrangeCrabTop", "PLATFORM", "OSCILLATOR_HZ", "DEFAULT_CLOCK_HZ", "DEFAULT_CONFIG",
           "SD_CORE_CONFIG", "UART"]

PLATFORM = OrangeCrabR0_2_25FPlatform
OSCILLATOR_HZ = 48_000_000
#: The clock a top-level asks its PLL for unless given one; ``sd-hw build``
#: measures the design and chooses its own (docs/boards.md).
DEFAULT_CLOCK_HZ = 50_000_000

#: The Feather header's serial pins.
UART = Resource("uart", 0,
                Subsignal("rx", Pins("0", dir="i", conn=("io", 0))),
                Subsignal("tx", Pins("1", dir="o", conn=("io", 0))),
                Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))

#: The element-serial core (docs/serial-core.md) in the 25F's block RAM: 8 lanes,
#: three banks of 10K words of weight records (480 Kbit, 30 of the 56 DP16KD) and
#: 8 KB of activations: the bundled MNIST CNN fits once pruned 0.75.
DEFAULT_CONFIG = SerialConfig(
    datapath=AcceleratorConfig(lanes=8), weight_banks=3, bank_depth=10240,
    activation_bytes=8192, basis_depth=64, param_depth=256, output_depth=64,
    program_depth=256, counters=True)

#: The SDCore configuration (``--core sd``): two lanes and buffers that leave the
#: 25F's 56 DP16KD room.
SD_CORE_CONFIG = CoreConfig(datapath=AcceleratorConfig(lanes=2), weight_depth=2048)


class OrangeCrabTop(BoardTop):
    def __init__(self, config=DEFAULT_CONFIG, *, clock_hz=DEFAULT_CLOCK_HZ, **kwargs):
        super().__init__(config, pll=pll_for("ecp5", OSCILLATOR_HZ, clock_hz), **kwargs)

    def request_uart(self, platform):
        if not any(name == "uart" for name, _ in platform.resources):
            platform.add_resources([UART])
        return super().request_uart(platform)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if platform is not None:
            led = platform.request("rgb_led", 0, dir="-")
            m.submodules.busy_led = busy_led = io.Buffer("o", led.r)
            m.d.comb += busy_led.o.eq(self.led)
        return m
