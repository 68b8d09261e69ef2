"""What one inference asks of a design: operations, weight bits stored and moved, energy.

Dense-equivalent MACs come from the layer shapes alone (what the int8
network of the same shape computes, zeros included); everything else from
the compiled program, the integer network and the performance counters of
the run on the RTL (docs/core.md defines them).
"""

from math import prod

from sd_hw.core.config import BASIS_WORD_BITS, HOST_WORD_BITS
from sd_hw.datapath.layouts import DENSE_WEIGHT_BITS

import energy_model

__all__ = ["ACTIVATION_COPIES", "dense_macs", "parameters", "shift_adds", "weight_bits_stored",
           "weight_bits_moved", "inference_energy", "resources", "figures"]

#: nextpnr's bel types of each family: logic, block RAM, multipliers; and yosys' flip-flops.
_BELS = {"ice40": ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "SB_DFF"),
         "ecp5": ("TRELLIS_COMB", "DP16KD", "MULT18X18D", "TRELLIS_FF")}

#: The activation memory is kept in three identical copies, written together (docs/core.md).
ACTIVATION_COPIES = 3


def _pixels(network, index):
    spec = network.layers[index]
    return 1 if spec.kind == "linear" else prod(network.output_shape_of(index)[1:])


def dense_macs(network):
    """Multiply-accumulates of one inference of ``network`` as a dense layer-by-layer net."""
    return sum(prod(spec.weight_shape) * _pixels(network, index)
               for index, spec in enumerate(network.layers) if spec.is_compute)


def parameters(network):
    """Weights and biases of ``network``'s compute layers."""
    return sum(prod(spec.weight_shape) + spec.out_size for spec in network.compute_layers)


def shift_adds(net, lanes):
    """Shift-adds of the weight rebuilds of one inference of ``net`` on ``lanes`` lanes.

    A rebuilt weight row is the sum of its nonzero Ce coefficients' basis
    rows, each shifted: one nonzero coefficient costs three shift-adds (one
    per element of its basis row) each time its row is issued, which is
    once per output pixel for every row nonzero in some channel of its lane
    group. Dense layers rebuild nothing.
    """
    total = 0
    for index, spec in enumerate(net.network.layers):
        layer = net.layers.get(spec.name)
        if layer is None or not layer.decomposed:
            continue
        present = layer.weights.present
        nonzero = layer.weights.row_nonzero()
        for first in range(0, spec.out_size, lanes):
            live = nonzero[first:first + lanes].any(axis=0)
            coefficients = int(present[first:first + lanes][:, live].sum())
            total += 3 * _pixels(net.network, index) * coefficients
    return total


def weight_bits_stored(program):
    """Bits of the lanes' weight and basis memories that ``program`` fills."""
    config = program.config
    return config.lanes * (program.usage["weights"] * config.weight_word_bits
                           + program.usage["bases"] * BASIS_WORD_BITS)


def weight_bits_moved(counters, config):
    """Bits read from the weight and basis memories in one run."""
    return (counters["weight_reads"] * config.weight_word_bits
            + counters["basis_reads"] * BASIS_WORD_BITS)


def inference_energy(counters, config, shift_add_count):
    """:func:`energy_model.estimate` of one run on a core of ``config``.

    Multiplications are costed at the width of the weights they take: int8
    on a dense core, the rebuilt weight's width on a SmartDeal one.
    """
    datapath = config.datapath
    dense = config.weights == "dense"
    return energy_model.estimate(
        counters, lanes=config.lanes, weight_word_bits=config.weight_word_bits,
        basis_word_bits=BASIS_WORD_BITS, host_word_bits=HOST_WORD_BITS,
        activation_bits=datapath.activation_bits,
        weight_bits=DENSE_WEIGHT_BITS if dense else datapath.weight_bits,
        accumulator_bits=datapath.accumulator_bits, activation_copies=ACTIVATION_COPIES,
        shift_adds=shift_add_count)


def resources(build, family):
    """``{"logic", "logic_available", "ff", "memory", "dsp"}`` of a build (first seed)."""
    logic, memory, dsp, flip_flop = _BELS[family]
    use = build.utilisation
    return {"logic": use[logic]["used"], "logic_available": use[logic]["available"],
            "ff": sum(n for cell, n in build.cells.items() if cell.startswith(flip_flop)),
            "memory": use[memory]["used"], "dsp": use[dsp]["used"]}


def figures(run):
    """Every derived figure of one run (see docs/benchmarks.md, "Definitions").

    The clock is the design's median fmax, or its board's default PLL clock
    when it was not built.
    """
    config = run.program.config
    counters = run.counters
    cycles = counters["cycles"]
    clock_mhz = run.design.fmax_mhz or run.design.clock_mhz
    per_second = clock_mhz * 1e6 / cycles
    macs = 3 * config.lanes * counters["rows"]
    adds = shift_adds(run.net, config.lanes)
    stored = weight_bits_stored(run.program)
    return {
        "cycles": cycles, "estimate": run.report.cycle_estimate, "exact": run.report.passed,
        "clock_mhz": clock_mhz, "inferences_per_s": per_second,
        "dense_macs": dense_macs(run.net.network),
        "dense_mac_per_s": dense_macs(run.net.network) * per_second,
        "macs": macs, "mac_per_s": macs * per_second,
        "shift_adds": adds, "shift_add_per_s": adds * per_second,
        "bits_stored": stored, "bits_moved": weight_bits_moved(counters, config),
        "file_bytes": run.storage.file_bytes, "file_weight_bits": run.storage.total.storage_bits,
        "energy": inference_energy(counters, config, adds),
        "dram_weights_pj": energy_model.dram_pj(stored),
    }
