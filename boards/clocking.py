"""The design's clock: the board oscillator through the FPGA's PLL.

Per family, a frozen parameter set that states a PLL configuration and
derives its frequencies from the chip's documented formulas, and a solver
that finds the fastest configuration whose output is not above a requested
frequency:

* iCE40 (SB_PLL40_PAD, ``FEEDBACK_PATH="SIMPLE"``, iCE40 sysCLOCK PLL guide
  TN1251): ``f_PFD = f_IN / (DIVR + 1)``, ``f_VCO = f_PFD * (DIVF + 1)``,
  ``f_OUT = f_VCO / 2**DIVQ``; f_IN and f_PFD 10-133 MHz, f_VCO 533-1066 MHz,
  f_OUT 16-275 MHz; DIVR 0-15, DIVF 0-127, DIVQ 1-6; FILTER_RANGE follows
  f_PFD (the table of icestorm's icepll).
* ECP5 (EHXPLLL, feedback from CLKOP, ECP5 sysCLOCK guide TN1263 and data
  sheet): ``f_PFD = f_IN / CLKI_DIV``, ``f_OUT = f_PFD * CLKFB_DIV``,
  ``f_VCO = f_OUT * CLKOP_DIV``; f_IN 8-400 MHz, f_PFD 3.125-400 MHz, f_VCO
  400-800 MHz, f_OUT 3.125-400 MHz; CLKI_DIV and CLKOP_DIV 1-128, CLKFB_DIV
  1-80.

:class:`PLLClock` instantiates the PLL for a platform: its output clock and
a reset held until the PLL locks (and, on iCE40, 15 us longer: its block
RAMs read as zeroes for a few microseconds after configuration), from which
a board top-level drives its ``sync`` domain.
"""

from dataclasses import asdict, dataclass
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import Out

from sd_hw.errors import ParameterError


__all__ = ["ICE40PLL", "ECP5PLL", "PLL_FAMILIES", "pll_for", "PLLClock", "ClockChoice",
           "choose_clock", "slowest_clock_hz"]

MHZ = 1_000_000


def _mhz(hz):
    return f"{float(hz) / MHZ:g} MHz"


def _in_range(value, low, high):
    return low <= value <= high


def _check_ranges(pll, family, dividers):
    """``pll`` if its ``dividers`` (name, value, (low, high)) and its input, PFD, VCO and
    output frequencies are within the family's ranges; else :class:`ParameterError`."""
    for name, value, (low, high) in dividers:
        if not _in_range(value, low, high):
            raise ParameterError(f"{family} PLL: {name} is {value}, allowed {low} to {high}")
    for name, value, (low, high) in (("input", pll.input_hz, pll.INPUT_HZ),
                                     ("PFD", pll.pfd_hz, pll.PFD_HZ),
                                     ("VCO", pll.vco_hz, pll.VCO_HZ),
                                     ("output", pll.output, pll.OUTPUT_HZ)):
        if not _in_range(value, low, high):
            raise ParameterError(f"{family} PLL: {name} frequency {_mhz(value)} is outside "
                                 f"{_mhz(low)} to {_mhz(high)}")
    return pll


