"""Random, valid-by-construction networks for the weight file and storage tests."""

import numpy as np
from hypothesis import strategies as st

from sd_hw.integer_network import (DecomposedWeights, DenseWeights, IntegerLayer,
                                   IntegerNetwork, rows_per_channel)
from sd_hw.network import Network


def random_decomposed(rng, m, rows, *, block_rows, code_bits, density=0.4,
                      row_density=0.7, extreme=False, shared_basis=1):
    """Random :class:`DecomposedWeights`; absent entries are zero.

    ``extreme`` draws exponents and basis entries from the ends of their
    ranges only (0 / 2**code_bits - 1 and -128 / 127). ``shared_basis``
    (at most ``m``): channels per group with identical bases.
    """
    n_blocks = -(-rows // block_rows)
    present = (rng.random((m, rows, 3)) < density) & (rng.random((m, rows, 1)) < row_density)
    top = 2 ** code_bits - 1
    if extreme:
        exponent = rng.choice([0, top], size=present.shape)
        basis = rng.choice([-128, 127], size=(m, n_blocks, 3, 3))
    else:
        exponent = rng.integers(0, top + 1, size=present.shape)
        basis = rng.integers(-128, 128, size=(m, n_blocks, 3, 3))
    if shared_basis > 1:
        basis = np.repeat(basis[::shared_basis], shared_basis, axis=0)[:m]
    return DecomposedWeights(
        present=present,
        negative=present & (rng.random(present.shape) < 0.5),
        exponent=np.where(present, exponent, 0).astype(np.uint8),
        basis=basis.astype(np.int8),
        block_rows=block_rows,
        shared_basis=shared_basis)


def random_integer_network(network, seed, *, code_bits=3, block_rows=4, dense=(),
                           density=0.4, row_density=0.7, extreme=False, metadata=None,
                           shared_basis=1):
    """A random :class:`IntegerNetwork` for ``network``.

    Layers named in ``dense`` (or all, if ``dense`` is True) keep int8
    weights; the others are decomposed, with bases shared by groups of
    ``min(shared_basis, M)`` channels. Hidden layers get multipliers in
    ``[2**14, 2**15)`` and shifts ``1..62``; the final layer 0 and 0;
    biases fit the accumulator.
    """
    rng = np.random.default_rng(seed)
    compute = network.compute_layers
    layers = {}
    for position, spec in enumerate(compute):
        final = position == len(compute) - 1
        m = spec.out_size
        if dense is True or spec.name in dense:
            weights = DenseWeights(rng.integers(-128, 128, size=spec.weight_shape)
                                   .astype(np.int8))
        else:
            weights = random_decomposed(rng, m, rows_per_channel(spec), block_rows=block_rows,
                                        code_bits=code_bits, density=density,
                                        row_density=row_density, extreme=extreme,
                                        shared_basis=min(shared_basis, m))
        if final:
            multiplier = np.zeros(m, np.int32)
            shift = np.zeros(m, np.uint8)
        else:
            multiplier = rng.integers(2 ** 14, 2 ** 15, size=m).astype(np.int32)
            shift = rng.integers(1, 63, size=m).astype(np.uint8)
        layers[spec.name] = IntegerLayer(
            name=spec.name, weights=weights,
            bias=rng.integers(-2 ** 31, 2 ** 31, size=m).astype(np.int32),
            weight_scale=rng.random(m) * 1e-2 + 1e-300,
            multiplier=multiplier, shift=shift,
            input_scale=float(rng.random() + 1e-3),
            output_scale=0.0 if final else float(rng.random() + 1e-3),
            final=final)
    net = IntegerNetwork(network=network, layers=layers, input_scale=float(rng.random() + 1e-6),
                         code_bits=code_bits, block_rows=block_rows,
                         accumulator_bits=int(rng.integers(16, 49)),
                         metadata={} if metadata is None else metadata)
    for layer in layers.values():  # biases within the accumulator, as the weight file requires
        layer.bias >>= max(0, 32 - net.accumulator_bits)
    return net


def _assert_array_equal(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.array_equal(a, b), f"{what}: values differ"


def assert_networks_equal(a, b):
    """Every field, array (with dtype) and scale of two integer networks equal."""
    assert a.network == b.network
    for name in ("input_scale", "code_bits", "block_rows", "accumulator_bits", "metadata"):
        assert getattr(a, name) == getattr(b, name), name
    assert list(a.layers) == list(b.layers)
    for name, la in a.layers.items():
        lb = b.layers[name]
        assert la.name == lb.name
        for field in ("input_scale", "output_scale", "final"):
            assert getattr(la, field) == getattr(lb, field), f"{name}.{field}"
        for field in ("bias", "weight_scale", "multiplier", "shift"):
            _assert_array_equal(getattr(la, field), getattr(lb, field), f"{name}.{field}")
        assert type(la.weights) is type(lb.weights), name
        if la.decomposed:
            assert la.weights.block_rows == lb.weights.block_rows
            assert la.weights.shared_basis == lb.weights.shared_basis, f"{name}.shared_basis"
            for field in ("present", "negative", "exponent", "basis"):
                _assert_array_equal(getattr(la.weights, field), getattr(lb.weights, field),
                                    f"{name}.{field}")
        else:
            _assert_array_equal(la.weights.weight, lb.weights.weight, f"{name}.weight")


@st.composite
def networks(draw):
    """Small random networks: an MLP or a CNN with 3x3 and 1x1 convolutions."""
    size = st.integers(1, 7)
    layers = []
    if draw(st.booleans()):
        features = draw(st.integers(1, 20))
        shape = [features]
        width = features
    else:
        channels, h, w = draw(size), draw(st.integers(2, 5)), draw(st.integers(2, 5))
        shape = [channels, h, w]
        for i in range(draw(st.integers(1, 2))):
            out = draw(size)
            layers.append({"type": "conv2d", "name": f"conv{i}", "in_channels": channels,
                           "out_channels": out, "kernel_size": draw(st.sampled_from([1, 3]))})
            layers.append({"type": "relu"})
            channels = out
        if draw(st.booleans()):
            layers.append({"type": "maxpool2d"})
            h, w = h // 2, w // 2
        layers.append({"type": "flatten"})
        width = channels * h * w
    for i in range(draw(st.integers(1, 2))):
        out = draw(st.integers(1, 12))
        layers.append({"type": "linear", "name": f"fc{i}", "in_features": width,
                       "out_features": out})
        layers.append({"type": "relu"})
        width = out
    layers.pop()
    return Network.from_dict({"input_shape": shape, "layers": layers})


TINY = Network.from_dict({"input_shape": [2, 4, 4], "layers": [
    {"type": "conv2d", "name": "c1", "in_channels": 2, "out_channels": 3, "kernel_size": 3},
    {"type": "relu"},
    {"type": "conv2d", "name": "c2", "in_channels": 3, "out_channels": 2, "kernel_size": 1},
    {"type": "relu"},
    {"type": "maxpool2d"},
    {"type": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 8, "out_features": 5}]})


def hardware_network(network, seed, *, block_rows=192, code_bits=3, shared_zero_rows=0.3,
                     group=4, density=0.6, row_density=0.8, dense=False, shared_basis=None):
    """A random :class:`IntegerNetwork` that an accelerator can run exactly.

    Like :func:`random_integer_network`, but with 32-bit accumulators whose
    bound holds for every int8 input (small biases), and SmartDeal's
    structured sparsity: within each group of ``group`` output channels a
    fraction ``shared_zero_rows`` of the Ce rows is zero in every channel
    (on top of rows and elements zero in single channels), so that a core
    with ``group`` lanes skips them. ``dense``: every layer int8, with the
    same shared zero rows. ``shared_basis``: every group of that many consecutive output
    channels gets its first channel's bases (:func:`share_bases`).
    """
    net = random_integer_network(network, seed, code_bits=code_bits, block_rows=block_rows,
                                 density=density, row_density=row_density, dense=dense or ())
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers.values():
        weights = layer.weights
        m = layer.bias.shape[0]
        rows = weights.rows() if dense else weights.present
        for first in range(0, m, group):
            zero = rng.random(rows.shape[1]) < shared_zero_rows
            if dense:
                rows[first:first + group, zero] = 0
                continue
            for array in (weights.present, weights.negative):
                array[first:first + group, zero] = False
            weights.exponent[first:first + group, zero] = 0
        if dense:
            shape = weights.weight.shape
            weights.weight = rows.reshape(m, -1)[:, :np.prod(shape[1:])].reshape(shape)
        layer.bias = rng.integers(-2 ** 12, 2 ** 12, size=m).astype(np.int32)
    net.accumulator_bits = 32
    if shared_basis is not None:
        share_bases(net, shared_basis)
    _spread_activations(net, rng)
    return net


def share_bases(net, group):
    """Give every group of ``group`` consecutive output channels of each decomposed layer
    its first channel's bases, bit for bit (what a shared-basis decomposition makes)."""
    for layer in net.layers.values():
        if layer.decomposed:
            basis = layer.weights.basis
            for first in range(0, basis.shape[0], group):
                basis[first:first + group] = basis[first]
    return net


def _spread_activations(net, rng):
    """Pick each hidden layer's shift so that its int8 outputs use their range.

    Random shifts would make almost every hidden activation 0, -1 or a
    saturated value, which tests little after the first layer.
    """
    from sim.golden.reference import run
    x = rng.integers(-128, 128, size=(16,) + tuple(net.network.input_shape)).astype(np.int8)
    index = {spec.name: i for i, spec in enumerate(net.network.layers)}
    for name, layer in net.layers.items():
        if layer.final:
            continue
        low, high = 1, 62
        while low < high:  # the smallest shift whose outputs saturate at most rarely
            layer.shift[:] = (low + high) // 2
            out = run(net, x, layer_outputs=True)[index[name]]
            if np.mean(np.abs(out.astype(np.int64)) >= 127) > 0.02:
                low = int(layer.shift[0]) + 1
            else:
                high = int(layer.shift[0])
        layer.shift[:] = low


def random_inputs(network, count, seed):
    """``count`` random int8 inputs of ``network``."""
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(count,) + tuple(network.input_shape)).astype(np.int8)


def assert_passed(report):
    """A simulation report with every layer, output and counter equal to the golden model's."""
    assert report.mismatches == []
    assert report.counter_mismatches == []
    assert np.array_equal(report.outputs, report.golden)
