"""FactoredLaneArray: lanes that share basis engines and shift-add basis products."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ParameterError, check_range
from ..primitives import Mac16, RegisteredReadPort
from ..primitives._lowering import checked_lowering
from ..primitives.mac16 import LATENCY as MAC_LATENCY
from .mac_lanes import (basis_column_layout, basis_read_layout, element_layout, emit_sums,
                        lane_sum_layout)


__all__ = ["FactoredLaneArray", "PRODUCT_INPUT_BITS"]

#: Signed width of the basis engines' multiplier inputs (an iCE40 SB_MAC16 in 8x8 mode).
PRODUCT_INPUT_BITS = 8


class FactoredLaneArray(wiring.Component):
    """``lanes`` output channels that apply whole Ce rows to shared basis products.

    The lanes form groups of ``basis_group`` consecutive lanes; each group has one
    *basis engine* and one basis memory, and its channels share one basis per block
    (the compiler refuses a network whose bases differ within a group). For each
    element taken from ``elements`` (activation ``x``, column ``c`` of a Ce row's
    activation row), every engine multiplies ``x`` by column ``c`` of its basis and
    sums the products over the row's elements,

        z[j] = sum_c B[j][c] * x[c]       (j = 0, 1, 2: one Ce row of B x_row)

    and once the row is complete (the element with ``row_last``), every lane ``l`` of
    the group adds, one term a cycle,

        sum_j present[j] * (-1)**negative[j] * (z[j] << exponent[j])

    (``rows[l]``'s coefficients, taken with the ``row_last`` element; its ``last``
    bit is ignored) to its running sum. This is ``W x`` of the rebuilding lanes
    (:class:`~sd_hw.datapath.mac_lanes.MacLaneArray`) by associativity, but the
    multiplications are done once per group and row instead of once per lane and
    element: with ``basis_group`` lanes sharing an engine, ``3`` products serve
    ``3 * basis_group`` dense-equivalent multiply-accumulates.

    The basis column comes from the last read of ``basis_read`` before the element is
    taken, as for :class:`~sd_hw.datapath.mac_lanes.MacLaneArray` (every engine's
    memory is read at the same address). The products are those of the engines'
    :class:`~sd_hw.primitives.Mac16` units in ``dual8x8`` mode, two a unit, the
    three of each engine and those of the next engine packed together
    (``ceil(3 * engines / 2)`` units).

    Widths: a product is 16 bits, ``z[j]`` :attr:`z_bits` (17 for int8: at most three
    products of ``|B| <= 128``, ``|x| <= 128``), a shifted term :attr:`term_bits` (24
    for 3-bit codes: ``z << 7``; capped at ``accumulator_bits``), the running sums
    ``accumulator_bits``. The sums are computed modulo ``2**accumulator_bits``, a
    term's sign extended: an intermediate value may wrap (two's complement), the final
    sum is exact whenever it lies in the accumulator's range, which the compiler's
    accumulator bound guarantees. No weight is rebuilt, so no weight width applies.

    Timing. An element with ``row_last`` set is taken at ``t``: the products of its
    row are complete at ``t + 2`` (:data:`~sd_hw.primitives.mac16.LATENCY` of
    ``dual8x8``), the engine offers the row's sums from registers in cycles
    ``t + 3 .. t + 5``, one a cycle, each lane shifts them into a register and adds
    them in ``t + 4 .. t + 6``. With ``last`` set (which implies ``row_last``), the
    ``lanes`` sums are captured at the end of ``t + 6`` and leave on ``sums``, lane 0
    first, one per cycle, from ``t + 7`` (:attr:`latency` = 7) while the lanes go on
    with the next sums. ``first`` is not needed: a sum starts after
    the previous ``last`` (or the reset). The multipliers' registers have no reset
    (nor has an SB_MAC16's pipeline): for :data:`~sd_hw.primitives.mac16.LATENCY`
    cycles after a reset the row and running sums are held at 0, which drops only
    products of cycles before the reset (an element taken right after it counts).

    Stall rules (``ready`` is one look-up table of flip-flops): an element with
    ``row_last`` is taken only when no ``row_last`` element was taken in the two
    cycles before (a row's three terms go through the lanes one a cycle); an element
    with ``last`` only when at least ``lanes`` cycles have passed since the previous
    one (the captured sums must have left). Other elements are always taken, and
    sums may run back to back (no bubble).

    Each engine's basis memory (``basis_depth`` bases of four words, one per column
    and one unused, :func:`~sd_hw.datapath.mac_lanes.basis_column_layout`) is written
    through ``basis_write``: ``lane`` selects the *engine* (lanes
    ``lane * basis_group ..``), ``addr`` is ``4 * basis + column``. The host writes it
    while the array is idle.

    Parameters
    ----------
    config : :class:`~sd_hw.config.AcceleratorConfig`
        Widths and the lane count (``config.lanes``); activations and basis entries
        at most :data:`PRODUCT_INPUT_BITS` bits.
    basis_group : int or None
        Lanes per basis engine, a divisor of ``lanes`` (``None``: all lanes).
    basis_depth : int
        Bases each engine's basis memory holds (1..16384).
    lowering : str
        Of the engines' :class:`~sd_hw.primitives.Mac16` units: ``"auto"``,
        ``"ice40"`` or ``"generic"``.

    Members
    -------
    elements : ``In(stream.Signature(element_layout(config, lanes)))``
    basis_read : ``In(basis_read_layout(basis_addr_width))``
    sums : ``Out(lane_sum_layout(config, lanes))``
        One lane's sum in each cycle ``valid`` is set; no back-pressure.
    basis_write : ``In(...)``
        ``en``, ``lane`` (the engine), ``addr``, ``data`` (a
        :func:`~sd_hw.datapath.mac_lanes.basis_column_layout`).
    """

    def __init__(self, config, *, basis_group=None, basis_depth, lowering="auto"):
        check_range("basis_depth", basis_depth, 1, 16384)
        self._lowering = checked_lowering(lowering)
        lanes = config.lanes
        if basis_group is None:
            basis_group = lanes
        if isinstance(basis_group, bool) or not isinstance(basis_group, int) \
                or basis_group < 1 or lanes % basis_group:
            raise ParameterError(f"parameter 'basis_group' is {basis_group!r}; it must divide "
                                 f"lanes = {lanes}")
        for name in ("activation_bits", "basis_bits"):
            if getattr(config, name) > PRODUCT_INPUT_BITS:
                raise ParameterError(
                    f"parameter {name!r} is {getattr(config, name)}; the basis engines "
                    f"multiply {PRODUCT_INPUT_BITS}x{PRODUCT_INPUT_BITS} bits: use at most "
                    f"{PRODUCT_INPUT_BITS}")
        self._config = config
        self._lanes = lanes
        self._basis_group = basis_group
        self._engines = lanes // basis_group
        self._basis_depth = basis_depth
        self._basis_addr_width = max(1, (basis_depth - 1).bit_length())
        super().__init__({
            "elements": In(stream.Signature(element_layout(config, lanes))),
            "basis_read": In(basis_read_layout(self._basis_addr_width)),
            "sums": Out(lane_sum_layout(config, lanes)),
            "basis_write": In(data.StructLayout({
                "en": 1,
                "lane": unsigned(max(1, (self._engines - 1).bit_length())),
                "addr": unsigned(self._basis_addr_width + 2),
                "data": basis_column_layout(config),
            })),
        })

    @property
    def config(self):
        return self._config

    @property
    def lanes(self):
        return self._lanes

    @property
    def basis_group(self):
        return self._basis_group

    @property
    def engines(self):
        """Basis engines (and basis memories): ``lanes // basis_group``."""
        return self._engines

    @property
    def basis_depth(self):
        return self._basis_depth

    @property
    def multipliers(self):
        """:class:`~sd_hw.primitives.Mac16` units (``dual8x8``) of all engines."""
        return -(-3 * self._engines // 2)

    @property
    def z_bits(self):
        """Signed width of a basis product summed over a row, ``(B x_row)[j]``."""
        return self._config.basis_product_bits

    @property
    def term_bits(self):
        """Signed width of a shifted term ``z[j] << exponent[j]``."""
        return min(self._config.shifted_product_bits, self._config.accumulator_bits)

    @property
    def latency(self):
        """Cycles from taking an element with ``last`` set to lane 0's sum on ``sums``:
        the products (:attr:`Mac16.latency` of ``dual8x8``), the row sum's register,
        three terms a cycle each (each shifted into a register, then added), and the
        capture."""
        return MAC_LATENCY["dual8x8"] + 1 + 3 + 1

    def elaborate(self, platform):
        m = Module()
        config = self._config
        lanes = self._lanes
        elements = self.elements
        element = elements.payload
        taking = elements.valid & elements.ready

        # `row_done[k]`: a row's last element was taken `k` cycles ago (k = 1..4);
        # `row_busy`: k = 1 or 2, when a new row's last element must wait. `done`: a
        # sum's last element, delayed to the cycle its last term is added.
        row_taken = taking & element.row_last
        row_done = [None]
        previous = row_taken
        for k in range(1, 5):
            delayed = Signal(name=f"row_done{k}")
            m.d.sync += delayed.eq(previous)
            row_done.append(delayed)
            previous = delayed
        row_busy = Signal()
        m.d.sync += row_busy.eq(row_taken | row_done[1])
        done = taking & element.last
        for k in range(self.latency - 1):
            delayed = Signal(name=f"done{k + 1}")
            m.d.sync += delayed.eq(done)
            done = delayed

        gap = Signal(range(lanes))
        gap_zero = Signal(init=1)
        m.d.comb += elements.ready.eq(~(element.row_last & row_busy)
                                      & (~element.last | gap_zero))
        with m.If(taking & element.last):
            m.d.sync += [gap.eq(lanes - 1), gap_zero.eq(lanes == 1)]
        with m.Elif(~gap_zero):
            m.d.sync += [gap.eq(gap - 1), gap_zero.eq(gap == 1)]

        # The engines: basis column times activation (0 in a cycle without an element).
        activation = Signal(signed(config.activation_bits))
        m.d.comb += activation.eq(Mux(taking, element.activation, 0))
        write = self.basis_write
        read = self.basis_read
        columns = []
        for e in range(self._engines):
            bases = m.submodules[f"bases{e}"] = memory.Memory(
                shape=basis_column_layout(config), depth=4 * self._basis_depth, init=[],
                attrs={"no_rw_check": 1})
            write_port = bases.write_port()
            m.d.comb += [write_port.addr.eq(write.addr), write_port.data.eq(write.data),
                         write_port.en.eq(write.en & (write.lane == e))]
            # Not reset-less: the multipliers multiply it by 0 before the first read,
            # which must not be undefined in a four-state simulator.
            read_port = RegisteredReadPort(m, bases, name=f"column{e}")
            m.d.comb += [read_port.addr.eq(read.basis * 4 + read.column),
                         read_port.en.eq(read.en)]
            columns.append(read_port.data)
        products = []
        for unit in range(self.multipliers):
            mac = m.submodules[f"mac{unit}"] = Mac16(mode="dual8x8", lowering=self._lowering)
            m.d.comb += mac.en.eq(1)
            for half in ("lo", "hi"):
                slot = 2 * unit + (half == "hi")
                e, j = divmod(slot, 3)
                if e < self._engines:
                    m.d.comb += [getattr(mac, f"a_{half}").eq(columns[e][j]),
                                 getattr(mac, f"b_{half}").eq(activation)]
                    products.append(getattr(mac, f"p_{half}"))
                else:
                    m.d.comb += [getattr(mac, f"a_{half}").eq(0),
                                 getattr(mac, f"b_{half}").eq(0)]

        # The multipliers' and the shifted terms' registers have no reset: for the first
        # cycles after a reset (their pipeline's depth) the row sums and the running sums
        # are held at 0 instead of taking their (in a four-state simulator: undefined)
        # outputs.
        warm = Signal(range(MAC_LATENCY["dual8x8"] + 1), init=MAC_LATENCY["dual8x8"])
        with m.If(warm != 0):
            m.d.sync += warm.eq(warm - 1)
        restart_rows = Signal()
        restart_sums = Signal()
        m.d.comb += [restart_rows.eq(row_done[2] | (warm != 0)),
                     restart_sums.eq(done | (warm != 0))]

        zbits = self.z_bits
        terms = []
        for e in range(self._engines):
            # Running row sums, restarted after each row; the complete row's second and
            # third sums wait in `later` while the first goes straight to the lanes.
            sums = []
            for j in range(3):
                z = Signal(signed(zbits), name=f"z{e}_{j}")
                total = Signal(signed(zbits), name=f"z_total{e}_{j}")
                m.d.comb += total.eq(z + products[3 * e + j])
                m.d.sync += z.eq(Mux(restart_rows, 0, total))
                sums.append(total)
            later = [Signal(signed(zbits), name=f"z_later{e}_{k}", reset_less=True)
                     for k in range(2)]
            with m.If(row_done[2]):
                m.d.sync += [later[0].eq(sums[1]), later[1].eq(sums[2])]
            with m.Elif(row_done[3]):
                m.d.sync += later[0].eq(later[1])
            # The term the lanes shift next cycle, registered (the row sums' carry chain
            # and the lanes' shifters would make one long path).
            term = Signal(signed(zbits), name=f"z_term{e}", reset_less=True)
            m.d.sync += term.eq(Mux(row_done[2], sums[0], later[0]))
            terms.append(term)

        # The lanes: each keeps its row's three codes, presents one a cycle, shifts the
        # engine's term by it into a register and adds that to its running sum.
        code_bits = config.code_bits
        width = code_bits + 2                    # present, exponent, negative
        totals = []
        for l in range(lanes):
            row = element.rows[l]
            codes = Signal(3 * width, name=f"codes{l}")
            with m.If(row_taken):
                m.d.sync += codes.eq(Cat(*(Cat(row.present[j], row.coefficients[j].exponent,
                                                row.coefficients[j].negative)
                                            for j in range(3))))
            with m.Elif(row_done[2]):
                m.d.sync += codes.eq(codes >> width)

            def cleared(c):
                """A code with an absent coefficient's sign cleared."""
                return Cat(c[:width - 1], c[width - 1] & c[0])

            # The third term's code waits here while the next row's codes may load.
            third = Signal(width, name=f"third{l}")
            with m.If(row_done[3]):
                m.d.sync += third.eq(cleared(codes[width:2 * width]))
            # The code of the term shifted next cycle.
            code = Signal(width, name=f"code{l}")
            m.d.sync += code.eq(Mux(row_done[2] | row_done[3], cleared(codes[:width]),
                                    Mux(row_done[4], third, 0)))
            present, exponent, negative = code[0], code[1:1 + code_bits], code[1 + code_bits]
            shifted, ones = self._shift(m, terms[l // self._basis_group], present, exponent,
                                        negative, l)
            running = Signal(signed(config.accumulator_bits), name=f"running{l}")
            total = Signal(signed(config.accumulator_bits), name=f"total{l}")
            # running + shifted + ones as one carry chain, `ones` its carry in (a sum of
            # three operands would be mapped as a carry-save tree).
            extend = config.accumulator_bits - self.term_bits
            m.d.comb += total.eq((Cat(ones, running)
                                  + Cat(ones, shifted, shifted[-1].replicate(extend)))[1:])
            m.d.sync += running.eq(Mux(restart_sums, 0, total))
            totals.append(total)

        # The finished sums are captured and leave one a cycle, lane 0 first.
        emit_sums(m, self.sums, totals, done, width=config.accumulator_bits)
        return m

    def _shift(self, m, value, present, exponent, negative, lane):
        """``value << exponent`` masked by ``present`` and one's complemented if
        ``negative`` (0 when ``present`` is), into a register, and the registered ``1`` that completes the
        negation (added as a carry). A logarithmic shifter, smallest step first; its
        first stage also masks, its last also complements (one LUT4 a bit and stage).
        """
        bits = self.term_bits
        value = Mux(present, value, 0)
        stages = exponent.shape().width
        for stage in range(stages):
            width = min(bits, value.shape().width + (1 << stage))
            step = Signal(signed(width), name=f"shift{lane}_{stage}")
            shifted = Mux(exponent[stage], value << (1 << stage), value)
            if stage == stages - 1:
                shifted = shifted ^ negative.replicate(width).as_signed()
            m.d.comb += step.eq(shifted)
            value = step
        if stages == 0:
            value = value ^ negative.replicate(value.shape().width).as_signed()
        term = Signal(signed(bits), name=f"term{lane}", reset_less=True)
        ones = Signal(name=f"ones{lane}", reset_less=True)
        m.d.sync += [term.eq(value), ones.eq(negative)]
        return term, ones