@dataclass(frozen=True)
class ICE40PLL:
    """An iCE40 SB_PLL40_PAD configuration (simple feedback) for an ``input_hz`` clock."""

    input_hz: int
    divr: int
    divf: int
    divq: int

    family = "ice40"
    primitive = "SB_PLL40_PAD"
    INPUT_HZ = (10 * MHZ, 133 * MHZ)
    PFD_HZ = (10 * MHZ, 133 * MHZ)
    VCO_HZ = (533 * MHZ, 1066 * MHZ)
    OUTPUT_HZ = (16 * MHZ, 275 * MHZ)
    DIVR, DIVF, DIVQ = (0, 15), (0, 127), (1, 6)

    @property
    def pfd_hz(self):
        return Fraction(self.input_hz, self.divr + 1)

    @property
    def vco_hz(self):
        return self.pfd_hz * (self.divf + 1)

    @property
    def output(self):
        """The output frequency in Hz, exactly (a :class:`~fractions.Fraction`)."""
        return self.vco_hz / 2 ** self.divq

    @property
    def output_hz(self):
        return float(self.output)

    @property
    def filter_range(self):
        pfd = self.pfd_hz
        for bound, setting in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
            if pfd < bound * MHZ:
                return setting
        return 6

    def check(self):
        """Raise :class:`ParameterError` unless every divider and frequency is in range."""
        return _check_ranges(self, "iCE40", (("DIVR", self.divr, self.DIVR),
                                             ("DIVF", self.divf, self.DIVF),
                                             ("DIVQ", self.divq, self.DIVQ)))

    @classmethod
    def candidates(cls, input_hz):
        divq_low, divq_high = cls.DIVQ
        for divr in range(cls.DIVR[0], cls.DIVR[1] + 1):
            pfd = Fraction(input_hz, divr + 1)
            if not _in_range(pfd, *cls.PFD_HZ):
                continue
            for divf in range(cls.DIVF[0], cls.DIVF[1] + 1):
                if not _in_range(pfd * (divf + 1), *cls.VCO_HZ):
                    continue
                for divq in range(divq_low, divq_high + 1):
                    pll = cls(input_hz, divr, divf, divq)
                    if _in_range(pll.output, *cls.OUTPUT_HZ):
                        yield pll

    def preference(self):
        """Among equal outputs: the highest PFD (least multiplication of input jitter)."""
        return (-self.pfd_hz, -self.vco_hz)

    def parameters(self):
        return {"DIVR": self.divr, "DIVF": self.divf, "DIVQ": self.divq,
                "FILTER_RANGE": self.filter_range, "FEEDBACK_PATH": "SIMPLE"}

    def to_dict(self):
        return {"primitive": self.primitive, "input_mhz": self.input_hz / MHZ,
                "output_mhz": self.output_hz / MHZ, "pfd_mhz": float(self.pfd_hz) / MHZ,
                "vco_mhz": float(self.vco_hz) / MHZ, **self.parameters()}

    def instance(self, clock_input, clock_output, lock):
        """The SB_PLL40_PAD; ``clock_input`` is the oscillator's pad (an I/O port)."""
        return Instance(self.primitive,
                        p_FEEDBACK_PATH="SIMPLE",
                        p_DIVR=Const(self.divr, 4), p_DIVF=Const(self.divf, 7),
                        p_DIVQ=Const(self.divq, 3), p_FILTER_RANGE=Const(self.filter_range, 3),
                        i_PACKAGEPIN=clock_input, o_PLLOUTGLOBAL=clock_output, o_LOCK=lock,
                        i_RESETB=Const(1), i_BYPASS=Const(0))


