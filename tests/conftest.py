"""Suite-wide pytest settings."""


def _rank(item):
    marker = item.get_closest_marker("duration")
    return (-(marker.args[0] if marker else 0), item.get_closest_marker("slow") is None)


def pytest_collection_modifyitems(config, items):
    """Start the longest tests first: those with a ``duration`` mark, longest first,
    then the others marked ``slow`` (each keeps its place among its kind).

    ``make test`` spreads the suite over two workers; the board builds and
    sweeps started first leave the short tests to even out the end, instead
    of one worker finishing a build alone.
    """
    items.sort(key=_rank)
