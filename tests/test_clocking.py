"""The PLL configurations against the chips' documented formulas, and the clock choice.

The expected frequencies are computed here from the data sheets' formulas
(iCE40 sysCLOCK guide TN1251, ECP5 sysCLOCK guide TN1263 and data sheet),
independently of :mod:`boards.clocking`; the hand-worked requests are
derived in the comments.
"""

import random
from fractions import Fraction

import pytest
from amaranth.hdl import Elaboratable, Fragment, Module
from amaranth_boards.icebreaker import ICEBreakerPlatform

from boards.clocking import (ECP5PLL, ICE40PLL, PLLClock, choose_clock, pll_for,
                             slowest_clock_hz)
from sd_hw.errors import ParameterError
from sim.host.link import SLOWEST_CLOCK_HZ, SerialTransport

MHZ = 1_000_000


def ice40_frequencies(f_in, divr, divf, divq):
    """(PFD, VCO, output) of an SB_PLL40 with simple feedback."""
    pfd = Fraction(f_in) / (divr + 1)
    vco = pfd * (divf + 1)
    return pfd, vco, vco / 2 ** divq


def ice40_valid(f_in, divr, divf, divq):
    pfd, vco, out = ice40_frequencies(f_in, divr, divf, divq)
    return (0 <= divr <= 15 and 0 <= divf <= 127 and 1 <= divq <= 6
            and 10 * MHZ <= pfd <= 133 * MHZ and 533 * MHZ <= vco <= 1066 * MHZ
            and 16 * MHZ <= out <= 275 * MHZ)


def ecp5_frequencies(f_in, clki_div, clkfb_div, clkop_div):
    """(PFD, VCO, output) of an EHXPLLL fed back from CLKOP."""
    pfd = Fraction(f_in) / clki_div
    out = pfd * clkfb_div
    return pfd, out * clkop_div, out


def ecp5_valid(f_in, clki_div, clkfb_div, clkop_div):
    pfd, vco, out = ecp5_frequencies(f_in, clki_div, clkfb_div, clkop_div)
    return (1 <= clki_div <= 128 and 1 <= clkfb_div <= 80 and 1 <= clkop_div <= 128
            and Fraction(3125, 1000) * MHZ <= pfd <= 400 * MHZ
            and 400 * MHZ <= vco <= 800 * MHZ
            and Fraction(3125, 1000) * MHZ <= out <= 400 * MHZ)


def ice40_outputs(f_in):
    return {ice40_frequencies(f_in, r, f, q)[2]
            for r in range(16) for f in range(128) for q in range(1, 7)
            if ice40_valid(f_in, r, f, q)}


def ecp5_outputs(f_in):
    outputs = set()
    for i in range(1, 129):
        if Fraction(f_in, i) < Fraction(3125, 1000) * MHZ:
            break
        for fb in range(1, 81):
            if any(ecp5_valid(f_in, i, fb, op) for op in range(1, 129)):
                outputs.add(ecp5_frequencies(f_in, i, fb, 1)[2])
    return outputs


def test_ice40_12_to_30_mhz():
    # 30 MHz = 12 MHz * 80 / 2**5, VCO 960 MHz; DIVQ 4 would need a 480 MHz VCO (< 533),
    # DIVR 1 a 6 MHz PFD (< 10): DIVR 0, DIVF 79, DIVQ 5, PFD 12 MHz -> FILTER_RANGE 1.
    pll = pll_for("ice40", 12 * MHZ, 30 * MHZ)
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == (0, 79, 5, 1)
    assert ice40_frequencies(12 * MHZ, pll.divr, pll.divf, pll.divq) == (12 * MHZ, 960 * MHZ,
                                                                        30 * MHZ)
    assert pll.parameters() == {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "FILTER_RANGE": 1,
                                "FEEDBACK_PATH": "SIMPLE"}


