"""Every input sd-hw reads, mutated: refused with the project's own error, or read into
something that encodes back to the same bytes -- never a traceback, never a hang.

Kinds of input, each fuzzed from valid seeds with structured mutants (fields, dtypes,
shapes, JSON values) and file-level mutants (bit flips, overwrites, insertions,
truncations), drawn by hypothesis (derandomised, so every run draws the same mutants):

* model files (.npz), through :func:`sim.golden.model_file.load_model`;
* weight files, through :func:`sd_hw.weight_file.read`, raw and with the CRC fixed up
  after the mutation (so that the field checks behind the CRC are reached); an
  accepted file must re-encode byte for byte and run on the golden model;
* inputs and labels (.npy), as ``sd-hw evaluate`` reads them;
* core configurations (``--config`` JSON), as every command with core options reads them;
* command lines, through :func:`sim.cli.main` in-process: exit status 0 or 2 only;
* the host link at the stream level: mutated request frames into the simulated link
  (one simulation per batch, seeded with numpy's Generator), each followed by a valid
  request that must be answered within a bounded number of cycles.

The quick suite draws :data:`QUICK` mutants per kind; the ``slow`` one :data:`SLOW`,
prints the count per kind and writes the table of docs/fuzzing.md to
``build/fuzzing-summary.md``.
"""

import argparse
import collections
import contextlib
import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sd_hw import weight_file
from sd_hw.config import AcceleratorConfig
from sd_hw.core.config import CoreConfig
from sd_hw.core.core import SDCore
from sd_hw.core.host_map import Space, address
from sd_hw.errors import SdHwError
from sd_hw.link import protocol
from sd_hw.link.host_link import HostLink
from sd_hw.link.protocol import Command, Status
from sd_hw.serial.config import SerialConfig
from sim import cli
from sim.golden.model_file import load_model, load_npy, parse_npy, save_model
from sim.golden.nn import init_params
from sim.golden.reference import run
from sim.streams import stream_put

from factories import TINY, random_integer_network

QUICK = 300
SLOW = 10_000
#: Mutants run per kind in this session (printed by the slow test).
COUNTS = collections.Counter()
REFUSED = collections.Counter()

MLP = {"input_shape": [6], "layers": [
    {"type": "linear", "name": "fc1", "in_features": 6, "out_features": 4},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "in_features": 4, "out_features": 3}]}


def fuzz(kind, examples, strategy):
    """Decorator: run the function on ``examples`` values of ``strategy`` right away,
    counting them under ``kind``."""
    def run_cases(body):
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck),
                  phases=(Phase.explicit, Phase.generate, Phase.shrink))
        @given(strategy)
        def case(value):
            COUNTS[kind] += 1
            try:
                body(value)
            except SdHwError:
                REFUSED[kind] += 1
        case()
        return body
    return run_cases


# Byte-level mutation. -----------------------------------------------------------

INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0x30, 0x39, 0x22, 0x5B, 0x7B]

byte_edits = st.lists(st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]),
    st.floats(0, 1, allow_nan=False), st.integers(0, 255), st.integers(1, 16)),
    min_size=1, max_size=6)


def apply_edits(data, edits):
    data = bytearray(data)
    for op, where, value, size in edits:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if op == "flip" and data:
            data[at] ^= 1 << (value % 8)
        elif op == "set" and data:
            data[at] = INTERESTING[value % len(INTERESTING)] if value < 128 else value
        elif op == "insert":
            data[at:at] = bytes([value]) * size
        elif op == "delete":
            del data[at:at + size]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data[at:at] = data[at:at + size]
    return bytes(data)


# JSON values that trouble parsers: deep nesting, huge and odd numbers, odd strings.
odd_json = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
    st.sampled_from([0, -1, 1, 2, 3, 65535, 65536, 2 ** 31, 2 ** 63, 10 ** 4000, 1.0, 1.5,
                     -0.0, 1e308, "", "x", "\ud800", "a.b", "conv2d", "linear", "serial",
                     "sd", [], {}, [1], "\x00", "é" * 200]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth))


