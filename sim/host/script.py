"""Bus scripts: what a host does to an SDCore, as data.

A :class:`BusScript` is a list of steps on the host bus
(:mod:`sd_hw.core.host_map`): writes of consecutive words, starts, waits
for the end of a run, and tagged reads. Every transport executes the same
script, in a simulator (:mod:`sim.cocotb.script_tb`,
:mod:`sim.amaranth_executor`) or on a board, and returns the words read,
by tag. Steps::

    ["write", address, [word, ...]]     consecutive addresses from ``address``
    ["start", first_op, op_count]
    ["wait", max_cycles]                until the run ends; fail after max_cycles
    ["read", address, count, tag]       consecutive addresses, words under ``tag``
    ["cycle", tag]                      the simulator's cycle count under ``tag``
"""

import json
from pathlib import Path

from sd_hw.core.host_map import Register, Space, address


__all__ = ["BusScript", "ScriptError"]


class ScriptError(RuntimeError):
    """A script that could not be executed: a run that did not end in time."""


class BusScript:
    def __init__(self, steps=None):
        self.steps = list(steps or [])

    def write(self, addr, words):
        words = [int(w) & 0xFFFFFFFF for w in words]
        if words:
            self.steps.append(["write", int(addr), words])
        return self

    def start(self, first_op, op_count):
        self.steps.append(["start", int(first_op), int(op_count)])
        return self

    def wait(self, max_cycles):
        self.steps.append(["wait", int(max_cycles)])
        return self

    def read(self, addr, count, tag):
        if count:
            self.steps.append(["read", int(addr), int(count), str(tag)])
        return self

    def cycle(self, tag):
        self.steps.append(["cycle", str(tag)])
        return self

    def control_word(self, first_op, op_count):
        return (op_count << 16) | first_op

    def expanded(self):
        """The steps as single-word bus operations: ``("w", addr, data)``,
        ``("r", addr, tag)``, ``("wait", max_cycles)``, ``("cycle", tag)``."""
        for step in self.steps:
            kind = step[0]
            if kind == "write":
                for k, word in enumerate(step[2]):
                    yield ("w", step[1] + k, word)
            elif kind == "start":
                yield ("w", address(Space.REGISTERS, Register.CONTROL),
                       self.control_word(step[1], step[2]))
            elif kind == "wait":
                yield ("wait", step[1])
            elif kind == "read":
                for k in range(step[2]):
                    yield ("r", step[1] + k, step[3])
            elif kind == "cycle":
                yield ("cycle", step[1])
            else:
                raise ScriptError(f"unknown script step {step!r}")

    def save(self, path):
        Path(path).write_text(json.dumps({"steps": self.steps}))
        return Path(path)

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text())["steps"])
