import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.layers import EmbeddingQueue
from lrface_tf.losses import CRRCDLoss, KDLoss, MaskedCrossEntropy
from lrface_tf.models import Distiller, DistillTerm
from tests.test_case import tiny_model

RNG = np.random.RandomState(0)


def test_queue_fifo_and_wrap_around():
    q = EmbeddingQueue(5)
    q.build((None, 2))
    np.testing.assert_array_equal(q.valid, [0, 0, 0, 0, 0])
    q.enqueue(np.array([[1, 1], [2, 2], [3, 3]], np.float32), np.array([1, 2, 3]))
    np.testing.assert_array_equal(q.valid, [1, 1, 1, 0, 0])
    q.enqueue(np.array([[4, 4], [5, 5], [6, 6]], np.float32), np.array([4, 5, 6]))
    # slot 0 (oldest) was overwritten by the 6th entry
    np.testing.assert_array_equal(q.keys.numpy()[:, 0], [6, 2, 3, 4, 5])
    np.testing.assert_array_equal(q.labels.numpy(), [6, 2, 3, 4, 5])
    assert int(q.head.numpy()) == 1 and int(q.filled.numpy()) == 5
    np.testing.assert_array_equal(q.valid, [1, 1, 1, 1, 1])


def _module(sampling="supervised", queue=8):
    m = CRRCDLoss(dim=16, queue_size=queue, tau=0.1, data_size=100, sampling=sampling)
    m.build((None, 6), (None, 5))
    return m


def test_critic_is_a_probability_and_loss_finite_in_every_queue_state():
    m = _module()
    t, s = RNG.randn(6, 6).astype(np.float32), RNG.randn(6, 5).astype(np.float32)
    y = np.array([0, 1, 0, 1, 2, 2])
    v1, v2 = RNG.randn(50, 16).astype(np.float32) * 10, RNG.randn(50, 16).astype(np.float32)
    log_h, log_1mh = m.log_critic(v1, v2)
    h = np.exp(log_h.numpy())
    assert np.all((h > 0) & (h < 1))
    np.testing.assert_allclose(h + np.exp(log_1mh.numpy()), 1.0, rtol=1e-5)
    empty = m(t, s, y).numpy()  # empty queue: positives only
    assert empty.shape == (6,) and np.all(np.isfinite(empty))
    m.queue.enqueue(t[:3], y[:3])  # partially filled
    assert np.all(np.isfinite(m(t, s, y).numpy()))
    m.queue.enqueue(t, np.zeros(6, np.int32))  # full, every negative of class 0
    assert np.all(np.isfinite(m(t, s, y).numpy()))


def test_supervised_sampling_never_uses_a_same_label_negative():
    m = _module("supervised", queue=6)
    t, s = RNG.randn(4, 6).astype(np.float32), RNG.randn(4, 5).astype(np.float32)
    y = np.array([3, 3, 3, 3])
    positives_only = m(t, s, y).numpy()
    m.queue.enqueue(RNG.randn(6, 6).astype(np.float32), np.full(6, 3))  # all the same class
    np.testing.assert_allclose(m(t, s, y).numpy(), positives_only, rtol=1e-6)
    u = _module("unsupervised", queue=6)
    u.set_weights(m.get_weights())
    assert not np.allclose(u(t, s, y).numpy(), positives_only)


def test_gradient_pulls_cross_space_relations_toward_the_teachers():
    m = _module()
    t = RNG.randn(8, 6).astype(np.float32)
    y = np.arange(8) % 4
    m.queue.enqueue(RNG.randn(8, 6).astype(np.float32), (np.arange(8) + 1) % 4)
    s = tf.Variable(RNG.randn(8, 5).astype(np.float32))
    opt = keras.optimizers.SGD(0.05)
    first = None
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(m(t, s, y))
        first = float(loss) if first is None else first
        opt.apply_gradients([(tape.gradient(loss, s), s)])
    # The student moved so that its cross-space relations score as positives.
    assert float(tf.reduce_mean(m(t, s, y))) < first


def test_training_enqueues_teacher_keys_and_serializes():
    m = _module()
    t = RNG.randn(3, 6).astype(np.float32)
    m(t, RNG.randn(3, 5).astype(np.float32), np.array([0, 1, 2]), training=True)
    np.testing.assert_allclose(m.queue.keys.numpy()[:3], t, rtol=1e-6)
    cfg = keras.saving.serialize_keras_object(m)
    again = keras.saving.deserialize_keras_object(cfg)
    assert again.get_config() == m.get_config()
    with pytest.raises(ValueError, match="sampling"):
        CRRCDLoss(sampling="random")


XH = RNG.rand(16, 8, 8, 1).astype(np.float32)
XL = XH.reshape(16, 4, 2, 4, 2, 1).mean(axis=(2, 4))
Y = RNG.randint(0, 4, 16).astype(np.int32)


def _train(strategy, ref_weights):
    with strategy.scope():
        teacher = tiny_model(8, embedding_dim=6, seed=1, name="t")
        student = tiny_model(4, embedding_dim=5, seed=2, name="s")
        crrcd = CRRCDLoss(dim=8, queue_size=12, data_size=16)
        d = Distiller(student, teacher, {"kd": DistillTerm(KDLoss(4.0), 0.5, "logits"),
                                         "crrcd": DistillTerm(crrcd, 2.0)},
                      task_loss=MaskedCrossEntropy())  # fmt: skip
        if ref_weights is not None:
            for m, w in zip((teacher, student, crrcd), ref_weights):
                m.set_weights(w)
        d.compile(optimizer=keras.optimizers.SGD(0.1))
    ds = tf.data.Dataset.from_tensor_slices(({"hr": XH, "lr": XL}, Y)).batch(8)
    h = d.fit(ds, epochs=2, verbose=0, shuffle=False)  # 4 steps: the queue fills and wraps
    return [m.get_weights() for m in (teacher, student, crrcd)], h.history


def test_crrcd_two_replicas_equal_one_device(mirrored):
    keras.utils.set_random_seed(0)
    w0 = [m.get_weights() for m in (tiny_model(8, embedding_dim=6, seed=1),
                                    tiny_model(4, embedding_dim=5, seed=2))]  # fmt: skip
    ref = CRRCDLoss(dim=8, queue_size=12, data_size=16)
    ref.build((None, 6), (None, 5))
    w0.append(ref.get_weights())
    w1, h1 = _train(tf.distribute.get_strategy(), w0)
    w2, h2 = _train(mirrored, w0)
    for a, b in zip(w1[1] + w1[2], w2[1] + w2[2]):  # student + CRRCD module (queue included)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h1["crrcd"], h2["crrcd"], rtol=1e-4)


def test_negative_weight_scales_only_the_negative_term():
    paper, mean = _module(queue=8), _module(queue=8)
    mean.negative_weight = 1.0
    mean.set_weights(paper.get_weights())
    t, s = RNG.randn(4, 6).astype(np.float32), RNG.randn(4, 5).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    pos_only = paper(t, s, y).numpy()  # empty queue: both are the positive term alone
    np.testing.assert_allclose(mean(t, s, y).numpy(), pos_only, rtol=1e-6)
    keys = RNG.randn(8, 6).astype(np.float32)
    for m in (paper, mean):
        m.queue.enqueue(keys, np.full(8, 5))
    neg_paper = paper(t, s, y).numpy() - pos_only
    neg_mean = mean(t, s, y).numpy() - pos_only
    np.testing.assert_allclose(neg_paper, 8 * neg_mean, rtol=1e-4)
