import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.losses import (
    FeatureLoss,
    KDLoss,
    MarginCrossEntropy,
    MaskedCrossEntropy,
    MKMMDLoss,
    RKDAngleLoss,
    RKDDistanceLoss,
)

RNG = np.random.RandomState(0)


def mean(loss, t, s):
    """The scalar a Distiller adds: the mean of a term's per-anchor values."""
    return float(np.mean(loss(np.asarray(t, np.float32), s)))


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_huber(x):
    a = np.abs(x)
    return np.where(a <= 1, 0.5 * x * x, a - 0.5)


def _np_rkd_distance(t, s):
    def psi(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        b = len(x)
        return d / (d.sum() / (b * (b - 1)))

    return _np_huber(psi(t) - psi(s)).mean()


def _np_rkd_angle(t, s):
    def ang(x):
        d = x[None, :, :] - x[:, None, :]  # d[j, i] = x_i - x_j
        n = np.linalg.norm(d, axis=-1, keepdims=True)
        e = np.where(n > 0, d / np.maximum(n, 1e-30), 0.0)
        return np.einsum("jid,jkd->jik", e, e)

    return _np_huber(ang(t) - ang(s)).mean()


def _np_mmd(t, s, mults=(1, 2, 4, 8, 16)):
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    z = np.concatenate([t, s])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    n = len(z)
    sigma2 = d2.sum() / (n * (n - 1))
    k = sum(np.exp(-d2 / (2 * m * sigma2)) for m in mults)
    b = len(t)
    return k[:b, :b].mean() + k[b:, b:].mean() - 2 * k[:b, b:].mean()


def test_kd_reference_value():
    t, s = RNG.randn(5, 7), RNG.randn(5, 7)
    T = 3.0
    pt, ps = _np_softmax(t / T), _np_softmax(s / T)
    ref = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean() * T * T
    np.testing.assert_allclose(mean(KDLoss(T), t, s), ref, rtol=1e-5)
    assert mean(KDLoss(T), t, t) == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_only_reaches_the_student():
    t, s = tf.Variable(RNG.randn(4, 5)), tf.Variable(RNG.randn(4, 5))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(KDLoss(2.0)(t, s))
    gt, gs = tape.gradient(loss, [t, s])
    assert gt is None or float(tf.reduce_sum(tf.abs(gt))) == 0.0
    assert float(tf.reduce_sum(tf.abs(gs))) > 0


def test_masked_cross_entropy_ignores_unlabelled():
    logits = RNG.randn(4, 3).astype(np.float32)
    y = np.array([0, -1, 2, -1])
    per = MaskedCrossEntropy(reduction=None)(y, logits).numpy()
    ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(
        np.array([0, 0, 2, 0]), logits
    ).numpy()
    np.testing.assert_allclose(per, ref * np.array([1, 0, 1, 0]), rtol=1e-5)


def test_margin_cross_entropy():
    cos = np.clip(RNG.randn(6, 5) * 0.3, -0.9, 0.9).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 0])
    s = 16.0
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, s * cos)
    for kind in ("arcface", "cosface"):
        zero = MarginCrossEntropy(scale=s, margin=0.0, kind=kind)(y, s * cos)
        np.testing.assert_allclose(float(zero), float(ce), rtol=1e-4)
        assert float(MarginCrossEntropy(scale=s, margin=0.3, kind=kind)(y, s * cos)) > float(ce)
    # CosFace reference: true-class logit s * (cos - m).
    m = 0.35
    adj = cos.copy()
    adj[np.arange(6), y] -= m
    ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, s * adj)
    got = MarginCrossEntropy(scale=s, margin=m, kind="cosface")(y, s * cos)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-4)


def test_feature_loss():
    t, s = RNG.randn(4, 6), RNG.randn(4, 6)
    np.testing.assert_allclose(
        mean(FeatureLoss("l1"), t, s), np.abs(t - s).sum(-1).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        mean(FeatureLoss("l2"), t, s), ((t - s) ** 2).sum(-1).mean(), rtol=1e-5
    )
    tn = t / np.linalg.norm(t, axis=-1, keepdims=True)
    sn = s / np.linalg.norm(s, axis=-1, keepdims=True)
    ref = (2 - 2 * (tn * sn).sum(-1)).mean()
    np.testing.assert_allclose(mean(FeatureLoss("l2", normalize=True), t, s), ref, rtol=1e-4)


def test_rkd_reference_values():
    t, s = RNG.randn(6, 5).astype(np.float32), RNG.randn(6, 3).astype(np.float32)
    np.testing.assert_allclose(mean(RKDDistanceLoss(), t, s), _np_rkd_distance(t, s), rtol=1e-4)
    np.testing.assert_allclose(mean(RKDAngleLoss(), t, s), _np_rkd_angle(t, s), rtol=1e-4)


