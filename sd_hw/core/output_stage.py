"""Bias, requantisation and ReLU of the lanes' sums, and their write-back."""

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..integer_network import ACTIVATION_MAX, ACTIVATION_MIN, MULTIPLIER_BITS
from .config import HOST_WORD_BITS
from .layouts import requant_layout


__all__ = ["OutputStage"]


class OutputStage(wiring.Component):
    """Finishes the outputs of one lane group, lane by lane, pass by pass.

    At ``start`` it reads the parameters of the group's ``lanes`` channels
    (two words per channel from ``param_base`` on: the int32 bias, then
    :func:`~sd_hw.core.layouts.requant_layout`). Then, for each of
    ``passes`` passes and each lane ``0 .. config.lanes - 1`` in turn, it
    takes the lane's sum and, for a lane below ``lanes``, computes
    (docs/number-formats.md)::

        acc = sum + bias                      (accumulator_bits, exact)
        y   = clamp((acc * multiplier + 2**(shift-1)) >> shift, -128, 127)
        y   = max(y, 0) if relu

    and writes ``y`` to the activation memory, or, with ``final``, writes
    ``acc`` (``max(acc, 0)`` with ``relu``) as a 32-bit word to the output
    memory. Lane ``l`` of pass ``p`` goes to address ``output_base + p + l *
    stride``. Sums of lanes at or above ``lanes`` are taken and dropped.

    The pipeline never stalls: it takes one sum per cycle and writes its
    output :attr:`latency` cycles later.

    Members
    -------
    start : ``In(1)``
        Pulse while idle.
    output_base, param_base, lanes, passes, stride, final, relu : ``In(...)``
        ``output_base`` is sampled at ``start``; the driver holds the others
        from ``start`` until ``busy`` falls.
    busy : ``Out(1)``
        Until the group's last output is written.
    sums : ``In(stream.Signature(signed(accumulator_bits))).array(config.lanes)``
    param_port : the parameter memory's read port (32-bit words).
    activation_write : the activation memory's write port.
    output_write : the output memory's write port (32-bit words).
    """

    #: Cycles from taking a sum to writing its output.
    latency = 2

    def __init__(self, config, *, param_addr_width, activation_addr_width, output_addr_width):
        self._config = config
        # Output addresses wrap at the larger memory's size (the compiler keeps them in range).
        self._address_width = max(activation_addr_width, output_addr_width)
        super().__init__({
            "start": In(1),
            "output_base": In(16),
            "param_base": In(param_addr_width),
            "lanes": In(8),
            "passes": In(16),
            "stride": In(16),
            "final": In(1),
            "relu": In(1),
            "busy": Out(1),
            "sums": In(stream.Signature(signed(config.accumulator_bits))).array(config.lanes),
            "param_port": In(memory.ReadPort.Signature(addr_width=param_addr_width,
                                                       shape=HOST_WORD_BITS)),
            "activation_write": In(memory.WritePort.Signature(
                addr_width=activation_addr_width, shape=config.activation_bits)),
            "output_write": In(memory.WritePort.Signature(addr_width=output_addr_width,
                                                          shape=HOST_WORD_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        lanes = config.lanes
        acc_bits = config.accumulator_bits
        requant = requant_layout()

        bias = Array(Signal(signed(acc_bits), name=f"bias_{l}") for l in range(lanes))
        multiplier = Array(Signal(unsigned(MULTIPLIER_BITS), name=f"multiplier_{l}")
                           for l in range(lanes))
        shift = Array(Signal(6, name=f"shift_{l}") for l in range(lanes))

        # The driver holds the inputs while busy.
        param_base, active, passes = self.param_base, self.lanes, self.passes
        stride, final, relu = self.stride, self.final, self.relu

        # Parameter loading: word 2l is lane l's bias, word 2l+1 its requantisation.
        load_index = Signal(range(2 * lanes + 1))
        loaded_index = Signal.like(load_index)
        loaded = Signal()
        m.d.comb += [self.param_port.addr.eq(param_base + load_index),
                     self.param_port.en.eq(0)]
        m.d.sync += [loaded.eq(0), loaded_index.eq(load_index)]
        with m.If(loaded):
            word = self.param_port.data
            with m.Switch(loaded_index):
                for l in range(lanes):
                    with m.Case(2 * l):
                        m.d.sync += bias[l].eq(word.as_signed())
                    with m.Case(2 * l + 1):
                        fields = data.View(requant, word[:data.Layout.cast(requant).size])
                        m.d.sync += [multiplier[l].eq(fields.multiplier),
                                     shift[l].eq(fields.shift)]

        # Stage 0: take lane `lane`'s sum.
        lane = Signal(range(lanes))
        pass_index = Signal(16)
        pass_start = Signal(self._address_width)
        address = Signal(self._address_width)
        taking = Signal()
        sums_valid = Array(s.valid for s in self.sums)
        sums_payload = Array(s.payload for s in self.sums)
        take = Signal()
        m.d.comb += take.eq(taking & sums_valid[lane])
        for l, s in enumerate(self.sums):
            m.d.comb += s.ready.eq(taking & (lane == l))

        # Stage 1: bias.
        s1_valid, s1_write = Signal(), Signal()
        s1_acc = Signal(signed(acc_bits))
        s1_multiplier = Signal(unsigned(MULTIPLIER_BITS))
        s1_shift = Signal(6)
        s1_address = Signal(self._address_width)
        m.d.sync += [s1_valid.eq(take), s1_write.eq(lane < active)]
        with m.If(take):
            m.d.sync += [s1_acc.eq(sums_payload[lane] + bias[lane]),
                         s1_multiplier.eq(multiplier[lane]), s1_shift.eq(shift[lane]),
                         s1_address.eq(address)]

        # Stage 2: the fixed-point product.
        product_bits = acc_bits + MULTIPLIER_BITS + 1
        s2_valid, s2_write = Signal(), Signal()
        s2_acc = Signal(signed(acc_bits))
        s2_product = Signal(signed(product_bits))
        s2_shift = Signal(range(product_bits + 1))
        s2_address = Signal(self._address_width)
        m.d.sync += [s2_valid.eq(s1_valid), s2_write.eq(s1_write), s2_acc.eq(s1_acc),
                     s2_product.eq(s1_acc * s1_multiplier), s2_address.eq(s1_address),
                     # Any shift of at least product_bits gives the same result (0).
                     s2_shift.eq(Mux(s1_shift > product_bits, product_bits, s1_shift))]

        # Then, in the cycle of the write: the arithmetic shift, rounding (half up),
        # saturation and ReLU. Rounding follows the shift, on a narrow value:
        # (p + 2**(s-1)) >> s == ((2p >> s) + 1) >> 1 for s >= 1 (and 2p >> 1 == p).
        # Whatever does not fit `narrow` bits after the shift saturates anyway.
        narrow = 10
        halved = Signal(signed(product_bits + 1))    # 2p >> s
        m.d.comb += halved.eq((s2_product << 1) >> s2_shift)
        high = halved[narrow - 1:]
        fits = (high == 0) | (high == (1 << len(high)) - 1)
        shifted = Signal(signed(narrow + 1))
        m.d.comb += shifted.eq((halved[:narrow].as_signed() + (s2_shift != 0)) >> 1)
        negative = halved[-1]
        clamped = Mux(~fits, Mux(negative, ACTIVATION_MIN, ACTIVATION_MAX),
                      Mux(shifted > ACTIVATION_MAX, ACTIVATION_MAX,
                          Mux(shifted < ACTIVATION_MIN, ACTIVATION_MIN, shifted)))
        activation = Signal(signed(config.activation_bits))
        result = Signal(signed(acc_bits))
        m.d.comb += [
            activation.eq(Mux(relu & (clamped < 0), 0, clamped)),
            result.eq(Mux(relu & (s2_acc < 0), 0, s2_acc)),
            self.activation_write.addr.eq(s2_address),
            self.activation_write.data.eq(activation),
            self.activation_write.en.eq(s2_valid & s2_write & ~final),
            self.output_write.addr.eq(s2_address),
            self.output_write.data.eq(result),
            self.output_write.en.eq(s2_valid & s2_write & final),
        ]
        pipeline_busy = s1_valid | s2_valid

        with m.FSM():
            with m.State("Idle"):
                with m.If(self.start):
                    m.d.sync += [load_index.eq(0), lane.eq(0), pass_index.eq(0),
                                 pass_start.eq(self.output_base),
                                 address.eq(self.output_base)]
                    m.next = "Load"
            with m.State("Load"):
                m.d.comb += self.busy.eq(1)
                with m.If(load_index < 2 * active):
                    m.d.comb += self.param_port.en.eq(1)
                    m.d.sync += [load_index.eq(load_index + 1), loaded.eq(1)]
                with m.Elif(~loaded):
                    with m.If(passes == 0):
                        m.next = "Idle"
                    with m.Else():
                        m.next = "Run"
            with m.State("Run"):
                m.d.comb += [self.busy.eq(1), taking.eq(1)]
                with m.If(take):
                    with m.If(lane == lanes - 1):
                        m.d.sync += [lane.eq(0), pass_index.eq(pass_index + 1),
                                     pass_start.eq(pass_start + 1),
                                     address.eq(pass_start + 1)]
                        with m.If(pass_index == passes - 1):
                            m.next = "Drain"
                    with m.Else():
                        m.d.sync += [lane.eq(lane + 1), address.eq(address + stride)]
            with m.State("Drain"):
                m.d.comb += self.busy.eq(1)
                with m.If(~pipeline_busy):
                    m.next = "Idle"
        return m
