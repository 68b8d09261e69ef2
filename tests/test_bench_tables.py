"""The pure parts of the benchmark tables: records, their JSON merge, the marked
sections of docs/benchmarks.md and the iCEBreaker table's rows and markdown."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.network import Network
from sd_hw.serial.compiler import compile_serial
from sd_hw.serial.config import SerialConfig

from factories import hardware_network

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import benchmark_records  # noqa: E402
import bench_up5k  # noqa: E402
import compare_report  # noqa: E402
from report_sections import UP5K_TABLE, marked, with_marked  # noqa: E402

STAMP = "test machine; 2026-12-04"
SMALL = Network.from_dict({"input_shape": [1, 6, 6], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
    {"type": "relu"}, {"type": "maxpool2d"}, {"type": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 36, "out_features": 3}]})


def _rec(design, network="net", **figures):
    return benchmark_records.record(board="icebreaker", design=design, network=network,
                                    source="measured", stamp=STAMP, **figures)


def test_a_record_has_every_field_and_plain_numbers():
    rec = _rec("SD", lut_or_lc=np.int64(4000), fmax_mhz_median=np.float32(30.5), note="x")
    assert set(benchmark_records.FIELDS) <= set(rec)
    assert rec["lut_or_lc"] == 4000 and type(rec["lut_or_lc"]) is int
    assert type(rec["fmax_mhz_median"]) is float and rec["dsp"] is None and rec["note"] == "x"
    json.dumps(rec)


@pytest.mark.parametrize("change, message", [
    ({"source": "guessed"}, "'source' is 'guessed'"),
    ({"board": ""}, "'board' must be a non-empty string"),
    ({"dsp": "8"}, "'dsp' of icebreaker/SD/net must be a number"),
    ({"dsp": True}, "'dsp' of icebreaker/SD/net must be a number"),
])
def test_a_bad_record_is_refused(change, message):
    fields = {"board": "icebreaker", "design": "SD", "network": "net", "source": "measured",
              "stamp": STAMP, **change}
    with pytest.raises(ValueError, match=message):
        benchmark_records.record(**fields)


def test_a_writer_replaces_all_of_its_records_and_keeps_the_others():
    first = benchmark_records.merged([], "a", [_rec("SD", "mlp"), _rec("SD", "cnn")])
    both = benchmark_records.merged(first, "b", [_rec("dense", "cnn")])
    again = benchmark_records.merged(both, "a", [_rec("SD", "cnn", dsp=8)])
    assert [(r["design"], r["network"], r["writer"]) for r in again] == [
        ("SD", "cnn", "a"), ("dense", "cnn", "b")]
    assert again[0]["dsp"] == 8


def test_a_key_written_twice_is_refused():
    existing = benchmark_records.merged([], "a", [_rec("SD")])
    with pytest.raises(ValueError, match="icebreaker/SD/net of b is already written by a"):
        benchmark_records.merged(existing, "b", [_rec("SD")])
    with pytest.raises(ValueError, match="icebreaker/SD/net of c is already written by c"):
        benchmark_records.merged([], "c", [_rec("SD"), _rec("SD")])
    with pytest.raises(ValueError, match="lacks stamp"):
        benchmark_records.merged([], "c", [{k: v for k, v in _rec("SD").items()
                                            if k != "stamp"}])


def test_write_merged_round_trips(tmp_path):
    path = tmp_path / "docs" / "benchmarks.json"
    benchmark_records.write_merged(path, "a", [_rec("SD")])
    benchmark_records.write_merged(path, "b", [_rec("dense")])
    benchmark_records.write_merged(path, "a", [_rec("SD", "cnn")])
    saved = json.loads(path.read_text())["records"]
    assert [(r["design"], r["network"]) for r in saved] == [("SD", "cnn"), ("dense", "net")]


def test_a_marked_section_is_inserted_then_replaced_and_kept_by_bench_compare(tmp_path):
    page = "# Title\n\nintro\n\n## Designs\n\ntable\n"
    once = with_marked(page, UP5K_TABLE, "first", before="## Designs")
    assert once.index(UP5K_TABLE[0]) < once.index("## Designs")
    assert marked(once, UP5K_TABLE) == "first"
    twice = with_marked(once, UP5K_TABLE, "second\nbody", before="## Designs")
    assert marked(twice, UP5K_TABLE) == "second\nbody" and "first" not in twice
    assert twice.count("## Designs") == 1 and twice.endswith("table\n")
    assert marked(with_marked("", UP5K_TABLE, "alone"), UP5K_TABLE) == "alone"
    path = tmp_path / "benchmarks.md"
    path.write_text(twice)
    assert compare_report.kept_up5k_table(path) == "second\nbody"
    assert compare_report.kept_up5k_table(tmp_path / "absent.md") is None


def test_the_serial_limits_are_those_of_the_compilers_usage():
    net = hardware_network(SMALL, 1, block_rows=4)
    config = SerialConfig(bank_depth=64, activation_bytes=256, basis_depth=16, param_depth=16,
                          output_depth=16, program_depth=16)
    usage = compile_serial(net, config).usage
    assert set(bench_up5k.SERIAL_LIMITS) == set(usage)
    assert all(hasattr(config, name) for name in bench_up5k.SERIAL_LIMITS.values())


def test_the_largest_network_scales_by_the_tightest_memory():
    config = SerialConfig(bank_depth=1000, basis_depth=100)
    usage = {"weight bank words": 250, "bases per lane": 50, "channel parameters": 1,
             "program words": 1, "activation bytes": 1, "output words": 0}
    assert bench_up5k.serial_largest(usage, config, 10) == (20, "bases per lane", 50, 100)
    usage["bases per lane"] = 10
    assert bench_up5k.serial_largest(usage, config, 10) == (40, "weight bank words", 250, 1000)


def test_the_dense_bound_counts_three_weights_a_row():
    config = CoreConfig(weights="dense", weight_depth=100, index_depth=64)
    assert bench_up5k.dense_weight_bound(config) == 3 * config.lanes * 64


def _serial_run(**changes):
    run = {"parameters": 1000, "cycles_per_inference": 500, "dense_equivalent_macs": 4000,
           "lane_macs_per_cycle": 2.5, "weight_bits_on_chip": 7777, "images": 2,
           "bit_exact": True, "counter_mismatches": [],
           "usage": {"weight bank words": 50, "bases per lane": 1, "channel parameters": 1,
                     "program words": 1, "activation bytes": 1, "output words": 1}}
    return {**run, **changes}


def test_serial_records_at_the_median_fmax():
    build = {"resources": {"lc": 4500, "dsp": 8, "bram": 20, "spram": 4},
             "fmax": (30.0, 32.0, 33.0)}
    config = SerialConfig(bank_depth=100)
    (rec,) = bench_up5k.serial_records("SD", build, {"mnist": _serial_run()}, config, STAMP)
    assert (rec["lut_or_lc"], rec["fmax_mhz_min"], rec["fmax_mhz_median"]) == (4500, 30.0, 32.0)
    assert rec["dense_equivalent_macs_per_s"] == pytest.approx(4000 / 500 * 32e6)
    assert rec["multiplier_macs_per_s"] == pytest.approx(2.5 * 32e6)
    assert rec["largest_network"].startswith("about 2,000 parameters")
    assert rec["bit_exact"] and rec["source"] == "measured"


def test_a_design_that_does_not_fit_is_a_row_with_the_reason():
    build = {"error": "the design does not fit the iCE40UP5K: it needs 6004 logic cells"}
    runs = {"a": _serial_run(), "b": {"refused": "weight bank words needs 18585"}}
    a, b = bench_up5k.serial_records("SD", build, runs, SerialConfig(), STAMP)
    assert a["lut_or_lc"] is None and a["dense_equivalent_macs_per_s"] is None
    assert a["cycles_per_inference"] == 500 and "6004 logic cells" in a["build_refused"]
    assert b["refused"] == "weight bank words needs 18585" and b["cycles_per_inference"] is None
    text = bench_up5k.markdown([a, b], stamp=STAMP, seeds=3, quick=False, config_text="x",
                               minutes=1)
    assert "**not placed:** the design does not fit the iCE40UP5K" in text
    assert "**refused by the compiler:** weight bank words needs 18585" in text


def test_the_dense_core_refusal_names_what_does_not_fit(monkeypatch):
    net = hardware_network(SMALL, 2, block_rows=4, dense=True)
    tiny = CoreConfig(datapath=AcceleratorConfig(lanes=1), weights="dense",
                      activation_depth=16, weight_depth=16, index_depth=16)
    roomy = CoreConfig(weights="dense")
    monkeypatch.setattr(bench_up5k, "dense_configs", lambda: [("tiny", tiny), ("roomy", roomy)])
    refused, fits = bench_up5k.dense_records(net, "small, int8", STAMP)
    assert refused["refused"].startswith("the network does not fit the core: ")
    for what in ("activation_depth = 16", "weight_depth = 16", "index_depth = 16"):
        assert what in refused["refused"]
    assert refused["weight_bits_on_chip"] is None
    assert "refused" not in fits and fits["weight_bits_on_chip"] > 0
    assert refused["int8_weight_bits"] == 8 * (4 * 9 + 36 * 3)
    assert refused["parameters"] == 4 * 9 + 4 + 36 * 3 + 3


def test_marlann_rows_are_quoted_and_labelled():
    published, remeasured = bench_up5k.marlann_records(STAMP)
    assert {published["source"], remeasured["source"]} == {"quoted"}
    assert "published" in published["design"] and "re-measured" in remeasured["design"]
    # Issue #13: 12.83 MACs a cycle at its median fmax is 376 MMAC/s.
    assert remeasured["dense_equivalent_macs_per_s"] == pytest.approx(376e6, rel=2e-3)
    assert (remeasured["lut_or_lc"], remeasured["bram"]) == (4093, 25)
    # Published: 154 MMAC/s at 12 MHz, 12.83 a cycle.
    assert published["multiplier_macs_per_cycle"] == pytest.approx(12.83, abs=5e-3)
    assert published["fmax_mhz_median"] is None


def test_the_markdown_table_shows_the_given_records():
    rec = _rec("SerialCore SD, 8 lanes", "mnist", lut_or_lc=4600, dsp=8, bram=30, spram=4,
               fmax_mhz_min=29.0, fmax_mhz_median=30.0, fmax_mhz_max=31.0,
               cycles_per_inference=20000, dense_equivalent_macs_per_s=600e6,
               multiplier_macs_per_s=120e6, dense_equivalent_macs_per_cycle=20.0,
               multiplier_macs_per_cycle=4.0, weight_bits_on_chip=500000, parameters=153898,
               images=16, bit_exact=True, largest_network="about 200,000 parameters")
    text = bench_up5k.markdown([rec] + bench_up5k.marlann_records(STAMP), stamp=STAMP,
                               seeds=3, quick=False, config_text="8 lanes", minutes=12)
    row = next(line for line in text.splitlines() if line.startswith("| SerialCore"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:9] == ["SerialCore SD, 8 lanes", "mnist", "measured", "4,600 / 5,280",
                         "8 / 8", "30 / 30", "4 / 4", "29.00 / **30.00** / 31.00", "20,000"]
    assert cells[9:12] == ["600 MMAC/s", "120 MMAC/s", "20.00 (125%), 4.00 (25%)"]
    assert cells[12:] == ["500,000", "153,898", "about 200,000 parameters",
                          "bit-exact, counters match over 16 test images"]
    quoted = [line for line in text.splitlines() if line.startswith("| MARLANN")]
    assert len(quoted) == 2 and all("| quoted |" in line and "quoted: " in line
                                    for line in quoted)
    assert f"Run on {STAMP}." in text


def test_fewer_lanes_keep_the_bases_of_the_up5k_design():
    full = bench_up5k.serial_config(8)
    assert full == bench_up5k.bench_serial.UP5K_SERIAL
    two = bench_up5k.serial_config(2)
    assert two.lanes == 2 and two.basis_depth * 2 >= full.basis_depth * 8
    assert (two.bank_depth, two.weight_banks) == (full.bank_depth, full.weight_banks)
