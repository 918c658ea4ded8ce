"""One harness every distillation term passes (the registry's terms and a wrapped Keras loss):
serialization, finite values and gradients on degenerate inputs (with and without XLA),
float32 results under a mixed-precision policy, and two replicas equal to one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.losses import DistillationLoss, LossTerm, MaskedCrossEntropy
from lrface_tf.methods import HYPERPARAMETERS, TERMS
from lrface_tf.models import Distiller, DistillTerm
from tests.test_case import tiny_model

RNG = np.random.RandomState(0)
CLASSES, DT, DS = 4, 6, 5
HYPER = {**HYPERPARAMETERS, "crrcd_queue": 8, "crrcd_dim": 8, "angle_chunk_size": 3}


def make(name):
    """A fresh term by registry name ("mse": a plain Keras loss wrapped in LossTerm)."""
    if name == "mse":
        return DistillTerm(keras.losses.MeanSquaredError(), 1.0, "logits")
    return TERMS[name](HYPER, CLASSES, 100)


NAMES = [*TERMS, "mse"]


def inputs(term, batch=6):
    """Teacher / student values of the term's output, with duplicated and zero rows."""
    dims = (CLASSES, CLASSES) if term.output == "logits" else (DT, DS)
    t = RNG.randn(batch, dims[0]).astype(np.float32)
    s = RNG.randn(batch, dims[1]).astype(np.float32)
    s[1] = s[0]  # duplicated rows: zero distance
    s[3] = 0.0  # a zero vector
    t[2] = t[4]
    y = np.array([0, 1, 1, 2, 3, 0][:batch], np.int32)
    return t, s, y


def built(term, t, s):
    term.loss.build(t.shape, s.shape)
    return term.loss


@pytest.mark.parametrize("name", NAMES)
def test_serialization_round_trip(name):
    term = make(name)
    t, s, _ = inputs(term)
    loss = built(term, t, s)
    assert isinstance(loss, DistillationLoss)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_finite_values_and_gradients_on_degenerate_inputs(name, jit):
    term = make(name)
    t, s, y = inputs(term)
    loss = built(term, t, s)
    if name == "crrcd":  # a full queue, so the negative part takes part
        loss.queue.enqueue(RNG.randn(8, DT).astype(np.float32), RNG.randint(0, CLASSES, 8))
    sv = tf.Variable(s)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            values = loss(t, sv, y, training=True)
            value = tf.reduce_mean(values)
        return values, tape.gradient(value, [sv, *loss.trainable_weights])

    values, grads = step()
    assert values.dtype == tf.float32 and values.shape.rank == 1
    assert np.all(np.isfinite(values.numpy()))
    assert all(g is None or np.all(np.isfinite(g.numpy())) for g in grads)
    assert grads[0] is not None and np.any(grads[0].numpy() != 0)


@pytest.mark.parametrize("name", NAMES)
def test_float32_under_a_mixed_precision_policy(name):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        term = make(name)
        t, s, y = inputs(term)
        loss = built(term, t, s)
        values = loss(tf.cast(t, "bfloat16"), tf.cast(s, "bfloat16"), y, training=True)
    finally:
        keras.config.set_dtype_policy("float32")
    assert values.dtype == tf.float32
    assert np.all(np.isfinite(values.numpy()))


def _fit(strategy, name, weights):
    """Two SGD steps of a tiny Distiller with one term; returns every weight it trains or keeps."""
    with strategy.scope():
        teacher = tiny_model(8, embedding_dim=DT, num_classes=CLASSES, seed=1, name="t")
        student = tiny_model(4, embedding_dim=DS, num_classes=CLASSES, seed=2, name="s")
        term = make(name)
        d = Distiller(student, teacher, {name: term}, task_loss=MaskedCrossEntropy())
        if weights is not None:
            for m, w in zip((teacher, student, term.loss), weights):
                m.set_weights(w)
        d.compile(optimizer=keras.optimizers.SGD(0.1))
    x = RNG.rand(16, 8, 8, 1).astype(np.float32)
    xl = x.reshape(16, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    y = np.arange(16, dtype=np.int32) % CLASSES
    ds = tf.data.Dataset.from_tensor_slices(({"hr": x, "lr": xl}, y)).batch(8, drop_remainder=True)
    h = d.fit(ds, epochs=1, verbose=0, shuffle=False)
    return [m.get_weights() for m in (teacher, student, term.loss)], h.history


@pytest.mark.parametrize("name", NAMES)
def test_two_replicas_equal_one_device(mirrored, name):
    global RNG
    RNG = np.random.RandomState(1)
    w0, _ = _fit(tf.distribute.get_strategy(), name, None)
    RNG = np.random.RandomState(2)
    w1, h1 = _fit(tf.distribute.get_strategy(), name, w0)
    RNG = np.random.RandomState(2)
    w2, h2 = _fit(mirrored, name, w0)
    for a, b in zip(w1[1] + w1[2], w2[1] + w2[2]):  # student + the term's own weights and state
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h1[name], h2[name], rtol=1e-4, atol=1e-6)


def test_a_plain_keras_loss_is_wrapped_and_a_bad_term_is_refused():
    term = DistillTerm(keras.losses.MeanAbsoluteError(), 0.5)
    assert isinstance(term.loss, LossTerm)
    with pytest.raises(TypeError, match="DistillationLoss or a keras.losses.Loss"):
        DistillTerm(lambda t, s: t - s)
    with pytest.raises(ValueError, match="term weight must be >= 0"):
        DistillTerm(keras.losses.MeanAbsoluteError(), -1.0)