@dataclass(frozen=True)
class ECP5PLL:
    """An ECP5 EHXPLLL configuration (CLKOP, fed back from CLKOP) for an ``input_hz`` clock."""

    input_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    family = "ecp5"
    primitive = "EHXPLLL"
    INPUT_HZ = (8 * MHZ, 400 * MHZ)
    PFD_HZ = (Fraction(3125, 1000) * MHZ, 400 * MHZ)
    VCO_HZ = (400 * MHZ, 800 * MHZ)
    OUTPUT_HZ = (Fraction(3125, 1000) * MHZ, 400 * MHZ)
    CLKI_DIV, CLKFB_DIV, CLKOP_DIV = (1, 128), (1, 80), (1, 128)

    @property
    def pfd_hz(self):
        return Fraction(self.input_hz, self.clki_div)

    @property
    def output(self):
        """The output frequency in Hz, exactly (a :class:`~fractions.Fraction`)."""
        return self.pfd_hz * self.clkfb_div

    @property
    def output_hz(self):
        return float(self.output)

    @property
    def vco_hz(self):
        return self.output * self.clkop_div

    @property
    def clkop_cphase(self):
        """Coarse phase in VCO cycles: ``CLKOP_DIV - 1`` is Lattice's setting for 0 degrees."""
        return self.clkop_div - 1

    def check(self):
        """Raise :class:`ParameterError` unless every divider and frequency is in range."""
        return _check_ranges(self, "ECP5", (("CLKI_DIV", self.clki_div, self.CLKI_DIV),
                                            ("CLKFB_DIV", self.clkfb_div, self.CLKFB_DIV),
                                            ("CLKOP_DIV", self.clkop_div, self.CLKOP_DIV)))

    @classmethod
    def candidates(cls, input_hz):
        for clki_div in range(cls.CLKI_DIV[0], cls.CLKI_DIV[1] + 1):
            pfd = Fraction(input_hz, clki_div)
            if not _in_range(pfd, *cls.PFD_HZ):
                continue
            for clkfb_div in range(cls.CLKFB_DIV[0], cls.CLKFB_DIV[1] + 1):
                output = pfd * clkfb_div
                if not _in_range(output, *cls.OUTPUT_HZ):
                    continue
                # The VCO range fixes CLKOP_DIV to a short run of values.
                low = max(cls.CLKOP_DIV[0], -(-cls.VCO_HZ[0] // output))
                high = min(cls.CLKOP_DIV[1], cls.VCO_HZ[1] // output)
                for clkop_div in range(int(low), int(high) + 1):
                    yield cls(input_hz, clki_div, clkfb_div, clkop_div)

    def preference(self):
        """Among equal outputs: the VCO nearest 600 MHz (as ecppll), then the highest PFD."""
        return (abs(self.vco_hz - 600 * MHZ), -self.pfd_hz)

    def parameters(self):
        return {"CLKI_DIV": self.clki_div, "CLKFB_DIV": self.clkfb_div,
                "CLKOP_DIV": self.clkop_div, "CLKOP_CPHASE": self.clkop_cphase,
                "CLKOP_FPHASE": 0, "FEEDBK_PATH": "CLKOP"}

    def to_dict(self):
        return {"primitive": self.primitive, "input_mhz": self.input_hz / MHZ,
                "output_mhz": self.output_hz / MHZ, "pfd_mhz": float(self.pfd_hz) / MHZ,
                "vco_mhz": float(self.vco_hz) / MHZ, **self.parameters()}

    def instance(self, clock_input, clock_output, lock):
        """The EHXPLLL; ``clock_input`` is the oscillator's clock after its input buffer."""
        return Instance(self.primitive,
                        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                        p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                        p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                        p_CLKI_DIV=self.clki_div, p_CLKFB_DIV=self.clkfb_div,
                        p_CLKOP_DIV=self.clkop_div, p_CLKOP_CPHASE=self.clkop_cphase,
                        p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                        # The loop filter settings of prjtrellis' ecppll.
                        a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
                        a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                        i_CLKI=clock_input, i_CLKFB=clock_output, o_CLKOP=clock_output,
                        o_LOCK=lock, i_RST=Const(0), i_STDBY=Const(0),
                        i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(0),
                        i_PHASESTEP=Const(0), i_PHASELOADREG=Const(0),
                        i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0))


PLL_FAMILIES = {"ice40": ICE40PLL, "ecp5": ECP5PLL}


def pll_for(family, input_hz, request_hz):
    """The configuration of ``family``'s PLL whose output is the highest not above ``request_hz``.

    Raises :class:`ParameterError` naming the range when the input clock is
    outside the PLL's, or the request is outside the outputs the PLL can
    make from that input.
    """
    if family not in PLL_FAMILIES:
        raise ParameterError(f"no PLL for family {family!r}; families are "
                             f"{', '.join(PLL_FAMILIES)}")
    kind = PLL_FAMILIES[family]
    name = "iCE40" if family == "ice40" else "ECP5"
    if isinstance(input_hz, bool) or not isinstance(input_hz, (int, float)) \
            or not float(input_hz).is_integer():
        raise ParameterError(f"{name} PLL: the input clock must be a whole number of Hz, "
                             f"got {input_hz!r}")
    input_hz = int(input_hz)
    if not _in_range(input_hz, *kind.INPUT_HZ):
        raise ParameterError(f"{name} PLL: input clock {_mhz(input_hz)} is outside "
                             f"{_mhz(kind.INPUT_HZ[0])} to {_mhz(kind.INPUT_HZ[1])}")
    try:
        request = Fraction(request_hz)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} PLL: requested clock {request_hz!r} is not a "
                             f"frequency") from None
    candidates = list(kind.candidates(input_hz))
    low = min(c.output for c in candidates)
    high = max(c.output for c in candidates)
    if not low <= request <= kind.OUTPUT_HZ[1]:
        raise ParameterError(f"{name} PLL: requested clock {_mhz(request)} is outside "
                             f"{_mhz(low)} to {_mhz(high)}, the outputs it makes from "
                             f"{_mhz(input_hz)}")
    fitting = [c for c in candidates if c.output <= request]
    return min(fitting, key=lambda c: (-c.output, *c.preference())).check()


