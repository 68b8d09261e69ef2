"""The bundled demo's accuracy bar: the retrained integer SmartDeal model
must stay within ``ACCURACY_BAR`` points of float, or ``sd-hw demo`` ends
with one error line and exit code 1.

The demo's own training is cut to two float epochs and no retraining, so
the SmartDeal model is far below float and each run takes a second or two.
"""

import contextlib
import io
import re

import pytest

import sim.demo as demo
from sim.cli import main


@pytest.fixture
def quick_demo(monkeypatch):
    monkeypatch.setitem(demo.DEMO_EPOCHS, "train", 2)
    monkeypatch.setitem(demo.DEMO_EPOCHS, "retrain", 0)


def table_value(stdout, step):
    """The test accuracy (percent) the demo printed for ``step``."""
    return float(re.search(rf"^{re.escape(step)}\s+([\d.]+) %", stdout, re.M)[1])


def test_missing_the_bar_is_one_error_line_and_exit_1(quick_demo, tmp_path):
    report = tmp_path / "results.md"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["demo", "--sim", "none", "--out", str(tmp_path / "demo"),
                       "--report", str(report)])
    assert status == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    match = re.fullmatch(r"sd-hw: error: the retrained integer SmartDeal model \(([\d.]+) %\) "
                         r"is ([\d.]+) points below float \(([\d.]+) %\); the bar is 1 point",
                         lines[0])
    assert match, lines[0]
    sd, gap, flt = map(float, match.groups())
    # the numbers are those of the printed table, and the gap is their difference
    assert flt == table_value(out.getvalue(), "float32")
    assert sd == table_value(out.getvalue(), "SmartDeal, retrained (ste) (integer model)")
    assert gap == pytest.approx(flt - sd, abs=0.015) and gap > 1  # each rounded to 0.01
    # the report is still written, and says so
    assert f"{-gap:+.2f} points (NOT within the bar of 1 point)" in report.read_text()


def test_the_bar_is_the_largest_gap_allowed(quick_demo, tmp_path):
    def run(bar):
        return demo.run_demo(out_dir=tmp_path, simulator=None, accuracy_bar=bar,
                             log=lambda line: None)

    result = run(100.0)
    gap = 100 * (result["float"] - result["sd_integer"])
    assert gap > 1  # no retraining
    assert run(gap)["sd_integer"] == result["sd_integer"]  # deterministic, and allowed
    with pytest.raises(demo.AccuracyBarMissed, match=f"is {gap:.2f} points below float"):
        run(gap - 0.01)
