"""OutputUnit: 2x2 max and average pooling, bias, requantisation and write-back of the
lanes' sums."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath.mac_lanes import lane_sum_layout
from ..errors import ParameterError, check_range
from ..integer_network import ACTIVATION_MAX, ACTIVATION_MIN, MULTIPLIER_BITS
from .layouts import param_layout


__all__ = ["OutputUnit", "OUTPUT_WORD_BITS", "activation_write_layout"]

#: Width of a word of the output memory (the final layer's int32 results).
OUTPUT_WORD_BITS = 32

_ACTIVATION_BITS = 8
# The multiplier with its (zero) sign bit is 16 bits: eight radix-4 Booth digits.
_BOOTH_DIGITS = (MULTIPLIER_BITS + 1) // 2
# The parameter word's shift field is 6 bits: the rounding shift t = shift - 1 < 64.
# Its top two bits pick a window of the product, the other four shift within it.
_SHIFT_BITS = 6
_COARSE_BITS = 2


def activation_write_layout(activation_addr_width):
    """One byte for the activation memory: ``addr`` (a byte address) and ``data`` (int8)."""
    return data.StructLayout({"addr": unsigned(activation_addr_width),
                              "data": signed(_ACTIVATION_BITS)})


def _add_with_carry(a, b, carry):
    """``a + b + carry`` as one addition: the carry enters below both operands' bit 0."""
    return (Cat(carry, a).as_signed() + Cat(carry, b).as_signed())[1:].as_signed()


