"""Shared bases (``shared_basis`` = G): decomposition, integerisation, golden
dataflows, retraining, weight file and storage report.

Files in tests/data were written by sd-hw 901e098, before shared bases
existed: ``decompose-g1.npz`` holds that code's decomposition and
integerisation of fixed random layers (G = 1 must reproduce them bit for
bit), ``weights-v1.0.sdw`` a version 1.0 weight file of the TINY network
and ``weights-v1.0.npz`` its golden logits on fixed inputs.
"""

import contextlib
import dataclasses
import io
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from factories import TINY, assert_networks_equal, random_integer_network
from sd_hw import weight_file
from sd_hw.errors import ParameterError, SdHwError, WeightFileError
from sd_hw.integer_network import DecomposedWeights
from sd_hw.storage import storage_report
from sim.compress import CompressOptions, calibrate, decompose, integerise, project, prune_masks
from sim.golden.decompose import (DecomposeParams, decompose_blocks, decompose_weight,
                                  decompose_weights, weight_to_rows)
from sim.golden.integerise import integerise_decomposed
from sim.golden.nn import init_params
from sim.golden.reference import rebuild_weight, run
from sim.golden.train import quantise_coefficients, retrain_factors

DATA = Path(__file__).parent / "data"
HEADER = weight_file.HEADER_SIZE
ENTRY = weight_file.TABLE_ENTRY_SIZE


# Parameters. --------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 65536, -1, 2.5, True, "four"])
def test_shared_basis_out_of_range_is_refused(value):
    with pytest.raises(ParameterError, match="shared_basis"):
        DecomposeParams(shared_basis=value)


def test_official_preset_refuses_shared_bases():
    assert DecomposeParams.official().shared_basis == 1
    with pytest.raises(ParameterError, match="parameter 'shared_basis' is 4; the official "
                                             "preset gives every filter its own bases"):
        DecomposeParams.official(shared_basis=4)


# Decomposition, worked by hand. ---------------------------------------------

def test_two_filters_get_one_basis():
    # Two linear filters of one Ce row each, rows already powers of two.
    # Per filter, B = pinv(A) A is the projection on that filter's row:
    # diag(1, 0, 0) and diag(0, 1, 0). Shared (G = 2), the block is both
    # rows stacked and B the projection on their span, diag(1, 1, 0).
    W = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    alone = decompose_weight(W, DecomposeParams())
    assert np.allclose(alone.basis[0, 0], np.diag([1.0, 0, 0]), atol=1e-12)
    assert np.allclose(alone.basis[1, 0], np.diag([0.0, 1, 0]), atol=1e-12)
    shared = decompose_weight(W, DecomposeParams(shared_basis=2))
    assert shared.shared_basis == 2 and shared.basis_groups == 1
    assert np.array_equal(shared.basis[0], shared.basis[1])
    assert np.allclose(shared.basis[0, 0], np.diag([1.0, 1, 0]), atol=1e-12)
    assert np.array_equal(shared.coefficients, W.reshape(2, 1, 3))
    assert np.allclose(shared.reconstruct(), W, atol=1e-12)


def test_the_last_group_may_be_smaller():
    # G = 3 over four filters: filters 0-2 span all three columns (B = I),
    # filter 3 alone is the last group (B = diag(0, 0, 1)).
    W = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 4.0], [0, 0, -1.0]])
    factors = decompose_weight(W, DecomposeParams(shared_basis=3))
    assert factors.basis_groups == 2
    assert np.allclose(factors.group_basis()[0, 0], np.eye(3), atol=1e-12)
    assert np.allclose(factors.group_basis()[1, 0], np.diag([0.0, 0, 1]), atol=1e-12)
    assert all(np.array_equal(factors.basis[m], factors.basis[0]) for m in range(3))
    assert np.allclose(factors.reconstruct(), W, atol=1e-12)
    # G larger than the layer: one group of all filters.
    whole = decompose_weight(W, DecomposeParams(shared_basis=100))
    assert whole.shared_basis == 4 and whole.basis_groups == 1


