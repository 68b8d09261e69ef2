"""A board in a simulator, as a transport of the host runtime.

:class:`SimulatedBoard` runs a bus script through a board top-level's UART
pins: the top-level (:mod:`boards`) is converted to Verilog without a
platform, and :mod:`sim.cocotb.board_tb` sends the very bytes a host sends
over the serial port (:class:`sim.host.link.LinkSession`), under Icarus or
Verilator.
"""

import json
import time
from pathlib import Path

from sd_hw.errors import SdHwError
from sd_hw.generate import generate_component


__all__ = ["SimulatedBoard"]


class SimulatedBoard:
    """The top-level of board ``name`` (with ``config``, default the board's) in a simulator.

    ``divisor`` is the UART's clock cycles per bit in the simulation (the
    board's real baud rate would make every byte take hundreds of cycles).
    """

    def __init__(self, name, config=None, *, divisor=8, simulator="verilator",
                 build_dir="build/board-sim", progress=None):
        from boards import board, board_module
        spec = board(name)
        module = board_module(spec)
        self.name = name
        self.config = module.DEFAULT_CONFIG if config is None else config
        self.divisor = divisor
        self.simulator = simulator
        self.build_dir = Path(build_dir)
        self.progress = progress   # gets the simulator build's progress
        self._top = getattr(module, spec.top)
        self._generated = None
        #: The last run's requests and replies, byte for byte.
        self.transcript = []

    def _generate(self):
        if self._generated is None:
            top = self._top(self.config, divisor=self.divisor)
            description = {"board": self.name, "divisor": self.divisor,
                           "config": self.config.to_dict()}
            self._generated = generate_component(top, "board_top",
                                                 self.build_dir / "verilog" / self.name,
                                                 config=description)
        return self._generated

    def execute(self, script, *, raw_frames=()):
        """Run ``script``; returns ``{tag: words}`` (and ``"raw"``: statuses of ``raw_frames``)."""
        from sim.cocotb_runner import CocotbFailure, run_cocotb_on
        generated = self._generate()
        work = self.build_dir / "scripts"
        work.mkdir(parents=True, exist_ok=True)
        stamp = time.time_ns()
        script_path = script.save(work / f"script-{stamp}.json")
        results_path = work / f"results-{stamp}.json"
        env = {"SD_HW_SCRIPT": str(script_path.resolve()),
               "SD_HW_RESULTS": str(results_path.resolve()),
               "SD_HW_DIVISOR": str(self.divisor)}
        if raw_frames:
            raw_path = work / f"raw-{stamp}.json"
            raw_path.write_text(json.dumps([bytes(f).hex() for f in raw_frames]))
            env["SD_HW_RAW"] = str(raw_path.resolve())
        try:
            run_cocotb_on(generated, "sim.cocotb.board_tb", simulator=self.simulator,
                          build_dir=self.build_dir / "sim", extra_env=env,
                          progress=self.progress)
        except CocotbFailure as error:
            raise SdHwError(f"the simulated {self.name} failed: {error}") from None
        words = json.loads(results_path.read_text())
        script_path.unlink()
        results_path.unlink()
        if words.pop("framing_errors", [0])[0]:
            raise SdHwError(f"the simulated {self.name} sent bytes with framing errors")
        self.transcript = [(bytes.fromhex(a), bytes.fromhex(b))
                           for a, b in words.pop("transcript", [])]
        return words