def test_ice40_rounds_down():
    # 21.5 MHz: DIVQ 5 steps by 12/32 = 0.375 MHz: 57 * 0.375 = 21.375; DIVQ 4 steps by
    # 0.75 MHz: 21.0; DIVQ 6 keeps the VCO in range only up to 16.66 MHz.
    pll = pll_for("ice40", 12 * MHZ, 21.5 * MHZ)
    assert (pll.divr, pll.divf, pll.divq) == (0, 56, 5)
    assert pll.output_hz == 21_375_000
    # 16 MHz is below every output from 12 MHz: the slowest is 12 * 86 / 64 = 16.125.
    assert slowest_clock_hz("ice40", 12 * MHZ) == 16_125_000


def test_ecp5_25_to_60_mhz():
    # 60 = 25 * 12 / 5 (PFD 5 MHz); CLKOP_DIV puts the VCO (60 * CLKOP_DIV) in 400-800:
    # 7..13, nearest 600 MHz is 10; CLKOP_CPHASE = CLKOP_DIV - 1.
    pll = pll_for("ecp5", 25 * MHZ, 60 * MHZ)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div, pll.clkop_cphase) == (5, 12, 10, 9)
    assert ecp5_frequencies(25 * MHZ, 5, 12, 10) == (5 * MHZ, 600 * MHZ, 60 * MHZ)
    assert pll.output_hz == 60 * MHZ and pll.vco_hz == 600 * MHZ


def test_ecp5_48_rounds_down():
    # From 48 MHz the PFD (>= 3.125 MHz) allows CLKI_DIV <= 15; the best 48 * fb / ci not
    # above 61.8 is 48 * 9 / 7 = 61.714 (ci 14, fb 18 gives the same at a lower PFD).
    pll = pll_for("ecp5", 48 * MHZ, 61.8 * MHZ)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div) == (7, 9, 10)
    assert pll.output == Fraction(48 * 9, 7) * MHZ


@pytest.mark.parametrize("family, f_in", [("ice40", 12 * MHZ), ("ecp5", 25 * MHZ),
                                          ("ecp5", 48 * MHZ)])
def test_every_answer_is_in_range_and_the_best(family, f_in):
    outputs = sorted(ice40_outputs(f_in) if family == "ice40" else ecp5_outputs(f_in))
    rng = random.Random(f_in)
    requests = [Fraction(rng.uniform(float(outputs[0]), min(float(outputs[-1]), 300 * MHZ)))
                for _ in range(25)] + [outputs[0], outputs[-1]]
    for request in requests:
        pll = pll_for(family, f_in, request)
        if family == "ice40":
            assert ice40_valid(f_in, pll.divr, pll.divf, pll.divq)
            out = ice40_frequencies(f_in, pll.divr, pll.divf, pll.divq)[2]
            pfd = ice40_frequencies(f_in, pll.divr, pll.divf, pll.divq)[0]
            expected_filter = next((s for b, s in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5))
                                    if pfd < b * MHZ), 6)
            assert pll.filter_range == expected_filter
        else:
            assert ecp5_valid(f_in, pll.clki_div, pll.clkfb_div, pll.clkop_div)
            out = ecp5_frequencies(f_in, pll.clki_div, pll.clkfb_div, pll.clkop_div)[2]
            assert pll.clkop_cphase == pll.clkop_div - 1
        assert pll.output == out <= request
        assert max(o for o in outputs if o <= request) == out


@pytest.mark.parametrize("family, f_in, asked, message", [
    ("ice40", 12 * MHZ, 10 * MHZ, "requested clock 10 MHz is outside 16.125 MHz to 270 MHz"),
    ("ice40", 12 * MHZ, 300 * MHZ, "requested clock 300 MHz is outside 16.125 MHz to 270 MHz"),
    ("ice40", 5 * MHZ, 30 * MHZ, "input clock 5 MHz is outside 10 MHz to 133 MHz"),
    ("ecp5", 25 * MHZ, 2 * MHZ, "requested clock 2 MHz is outside 3.125 MHz to 400 MHz"),
    ("ecp5", 25 * MHZ, 401 * MHZ, "outside 3.125 MHz to 400 MHz"),
    ("ecp5", 4 * MHZ, 30 * MHZ, "input clock 4 MHz is outside 8 MHz to 400 MHz"),
    ("ecp5", 25 * MHZ, "fast", "requested clock 'fast' is not a frequency"),
    ("gowin", 25 * MHZ, 30 * MHZ, "no PLL for family 'gowin'; families are ice40, ecp5"),
])
def test_impossible_requests_are_refused(family, f_in, asked, message):
    with pytest.raises(ParameterError, match=message):
        pll_for(family, f_in, asked)


