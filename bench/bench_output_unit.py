"""Resources and throughput of the element-serial core's OutputUnit (docs/blocks/output-unit.md).

Synthesises the unit (8 lanes, default widths) for iCE40 and ECP5 with both
multiplier speeds, and simulates one group per configuration with a producer
that commits a pass as soon as ``pass_ready`` allows and delivers its sums
back to back, and an activation memory that is always free: the cycles from
``start`` to ``busy`` falling, against the sums' own cycles.

    python bench/bench_output_unit.py [--out build/output-unit]
"""

import argparse
import random
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.serial.layouts import param_layout
from sd_hw.serial.output_unit import OutputUnit
from sd_hw.synth import synthesise


WIDTHS = {"param_addr_width": 8, "activation_addr_width": 14, "output_addr_width": 8}


class _Bench(Elaboratable):
    def __init__(self, unit):
        self.unit = unit

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        words = [{"bias": 0, "multiplier": 1 << 14, "shift": 20}] * (1 << WIDTHS["param_addr_width"])
        m.submodules.params = params = memory.Memory(shape=param_layout(), depth=len(words),
                                                     init=words)
        wiring.connect(m, params.read_port(), self.unit.param_read)
        return m


def group_cycles(config, digits, *, pool, windows, pass_length):
    """Cycles of one group of ``windows`` windows whose passes are ``pass_length``
    cycles apart at best (the lanes' sums of a pass take ``lanes`` of them)."""
    unit = OutputUnit(config, digits_per_cycle=digits, **WIDTHS)
    lanes = config.lanes
    rng = random.Random(0)
    passes = windows * (4 if pool else 1)
    result = {}

    async def testbench(ctx):
        for name, value in {"channels": lanes, "windows": windows, "pool": pool,
                            "plane": windows, "relu": 1}.items():
            ctx.set(getattr(unit, name), value)
        ctx.set(unit.activation_write.ready, 1)
        ctx.set(unit.start, 1)
        await ctx.tick()
        ctx.set(unit.start, 0)
        cycle, committed, since, starts = 0, 0, pass_length, []
        while ctx.get(unit.busy):
            commit = committed < passes and since >= pass_length and ctx.get(unit.pass_ready)
            ctx.set(unit.pass_commit, commit)
            if commit:
                starts.append(cycle + 4)
                committed, since = committed + 1, 0
            since += 1
            lane = [cycle - s for s in starts if 0 <= cycle - s < lanes]
            ctx.set(unit.sums, {"valid": bool(lane), "lane": lane[0] if lane else 0,
                                "value": rng.randrange(-2 ** 20, 2 ** 20)})
            await ctx.tick()
            cycle += 1
        result["cycles"] = cycle

    sim = Simulator(_Bench(unit))
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result["cycles"], passes * pass_length


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/output-unit"))
    args = parser.parse_args()
    config = AcceleratorConfig(lanes=8)
    print("| Booth digits a cycle | cycles per output | family | LUT4 | flip-flops "
          "| carries | block RAM |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for digits in (2, 1):
        unit = OutputUnit(config, digits_per_cycle=digits, **WIDTHS)
        path = args.out / f"output_unit_{digits}.v"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(verilog.convert(unit, name="output_unit"))
        for family in ("ice40", "ecp5"):
            report = synthesise(path, "output_unit", family, out_dir=args.out / f"{digits}")
            assert report.dsps == 0
            print(f"| {digits} | {unit.cycles_per_output} | {family} | {report.luts} "
                  f"| {report.ffs} | {report.carries} | {report.brams} |")
    print()
    print("| Booth digits a cycle | pool | cycles between passes | group cycles "
          "| sums' cycles |")
    print("|---:|---|---:|---:|---:|")
    for digits in (2, 1):
        for pool, pass_length in ((1, 8), (1, 9), (1, 18), (0, 8), (0, 36)):
            cycles, busy = group_cycles(config, digits, pool=pool, windows=16,
                                        pass_length=pass_length)
            print(f"| {digits} | {'2x2' if pool else 'no'} | {pass_length} | {cycles} "
                  f"| {busy} |")


if __name__ == "__main__":
    main()
