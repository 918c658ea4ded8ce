import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.layers import ClassCenters, CosineHead
from lrface_tf.losses import ClassCenterLoss
from lrface_tf.losses.class_center import center_distance_loss

RNG = np.random.RandomState(0)


def test_cumulative_centres_equal_the_class_means():
    emb = RNG.randn(30, 4).astype(np.float32)
    lab = RNG.randint(0, 3, 30).astype(np.int32)
    lab[[2, 7]] = -1  # unlabelled: ignored
    layer = ClassCenters(5)
    for i in range(0, 30, 8):  # uneven batches
        centers, valid = layer(emb[i : i + 8], lab[i : i + 8])
    keep = lab >= 0
    for c in range(3):
        np.testing.assert_allclose(centers[c], emb[keep & (lab == c)].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0])  # classes 3, 4 never seen
    np.testing.assert_array_equal(layer.counts.numpy()[:3], np.bincount(lab[keep]))


def test_ema_centres():
    layer = ClassCenters(2, momentum=0.5)
    layer(np.array([[2.0, 0.0]], np.float32), np.array([0]))
    centers, _ = layer(np.array([[4.0, 2.0], [0.0, 0.0]], np.float32), np.array([0, 0]))
    np.testing.assert_allclose(centers[0], 0.5 * np.array([2.0, 0.0]) + 0.5 * np.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="momentum"):
        ClassCenters(2, momentum=1.0)


def test_centres_under_two_replicas_match_one_device(mirrored):
    emb = RNG.randn(8, 3).astype(np.float32)
    lab = np.array([0, 1, 1, 2, 0, 0, 2, -1], np.int32)
    ref = ClassCenters(3)
    ref_c, _ = ref(emb, lab)
    with mirrored.scope():
        layer = ClassCenters(3)
        layer.build((None, 3))
    ds = mirrored.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((emb, lab)).batch(8)
    )
    for e, y in ds:
        mirrored.run(tf.function(lambda e, y: layer(e, y)[0]), args=(e, y))
    np.testing.assert_allclose(layer.centers.numpy(), ref_c.numpy(), rtol=1e-6)


def test_class_center_loss_reference_and_zero():
    t = RNG.randn(5, 4).astype(np.float32)
    s = RNG.randn(5, 4).astype(np.float32)
    u = RNG.randn(3, 4).astype(np.float32) + 10.0
    valid = np.array([1, 1, 0], np.float32)
    dt = np.linalg.norm(t[:, None] - u[None], axis=-1)
    ds = np.linalg.norm(s[:, None] - u[None], axis=-1)
    ref = (((dt - ds) ** 2)[:, :2]).mean(-1).mean()
    np.testing.assert_allclose(float(np.mean(center_distance_loss(t, s, u, valid))), ref, rtol=1e-4)
    assert float(np.mean(center_distance_loss(t, t, u, valid))) == pytest.approx(0, abs=1e-5)
    sv = tf.Variable(t)  # student exactly on the teacher: finite gradient
    with tf.GradientTape() as tape:
        v = tf.reduce_mean(center_distance_loss(t, sv, t[:3], np.ones(3, np.float32)))
    assert np.all(np.isfinite(tape.gradient(v, sv).numpy()))


def test_class_center_term_owns_its_centres():
    t = RNG.randn(6, 4).astype(np.float32)
    s = RNG.randn(6, 4).astype(np.float32)
    y = np.array([0, 0, 1, 2, -1, 1], np.int32)
    loss = ClassCenterLoss(3)
    loss.build(t.shape, s.shape)
    loss(t, s, y, training=True)  # the batch updates the centres first
    for c in range(3):
        np.testing.assert_allclose(loss.centers.centers.numpy()[c], t[y == c].mean(0), rtol=1e-5)
    valid = np.ones(3, np.float32)
    ref = center_distance_loss(t, s, loss.centers.centers.numpy(), valid)
    np.testing.assert_allclose(loss(t, s, y, training=False), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        loss(t, s)
    assert any("centers" in w.path for w in loss.non_trainable_weights)


def test_layers_serialize():
    for layer in (ClassCenters(7, momentum=0.9), CosineHead(5, scale=16.0)):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert again.get_config() == layer.get_config()
