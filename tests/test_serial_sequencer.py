"""The element-serial core's OpSequencer in the Amaranth simulator: random programs
(operation table, headers, group descriptors) run in part or whole, the units busy for
random times; every group started with its operation's and its own fields, in order,
and the fields held while the units are busy."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import Elaboratable, Module, Shape, UnusedElaboratable
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from sd_hw.config import AcceleratorConfig
from sd_hw.errors import ParameterError
from sd_hw.serial.config import SerialConfig
from sd_hw.serial.layouts import group_layout, op_layout, pack_program_words
from sd_hw.serial.sequencer import OpSequencer
from sim.streams import checked_simulator


PERIOD = 1e-6


class Bench(Elaboratable):
    def __init__(self, config, program):
        self.sequencer = OpSequencer(config)
        self._config = config
        self._program = program

    def elaborate(self, platform):
        m = Module()
        m.submodules.sequencer = sequencer = self.sequencer
        memory = m.submodules.program = Memory(shape=32, depth=self._config.program_depth,
                                               init=self._program)
        port = memory.read_port()
        m.d.comb += [port.addr.eq(sequencer.program.addr), port.en.eq(sequencer.program.en),
                     sequencer.program.data.eq(port.data)]
        return m


def random_fields(rng, layout, **fixed):
    fields = {}
    for name, field in data.Layout.cast(layout):
        shape = field.shape
        if isinstance(shape, range):
            fields[name] = rng.choice(shape)
        else:
            fields[name] = rng.randrange(1 << Shape.cast(shape).width)
    fields.update(fixed)
    return fields


def random_program(rng, config, ops):
    """``(program words, [(op fields, [group fields])])``."""
    operations = []
    for _ in range(ops):
        groups = rng.randint(1, 3)
        operations.append((random_fields(rng, op_layout(config)),
                           [random_fields(rng, group_layout(config), last=int(g == groups - 1))
                            for g in range(groups)]))
    headers = [pack_program_words(op_layout(config), op)
               + [w for group in groups for w in pack_program_words(group_layout(config), group)]
               for op, groups in operations]
    table, address = [], len(headers)
    for words in headers:
        table.append(address)
        address += len(words)
    return table + [w for words in headers for w in words], operations


def fields_of(value, layout):
    return {name: int(getattr(value, name)) for name, _ in data.Layout.cast(layout)}


def run(config, program, runs, seed):
    """Run ``(first_op, op_count)`` after one another; the groups each one started."""
    dut = Bench(config, program)
    seq = dut.sequencer
    rng = random.Random(seed)
    started = []

    async def testbench(ctx):
        for first, count in runs:
            groups = []
            ctx.set(seq.first_op, first)
            ctx.set(seq.op_count, count)
            ctx.set(seq.start, 1)
            done = False
            for cycle in range(2000):
                _, _, start, finished, op, group = await ctx.tick().sample(
                    seq.group_start, seq.done, seq.op, seq.group)
                ctx.set(seq.start, 0)
                if finished:
                    done = True
                    break
                if start:
                    op = fields_of(op, op_layout(config))
                    group = fields_of(group, group_layout(config))
                    groups.append((op, group))
                    ctx.set(seq.units_busy, 1)
                    for _ in range(rng.choice([0, 1, 5, 20])):
                        await ctx.tick()
                        assert ctx.get(seq.busy)
                        assert fields_of(ctx.get(seq.op), op_layout(config)) == op
                        assert fields_of(ctx.get(seq.group), group_layout(config)) == group
                    ctx.set(seq.units_busy, 0)
            assert done, f"run {first}, {count} did not end"
            await ctx.tick()
            assert not ctx.get(seq.busy)
            started.append(groups)

    sim = checked_simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(testbench)
    sim.run()
    return started


def expected(operations, first, count):
    return [(op, group) for op, groups in operations[first:first + count] for group in groups]


CONFIGS = [
    SerialConfig(datapath=AcceleratorConfig(lanes=8), program_depth=256),
    SerialConfig(datapath=AcceleratorConfig(lanes=3), bank_depth=1024,
                 activation_bytes=1024, basis_depth=16, param_depth=64, output_depth=16,
                 program_depth=64),
    SerialConfig(datapath=AcceleratorConfig(lanes=16), weight_banks=6, bank_depth=65536,
                 activation_bytes=131072, basis_depth=16384, param_depth=65536,
                 output_depth=65536, program_depth=65536),
]


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_runs_every_group_in_order(index):
    config = CONFIGS[index]
    rng = random.Random(index)
    program, operations = random_program(rng, config, 5)
    assert len(program) <= config.program_depth
    runs = [(0, 5), (2, 1), (1, 3), (4, 1), (3, 0), (0, 1)]
    started = run(config, program, runs, seed=index)
    for (first, count), groups in zip(runs, started):
        assert groups == expected(operations, first, count), (first, count)


def test_refuses_a_bad_configuration():
    with warnings.catch_warnings():
        # The half-built component is never elaborated; that is expected here.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ParameterError, match="parameter 'config' must be a SerialConfig"):
            OpSequencer(AcceleratorConfig(lanes=8))
        gc.collect()