def test_a_hand_made_configuration_out_of_range_is_refused():
    with pytest.raises(ParameterError, match="iCE40 PLL: VCO frequency 480 MHz is outside "
                                             "533 MHz to 1066 MHz"):
        ICE40PLL(12 * MHZ, 0, 39, 4).check()
    with pytest.raises(ParameterError, match="ECP5 PLL: CLKFB_DIV is 81, allowed 1 to 80"):
        ECP5PLL(25 * MHZ, 1, 81, 1).check()


def test_the_clock_choice():
    # iCE40 from 12 MHz: the slowest seed (2, 21.5 MHz) limits; 21.375 MHz as above.
    choice = choose_clock("ice40", 12 * MHZ, {1: 22.07, 2: 21.5, 3: 23.0})
    assert (choice.pll.output_hz, choice.limiting_seed, choice.limit_mhz) == (21_375_000, 2,
                                                                              21.5)
    assert "21.50 MHz on seed 2" in choice.reason
    # ECP5 from 25 MHz, 59.72 MHz: 25 * fb / ci with ci <= 8 (PFD >= 3.125): ci 8 allows
    # fb 19 (59.375), ci 7 fb 16 (57.14), ci 6 fb 14 (58.33), ci 5 fb 11 (55): 59.375.
    choice = choose_clock("ecp5", 25 * MHZ, {1: 59.72})
    assert (choice.pll.clki_div, choice.pll.clkfb_div) == (8, 19)
    assert choice.pll.output_hz == 59_375_000
    # Two seeds equally slow: the first one is named.
    assert choose_clock("ecp5", 48 * MHZ, {1: 70.0, 2: 61.8, 3: 61.8}).limiting_seed == 2
    # A design faster than the PLL runs at the PLL's fastest output.
    assert choose_clock("ecp5", 25 * MHZ, {1: 500.0}).pll.output_hz == 400 * MHZ


def test_the_clock_choice_refuses():
    with pytest.raises(ParameterError, match=r"the design reaches 15.00 MHz \(seed 1\), no "
                                             r"clock the iCE40 PLL can make: .*16.125 MHz"):
        choose_clock("ice40", 12 * MHZ, {1: 15.0, 2: 30.0})
    with pytest.raises(ParameterError, match="no fmax to choose a clock from"):
        choose_clock("ice40", 12 * MHZ, {})


def test_the_pll_needs_the_board_oscillator():
    class Probe(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.clock = PLLClock(pll_for("ecp5", 25 * MHZ, 50 * MHZ))
            return m

    with pytest.raises(ParameterError, match="the PLL is set up for a 25 MHz input, the "
                                             "board's clock is 12 MHz"):
        ICEBreakerPlatform().prepare(Probe())
    with pytest.raises(ParameterError, match="PLLClock needs a platform"):
        Fragment.get(PLLClock(pll_for("ice40", 12 * MHZ, 30 * MHZ)), None)


def test_the_host_never_assumes_a_faster_clock_than_the_pll_makes():
    # The RUN timeout assumes the slowest PLL output: from the test's own enumeration,
    # 16.125 MHz from 12 MHz (iCE40), 25 / 8 = 3.125 MHz and 48 / 15 = 3.2 MHz (ECP5).
    assert slowest_clock_hz("ice40", 12 * MHZ) == min(ice40_outputs(12 * MHZ)) == 16_125_000
    assert slowest_clock_hz("ecp5", 25 * MHZ) == min(ecp5_outputs(25 * MHZ)) == 3_125_000
    assert slowest_clock_hz("ecp5", 48 * MHZ) == min(ecp5_outputs(48 * MHZ)) == 3_200_000
    assert SLOWEST_CLOCK_HZ <= 3_125_000
    assert SerialTransport("replay", serial=object())._clock_hz == SLOWEST_CLOCK_HZ
