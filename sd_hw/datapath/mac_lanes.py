"""MacLaneArray: lanes that rebuild one weight element per cycle and multiply-accumulate it."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ParameterError, check_range
from ..primitives import Mac16, RegisteredReadPort
from ..primitives._lowering import checked_lowering
from ..primitives.mac16 import LATENCY as MAC_LATENCY
from .layouts import row_layout


__all__ = ["MacLaneArray", "MAC_WEIGHT_BITS", "emit_sums", "element_layout", "lane_sum_layout",
           "basis_column_layout", "basis_read_layout"]

#: Signed width of a rebuilt weight as the multipliers take it (an iCE40 SB_MAC16 in
#: 16x16 mode). The compiler refuses a layer with a rebuilt weight outside this range.
MAC_WEIGHT_BITS = 16


def basis_column_layout(config):
    """Column ``c`` of a 3x3 basis, ``B[0][c], B[1][c], B[2][c]``: the entries that
    coefficient ``j`` scales for activation ``c`` of a row. A lane's basis memory holds
    one such word per (basis, column), at ``4 * basis + column``."""
    return data.ArrayLayout(signed(config.basis_bits), 3)


def element_layout(config, lanes):
    """One activation element and what every lane needs to use it.

    ``activation`` is element ``column`` (0..2) of the activation row that Ce row
    ``rows[l]`` of lane ``l`` multiplies. ``first`` starts a new sum in every lane,
    ``last`` ends it: the sums are emitted once that element has been accumulated.
    ``row_last``: the element is its Ce row's last (the factored lanes apply a row once
    it is complete; the rebuilding lanes ignore it); an element with ``last`` has it too.
    """
    return data.StructLayout({
        "activation": signed(config.activation_bits),
        "column": unsigned(2),
        "rows": data.ArrayLayout(row_layout(config), lanes),
        "first": 1,
        "last": 1,
        "row_last": 1,
    })


def basis_read_layout(basis_addr_width):
    """A read of every lane's basis memory: column ``column`` of basis ``basis``."""
    return data.StructLayout({"en": 1, "basis": unsigned(basis_addr_width),
                              "column": unsigned(2)})


def lane_sum_layout(config, lanes):
    """One lane's finished sum, when ``valid``."""
    return data.StructLayout({
        "valid": 1,
        "lane": unsigned(max(1, (lanes - 1).bit_length())),
        "value": signed(config.accumulator_bits),
    })


def emit_sums(m, sums, values, done, *, width):
    """Capture ``values`` (one per lane) in the cycle ``done`` is set, then put them on
    ``sums`` (a :func:`lane_sum_layout` port) one a cycle, lane 0 first, without
    back-pressure: the lane arrays' capture chain."""
    lanes = len(values)
    chain = [Signal(signed(width), name=f"sum{l}") for l in range(lanes)]
    remaining = Signal(range(lanes + 1))
    with m.If(done):
        m.d.sync += [chain[l].eq(values[l]) for l in range(lanes)]
        m.d.sync += remaining.eq(lanes)
    with m.Elif(remaining != 0):
        m.d.sync += [chain[l].eq(chain[l + 1]) for l in range(lanes - 1)]
        m.d.sync += remaining.eq(remaining - 1)
    m.d.comb += [sums.valid.eq(remaining != 0),
                 sums.value.eq(chain[0]),
                 sums.lane.eq(lanes - remaining)]