@pytest.mark.parametrize("loss", [RKDDistanceLoss(), RKDAngleLoss()])
def test_rkd_invariances(loss):
    t, s = RNG.randn(8, 5).astype(np.float32), RNG.randn(8, 4).astype(np.float32)
    base = mean(loss, t, s)
    assert base > 0
    np.testing.assert_allclose(mean(loss, t * 1e4, s * 1e4), base, rtol=1e-3)
    np.testing.assert_allclose(mean(loss, t, s * 1e-3 + 5.0), base, rtol=1e-3)
    q, _ = np.linalg.qr(RNG.randn(4, 4))
    np.testing.assert_allclose(mean(loss, t, (s @ q).astype(np.float32)), base, rtol=1e-3)
    # Batch of 2: every relation is the same up to scale -> exactly 0 for distance;
    # angles at 2 points are all degenerate (0) on both sides.
    assert mean(loss, t[:2], s[:2]) == pytest.approx(0.0, abs=1e-6)


def test_rkd_angle_chunked_and_sampled():
    t = RNG.randn(10, 5).astype(np.float32)
    s = tf.Variable(RNG.randn(10, 3).astype(np.float32))
    grads = []
    for loss in (RKDAngleLoss(), RKDAngleLoss(chunk_size=3)):
        with tf.GradientTape() as tape:
            v = tf.reduce_mean(loss(t, s))
        grads.append((float(v), tape.gradient(v, s).numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-5)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-7)
    per = RKDAngleLoss(num_anchors=4, seed=1)(t, s)
    assert per.shape == (4,)
    full = RKDAngleLoss()(t, s).numpy()
    # Every sampled anchor value is one of the exact per-anchor values.
    assert all(np.isclose(p, full, rtol=1e-4).any() for p in per.numpy())


def test_mk_mmd_properties():
    t, s = RNG.randn(8, 6).astype(np.float32), RNG.randn(8, 6).astype(np.float32)
    loss = MKMMDLoss()
    v = mean(loss, t, s)
    np.testing.assert_allclose(v, _np_mmd(t, s), rtol=1e-4)
    assert v > 0
    assert mean(loss, t, t) == 0.0
    np.testing.assert_allclose(mean(loss, s, t), v, rtol=1e-5)
    perm = RNG.permutation(8)
    np.testing.assert_allclose(mean(loss, t[perm], s), v, rtol=1e-5)
    np.testing.assert_allclose(mean(loss, t, s[perm]), v, rtol=1e-5)
    assert np.isfinite(mean(loss, t[:2], s[:2]))


def test_mk_mmd_bandwidth_is_detached():
    # The gradient equals that of the same formula with sigma^2 frozen as a constant.
    t = RNG.randn(5, 4).astype(np.float32)
    s = tf.Variable(RNG.randn(5, 4).astype(np.float32))
    with tf.GradientTape() as tape:
        v = tf.reduce_mean(MKMMDLoss(normalize=False)(t, s))
    g = tape.gradient(v, s).numpy()
    z = np.concatenate([t, s.numpy()])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    sigma2 = tf.constant(d2.sum() / (10 * 9), tf.float32)
    with tf.GradientTape() as tape:
        zz = tf.concat([t, s], 0)
        dd = tf.reduce_sum(tf.square(zz[:, None] - zz[None]), -1)
        k = sum(tf.exp(-dd / (2.0 * m * sigma2)) for m in (1, 2, 4, 8, 16))
        ref = tf.reduce_mean(k[:5, :5]) + tf.reduce_mean(k[5:, 5:]) - 2 * tf.reduce_mean(k[:5, 5:])
    g_ref = tape.gradient(ref, s).numpy()
    np.testing.assert_allclose(float(v), float(ref), rtol=1e-4)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(
    "loss", [MaskedCrossEntropy(0.1), MarginCrossEntropy(30.0, 0.4, "cosface")]
)
def test_task_loss_serialization_round_trip(loss):
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: KDLoss(float("nan")), "temperature must be finite"),
        (lambda: KDLoss(float("inf")), "temperature must be finite"),
        (lambda: KDLoss(0.0), "temperature must be > 0"),
        (lambda: RKDAngleLoss(chunk_size=-1), "chunk_size must be >= 1"),
        (lambda: RKDAngleLoss(num_anchors=0), "num_anchors must be >= 1"),
        (lambda: FeatureLoss("l3"), "norm must be one of"),
    ],
)
def test_bad_hyperparameters_stop_at_the_constructor(make, message):
    with pytest.raises(ValueError, match=message):
        make()