def json_text(value):
    """JSON of ``value``; strings starting with '[' and made of brackets are spliced in raw
    (deeply nested arrays)."""
    raw = {}

    def walk(v):
        if isinstance(v, str) and v[:1] == "[" and set(v) <= {"[", "]"}:
            key = f"@@raw{len(raw)}@@"
            raw[key] = v
            return key
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    text = json.dumps(walk(value))
    for key, piece in raw.items():
        text = text.replace(f'"{key}"', piece)
    return text


def edit_json(description, path_choices, value, action):
    """``description`` with the field at one of its paths replaced, deleted, or a new field."""
    description = json.loads(json.dumps(description))
    paths = []

    def collect(node, trail):
        if isinstance(node, dict):
            for key, child in node.items():
                paths.append(trail + (key,))
                collect(child, trail + (key,))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                paths.append(trail + (index,))
                collect(child, trail + (index,))
    collect(description, ())
    if not paths:
        return value
    trail = paths[path_choices % len(paths)]
    parent = description
    for step in trail[:-1]:
        parent = parent[step]
    if action == "replace":
        parent[trail[-1]] = value
    elif action == "delete":
        del parent[trail[-1]]
    elif isinstance(parent, dict):
        parent["extra"] = value
    else:
        parent.append(value)
    return description


json_edits = st.tuples(st.integers(0, 10 ** 6), odd_json,
                       st.sampled_from(["replace", "replace", "delete", "add"]))


# Model files. ----------------------------------------------------------------------

def model_arrays(network_dict):
    from sd_hw.network import Network
    network = Network.from_dict(network_dict)
    arrays = {f"{k}": v.astype(np.float32) for k, v in init_params(network, seed=3).items()}
    arrays["calibration"] = np.random.default_rng(4).random(
        (4, *network.input_shape)).astype(np.float32)
    return arrays


MODEL_SEEDS = [(TINY.to_dict(), model_arrays(TINY.to_dict())), (MLP, model_arrays(MLP))]

ODD_ARRAYS = [np.zeros(3, np.complex64), np.array(["a", "b"]), np.array([b"ab"]),
              np.zeros(2, "V4"), np.array(["2020-01-01"], "datetime64[D]"),
              np.zeros(2, np.float16), np.array([np.nan]), np.array([np.inf, 1]),
              np.zeros((0,), np.float32), np.array(True), np.zeros((2, 2), np.int64) + 2 ** 62,
              np.zeros(5, np.uint8), np.array(7.0), np.zeros((1, 1, 1, 1, 1), np.float64),
              np.zeros(3, [("a", "<f4"), ("b", "<i2")]), np.asfortranarray(np.ones((3, 2)))]

model_mutants = st.one_of(
    # Structured: an array replaced, dropped or added; the network JSON edited.
    st.tuples(st.just("array"), st.integers(0, 1), st.integers(0, 100),
              st.sampled_from(range(len(ODD_ARRAYS))), st.sampled_from(["replace", "drop", "add"])),
    st.tuples(st.just("network"), st.integers(0, 1), json_edits),
    st.tuples(st.just("network text"), st.integers(0, 1), byte_edits),
    # File level: the bytes of a valid archive, stored or deflated.
    st.tuples(st.just("bytes"), st.integers(0, 3), byte_edits))