class PLLClock(wiring.Component):
    """The board's clock through a PLL, and a reset that waits for the PLL to lock.

    The PLL is ``pll`` (an :class:`ICE40PLL` or :class:`ECP5PLL` for the
    platform's oscillator frequency), fed by the platform's default clock.
    The parent drives its ``sync`` domain from ``clk`` and ``rst``.
    Elaborated for a platform only.

    Members
    -------
    clk : ``Out(1)``
        The PLL's output.
    rst : ``Out(1)``
        High until the PLL locks (and on iCE40 for 15 us more: its block RAMs
        read as zeroes for some microseconds after configuration); asserted
        again at once if the PLL loses lock, released synchronously to ``clk``.
    locked : ``Out(1)``
        The PLL's lock output.
    """

    clk: Out(1)
    rst: Out(1, init=1)
    locked: Out(1)

    def __init__(self, pll):
        if not isinstance(pll, (ICE40PLL, ECP5PLL)):
            raise ParameterError(f"parameter 'pll' must be an ICE40PLL or ECP5PLL, got {pll!r}")
        self._pll = pll.check()
        super().__init__()

    @property
    def pll(self):
        return self._pll

    def elaborate(self, platform):
        if platform is None:
            raise ParameterError("PLLClock needs a platform (a board build)")
        if platform.default_clk_frequency != self._pll.input_hz:
            raise ParameterError(f"the PLL is set up for a {_mhz(self._pll.input_hz)} input, "
                                 f"the board's clock is {_mhz(platform.default_clk_frequency)}")
        m = Module()
        pad = platform.request(platform.default_clk, dir="-")
        if isinstance(self._pll, ICE40PLL):
            clock_input = pad.io
        else:
            m.submodules.clock_buffer = clock_buffer = io.Buffer("i", pad)
            clock_input = clock_buffer.i
        m.submodules.pll = self._pll.instance(clock_input, self.clk, self.locked)

        # ``pll``: the PLL's clock, in reset (asynchronously asserted, synchronously
        # released) while the PLL is not locked; it times the release of ``rst``.
        m.domains.pll = ClockDomain("pll", local=True)
        m.d.comb += ClockSignal("pll").eq(self.clk)
        m.submodules.lock_sync = ResetSynchronizer(~self.locked, domain="pll")
        hold = int(15e-6 * self._pll.output_hz) if isinstance(self._pll, ICE40PLL) else 1
        timer = Signal(range(hold + 1))
        with m.If(timer != hold):
            m.d.pll += timer.eq(timer + 1)
        m.d.comb += self.rst.eq(timer != hold)
        return m


def slowest_clock_hz(family, input_hz):
    """The lowest output (Hz) ``family``'s PLL makes from ``input_hz``."""
    if family not in PLL_FAMILIES:
        raise ParameterError(f"no PLL for family {family!r}; families are "
                             f"{', '.join(PLL_FAMILIES)}")
    return float(min(c.output for c in PLL_FAMILIES[family].candidates(int(input_hz))))


@dataclass(frozen=True)
class ClockChoice:
    """The clock :func:`choose_clock` picked: the PLL, the seed that limits it, and why."""

    pll: object
    limit_mhz: float    # the lowest fmax over the seeds
    limiting_seed: int
    reason: str


def choose_clock(family, input_hz, fmax_mhz):
    """The fastest PLL clock that every seed's placement reaches.

    ``fmax_mhz`` maps each place-and-route seed to the fmax its placement
    reached (MHz). The choice is the highest output of ``family``'s PLL from
    ``input_hz`` that is not above the lowest of them (capped at the PLL's
    highest output). Raises :class:`ParameterError` when there is no fmax or
    the lowest is below the PLL's slowest output.
    """
    if family not in PLL_FAMILIES:
        raise ParameterError(f"no PLL for family {family!r}; families are "
                             f"{', '.join(PLL_FAMILIES)}")
    if not fmax_mhz:
        raise ParameterError("no fmax to choose a clock from (no place-and-route seed)")
    kind = PLL_FAMILIES[family]
    name = "iCE40" if family == "ice40" else "ECP5"
    seed, limit = min(fmax_mhz.items(), key=lambda item: (item[1], item[0]))
    request = min(Fraction(limit) * MHZ, kind.OUTPUT_HZ[1])
    try:
        pll = pll_for(family, input_hz, request)
    except ParameterError as error:
        raise ParameterError(f"the design reaches {limit:.2f} MHz (seed {seed}), no clock the "
                             f"{name} PLL can make: {error}") from None
    seeds = ", ".join(f"{s}: {f:.2f}" for s, f in sorted(fmax_mhz.items()))
    reason = (f"the fastest {name} PLL output from {_mhz(input_hz)} not above the lowest fmax "
              f"over the seeds ({seeds} MHz), {limit:.2f} MHz on seed {seed}")
    return ClockChoice(pll, limit, seed, reason)
