"""Building bus scripts for a compiled program, and reading their results.

The same functions serve every transport: :func:`load` writes a program's
memory images, :func:`infer` runs one input and reads back the output, the
layers' results and the counters; :func:`results_of` turns the words read
into arrays.
"""

from dataclasses import dataclass
from math import prod

import numpy as np

from sd_hw.core.host_map import COUNTER_BASE, Register, Space, address
from sim.host.script import BusScript


__all__ = ["RunResult", "load", "infer", "results_of", "write_tensor", "read_tensor"]


def _as_words(values):
    return [int(v) & 0xFFFFFFFF for v in np.asarray(values).ravel()]


def _signed(words):
    words = np.asarray(words, dtype=np.int64)
    return np.where(words >= 1 << 31, words - (1 << 32), words)


def load(script, program):
    """Write every memory image of ``program``."""
    for (space, lane), (base, words) in program.images.items():
        script.write(address(space, base, lane), words)
    return script


def write_tensor(script, base, tensor):
    """Write an int8 tensor to the activation memory from ``base`` on."""
    return script.write(address(Space.ACTIVATIONS, base), _as_words(tensor))


def read_tensor(script, info, tag):
    """Read the result of operation ``info`` (an :class:`~sd_hw.compiler.OpInfo`)."""
    return script.read(address(info.memory, info.base), prod(info.shape), tag)


def infer(script, program, x, *, tag, max_cycles, layers=True, first_op=0, op_count=None):
    """Run one int8 input ``x`` (the network's input shape) and read everything back.

    With ``layers``, reads every operation's result that is still in memory
    after the run. ``first_op``/``op_count`` run a part of the program
    (``x`` is then the input of operation ``first_op``).
    """
    op_count = program.op_count - first_op if op_count is None else op_count
    if first_op == 0:
        write_tensor(script, program.input_base, x)
    else:
        previous = program.ops[first_op - 1]
        write_tensor(script, previous.base, x)
    script.start(first_op, op_count)
    script.wait(max_cycles)
    last = first_op + op_count - 1
    for info in program.ops[first_op:last + 1]:
        if info.index == last or (layers and program.survives(info)):
            read_tensor(script, info, f"{tag}/op{info.index}")
    script.read(address(Space.REGISTERS, COUNTER_BASE), len(program.counter_names),
                f"{tag}/counters")
    script.read(address(Space.REGISTERS, Register.CONTROL), 1, f"{tag}/status")
    return script


@dataclass
class RunResult:
    """What one run left: operation results by index, counters, status."""

    ops: dict
    counters: dict
    done: bool


def results_of(program, words, tag):
    """The :class:`RunResult` of the run tagged ``tag`` in ``words`` (tag -> list)."""
    ops = {}
    for info in program.ops:
        key = f"{tag}/op{info.index}"
        if key in words:
            ops[info.index] = _signed(words[key]).reshape(info.shape)
    counters = dict(zip(program.counter_names, (int(v) for v in words[f"{tag}/counters"])))
    status = int(words[f"{tag}/status"][0])
    return RunResult(ops, counters, bool(status & 2))