def model_bytes(arrays, compressed):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def build_model_mutant(mutant):
    kind, seed = mutant[0], mutant[1]
    description, arrays = MODEL_SEEDS[seed % 2]
    arrays = dict(arrays)
    network_text = json.dumps(description)
    if kind == "array":
        _, _, which, odd, action = mutant
        names = sorted(arrays)
        name = names[which % len(names)]
        if action == "replace":
            arrays[name] = ODD_ARRAYS[odd]
        elif action == "drop":
            del arrays[name]
        else:
            arrays[f"extra{odd}"] = ODD_ARRAYS[odd]
    elif kind == "network":
        network_text = json_text(edit_json(description, *mutant[2]))
    elif kind == "network text":
        network_text = apply_edits(network_text.encode(), mutant[2]).decode("utf-8", "replace")
    if kind != "bytes":
        return model_bytes({"network": np.array(network_text), **arrays}, compressed=True)
    return apply_edits(model_bytes({"network": np.array(network_text), **arrays},
                                   compressed=seed >= 2), mutant[2])


def check_model_file(path, data):
    path.write_bytes(data)
    model = load_model(path)
    # Accepted: it saves and loads back to the same network and (float32) weights.
    again = path.with_name("again.npz")
    save_model(again, model.network, model.params, model.calibration)
    reread = load_model(again)
    assert reread.network == model.network
    for key, value in model.params.items():
        assert np.array_equal(reread.params[key], value.astype(np.float32))


def fuzz_model_files(tmp_path, examples):
    path = tmp_path / "model.npz"

    @fuzz("model file (.npz)", examples, model_mutants)
    def _(mutant):
        check_model_file(path, build_model_mutant(mutant))


# Weight files. ---------------------------------------------------------------------

def weight_seeds():
    nets = [random_integer_network(TINY, 1, block_rows=4),
            random_integer_network(TINY, 2, dense=("c2",), code_bits=2, block_rows=7),
            random_integer_network(TINY, 3, dense=True, metadata={"note": "x", "n": [1, 2]})]
    return [weight_file.write_with_layout(net) for net in nets]


WEIGHT_SEEDS = weight_seeds()


def fix_crc(data):
    if len(data) < weight_file.HEADER_SIZE + weight_file.CRC_SIZE:
        return data
    body = data[:-weight_file.CRC_SIZE]
    return body + struct.pack("<I", zlib.crc32(body))


def regions(layout):
    """(offset, length) of every field worth aiming at: header fields, table entries,
    the JSON texts and every section."""
    spans = [(0, weight_file.HEADER_SIZE)]
    spans += [(layer.entry_offset, weight_file.TABLE_ENTRY_SIZE)
              for layer in layout.layers.values()]
    network = weight_file.HEADER_SIZE + len(layout.layers) * weight_file.TABLE_ENTRY_SIZE
    spans += [(network, layout.network_bytes),
              (network + layout.network_bytes, layout.metadata_bytes)]
    spans += [span for layer in layout.layers.values() for span in layer.sections.values()
              if span[1]]
    return spans


weight_mutants = st.tuples(
    st.integers(0, len(WEIGHT_SEEDS) - 1),
    st.sampled_from(["crc fixed", "crc fixed", "field", "field", "raw"]),
    byte_edits, st.integers(0, 10 ** 6), st.integers(0, 2 ** 64 - 1), st.integers(1, 8))


def build_weight_mutant(mutant):
    seed, how, edits, region, value, size = mutant
    data, layout = WEIGHT_SEEDS[seed]
    if how == "field":
        # Overwrite 1..8 bytes inside one field or section with an extreme value.
        offset, length = regions(layout)[region % len(regions(layout))]
        at = offset + (value % max(length, 1))
        chunk = value.to_bytes(8, "little")[:size]
        data = data[:at] + chunk + data[at + len(chunk):]
        return fix_crc(data[:len(WEIGHT_SEEDS[seed][0])])
    data = apply_edits(data, edits)
    return fix_crc(data) if how == "crc fixed" else data


def check_weight_file(data):
    net = weight_file.read(data, source="fuzz.sdw")
    assert weight_file.write(net) == data  # accepted: the same bytes again
    x = np.random.default_rng(len(data)).integers(-128, 128, (2, *net.network.input_shape))
    run(net, x.astype(np.int8))  # an SdHwError (accumulator range) is a refusal too


