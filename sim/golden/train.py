"""Float training and SmartDeal-aware retraining, in plain NumPy.

``data`` is any object with ``x_train, y_train, x_val, y_val`` arrays (for
example :class:`sim.golden.digits.DigitsSplit`); inputs are reshaped to the
network's input shape. Everything is deterministic for a given ``seed``:
the initialisation and the order of the mini-batches come from
``numpy.random.default_rng(seed)``.

Retraining takes ``project(params) -> params``, a callable that returns the
parameters with every (decomposed) weight replaced by its SmartDeal
reconstruction and everything else unchanged. Two loops use it:

``retrain_projection``
    train one epoch in float, project, validate, repeat (the SmartDeal
    paper's loop); the next epoch starts from the projected weights.
``retrain_ste``
    straight-through estimator: latent float weights are projected before
    every mini-batch, the loss gradient w.r.t. the projected weights is
    applied to the latent ones. The loss mixes the labels' cross-entropy
    with distillation from the starting (float) model
    (:func:`distillation_loss`), which pulls the retrained model towards the
    float model's predictions, and decoupled weight decay pulls the latent
    weights towards zero; both regularise it against fitting the small
    training split.

``retrain_factors`` (SD-training) works on the factors themselves instead:
each decomposed layer keeps its Ce sparsity mask, a latent float Ce whose
forward value is a signed power of two, and a full-precision basis B.

Reproducibility: the same seed gives bit-identical weights whatever the
number of threads. Every training loop runs with BLAS limited to one
thread (threadpoolctl), so no matrix product splits a sum differently
from one machine's thread count to another's. The BLAS kernel itself is
chosen per CPU model by OpenBLAS; setting ``OPENBLAS_CORETYPE`` (e.g.
``Haswell``) before the start pins it across CPUs of that capability.

All three validate the projected (rebuilt) parameters after every epoch and
keep the best: the lowest validation cross-entropy, ties broken by higher
validation accuracy; the starting projection is a candidate too. The loss
chooses, not the accuracy: on a few hundred validation images accuracy
moves in steps of a few tenths of a point and its maximum over many epochs
mostly picks a lucky epoch. Each returns the per-epoch :class:`Validation`
as its history. The two projection loops return the parameters *whose
projection* validated best (``project(best)`` is the chosen model), so a
caller that decomposes them gets exactly the validated factors.
"""

import functools
import math
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from sd_hw.errors import SdHwError, check_range
from .nn import check_params, cross_entropy, forward, init_params, loss_and_grads


__all__ = ["Adam", "Validation", "train_float", "retrain_projection", "retrain_ste",
           "retrain_factors", "distillation_loss", "quantise_coefficients", "factors_forward",
           "factors_backward", "evaluate"]


class Adam:
    """Adam (Kingma & Ba) on a dict of arrays, updated in place."""

    def __init__(self, params, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, *, lr=None, scale=None):
        """``params[k] -= lr * m_hat / (sqrt(v_hat) + eps)`` for every key of
        ``grads``; decoupled weight decay (AdamW) on ``*.weight`` keys.
        ``scale`` optionally maps keys to factors (arrays) of their step."""
        lr = self.lr if lr is None else lr
        scale = scale or {}
        self.t += 1
        c1 = 1 - self.beta1 ** self.t
        c2 = 1 - self.beta2 ** self.t
        for key, g in grads.items():
            m, v = self.m[key], self.v[key]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            if self.weight_decay and key.endswith(".weight"):
                params[key] *= 1 - lr * self.weight_decay
            step = lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
            if key in scale:
                step *= scale[key]
            params[key] -= step


def _inputs(network, data, split):
    x = np.asarray(getattr(data, f"x_{split}"), dtype=np.float64)
    y = np.asarray(getattr(data, f"y_{split}"), dtype=np.int64)
    shape = tuple(network.input_shape)
    if x.size != len(x) * math.prod(shape):
        raise SdHwError(f"data: {split} inputs of shape {x.shape} do not fit the network's "
                        f"input shape {shape}")
    return x.reshape((len(x),) + shape), y


def evaluate(network, params, x, y):
    """``(accuracy, mean cross-entropy)`` of ``params`` on ``(x, y)``."""
    logits = forward(network, params, x)
    loss, _ = cross_entropy(logits, y)
    return float(np.mean(np.argmax(logits, axis=1) == y)), loss


