"""An SDCore behind a UART: what a board top-level instantiates."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core.config import CoreConfig
from .errors import ParameterError
from .generate import core_component
from .link.host_link import HostLink
from .link.uart import UARTReceiver, UARTTransmitter, check_divisor
from .serial.config import SerialConfig


__all__ = ["AcceleratorSystem"]


class AcceleratorSystem(wiring.Component):
    """A UART, the host link and a core: an :class:`~sd_hw.core.core.SDCore` or a
    :class:`~sd_hw.serial.core.SerialCore`, as ``config`` says.

    Parameters
    ----------
    config : :class:`~sd_hw.core.config.CoreConfig` or :class:`~sd_hw.serial.config.SerialConfig`
    divisor : int
        Clock cycles per UART bit (clock frequency / baud rate), at least 4.
    timeout_cycles : int
        Cycles without a byte after which a half-received request is
        dropped; default 64 byte times.

    Members
    -------
    rx : ``In(1, init=1)``
    tx : ``Out(1, init=1)``
    busy : ``Out(1)``
        The core is running (for a LED).
    """

    def __init__(self, config, *, divisor, timeout_cycles=None):
        if not isinstance(config, (CoreConfig, SerialConfig)):
            raise ParameterError(f"parameter 'config' must be a CoreConfig or a SerialConfig, "
                                 f"got {config!r}")
        self._config = config
        self._divisor = check_divisor(divisor)
        self._timeout = timeout_cycles if timeout_cycles is not None else 64 * 10 * divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    @property
    def config(self):
        return self._config

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = UARTReceiver(self._divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(self._divisor)
        m.submodules.link = link = HostLink(timeout_cycles=self._timeout)
        m.submodules.core = core = core_component(self._config)
        wiring.connect(m, receiver.bytes, link.rx)
        wiring.connect(m, link.tx, transmitter.bytes)
        wiring.connect(m, link.bus, core.host)
        m.d.comb += [
            receiver.rx.eq(self.rx),
            self.tx.eq(transmitter.tx),
            link.done.eq(core.done),
            self.busy.eq(core.busy),
        ]
        return m
