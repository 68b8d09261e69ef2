"""Network inputs: float arrays quantised to the int8 the accelerator reads.

A weight file's input scale comes from the calibration inputs: the largest
magnitude seen there becomes 127 (:func:`sim.golden.integerise.activation_scale`).
An input value beyond that range cannot be represented and saturates at
-128 or 127; :func:`quantize_inputs` counts such values instead of clipping
them silently, so that inputs scaled differently from the calibration data
(0..255 pixels against a model calibrated on 0..1, say) are noticed.
"""

from dataclasses import dataclass

import numpy as np

from sd_hw.integer_network import ACTIVATION_MAX, ACTIVATION_MIN
from sim.golden.model_file import check_inputs


__all__ = ["Saturation", "quantize_inputs"]


@dataclass(frozen=True)
class Saturation:
    """How many float input values fell outside the calibrated range.

    ``below`` values were clipped to -128 and ``above`` to 127, in ``inputs``
    of the ``count`` inputs; ``values`` is the total number of values and
    ``low``, ``high`` the float range that quantises without clipping.
    """

    below: int
    above: int
    inputs: int
    count: int
    values: int
    low: float
    high: float

    @property
    def clipped(self):
        return self.below + self.above

    def describe(self, source="inputs"):
        """One line for the user, or ``None`` when nothing saturated."""
        if not self.clipped:
            return None
        return (f"{source}: {self.clipped} of {self.values} input values ({self.inputs} of "
                f"{self.count} inputs) lie outside the calibrated range {self.low:.4g} .. "
                f"{self.high:.4g} and saturate ({self.below} at -128, {self.above} at 127); "
                f"scale the inputs as the calibration data was scaled (README, \"Inputs from "
                f"images\")")


def quantize_inputs(net, x, *, source="inputs"):
    """``(int8 inputs, Saturation or None)`` of ``x`` for the network of ``net``.

    int8 arrays are taken as they are (their saturation is ``None``); any
    other numeric array is checked (:func:`sim.golden.model_file.check_inputs`)
    and quantised with the file's input scale, the values it has to clip
    counted. ``source`` names the inputs in error messages.
    """
    x = np.asarray(x)
    if x.dtype == np.int8:
        return check_inputs(net.network, x, source=source).astype(np.int8), None
    x = check_inputs(net.network, x, source=source)
    q = np.rint(x / net.input_scale)
    below, above = q < ACTIVATION_MIN, q > ACTIVATION_MAX
    outside = (below | above).reshape(len(x), -1).any(axis=1)
    saturation = Saturation(
        below=int(np.count_nonzero(below)), above=int(np.count_nonzero(above)),
        inputs=int(np.count_nonzero(outside)), count=len(x), values=int(x.size),
        low=(ACTIVATION_MIN - 0.5) * net.input_scale,
        high=(ACTIVATION_MAX + 0.5) * net.input_scale)
    return np.clip(q, ACTIVATION_MIN, ACTIVATION_MAX).astype(np.int8), saturation
