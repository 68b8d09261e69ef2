"""Errors sd-hw reports to its users.

Every problem with user input (a model file, a weight file, a parameter) is
raised as a :class:`SdHwError` whose message names the file, field or
parameter and what is allowed. The command line prints the message alone,
without a traceback.
"""


class SdHwError(ValueError):
    """A problem with user input, stated so the user can fix it."""


class NetworkSpecError(SdHwError):
    """A network description that sd-hw cannot accept."""


class WeightFileError(SdHwError):
    """A weight file that cannot be read: truncated, corrupted, or of another version."""


class ParameterError(SdHwError):
    """A parameter outside its allowed range."""


class ModelFileError(SdHwError):
    """A float model (.npz) or an array file (.npy: inputs, labels, calibration)
    that cannot be read: not an archive, damaged, or holding the wrong kind of array."""


class ConfigFileError(ParameterError):
    """A configuration file (JSON) that cannot be read or holds a bad field."""


class OutputPathError(SdHwError):
    """An output path that cannot be written: a missing folder, or a folder where a file
    is to be written."""


def shown(value, limit=60):
    """``repr(value)`` cut to ``limit`` characters, for messages about untrusted data."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long for repr()
        text = f"<integer of about {value.bit_length() * 0.30103:.0f} digits>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_range(name, value, low, high, *, kind=int):
    """Return ``value`` converted to ``kind`` if ``low <= value <= high``, else raise.

    The message names the parameter and the allowed range.
    """
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)
                                        and not float(value).is_integer()):
            raise TypeError
        converted = kind(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"parameter {name!r} must be {'an integer' if kind is int else 'a number'}, "
            f"got {shown(value)}") from None
    if kind is float and converted != converted:
        raise ParameterError(f"parameter {name!r} must be a number, got NaN")
    if not (low <= converted <= high):
        raise ParameterError(
            f"parameter {name!r} is {shown(converted)}, allowed range is {low} to {high}")
    return converted