def fuzz_weight_files(examples):
    @fuzz("weight file", examples, weight_mutants)
    def _(mutant):
        check_weight_file(build_weight_mutant(mutant))


# Inputs and labels (.npy). -------------------------------------------------------------

INPUT_NET = random_integer_network(TINY, 5, block_rows=4)
INPUT_SEEDS = [np.random.default_rng(6).random((3, 2, 4, 4)),
               np.random.default_rng(7).integers(-128, 128, (2, 2, 4, 4)).astype(np.int8),
               np.zeros((2, 4, 4), np.float32)]
LABELS = np.array([1, 0, 4])

npy_mutants = st.one_of(
    st.tuples(st.just("bytes"), st.integers(0, len(INPUT_SEEDS)), byte_edits),
    st.tuples(st.just("array"), st.sampled_from(range(len(ODD_ARRAYS))), st.integers(0, 3)),
    st.tuples(st.just("values"), st.integers(0, len(INPUT_SEEDS) - 1),
              st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e-300, 2 ** 70, -129, 255]),
              st.sampled_from(["float64", "float32", "int64", "uint8", "int8", "float16",
                               "bool", ">f8", ">i4"])),
    st.tuples(st.just("shape"), st.integers(0, len(INPUT_SEEDS) - 1),
              st.lists(st.integers(0, 6), max_size=5)))


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def build_npy_mutant(mutant):
    kind = mutant[0]
    if kind == "bytes":
        seed = (INPUT_SEEDS + [LABELS])[mutant[1]]
        data = npy_bytes(seed)
        if mutant[1] == 1:  # sometimes an archive where an array belongs
            data = model_bytes({"x": seed}, compressed=False)
        return apply_edits(data, mutant[2])
    if kind == "array":
        return npy_bytes(ODD_ARRAYS[mutant[1]])
    if kind == "values":
        _, seed, value, dtype = mutant
        with np.errstate(all="ignore"):
            array = np.array(INPUT_SEEDS[seed], dtype=np.float64)
            array.flat[::3] = value
            return npy_bytes(array.astype(dtype))
    _, seed, shape = mutant
    array = INPUT_SEEDS[seed].reshape(-1)
    size = int(np.prod(shape)) if shape else 1
    return npy_bytes(np.resize(array, size).reshape(shape))


def check_npy(path, data):
    path.write_bytes(data)
    x = cli._load_inputs(INPUT_NET, path)
    assert x.dtype == np.int8 and x.shape[1:] == tuple(INPUT_NET.network.input_shape)
    assert np.array_equal(parse_npy(npy_bytes(x), source="again"), x)
    try:
        labels = cli._load_labels(path, 1)
    except SdHwError:
        return
    assert labels.dtype.kind in "iu"


def check_labels(path, data):
    path.write_bytes(data)
    labels = cli._load_labels(path, 2)
    assert labels.dtype.kind in "iu" and labels.shape == (2,)


def fuzz_inputs(tmp_path, examples):
    path = tmp_path / "x.npy"

    @fuzz("inputs and labels (.npy)", examples, npy_mutants)
    def _(mutant):
        data = build_npy_mutant(mutant)
        try:
            check_labels(path, data)
        except SdHwError:
            pass
        check_npy(path, data)


# Core configurations (--config JSON). ---------------------------------------------------

CONFIG_SEEDS = [CoreConfig().to_dict(), {"core": "serial", **SerialConfig().to_dict()},
                CoreConfig(datapath=AcceleratorConfig(lanes=2, dataflow="factored"),
                           coefficients="unpacked").to_dict()]

config_mutants = st.one_of(
    st.tuples(st.just("json"), st.integers(0, len(CONFIG_SEEDS) - 1), json_edits),
    st.tuples(st.just("two"), st.integers(0, len(CONFIG_SEEDS) - 1), json_edits, json_edits),
    st.tuples(st.just("bytes"), st.integers(0, len(CONFIG_SEEDS) - 1), byte_edits))