def test_the_exponent_window_spans_the_whole_group():
    # code_bits = 2 keeps 4 exponents per block. Filter 0 holds 16 = 2^4,
    # filter 1 holds 2^-4. Alone, each filter's block keeps its value; in
    # one group the window is 2^1 .. 2^4, so filter 1's coefficient drops:
    # Q = [[16, 0, 0], [0, 0, 0]], B = pinv(Q) A = diag(1, 0, 0).
    W = np.array([[16.0, 0, 0], [0, 2.0 ** -4, 0]])
    params = DecomposeParams(code_bits=2)
    alone = decompose_weight(W, params)
    assert np.allclose(alone.reconstruct(), W, atol=1e-12)
    shared = decompose_weight(W, dataclasses.replace(params, shared_basis=2))
    assert shared.coefficients.tolist() == [[[16.0, 0, 0]], [[0, 0, 0]]]
    assert np.allclose(shared.basis[0, 0], np.diag([1.0, 0, 0]), atol=1e-12)
    assert np.allclose(shared.reconstruct(), [[16.0, 0, 0], [0, 0, 0]], atol=1e-12)


@pytest.mark.parametrize("shape, block_rows, group", [((7, 5, 3, 3), 6, 3), ((9, 40), 4, 4),
                                                      ((5, 2, 1, 1), 192, 2)])
