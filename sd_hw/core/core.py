"""SDCore: the whole SmartDeal accelerator behind a host bus."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..datapath.basis_engine import BasisEngine
from ..datapath.coefficient_decoder import CoefficientDecoder
from ..datapath.layouts import (activation_row_layout, block_end_layout, block_layout,
                                dense_row_layout)
from ..datapath.shift_accumulate import ShiftAccumulateArray
from .activation_pair_reader import ActivationPairReader
from .activation_reader import ActivationReader
from .basis_assembler import BasisAssembler
from .config import BASIS_WORD_BITS, HOST_WORD_BITS, CoreConfig
from .fork import StreamFork
from .host_map import (COUNTER_BASE, COUNTERS, DEPTH_REGISTERS, IDENT, HostBus, Register,
                       Space)
from .layouts import OpKind, numbered_row_layout
from .output_stage import OutputStage
from .pool_engine import PoolEngine
from .registers import performance_counters, register_read
from .region_reader import RegionReader
from .row_fetcher import RowFetcher
from .row_issuer import RowIssuer
from .sequencer import LayerSequencer
from ..errors import ParameterError


__all__ = ["SDCore"]


#: Forwarded activation rows that wait while the lanes' records are read
#: (``row_lookahead=2``): a row leaves once its records have been read (and, on the
#: SmartDeal core, rebuilt): five rows in flight keep one row per cycle.
ACTIVATION_QUEUE_DEPTH = 5


def _bits(depth):
    return max(1, (depth - 1).bit_length())


class SDCore(wiring.Component):
    """A SmartDeal accelerator: buffers, sequencer, lanes and output stage.

    The host loads a program and its memory images (:mod:`sd_hw.compiler`)
    and the network input through ``host`` (:mod:`sd_hw.core.host_map`),
    starts a run and reads back activations, outputs and counters.

    Per lane group of a compute operation, the :class:`RowIssuer` walks the
    group's index entries once per output pixel, skipping the Ce rows that
    are zero in every lane; each lane streams its coefficient words
    (:class:`RegionReader`) through its :class:`CoefficientDecoder` into its
    :class:`ShiftAccumulatePE`, with the basis of each block from the lane's
    basis memory; the :class:`BasisEngine` multiplies with the activation
    rows (:class:`ActivationReader`), and the :class:`OutputStage` adds the
    bias, requantises and writes back. With ``config.row_lookahead = 2``
    the issuer hands on two rows per cycle, the :class:`ActivationPairReader`
    drops the all-zero activation rows (but a block's last), and each lane's
    :class:`RowFetcher` reads the weight records of the forwarded rows only.
    With ``config.weights = "dense"``
    the weight memories hold int8 weight rows that go straight to the
    multipliers (no decoders, PEs or basis memories): the dense baseline.
    docs/core.md describes the whole.

    Members
    -------
    host : ``In(HostBus())``
    busy : ``Out(1)``
        A run is in progress.
    done : ``Out(1)``
        The last run has finished (cleared by the next start).
    """

    def __init__(self, config):
        if not isinstance(config, CoreConfig):
            raise ParameterError(f"parameter 'config' must be a CoreConfig, got {config!r}")
        self._config = config
        super().__init__({"host": In(HostBus()), "busy": Out(1), "done": Out(1)})

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        datapath = config.datapath
        lanes = datapath.lanes
        act_bits = datapath.activation_bits

        # Memories. -------------------------------------------------------------------
        def make(name, shape, depth):
            mem = m.submodules[name] = memory.Memory(shape=shape, depth=depth, init=[])
            return mem

        program = make("program", HOST_WORD_BITS, config.program_depth)
        index = make("index", HOST_WORD_BITS, config.index_depth)
        lookahead = config.row_lookahead
        # With a lookahead of 2, a second copy of the index and a second set of three
        # activation copies let the front end read two entries and two rows per cycle.
        index_copy = make("index1", HOST_WORD_BITS, config.index_depth) if lookahead == 2 \
            else None
        params = make("params", HOST_WORD_BITS, config.param_depth)
        outputs = make("outputs", HOST_WORD_BITS, config.output_depth)
        activations = [make(f"activations{j}", act_bits, config.activation_depth)
                       for j in range(3 * lookahead)]
        weights = [make(f"weights{l}", config.weight_word_bits, config.weight_depth)
                   for l in range(lanes)]
        dense = config.weights == "dense"
        bases = [] if dense else [make(f"bases{l}", BASIS_WORD_BITS, config.basis_depth)
                                  for l in range(lanes)]

        act_aw = _bits(config.activation_depth)

        # Units. --------------------------------------------------------------------------
        sequencer = m.submodules.sequencer = LayerSequencer(
            program_addr_width=_bits(config.program_depth),
            index_addr_width=_bits(config.index_depth))
        issuer = m.submodules.issuer = RowIssuer(datapath,
                                                 addr_width=_bits(config.index_depth),
                                                 lookahead=lookahead)
        if lookahead == 2:
            reader = m.submodules.activation_reader = ActivationPairReader(
                datapath, addr_width=act_aw)
        else:
            reader = m.submodules.activation_reader = ActivationReader(datapath,
                                                                       addr_width=act_aw)
        output = m.submodules.output_stage = OutputStage(
            datapath, param_addr_width=_bits(config.param_depth),
            activation_addr_width=act_aw, output_addr_width=_bits(config.output_depth))
        pool = m.submodules.pool_engine = PoolEngine(datapath, addr_width=act_aw)
        unpacked = config.coefficients == "unpacked"
        decoded = unpacked or dense
        if decoded:
            # The weight memories hold whole rows: no decoder takes the block commands.
            m.d.comb += issuer.commands.ready.eq(1)
        else:
            commands = m.submodules.command_fork = StreamFork(block_layout(datapath), lanes)
        block_ends = m.submodules.block_end_fork = StreamFork(block_end_layout(), lanes)
        engine = m.submodules.basis_engine = BasisEngine(datapath)
        fetchers, basis_readers, assemblers = [], [], []
        for l in range(lanes):
            if lookahead == 2:
                # Fixed-size records, fetched by row number: a dropped row's is never read.
                fetcher = m.submodules[f"weight_reader{l}"] = RowFetcher(
                    addr_width=_bits(config.weight_depth), data_width=config.weight_word_bits,
                    header_words=-(-16 // config.weight_word_bits))
            else:
                fetcher = m.submodules[f"weight_reader{l}"] = RegionReader(
                    addr_width=_bits(config.weight_depth), data_width=config.weight_word_bits,
                    header=True)
            fetchers.append(fetcher)
            read_port = weights[l].read_port()
            m.d.comb += [read_port.addr.eq(fetcher.port.addr), read_port.en.eq(fetcher.port.en),
                         fetcher.port.data.eq(read_port.data)]
        if dense:
            # int8 weight rows go straight to the multipliers.
            for l, fetcher in enumerate(fetchers):
                word = dense_row_layout()(fetcher.words.payload)
                lane_in = engine.weights[l]
                m.d.comb += [lane_in.payload.last.eq(word.last),
                             lane_in.valid.eq(fetcher.words.valid),
                             fetcher.words.ready.eq(lane_in.ready)]
                m.d.comb += [lane_in.payload.row[j].eq(word.row[j]) for j in range(3)]
                wiring.connect(m, block_ends.o[l], engine.block_end[l])
                wiring.connect(m, engine.sums[l], output.sums[l])
        else:
            array = m.submodules.lanes = ShiftAccumulateArray(datapath)
            for l, fetcher in enumerate(fetchers):
                # One basis per block: the basis words need not come at full rate.
                basis_reader = m.submodules[f"basis_reader{l}"] = RegionReader(
                    addr_width=_bits(config.basis_depth), data_width=BASIS_WORD_BITS,
                    queue_depth=2)
                assembler = m.submodules[f"basis_assembler{l}"] = BasisAssembler(datapath)
                basis_readers.append(basis_reader)
                assemblers.append(assembler)
                read_port = bases[l].read_port()
                m.d.comb += [read_port.addr.eq(basis_reader.port.addr),
                             read_port.en.eq(basis_reader.port.en),
                             basis_reader.port.data.eq(read_port.data)]
                if unpacked:
                    m.d.comb += [array.rows[l].payload.eq(fetcher.words.payload),
                                 array.rows[l].valid.eq(fetcher.words.valid),
                                 fetcher.words.ready.eq(array.rows[l].ready)]
                else:
                    decoder = m.submodules[f"decoder{l}"] = CoefficientDecoder(datapath)
                    wiring.connect(m, commands.o[l], decoder.block)
                    wiring.connect(m, fetcher.words, decoder.words)
                    wiring.connect(m, decoder.rows, array.rows[l])
                wiring.connect(m, basis_reader.words, assembler.words)
                wiring.connect(m, assembler.basis, array.basis[l])
                if datapath.dataflow == "rebuild":
                    wiring.connect(m, array.weights[l], engine.weights[l])
                    wiring.connect(m, block_ends.o[l], engine.block_end[l])
                    wiring.connect(m, engine.sums[l], output.sums[l])
                else:
                    wiring.connect(m, array.active_basis[l], engine.active_basis[l])
                    wiring.connect(m, engine.products[l], array.products[l])
                    wiring.connect(m, block_ends.o[l], array.block_end[l])
                    wiring.connect(m, array.sums[l], output.sums[l])
        if not decoded:
            wiring.connect(m, issuer.commands, commands.i)
        wiring.connect(m, issuer.block_ends, block_ends.i)
        wiring.connect(m, issuer.requests, reader.requests)
        if lookahead == 2:
            # Every forwarded row goes to the multipliers and, as a fetch request, to each
            # lane's RowFetcher; the activations wait in a queue while the records are read.
            row_fork = m.submodules.row_fork = StreamFork(numbered_row_layout(datapath),
                                                          lanes + 1)
            wiring.connect(m, reader.rows, row_fork.i)
            for l, fetcher in enumerate(fetchers):
                m.d.comb += [fetcher.requests.valid.eq(row_fork.o[l + 1].valid),
                             fetcher.requests.payload.ordinal.eq(
                                 row_fork.o[l + 1].payload.ordinal),
                             row_fork.o[l + 1].ready.eq(fetcher.requests.ready)]
            waiting_layout = activation_row_layout(datapath)
            waiting = m.submodules.activation_queue = SyncFIFO(
                width=data.Layout.cast(waiting_layout).size, depth=ACTIVATION_QUEUE_DEPTH)
            forwarded = row_fork.o[0]
            entering = data.View(waiting_layout, waiting.w_data)
            m.d.comb += [waiting.w_en.eq(forwarded.valid),
                         entering.row.eq(forwarded.payload.row),
                         entering.last.eq(forwarded.payload.last),
                         forwarded.ready.eq(waiting.w_rdy)]
            lane_rows = waiting.r_stream
            lane_row = data.View(waiting_layout, waiting.r_data)
            m.d.comb += [engine.activations.valid.eq(lane_rows.valid),
                         lane_rows.ready.eq(engine.activations.ready)]
            if datapath.dataflow == "rebuild":
                m.d.comb += engine.activations.payload.eq(lane_row.row)
            else:
                m.d.comb += engine.activations.payload.eq(lane_row)
        elif datapath.dataflow == "rebuild":
            m.d.comb += [engine.activations.valid.eq(reader.rows.valid),
                         engine.activations.payload.eq(reader.rows.payload.row),
                         reader.rows.ready.eq(engine.activations.ready)]
        else:
            wiring.connect(m, reader.rows, engine.activations)

        # The sequencer drives the units. ----------------------------------------------
        op, group = sequencer.op, sequencer.group
        m.d.comb += [
            issuer.start.eq(sequencer.compute_start),
            issuer.index_base.eq(group.index_base),
            issuer.entries.eq(group.entries),
            issuer.passes.eq(op.pixels),
            issuer.window.eq(op.window),
            issuer.origin.eq(op.origin),
            issuer.width.eq(op.width),
            issuer.height.eq(op.height),
            reader.stride.eq(op.element_stride),
            output.start.eq(sequencer.compute_start),
            output.output_base.eq(group.output_base),
            output.param_base.eq(group.param_base),
            output.lanes.eq(group.lanes),
            output.passes.eq(op.pixels),
            output.stride.eq(op.pixels),
            output.final.eq(op.final),
            output.relu.eq(op.relu),
            pool.start.eq(sequencer.pool_start),
            pool.kind.eq(op.kind),
            pool.in_base.eq(op.in_base),
            pool.out_base.eq(op.out_base),
            pool.channels.eq(op.channels),
            pool.height.eq(op.height),
            pool.width.eq(op.width),
            pool.pixels.eq(op.pixels),
            pool.relu.eq(op.relu),
        ]
        compute_busy = issuer.busy | output.busy
        for fetcher in fetchers:
            m.d.comb += fetcher.base.eq(group.weight_base)
            if lookahead == 1:
                m.d.comb += [fetcher.start.eq(sequencer.compute_start),
                             fetcher.repeats.eq(op.pixels)]
            compute_busy |= fetcher.busy
        # A group whose lanes have one block each reads its bases once; the assemblers
        # send them once per pass.
        single_block = group.basis_words == config.basis_words
        for basis_reader, assembler in zip(basis_readers, assemblers):
            m.d.comb += [
                basis_reader.start.eq(sequencer.compute_start),
                basis_reader.base.eq(group.basis_base),
                basis_reader.length.eq(group.basis_words),
                basis_reader.repeats.eq(Mux(single_block, 1, op.pixels)),
                assembler.repeats.eq(Mux(single_block, op.pixels, 1)),
            ]
            compute_busy |= basis_reader.busy
        m.d.comb += [sequencer.compute_busy.eq(compute_busy), sequencer.pool_busy.eq(pool.busy)]

        # Memory ports shared between the host, the units and the sequencer. ----------
        host = self.host
        space = host.addr[24:32]
        lane_select = host.addr[16:24]
        offset = host.addr[:16]
        busy = sequencer.busy
        idle = ~busy

        def host_write_port(mem, target_space, *, lane=None):
            port = mem.write_port()
            selected = host.w_en & (space == target_space.value)
            if lane is not None:
                selected &= lane_select == lane
            m.d.comb += [port.addr.eq(offset), port.data.eq(host.w_data), port.en.eq(selected)]

        host_write_port(program, Space.PROGRAM)
        host_write_port(index, Space.INDEX)
        if index_copy is not None:
            host_write_port(index_copy, Space.INDEX)
        host_write_port(params, Space.PARAMS)
        for l in range(lanes):
            host_write_port(weights[l], Space.WEIGHTS, lane=l)
        for l, mem in enumerate(bases):
            host_write_port(mem, Space.BASES, lane=l)

        program_port = program.read_port()
        m.d.comb += [program_port.addr.eq(sequencer.program_port.addr),
                     program_port.en.eq(sequencer.program_port.en),
                     sequencer.program_port.data.eq(program_port.data)]
        index_port = index.read_port()
        m.d.comb += [
            index_port.addr.eq(Mux(sequencer.index_port.en, sequencer.index_port.addr,
                                   issuer.port.addr)),
            index_port.en.eq(sequencer.index_port.en | issuer.port.en),
            sequencer.index_port.data.eq(index_port.data),
            issuer.port.data.eq(index_port.data),
        ]
        index_reads = index_port.en
        if index_copy is not None:
            copy_port = index_copy.read_port()
            m.d.comb += [copy_port.addr.eq(issuer.second_port.addr),
                         copy_port.en.eq(issuer.second_port.en),
                         issuer.second_port.data.eq(copy_port.data)]
            index_reads = index_port.en + copy_port.en
        param_port = params.read_port()
        m.d.comb += [param_port.addr.eq(output.param_port.addr),
                     param_port.en.eq(output.param_port.en),
                     output.param_port.data.eq(param_port.data)]
        output_write = outputs.write_port()
        m.d.comb += [output_write.addr.eq(output.output_write.addr),
                     output_write.data.eq(output.output_write.data),
                     output_write.en.eq(output.output_write.en)]
        # Not performed while busy (the output unit writes the memory): such a read, like
        # one of the activations, gives 0.
        output_read = outputs.read_port()
        host_reads_outputs = host.r_en & (space == Space.OUTPUTS.value) & idle
        read_refused = Signal()
        with m.If(host.r_en):
            m.d.sync += read_refused.eq(busy)
        m.d.comb += [output_read.addr.eq(offset), output_read.en.eq(host_reads_outputs)]

        # Activation memory: three (lookahead 2: six) copies, written together.
        computing = op.kind == OpKind.COMPUTE
        host_reads_activations = host.r_en & (space == Space.ACTIVATIONS.value) & idle
        activation_reads = []
        for j, mem in enumerate(activations):
            read = mem.read_port()
            activation_reads.append(read)
            m.d.comb += read.en.eq(0)
            m.d.comb += reader.ports[j].data.eq(read.data)
            if j < 2:
                # The pool engine shares the first two copies with the activation reader.
                m.d.comb += pool.ports[j].data.eq(read.data)
                with m.If(busy & ~computing):
                    m.d.comb += [read.addr.eq(pool.ports[j].addr), read.en.eq(pool.ports[j].en)]
                with m.Elif(busy):
                    m.d.comb += [read.addr.eq(reader.ports[j].addr),
                                 read.en.eq(reader.ports[j].en)]
                if j == 0:
                    with m.If(idle):
                        m.d.comb += [read.addr.eq(offset), read.en.eq(host_reads_activations)]
            else:
                m.d.comb += [read.addr.eq(reader.ports[j].addr), read.en.eq(reader.ports[j].en)]
            write = mem.write_port()
            with m.If(output.activation_write.en):
                m.d.comb += [write.addr.eq(output.activation_write.addr),
                             write.data.eq(output.activation_write.data), write.en.eq(1)]
            with m.Elif(pool.activation_write.en):
                m.d.comb += [write.addr.eq(pool.activation_write.addr),
                             write.data.eq(pool.activation_write.data), write.en.eq(1)]
            with m.Elif(idle & host.w_en & (space == Space.ACTIVATIONS.value)):
                m.d.comb += [write.addr.eq(offset), write.data.eq(host.w_data), write.en.eq(1)]

        # Registers and counters. -------------------------------------------------------------
        start = Signal()
        m.d.comb += [
            start.eq(host.w_en & (space == Space.REGISTERS.value)
                     & (offset == Register.CONTROL) & idle),
            sequencer.start.eq(start),
            sequencer.first_op.eq(host.w_data[:16]),
            sequencer.op_count.eq(host.w_data[16:]),
            self.busy.eq(busy),
        ]
        with m.If(start):
            m.d.sync += self.done.eq(0)
        with m.Elif(sequencer.done):
            m.d.sync += self.done.eq(1)

        def transfers(stream):
            return stream.valid & stream.ready

        increments = {
            "cycles": busy,
            "rows": transfers(reader.rows),
            "zero_rows": reader.zero,
            "skipped_rows": issuer.skipped,
            "weight_reads": sum(fetcher.read for fetcher in fetchers),
            "basis_reads": sum((basis_reader.read for basis_reader in basis_readers), Const(0)),
            "index_reads": index_reads,
            "param_reads": param_port.en,
            "activation_reads": reader.reads + pool.reads,
            "activation_writes": output.activation_write.en | pool.activation_write.en,
            "output_writes": output.output_write.en,
            "program_reads": program_port.en,
        }
        assert tuple(increments) == COUNTERS
        counters = performance_counters(m, increments, clear=start, every=config.counters)

        identity = {
            Register.CONTROL: Cat(busy, self.done),
            Register.IDENT: Const(IDENT, 32),
            Register.DATAPATH: Cat(Const(lanes, 8), Const(datapath.stream_bits, 8),
                                   Const(datapath.code_bits, 4),
                                   Const(datapath.dataflow == "factored", 1),
                                   Const(unpacked, 1), Const(dense, 1),
                                   Const(lookahead == 2, 1),
                                   Const(act_bits, 8)),
            Register.WIDTHS: Cat(Const(datapath.basis_bits, 8),
                                 Const(datapath.accumulator_bits, 8),
                                 Const(datapath.block_rows, 16)),
        }
        for k, name in enumerate(DEPTH_REGISTERS):
            identity[4 + k] = Const(getattr(config, name), 32)
        read_space, read_register = register_read(
            m, read=host.r_en, space=space, offset=offset, registers=identity,
            counters=counters, counter_base=COUNTER_BASE)
        with m.Switch(read_space):
            with m.Case(Space.ACTIVATIONS.value):
                m.d.comb += host.r_data.eq(Mux(read_refused, 0,
                                               activation_reads[0].data.as_signed()))
            with m.Case(Space.OUTPUTS.value):
                m.d.comb += host.r_data.eq(Mux(read_refused, 0, output_read.data))
            with m.Default():
                m.d.comb += host.r_data.eq(read_register)
        return m
