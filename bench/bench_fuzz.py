"""The slow fuzz run of every input kind, summarised in docs/fuzzing.md.

    python bench/bench_fuzz.py [--out docs/fuzzing.md]

Runs ``tests/test_fuzz_inputs.py::test_fuzz_every_input_kind_10000`` (10,000
mutants of each input kind, one kind at a time) and writes the count of mutants,
how many were refused and the time per kind, with the machine it ran on.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run_stamp import run_stamp  # noqa: E402

INTRO = """\
# Fuzzing the inputs

`tests/test_fuzz_inputs.py` feeds every kind of input sd-hw reads with mutants of
valid seeds: structured ones (a field, dtype, shape or JSON value replaced, dropped or
added; deep nesting, integers of thousands of digits, unencodable names) and file-level
ones (bit flips, overwrites, insertions, deletions, truncations). Mutants are drawn by
hypothesis, derandomised (every run draws the same), and for the host link by numpy's
seeded Generator. Each mutant must be refused with one of sd-hw's own errors
(`sd_hw.errors.SdHwError` and its subclasses; exit status 2 from the command line,
with one line `sd-hw: error: ...`) or be read into something that encodes back to
the same content, and nothing may hang:

| kind | read through | an accepted mutant must |
|---|---|---|
| model file (.npz) | `sim.golden.model_file.load_model` | save and load back to the same network and float32 weights |
| weight file | `sd_hw.weight_file.read`, raw and with the CRC fixed up after the mutation (so that the checks behind the CRC are reached), and field overwrites aimed at every header field, table entry, JSON text and section | re-encode byte for byte and run on the golden model (or be refused by it) |
| inputs and labels (.npy) | what `sd-hw evaluate` reads (`--inputs`, `--labels`) | be int8 inputs of the network's shape that save and parse back equal; labels one integer per input |
| core configuration (JSON) | `--config FILE` of every command with core options | give a configuration whose description reads back equal |
| command line | `sim.cli.main` in-process, for `inspect`, `evaluate`, `config`, `compress`, `boards`, `flash --dry-run`, with options and values replaced, dropped, added and swapped | return exit status 0 or 2 (1 only for the verdict that a network does not fit the chosen core), never raise (not even SystemExit) |
| host link frames | bytes into the simulated link on a core (Amaranth simulator, random stalls on both streams), 1,000 mutants per simulation | be followed by a valid request that is answered within the link's timeout plus a bound in cycles; every reply well-formed; the guard word written before changes only by a valid WRITE |

The quick suite (`make test`) runs 300 mutants of each kind; the slow run
(`pytest -m slow tests/test_fuzz_inputs.py`, or this page's `python bench/bench_fuzz.py`)
10,000 of each.

## Last slow run

"""


#: The input kinds of the slow run (tests/test_fuzz_inputs.py).
KINDS = 6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/fuzzing.md")
    parser.add_argument("--summary", type=Path,
                        help="write the page from this summary instead of running the tests: "
                             "the JSON file the slow tests write when SD_HW_FUZZ_SUMMARY names "
                             "it (e.g. during make test); a kind is in it only if its test "
                             "passed")
    args = parser.parse_args()
    if args.summary is not None:
        record = json.loads(args.summary.read_text())
        status = 0 if len(record) == KINDS else 1
    else:
        with tempfile.TemporaryDirectory() as folder:
            summary = Path(folder) / "summary.json"
            os.environ["SD_HW_FUZZ_SUMMARY"] = str(summary)
            status = pytest.main(["-W", "error", "-q", "-s", "-p", "no:cacheprovider",
                                  str(ROOT / "tests" / "test_fuzz_inputs.py"),
                                  "-k", "every_input_kind", "-m", "slow"])
            record = json.loads(summary.read_text()) if summary.exists() else {}
    lines = ["| kind | mutants | refused | tracebacks | hangs | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, figures in record.items():
        # A command line's refusals are not counted (its check is the exit status alone).
        refused = "-" if kind == "command line" else f"{figures['refused']:,}"
        lines.append(f"| {kind} | {figures['mutants']:,} | {refused} | 0 | 0 | "
                     f"{figures['seconds']:.0f} |")
    verdict = ("every kind passed" if status == 0
               else f"FAILED (pytest exit status {int(status)}, {len(record)} of {KINDS} kinds "
                    f"passed): see the test output")
    text = (INTRO + "\n".join(lines) + f"\n\n{verdict}. For the host link, 'refused' counts "
            f"the error replies (bad CRC, bad length, unknown command, overflow, timeout) "
            f"among all replies.\n\nRun on {run_stamp()}\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
