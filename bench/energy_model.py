"""An energy estimate of one inference: access and operation counts times a cost table.

The costs are Horowitz's 45 nm, 0.9 V figures ("Computing's energy problem
(and what we can do about it)", ISSCC 2014, the table most accelerator
papers quote). They are ASIC numbers, not FPGA ones: the benchmark uses
them only for ratios between two designs measured the same way, never as
a claim of absolute energy. Widths between the table's points scale as
the table itself does: an adder linearly between its 8- and 32-bit
costs, a multiplier with the product of its operand widths (8x8 is
0.2 pJ, 32x32 3.1 pJ), an SRAM read or write with the bits it moves
(10 pJ per 64 bits from an 8 KB array).
"""

from dataclasses import dataclass

__all__ = ["COSTS", "SOURCE", "EnergyEstimate", "add_pj", "multiply_pj", "sram_pj",
           "estimate", "dram_pj"]

SOURCE = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
          "ISSCC 2014: 45 nm, 0.9 V")

#: The table's points, in pJ.
COSTS = {
    "8-bit add": 0.03,
    "32-bit add": 0.1,
    "8-bit multiply": 0.2,
    "32-bit multiply": 3.1,
    "8 KB SRAM, 64-bit read": 10.0,
    "DRAM, 64-bit access": 2000.0,  # the table gives 1.3-2.6 nJ; the midpoint
}


def add_pj(bits):
    """One ``bits``-wide addition, linear between the 8- and 32-bit points."""
    low, high = COSTS["8-bit add"], COSTS["32-bit add"]
    return low + (bits - 8) * (high - low) / 24


def multiply_pj(a_bits, b_bits):
    """One ``a_bits`` x ``b_bits`` multiplication, scaled by the operand-width product."""
    return COSTS["8-bit multiply"] * a_bits * b_bits / 64


def sram_pj(bits):
    """One on-chip memory access of ``bits`` bits."""
    return COSTS["8 KB SRAM, 64-bit read"] * bits / 64


def dram_pj(bits):
    """Moving ``bits`` bits from off-chip DRAM."""
    return COSTS["DRAM, 64-bit access"] * bits / 64


@dataclass(frozen=True)
class EnergyEstimate:
    """pJ of one inference, by what spends it."""

    parts: dict

    @property
    def total(self):
        return sum(self.parts.values())


def estimate(counters, *, lanes, weight_word_bits, basis_word_bits, host_word_bits,
             activation_bits, weight_bits, accumulator_bits, activation_copies, shift_adds):
    """The :class:`EnergyEstimate` of one run from its performance counters.

    Every issued row costs, per lane, three ``weight_bits`` x
    ``activation_bits`` multiplications and three accumulator additions;
    every shift-add of a weight rebuild one ``weight_bits`` addition; an
    activation write goes to all ``activation_copies`` copies of the
    activation memory.
    """
    macs = 3 * lanes * counters["rows"]
    return EnergyEstimate({
        "weight memory": counters["weight_reads"] * sram_pj(weight_word_bits),
        "basis memory": counters["basis_reads"] * sram_pj(basis_word_bits),
        "index, parameter, program memories": (counters["index_reads"] + counters["param_reads"]
                                               + counters["program_reads"])
        * sram_pj(host_word_bits),
        "activation memory": (counters["activation_reads"]
                              + activation_copies * counters["activation_writes"])
        * sram_pj(activation_bits),
        "output memory": counters["output_writes"] * sram_pj(host_word_bits),
        "multiplications": macs * multiply_pj(weight_bits, activation_bits),
        "accumulations": macs * add_pj(accumulator_bits),
        "weight rebuild shift-adds": shift_adds * add_pj(weight_bits),
    })
