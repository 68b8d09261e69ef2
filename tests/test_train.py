"""The digits split, float training and SmartDeal-aware retraining."""

import numpy as np
import pytest

from sd_hw.errors import SdHwError
from sd_hw.network import Layer, Network
from sim.golden.digits import DEFAULT_CNN, DEFAULT_MLP, load_digits_split
from sim.golden.nn import accuracy, cross_entropy, forward, init_params
from sim.golden.train import (Adam, Validation, distillation_loss, evaluate, retrain_projection,
                              retrain_ste, train_float)


@pytest.fixture(scope="module")
def data():
    return load_digits_split(seed=0)


# ---------------------------------------------------------------------------
# Data

def test_split_is_a_stratified_partition(data):
    from sklearn.datasets import load_digits
    raw = load_digits()
    sizes = [len(data.x_train), len(data.x_val), len(data.x_test)]
    assert sum(sizes) == 1797
    assert sizes == pytest.approx([0.6 * 1797, 0.2 * 1797, 0.2 * 1797], abs=6)
    whole = np.bincount(raw.target, minlength=10) / 1797
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[1:] == (64,)
        assert x.min() >= 0 and x.max() <= 1
        # class proportions match the whole set to within a couple of images
        assert np.all(np.abs(np.bincount(y, minlength=10) - whole * len(y)) <= 2)
    # the splits together hold every (image, label) pair exactly once
    pairs = lambda x, y: sorted(zip(map(tuple, np.rint(x * 16).astype(int).tolist()),  # noqa: E731
                                    y.tolist()))
    together = pairs(np.concatenate([data.x_train, data.x_val, data.x_test]),
                     np.concatenate([data.y_train, data.y_val, data.y_test]))
    assert together == pairs(raw.data / 16, raw.target)


def test_split_is_deterministic_and_seeded(data):
    again = load_digits_split(seed=0)
    assert np.array_equal(again.x_train, data.x_train) and np.array_equal(again.y_val, data.y_val)
    other = load_digits_split(seed=1)
    assert not np.array_equal(other.y_train, data.y_train)


def test_inputs_for_network_shapes(data):
    assert data.inputs_for(DEFAULT_MLP, "train").shape == (len(data.x_train), 64)
    x = data.inputs_for(DEFAULT_CNN, "test")
    assert x.shape == (len(data.x_test), 1, 8, 8)
    assert np.array_equal(x[:, 0].reshape(len(x), 64), data.x_test)
    cnn = data.for_network(DEFAULT_CNN)
    assert cnn.x_val.shape == (len(data.x_val), 1, 8, 8) and cnn.y_val is data.y_val
    with pytest.raises(SdHwError, match="8x8 digits"):
        data.inputs_for((3, 8, 8), "train")
    with pytest.raises(SdHwError, match="split must be"):
        data.inputs_for(DEFAULT_MLP, "validation")


def test_inputs_are_read_only(data):
    with pytest.raises(ValueError):
        data.x_train[0, 0] = 1.0


def test_default_networks():
    assert DEFAULT_MLP.input_shape == (64,) and DEFAULT_MLP.output_shape == (10,)
    assert DEFAULT_CNN.input_shape == (1, 8, 8) and DEFAULT_CNN.output_shape == (10,)
    assert [l.name for l in DEFAULT_CNN.compute_layers] == ["conv1", "conv2", "fc"]
    assert [l.name for l in DEFAULT_MLP.compute_layers] == ["fc1", "fc2"]


# ---------------------------------------------------------------------------
# Float training

def test_adam_first_steps_against_formula():
    params = {"w.weight": np.array([1.0, -2.0])}
    adam = Adam(params, lr=0.1)
    g1, g2 = np.array([0.5, -4.0]), np.array([1.0, 2.0])
    adam.step(params, {"w.weight": g1})
    # the first bias-corrected step is lr * g / (|g| + eps)
    p1 = np.array([1.0, -2.0]) - 0.1 * g1 / (np.abs(g1) + 1e-8)
    np.testing.assert_allclose(params["w.weight"], p1, rtol=1e-12)
    np.testing.assert_allclose(p1, [0.9, -1.9], rtol=1e-6)
    adam.step(params, {"w.weight": g2})
    m = (0.9 * 0.1 * g1 + 0.1 * g2) / (1 - 0.9 ** 2)
    v = (0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2) / (1 - 0.999 ** 2)
    np.testing.assert_allclose(params["w.weight"],
                               p1 - 0.1 * m / (np.sqrt(v) + 1e-8), rtol=1e-9)


