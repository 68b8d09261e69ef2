"""A single-port synchronous RAM with the behaviour of the iCE40 UltraPlus SPRAM.

docs/blocks/primitives.md describes it with the measured resources.
"""

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import ParameterError, check_range
from ._lowering import checked_lowering, uses_primitive


__all__ = ["SinglePortRAM", "SPRAM_WIDTH", "SPRAM_DEPTH", "GRANULARITIES"]

#: Word width and depth of one SB_SPRAM256KA.
SPRAM_WIDTH = 16
SPRAM_DEPTH = 16384

#: Allowed write granularities (bits per write-enable bit); they divide the
#: tile width, so a chunk never straddles two SPRAMs.
GRANULARITIES = (4, 8, 16)

#: iCE40 devices that have SB_SPRAM256KA (the UltraPlus parts).
_SPRAM_DEVICES = ("iCE40UP",)

_ADDRESS_BITS = 14
_NIBBLE = 4


def _ceil_div(a, b):
    return -(-a // b)


class SinglePortRAM(wiring.Component):
    """Single-port synchronous RAM, tiled from SB_SPRAM256KA on the iCE40 UltraPlus.

    One port reads or writes one word a cycle; a read's word appears on
    ``r_data`` one cycle later (:attr:`read_latency`).

    Parameters (keyword-only)
    -------------------------
    width : int
        Word width in bits, 1 to ``16 * max_sprams``. A width that is not a
        multiple of 16 is padded up to whole SPRAMs (the padding bits are
        written with zeros and never read).
    depth : int
        Words, 1 to ``16384 * max_sprams``. Addresses ``>= depth`` are
        outside the contract.
    granularity : None or int
        ``None``: ``w_en`` is one bit and a write stores the whole word.
        4, 8 or 16 (dividing ``width``): ``w_en`` has one bit per
        ``granularity`` bits of the word, bit ``i`` writing bits
        ``[i*granularity, (i+1)*granularity)`` (SB_SPRAM256KA's MASKWREN
        works on nibbles).
    max_sprams : int
        The most SB_SPRAM256KA the RAM may use (the UP5K has 4). The RAM
        needs ``ceil(width / 16) * ceil(depth / 16384)`` of them, whatever
        the lowering; more is refused.
    lowering : str
        ``"auto"`` (SB_SPRAM256KA tiles when elaborated for an iCE40
        UltraPlus platform, an ``amaranth.lib.memory.Memory`` otherwise),
        ``"ice40"`` (always the tiles, e.g. to simulate them with yosys'
        ``cells_sim.v``) or ``"generic"`` (always the Memory).

    Members
    -------
    addr : ``In(unsigned(ceil(log2(depth))))``
        The word address of this cycle's access.
    w_data : ``In(width)``
        The word to write.
    w_en : ``In(1)`` or ``In(width // granularity)``
        With ``en``: a write of the enabled chunks if any bit is set, a read
        otherwise.
    en : ``In(1)``
        Chip select: no access when low.
    r_data : ``Out(width)``
        The word read by the last read (a cycle with ``en`` high and
        ``w_en`` zero), from the cycle after that read until the next access.
        It holds while ``en`` is low. After a write it is undefined until
        the next read: the SPRAM drives X (the generic model keeps the last
        read's word). Before the first read, and for a word (or chunk) never
        written, it is undefined (the generic model's memory starts at zero).

    There is no reset; reading a word in the cycle it is written is not
    possible (one port).

    Lowering to SB_SPRAM256KA
    -------------------------
    Tile ``(bank, column)`` holds bits ``[16*column, 16*column + 16)`` of
    words ``[16384*bank, 16384*(bank + 1))``. A bank's tiles get
    ``CHIPSELECT = en & (addr >> 14 == bank)``, ``WREN`` = any ``w_en``
    bit, ``MASKWREN`` from ``w_en`` (all ones without granularity),
    ``STANDBY = SLEEP = 0`` and ``POWEROFF = 1``. With more than one bank a
    register remembers the bank of the last read and selects its tiles'
    ``DATAOUT`` (which each SPRAM holds while not selected).
    """

    def __init__(self, *, width, depth, granularity=None, max_sprams=4, lowering="auto"):
        self._max_sprams = check_range("max_sprams", max_sprams, 1, 1 << 16)
        self._width = check_range("width", width, 1, SPRAM_WIDTH * self._max_sprams)
        self._depth = check_range("depth", depth, 1, SPRAM_DEPTH * self._max_sprams)
        if granularity is not None:
            if granularity not in GRANULARITIES or isinstance(granularity, bool):
                raise ParameterError(f"parameter 'granularity' is {granularity!r}, allowed "
                                     f"values are None, {', '.join(map(str, GRANULARITIES))}")
            if self._width % granularity:
                raise ParameterError(f"parameter 'granularity' is {granularity}, which does "
                                     f"not divide width {self._width}")
        self._granularity = granularity
        self._lowering = checked_lowering(lowering)
        self._columns = _ceil_div(self._width, SPRAM_WIDTH)
        self._banks = _ceil_div(self._depth, SPRAM_DEPTH)
        if self.sprams > self._max_sprams:
            raise ParameterError(
                f"SinglePortRAM of width {self._width} and depth {self._depth} needs "
                f"{self.sprams} SB_SPRAM256KA ({self._columns} wide x {self._banks} deep), "
                f"more than max_sprams={self._max_sprams}")
        chunks = 1 if granularity is None else self._width // granularity
        super().__init__({
            "addr": In(unsigned(max(1, (self._depth - 1).bit_length()))),
            "w_data": In(self._width),
            "w_en": In(chunks),
            "en": In(1),
            "r_data": Out(self._width),
        })

    @property
    def width(self):
        return self._width

    @property
    def depth(self):
        return self._depth

    @property
    def granularity(self):
        return self._granularity

    @property
    def lowering(self):
        return self._lowering

    @property
    def sprams(self):
        """SB_SPRAM256KA tiles of the iCE40 lowering: ``columns * banks``."""
        return self._columns * self._banks

    @property
    def read_latency(self):
        """Cycles from a read to its word on ``r_data``: 1."""
        return 1

    def elaborate(self, platform):
        if uses_primitive(self._lowering, platform, _SPRAM_DEVICES):
            return self._elaborate_sprams()
        return self._elaborate_memory()

    def _elaborate_memory(self):
        m = Module()
        m.submodules.memory = memory = Memory(shape=unsigned(self._width), depth=self._depth,
                                              init=[])
        write = memory.write_port(granularity=self._granularity)
        read = memory.read_port()
        m.d.comb += [
            write.addr.eq(self.addr),
            write.data.eq(self.w_data),
            write.en.eq(self.w_en & self.en.replicate(len(self.w_en))),
            read.addr.eq(self.addr),
            read.en.eq(self.en & ~self.w_en.any()),
            self.r_data.eq(read.data),
        ]
        return m

    def _nibble_enables(self, column):
        """MASKWREN of the tiles of ``column``: one bit per nibble of its 16 bits."""
        if self._granularity is None:
            return Const(0b1111, 4)
        bits = []
        for nibble in range(SPRAM_WIDTH // _NIBBLE):
            first = column * SPRAM_WIDTH + nibble * _NIBBLE
            bits.append(self.w_en[first // self._granularity] if first < self._width
                        else Const(0, 1))
        return Cat(bits)

    def _elaborate_sprams(self):
        m = Module()
        writing = Signal()
        m.d.comb += writing.eq(self.w_en.any())
        address = Signal(_ADDRESS_BITS)
        m.d.comb += address.eq(self.addr[:_ADDRESS_BITS])
        bank = self.addr[_ADDRESS_BITS:] if self._banks > 1 else Const(0, 1)

        words = []
        for b in range(self._banks):
            select = Signal(name=f"select_{b}")
            m.d.comb += select.eq(self.en & (bank == b))
            outputs = []
            for c in range(self._columns):
                low = c * SPRAM_WIDTH
                bits = min(SPRAM_WIDTH, self._width - low)
                data_out = Signal(SPRAM_WIDTH, name=f"data_out_{b}_{c}")
                m.submodules[f"spram_{b}_{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=address,
                    i_DATAIN=Cat(self.w_data[low:low + bits], Const(0, SPRAM_WIDTH - bits)),
                    i_MASKWREN=self._nibble_enables(c),
                    i_WREN=writing,
                    i_CHIPSELECT=select,
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0, 1),
                    i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1),
                    o_DATAOUT=data_out,
                )
                outputs.append(data_out[:bits])
            words.append(Cat(outputs))

        if self._banks == 1:
            m.d.comb += self.r_data.eq(words[0])
        else:
            read_bank = Signal(range(self._banks), reset_less=True)
            with m.If(self.en & ~writing):
                m.d.sync += read_bank.eq(bank)
            m.d.comb += self.r_data.eq(Array(words)[read_bank])
        return m
