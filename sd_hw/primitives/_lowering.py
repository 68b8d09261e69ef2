"""The choice between an iCE40 hard block and its generic Amaranth model.

Shared by the components of :mod:`sd_hw.primitives`; see their ``lowering``
parameter.
"""

from amaranth.vendor import SiliconBluePlatform

from ..errors import ParameterError


__all__ = ["LOWERINGS", "checked_lowering", "uses_primitive"]

#: ``auto``: the hard block when elaborated for an iCE40 device that has it,
#: the generic model otherwise; ``ice40``: always the hard block (an
#: ``Instance``, simulated with yosys' ``cells_sim.v``); ``generic``: always
#: the Amaranth model.
LOWERINGS = ("auto", "ice40", "generic")


def checked_lowering(lowering):
    """Return ``lowering`` if it is one of :data:`LOWERINGS`, else raise."""
    if lowering not in LOWERINGS:
        raise ParameterError(f"parameter 'lowering' is {lowering!r}, allowed values are "
                             f"{', '.join(map(repr, LOWERINGS))}")
    return lowering


def uses_primitive(lowering, platform, device_prefixes):
    """Whether to elaborate the hard block.

    ``device_prefixes`` are the iCE40 device names (``platform.device``
    prefixes) that have it.
    """
    if lowering == "auto":
        return (isinstance(platform, SiliconBluePlatform)
                and platform.device.startswith(tuple(device_prefixes)))
    return lowering == "ice40"