def test_shared_decomposition_is_the_block_solver_on_stacked_rows(shape, block_rows, group):
    rng = np.random.default_rng(sum(shape))
    W = rng.normal(size=shape)
    params = DecomposeParams(block_rows=block_rows, shared_basis=group)
    factors = decompose_weight(W, params)
    rows = weight_to_rows(W)
    m, r, _ = rows.shape
    length = min(block_rows, r)
    n_blocks = -(-r // length)
    stacked, where = [], []
    for g in range(0, m, group):
        for b in range(n_blocks):
            block = np.zeros((group * length, 3))
            for i, f in enumerate(range(g, min(g + group, m))):
                part = rows[f, b * length:(b + 1) * length]
                block[i * length:i * length + len(part)] = part
                where.append((len(stacked), i, f, b, len(part)))
            stacked.append(block)
    ce, basis, _ = decompose_blocks(np.array(stacked), params)
    for n, i, f, b, size in where:
        assert np.array_equal(factors.basis[f, b], basis[n])
        assert np.array_equal(factors.coefficients[f, b * length:b * length + size],
                              ce[n, i * length:i * length + size])
    low, high = factors.exponent_range()
    for g in range(0, m, group):
        span = high[g:g + group].max(axis=0) - low[g:g + group].min(axis=0) + 1
        assert np.all(span <= 2 ** params.code_bits)


def test_shared_basis_one_reproduces_the_per_filter_decomposition():
    fixture = np.load(DATA / "decompose-g1.npz")
    weights = {"conv": fixture["weight_conv"], "fc": fixture["weight_fc"]}
    for preset, params in (("sdhw", DecomposeParams(block_rows=96, shared_basis=1)),
                           ("official", DecomposeParams.official(shared_basis=1))):
        result = decompose_weights(weights, params, prune={"conv": 0.25})
        for name, factors in result.items():
            assert factors.shared_basis == 1
            for field in ("ce", "basis", "iterations"):
                got = {"ce": factors.coefficients, "basis": factors.basis,
                       "iterations": factors.iterations}[field]
                expected = fixture[f"{preset}_{name}_{field}"]
                assert got.dtype == expected.dtype and np.array_equal(got, expected), \
                    (preset, name, field)
            if preset != "sdhw":
                continue
            for final in (False, True):
                w, scale = integerise_decomposed(factors, code_bits=3, per_layer_scale=final)
                key = f"{preset}_{name}_int{int(final)}"
                assert w.shared_basis == 1
                for field in ("basis", "exponent", "present", "negative"):
                    assert np.array_equal(getattr(w, field), fixture[f"{key}_{field}"]), field
                assert np.array_equal(scale, fixture[f"{key}_scale"])


# Integerisation. ------------------------------------------------------------

def hand_factors(shared):
    basis = np.array([[0.5, 0.25, 0], [0, 1, 0], [0, 0, 0.75]])
    return SimpleNamespace(coefficients=np.array([[[1.0, 0, 0]], [[0, 2.0 ** -3, 0]]]),
                           basis=np.stack([basis, basis])[:, None], block_rows=1,
                           shared_basis=shared)


def test_a_group_gets_one_exponent_base_and_one_scale():
    # Group of two: the block's largest exponent is 0 (channel 0), so both
    # channels fold 2^-7 into B; B_int = rint(B * 127) and the scale 2^-7/127
    # are the same for both; channel 1's 2^-3 becomes offset 4.
    weights, scale = integerise_decomposed(hand_factors(2), code_bits=3)
    b_int = [[64, 32, 0], [0, 127, 0], [0, 0, 95]]
    assert weights.shared_basis == 2
    assert weights.basis[0, 0].tolist() == b_int and weights.basis[1, 0].tolist() == b_int
    assert scale.tolist() == [2.0 ** -7 / 127] * 2
    assert weights.exponent[:, 0].tolist() == [[7, 0, 0], [0, 4, 0]]
    assert weights.present[:, 0].tolist() == [[True, False, False], [False, True, False]]
    # Per channel, channel 1 has its own base 2^-10 and scale.
    alone, alone_scale = integerise_decomposed(hand_factors(1), code_bits=3)
    assert alone.exponent[1, 0].tolist() == [0, 7, 0]
    assert alone_scale.tolist() == [2.0 ** -7 / 127, 2.0 ** -10 / 127]


def test_integerise_refuses_bases_that_are_not_shared():
    factors = hand_factors(2)
    factors.basis = factors.basis.copy()
    factors.basis[1, 0, 2, 2] = 0.5
    with pytest.raises(SdHwError, match="layer 'fc': shared_basis is 2, but channel 1 has "
                                        "other bases than channel 0"):
        integerise_decomposed(factors, code_bits=3, layer="fc")


@pytest.mark.parametrize("per_layer", [False, True])
def test_integer_bases_are_identical_across_a_group(per_layer):
    rng = np.random.default_rng(5)
    factors = decompose_weight(rng.normal(size=(10, 30, 3, 3)),
                               DecomposeParams(block_rows=24, shared_basis=4))
    weights, scale = integerise_decomposed(factors, code_bits=3, per_layer_scale=per_layer)
    assert weights.shared_basis == 4 and weights.basis_groups == 3
    groups = weights.group_basis()  # raises if a channel differs from its group
    for m in range(10):
        assert np.array_equal(weights.basis[m], groups[m // 4])
        assert scale[m] == scale[m // 4 * 4]
    # The integer weights stand for the float factors (int8 rounding only).
    rebuilt = rebuild_weight(weights, factors.shape) * scale[:, None, None, None]
    error = np.linalg.norm(rebuilt - factors.reconstruct()) / np.linalg.norm(factors.reconstruct())
    assert error < 0.05


# Golden model and compression flow. ----------------------------------------

@pytest.fixture(scope="module")
def shared_flow():
    """TINY compressed with shared bases of 2: network, float params, integer network."""
    params = init_params(TINY, seed=3)
    options = CompressOptions(decompose=DecomposeParams(block_rows=6, shared_basis=2),
                              prune={"c1": 0.3})
    masks = prune_masks(TINY, params, options)
    decomposed = decompose(TINY, params, masks, options)
    x = np.random.default_rng(4).random((24, *TINY.input_shape))
    scales = calibrate(TINY, project(params, decomposed), x)
    return decomposed, integerise(TINY, params, decomposed, scales, options), x


def test_factored_and_rebuild_dataflows_agree_with_shared_bases(shared_flow):
    decomposed, net, x = shared_flow
    for name, layer in net.layers.items():
        assert layer.weights.shared_basis == min(2, layer.weights.out_channels), name
    x_int = net.quantize_input(x)
    rebuilt = run(net, x_int, dataflow="rebuild", layer_outputs=True)
    factored = run(net, x_int, dataflow="factored", layer_outputs=True)
    for a, b in zip(rebuilt, factored):
        assert np.array_equal(a, b)
    assert len(np.unique(rebuilt[-1])) > 4  # not a constant output


def test_factored_dataflow_uses_the_group_basis():
    net = random_integer_network(TINY, 9, block_rows=4, shared_basis=3, dense={"c2"})
    net.accumulator_bits = 48
    for layer in net.layers.values():
        layer.bias //= 65536
    x = np.random.default_rng(1).integers(-128, 128, (3, *TINY.input_shape)).astype(np.int8)
    assert np.array_equal(run(net, x, dataflow="factored"), run(net, x, dataflow="rebuild"))
    # A channel whose basis differs from its group's is refused, not ignored.
    net.layers["c1"].weights.basis[1, 0, 0, 0] ^= 1
    with pytest.raises(SdHwError, match="channel 1 has other bases than channel 0"):
        run(net, x, dataflow="factored")


def test_compress_cli_shared_basis(tmp_path):
    from sim.cli import main
    from sim.golden.model_file import save_model
    model = tmp_path / "tiny.npz"
    save_model(model, TINY, init_params(TINY, seed=1),
               calibration=np.random.default_rng(2).random((16, *TINY.input_shape)))
    output = tmp_path / "tiny.sdw"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compress", str(model), "-o", str(output), "--shared-basis", "2",
                     "--iterations", "5"]) == 0
    net = weight_file.load(output)
    assert [layer.weights.shared_basis for layer in net.layers.values()] == [2, 2, 2]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["inspect", str(output)]) == 0
    assert "bases shared by 2 channels" in stdout.getvalue()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main(["compress", str(model), "-o", str(output), "--shared-basis", "0"]) == 2
    assert "parameter 'shared_basis' is 0" in stderr.getvalue()


# Retraining. ---------------------------------------------------------------

def tiny_data(seed=0, n=48):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *TINY.input_shape))
    y = rng.integers(0, 5, n)
    return SimpleNamespace(x_train=x, y_train=y, x_val=x[:16], y_val=y[:16])


