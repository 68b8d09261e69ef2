"""What every board top-level shares: the PLL clock, UART pins, a busy LED and the accelerator."""

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from sd_hw.errors import ParameterError
from sd_hw.system import AcceleratorSystem

from .clocking import ECP5PLL, ICE40PLL, PLLClock


__all__ = ["BoardTop"]


class BoardTop(wiring.Component):
    """A board's top-level: its PLL, UART and a LED around an :class:`AcceleratorSystem`.

    Elaborated for a platform, it runs the ``sync`` domain from ``pll`` fed by
    the board's oscillator (:class:`~boards.clocking.PLLClock`: in reset until
    the PLL locks), requests the board's ``uart`` and, if the board has one,
    its first ``led`` (lit while the core runs). Elaborated without a platform
    (for simulation), there is no PLL: ``rx``, ``tx`` and ``led`` are its ports
    and ``sync`` comes from outside.

    Parameters
    ----------
    config : :class:`~sd_hw.core.config.CoreConfig`
    pll : :class:`~boards.clocking.ICE40PLL` or :class:`~boards.clocking.ECP5PLL`
        The PLL configuration; its output frequency is the design's clock,
        ``clock_hz``.
    baud : int
        UART rate; the divisor is ``round(clock_hz / baud)``.
    divisor : int, optional
        Clock cycles per UART bit, instead of ``clock_hz / baud`` (simulation).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    led: Out(1)

    def __init__(self, config, *, pll, baud=115200, divisor=None):
        if not isinstance(pll, (ICE40PLL, ECP5PLL)):
            raise ParameterError(f"parameter 'pll' must be an ICE40PLL or ECP5PLL, got {pll!r}")
        self._config = config
        self.pll = pll
        self.clock_hz = pll.output_hz
        self.baud = baud
        self.divisor = divisor if divisor is not None else round(self.clock_hz / baud)
        super().__init__()

    @property
    def config(self):
        return self._config

    def request_uart(self, platform):
        """The board's UART pins; a board without one adds a resource first."""
        return platform.request("uart", 0, dir="-")

    def elaborate(self, platform):
        m = Module()
        m.submodules.system = system = AcceleratorSystem(self._config, divisor=self.divisor)
        if platform is None:
            m.d.comb += [system.rx.eq(self.rx), self.tx.eq(system.tx), self.led.eq(system.busy)]
            return m
        m.domains.sync = ClockDomain("sync")
        m.submodules.clock = clock = PLLClock(self.pll)
        m.d.comb += [ClockSignal("sync").eq(clock.clk), ResetSignal("sync").eq(clock.rst)]
        uart = self.request_uart(platform)
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [system.rx.eq(rx_buffer.i), tx_buffer.o.eq(system.tx)]
        if any(name == "led" for name, _ in platform.resources):
            led = platform.request("led", 0, dir="-")
            m.submodules.led_buffer = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(system.busy)
        return m
