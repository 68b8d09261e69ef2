"""The lint gate (`sd-hw generate BLOCK --lint`, sd_hw/lint.py) over every block and core
configuration the tests build.

The allowed warnings are documented in sd_hw/lint.py; everything else fails. The
quick run covers each block configuration, the default cores and the cases that
used to fail (the coefficient decoder with a one-word bitmap, the row issuer's
depth-2 queues); the slow run every core configuration of the system tests and
of the boards.
"""

import dataclasses

import pytest

from boards import icebreaker, orangecrab, ulx3s
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.generate import generate, generate_core
from sd_hw.lint import ALLOWED_MESSAGES, LintError, verilator_lint
from sd_hw.serial.config import SerialConfig
from tests.test_blocks_rtl import CONFIGS
from tests.test_core_system import RANDOM_CASES
from tests.test_serial_core import CASES, small_config


def block_id(entry):
    block, overrides = entry
    return "-".join([block, *(f"{k}={v}" for k, v in overrides.items())])


BLOCK_CONFIGS = list(dict.fromkeys(
    [(block, tuple(overrides.items())) for block, overrides, _ in CONFIGS]
    + [("coefficient_decoder", (("stream_bits", 16), ("block_rows", 16))),
       ("coefficient_decoder", (("stream_bits", 32), ("block_rows", 8)))]))


@pytest.mark.parametrize("block, overrides", BLOCK_CONFIGS,
                         ids=[block_id((b, dict(o))) for b, o in BLOCK_CONFIGS])
def test_block_configurations_lint_clean(block, overrides, tmp_path):
    generated = generate(block, AcceleratorConfig(**dict(overrides)), tmp_path)
    verilator_lint(generated.verilog_path, top=block)


def core_configs():
    for network, datapath, core, _, seed in RANDOM_CASES:
        yield f"sd-{seed}", CoreConfig(datapath=AcceleratorConfig(**datapath), **core)
    for network, datapath, block_rows, seed in CASES:
        yield f"serial-{seed}", small_config(block_rows=max(block_rows, 4), **datapath)
    for board in (icebreaker, orangecrab, ulx3s):
        for name in ("DEFAULT_CONFIG", "SD_CORE_CONFIG"):
            config = getattr(board, name)
            # The iCE40 primitives are instances of vendor cells, linted without models.
            if getattr(config, "primitives", "generic") != "generic":
                config = dataclasses.replace(config, primitives="generic")
            yield f"{board.__name__.split('.')[-1]}-{name}", config


QUICK = {"sd-default": CoreConfig(),
         "serial-default": SerialConfig(),
         "sd-one-word-bitmap": CoreConfig(datapath=AcceleratorConfig(lanes=2, block_rows=8))}


@pytest.mark.parametrize("name", list(QUICK))
def test_default_cores_lint_clean(name, tmp_path):
    generated = generate_core(QUICK[name], tmp_path, reuse=False)
    report = verilator_lint(generated.verilog_path, top=generated.name)
    if name.startswith("sd-"):
        # The row issuer's SyncFIFOBuffered queues have zero-width pointers.
        assert report.allowed.get("ASCRANGE", 0) > 0


ALL_CORES = list(core_configs())


@pytest.mark.slow
@pytest.mark.duration(240)
@pytest.mark.parametrize("config", [config for _, config in ALL_CORES],
                         ids=[name for name, _ in ALL_CORES])
def test_every_tested_core_configuration_lints_clean(config, tmp_path):
    generated = generate_core(config, tmp_path, reuse=False)
    verilator_lint(generated.verilog_path, top=generated.name)


def test_only_zero_width_ranges_are_allowed(tmp_path):
    """An ascending range other than a zero-width signal's still fails."""
    path = tmp_path / "ascending.v"
    path.write_text("module ascending(input [0:3] a, output [0:3] y);\n"
                    "  assign y = a;\nendmodule\n")
    assert ALLOWED_MESSAGES["ASCRANGE"].search("bit range: [-1:0]")
    with pytest.raises(LintError, match="ASCRANGE"):
        verilator_lint(path)