def build_config_mutant(mutant):
    description = CONFIG_SEEDS[mutant[1]]
    if mutant[0] == "json":
        return json_text(edit_json(description, *mutant[2])).encode("utf-8", "surrogatepass")
    if mutant[0] == "two":
        once = edit_json(description, *mutant[2])
        return json_text(edit_json(once, *mutant[3])).encode("utf-8", "surrogatepass")
    return apply_edits(json.dumps(description).encode(), mutant[2])


def check_config(path, data, args):
    path.write_bytes(data)
    config = cli.core_config_from_args(args)
    again = type(config).from_dict(config.to_dict())
    assert again == config and again.to_dict() == config.to_dict()


def fuzz_configs(tmp_path, examples):
    path = tmp_path / "core.json"
    args = cli.build_parser().parse_args(["config", "--config", str(path)])

    @fuzz("core configuration (JSON)", examples, config_mutants)
    def _(mutant):
        check_config(path, build_config_mutant(mutant), args)


# Command lines. -----------------------------------------------------------------------------

def cli_files(folder):
    """Valid and invalid files the command lines name."""
    from sim.golden.model_file import save_model as save
    from sd_hw.network import Network
    network = Network.from_dict(MLP)
    save(folder / "model.npz", network, init_params(network, seed=1),
         calibration=np.random.default_rng(2).random((8, 6)))
    weight_file.save(INPUT_NET, folder / "net.sdw")
    np.save(folder / "x.npy", INPUT_SEEDS[0])
    np.save(folder / "y.npy", LABELS)
    np.save(folder / "s.npy", np.array(["a", "b", "c"]))
    np.savez(folder / "x.npz", x=INPUT_SEEDS[0])
    (folder / "core.json").write_text(json.dumps(CoreConfig().to_dict()))
    (folder / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (folder / "empty").write_bytes(b"")
    (folder / "adir").mkdir()


COMMANDS = {
    "inspect": ["{d}/net.sdw"],
    "evaluate": ["{d}/net.sdw", "--inputs", "{d}/x.npy"],
    "config": [],
    "compress": ["{d}/model.npz", "-o", "{d}/out.sdw", "--iterations", "1"],
    "boards": [],
    "flash": ["--board", "icebreaker", "{d}/empty", "--dry-run"],
}
OPTIONS = ["--json", "--labels", "--dataflow", "-o", "--inputs", "--lanes", "--config",
           "--block-rows", "--code-bits", "--theta", "--iterations", "--prune", "--dense",
           "--accumulator-bits", "--calibration", "--core", "--weights", "--coefficients",
           "--row-lookahead", "--activation-depth", "--epochs", "--seed", "--count", "--baud",
           "--preset", "--retrain", "--dataset", "--vector-wise", "--no-counters", "--help",
           "--stream-bits", "--dataflow", "--basis-bits"]
VALUES = ["{d}/net.sdw", "{d}/x.npy", "{d}/y.npy", "{d}/s.npy", "{d}/x.npz", "{d}/model.npz",
          "{d}/core.json", "{d}/deep.json", "{d}/empty", "{d}/adir", "{d}/missing/out.sdw",
          "{d}/absent.npy", "{d}/new.npy", "-1", "0", "1", "2", "3", "8", "64", "4097",
          "1e309", "nan", "inf", "-0", "0.5", "abc", "", "9" * 5000, "fc1=0.5", "fc9=2",
          "rebuild", "factored", "serial", "sd", "official", "none", "ste", "digits",
          "unpacked", "dense", "\udcff", "--", "-"]

argv_mutants = st.tuples(
    st.sampled_from(sorted(COMMANDS)),
    st.lists(st.tuples(st.sampled_from(["keep", "drop", "replace", "insert option",
                                        "insert value", "swap"]),
                       st.integers(0, 100), st.sampled_from(OPTIONS), st.sampled_from(VALUES)),
             max_size=5))


def build_argv(mutant, folder):
    command, edits = mutant
    argv = list(COMMANDS[command])
    for op, where, option, value in edits:
        at = where % (len(argv) + 1)
        if op == "drop" and argv:
            del argv[at % len(argv)]
        elif op == "replace" and argv:
            argv[at % len(argv)] = value
        elif op == "insert option":
            argv[at:at] = [option, value]
        elif op == "insert value":
            argv.insert(at, value)
        elif op == "swap" and len(argv) > 1:
            i = at % (len(argv) - 1)
            argv[i], argv[i + 1] = argv[i + 1], argv[i]
    return [command] + [arg.replace("{d}", str(folder)) for arg in argv]


def check_argv(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    assert "Traceback" not in err.getvalue()
    # 1: a check the command makes failed; the only one these command lines can reach is
    # compress's or evaluate's verdict that the network does not fit the chosen core.
    fit_verdict = (status == 1 and argv[0] in ("compress", "evaluate")
                   and "fit: the network does not fit the core of" in out.getvalue())
    assert status in (0, 2) or fit_verdict, (argv, status, out.getvalue(), err.getvalue())
    if status == 2 and "--help" not in argv:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sd-hw: error: "), err.getvalue()
    return status


def fuzz_command_lines(tmp_path, examples):
    cli_files(tmp_path)

    @fuzz("command line", examples, argv_mutants)
    def _(mutant):
        argv = build_argv(mutant, tmp_path)
        # The slow commands only with options that keep them fast.
        if argv[0] == "compress" and any(a in argv for a in ("--retrain", "--iterations")):
            if "--retrain" in argv or argv[argv.index("--iterations") + 1:][:1] not in (
                    ["1"], ["0"], ["-1"], ["abc"], ["nan"], [""]):
                return
        with contextlib.chdir(tmp_path):  # relative output names land in the test's folder
            check_argv(argv)


# Host link. ------------------------------------------------------------------------------

LINK_TIMEOUT = 16
LINK_CONFIG = CoreConfig(datapath=AcceleratorConfig(lanes=1), activation_depth=256,
                         weight_depth=64, basis_depth=16, index_depth=32, param_depth=16,
                         output_depth=16, program_depth=16)
GUARD = address(Space.ACTIVATIONS, 10)
SCRATCH = address(Space.ACTIVATIONS, 40)
GUARD_VALUE = 0x5B  # activations are int8: a word reads back as its sign-extended low byte
PROBE = protocol.read_request(GUARD, 1)
#: Cycles to wait for the answer to the request after a mutant: if the mutant's bytes took
#: the request in, the link's timeout has dropped it by then, and the request is sent again.
ANSWER_CYCLES = 4 * LINK_TIMEOUT + 64
#: Cycles after which the request sent again and not answered counts as a wedged link.
WEDGED_CYCLES = 2000


class FuzzedLink(wiring.Component):
    """The link on a small core's bus, byte streams outside (no UART)."""

    def __init__(self):
        self.link = HostLink(timeout_cycles=LINK_TIMEOUT)
        super().__init__({"rx": wiring.In(self.link.rx.signature.flip()),
                          "tx": wiring.Out(self.link.tx.signature.flip().flip())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = self.link
        m.submodules.core = core = SDCore(LINK_CONFIG)
        wiring.connect(m, self.link.bus, core.host)
        wiring.connect(m, wiring.flipped(self.rx), self.link.rx)
        wiring.connect(m, self.link.tx, wiring.flipped(self.tx))
        m.d.comb += self.link.done.eq(core.done)
        return m


def link_mutants(rng, count):
    """Mutated frames: bit flips, overwrites, truncations and garbage around requests
    (their CRC now wrong), and well-formed frames with odd commands and lengths."""
    bases = [protocol.write_request(SCRATCH, [7, 8, 9]), protocol.read_request(SCRATCH, 2),
             protocol.request(Command.IDENT), protocol.write_request(GUARD, [GUARD_VALUE])]
    for _ in range(count):
        frame = bytearray(bases[rng.integers(len(bases))])
        kind = rng.integers(6)
        if kind == 0:
            for _ in range(rng.integers(1, 4)):
                at = rng.integers(len(frame))
                frame[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            frame[rng.integers(len(frame))] = rng.integers(256)
        elif kind == 2:
            frame = frame[:rng.integers(1, len(frame))]
        elif kind == 3:
            frame = bytearray(rng.integers(0, 256, rng.integers(1, 12)).astype(np.uint8)) + frame
        elif kind == 4:
            frame = bytearray(rng.integers(0, 256, rng.integers(1, 16)).astype(np.uint8))
        else:
            command = int(rng.choice([Command.IDENT, Command.READ, Command.WRITE, 0x04, 0x7F,
                                      0xFF]))
            payload = bytes(rng.integers(0, 256, rng.integers(0, 14)).astype(np.uint8))
            if command == Command.WRITE and len(payload) >= 4:
                payload = struct.pack("<I", SCRATCH) + payload[4:]
            if command == Command.READ and len(payload) >= 4:
                payload = struct.pack("<I", SCRATCH) + payload[4:]
            frame = bytearray(protocol.request(command, payload))
        yield bytes(frame)


def writes_guard(frame):
    """The value a mutant writes to the guard word if it is a valid WRITE covering it."""
    if len(frame) < 11 or frame[0] != protocol.REQUEST_SYNC:
        return None
    command, length = struct.unpack_from("<BH", frame, 1)
    if command != Command.WRITE or len(frame) != length + 6 or length < 8 or length % 4:
        return None
    if struct.unpack_from("<H", frame, len(frame) - 2)[0] != protocol.crc16(frame[1:-2]):
        return None
    (start,) = struct.unpack_from("<I", frame, 3)
    index = GUARD - start
    if 0 <= index < (length - 4) // 4:
        return struct.unpack_from("<I", frame, 7 + 4 * index)[0]
    return None


def fuzz_host_link(seed, count):
    """Send ``count`` mutants, each followed by the probe (a READ of the guard word), in
    one simulation; return the statuses of the replies seen."""
    dut = FuzzedLink()
    rng = np.random.default_rng(seed)
    mutants = list(link_mutants(rng, count))
    received = bytearray()
    replies = []
    state = {"guard": GUARD_VALUE, "done": 0, "cycles": 0, "again": 0}

    def parse():
        while len(received) >= 6:
            assert received[0] == protocol.REPLY_SYNC, f"reply starts with {received[0]:#x}"
            status, length = struct.unpack_from("<BH", received, 1)
            if len(received) < length + 6:
                return
            body = bytes(received[1:length + 4])
            (crc,) = struct.unpack_from("<H", received, length + 4)
            assert crc == protocol.crc16(body), "reply with a wrong CRC"
            assert status in Status._value2member_map_, f"unknown status {status}"
            replies.append((status, bytes(received[4:length + 4])))
            del received[:length + 6]

    async def collector(ctx):
        stall = random.Random(seed)
        while True:
            ready = stall.random() > 0.1
            state["cycles"] += 1
            ctx.set(dut.tx.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if ready and valid:
                received.append(payload)
                parse()

    async def bench(ctx):
        stall = random.Random(seed + 1)
        await stream_put(ctx, dut.rx, protocol.write_request(GUARD, [GUARD_VALUE]))
        for mutant in mutants:
            written = writes_guard(mutant)
            if written is not None:
                state["guard"] = ((written & 0xFF) ^ 0x80) - 0x80 & 0xFFFFFFFF
            answered = False
            for attempt in range(2):
                before = len(replies)
                await stream_put(ctx, dut.rx, (mutant if attempt == 0 else b"") + PROBE,
                                 stall=0.1, rng=stall)
                for _ in range(ANSWER_CYCLES if attempt == 0 else WEDGED_CYCLES):
                    await ctx.tick()
                    if len(replies) > before and replies[-1] == (
                            Status.OK, struct.pack("<I", state["guard"])):
                        answered = True
                        break
                if answered:
                    break
                state["again"] += 1
            assert answered, (f"the link did not answer the request after mutant "
                              f"{mutant.hex(' ')} (replies {replies[-3:]})")
            state["done"] += 1

    simulator = Simulator(dut)
    simulator.add_clock(1e-6)
    simulator.add_testbench(bench)
    simulator.add_testbench(collector, background=True)
    simulator.run()
    assert state["done"] == count
    print(f"host link: {count} mutants, {state['cycles']} cycles, {state['again']} requests "
          f"sent again after the link's timeout")
    return collections.Counter(Status(status).name for status, _ in replies)


# The tests. ------------------------------------------------------------------------------------

def test_fuzz_model_files(tmp_path):
    fuzz_model_files(tmp_path, QUICK)


def test_fuzz_weight_files():
    fuzz_weight_files(QUICK)


def test_fuzz_inputs_and_labels(tmp_path):
    fuzz_inputs(tmp_path, QUICK)


def test_fuzz_core_configurations(tmp_path):
    fuzz_configs(tmp_path, QUICK)


def test_fuzz_command_lines(tmp_path):
    fuzz_command_lines(tmp_path, QUICK)


def test_fuzz_host_link():
    statuses = fuzz_host_link(seed=1, count=QUICK)
    assert statuses["BAD_CRC"] and statuses["OK"]  # both kinds of answer were reached


FILE_KINDS = {"model file (.npz)": fuzz_model_files, "weight file": fuzz_weight_files,
              "inputs and labels (.npy)": fuzz_inputs,
              "core configuration (JSON)": fuzz_configs, "command line": fuzz_command_lines}
HOST_LINK = "host link frames"
#: Mutants per simulation of the host link.
LINK_BATCH = 1000


@pytest.mark.slow
@pytest.mark.duration(900)
@pytest.mark.parametrize("kind", [*FILE_KINDS, HOST_LINK])
def test_fuzz_every_input_kind_10000(tmp_path, kind):
    """:data:`SLOW` mutants of one input kind; the counts go to stdout and, if the
    environment names a file in SD_HW_FUZZ_SUMMARY, into that JSON file
    (bench/bench_fuzz.py makes docs/fuzzing.md of it)."""
    import os
    import time
    COUNTS[kind] = REFUSED[kind] = 0
    start = time.perf_counter()
    if kind == HOST_LINK:
        statuses = collections.Counter()
        for batch in range(-(-SLOW // LINK_BATCH)):
            statuses += fuzz_host_link(seed=100 + batch, count=LINK_BATCH)
            COUNTS[kind] += LINK_BATCH
        REFUSED[kind] = sum(n for name, n in statuses.items() if name != "OK")
    elif kind == "weight file":
        FILE_KINDS[kind](SLOW)
    else:
        FILE_KINDS[kind](tmp_path, SLOW)
    seconds = time.perf_counter() - start
    print(f"\n{kind}: {COUNTS[kind]} mutants, {REFUSED[kind]} refused"
          f"{' (error replies)' if kind == HOST_LINK else ''}, no traceback, no hang, "
          f"{seconds:.0f} s")
    assert COUNTS[kind] >= SLOW
    summary = os.environ.get("SD_HW_FUZZ_SUMMARY")
    if summary:
        path = Path(summary)
        record = json.loads(path.read_text()) if path.exists() else {}
        record[kind] = {"mutants": COUNTS[kind], "refused": REFUSED[kind],
                        "seconds": round(seconds, 1)}
        path.write_text(json.dumps(record, indent=1))
