"""docs/benchmarks.json: one record per board x design x network, from several benchmarks.

Each benchmark that writes there is a *writer* (its script's name). A record
carries at least :data:`FIELDS`: what ran (board, design, network), the
resources of its build, its median fmax, cycles per inference, dense-equivalent
MAC/s, weight bits on chip and parameters, whether the figures were measured
by the run or quoted from elsewhere (``source``), and the run stamp. A figure
the run did not produce (no build, a refused network) is ``null``. Other keys
may follow. A writer replaces all of its records at once (:func:`merged`), so
that no record of an earlier run of it survives; the records of the other
writers are kept.
"""

import json
import numbers
from pathlib import Path

__all__ = ["FIELDS", "FIGURES", "SOURCES", "record", "merged", "write_merged"]

#: The figures of a record: numbers, or None when the run did not produce them.
FIGURES = ("lut_or_lc", "dsp", "bram", "spram", "fmax_mhz_median", "cycles_per_inference",
           "dense_equivalent_macs_per_s", "weight_bits_on_chip", "parameters")
#: The keys every record has.
FIELDS = ("board", "design", "network") + FIGURES + ("source", "stamp")
#: ``measured``: obtained by the run that wrote the record; ``quoted``: constants of
#: the benchmark, from the publication or measurement its record names.
SOURCES = ("measured", "quoted")


def record(*, board, design, network, source, stamp, **figures):
    """One record: the :data:`FIGURES` given (the others None) and any extra keys."""
    for name, value in (("board", board), ("design", design), ("network", network),
                        ("stamp", stamp)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"record field {name!r} must be a non-empty string, got {value!r}")
    if source not in SOURCES:
        raise ValueError(f"record field 'source' is {source!r}, allowed values are "
                         f"{', '.join(map(repr, SOURCES))}")
    for name in FIGURES:
        value = figures.get(name)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Real)):
            raise ValueError(f"record field {name!r} of {board}/{design}/{network} must be a "
                             f"number or None, got {value!r}")
    result = {"board": board, "design": design, "network": network}
    result.update({name: _plain(figures.pop(name, None)) for name in FIGURES})
    result.update(source=source, stamp=stamp)
    result.update({name: _plain(value) for name, value in figures.items()})
    return result


def _plain(value):
    """NumPy scalars as Python numbers, so that the record is JSON."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _key(rec):
    return rec["board"], rec["design"], rec["network"]


def merged(existing, writer, records):
    """``existing`` records without ``writer``'s, plus ``records`` marked as ``writer``'s.

    Sorted by board, design and network. A key written twice, or already
    held by another writer, raises ValueError naming it.
    """
    kept = [r for r in existing if r.get("writer") != writer]
    taken = {_key(r): r.get("writer") for r in kept}
    new = []
    for rec in records:
        missing = [name for name in FIELDS if name not in rec]
        if missing:
            raise ValueError(f"record {rec!r} lacks {', '.join(missing)}")
        key = _key(rec)
        if key in taken:
            raise ValueError(f"record {'/'.join(key)} of {writer} is already written by "
                             f"{taken[key]}")
        taken[key] = writer
        new.append({**rec, "writer": writer})
    return sorted(kept + new, key=_key)


def write_merged(path, writer, records):
    """Merge ``writer``'s ``records`` into the JSON file at ``path`` (created if absent)."""
    path = Path(path)
    existing = json.loads(path.read_text())["records"] if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "description": "sd-hw benchmarks: one record per board x design x network; "
                       "fields are described in bench/benchmark_records.py",
        "records": merged(existing, writer, records)}, indent=1) + "\n")