def test_adam_weight_decay_is_decoupled_and_on_weights_only():
    params = {"l.weight": np.array([2.0, -4.0]), "l.bias": np.array([2.0, -4.0])}
    adam = Adam(params, lr=0.1, weight_decay=0.5)
    zero = {k: np.zeros(2) for k in params}
    for _ in range(3):
        adam.step(params, zero)
    # no gradient: the weights shrink by (1 - lr * weight_decay) per step
    np.testing.assert_allclose(params["l.weight"], np.array([2.0, -4.0]) * 0.95 ** 3, rtol=1e-12)
    assert params["l.bias"].tolist() == [2.0, -4.0]


def test_training_is_deterministic(data):
    a = train_float(DEFAULT_MLP, data, epochs=2, seed=3)
    b = train_float(DEFAULT_MLP, data, epochs=2, seed=3)
    c = train_float(DEFAULT_MLP, data, epochs=2, seed=4)
    assert set(a) == set(b) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def test_mlp_reaches_95_percent(data):
    params = train_float(DEFAULT_MLP, data, epochs=30, seed=0)
    x_test = data.inputs_for(DEFAULT_MLP, "test")
    assert accuracy(DEFAULT_MLP, params, x_test, data.y_test) >= 0.95


def test_cnn_reaches_95_percent(data):
    # about 1.5 s on one core
    params = train_float(DEFAULT_CNN, data, epochs=30, seed=0)
    x_test = data.inputs_for(DEFAULT_CNN, "test")
    assert accuracy(DEFAULT_CNN, params, x_test, data.y_test) >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cnn_reaches_95_percent_on_other_splits(seed):
    data = load_digits_split(seed=seed)
    params = train_float(DEFAULT_CNN, data, epochs=40, seed=seed)
    assert accuracy(DEFAULT_CNN, params, data.inputs_for(DEFAULT_CNN, "test"),
                    data.y_test) >= 0.95


def test_train_accepts_flat_inputs_for_a_cnn(data):
    # data with (N, 64) inputs are reshaped to the CNN's (1, 8, 8)
    small = type(data)(data.x_train[:64], data.y_train[:64], data.x_val[:32], data.y_val[:32],
                       data.x_test[:32], data.y_test[:32])
    params = train_float(DEFAULT_CNN, small, epochs=1, seed=0)
    assert params["conv1.weight"].shape == (8, 1, 3, 3)


def test_train_rejects_mismatched_data(data):
    network = Network(input_shape=(32,), layers=(Layer("linear", "l", 32, 10),))
    with pytest.raises(SdHwError, match="input shape"):
        train_float(network, data, epochs=1)
    with pytest.raises(SdHwError, match="epochs"):
        train_float(DEFAULT_MLP, data, epochs=-1)


# ---------------------------------------------------------------------------
# Retraining with a simple projection: weights rounded to a grid

def grid(step):
    """Round every weight to a multiple of ``step``; biases unchanged."""
    def project(params):
        return {k: np.round(v / step) * step if k.endswith(".weight") else v
                for k, v in params.items()}
    return project


@pytest.fixture(scope="module")
def trained(data):
    return {"mlp": train_float(DEFAULT_MLP, data, epochs=30, seed=0),
            "cnn": train_float(DEFAULT_CNN, data, epochs=30, seed=0)}


def val_accuracy(network, params, data):
    return accuracy(network, params, data.inputs_for(network, "val"), data.y_val)


def validate(network, params, data):
    return Validation(*evaluate(network, params, data.inputs_for(network, "val"), data.y_val))


