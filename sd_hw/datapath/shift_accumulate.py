"""The SmartExchange rebuild engine: a double-banked 3x3 basis and a shift-and-add unit.

:class:`ShiftAccumulatePE` serves one output channel. In the ``rebuild``
dataflow it turns decoded Ce rows into integer weight rows; in the
``factored`` dataflow it shift-accumulates the basis products that the
:class:`~sd_hw.datapath.basis_engine.BasisEngine` computes with the basis it
lends out. :class:`ShiftAccumulateArray` puts ``config.lanes`` of them side by
side. docs/blocks/shift-accumulate-pe.md describes both.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig, signed_bits
from ..errors import ParameterError
from .layouts import (basis_layout, block_end_layout, row_layout, vector3_layout,
                      weight_row_layout)


__all__ = ["ShiftAccumulatePE", "ShiftAccumulateArray"]


def checked_config(config):
    """Return ``config`` if it is an :class:`AcceleratorConfig`, else raise."""
    if not isinstance(config, AcceleratorConfig):
        raise ParameterError(f"parameter 'config' must be an AcceleratorConfig, "
                             f"got {config!r}")
    return config


def _pe_members(config):
    members = {
        "basis": In(stream.Signature(basis_layout(config))),
        "rows": In(stream.Signature(row_layout(config))),
    }
    if config.dataflow == "rebuild":
        members["weights"] = Out(stream.Signature(weight_row_layout(config)))
    else:
        members.update({
            "active_basis": Out(stream.Signature(basis_layout(config))),
            "products": In(stream.Signature(vector3_layout(config.basis_product_bits))),
            "block_end": In(stream.Signature(block_end_layout())),
            "sums": Out(stream.Signature(signed(config.accumulator_bits))),
        })
    return members


def _pe_latency(config):
    return 2 if config.dataflow == "rebuild" else 3


class ShiftAccumulatePE(wiring.Component):
    """Rebuild engine of one output channel.

    Parameters
    ----------
    config : :class:`~sd_hw.config.AcceleratorConfig`
        ``dataflow`` selects the ports below; every width derives from it.

    Basis banks
    -----------
    Two 3x3 register banks, active and shadow. ``basis`` loads the shadow
    bank (it is ready while the shadow bank is empty), so the next block's
    basis can arrive while the active bank works. The active bank is
    released after its block; the shadow bank's basis is then copied into
    it (in the same cycle if it is already loaded; a basis arriving in that
    cycle goes straight to the active bank), and serves the next block.
    Until a basis for the next block has arrived, the PE stalls: in
    ``rebuild`` the first row of the block is not taken (``rows.ready``
    low); in ``factored`` ``active_basis`` is not valid. The first block
    waits for the first basis the same way.

    Members (``dataflow="rebuild"``)
    --------------------------------
    basis : ``In(stream.Signature(basis_layout(config)))``
        One basis per block, in block order.
    rows : ``In(stream.Signature(row_layout(config)))``
        Decoded Ce rows; ``last`` ends a block and releases its basis.
    weights : ``Out(stream.Signature(weight_row_layout(config)))``
        One rebuilt integer weight row per Ce row,
        ``w[c] = sum_j present_j * (-1)**negative_j * (B[j][c] << exponent_j)``,
        with the row's ``last``. A zero row (``present == 0``) gives zeros:
        it is passed on, not dropped, so that lanes sharing one activation
        stream stay in step.

    Members (``dataflow="factored"``)
    ---------------------------------
    basis, rows
        As above, but ``last`` only ends the accumulation block.
    active_basis : ``Out(stream.Signature(basis_layout(config)))``
        The active bank, lent to the basis engine (which multiplies with it):
        valid while the bank holds the current block's basis, payload stable
        meanwhile. The engine takes it (``ready``) with the block's last
        activation row; that transfer releases the bank. The release must
        come from the activation side, because the engine runs ahead of this
        PE by its pipeline depth.
    products : ``In(stream.Signature(vector3_layout(config.basis_product_bits)))``
        ``z[j] = B[j] . x`` for the Ce row taken with it; ``rows`` and
        ``products`` are transferred together, one pair per cycle.
    block_end : ``In(stream.Signature(block_end_layout()))``
        One token per block, taken together with the block's last row. With
        ``flush`` set the accumulator, this block included, is sent on
        ``sums`` and cleared; with ``flush`` clear it carries on into the
        next block (a channel's sum spans several blocks).
    sums : ``Out(stream.Signature(signed(config.accumulator_bits)))``
        ``sum over rows of sum_j present_j * (-1)**negative_j * (z_j << exponent_j)``
        since the previous flush. Bias is not added here.

    Widths and bounds
    -----------------
    With ``b = basis_bits``, ``a = activation_bits``, ``K = max_shift``:
    a shifted basis entry is at most ``2**(b-1+K)`` in magnitude, a rebuilt
    weight at most ``3 * 2**(b-1+K)`` (``weight_bits``); ``|z_j| <= 3 *
    2**(b+a-2)`` (``basis_product_bits``), shifted at most ``3 * 2**(b+a-2+K)``
    (``shifted_product_bits``) and one row's sum at most ``9 * 2**(b+a-2+K)``
    (``product_bits + 2``, which the configuration requires
    ``accumulator_bits`` to hold). Every register below the accumulator is as
    wide as its bound, so nothing there can overflow. The accumulator adds
    modulo ``2**accumulator_bits``: the emitted sum is exact whenever the
    channel's true sum fits, even if a partial sum did not, and the
    integeriser refuses any layer whose sum might not fit
    (docs/number-formats.md).

    Timing
    ------
    One row per cycle, block boundaries included when the next basis has
    arrived in time. :attr:`latency` is the number of cycles from the
    cycle a row is transferred to the cycle its result is first valid
    (``weights`` in ``rebuild``; ``sums``, for a flushed block's last row, in
    ``factored``), without back-pressure.
    """

    def __init__(self, config):
        self._config = checked_config(config)
        super().__init__(_pe_members(config))

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        """Register stages from input to output: 2 (``rebuild``) or 3 (``factored``)."""
        return _pe_latency(self._config)

    def elaborate(self, platform):
        m = Module()
        config = self._config

        # The active bank is a register of its own (no multiplexer between two banks in
        # front of the shift-and-add unit); a swap copies the shadow bank into it.
        active = Signal(basis_layout(config), reset_less=True)
        shadow = Signal(basis_layout(config), reset_less=True)
        active_full = Signal()  # the active bank holds the current block's basis
        shadow_full = Signal()  # the shadow bank holds the next block's basis
        release = Signal()      # the active bank's block is done

        # A basis goes to the shadow bank, or straight into the active bank when that is
        # free (or freed in this cycle) and the shadow bank is empty.
        load = Signal()
        m.d.comb += [self.basis.ready.eq(~shadow_full),
                     load.eq(self.basis.valid & self.basis.ready)]
        with m.If(release | ~active_full):
            with m.If(shadow_full):
                m.d.sync += [active.eq(shadow), active_full.eq(1), shadow_full.eq(0)]
            with m.Elif(load):
                m.d.sync += [active.eq(self.basis.payload), active_full.eq(1)]
            with m.Else():
                m.d.sync += active_full.eq(0)
        with m.Elif(load):
            m.d.sync += [shadow.eq(self.basis.payload), shadow_full.eq(1)]

        if config.dataflow == "rebuild":
            self._elaborate_rebuild(m, active, active_full, release)
        else:
            self._elaborate_factored(m, active, active_full, release)
        return m

    def _elaborate_rebuild(self, m, active, active_full, release):
        config = self._config
        row = self.rows.payload
        term_bits = signed_bits(2 ** (config.basis_bits - 1 + config.max_shift))

        # Stage 1: the nine shifted basis entries, negated ones as their ones' complement
        # (``-x == ~x + 1``); the row's count of negated entries adds the missing ones.
        terms = [[Signal(signed(term_bits), name=f"term_{j}_{c}", reset_less=True)
                  for c in range(3)] for j in range(3)]
        negations = Signal(range(4), reset_less=True)
        terms_valid = Signal()
        terms_last = Signal()
        # Stage 2: their column sums, the output register.
        out = self.weights
        out_ready = ~out.valid | out.ready
        terms_ready = ~terms_valid | out_ready

        m.d.comb += self.rows.ready.eq(terms_ready & active_full)
        take = self.rows.valid & self.rows.ready
        m.d.comb += release.eq(take & row.last)

        with m.If(terms_ready):
            m.d.sync += terms_valid.eq(take)
        with m.If(take):
            negated = [row.present[j] & row.coefficients[j].negative for j in range(3)]
            m.d.sync += [terms_last.eq(row.last), negations.eq(sum(negated))]
            for j in range(3):
                code = row.coefficients[j]
                for c in range(3):
                    shifted = active[j][c] << code.exponent
                    m.d.sync += terms[j][c].eq(
                        Mux(row.present[j], Mux(code.negative, ~shifted, shifted), 0))

        with m.If(out_ready):
            m.d.sync += out.valid.eq(terms_valid)
        with m.If(out_ready & terms_valid):
            m.d.sync += out.payload.last.eq(terms_last)
            for c in range(3):
                m.d.sync += out.payload.row[c].eq(terms[0][c] + terms[1][c] + terms[2][c]
                                                  + negations)

    def _elaborate_factored(self, m, active, active_full, release):
        config = self._config
        row = self.rows.payload

        m.d.comb += [
            self.active_basis.valid.eq(active_full),
            self.active_basis.payload.eq(active),
            release.eq(self.active_basis.valid & self.active_basis.ready),
        ]

        # Stage 1: the three signed, shifted basis products.
        terms = [Signal(signed(config.shifted_product_bits), name=f"term_{j}", reset_less=True)
                 for j in range(3)]
        terms_valid = Signal()
        terms_flush = Signal()
        # Stage 2: the row's sum.
        row_sum = Signal(signed(config.shifted_product_bits + 2), reset_less=True)
        sum_valid = Signal()
        sum_flush = Signal()
        # Stage 3: the accumulator and the output register.
        acc = Signal(signed(config.accumulator_bits))
        total = Signal(signed(config.accumulator_bits))
        out = self.sums
        acc_ready = ~sum_flush | ~out.valid | out.ready
        sum_ready = ~sum_valid | acc_ready
        terms_ready = ~terms_valid | sum_ready

        take = Signal()
        m.d.comb += [
            take.eq(terms_ready & self.rows.valid & self.products.valid
                    & (~row.last | self.block_end.valid)),
            self.rows.ready.eq(take),
            self.products.ready.eq(take),
            self.block_end.ready.eq(take & row.last),
        ]

        with m.If(terms_ready):
            m.d.sync += terms_valid.eq(take)
        with m.If(take):
            m.d.sync += terms_flush.eq(row.last & self.block_end.payload.flush)
            for j in range(3):
                code = row.coefficients[j]
                shifted = self.products.payload[j] << code.exponent
                m.d.sync += terms[j].eq(
                    Mux(row.present[j], Mux(code.negative, -shifted, shifted), 0))

        with m.If(sum_ready):
            m.d.sync += sum_valid.eq(terms_valid)
        with m.If(sum_ready & terms_valid):
            m.d.sync += [row_sum.eq(terms[0] + terms[1] + terms[2]),
                         sum_flush.eq(terms_flush)]

        m.d.comb += total.eq(acc + row_sum)
        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(sum_valid & acc_ready):
            with m.If(sum_flush):
                m.d.sync += [out.payload.eq(total), out.valid.eq(1), acc.eq(0)]
            with m.Else():
                m.d.sync += acc.eq(total)


class ShiftAccumulateArray(wiring.Component):
    """``config.lanes`` :class:`ShiftAccumulatePE` side by side, one output channel each.

    Every member of :class:`ShiftAccumulatePE` becomes an array of
    ``config.lanes`` streams of the same name; lane ``i`` is PE ``i``. The
    lanes share nothing here: the activations they have in common enter the
    :class:`~sd_hw.datapath.basis_engine.BasisEngine`, whose per-lane ports
    have the same names and shapes, so ``wiring.connect`` joins the two lane
    by lane. :attr:`latency` is the PE's.
    """

    def __init__(self, config):
        self._config = checked_config(config)
        super().__init__({name: member.array(config.lanes)
                          for name, member in _pe_members(config).items()})

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        return _pe_latency(self._config)

    def elaborate(self, platform):
        m = Module()
        for lane in range(self._config.lanes):
            pe = m.submodules[f"pe{lane}"] = ShiftAccumulatePE(self._config)
            for name in pe.signature.members:
                wiring.connect(m, wiring.flipped(getattr(self, name)[lane]), getattr(pe, name))
        return m
