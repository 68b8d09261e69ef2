"""SerialCore: the element-serial SmartDeal accelerator behind a host bus."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..core.host_map import COUNTER_BASE, HostBus, Register, Space
from ..core.registers import performance_counters, register_read
from ..datapath.factored_lanes import FactoredLaneArray
from ..datapath.mac_lanes import MacLaneArray
from ..errors import ParameterError
from ..primitives import RegisteredReadPort, SinglePortRAM
from .config import SerialConfig
from .element_issuer import ElementIssuer
from .layouts import WORD_BITS
from .output_unit import OutputUnit
from .record_reader import RecordReader
from .sequencer import OpSequencer


__all__ = ["SerialCore", "SERIAL_COUNTERS", "SERIAL_IDENT"]

#: IDENT register of an element-serial core ("SDHS").
SERIAL_IDENT = 0x53444853

#: Performance counters (32 bits), cleared at every start, at COUNTER_BASE on.
SERIAL_COUNTERS = (
    "cycles",             # cycles from start to done
    "elements",           # activation elements multiply-accumulated by the lanes
    "records",            # records read from the weight banks
    "passes",             # sums completed (output pixels, per lane group)
    "write_cycles",       # cycles the activation memory was taken by an output write
)


def _bits(depth):
    return max(1, (depth - 1).bit_length())


class SerialCore(wiring.Component):
    """An element-serial SmartDeal accelerator: weight banks, lanes, output unit.

    The host loads a program and its memory images (:mod:`sd_hw.serial.compiler`)
    and the network input through ``host`` (the address map of
    :mod:`sd_hw.core.host_map`: space ``WEIGHTS`` with the lane field selecting one
    of the three weight banks, ``BASES`` with it selecting a lane, ``PARAMS`` two
    words per channel, ``ACTIVATIONS`` one int8 value per address), starts a run and
    reads back activations, outputs and counters.

    Per lane group, the :class:`OpSequencer` starts the :class:`RecordReader`
    (records from the banks), the :class:`ElementIssuer` (one activation element a
    cycle, from the activation memory, to every lane) and the :class:`OutputUnit`
    (pooling, bias, requantisation, write-back of the lanes' sums); the
    :class:`~sd_hw.datapath.mac_lanes.MacLaneArray` rebuilds a weight per lane and
    element and multiply-accumulates it (with ``dataflow="factored"``, the
    :class:`~sd_hw.datapath.factored_lanes.FactoredLaneArray` multiplies each
    activation row by the basis shared by ``basis_group`` lanes and shift-adds the
    products per lane; space ``BASES``' lane field then selects a basis engine).
    Identity registers: ``DATAPATH`` bit 20 is set for the factored dataflow, register
    10 holds the lanes per basis memory (1 when rebuilding). The weight banks and the activation memory
    are single-port :class:`~sd_hw.primitives.SinglePortRAM` (SPRAM on the iCE40
    UP5K); an output write takes the activation memory for a cycle, the issuer
    waits.

    Members
    -------
    host : ``In(HostBus())``
    busy : ``Out(1)``
    done : ``Out(1)``
        The last run has finished (cleared by the next start).
    """

    def __init__(self, config):
        if not isinstance(config, SerialConfig):
            raise ParameterError(f"parameter 'config' must be a SerialConfig, got {config!r}")
        self._config = config
        super().__init__({"host": In(HostBus()), "busy": Out(1), "done": Out(1)})

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        datapath = config.datapath
        lanes = config.lanes
        bank_aw = _bits(config.bank_depth)
        byte_aw = _bits(config.activation_bytes)

        banks = [SinglePortRAM(width=WORD_BITS, depth=config.bank_depth, max_sprams=4,
                               lowering=config.primitives)
                 for _ in range(config.weight_banks)]
        for b, bank in enumerate(banks):
            m.submodules[f"bank{b}"] = bank
        activations = m.submodules.activations = SinglePortRAM(
            width=WORD_BITS, depth=config.activation_bytes // 2, granularity=8, max_sprams=4,
            lowering=config.primitives)
        program = m.submodules.program = memory.Memory(shape=32, depth=config.program_depth,
                                                       init=[])
        params = m.submodules.params = memory.Memory(shape=64, depth=config.param_depth,
                                                     init=[])
        outputs = m.submodules.outputs = memory.Memory(shape=32, depth=config.output_depth,
                                                       init=[])

        sequencer = m.submodules.sequencer = OpSequencer(config)
        reader = m.submodules.record_reader = RecordReader(datapath, addr_width=bank_aw,
                                                           banks=config.weight_banks)
        issuer = m.submodules.element_issuer = ElementIssuer(
            datapath, basis_addr_width=_bits(config.basis_depth),
            activation_addr_width=byte_aw)
        if config.factored:
            array = FactoredLaneArray(datapath, basis_group=config.shared_lanes,
                                      basis_depth=config.basis_depth, lowering=config.primitives)
        else:
            array = MacLaneArray(datapath, basis_depth=config.basis_depth,
                                 lowering=config.primitives)
        m.submodules.lanes = array
        output = m.submodules.output_unit = OutputUnit(
            datapath, param_addr_width=_bits(config.param_depth),
            activation_addr_width=byte_aw, output_addr_width=_bits(config.output_depth))

        # The datapath. -----------------------------------------------------------------
        wiring.connect(m, reader.headers, issuer.headers)
        m.d.comb += [issuer.rows.eq(reader.rows), reader.next_rows.eq(issuer.next_rows),
                     reader.stop.eq(~issuer.busy)]
        wiring.connect(m, issuer.elements, array.elements)
        m.d.comb += array.basis_read.eq(issuer.basis_read)
        m.d.comb += [output.sums.eq(array.sums),
                     issuer.pass_ready.eq(output.pass_ready),
                     output.pass_commit.eq(issuer.pass_commit)]

        # The sequencer starts the units of each lane group. A group's output pixels are
        # its windows, and the plane of a channel's outputs; a pooled one computes four
        # passes a window.
        op, group = sequencer.op, sequencer.group
        start = sequencer.group_start
        m.d.comb += [
            reader.start.eq(start), reader.base.eq(group.record_base),
            reader.count.eq(group.has_records), reader.last_record.eq(group.last_record),
            issuer.start.eq(start), issuer.conv.eq(op.conv), issuer.height.eq(op.height),
            issuer.width.eq(op.width),
            issuer.in_base.eq(op.in_base), issuer.basis_base.eq(group.basis_base),
            issuer.pool.eq(op.pool), issuer.records.eq(group.has_records),
            issuer.stride2.eq(op.stride2), issuer.pad.eq(op.pad),
            issuer.out_height.eq(op.out_height), issuer.out_width.eq(op.out_width),
            issuer.row_jump.eq(op.row_jump),
            issuer.passes.eq(Mux(op.pool, op.plane << 2, op.plane)),
            output.start.eq(start), output.param_base.eq(group.param_base),
            output.channels.eq(group.channels), output.windows.eq(op.plane),
            output.pool.eq(op.pool), output.average.eq(op.average),
            output.relu_late.eq(op.relu_late), output.out_base.eq(group.out_base),
            output.plane.eq(op.plane), output.final.eq(op.final), output.relu.eq(op.relu),
            sequencer.units_busy.eq(reader.busy | issuer.busy | output.busy),
        ]

        # Memories shared between the host and the units. ---------------------------------
        host = self.host
        space = host.addr[24:32]
        lane_select = host.addr[16:24]
        offset = host.addr[:16]
        busy = sequencer.busy
        idle = ~busy

        def host_writes(target):
            return idle & host.w_en & (space == target.value)

        for b, bank in enumerate(banks):
            # The reader reads only while the core is busy, the host writes only while
            # it is idle: the enables are ORed (no multiplexer on the reader's late
            # read enable, the end of the core's longest path).
            selected = host_writes(Space.WEIGHTS) & (lane_select == b)
            m.d.comb += [bank.addr.eq(Mux(busy, reader.banks[b].addr, offset)),
                         bank.w_data.eq(host.w_data), bank.w_en.eq(selected),
                         bank.en.eq(reader.banks[b].en | selected),
                         reader.banks[b].data.eq(bank.r_data)]

        m.d.comb += array.basis_write.eq(0)
        with m.If(host_writes(Space.BASES)):
            m.d.comb += [array.basis_write.en.eq(1), array.basis_write.lane.eq(lane_select),
                         array.basis_write.addr.eq(offset),
                         array.basis_write.data.eq(host.w_data)]

        program_write = program.write_port()
        m.d.comb += [program_write.addr.eq(offset), program_write.data.eq(host.w_data),
                     program_write.en.eq(host_writes(Space.PROGRAM))]
        program_read = RegisteredReadPort(m, program)
        m.d.comb += [program_read.addr.eq(sequencer.program.addr),
                     program_read.en.eq(sequencer.program.en),
                     sequencer.program.data.eq(program_read.data)]

        param_write = params.write_port(granularity=32)
        m.d.comb += [param_write.addr.eq(offset >> 1),
                     param_write.data.eq(Cat(host.w_data, host.w_data)),
                     param_write.en.eq(Mux(host_writes(Space.PARAMS),
                                           Mux(offset[0], 0b10, 0b01), 0))]
        param_read = RegisteredReadPort(m, params)
        m.d.comb += [param_read.addr.eq(output.param_read.addr),
                     param_read.en.eq(output.param_read.en),
                     output.param_read.data.eq(param_read.data)]

        output_write = outputs.write_port()
        m.d.comb += [output_write.addr.eq(output.output_write.addr),
                     output_write.data.eq(output.output_write.data),
                     output_write.en.eq(output.output_write.en)]
        # The output unit writes the output memory during a run: the host's reads are not
        # performed while busy (they read 0), so a read and a write never meet.
        output_read = RegisteredReadPort(m, outputs)
        host_reads_outputs = idle & host.r_en & (space == Space.OUTPUTS.value)
        m.d.comb += [output_read.addr.eq(offset), output_read.en.eq(host_reads_outputs)]

        # The activation memory: output writes first, then the issuer's reads; the host
        # while idle. A write takes one byte of a word.
        writing = output.activation_write.valid
        m.d.comb += [output.activation_write.ready.eq(busy),
                     issuer.activations.blocked.eq(writing),
                     issuer.activations.data.eq(activations.r_data)]
        host_byte = Signal()
        with m.If(busy):
            with m.If(writing):
                byte = output.activation_write.payload.addr
                m.d.comb += [activations.addr.eq(byte >> 1), activations.en.eq(1),
                             activations.w_data.eq(output.activation_write.payload.data
                                                   .as_unsigned().replicate(2)),
                             activations.w_en.eq(Mux(byte[0], 0b10, 0b01))]
            with m.Else():
                m.d.comb += [activations.addr.eq(issuer.activations.addr),
                             activations.en.eq(issuer.activations.en)]
        with m.Else():
            host_activation = space == Space.ACTIVATIONS.value
            m.d.comb += [activations.addr.eq(offset >> 1),
                         activations.w_data.eq(host.w_data[:8].replicate(2)),
                         activations.en.eq(host_activation & (host.w_en | host.r_en))]
            with m.If(host.w_en & host_activation):
                m.d.comb += activations.w_en.eq(Mux(offset[0], 0b10, 0b01))
            with m.If(host.r_en & host_activation):
                m.d.sync += host_byte.eq(offset[0])

        # Registers and counters. ---------------------------------------------------------
        run = Signal()
        m.d.comb += [
            run.eq(host.w_en & (space == Space.REGISTERS.value)
                   & (offset == Register.CONTROL) & idle),
            sequencer.start.eq(run),
            sequencer.first_op.eq(host.w_data[:16]),
            sequencer.op_count.eq(host.w_data[16:]),
            self.busy.eq(busy),
        ]
        with m.If(run):
            m.d.sync += self.done.eq(0)
        with m.Elif(sequencer.done):
            m.d.sync += self.done.eq(1)

        increments = {
            "cycles": busy,
            "elements": array.elements.valid & array.elements.ready,
            "records": reader.headers.valid & reader.headers.ready,
            "passes": issuer.pass_commit,
            "write_cycles": busy & writing,
        }
        assert tuple(increments) == SERIAL_COUNTERS
        # The increments are registered (the handshakes are late, a counter's carry chain
        # long): a counter takes a cycle's events a cycle later, so its last events are
        # counted in the cycle `done` rises, before the host can have seen it. The clear
        # (`run`, only while idle) wins over the increment of a run's last busy cycle.
        delayed = {}
        for name, increment in increments.items():
            delayed[name] = Signal(name=f"increment_{name}")
            m.d.sync += delayed[name].eq(increment)
        counters = performance_counters(m, delayed, clear=run, every=config.counters)

        identity = {
            Register.CONTROL: Cat(busy, self.done),
            Register.IDENT: Const(SERIAL_IDENT, 32),
            Register.DATAPATH: Cat(Const(lanes, 8), Const(WORD_BITS, 8),
                                   Const(datapath.code_bits, 4), Const(config.factored, 1),
                                   Const(0, 3),
                                   Const(datapath.activation_bits, 8)),
            Register.WIDTHS: Cat(Const(datapath.basis_bits, 8),
                                 Const(datapath.accumulator_bits, 8),
                                 Const(datapath.block_rows, 16)),
            4: Const(config.activation_bytes, 32),
            5: Const(config.bank_depth, 32),
            6: Const(config.basis_depth, 32),
            7: Const(config.param_depth, 32),
            8: Const(config.output_depth, 32),
            9: Const(config.program_depth, 32),
            10: Const(config.shared_lanes, 32),
        }
        _, read_register = register_read(
            m, read=host.r_en, space=space, offset=offset, registers=identity,
            counters=counters, counter_base=COUNTER_BASE)
        # The read's space is decoded as it is taken: the read data's multiplexer is
        # then one or two look-up tables of flip-flops and block RAM outputs. The memories
        # a run writes (activations, outputs) read 0 while busy.
        read_activations, read_outputs, read_refused = Signal(), Signal(), Signal()
        with m.If(host.r_en):
            m.d.sync += [read_activations.eq(idle & (space == Space.ACTIVATIONS.value)),
                         read_outputs.eq(idle & (space == Space.OUTPUTS.value)),
                         read_refused.eq(busy & ((space == Space.ACTIVATIONS.value)
                                                 | (space == Space.OUTPUTS.value)))]
        word = activations.r_data
        with m.If(read_activations):
            m.d.comb += host.r_data.eq(Mux(host_byte, word[8:16], word[:8]).as_signed())
        with m.Elif(read_outputs):
            m.d.comb += host.r_data.eq(output_read.data)
        with m.Elif(read_refused):
            m.d.comb += host.r_data.eq(0)
        with m.Else():
            m.d.comb += host.r_data.eq(read_register)
        return m