@pytest.mark.parametrize("method", [retrain_projection, retrain_ste])
@pytest.mark.parametrize("model,step", [("mlp", 0.5), ("cnn", 0.5)])
def test_retraining_beats_plain_projection(data, trained, method, model, step):
    network = {"mlp": DEFAULT_MLP, "cnn": DEFAULT_CNN}[model]
    project = grid(step)
    start = validate(network, project(trained[model]), data)
    best, history = method(network, trained[model], data, project, epochs=4, seed=0)
    chosen = validate(network, project(best), data)
    assert len(history) == 4 and all(isinstance(v, Validation) for v in history)
    # the candidate with the lowest validation loss, better than no retraining
    assert chosen == min(history + [start], key=lambda v: v.loss)
    assert chosen.loss < start.loss and chosen.accuracy > start.accuracy


@pytest.mark.parametrize("method", [retrain_projection, retrain_ste])
def test_retraining_returns_what_was_validated(data, trained, method):
    # a projection that is not idempotent: projecting the returned parameters
    # must give the validated model, projecting it again would not
    def project(params):
        return {k: 0.5 * np.round(v / 0.25) * 0.25 if k.endswith(".weight") else v
                for k, v in params.items()}

    best, history = method(DEFAULT_MLP, trained["mlp"], data, project, epochs=2, seed=0)
    candidates = history + [validate(DEFAULT_MLP, project(trained["mlp"]), data)]
    assert validate(DEFAULT_MLP, project(best), data) == min(candidates, key=lambda v: v.loss)
    assert validate(DEFAULT_MLP, project(project(best)), data) not in candidates


def test_ste_recovers_most_of_the_loss(data, trained):
    project = grid(0.5)
    best, _ = retrain_ste(DEFAULT_CNN, trained["cnn"], data, project, epochs=5, seed=0)
    assert val_accuracy(DEFAULT_CNN, project(best), data) >= 0.93


def test_retraining_keeps_the_start_if_nothing_helps(data, trained):
    # an identity projection with a learning rate too small to change anything
    params = trained["mlp"]
    best, history = retrain_projection(DEFAULT_MLP, params, data, lambda p: dict(p),
                                       epochs=1, seed=0, lr=1e-12)
    assert len(history) == 1
    assert val_accuracy(DEFAULT_MLP, best, data) == val_accuracy(DEFAULT_MLP, params, data)


def test_ste_projects_once_per_batch_and_epoch(data, trained):
    calls = []

    def project(params):
        calls.append(1)
        return grid(0.25)(params)

    small = type(data)(data.x_train[:100], data.y_train[:100], data.x_val, data.y_val,
                       data.x_test, data.y_test)
    retrain_ste(DEFAULT_MLP, trained["mlp"], small, project, epochs=2, batch_size=50, seed=0)
    assert len(calls) == 1 + 2 * (2 + 1)  # start + per epoch (2 batches + validation)


@pytest.mark.parametrize("method", [retrain_projection, retrain_ste])
def test_retraining_is_deterministic_and_leaves_input_alone(data, trained, method):
    params = trained["mlp"]
    snapshot = {k: v.copy() for k, v in params.items()}
    a, ha = method(DEFAULT_MLP, params, data, grid(0.25), epochs=2, seed=1)
    b, hb = method(DEFAULT_MLP, params, data, grid(0.25), epochs=2, seed=1)
    assert ha == hb and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(params[k], snapshot[k]) for k in params)


