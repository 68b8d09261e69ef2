"""Logic cells and fmax of the element-serial core's lane arrays, alone, on the UP5K.

Places and routes each array in the pin harness of
:func:`sd_hw.synth.harness_place_and_route` (SB_MAC16 instantiated, the iCEBreaker's
basis depth) and prints one line per array: the rebuilding
:class:`~sd_hw.datapath.mac_lanes.MacLaneArray` and the factored
:class:`~sd_hw.datapath.factored_lanes.FactoredLaneArray` for the lane counts and
basis groups asked. Logic cells are nextpnr's after packing less the harness's input
flip-flops (its output XOR tree is included).

    python bench/bench_lane_arrays.py [--array mac:8 factored:8:8 ...] [--freq 45] [--seed 1]
"""

import argparse
import json
import sys
from pathlib import Path

from sd_hw.config import AcceleratorConfig
from sd_hw.datapath.factored_lanes import FactoredLaneArray
from sd_hw.datapath.mac_lanes import MacLaneArray
from sd_hw.synth import harness_place_and_route


def array(spec, basis_depth):
    """``mac:LANES`` or ``factored:LANES[:GROUP]``."""
    kind, *numbers = spec.split(":")
    lanes = int(numbers[0])
    if kind == "mac":
        return MacLaneArray(AcceleratorConfig(lanes=lanes), basis_depth=basis_depth,
                            lowering="ice40")
    group = int(numbers[1]) if len(numbers) > 1 else None
    return FactoredLaneArray(AcceleratorConfig(lanes=lanes, dataflow="factored"),
                             basis_group=group, basis_depth=basis_depth, lowering="ice40")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--array", nargs="+", default=["factored:8", "mac:8"])
    parser.add_argument("--basis-depth", type=int, default=64)
    parser.add_argument("--freq", type=float, default=45)
    parser.add_argument("--out", default="build/lane-arrays")
    args = parser.parse_args(argv)
    for spec in args.array:
        work = Path(args.out) / spec.replace(":", "-")
        synth, placed = harness_place_and_route(array(spec, args.basis_depth), "up5k", work,
                                                freq_mhz=args.freq)
        record = {"array": spec, "logic_cells": placed.logic_cells - placed.harness_ffs,
                  "logic_cells_with_harness": placed.logic_cells,
                  "harness_ffs": placed.harness_ffs, "luts": synth.luts, "ffs": synth.ffs,
                  "carries": synth.carries, "dsps": synth.dsps, "brams": synth.brams,
                  "fmax_mhz": round(placed.fmax, 2) if placed.fmax else None}
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