class OutputUnit(wiring.Component):
    """Finishes the outputs of one lane group, window by window, in logic cells.

    The lanes deliver, for every pass, one sum per lane on ``sums`` (lane 0 to
    ``lanes - 1`` on consecutive cycles, no back-pressure). A *window* (one output
    pixel) is one pass, or with ``pool`` four consecutive passes (a 2x2 max pool),
    whose running maximum per lane is kept in block RAM: two banks by window
    parity, one filling while the other is read out. For each finished window
    ``p`` and each lane ``l < channels`` the unit computes
    (docs/number-formats.md)::

        acc = max + bias                                   (accumulator_bits, exact)
        acc = max(acc, 0)                                  with relu
        y   = clamp((acc * multiplier + 2**(shift-1)) >> shift, -128, 127)

    and writes byte ``y`` to ``out_base + l * plane + p`` through
    ``activation_write``, or with ``final`` writes ``acc`` as a 32-bit word to that
    address through ``output_write``. This equals the golden model's order (bias,
    requantisation, ReLU, then pooling) because every step is monotone and the
    requantisation maps 0 to 0.

    With ``average`` (and ``pool``), the four sums of a window are kept apart
    and each goes through bias, ReLU (``relu``) and requantisation; the window's
    byte is then the mean of the four, rounded half up, ``(y0 + y1 + y2 + y3 + 2)
    >> 2`` (docs/model-format.md), set to 0 if negative with ``relu_late`` (a
    ReLU after the pooling). Each window then takes four outputs' time per lane.

    The product is a radix-4 Booth serial multiplication, ``digits_per_cycle``
    digits a cycle, and the rounding shift a logarithmic selection of the nine
    result bits, so each output takes :attr:`cycles_per_output` cycles; outputs
    overlap in a pipeline and are written in order.

    Passes are flow-controlled: ``pass_ready`` says that the producer may commit a
    pass now (a window's first pass waits until its bank has been read out, the
    other passes never wait), and the producer pulses ``pass_commit`` when it
    commits one. The pass's ``lanes`` sums must then arrive at least one cycle
    later, after the previous pass's sums and before the next pass's. The
    producer commits exactly ``windows`` windows' passes per group: ``pass_ready``
    does not count them.

    Parameters
    ----------
    config : :class:`~sd_hw.config.AcceleratorConfig`
        ``lanes`` and ``accumulator_bits`` (at most 32: the final layer writes
        int32); ``activation_bits`` must be 8.
    param_addr_width : int
        Address width of the parameter memory (1..24): one
        :func:`~sd_hw.serial.layouts.param_layout` word per output channel.
    activation_addr_width, output_addr_width : int
        Byte address width of the activation memory, word address width of the
        output memory (1..24).
    digits_per_cycle : int
        Booth digits of the multiplier taken per cycle: 2 (default; 4 cycles per
        output) or 1 (8 cycles per output, about 35 fewer logic cells).

    Members
    -------
    start : ``In(1)``
        Pulse while idle: begins a group. The driver holds ``param_base``,
        ``channels``, ``windows``, ``pool``, ``average``, ``out_base``, ``plane``,
        ``final``, ``relu`` and ``relu_late`` until ``busy`` falls.
    param_base : ``In(param_addr_width)``
        Lane 0's parameter word; lane ``l``'s is at ``param_base + l``.
    channels : ``In(range(1, lanes + 1))``
        Lanes that produce outputs; the other lanes' sums are taken and dropped.
    windows : ``In(address_width)``
        Output pixels of the group. ``address_width`` is the larger of the two
        memories' address widths.
    pool, average, final, relu, relu_late : ``In(1)``
        ``average`` only with ``pool`` and without ``final``.
    out_base, plane : ``In(address_width)``
    busy : ``Out(1)``
        From ``start`` until the group's last output is written.
    sums : ``In(lane_sum_layout(config, lanes))``
        The lanes' sums (:class:`~sd_hw.datapath.mac_lanes.MacLaneArray`'s
        ``sums``); the unit counts the lanes itself (``lane`` is not used).
    pass_ready : ``Out(1)``
    pass_commit : ``In(1)``
        Ignored while ``pass_ready`` is low.
    param_read : ``In(memory.ReadPort.Signature(...))``
        The parameter memory's read port (one cycle of latency), used while busy.
    activation_write : ``Out(stream.Signature(activation_write_layout(...)))``
        Bytes of a hidden layer; the memory takes one when it is free.
    output_write : ``In(memory.WritePort.Signature(...))``
        Words of the final layer, always accepted.
    """

    def __init__(self, config, *, param_addr_width, activation_addr_width, output_addr_width,
                 digits_per_cycle=2):
        check_range("param_addr_width", param_addr_width, 1, 24)
        check_range("activation_addr_width", activation_addr_width, 1, 24)
        check_range("output_addr_width", output_addr_width, 1, 24)
        if digits_per_cycle not in (1, 2) or isinstance(digits_per_cycle, bool):
            raise ParameterError(f"parameter 'digits_per_cycle' is {digits_per_cycle!r}, "
                                 f"allowed values are 1 and 2")
        if config.activation_bits != _ACTIVATION_BITS:
            raise ParameterError(
                f"parameter 'activation_bits' is {config.activation_bits}, but the output unit "
                f"writes int8 activations (docs/number-formats.md); use {_ACTIVATION_BITS}")
        if config.accumulator_bits > OUTPUT_WORD_BITS:
            raise ParameterError(
                f"parameter 'accumulator_bits' is {config.accumulator_bits}, but the output "
                f"unit writes the final layer's accumulators as {OUTPUT_WORD_BITS}-bit words;"
                f" use at most {OUTPUT_WORD_BITS}")
        self._config = config
        self._lanes = config.lanes
        self._param_addr_width = param_addr_width
        self._activation_addr_width = activation_addr_width
        self._output_addr_width = output_addr_width
        self._address_width = max(activation_addr_width, output_addr_width)
        self._digits_per_cycle = digits_per_cycle
        lanes = self._lanes
        super().__init__({
            "start": In(1),
            "param_base": In(param_addr_width),
            "channels": In(range(1, lanes + 1)),
            "windows": In(self._address_width),
            "pool": In(1),
            "average": In(1),
            "out_base": In(self._address_width),
            "plane": In(self._address_width),
            "final": In(1),
            "relu": In(1),
            "relu_late": In(1),
            "busy": Out(1),
            "sums": In(lane_sum_layout(config, lanes)),
            "pass_ready": Out(1),
            "pass_commit": In(1),
            "param_read": In(memory.ReadPort.Signature(addr_width=param_addr_width,
                                                       shape=param_layout())),
            "activation_write": Out(stream.Signature(
                activation_write_layout(activation_addr_width))),
            "output_write": In(memory.WritePort.Signature(addr_width=output_addr_width,
                                                          shape=signed(OUTPUT_WORD_BITS))),
        })

    @property
    def config(self):
        return self._config

    @property
    def lanes(self):
        return self._lanes

    @property
    def param_addr_width(self):
        return self._param_addr_width

    @property
    def activation_addr_width(self):
        return self._activation_addr_width

    @property
    def output_addr_width(self):
        return self._output_addr_width

    @property
    def address_width(self):
        """Width of ``out_base``, ``plane`` and ``windows``: the larger address width."""
        return self._address_width

    @property
    def digits_per_cycle(self):
        return self._digits_per_cycle

    @property
    def cycles_per_output(self):
        """Cycles between two outputs of a group: the serial multiplication's steps."""
        return _BOOTH_DIGITS // self._digits_per_cycle

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        acc_bits = self._config.accumulator_bits
        lane_bits = max(1, (lanes - 1).bit_length())
        steps = self.cycles_per_output
        last_pass = Mux(self.pool, 3, 0)

        # Only `running` and the output's `valid` have the domain reset: the rest is
        # set up by `start`, which thus takes the flip-flops' synchronous reset.
        def state(shape, name):
            return Signal(shape, name=name, reset_less=True)

        running = Signal()
        begin = ~running & self.start
        m.d.comb += self.busy.eq(running)

        # Commit side: the producer's next pass, and its bank. A bank is `owned` from
        # its window's first commit until the unit has read it out.
        c_pass = state(2, "c_pass")
        c_bank = state(1, "c_bank")
        owned = state(2, "owned")
        # `pass_ready` comes from flip-flops: the state's readiness of the cycle before,
        # unless that cycle committed a pass or began a group (the only events that can
        # take readiness away), so it is never late to fall and at most a cycle late to
        # rise; the producer's element stream then has no path from this unit's state.
        ready_now = running & ((c_pass != 0) | ~Mux(c_bank, owned[1], owned[0]))
        ready_seen = Signal()
        settled = Signal()
        m.d.comb += self.pass_ready.eq(ready_seen & settled)
        commit = self.pass_commit & self.pass_ready
        m.d.sync += [ready_seen.eq(ready_now), settled.eq(~begin & ~commit)]
        with m.If(begin):
            m.d.sync += [c_pass.eq(0), c_bank.eq(0)]
        with m.Elif(commit):
            with m.If(c_pass == last_pass):
                m.d.sync += [c_pass.eq(0), c_bank.eq(~c_bank)]
            with m.Else():
                m.d.sync += c_pass.eq(c_pass + 1)

        # Arrival side: which lane, pass and bank the next sum belongs to.
        a_lane = state(lane_bits, "a_lane")
        a_pass = state(2, "a_pass")
        a_bank = state(1, "a_bank")
        arrive = self.sums.valid
        a_last_lane = a_lane == lanes - 1
        next_lane = Signal(lane_bits)
        m.d.comb += next_lane.eq(Mux(a_last_lane, 0, a_lane + 1))
        window_done = arrive & a_last_lane & (a_pass == last_pass)
        with m.If(begin):
            m.d.sync += [a_lane.eq(0), a_pass.eq(0), a_bank.eq(0)]
        with m.Elif(arrive):
            m.d.sync += a_lane.eq(next_lane)
            with m.If(window_done):
                m.d.sync += [a_pass.eq(0), a_bank.eq(~a_bank)]
            with m.Elif(a_last_lane):
                m.d.sync += a_pass.eq(a_pass + 1)

        # An arriving sum is compared with its lane's maximum in its arrival cycle and
        # written into its bank one cycle later (`w_*`) if it is larger or starts its
        # window.
        w_write, w_done = state(1, "w_write"), state(1, "w_done")
        w_lane, w_bank = state(lane_bits, "w_lane"), state(1, "w_bank")
        w_pass = state(2, "w_pass")
        w_value = state(signed(acc_bits), "w_value")
        larger = Signal()
        # (`larger` is the flip-flop's data, the arrival its synchronous reset.)
        with m.If(arrive & ~begin):
            m.d.sync += w_write.eq(larger)
        with m.Else():
            m.d.sync += w_write.eq(0)
        m.d.sync += [w_done.eq(window_done & ~begin),
                     w_lane.eq(a_lane), w_bank.eq(a_bank), w_value.eq(self.sums.value),
                     w_pass.eq(Mux(self.average, a_pass, 0))]

        # Read-out side: the slot phase, and the lane whose maximum is read next.
        phase = state(range(steps), "phase")
        stall = Signal()
        advance = running & ~stall
        d_lane = state(lane_bits, "d_lane")
        d_bank = state(1, "d_bank")
        # With average pooling, the window's four sums of a lane are read out in turn.
        d_pass = state(2, "d_pass")
        complete = state(2, "complete")
        issue = Signal()
        m.d.comb += issue.eq(advance & (phase == 0) & Mux(d_bank, complete[1], complete[0]))
        d_last_lane = d_lane == self.channels - 1
        d_emit = ~self.average | (d_pass == 3)   # the lane's byte is written after this
        lane_done = issue & d_emit
        drained = lane_done & d_last_lane
        with m.If(begin):
            m.d.sync += [phase.eq(0), d_lane.eq(0), d_bank.eq(0), d_pass.eq(0)]
        with m.Else():
            with m.If(advance):
                m.d.sync += phase.eq(Mux(phase == steps - 1, 0, phase + 1))
            with m.If(issue & self.average):
                m.d.sync += d_pass.eq(d_pass + 1)
            with m.If(drained):
                m.d.sync += [d_lane.eq(0), d_bank.eq(~d_bank)]
            with m.Elif(lane_done):
                m.d.sync += d_lane.eq(d_lane + 1)
        for b in range(2):
            with m.If(begin):
                m.d.sync += [owned[b].eq(0), complete[b].eq(0)]
            with m.Else():
                with m.If(commit & (c_pass == 0) & (c_bank == b)):
                    m.d.sync += owned[b].eq(1)
                with m.Elif(drained & (d_bank == b)):
                    m.d.sync += owned[b].eq(0)
                with m.If(w_done & (w_bank == b)):
                    m.d.sync += complete[b].eq(1)
                with m.Elif(drained & (d_bank == b)):
                    m.d.sync += complete[b].eq(0)

        # The running maxima, both banks in one memory (word `bank * 2**lane_bits +
        # lane`). The maximum of the lane that arrives next is read ahead: every cycle
        # the read port takes the address of the next sum (that of the lane after an
        # arriving one), so that the maximum is there when its sum arrives. A lane's
        # maximum is written the cycle after its sum arrived; with at least three
        # lanes its next read comes later (a pass takes at least `lanes` cycles), with
        # fewer it may come in that cycle and must see the write. A second read port
        # serves the read-out.
        # With average pooling every sum of a window is kept: word `bank * 2**(lane_bits
        # + 2) + pass * 2**lane_bits + lane` (pass 0 for max pooling).
        maxima = m.submodules.maxima = memory.Memory(
            shape=signed(acc_bits), depth=8 << lane_bits, init=[])
        rmw_write = maxima.write_port()
        rmw_read = maxima.read_port(transparent_for=(rmw_write,) if lanes <= 2 else ())
        drain_read = maxima.read_port()
        next_bank = a_bank ^ window_done
        rmw_address = Signal(lane_bits + 3)
        m.d.comb += rmw_address.eq(Mux(arrive, Cat(next_lane, Const(0, 2), next_bank),
                                       Cat(a_lane, Const(0, 2), a_bank)))
        maximum = rmw_read.data
        if lanes == 1:
            # With one lane, a sum may arrive while the previous one is being written.
            maximum = Mux(w_write & (w_bank == a_bank), w_value, rmw_read.data)
        # The comparison as a subtraction's sign: a sum bit, not a carry out.
        difference = Signal(signed(acc_bits + 1))
        m.d.comb += [
            difference.eq(maximum - self.sums.value),
            larger.eq(self.average | (a_pass == 0) | difference[-1]),
            rmw_write.addr.eq(Cat(w_lane, w_pass, w_bank)),
            rmw_write.data.eq(w_value),
            rmw_write.en.eq(w_write),
            rmw_read.addr.eq(rmw_address),
            # With more than two lanes the maximum being written is never the one
            # being read: the read enable says so, so that synthesis adds no bypass.
            rmw_read.en.eq((lanes <= 2) | ~w_write
                           | (rmw_address != Cat(w_lane, w_pass, w_bank))),
            drain_read.addr.eq(Cat(d_lane, d_pass, d_bank)),
            # A bank being read out receives no sums: the read-out never collides
            # with a write.
            drain_read.en.eq(issue & ~(w_write & (w_bank == d_bank))),
        ]

        # The output pipeline, one slot of `steps` cycles per stage: read (phase 0),
        # bias (phase 1), the multiplication's partial products (from phase 2) and
        # steps (phases 4, 5, ... of the slot, modulo its length, up to phase 3 of the
        # next), the product's coarse selection (that phase 3) and the fine
        # selection and rounding (phase 0 of the slot after). `*_valid` say which
        # stages hold an output, `*_last` whether it is its window's last.
        params = self.param_read.data
        m.d.comb += [self.param_read.addr.eq(self.param_base + d_lane),
                     self.param_read.en.eq(issue)]
        rd_valid, rd_last = state(1, "rd_valid"), state(1, "rd_last")
        acc_valid, acc_last = state(1, "acc_valid"), state(1, "acc_last")
        sel_valid, sel_last = state(1, "sel_valid"), state(1, "sel_last")
        # `*_emit`: the output is written (not one of an average's first three).
        rd_emit, acc_emit, sel_emit = state(1, "rd_emit"), state(1, "acc_emit"), state(1, "sel_emit")
        acc = state(signed(acc_bits), "acc")
        biased = Signal(signed(acc_bits))
        m.d.comb += biased.eq(drain_read.data + params.bias)
        with m.If(begin):
            m.d.sync += [rd_valid.eq(0), acc_valid.eq(0), sel_valid.eq(0)]
        with m.Elif(advance):
            with m.If(phase == 0):
                m.d.sync += [rd_valid.eq(issue), rd_last.eq(d_last_lane), rd_emit.eq(d_emit)]
            with m.If(phase == 1):
                m.d.sync += [acc_valid.eq(rd_valid), acc_last.eq(rd_last),
                             sel_valid.eq(acc_valid & ~self.final), sel_last.eq(acc_last),
                             acc_emit.eq(rd_emit), sel_emit.eq(acc_emit), rd_valid.eq(0)]
            with m.If(phase == 3 % steps):
                m.d.sync += sel_valid.eq(0)
            with m.If(phase == 2):
                with m.If(self.final):
                    m.d.sync += acc_valid.eq(0)
        with m.If(advance & (phase == 1) & rd_valid):
            # ReLU before the requantisation: it is monotone and maps 0 to 0.
            with m.If(self.relu & biased[-1]):
                m.d.sync += acc.eq(0)
            with m.Else():
                m.d.sync += acc.eq(biased)

        # The product is there in phase 3, its coarse window registered then and the
        # rounded byte in phase 0 of the next slot.
        product, shift = self._multiply(m, acc, params, phase, advance)
        window, groups, fits_of = self._coarse_select(m, product, shift)
        fine_window = state(signed(len(window)), "fine_window")
        fine_groups = state(len(groups), "fine_groups")
        fine_negative = state(1, "fine_negative")
        fine_valid, fine_last = state(1, "fine_valid"), state(1, "fine_last")
        fine_emit = state(1, "fine_emit")
        with m.If(begin):
            m.d.sync += fine_valid.eq(0)
        with m.Elif(advance & (phase == 3 % steps)):
            m.d.sync += [fine_window.eq(window), fine_groups.eq(groups),
                         fine_negative.eq(product[-1]), fine_valid.eq(sel_valid),
                         fine_last.eq(sel_last), fine_emit.eq(sel_emit)]
        with m.Elif(advance & (phase == 0)):
            m.d.sync += fine_valid.eq(0)
        result, overflow = self._fine_select(m, fine_window, shift, fits_of(fine_groups))
        activation = self._round(m, result, overflow, fine_negative)

        # A hidden layer's byte waits in `out` until the memory takes it (the pipeline
        # stalls if the next one is ready first); a final layer's word is written
        # straight from `acc`.
        out = self.activation_write
        out_data = state(signed(_ACTIVATION_BITS), "out_data")
        out_last = state(1, "out_last")
        out_valid = Signal()
        producing = (phase == 0) & fine_valid
        # An average pooling's first three bytes of a lane are added up (the cycle
        # after each is produced) in `pooled`, which starts at 2 (the rounding's half),
        # the fourth's byte is the rounded mean.
        gather = state(1, "gather")
        pooled = state(signed(_ACTIVATION_BITS + 2), "pooled")
        mean = Signal(signed(_ACTIVATION_BITS + 3))
        m.d.comb += mean.eq((pooled + out_data) >> 2)
        m.d.comb += [stall.eq(producing & out_valid & ~out.ready),
                     out.valid.eq(out_valid),
                     out.payload.data.eq(Mux(self.average,
                                             Mux(self.relu_late & mean[-1], 0, mean),
                                             out_data))]
        m.d.sync += gather.eq(~begin & advance & producing & ~fine_emit)
        with m.If(begin | (out_valid & out.ready)):
            m.d.sync += pooled.eq(2)
        with m.Elif(gather):
            m.d.sync += pooled.eq(pooled + out_data)
        with m.If(begin):
            m.d.sync += out_valid.eq(0)
        with m.Elif(advance & producing):
            m.d.sync += [out_data.eq(activation), out_last.eq(fine_last),
                         out_valid.eq(fine_emit)]
        with m.Elif(out.ready):
            m.d.sync += out_valid.eq(0)
        final_write = running & (phase == 2) & acc_valid & self.final
        m.d.comb += [self.output_write.en.eq(final_write),
                     self.output_write.data.eq(acc)]

        # Addresses, in write order: lane l of window p at out_base + p + l * plane.
        written = (out_valid & out.ready) | final_write
        written_last = Mux(self.final, acc_last, out_last)
        window_offset = state(self._address_width, "window_offset")
        lane_offset = state(self._address_width, "lane_offset")
        address = Signal(self._address_width)
        m.d.comb += [address.eq(self.out_base + window_offset + lane_offset),
                     out.payload.addr.eq(address), self.output_write.addr.eq(address)]
        with m.If(begin | (written & written_last)):
            m.d.sync += lane_offset.eq(0)
        with m.Elif(written):
            m.d.sync += lane_offset.eq(lane_offset + self.plane)
        with m.If(begin):
            m.d.sync += window_offset.eq(0)
        with m.Elif(written & written_last):
            m.d.sync += window_offset.eq(window_offset + 1)

        with m.If(begin):
            m.d.sync += running.eq(1)
        with m.Elif((window_offset == self.windows) & ~out_valid):
            m.d.sync += running.eq(0)
        return m

    def _multiply(self, m, acc, params, phase, advance):
        """``acc * multiplier`` as a radix-4 Booth serial product; returns the product
        (valid in phase 3) and the rounding shift of its output.

        Step ``k`` of the multiplication adds ``digits_per_cycle`` partial products
        to the running sum, which then moves right by two bits a digit; the bits it
        drops are the product's low bits and are kept in ``low``. A step's partial
        products are registered two phases before it and their sum one phase before
        it, so that a step is one addition. Steps run in phases 4, 5, ..., 3 (modulo
        the slot's length); the last step's sum is not kept: during phase 3 it is the
        product's top, and the running sum restarts from zero.
        """
        acc_bits = len(acc)
        digits = self._digits_per_cycle
        steps = self.cycles_per_output
        drop = 2 * digits
        last = 3 % steps

        # Step k looks at multiplier bits drop*k - 1 .. drop*k + drop - 1 (bit -1 and
        # the sign are 0). The parameter word holds still from phase 1 to phase 0 of
        # the next slot; the last step's bits and the shift are kept beyond that.
        extended = Cat(Const(0, 1), params.multiplier[:MULTIPLIER_BITS], Const(0, 1))
        width = drop + 1

        def bits_of(step):
            return extended[drop * step:drop * step + width]

        last_bits = Signal(width, reset_less=True)
        shift = Signal(_SHIFT_BITS, reset_less=True)
        with m.If(advance & (phase == 0)):
            m.d.sync += [last_bits.eq(bits_of(steps - 1)), shift.eq(params.shift - 1)]
        window = Signal(width)
        with m.Switch(phase):
            for step in range(steps - 1):
                with m.Case((step + 2) % steps):
                    m.d.comb += window.eq(bits_of(step))
            with m.Case(1):
                m.d.comb += window.eq(last_bits)

        partials = []
        for digit in range(digits):
            low, middle, high = window[2 * digit], window[2 * digit + 1], window[2 * digit + 2]
            zero = (low == middle) & (middle == high)
            double = (low == middle) & (middle != high)
            magnitude = Signal(signed(acc_bits + 2), name=f"booth_magnitude{digit}")
            m.d.comb += magnitude.eq(Mux(double, acc << 1, acc))
            # A negative digit's partial product is the complement, its +1 a carry in.
            partial = Signal(signed(acc_bits + 2), name=f"partial{digit}", reset_less=True)
            negative = Signal(name=f"partial_negative{digit}", reset_less=True)
            with m.If(advance):
                with m.If(zero):
                    m.d.sync += [partial.eq(0), negative.eq(0)]
                with m.Else():
                    m.d.sync += [partial.eq(Mux(high, ~magnitude, magnitude)),
                                 negative.eq(high)]
            partials.append((partial, negative))

        # The step's addend: digit d weighs 4**d. The second digit's +1 (4 at bit 2)
        # is 3 in the free low bits of its term plus the step's carry in.
        addend = Signal(signed(acc_bits + 5), reset_less=True)
        carry = Signal(reset_less=True)
        (partial0, negative0) = partials[0]
        with m.If(advance):
            if digits == 1:
                m.d.sync += [addend.eq(partial0), carry.eq(negative0)]
            else:
                (partial1, negative1) = partials[1]
                m.d.sync += [addend.eq(_add_with_carry(
                                 partial0, Cat(negative1, negative1, partial1).as_signed(),
                                 negative0)),
                             carry.eq(negative1)]

        running_sum = Signal(signed(acc_bits + 1), reset_less=True)
        step_sum = Signal(signed(acc_bits + 5), name="step_sum")
        m.d.comb += step_sum.eq(_add_with_carry(running_sum, addend, carry))
        low = Signal(drop * (steps - 1), reset_less=True)
        with m.If(advance):
            with m.If(phase == last):
                m.d.sync += running_sum.eq(0)
            with m.Else():
                m.d.sync += [running_sum.eq(step_sum.shift_right(drop)),
                             low.eq(Cat(low[drop:], step_sum[:drop]))]
        return Cat(low, step_sum).as_signed(), shift

    def _coarse_select(self, m, product, shift):
        """The 24-bit window of ``product`` that the shift's top two bits pick (at bit
        0, 16, 32 or 48; beyond the product's top, its sign), the checks that runs of
        bits above the windows are uniform, and a function of those checks (once
        registered) saying whether the bits above the picked window all equal its
        top bit (else the result cannot fit)."""
        step = 1 << (_SHIFT_BITS - _COARSE_BITS)
        width = _ACTIVATION_BITS + step
        product_bits = len(product)
        sign = product[-1]

        def bits(low, high):
            return Cat(product[i] if i < product_bits else sign for i in range(low, high))

        def same(value):
            return (value == 0) | (value == (1 << len(value)) - 1)

        window = Signal(signed(width))
        with m.Switch(shift[-_COARSE_BITS:]):
            for choice in range(1 << _COARSE_BITS):
                with m.Case(choice):
                    m.d.comb += window.eq(bits(choice * step, choice * step + width))
        # Above window c, the bits up to window c + 1's top must equal its top bit.
        # Those runs are checked four bits at a time here (`groups`, registered with
        # the window) and the checks combined a phase later (`fits_of`), so that the
        # product's last bits reach a register through one look-up table.
        groups, runs = [], []
        for choice in range(1 << _COARSE_BITS):
            top = choice * step + width - 1
            end = min(product_bits, top + step + 1)
            first = len(groups)
            for low in range(top, end - 1, 3):
                groups.append(same(bits(low, min(end, low + 4))))
            runs.append(range(first, len(groups)))

        def fits_of(flags):
            fits = [Cat(flags[i] for i in range(run.start, len(groups))).all()
                    if run.start < len(groups) else Const(1) for run in runs]
            return Cat(fits).bit_select(shift[-_COARSE_BITS:], 1)

        return window, Cat(groups), fits_of

    def _fine_select(self, m, window, shift, fits):
        """``window >> shift[:4]`` as a 9-bit signed value, and whether it does not fit.

        A logarithmic shifter keeps after each stage only the bits that later stages
        can still bring into the result; bits that a stage not taken leaves out above
        the result must all equal its top bit for the result to fit.
        """
        width = _ACTIVATION_BITS + 1
        value = window
        overflow = [~fits]
        for stage in reversed(range(_SHIFT_BITS - _COARSE_BITS)):
            distance = 1 << stage
            kept = width - 1 + distance
            dropped = value[kept - 1:]
            overflow.append(~shift[stage]
                            & ~((dropped == 0) | (dropped == (1 << len(dropped)) - 1)))
            narrower = Signal(signed(kept), name=f"select{stage}")
            m.d.comb += narrower.eq(Mux(shift[stage], value.shift_right(distance),
                                        value[:kept].as_signed()))
            value = narrower
        overflowed = Signal()
        m.d.comb += overflowed.eq(Cat(overflow).any())
        return value, overflowed

    def _round(self, m, result, overflow, negative):
        """``(result + 1) >> 1`` clamped to int8; ``negative`` is the sign of a result
        that did not fit."""
        rounded = Signal(signed(_ACTIVATION_BITS + 1))
        m.d.comb += rounded.eq(result[1:].as_signed() + result[0])
        activation = Signal(signed(_ACTIVATION_BITS))
        with m.If(overflow):
            m.d.comb += activation.eq(Mux(negative, ACTIVATION_MIN, ACTIVATION_MAX))
        with m.Elif(rounded[-1] != rounded[-2]):
            # Only 256 does not fit nine bits' halves: (255 + 1) >> 1.
            m.d.comb += activation.eq(ACTIVATION_MAX)
        with m.Else():
            m.d.comb += activation.eq(rounded)
        return activation