def test_straight_through_retraining_keeps_bases_shared(monkeypatch):
    import sim.flow
    seen = []
    real = sim.flow.decompose

    def recording(*args):
        result = real(*args)
        seen.append(result)
        return result

    monkeypatch.setattr(sim.flow, "decompose", recording)
    params = init_params(TINY, seed=5)
    options = CompressOptions(decompose=DecomposeParams(block_rows=6, shared_basis=2,
                                                        iterations=5))
    masks = prune_masks(TINY, params, options)
    best, history = sim.flow.retrain(TINY, params, tiny_data(), masks, options, method="ste",
                                     epochs=2)
    assert len(history) == 2 and len(seen) > 2  # the projection ran at every mini-batch
    for decomposed in seen:
        for name, factors in decomposed.items():
            assert factors.shared_basis == min(2, factors.out_channels), name
            groups = np.repeat(factors.group_basis(), 2, axis=0)[:factors.out_channels]
            assert np.array_equal(factors.basis, groups), name
    final = real(TINY, best, masks, options)
    for factors in final.values():
        integerise_decomposed(factors, code_bits=3)[0].group_basis()


def test_sd_training_keeps_bases_shared():
    params = init_params(TINY, seed=6)
    settings = DecomposeParams(block_rows=6, shared_basis=2, iterations=5)
    factors = {name: decompose_weight(params[f"{name}.weight"], settings)
               for name in ("c1", "fc")}
    best, _, history = retrain_factors(TINY, params, tiny_data(1), factors,
                                       decompose_params=settings, epochs=2, lr=0.05)
    assert len(history) == 2
    moved = False
    for name, f in best.items():
        m = f.out_channels
        assert f.shared_basis == 2
        assert np.array_equal(f.basis, np.repeat(f.basis[::2], 2, axis=0)[:m]), name
        moved |= not np.array_equal(f.basis, factors[name].basis)
        low, high = f.exponent_range()
        for g in range(0, m, 2):
            span = high[g:g + 2].max(axis=0) - low[g:g + 2].min(axis=0) + 1
            assert np.all(span <= 8)
        integerise_decomposed(f, code_bits=3)[0].group_basis()
    assert moved  # the bases did train


def test_sd_training_window_is_the_group_window():
    latent = np.array([[[16.0, 0, 0]], [[0, 2.0 ** -4, 0]]])
    mask = latent != 0
    alone = quantise_coefficients(latent, mask, 1, code_bits=2)
    assert np.array_equal(alone, latent)
    shared = quantise_coefficients(latent, mask, 1, code_bits=2, shared_basis=2)
    assert shared.tolist() == [[[16.0, 0, 0]], [[0, 0, 0]]]


# Weight file and storage. ---------------------------------------------------

def shared_net(shared=2, seed=7):
    return random_integer_network(TINY, seed, block_rows=4, dense={"c2"},
                                  metadata={"shared": shared}, shared_basis=shared)


def entry(position, offset):
    return HEADER + position * ENTRY + offset


def patch(data, offset, fmt, *values):
    import zlib
    body = bytearray(data[:-4])
    struct.pack_into("<" + fmt, body, offset, *values)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