def _one_blas_thread(function):
    """Run ``function`` with BLAS on one thread: the sums of a matrix product
    are then ordered the same whatever the machine's thread count."""
    @functools.wraps(function)
    def limited(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return limited


def _check_common(epochs, lr, batch_size):
    check_range("epochs", epochs, 0, 100000)
    check_range("lr", lr, 1e-12, 10.0, kind=float)
    check_range("batch_size", batch_size, 1, 1 << 20)


def _batches(rng, n, batch_size):
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _copy(params):
    return {k: np.array(v, dtype=np.float64) for k, v in params.items()}


def _cosine(lr, step, total, floor=0.02):
    """Cosine decay from ``lr`` to ``floor * lr`` over ``total`` steps."""
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / max(total, 1))))


@_one_blas_thread
def train_float(network, data, *, epochs=30, seed=0, lr=5e-3, batch_size=32,
                weight_decay=0.0, log=None, init=None):
    """Train ``network`` from He initialisation (or from the parameters
    ``init``, e.g. a model to fine-tune) with Adam and return the float64
    parameters after the last epoch.

    The learning rate follows a cosine decay from ``lr`` to ``lr / 50`` over
    all mini-batches; ``weight_decay`` is decoupled (AdamW).
    """
    _check_common(epochs, lr, batch_size)
    check_range("weight_decay", weight_decay, 0.0, 1.0, kind=float)
    x, y = _inputs(network, data, "train")
    rng = np.random.default_rng(seed)
    params = init_params(network, rng.integers(1 << 63))
    if init is not None:
        check_params(network, init)
        params = _copy(init)
    adam = Adam(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        losses = []
        for index in _batches(rng, len(x), batch_size):
            loss, grads = loss_and_grads(network, params, x[index], y[index])
            adam.step(params, grads, lr=_cosine(lr, step, total))
            losses.append(loss)
            step += 1
        if log:
            acc, _ = evaluate(network, params, *_inputs(network, data, "val"))
            log(f"epoch {epoch + 1}/{epochs}: train loss {np.mean(losses):.4f}, "
                f"val accuracy {acc:.4f}")
    return params


class Validation(NamedTuple):
    """Validation accuracy and mean cross-entropy of one epoch's model."""

    accuracy: float
    loss: float


class _Best:
    """The best validated parameters seen so far: lowest validation loss,
    ties broken by higher accuracy."""

    def __init__(self, network, x_val, y_val):
        self.network, self.x_val, self.y_val = network, x_val, y_val
        self.params, self.key, self.improved = None, None, False

    def offer(self, projected, source=None):
        """Validate ``projected``; if it is the best so far, keep a copy of
        ``source`` (the parameters it was projected from; default
        ``projected`` itself). Return its :class:`Validation`."""
        result = Validation(*evaluate(self.network, projected, self.x_val, self.y_val))
        key = (-result.loss, result.accuracy)
        self.improved = self.key is None or key > self.key
        if self.improved:
            self.params = _copy(projected if source is None else source)
            self.key = key
        return result


def _projected(network, project, params):
    result = project(params)
    if not isinstance(result, dict) or set(result) != set(params):
        raise SdHwError("project(params) must return a dict with the same keys as params")
    check_params(network, result)
    return _copy(result)


@_one_blas_thread
def retrain_projection(network, params, data, project, *, epochs=10, seed=0, lr=2e-2,
                       batch_size=32, cosine=True, log=None):
    """SmartDeal's projection loop.

    Starting from ``project(params)``, repeat ``epochs`` times: train one epoch
    in float (Adam; ``lr`` decays along a cosine to ``lr / 50`` over all
    mini-batches if ``cosine``, else stays constant), validate the projection
    of the trained parameters, and continue from that projection. Returns
    ``(best, history)``: the parameters whose projection validated best
    (``params`` or one epoch's trained parameters) and the
    :class:`Validation` after each epoch.
    """
    _check_common(epochs, lr, batch_size)
    check_params(network, params)
    x, y = _inputs(network, data, "train")
    x_val, y_val = _inputs(network, data, "val")
    rng = np.random.default_rng(seed)
    trained = _copy(params)
    current = _projected(network, project, trained)
    best = _Best(network, x_val, y_val)
    start = best.offer(current, trained)
    if log:
        log(f"projection retraining: start (projected) val accuracy {start.accuracy:.4f}")
    adam = Adam(current, lr=lr)
    total = epochs * math.ceil(len(x) / batch_size)
    history = []
    for epoch in range(epochs):
        for index in _batches(rng, len(x), batch_size):
            _, grads = loss_and_grads(network, current, x[index], y[index])
            adam.step(current, grads, lr=_cosine(lr, adam.t, total) if cosine else lr)
        trained = current
        current = _projected(network, project, trained)
        history.append(best.offer(current, trained))
        if log:
            log(f"epoch {epoch + 1}/{epochs}: projected val accuracy "
                f"{history[-1].accuracy:.4f}, loss {history[-1].loss:.4f}")
    return best.params, history


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def distillation_loss(logits, y, teacher_logits, *, weight, temperature):
    """Knowledge distillation (Hinton et al., 2015): ``(loss, dloss/dlogits)`` of

    ``(1 - weight) * CE(logits, y) + weight * T**2 * CE(softmax(logits / T),
    softmax(teacher_logits / T))``

    averaged over the batch, with ``T = temperature``; ``CE(p, q)`` is the
    cross-entropy ``-sum(q * log p)`` of the student's softened prediction
    against the teacher's. The ``T**2`` keeps the soft term's gradient on
    the scale of the hard one.
    """
    hard, d_hard = cross_entropy(logits, y)
    log_p = _log_softmax(logits / temperature)
    q = np.exp(_log_softmax(np.asarray(teacher_logits, dtype=log_p.dtype) / temperature))
    n = len(logits)
    soft = -float(np.sum(q * log_p)) / n * temperature ** 2
    d_soft = temperature * (np.exp(log_p) - q) / n
    return (1 - weight) * hard + weight * soft, (1 - weight) * d_hard + weight * d_soft


@_one_blas_thread
def retrain_ste(network, params, data, project, *, epochs=10, seed=0, lr=1e-2,
                batch_size=32, cosine=True, weight_decay=3e-2, distill=0.5, temperature=2.0,
                log=None):
    """Straight-through retraining.

    Latent float parameters start at ``params``. Every mini-batch runs on
    ``project(latent)``; the gradient w.r.t. the projected parameters updates
    the latent ones: Adam, ``lr`` as in :func:`retrain_projection`, decoupled
    weight decay ``weight_decay`` on the weights (AdamW; per step the latent
    weights shrink by ``lr * weight_decay``). The loss is
    :func:`distillation_loss` with weight ``distill`` and ``temperature``,
    the teacher being ``params`` themselves (their logits on the training
    inputs, computed once); ``distill=0`` trains on the labels alone.
    ``project`` is called once per mini-batch and once per epoch for
    validation. Returns ``(best, history)`` as :func:`retrain_projection`:
    ``best`` are the latent parameters whose projection validated best.
    """
    _check_common(epochs, lr, batch_size)
    check_range("weight_decay", weight_decay, 0.0, 1.0, kind=float)
    check_range("distill", distill, 0.0, 1.0, kind=float)
    check_range("temperature", temperature, 0.1, 100.0, kind=float)
    check_params(network, params)
    x, y = _inputs(network, data, "train")
    x_val, y_val = _inputs(network, data, "val")
    rng = np.random.default_rng(seed)
    latent = _copy(params)
    teacher = forward(network, latent, x)
    best = _Best(network, x_val, y_val)
    start = best.offer(_projected(network, project, latent), latent)
    if log:
        log(f"STE retraining: start (projected) val accuracy {start.accuracy:.4f}")
    adam = Adam(latent, lr=lr, weight_decay=weight_decay)
    total = epochs * math.ceil(len(x) / batch_size)
    history = []
    for epoch in range(epochs):
        for index in _batches(rng, len(x), batch_size):
            loss = functools.partial(distillation_loss, teacher_logits=teacher[index],
                                     weight=distill, temperature=temperature)
            _, grads = loss_and_grads(network, _projected(network, project, latent),
                                      x[index], y[index], loss=loss)
            adam.step(latent, grads, lr=_cosine(lr, adam.t, total) if cosine else lr)
        history.append(best.offer(_projected(network, project, latent), latent))
        if log:
            log(f"epoch {epoch + 1}/{epochs}: projected val accuracy "
                f"{history[-1].accuracy:.4f}, loss {history[-1].loss:.4f}")
    return best.params, history


# ---------------------------------------------------------------------------
# SD-training on the factors

def _block_starts(rows, block_rows):
    return np.arange(0, rows, block_rows)


def quantise_coefficients(latent, mask, block_rows, *, code_bits=3, max_exponent=5,
                          shared_basis=1):
    """Forward value of latent coefficients ``(M, R, 3)``.

    ``round_pow2(latent, tie="up")``, magnitudes clipped at
    ``2**max_exponent``, zero outside ``mask``, and zero below the exponent
    window of each (channel, block): a block keeps exponents
    ``e_max - (2**code_bits - 1) .. e_max`` (what the hardware codes can hold).
    With ``shared_basis`` G > 1 the window is that of the (group, block):
    ``e_max`` is the largest exponent of the block in the G channels of the
    group (consecutive channels; the last group may be smaller).
    """
    from .pow2 import round_pow2
    q = round_pow2(latent, tie="up")
    limit = 2.0 ** max_exponent
    q = np.where(mask, np.clip(q, -limit, limit), 0.0)
    present = q != 0
    exponent = np.frexp(q)[1].astype(np.int64) - 1
    lowest = np.iinfo(np.int64).min
    row_max = np.where(present, exponent, lowest).max(axis=2)            # (M, R)
    starts = _block_starts(q.shape[1], block_rows)
    e_max = np.maximum.reduceat(row_max, starts, axis=1)                # (M, nb)
    if shared_basis > 1:
        m = e_max.shape[0]
        group_max = np.maximum.reduceat(e_max, np.arange(0, m, shared_basis), axis=0)
        e_max = np.repeat(group_max, shared_basis, axis=0)[:m]
    e_max[e_max == lowest] = 0                                          # empty blocks
    block = np.arange(q.shape[1]) // block_rows
    window_low = e_max[:, block] - (2 ** code_bits - 1)                 # (M, R)
    return np.where(present & (exponent >= window_low[:, :, None]), q, 0.0)


def factors_forward(coefficients, basis, block_rows, shape):
    """The weight of ``shape`` rebuilt from Ce ``(M, R, 3)`` and B ``(M, nb, 3, 3)``."""
    from .decompose import rows_to_weight
    block = np.arange(coefficients.shape[1]) // block_rows
    rows = np.einsum("mrj,mrjk->mrk", coefficients, basis[:, block])
    return rows_to_weight(rows, shape)


def factors_backward(coefficients, basis, block_rows, d_weight):
    """Gradients ``(dCe, dB)`` of a loss with gradient ``d_weight`` w.r.t. the
    rebuilt weight: ``dCe = dRows . B^T`` and ``dB = Ce^T . dRows`` per block."""
    from .decompose import weight_to_rows
    d_rows = weight_to_rows(d_weight)  # the adjoint of rows_to_weight
    block = np.arange(coefficients.shape[1]) // block_rows
    d_ce = np.einsum("mrk,mrjk->mrj", d_rows, basis[:, block])
    per_row = np.einsum("mrj,mrk->mrjk", coefficients, d_rows)
    d_basis = np.add.reduceat(per_row, _block_starts(coefficients.shape[1], block_rows), axis=1)
    return d_ce, d_basis


def _shared(factors):
    """Channels per basis group of factors (1 for factors without the field)."""
    return min(int(getattr(factors, "shared_basis", 1)), np.shape(factors.basis)[0])


def _group_sum(per_channel, shared):
    """``per_channel`` (M, ...) summed over groups of ``shared`` consecutive
    channels, each sum repeated for every channel of its group."""
    if shared == 1:
        return per_channel
    m = per_channel.shape[0]
    sums = np.add.reduceat(per_channel, np.arange(0, m, shared), axis=0)
    return np.repeat(sums, shared, axis=0)[:m]


@_one_blas_thread
def retrain_factors(network, params, data, factors, *, decompose_params=None, epochs=10,
                    seed=0, lr=1e-2, ce_lr=0.02, batch_size=32, cosine=True, log=None):
    """SD-training: train the SmartDeal factors directly.

    ``factors`` maps layer names to :class:`sim.golden.decompose.DecomposedWeight`;
    other compute layers (and all biases) train in float. Per decomposed layer:

    * the Ce sparsity mask (``coefficients != 0`` at the start) is fixed;
    * a latent float Ce starts at the coefficients; its forward value is
      :func:`quantise_coefficients` (``round_pow2(tie="up")``, clip at
      ``2**max_exponent``, the ``code_bits`` exponent window of
      ``decompose_params``);
    * straight-through: ``dL/dCe = dL/dRows . B^T`` per block updates the
      latent Ce with a step relative to the coefficient's magnitude (Adam
      direction times ``ce_lr * |Ce|``), so a bucket switch (doubling or
      halving) takes a similar number of steps at every scale;
    * B trains in full precision with ``dL/dB = Ce^T . dL/dRows`` (Adam, ``lr``).
      Factors with shared bases (``shared_basis`` G > 1) train one basis per
      (group, block): its gradient is the sum over the group's channels,
      applied to every copy, so the copies stay identical; the exponent
      window is the group's (:func:`quantise_coefficients`).

    Both rates follow the cosine decay of :func:`train_float` if ``cosine``.
    Returns ``(best factors, best params, history)``: the factors (signed
    power-of-two Ce, float B) and the parameters with the rebuilt weights of
    the best validation epoch (the starting factors are a candidate), and
    the :class:`Validation` after each epoch.
    """
    import dataclasses

    from .decompose import DecomposeParams
    settings = DecomposeParams() if decompose_params is None else decompose_params
    _check_common(epochs, lr, batch_size)
    check_range("ce_lr", ce_lr, 0.0, 10.0, kind=float)
    check_params(network, params)
    compute = {layer.name: layer for layer in network.compute_layers}
    for name, f in factors.items():
        if name not in compute or tuple(f.shape) != compute[name].weight_shape:
            raise SdHwError(f"factors: {name!r} is not a linear/conv2d layer of the network "
                            f"with weight shape {tuple(f.shape)}")
    x, y = _inputs(network, data, "train")
    x_val, y_val = _inputs(network, data, "val")
    rng = np.random.default_rng(seed)

    masks = {name: np.asarray(f.coefficients) != 0 for name, f in factors.items()}
    train = {k: np.array(v, dtype=np.float64) for k, v in params.items()
             if not (k.endswith(".weight") and k[:-len(".weight")] in factors)}
    for name, f in factors.items():
        train[f"{name}.ce"] = np.array(f.coefficients, dtype=np.float64)
        train[f"{name}.basis"] = np.array(f.basis, dtype=np.float64)

    def quantised(name):
        return quantise_coefficients(train[f"{name}.ce"], masks[name], factors[name].block_rows,
                                     code_bits=settings.code_bits,
                                     max_exponent=settings.max_exponent,
                                     shared_basis=_shared(factors[name]))

    def current():
        ce = {name: quantised(name) for name in factors}
        full = {k: v for k, v in train.items() if not k.endswith((".ce", ".basis"))}
        for name, f in factors.items():
            full[f"{name}.weight"] = factors_forward(ce[name], train[f"{name}.basis"],
                                                     f.block_rows, f.shape)
        return full, ce

    def snapshot(ce):
        return {name: dataclasses.replace(f, coefficients=ce[name].copy(),
                                          basis=train[f"{name}.basis"].copy())
                for name, f in factors.items()}

    best = _Best(network, x_val, y_val)
    full, ce = current()
    start = best.offer(full)
    best_factors = snapshot(ce)
    if log:
        log(f"SD-training: start val accuracy {start.accuracy:.4f}")
    adam = Adam(train, lr=lr)
    limit = 2.0 ** settings.max_exponent
    total = epochs * math.ceil(len(x) / batch_size)
    history = []
    for epoch in range(epochs):
        for index in _batches(rng, len(x), batch_size):
            full, ce = current()
            _, grads = loss_and_grads(network, full, x[index], y[index])
            scale = {}
            for name, f in factors.items():
                key = f"{name}.ce"
                d_ce, d_basis = factors_backward(ce[name], train[f"{name}.basis"], f.block_rows,
                                                 grads.pop(f"{name}.weight"))
                grads[key] = np.where(masks[name], d_ce, 0.0)
                grads[f"{name}.basis"] = _group_sum(d_basis, _shared(f))
                # Relative steps: |Ce|, or |latent| where the window zeroes Ce.
                scale[key] = (ce_lr / lr) * np.where(ce[name] != 0, np.abs(ce[name]),
                                                     np.abs(train[key]))
            adam.step(train, grads, lr=_cosine(lr, adam.t, total) if cosine else lr,
                      scale=scale)
            for name in factors:
                np.clip(train[f"{name}.ce"], -limit, limit, out=train[f"{name}.ce"])
        full, ce = current()
        history.append(best.offer(full))
        if best.improved:
            best_factors = snapshot(ce)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: val accuracy {history[-1].accuracy:.4f}, "
                f"loss {history[-1].loss:.4f}")
    return best_factors, best.params, history
