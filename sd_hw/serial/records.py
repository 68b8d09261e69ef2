"""A decomposed layer's lane groups as the element-serial core stores them.

Lane group ``g`` computes output channels ``g * lanes .. g * lanes + lanes - 1``. Its
records (:mod:`sd_hw.serial.layouts`) are its Ce rows that are not zero in every one of
those channels, in row order; each lane's bases are those of the blocks that have a
record, in block order (a block whose rows are all skipped has no basis either). The
factored lanes keep one basis memory per group of ``basis_group`` lanes, whose channels
must then have the same bases.
"""

from dataclasses import dataclass

import numpy as np

from ..datapath.layouts import row_layout
from ..datapath.mac_lanes import MAC_WEIGHT_BITS, basis_column_layout
from ..errors import SdHwError
from .layouts import OFFSET_BITS, record_header_layout


__all__ = ["GroupRecords", "Geometry", "group_records", "rebuilt_rows"]


@dataclass(frozen=True)
class Geometry:
    """Where a layer's Ce rows find their activations: a 3x3 convolution over
    ``channels x height x width`` (of any stride and padding: the offsets are the
    input's), or a linear layer of ``inputs`` inputs."""

    conv: bool
    channels: int = 0
    height: int = 0
    width: int = 0
    inputs: int = 0

    def header(self, row):
        """``(offset, dy)`` of the record header of Ce row ``row`` (without
        ``new_block``); a linear layer's ``dy`` is the number of the row's columns past
        its inputs (0, 1 or 2)."""
        if self.conv:
            channel, dy = divmod(row, 3)
            return channel * self.height * self.width + dy * self.width, dy
        return 3 * row, max(0, 3 * row + 3 - self.inputs)


@dataclass
class GroupRecords:
    """One lane group: ``records`` (lists of ``1 + lanes`` words), and per basis memory
    (per lane, or per ``basis_group`` lanes) its bases as basis-memory words (``4`` per
    basis: columns 0..2 and an unused zero word)."""

    records: list
    bases: list
    blocks: int
    skipped_rows: int


def rebuilt_rows(weights):
    """``(M, R, 3)`` int64: every rebuilt integer weight row of a decomposed layer."""
    block = np.arange(weights.rows) // weights.block_rows
    basis = weights.basis.astype(np.int64)[:, block]                  # (M, R, 3, 3)
    scale = np.where(weights.present, 1 << weights.exponent.astype(np.int64), 0)
    scale = np.where(np.logical_and(weights.negative, weights.present), -scale, scale)
    return np.einsum("mrj,mrjc->mrc", scale, basis)


def group_records(weights, geometry, *, config, group, layer="layer", basis_group=1):
    """The :class:`GroupRecords` of lane group ``group`` of a decomposed layer.

    ``config`` is the :class:`~sd_hw.config.AcceleratorConfig` of the lanes;
    ``basis_group`` the lanes per basis memory (1 for the rebuilding lanes). Refuses
    (:class:`~sd_hw.errors.SdHwError`, naming ``layer``) an activation offset past the
    record header's reach; for the rebuilding lanes (``dataflow="rebuild"``) a rebuilt
    weight that does not fit their
    :data:`~sd_hw.datapath.mac_lanes.MAC_WEIGHT_BITS`-bit multiplier input; and for
    shared basis memories, channels of one basis group with different bases in a block
    that has a record.
    """
    lanes = config.lanes
    channels = range(group * lanes, min((group + 1) * lanes, weights.out_channels))
    present = weights.present[channels.start:channels.stop]
    limit = 1 << (MAC_WEIGHT_BITS - 1)
    rebuilt = rebuilt_rows(weights)[channels.start:channels.stop]
    if config.dataflow != "rebuild":
        rebuilt = rebuilt[:0]     # nothing is rebuilt: the factored lanes shift products
    if rebuilt.size and (rebuilt.min() < -limit or rebuilt.max() >= limit):
        m, r, c = np.argwhere((rebuilt < -limit) | (rebuilt >= limit))[0]
        raise SdHwError(
            f"layer {layer!r}: the rebuilt weight of channel {channels.start + m}, Ce row {r}, "
            f"column {c} is {rebuilt[m, r, c]}, outside the {MAC_WEIGHT_BITS}-bit range "
            f"[{-limit}, {limit - 1}] of the multipliers")
    live = np.flatnonzero(present.any(axis=(0, 2)))
    row_format = row_layout(config)
    header_format = record_header_layout()
    records = []
    blocks = []
    for row in live:
        offset, dy = geometry.header(int(row))
        if offset >= 1 << OFFSET_BITS:
            raise SdHwError(
                f"layer {layer!r}: Ce row {row} reads activations {offset} places past the "
                f"input's start; records reach {(1 << OFFSET_BITS) - 1}")
        block = int(row) // weights.block_rows
        new_block = bool(blocks) and block != blocks[-1]
        if not blocks or new_block:
            blocks.append(block)
        words = [header_format.const({"offset": offset, "dy": dy, "new_block": int(new_block)})
                 .as_value().value]
        for lane in range(lanes):
            if lane < len(channels):
                m = channels.start + lane
                mask = weights.present[m, row]
                words.append(row_format.const({
                    "present": sum(1 << j for j in range(3) if mask[j]),
                    "coefficients": [{"exponent": int(weights.exponent[m, row, j]) if mask[j]
                                      else 0,
                                      "negative": int(bool(weights.negative[m, row, j])
                                                      and bool(mask[j]))}
                                     for j in range(3)],
                    "last": 0}).as_value().value)
            else:
                words.append(0)
        records.append(words)
    column_format = basis_column_layout(config)
    bases = []
    for memory in range(lanes // basis_group):
        lane = memory * basis_group
        _check_shared(weights, channels, lane, basis_group, blocks, layer=layer, group=group)
        words = []
        for block in blocks:
            if lane < len(channels):
                basis = weights.basis[channels.start + lane, block]
                words += [column_format.const([int(basis[j, c]) for j in range(3)])
                          .as_value().value for c in range(3)]
            else:
                words += [0, 0, 0]
            words.append(0)
        bases.append(words)
    return GroupRecords(records=records, bases=bases, blocks=len(blocks),
                        skipped_rows=weights.rows - len(live))


def _check_shared(weights, channels, lane, basis_group, blocks, *, layer, group):
    """Refuse a basis group (lanes ``lane ..``) whose channels' bases differ in a block
    of ``blocks``."""
    members = range(channels.start + lane, min(channels.start + lane + basis_group,
                                               channels.stop))
    if len(members) < 2:
        return
    for block in blocks:
        reference = weights.basis[members.start, block]
        for channel in members[1:]:
            if not np.array_equal(weights.basis[channel, block], reference):
                raise SdHwError(
                    f"layer {layer!r}, lane group {group}, block {block}: channel {channel} "
                    f"has another basis than channel {members.start}, but channels "
                    f"{members.start}..{members.stop - 1} share one basis engine; decompose "
                    f"with --shared-basis {basis_group}, or use a smaller basis_group")