@pytest.mark.parametrize("shared", [1, 2, 3])
def test_weight_file_round_trip_with_shared_bases(shared):
    net = shared_net(shared)
    data = weight_file.write(net)
    assert struct.unpack_from("<HH", data, 8) == (1, 1)
    back = weight_file.read(data)
    assert_networks_equal(net, back)
    for position, name in ((0, "c1"), (2, "fc")):
        weights = net.layers[name].weights
        group, = struct.unpack_from("<I", data, entry(position, 12))
        assert group == weights.shared_basis == min(shared, weights.out_channels)
        _, length = struct.unpack_from("<QQ", data, entry(position, 48))  # basis section
        assert length == 9 * weights.basis_groups * weights.n_blocks
    dense_group, = struct.unpack_from("<I", data, entry(1, 12))
    assert dense_group == 0


def test_weight_file_refuses_a_group_size_that_does_not_fit_the_layer():
    data = weight_file.write(shared_net(2))  # c1: 3 channels, groups of 2 -> 2 groups
    with pytest.raises(WeightFileError, match="layer 'c1': basis_group is 0, but the layer "
                                              "has 3 output channels"):
        weight_file.read(patch(data, entry(0, 12), "I", 0), source="net.sdw")
    with pytest.raises(WeightFileError, match="layer 'c1': basis_group is 4, but the layer "
                                              r"has 3 output channels \(allowed basis_group "
                                              r"1 to 3\)"):
        weight_file.read(patch(data, entry(0, 12), "I", 4))
    with pytest.raises(WeightFileError, match=r"layer 'c1' basis has \d+ bytes, expected "
                                              r"\d+ .*\(3 group\(s\) of basis_group = 1"):
        weight_file.read(patch(data, entry(0, 12), "I", 1))
    with pytest.raises(WeightFileError, match="layer 'c2' is dense but has basis_group 2"):
        weight_file.read(patch(data, entry(1, 12), "I", 2))


def test_weight_file_refuses_to_write_bases_that_are_not_shared():
    net = shared_net(2)
    net.layers["fc"].weights.basis[3, 0, 1, 1] ^= 1
    with pytest.raises(SdHwError, match="cannot write weight file: layer 'fc': shared_basis "
                                        "is 2, but channel 3 has other bases than channel 2"):
        weight_file.write(net)


def test_version_1_0_file_still_loads():
    data = (DATA / "weights-v1.0.sdw").read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 0)
    fixture = np.load(DATA / "weights-v1.0.npz")
    net = weight_file.read(data)
    assert net.metadata == {"fixture": "v1.0"}
    for name, layer in net.layers.items():
        if layer.decomposed:
            assert layer.weights.shared_basis == 1
            assert np.array_equal(layer.weights.basis, fixture[f"basis_{name}"])
    assert np.array_equal(run(net, fixture["inputs"]), fixture["logits"])
    assert np.array_equal(run(net, fixture["inputs"], dataflow="factored"), fixture["logits"])
    # Written again, it is a version 1.1 file of the same network.
    assert_networks_equal(weight_file.read(weight_file.write(net)), net)
    # In version 1.0 the basis_group field is reserved and must be zero.
    with pytest.raises(WeightFileError, match="layer 'c1': reserved field is not zero"):
        weight_file.read(patch(data, entry(0, 12), "I", 1))


def test_storage_counts_a_shared_basis_once_per_group():
    per_filter = shared_net(1, seed=8)
    shared = shared_net(1, seed=8)
    for name in ("c1", "fc"):
        weights = shared.layers[name].weights
        m = weights.out_channels
        weights.basis = np.repeat(weights.basis[::2], 2, axis=0)[:m]
        shared.layers[name].weights = dataclasses.replace(weights, shared_basis=2)
    a, b = storage_report(per_filter), storage_report(shared)
    for ra, rb, spec in zip(a.layers, b.layers, TINY.compute_layers):
        assert (ra.code_bits, ra.index_bits, ra.dense_bits) == \
            (rb.code_bits, rb.index_bits, rb.dense_bits)
        if ra.decomposed:
            n_blocks = per_filter.layers[spec.name].weights.n_blocks
            assert ra.basis_bits == 72 * spec.out_size * n_blocks
            assert rb.basis_bits == 72 * -(-spec.out_size // 2) * n_blocks
    assert b.total.total_bits == 8 * len(weight_file.write(shared))


def test_decomposed_weights_group_basis_checks_the_group_size():
    weights = shared_net(2).layers["fc"].weights
    for bad in (0, weights.out_channels + 1, 1.5):
        with pytest.raises(SdHwError, match="shared_basis is .*; allowed 1 to the 5 output"):
            dataclasses.replace(weights, shared_basis=bad).group_basis()
    assert isinstance(weights, DecomposedWeights)
