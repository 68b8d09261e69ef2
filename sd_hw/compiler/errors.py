"""Errors of the compiler."""

from ..errors import SdHwError


class CompileError(SdHwError):
    """A network that a core cannot run: unsupported, or too large for a buffer.

    The message names the layer, what it needs and the core's limit.
    """
