"""The dependency rules of the layout: sd_hw never imports sim or boards, and
the golden model imports neither Amaranth nor cocotb."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_sd_hw_imports_neither_sim_nor_boards():
    offenders = [(str(path.relative_to(ROOT)), module)
                 for path in sorted((ROOT / "sd_hw").rglob("*.py"))
                 for module in imported_modules(path)
                 if module.split(".")[0] in ("sim", "boards")]
    assert offenders == []


def test_golden_model_loads_without_amaranth_or_cocotb():
    modules = sorted(path.stem for path in (ROOT / "sim" / "golden").glob("*.py")
                     if path.stem != "__init__")
    assert {"reference", "integerise", "decompose", "pow2"} <= set(modules)
    code = (
        "import sys\n"
        + "".join(f"import sim.golden.{name}\n" for name in modules)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('amaranth', 'cocotb')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
