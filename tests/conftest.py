"""Suite-wide pytest settings."""


def pytest_collection_modifyitems(config, items):
    """Run the tests marked ``slow`` first (each keeps its place among its kind).

    ``make test`` spreads the suite over two workers; the longest tests
    (board builds, sweeps, Verilator runs) started first leave the short
    ones to even out the end, instead of one worker finishing a build alone.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