def test_ste_distils_from_the_starting_model(data, trained, monkeypatch):
    import sim.golden.train as train
    calls = []

    def recording(logits, y, teacher_logits, *, weight, temperature):
        calls.append((teacher_logits, weight, temperature))
        return distillation_loss(logits, y, teacher_logits, weight=weight,
                                 temperature=temperature)

    monkeypatch.setattr(train, "distillation_loss", recording)
    small = type(data)(data.x_train[:100], data.y_train[:100], data.x_val, data.y_val,
                       data.x_test, data.y_test)
    params = trained["mlp"]
    retrain_ste(DEFAULT_MLP, params, small, grid(0.25), epochs=2, batch_size=50, seed=0,
                distill=0.7, temperature=3.0)
    assert len(calls) == 4 and all(c[1:] == (0.7, 3.0) for c in calls)
    # every epoch sees the starting model's logits of each training input once
    expected = forward(DEFAULT_MLP, params, small.inputs_for(DEFAULT_MLP, "train"))
    for epoch in (calls[:2], calls[2:]):
        rows = np.concatenate([c[0] for c in epoch])
        match = [int(np.argmin(np.abs(expected - row).max(axis=1))) for row in rows]
        assert sorted(match) == list(range(100))
        np.testing.assert_allclose(rows, expected[match], rtol=0, atol=1e-12)


def test_distillation_loss_against_formula():
    rng = np.random.default_rng(6)
    logits, teacher = rng.standard_normal((2, 5, 4)) * 3
    y = np.array([0, 3, 1, 2, 3])
    t = 2.5

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    soft = -np.mean(np.sum(softmax(teacher / t) * np.log(softmax(logits / t)), axis=1))
    expected = 0.3 * cross_entropy(logits, y)[0] + 0.7 * t * t * soft
    loss, grad = distillation_loss(logits, y, teacher, weight=0.7, temperature=t)
    assert loss == pytest.approx(expected, rel=1e-12)
    num = np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        step = np.zeros_like(logits)
        step[i] = 1e-6
        num[i] = (distillation_loss(logits + step, y, teacher, weight=0.7, temperature=t)[0]
                  - distillation_loss(logits - step, y, teacher, weight=0.7, temperature=t)[0]
                  ) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)
    # weight 0 is plain cross-entropy; a student equal to its teacher gets
    # no gradient from the soft term
    assert distillation_loss(logits, y, teacher, weight=0.0, temperature=t)[0] == \
        pytest.approx(cross_entropy(logits, y)[0], rel=1e-12)
    np.testing.assert_allclose(distillation_loss(logits, y, logits, weight=1.0, temperature=t)[1],
                               0.0, atol=1e-15)


def test_retraining_rejects_a_bad_projection(data):
    params = init_params(DEFAULT_MLP, seed=0)
    with pytest.raises(SdHwError, match="same keys"):
        retrain_ste(DEFAULT_MLP, params, data, lambda p: {}, epochs=1)
    with pytest.raises(SdHwError, match="shape"):
        retrain_projection(DEFAULT_MLP, params, data,
                           lambda p: dict(p, **{"fc1.weight": np.zeros((2, 2))}), epochs=1)


@pytest.mark.parametrize("setting,value", [("weight_decay", -0.1), ("distill", 1.5),
                                           ("temperature", 0.0)])
def test_ste_rejects_bad_settings(data, setting, value):
    params = init_params(DEFAULT_MLP, seed=0)
    with pytest.raises(SdHwError, match=setting):
        retrain_ste(DEFAULT_MLP, params, data, lambda p: dict(p), epochs=1, **{setting: value})


# ---------------------------------------------------------------------------
# SD-training on the factors

@pytest.fixture
def decompose():
    return pytest.importorskip("sim.golden.decompose")


def numeric_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return g


