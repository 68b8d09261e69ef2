"""Signed multiply(-accumulate) with the behaviour of one iCE40 SB_MAC16 DSP.

docs/blocks/primitives.md describes it with the measured resources.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import ParameterError
from ._lowering import checked_lowering, uses_primitive


__all__ = ["Mac16", "MODES"]

MODES = ("mac16x16", "acc16x16", "dual8x8")

#: iCE40 devices that have SB_MAC16 (UltraPlus and Ultra).
_DSP_DEVICES = ("iCE40UP", "iCE5LP")

#: SB_MAC16 parameters of the mac16x16 mode: both operands signed, input
#: registers (A, B) and both 16x16 pipeline stages (the four 8x8 partial
#: products, then their 32-bit sum), so that the multiplier's paths stay
#: inside the DSP. The adders take the product as their lower input and C:D
#: as their upper input (carry from the low half to the high half); the
#: outputs are the adders' sums, not the DSP's output registers (see
#: Mac16's "Why the accumulator register is in fabric").
_MAC16X16_PARAMETERS = {
    "NEG_TRIGGER": 0, "A_SIGNED": 1, "B_SIGNED": 1, "MODE_8x8": 0,
    "A_REG": 1, "B_REG": 1, "C_REG": 0, "D_REG": 0,
    "TOP_8x8_MULT_REG": 1, "BOT_8x8_MULT_REG": 1,
    "PIPELINE_16x16_MULT_REG1": 1, "PIPELINE_16x16_MULT_REG2": 1,
    "TOPOUTPUT_SELECT": 0, "TOPADDSUB_LOWERINPUT": 2, "TOPADDSUB_UPPERINPUT": 1,
    "TOPADDSUB_CARRYSELECT": 2,
    "BOTOUTPUT_SELECT": 0, "BOTADDSUB_LOWERINPUT": 2, "BOTADDSUB_UPPERINPUT": 1,
    "BOTADDSUB_CARRYSELECT": 0,
}

#: SB_MAC16 parameters of the acc16x16 mode: the multiplier as in mac16x16,
#: but the adders add the product to the DSP's own output registers (the
#: accumulator, upper inputs 0) and the outputs are those registers. A load
#: (OLOADTOP/OLOADBOT) puts C:D = 0 into the accumulator instead of the sum.
_ACC16X16_PARAMETERS = {
    **_MAC16X16_PARAMETERS,
    "TOPOUTPUT_SELECT": 1, "TOPADDSUB_UPPERINPUT": 0,
    "BOTOUTPUT_SELECT": 1, "BOTADDSUB_UPPERINPUT": 0,
}

#: SB_MAC16 parameters of the dual8x8 mode: 8x8 mode, both operands signed,
#: input registers and the two 8x8 product registers, which drive the
#: outputs directly.
_DUAL8X8_PARAMETERS = {
    "NEG_TRIGGER": 0, "A_SIGNED": 1, "B_SIGNED": 1, "MODE_8x8": 1,
    "A_REG": 1, "B_REG": 1, "C_REG": 0, "D_REG": 0,
    "TOP_8x8_MULT_REG": 1, "BOT_8x8_MULT_REG": 1,
    "PIPELINE_16x16_MULT_REG1": 0, "PIPELINE_16x16_MULT_REG2": 0,
    "TOPOUTPUT_SELECT": 2, "TOPADDSUB_LOWERINPUT": 0, "TOPADDSUB_UPPERINPUT": 0,
    "TOPADDSUB_CARRYSELECT": 0,
    "BOTOUTPUT_SELECT": 2, "BOTADDSUB_LOWERINPUT": 0, "BOTADDSUB_UPPERINPUT": 0,
    "BOTADDSUB_CARRYSELECT": 0,
}

#: Enabled cycles from a unit's inputs to the outputs that include them, per mode.
LATENCY = {"mac16x16": 3, "acc16x16": 4, "dual8x8": 2}


class Mac16(wiring.Component):
    """One SB_MAC16 DSP as a signed 16x16 multiply-accumulate or two 8x8 multipliers.

    ``en`` is a clock enable of the whole unit: in a cycle with ``en`` low
    the inputs are ignored and every register, the pipeline's included,
    holds. :attr:`latency` counts enabled cycles: the inputs of an enabled
    cycle ``t`` are reflected in the outputs from the cycle after the
    :attr:`latency`-th enabled cycle counted from ``t`` (with ``en`` always
    high: in cycle ``t + latency``), and stay there until the next enabled
    cycle.

    Parameters (keyword-only)
    -------------------------
    mode : str
        ``"mac16x16"``, ``"acc16x16"`` or ``"dual8x8"`` (below).
    lowering : str
        ``"auto"`` (an SB_MAC16 ``Instance`` when elaborated for an iCE40
        UltraPlus or Ultra platform, plain Amaranth arithmetic otherwise),
        ``"ice40"`` (always the Instance, e.g. to simulate it with yosys'
        ``cells_sim.v``) or ``"generic"`` (always the arithmetic, with the
        same registers and so the same cycle behaviour; yosys maps its
        multipliers to MULT18X18D on ECP5).

    Members (``mode="mac16x16"``: running sum in fabric, no bubble)
    ---------------------------------------------------------------
    a, b : ``In(signed(16))``
        The operands.
    clear : ``In(1)``
        Start a new sum with this cycle's product: it becomes the
        accumulator's value instead of being added to it (no bubble, so a
        lane runs dot products back to back).
    en : ``In(1)``
        Clock enable.
    acc : ``Out(signed(32))``
        ``acc <= (clear ? 0 : acc) + a * b`` per enabled cycle, modulo
        ``2**32``, seen :attr:`latency` (3) enabled cycles later. It is
        undefined until the product of the first cycle with ``clear`` has
        reached it (there is no reset). ``acc`` is the combinational output
        of the DSP's adder: register it where it is used.

    Members (``mode="acc16x16"``: running sum in the DSP, one dropped slot per sum)
    -------------------------------------------------------------------------------
    a, b, en : as in mac16x16.
    clear : ``In(1)``
        Start a new sum with this enabled cycle's product, and drop the
        product of the enabled cycle before it: that product is in neither
        the old sum nor the new one. A user that starts sums back to back
        gives that cycle a zero product (``b = 0``), a bubble.
    acc : ``Out(signed(32))``
        The sum of the products from the newest enabled cycle with
        ``clear`` on, modulo ``2**32``, each seen :attr:`latency` (4)
        enabled cycles after its cycle, from a register (the DSP's
        accumulator). With ``en`` always high and ``clear`` in cycle ``t``,
        ``acc`` shows the old sum (up to the product of cycle ``t - 2``)
        until cycle ``t + 2``, 0 in cycle ``t + 3`` and the new sum from
        cycle ``t + 4`` on. Undefined until a ``clear`` has taken effect.

    Members (``mode="dual8x8"``)
    ----------------------------
    a_hi, b_hi, a_lo, b_lo : ``In(signed(8))``
        Two independent pairs of operands.
    en : ``In(1)``
        Clock enable.
    p_hi, p_lo : ``Out(signed(16))``
        ``a_hi * b_hi`` and ``a_lo * b_lo`` (exact), seen :attr:`latency`
        (2) enabled cycles later, from registers; undefined until
        :attr:`latency` enabled cycles have passed. Accumulation is left to
        the fabric.

    Where the running sum is
    ------------------------
    The DSP's own accumulator register (the output registers behind its
    adders) can only be loaded with the C:D inputs (OLOADTOP/OLOADBOT) or
    added to; a load replaces the sum of the product at the adders in that
    cycle, and its reset (ORST) is asynchronous. ``mac16x16`` leaves the
    accumulator unused: the adders add the product to C:D, and C:D come
    from a 32-bit fabric register that holds the running sum and is reset
    synchronously one cycle before a product with ``clear`` reaches the
    adder (the flip-flops' own synchronous reset: no LUT). The fabric pays
    32 + 2 flip-flops and no LUT; ``clear`` is delayed by two flip-flops to
    meet its product. ``acc16x16`` keeps the sum in the accumulator: a
    ``clear`` is delayed by two flip-flops and loads C:D = 0 when the
    product of the cycle before it is at the adders, which drops that
    product; the fabric pays those 2 flip-flops only.
    """

    def __init__(self, *, mode, lowering="auto"):
        if mode not in MODES:
            raise ParameterError(f"parameter 'mode' is {mode!r}, allowed values are "
                                 f"{', '.join(map(repr, MODES))}")
        self._mode = mode
        self._lowering = checked_lowering(lowering)
        if mode in ("mac16x16", "acc16x16"):
            members = {"a": In(signed(16)), "b": In(signed(16)), "clear": In(1), "en": In(1),
                       "acc": Out(signed(32))}
        else:
            members = {"a_hi": In(signed(8)), "b_hi": In(signed(8)),
                       "a_lo": In(signed(8)), "b_lo": In(signed(8)), "en": In(1),
                       "p_hi": Out(signed(16)), "p_lo": Out(signed(16))}
        super().__init__(members)

    @property
    def mode(self):
        return self._mode

    @property
    def lowering(self):
        return self._lowering

    @property
    def latency(self):
        """Enabled cycles from inputs to the outputs that include them: 3 (mac16x16),
        4 (acc16x16), 2 (dual8x8)."""
        return LATENCY[self._mode]

    def elaborate(self, platform):
        primitive = uses_primitive(self._lowering, platform, _DSP_DEVICES)
        if self._mode == "mac16x16":
            return self._elaborate_mac(primitive)
        if self._mode == "acc16x16":
            return self._elaborate_acc(primitive)
        return self._elaborate_dual(primitive)

    def _delayed(self, m, value, stages, name):
        """``value`` through ``stages`` registers enabled by ``en``."""
        for stage in range(stages):
            delayed = Signal.like(value, name=f"{name}_{stage + 1}", reset_less=True)
            with m.If(self.en):
                m.d.sync += delayed.eq(value)
            value = delayed
        return value

    def _elaborate_mac(self, primitive):
        m = Module()
        # The running sum the adders add to; reset when a product with
        # clear reaches the adders in the next enabled cycle.
        running = Signal(signed(32), reset_less=True)
        restart = self._delayed(m, self.clear, self.latency - 1, "clear")
        with m.If(self.en):
            m.d.sync += running.eq(Mux(restart, 0, self.acc))
        if primitive:
            out = Signal(32)
            m.submodules.dsp = Instance(
                "SB_MAC16",
                **{f"p_{name}": value for name, value in _MAC16X16_PARAMETERS.items()},
                **self._dsp_ports(a=self.a, b=self.b, c=running[16:], d=running[:16], o=out))
            m.d.comb += self.acc.eq(out)
        else:
            operand_a = self._delayed(m, self.a, 1, "a")
            operand_b = self._delayed(m, self.b, 1, "b")
            product = self._delayed(m, operand_a * operand_b, 2, "product")
            m.d.comb += self.acc.eq(running + product)
        return m

    def _elaborate_acc(self, primitive):
        m = Module()
        # Loads 0 when the product of the enabled cycle before the clear's is at the adders.
        restart = self._delayed(m, self.clear, 2, "clear")
        if primitive:
            out = Signal(32)
            m.submodules.dsp = Instance(
                "SB_MAC16",
                **{f"p_{name}": value for name, value in _ACC16X16_PARAMETERS.items()},
                **self._dsp_ports(a=self.a, b=self.b, c=Const(0, 16), d=Const(0, 16), o=out,
                                  load=restart))
            m.d.comb += self.acc.eq(out)
        else:
            operand_a = self._delayed(m, self.a, 1, "a")
            operand_b = self._delayed(m, self.b, 1, "b")
            product = self._delayed(m, operand_a * operand_b, 2, "product")
            accumulator = Signal(signed(32), reset_less=True)
            with m.If(self.en):
                m.d.sync += accumulator.eq(Mux(restart, 0, accumulator + product))
            m.d.comb += self.acc.eq(accumulator)
        return m

    def _elaborate_dual(self, primitive):
        m = Module()
        if primitive:
            out = Signal(32)
            m.submodules.dsp = Instance(
                "SB_MAC16",
                **{f"p_{name}": value for name, value in _DUAL8X8_PARAMETERS.items()},
                **self._dsp_ports(a=Cat(self.a_lo, self.a_hi), b=Cat(self.b_lo, self.b_hi),
                                  c=Const(0, 16), d=Const(0, 16), o=out))
            m.d.comb += [self.p_lo.eq(out[:16]), self.p_hi.eq(out[16:])]
        else:
            for half in ("hi", "lo"):
                a = self._delayed(m, getattr(self, f"a_{half}"), 1, f"a_{half}")
                b = self._delayed(m, getattr(self, f"b_{half}"), 1, f"b_{half}")
                product = self._delayed(m, a * b, 1, f"p_{half}")
                m.d.comb += getattr(self, f"p_{half}").eq(product)
        return m

    def _dsp_ports(self, *, a, b, c, d, o, load=Const(0, 1)):
        zero = Const(0, 1)
        return {
            "i_CLK": ClockSignal("sync"), "i_CE": self.en,
            "i_A": a, "i_B": b, "i_C": c, "i_D": d,
            "i_AHOLD": zero, "i_BHOLD": zero, "i_CHOLD": zero, "i_DHOLD": zero,
            "i_IRSTTOP": zero, "i_IRSTBOT": zero, "i_ORSTTOP": zero, "i_ORSTBOT": zero,
            "i_OLOADTOP": load, "i_OLOADBOT": load, "i_ADDSUBTOP": zero, "i_ADDSUBBOT": zero,
            "i_OHOLDTOP": zero, "i_OHOLDBOT": zero,
            "i_CI": zero, "i_ACCUMCI": zero, "i_SIGNEXTIN": zero,
            "o_O": o,
        }
