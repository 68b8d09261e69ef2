"""iCE40 UltraPlus hard blocks as components with a generic Amaranth model.

:class:`SinglePortRAM` (SB_SPRAM256KA) and :class:`Mac16` (SB_MAC16) lower
to the hard block on an iCE40 platform that has it, or on request, and to
plain Amaranth (a ``Memory``, arithmetic) elsewhere, with the same cycle
behaviour. docs/blocks/primitives.md describes them.
"""

from ._lowering import LOWERINGS
from .mac16 import MODES, Mac16
from .registered_read import RegisteredReadPort
from .spram import SinglePortRAM


__all__ = ["LOWERINGS", "MODES", "Mac16", "RegisteredReadPort", "SinglePortRAM"]
