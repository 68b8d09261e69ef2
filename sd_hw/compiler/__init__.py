"""From a weight file's :class:`~sd_hw.integer_network.IntegerNetwork` to the
program and memory images of an :class:`~sd_hw.core.core.SDCore`.

:func:`compile_network` is the entry point; :mod:`.plan` turns the layer list
into operations and places their tensors in the activation memory,
:mod:`.groups` lays out one compute layer's lane groups, and :mod:`.program`
assembles the images and checks that they fit the core.
"""

from .errors import CompileError
from .program import CompiledProgram, OpInfo, compile_network

__all__ = ["CompileError", "CompiledProgram", "OpInfo", "compile_network"]