@pytest.mark.parametrize("shape,block_rows", [((3, 4, 3, 3), 5), ((2, 7), 2), ((2, 5, 1, 1), 192)])
def test_factor_gradients_against_finite_differences(decompose, shape, block_rows):
    from sim.golden.train import factors_backward, factors_forward
    rng = np.random.default_rng(20)
    rows = decompose.weight_to_rows(np.zeros(shape)).shape[1]
    n_blocks = -(-rows // block_rows)
    ce = rng.standard_normal((shape[0], rows, 3))
    basis = rng.standard_normal((shape[0], n_blocks, 3, 3))
    r = rng.standard_normal(shape)  # loss = sum(W * r), so dL/dW = r

    def loss():
        weight = decompose.DecomposedWeight(shape=shape, coefficients=ce, basis=basis,
                                            block_rows=block_rows).reconstruct()
        return float(np.sum(weight * r))

    expected = decompose.DecomposedWeight(shape=shape, coefficients=ce, basis=basis,
                                          block_rows=block_rows).reconstruct()
    np.testing.assert_allclose(factors_forward(ce, basis, block_rows, shape), expected,
                               rtol=1e-12, atol=1e-12)
    d_ce, d_basis = factors_backward(ce, basis, block_rows, r)
    np.testing.assert_allclose(d_ce, numeric_grad(loss, ce), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_basis, numeric_grad(loss, basis), rtol=1e-6, atol=1e-6)


def test_quantise_coefficients_matches_the_decomposition(decompose):
    from sim.golden.train import quantise_coefficients
    rng = np.random.default_rng(21)
    m, rows, block_rows = 3, 7, 3
    latent = rng.standard_normal((m, rows, 3)) * np.exp2(rng.integers(-12, 8, (m, rows, 3)))
    latent[0, 0, 0] = 1.5      # exactly between 1 and 2: training rounds up
    latent[1, 4, 1] = -0.75    # between -0.5 and -1
    mask = rng.random((m, rows, 3)) < 0.8
    mask[0, 0, 0] = mask[1, 4, 1] = True
    mask[2, :3] = False  # an empty block
    got = quantise_coefficients(latent, mask, block_rows, code_bits=3, max_exponent=5)
    # the decomposition's quantiser, block by block, with ties up
    params = decompose.DecomposeParams(tie="up", code_bits=3, max_exponent=5)
    n_blocks = -(-rows // block_rows)
    padded = np.zeros((m, n_blocks * block_rows, 3))
    padded[:, :rows] = np.where(mask, latent, 0.0)
    expected = decompose.quantise_blocks(padded.reshape(m * n_blocks, block_rows, 3), params)
    expected = expected.reshape(m, -1, 3)[:, :rows]
    assert np.array_equal(got, expected)
    assert got[0, 0, 0] == 2.0 and got[1, 4, 1] == -1.0
    assert np.all(got[~mask] == 0) and np.all(np.abs(got) <= 32) and got[mask].any()


def test_retrain_factors_keeps_the_format_and_improves(decompose, data, trained):
    from sim.golden.pow2 import is_pow2
    from sim.golden.train import retrain_factors
    params = trained["mlp"]
    settings = decompose.DecomposeParams(code_bits=2)
    factors = {"fc1": decompose.decompose_weight(params["fc1.weight"], settings, prune=0.5),
               "fc2": decompose.decompose_weight(params["fc2.weight"], settings)}
    start = dict(params, **{f"{n}.weight": f.reconstruct() for n, f in factors.items()})
    best_factors, best, history = retrain_factors(DEFAULT_MLP, params, data, factors,
                                                  decompose_params=settings, epochs=4, seed=0)
    assert len(history) == 4
    before = validate(DEFAULT_MLP, start, data)
    chosen = validate(DEFAULT_MLP, best, data)
    assert chosen == min(history + [before], key=lambda v: v.loss)
    assert chosen.loss < before.loss and chosen.accuracy > before.accuracy
    for name, f in best_factors.items():
        ce = f.coefficients
        assert is_pow2(ce).all() and np.all(np.abs(ce) <= 32)
        assert not np.any((ce != 0) & (factors[name].coefficients == 0))  # mask kept
        assert f.basis.shape == factors[name].basis.shape
        np.testing.assert_allclose(best[f"{name}.weight"], f.reconstruct(), rtol=1e-12,
                                   atol=1e-12)
        # at most 2**code_bits exponents per (channel, block)
        for m in range(ce.shape[0]):
            exps = np.log2(np.abs(ce[m][ce[m] != 0]))
            assert exps.size == 0 or exps.max() - exps.min() <= 3
    assert all(np.array_equal(factors[n].coefficients, decompose.decompose_weight(
        params[f"{n}.weight"], settings, prune=0.5 if n == "fc1" else 0.0).coefficients)
        for n in factors)  # the input factors are left alone
