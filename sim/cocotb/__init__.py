"""cocotb helpers for the generated Verilog: stream drivers, payload codecs, clocking, vectors.

Imported inside the simulator by the test benches in ``tests/cocotb_tests``;
the Amaranth-simulator counterparts live in :mod:`sim.streams`.
"""

from .clocking import CLOCK_PERIOD_NS, start_clock_and_reset
from .port_map import PORT_MAP_ENV, PayloadCodec, PortMap
from .streams import StreamDriver, StreamMonitor, StreamRuleChecker, StreamRuleError
from .vectors import VECTORS_ENV, case_names, run_case, write_vectors


__all__ = ["CLOCK_PERIOD_NS", "start_clock_and_reset", "PORT_MAP_ENV", "PayloadCodec",
           "PortMap", "StreamDriver", "StreamMonitor", "StreamRuleChecker", "StreamRuleError",
           "VECTORS_ENV", "case_names", "run_case",
           "write_vectors"]
