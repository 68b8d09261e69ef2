"""The multiplier array shared by the lanes of the accelerator.

docs/blocks/basis-engine.md describes it.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import signed_bits
from .layouts import (activation_row_layout, basis_layout, block_end_layout,
                      vector3_layout, weight_row_layout)
from .shift_accumulate import checked_config


__all__ = ["BasisEngine"]


class BasisEngine(wiring.Component):
    """``config.lanes`` multiplier lanes fed by one activation stream.

    Each activation row goes to every lane in the same cycle, so the lanes
    work in lock-step: a row is taken only when every lane has its operand,
    and the pipeline holds while any lane's output is full. Lane ``i``'s
    ports are element ``i`` of an array of streams, named and shaped like
    those of :class:`~sd_hw.datapath.shift_accumulate.ShiftAccumulateArray`.

    The multipliers are plain ``a * b`` of signed registers whose products
    are registered again, the form yosys maps onto SB_MAC16 (iCE40, with
    ``synth -dsp``) and MULT18X18D (ECP5).

    Parameters
    ----------
    config : :class:`~sd_hw.config.AcceleratorConfig`
        ``dataflow`` selects the ports below; every width derives from it.

    Members (``dataflow="rebuild"``: multiply-accumulate)
    -----------------------------------------------------
    activations : ``In(stream.Signature(vector3_layout(config.activation_bits)))``
        One activation row per weight row.
    weights : ``In(stream.Signature(weight_row_layout(config))).array(lanes)``
        Rebuilt weight rows from the PEs; ``last`` ends a block.
    block_end : ``In(stream.Signature(block_end_layout())).array(lanes)``
        One token per block, taken together with the lane's last weight row
        of the block: ``flush`` sends the accumulator (this block included)
        on ``sums`` and clears it.
    sums : ``Out(stream.Signature(signed(config.accumulator_bits))).array(lanes)``
        ``sum of w[c] * x[c]`` over the rows since the previous flush. Bias
        is not added here.

    Members (``dataflow="factored"``: basis products)
    -------------------------------------------------
    activations : ``In(stream.Signature(activation_row_layout(config)))``
        One activation row per Ce row; ``last`` marks a block's last row.
    active_basis : ``In(stream.Signature(basis_layout(config))).array(lanes)``
        Each PE's active basis bank. The engine reads it with every row and
        takes it (``ready``) with the block's last row, which lets the PE
        switch to its next basis.
    products : ``Out(stream.Signature(vector3_layout(config.basis_product_bits))).array(lanes)``
        ``z[j] = sum_c B[j][c] * x[c]``, one vector per activation row, for
        the lane's PE.

    Widths and bounds
    -----------------
    With ``b = basis_bits``, ``a = activation_bits``, ``K = max_shift``:
    ``|w| <= 3 * 2**(b-1+K)`` (``weight_bits``), so a product fits
    ``product_bits`` and a row's three products ``product_bits + 2``, which
    the configuration requires ``accumulator_bits`` to hold. ``|B * x| <=
    2**(b+a-2)`` fits ``b + a`` bits and ``|z| <= 3 * 2**(b+a-2)`` fits
    ``basis_product_bits``. The accumulator adds modulo
    ``2**accumulator_bits``: a sum is exact whenever its true value fits,
    which the integeriser guarantees (docs/number-formats.md).

    Timing
    ------
    One row per cycle. :attr:`latency` is the number of cycles from the
    cycle a row is transferred to the cycle its result is first valid (for
    ``rebuild``, the sum of a flushed block's last row), without
    back-pressure: 4 (``rebuild``: input registers, products, row sum,
    accumulator) or 3 (``factored``: input registers, products, row sums).
    """

    def __init__(self, config):
        self._config = checked_config(config)
        lanes = config.lanes
        if config.dataflow == "rebuild":
            members = {
                "activations": In(stream.Signature(vector3_layout(config.activation_bits))),
                "weights": In(stream.Signature(weight_row_layout(config))).array(lanes),
                "block_end": In(stream.Signature(block_end_layout())).array(lanes),
                "sums": Out(stream.Signature(signed(config.accumulator_bits))).array(lanes),
            }
        else:
            members = {
                "activations": In(stream.Signature(activation_row_layout(config))),
                "active_basis": In(stream.Signature(basis_layout(config))).array(lanes),
                "products": Out(stream.Signature(
                    vector3_layout(config.basis_product_bits))).array(lanes),
            }
        super().__init__(members)

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        return 4 if self._config.dataflow == "rebuild" else 3

    def elaborate(self, platform):
        m = Module()
        if self._config.dataflow == "rebuild":
            self._elaborate_rebuild(m)
        else:
            self._elaborate_factored(m)
        return m

    def _elaborate_rebuild(self, m):
        config = self._config
        lanes = range(config.lanes)
        sum_bits = config.product_bits + 2

        # Stage 1: input registers.
        x = [Signal(signed(config.activation_bits), name=f"x_{c}", reset_less=True)
             for c in range(3)]
        w = [[Signal(signed(config.weight_bits), name=f"w_{i}_{c}", reset_less=True)
              for c in range(3)] for i in lanes]
        in_flush = [Signal(name=f"in_flush_{i}") for i in lanes]
        in_valid = Signal()
        # Stage 2: products.
        p = [[Signal(signed(config.product_bits), name=f"p_{i}_{c}", reset_less=True)
              for c in range(3)] for i in lanes]
        p_flush = [Signal(name=f"p_flush_{i}") for i in lanes]
        p_valid = Signal()
        # Stage 3: row sums.
        row_sum = [Signal(signed(sum_bits), name=f"row_sum_{i}", reset_less=True)
                   for i in lanes]
        sum_flush = [Signal(name=f"sum_flush_{i}") for i in lanes]
        sum_valid = Signal()
        # Stage 4: accumulators and output registers.
        acc = [Signal(signed(config.accumulator_bits), name=f"acc_{i}") for i in lanes]
        total = [Signal(signed(config.accumulator_bits), name=f"total_{i}") for i in lanes]

        acc_ready = 1
        for i in lanes:
            acc_ready &= ~sum_flush[i] | ~self.sums[i].valid | self.sums[i].ready
        sum_ready = ~sum_valid | acc_ready
        p_ready = ~p_valid | sum_ready
        in_ready = ~in_valid | p_ready

        take = Signal()
        operands = self.activations.valid
        for i in lanes:
            operands &= self.weights[i].valid & (~self.weights[i].payload.last
                                                 | self.block_end[i].valid)
        m.d.comb += [take.eq(in_ready & operands), self.activations.ready.eq(take)]
        for i in lanes:
            m.d.comb += [self.weights[i].ready.eq(take),
                         self.block_end[i].ready.eq(take & self.weights[i].payload.last)]

        with m.If(in_ready):
            m.d.sync += in_valid.eq(take)
        with m.If(take):
            m.d.sync += [x[c].eq(self.activations.payload[c]) for c in range(3)]
            for i in lanes:
                weights = self.weights[i].payload
                m.d.sync += [w[i][c].eq(weights.row[c]) for c in range(3)]
                m.d.sync += in_flush[i].eq(weights.last & self.block_end[i].payload.flush)

        with m.If(p_ready):
            m.d.sync += p_valid.eq(in_valid)
        with m.If(p_ready & in_valid):
            for i in lanes:
                m.d.sync += [p[i][c].eq(w[i][c] * x[c]) for c in range(3)]
                m.d.sync += p_flush[i].eq(in_flush[i])

        with m.If(sum_ready):
            m.d.sync += sum_valid.eq(p_valid)
        with m.If(sum_ready & p_valid):
            for i in lanes:
                m.d.sync += [row_sum[i].eq(p[i][0] + p[i][1] + p[i][2]),
                             sum_flush[i].eq(p_flush[i])]

        for i in lanes:
            out = self.sums[i]
            m.d.comb += total[i].eq(acc[i] + row_sum[i])
            with m.If(out.valid & out.ready):
                m.d.sync += out.valid.eq(0)
            with m.If(sum_valid & acc_ready):
                with m.If(sum_flush[i]):
                    m.d.sync += [out.payload.eq(total[i]), out.valid.eq(1), acc[i].eq(0)]
                with m.Else():
                    m.d.sync += acc[i].eq(total[i])

    def _elaborate_factored(self, m):
        config = self._config
        lanes = range(config.lanes)
        entry_bits = signed_bits(2 ** (config.basis_bits + config.activation_bits - 2))

        # Stage 1: input registers.
        x = [Signal(signed(config.activation_bits), name=f"x_{c}", reset_less=True)
             for c in range(3)]
        basis = [Signal(basis_layout(config), name=f"basis_{i}", reset_less=True)
                 for i in lanes]
        in_valid = Signal()
        # Stage 2: the nine products of each lane.
        p = [[[Signal(signed(entry_bits), name=f"p_{i}_{j}_{c}", reset_less=True)
               for c in range(3)] for j in range(3)] for i in lanes]
        p_valid = Signal()
        # Stage 3: their row sums, the output registers.
        out_ready = 1
        for i in lanes:
            out_ready &= ~self.products[i].valid | self.products[i].ready
        p_ready = ~p_valid | out_ready
        in_ready = ~in_valid | p_ready

        take = Signal()
        operands = self.activations.valid
        for i in lanes:
            operands &= self.active_basis[i].valid
        m.d.comb += [take.eq(in_ready & operands), self.activations.ready.eq(take)]
        for i in lanes:
            m.d.comb += self.active_basis[i].ready.eq(take & self.activations.payload.last)

        with m.If(in_ready):
            m.d.sync += in_valid.eq(take)
        with m.If(take):
            m.d.sync += [x[c].eq(self.activations.payload.row[c]) for c in range(3)]
            m.d.sync += [basis[i].eq(self.active_basis[i].payload) for i in lanes]

        with m.If(p_ready):
            m.d.sync += p_valid.eq(in_valid)
        with m.If(p_ready & in_valid):
            for i in lanes:
                for j in range(3):
                    m.d.sync += [p[i][j][c].eq(basis[i][j][c] * x[c]) for c in range(3)]

        for i in lanes:
            out = self.products[i]
            with m.If(out.valid & out.ready):
                m.d.sync += out.valid.eq(0)
            with m.If(out_ready & p_valid):
                m.d.sync += out.valid.eq(1)
                m.d.sync += [out.payload[j].eq(p[i][j][0] + p[i][j][1] + p[i][j][2])
                             for j in range(3)]