class MacLaneArray(wiring.Component):
    """``lanes`` output channels working in lock-step on one activation element a cycle.

    Every cycle in which ``elements`` transfers, each lane ``l`` rebuilds the one
    weight that element ``column`` of its Ce row needs,

        w = sum_j present[j] * (-1)**negative[j] * (B_l[j][column] << exponent[j])

    (``B_l`` the lane's basis, ``rows[l]`` the lane's Ce row record; its ``last`` bit
    and the element's ``row_last`` are ignored here) and multiply-accumulates
    ``w * activation``. The basis column
    comes from the last read of ``basis_read`` before the element is taken: the
    producer reads the next element's column one cycle ahead (or earlier, with no
    read in between), and the data holds while ``en`` is low. The weight is taken as a :data:`MAC_WEIGHT_BITS`-bit signed
    number, the width of an iCE40 DSP's multiplier input: the compiler guarantees
    that every rebuilt weight fits. The element with ``first`` set starts each
    lane's sum afresh; :attr:`latency` cycles after the element with ``last``
    set was taken, the ``lanes`` sums are captured and then leave on ``sums``, lane
    0 first, one per cycle, while the lanes go on with the next sums.

    An element with ``last`` set is taken only when at least ``lanes`` cycles have
    passed since the previous one, so that the captured sums have left by the time
    the next are captured: a sum of fewer than ``lanes`` elements stalls the
    stream for the difference. An element with ``first`` set is not taken in the
    cycle right after an element was taken (the lanes keep their sums in the DSPs'
    accumulators, :class:`~sd_hw.primitives.Mac16` ``acc16x16``, and starting a sum
    drops the product slot before it): a bubble of one cycle when sums run back to
    back. Other elements are always taken.

    The weight is rebuilt over two cycles (the shifted terms are registered), so
    :attr:`latency` is 6: one cycle of rebuild, four of multiply-accumulate, one of
    capture.

    Each lane's basis memory (``basis_depth`` bases of four words, one per column
    and one unused, :func:`basis_column_layout`) is written through
    ``basis_write``: ``lane`` selects the memory, ``addr`` is ``4 * basis + column``.
    The host writes it while the array is idle.

    Parameters
    ----------
    config : :class:`~sd_hw.config.AcceleratorConfig`
        Widths and the lane count (``config.lanes``).
    basis_depth : int
        Bases each lane's basis memory holds (1..16384).
    lowering : str
        Of the lanes' :class:`~sd_hw.primitives.Mac16` units: ``"auto"`` (SB_MAC16 on
        an iCE40 UltraPlus platform), ``"ice40"`` or ``"generic"``.

    Members
    -------
    elements : ``In(stream.Signature(element_layout(config, lanes)))``
    basis_read : ``In(basis_read_layout(basis_addr_width))``
    sums : ``Out(lane_sum_layout(config, lanes))``
        One lane's sum in each cycle ``valid`` is set; there is no back-pressure:
        the consumer takes one sum a cycle.
    basis_write : ``In(...)``
        ``en``, ``lane``, ``addr``, ``data`` (a :func:`basis_column_layout`).
    """

    def __init__(self, config, *, basis_depth, lowering="auto"):
        check_range("basis_depth", basis_depth, 1, 16384)
        self._lowering = checked_lowering(lowering)
        if config.accumulator_bits > 32:
            raise ParameterError(
                f"parameter 'accumulator_bits' is {config.accumulator_bits}; the lanes' "
                f"multiply-accumulate units sum 32 bits: use at most 32")
        if config.activation_bits + MAC_WEIGHT_BITS + 1 > config.accumulator_bits:
            raise ParameterError(
                f"parameter 'accumulator_bits' is {config.accumulator_bits}, but a "
                f"{MAC_WEIGHT_BITS}-bit weight times a {config.activation_bits}-bit activation "
                f"needs {MAC_WEIGHT_BITS + config.activation_bits} bits and a sign of headroom;"
                f" use at least {config.activation_bits + MAC_WEIGHT_BITS + 1}")
        self._config = config
        self._lanes = config.lanes
        self._basis_depth = basis_depth
        self._basis_addr_width = max(1, (basis_depth - 1).bit_length())
        lanes = self._lanes
        super().__init__({
            "elements": In(stream.Signature(element_layout(config, lanes))),
            "basis_read": In(basis_read_layout(self._basis_addr_width)),
            "sums": Out(lane_sum_layout(config, lanes)),
            "basis_write": In(data.StructLayout({
                "en": 1,
                "lane": unsigned(max(1, (lanes - 1).bit_length())),
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
    def basis_depth(self):
        return self._basis_depth

    @property
    def latency(self):
        """Cycles from taking an element with ``last`` set to lane 0's sum on ``sums``:
        the weight rebuild's register, the multiply-accumulate
        (:attr:`Mac16.latency` of ``acc16x16``) and the capture."""
        return 1 + MAC_LATENCY["acc16x16"] + 1

    def elaborate(self, platform):
        m = Module()
        config = self._config
        lanes = self._lanes
        elements = self.elements
        element = elements.payload

        # Capture spacing: a `last` element needs `lanes` cycles since the previous one.
        # A `first` element is not taken right after another element: starting a sum
        # drops the product slot before it (Mac16 acc16x16), which must be empty.
        # `ready` is one look-up table of flip-flops (`gap == 0` is kept as a flag): the
        # producer's whole issue logic hangs on it.
        gap = Signal(range(lanes))
        gap_zero = Signal(init=1)
        took = Signal()
        taking = elements.valid & elements.ready
        m.d.comb += elements.ready.eq((~element.last | gap_zero) & ~(element.first & took))
        m.d.sync += took.eq(taking)
        with m.If(taking & element.last):
            m.d.sync += [gap.eq(lanes - 1), gap_zero.eq(lanes == 1)]
        with m.Elif(~gap_zero):
            m.d.sync += [gap.eq(gap - 1), gap_zero.eq(gap == 1)]

        # The weight is rebuilt in two cycles, the shifted terms registered in between;
        # the activation (0 in a cycle without an element) and the start of a sum wait
        # one cycle with it, then go into the lanes' multiply-accumulate, whose sum
        # includes them `Mac16.latency` cycles later.
        activation = Signal(signed(config.activation_bits), reset_less=True)
        clear = Signal()
        m.d.sync += [activation.eq(Mux(taking, element.activation, 0)),
                     clear.eq(taking & element.first)]
        macs = [Mac16(mode="acc16x16", lowering=self._lowering) for _ in range(lanes)]
        done = taking & element.last
        for _ in range(1 + MAC_LATENCY["acc16x16"]):
            delayed = Signal()
            m.d.sync += delayed.eq(done)
            done = delayed

        write = self.basis_write
        read = self.basis_read
        for l, mac in enumerate(macs):
            m.submodules[f"mac{l}"] = mac
            # The host writes a basis memory only while the array is idle, so a read and
            # a write of the same word never meet: `no_rw_check` lets yosys drop the
            # read-first emulation (flip-flops and multiplexers) it would otherwise add
            # around an iCE40 block RAM. It acts where yosys merges a register into a
            # read port, hence RegisteredReadPort.
            bases = m.submodules[f"bases{l}"] = memory.Memory(
                shape=basis_column_layout(config), depth=4 * self._basis_depth, init=[],
                attrs={"no_rw_check": 1})
            write_port = bases.write_port()
            m.d.comb += [write_port.addr.eq(write.addr), write_port.data.eq(write.data),
                         write_port.en.eq(write.en & (write.lane == l))]
            read_port = RegisteredReadPort(m, bases, name=f"column{l}", reset_less=True)
            m.d.comb += [read_port.addr.eq(read.basis * 4 + read.column),
                         read_port.en.eq(read.en)]
            m.d.comb += [mac.a.eq(self._rebuild(m, element.rows[l], read_port.data, l)),
                         mac.b.eq(activation),
                         mac.clear.eq(clear),
                         mac.en.eq(1)]
        emit_sums(m, self.sums, [mac.acc for mac in macs], done,
                  width=config.accumulator_bits)
        return m

    def _rebuild(self, m, row, column, lane):
        """The weight of one lane for one activation, one cycle after the element.

        Everything is computed modulo ``2**MAC_WEIGHT_BITS`` (the compiler guarantees
        that the weight fits). First cycle, per term: a logarithmic shifter, smallest
        step first (the fewest bits to mux), whose first stage also masks an absent
        coefficient and whose last also complements a negative one (one LUT4 a bit and
        stage), into a register. The third term's basis entry is negated before the
        shift instead (``-B = ~(B - 1)``: one carry chain that subtracts ``negative``
        and complements with it). Second cycle: two carry chains add the three terms,
        each taking one of the other terms' ones (a negative term is its one's
        complement plus one) as its carry in; the sum goes to the DSP's input register.
        """
        bits = MAC_WEIGHT_BITS
        terms = []
        for j in range(3):
            coefficient = row.coefficients[j]
            negative = coefficient.negative
            value = column[j]
            if j == 2:
                wide = value.shape().width + 1
                negated = Signal(signed(wide), name=f"negated{lane}")
                m.d.comb += negated.eq((value + Mux(negative, -1, 0))
                                       ^ negative.replicate(wide).as_signed())
                value = negated
            exponent = coefficient.exponent
            stages = exponent.shape().width
            value = Mux(row.present[j], value, 0)
            for stage in range(stages):
                width = min(bits, value.shape().width + (1 << stage))
                step = Signal(signed(width), name=f"shift{lane}_{j}_{stage}")
                shifted = Mux(exponent[stage], value << (1 << stage), value)
                if stage == stages - 1 and j != 2:
                    shifted = shifted ^ negative.replicate(width).as_signed()
                m.d.comb += step.eq(shifted)
                value = step
            term = Signal(signed(bits), name=f"term{lane}_{j}", reset_less=True)
            m.d.sync += term.eq(value)
            terms.append(term)
        ones = Signal(2, name=f"ones{lane}", reset_less=True)
        m.d.sync += ones.eq(Cat(row.coefficients[0].negative, row.coefficients[1].negative))
        # `keep`: yosys would otherwise merge the two additions into one carry-save tree.
        partial = Signal(bits, name=f"partial{lane}", attrs={"keep": 1})
        m.d.comb += partial.eq(terms[0] + terms[1] + ones[0])
        return (partial + terms[2] + ones[1])[:bits].as_signed()
