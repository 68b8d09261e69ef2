"""The integer form of a SmartDeal network: the contract between the
software side (decomposition, golden model, weight file) and the hardware.

Number formats (docs/number-formats.md gives the reasoning):

* Activations are int8, symmetric, zero point 0: ``x_real = x_int * scale``.
* A decomposed layer stores, per output channel ``m`` and Ce row ``r``, up to
  three coefficients ``(-1)**negative * 2**exponent`` with ``exponent`` a
  ``code_bits``-bit offset ``0 .. 2**code_bits - 1``, and per block ``b`` a
  3x3 int8 basis. The rebuilt integer weight row is::

      w_int[m, r, :] = sum_j present[m, r, j] * (-1)**negative[m, r, j]
                                * (basis[m, b(r), j, :] << exponent[m, r, j])

  and the real weight is ``w_int * weight_scale[m]`` (the block's exponent
  base is folded into its basis, so one scale serves the whole channel).
  With shared bases, the channels of a group of ``shared_basis`` consecutive
  output channels hold bit-identical bases (one per block), so ``B . x`` can
  be computed once for the group.
* A dense layer stores int8 weights: ``w_real = w_int * weight_scale[m]``.
* Output channel ``m`` accumulates exactly in one integer accumulator:
  ``acc = sum(w_int * x_int) + bias[m]``. Intermediate layers requantise:
  ``y = clamp((acc * multiplier[m] + 2**(shift[m] - 1)) >> shift[m], -128, 127)``;
  the last compute layer outputs ``acc`` itself (the logits).
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import SdHwError
from .network import Network


__all__ = ["DecomposedWeights", "DenseWeights", "IntegerLayer", "IntegerNetwork",
           "ACTIVATION_MIN", "ACTIVATION_MAX", "MULTIPLIER_BITS"]

ACTIVATION_MIN = -128
ACTIVATION_MAX = 127
# Requantisation multipliers lie in [2**(MULTIPLIER_BITS - 1), 2**MULTIPLIER_BITS).
MULTIPLIER_BITS = 15


@dataclass(eq=False)
class DecomposedWeights:
    """Integer SmartDeal factors of one layer.

    ``present``, ``negative`` and ``exponent`` have shape ``(M, R, 3)``: ``M``
    output channels, ``R`` Ce rows per channel (see :func:`rows_per_channel`);
    ``basis`` has shape ``(M, n_blocks, 3, 3)`` and dtype int8, where
    ``n_blocks = ceil(R / block_rows)`` and row ``r`` belongs to block
    ``r // block_rows``. Absent coefficients have ``negative = exponent = 0``.

    ``shared_basis`` (1..M, default 1: a basis per channel and block): the
    channels are taken in groups of ``shared_basis`` consecutive ones (the
    last group may be smaller) whose bases are identical; ``basis`` holds
    each group's bases once per channel, :meth:`group_basis` once per group.
    """

    present: np.ndarray
    negative: np.ndarray
    exponent: np.ndarray
    basis: np.ndarray
    block_rows: int
    shared_basis: int = 1

    @property
    def out_channels(self):
        return self.present.shape[0]

    @property
    def rows(self):
        return self.present.shape[1]

    @property
    def n_blocks(self):
        return self.basis.shape[1]

    @property
    def basis_groups(self):
        """Number of basis groups, ``ceil(M / shared_basis)``."""
        return -(-self.out_channels // self.shared_basis)

    def group_of_channel(self):
        """Basis group of every output channel, shape ``(M,)``."""
        return np.arange(self.out_channels) // self.shared_basis

    def group_basis(self):
        """The bases once per group, ``(basis_groups, n_blocks, 3, 3)``.

        Raises :class:`~sd_hw.errors.SdHwError` if ``shared_basis`` is not
        1..M or a channel's bases differ from those of its group's first
        channel.
        """
        shared, m = self.shared_basis, self.out_channels
        if isinstance(shared, bool) or not isinstance(shared, (int, np.integer)) \
                or not 1 <= shared <= max(m, 1):
            raise SdHwError(f"shared_basis is {shared!r}; allowed 1 to the {m} output "
                            f"channels")
        groups = self.basis[::shared]
        differ = np.flatnonzero(np.any(np.repeat(groups, shared, axis=0)[:m] != self.basis,
                                       axis=(1, 2, 3)))
        if differ.size:
            channel = int(differ[0])
            raise SdHwError(f"shared_basis is {shared}, but channel {channel} has other bases "
                            f"than channel {channel - channel % shared}, the first of its "
                            f"group")
        return groups

    def block_of_row(self):
        """Block index of every Ce row, shape ``(R,)``."""
        return np.arange(self.rows) // self.block_rows

    def row_nonzero(self):
        """``(M, R)`` bool: the Ce row has at least one coefficient."""
        return self.present.any(axis=2)


@dataclass(eq=False)
class DenseWeights:
    """int8 weights of an undecomposed layer, in PyTorch's shape."""

    weight: np.ndarray

    def rows(self):
        """``(M, R, 3)`` weight rows in the order of a decomposed layer's Ce rows.

        A 3x3 convolution's row ``r`` is kernel row ``r % 3`` of input
        channel ``r // 3``; otherwise a row is three consecutive inputs, the
        last one zero-padded (:func:`rows_per_channel` rows either way).
        """
        weight = np.asarray(self.weight)
        m = weight.shape[0]
        if weight.ndim == 4 and weight.shape[2] == 3:
            return weight.reshape(m, -1, 3)
        flat = weight.reshape(m, -1)
        return np.pad(flat, ((0, 0), (0, -flat.shape[1] % 3))).reshape(m, -1, 3)


@dataclass(eq=False)
class IntegerLayer:
    """One compute layer (linear or conv2d) in integer form.

    ``bias`` is int32 in accumulator units (``weight_scale[m] * input_scale``).
    ``multiplier`` (int32) and ``shift`` (uint8) requantise to the next
    layer's ``output_scale``; both are zero on the final layer, which outputs
    its accumulators.
    """

    name: str
    weights: object  # DecomposedWeights or DenseWeights
    bias: np.ndarray
    weight_scale: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    input_scale: float
    output_scale: float
    final: bool = False

    @property
    def decomposed(self):
        return isinstance(self.weights, DecomposedWeights)


@dataclass(eq=False)
class IntegerNetwork:
    """A network description plus its compute layers in integer form."""

    network: Network
    layers: dict  # layer name -> IntegerLayer, for every compute layer
    input_scale: float
    code_bits: int = 3
    block_rows: int = 192
    accumulator_bits: int = 32
    metadata: dict = field(default_factory=dict)

    def quantize_input(self, x):
        """float input(s) -> int8, with the network's input scale."""
        q = np.rint(np.asarray(x, dtype=np.float64) / self.input_scale)
        return np.clip(q, ACTIVATION_MIN, ACTIVATION_MAX).astype(np.int8)


def rows_per_channel(layer):
    """Number of Ce rows of one output channel of a compute layer."""
    if layer.kind == "conv2d" and layer.kernel_size == 3:
        return 3 * layer.in_size
    return -(-layer.in_size // 3)
