"""XLA (`jit_compile=True`) for the Distiller's train step, every registered method: the
compiled steps give the same losses and weights as the plain ones, on batches with a
duplicated row and a zero embedding (the RKD angle once gave NaN at zero under XLA),
and stay finite under mixed_bfloat16."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.config import TrainConfig
from lrface_tf.methods import METHODS
from lrface_tf.training import compile_and_fit, precision_policy
from tests.test_case import degenerate_batch, tiny_distiller

pytestmark = pytest.mark.slow  # XLA compiles every method's step on CPU (~10 s each)


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    keras.config.set_dtype_policy("float32")


def _batches():
    """Three batches of 8: the degenerate one first, then two of random 8x8 images."""
    (x, y), rng = degenerate_batch(), np.random.RandomState(1)
    hr = np.concatenate([x["hr"], rng.rand(16, 8, 8, 1).astype(np.float32)])
    lr = hr.reshape(24, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    labels = np.concatenate([y, rng.randint(0, 4, 16).astype(np.int32)])
    return tf.data.Dataset.from_tensor_slices(({"hr": hr, "lr": lr}, labels)).batch(
        8, drop_remainder=True
    )


def _weights(d):
    """The student's weights and every term's (projections, CRRCD's networks, queue, centres)."""
    return d.student.get_weights() + [w for t in d.term_losses for w in t.get_weights()]


def _fit(method, jit_compile):
    """Three SGD steps through `compile_and_fit`; (history, weights before, after, Distiller)."""
    d = tiny_distiller(method)
    before = _weights(d)
    train = TrainConfig(
        epochs=1,
        batch_size=8,
        optimizer="sgd",
        learning_rate=0.01,
        lr_schedule="constant",
        jit_compile=jit_compile,
        verbose=0,
    )
    history, _ = compile_and_fit(d, _batches(), train, steps_per_epoch=3)
    return history, before, _weights(d), d


@pytest.mark.parametrize("method", list(METHODS))
def test_xla_steps_equal_plain_steps(method):
    h0, start, w0, _ = _fit(method, jit_compile=False)
    h1, start1, w1, d = _fit(method, jit_compile=True)
    assert d.jit_compile
    for a, b in zip(start, start1):  # the same initial weights
        np.testing.assert_array_equal(a, b)
    # XLA fuses and reorders float32 reductions, so the two differ by rounding, which
    # the relational terms' large weights (RKD 25 and 50) amplify over the steps.
    # Measured: losses within 1.2e-4 (relative), the student's weights within 2.8e-4 of
    # the largest step it took (HORKD), the terms' weights and state within 4.5e-5.
    for name, values in h1.items():
        if name == "epoch_seconds":
            continue
        assert np.all(np.isfinite(values)), (name, values)
        np.testing.assert_allclose(values, h0[name], rtol=1e-3, atol=1e-6, err_msg=name)
    assert len(w0) == len(w1)
    n = len(d.student.weights)
    step = max(float(np.max(np.abs(a - b))) for a, b in zip(w0[:n], start[:n]))
    for a, b in zip(w0[:n], w1[:n]):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-3 * step)
    for a, b in zip(w0[n:], w1[n:]):  # projections, CRRCD's networks, queue, centres
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", list(METHODS))
def test_xla_steps_are_finite_under_mixed_bfloat16(method):
    with precision_policy("mixed_bfloat16"):
        history, _, weights, d = _fit(method, jit_compile=True)
    assert d.student.get_layer("embedding").compute_dtype == "bfloat16"
    assert all(np.all(np.isfinite(v)) for v in history.values()), history
    assert all(np.all(np.isfinite(w)) for w in weights)
