import math
import os

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


def _module(sampling="supervised", queue=8, dim=16, data_size=100, t_dim=6, s_dim=5, **kw):
    m = CRRCDLoss(dim=dim, queue_size=queue, tau=0.1, data_size=data_size, sampling=sampling, **kw)
    m.build((None, t_dim), (None, s_dim))
    return m


def test_critic_is_a_probability_and_loss_finite_in_every_queue_state():
    m = _module()
    t, s = RNG.randn(6, 6).astype(np.float32), RNG.randn(6, 5).astype(np.float32)
    y = np.array([0, 1, 0, 1, 2, 2])
    scores = RNG.randn(50).astype(np.float32) * 30
    log_h, log_1mh = (v.numpy() for v in m.log_critic(scores, 3.0))
    # Both logs finite and <= 0 even where h rounds to 0 or 1 in float32: no log(0).
    assert np.all(np.isfinite(log_h) & np.isfinite(log_1mh))
    assert np.all((log_h <= 0) & (log_1mh <= 0))
    np.testing.assert_allclose(np.exp(log_h) + np.exp(log_1mh), 1.0, rtol=1e-5)
    empty = m(t, s, y).numpy()  # empty queue: positives only
    assert empty.shape == (6,) and np.all(np.isfinite(empty))
    m.queue.enqueue(t[:3], y[:3])  # partially filled
    assert np.all(np.isfinite(m(t, s, y).numpy()))
    m.queue.enqueue(t, np.zeros(6, np.int32))  # full, every negative of class 0
    assert np.all(np.isfinite(m(t, s, y, training=True).numpy()))


def test_balanced_critic_at_initialisation():
    """With Z estimated on the first step that has negatives, every pair starts near
    h = 1 / (n + 1), and the term near log(1 + n) + 1 (not ~n, the collapse of Eq. 10
    without Z)."""
    n = 256
    m = _module("unsupervised", queue=n, dim=128, data_size=20000, t_dim=128, s_dim=64)
    m.queue.enqueue(RNG.randn(n, 128).astype(np.float32), RNG.randint(0, 50, n))
    t = RNG.randn(64, 128).astype(np.float32)
    s = RNG.randn(64, 64).astype(np.float32)
    assert float(m.z_ready.numpy()) == 0.0
    term = m(t, s, np.arange(64) % 50, training=True).numpy()
    assert float(m.z_ready.numpy()) == 1.0
    # The mean critic over the negatives, under the stored constant.
    zt, zs = m.proj_t(t), m.proj_s(s)
    v_ts = m.rel_ts(zt, tf.roll(zs, -1, 0))
    keys = m.proj_t(m.queue.keys)[:n]  # the queue before this step's keys were pushed
    neg = m.scores(m.rel_t(zt[:, None], keys[None]), v_ts[:, None])
    h_neg = np.exp(m.log_critic(neg, m.log_z)[0].numpy()).mean()
    assert 0.5 / (n + 1) < h_neg < 2.0 / (n + 1)
    assert term.mean() == pytest.approx(math.log(1 + n) + 1, rel=0.1)


def test_a_critic_that_can_learn_brings_the_term_below_log_one_plus_n():
    """Toy problem: the student sees the teacher's embeddings plus noise; training the
    term's own networks for a few hundred steps drives it well below log(1 + n)."""
    n, d = 64, 16
    pool = RNG.randn(512, d).astype(np.float32)
    m = _module("unsupervised", queue=n, dim=32, data_size=512, t_dim=d, s_dim=d)
    opt = keras.optimizers.Adam(3e-3)
    step = tf.function(lambda t, s, y: _train_step(m, opt, t, s, y))
    values = []
    for _ in range(300):
        idx = RNG.randint(0, 512, 32)
        t = pool[idx]
        s = t + 0.1 * RNG.randn(32, d).astype(np.float32)
        values.append(float(step(t, s, idx.astype(np.int32))))
    assert np.mean(values[-20:]) < 0.6 * math.log(1 + n)
    assert np.mean(values[-20:]) < 0.5 * np.mean(values[5:25])


def _train_step(m, opt, t, s, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(m(t, s, y, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, m.trainable_weights), m.trainable_weights))
    return loss


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


def test_training_enqueues_teacher_keys_and_serializes():
    m = _module()
    t = RNG.randn(3, 6).astype(np.float32)
    m(t, RNG.randn(3, 5).astype(np.float32), np.array([0, 1, 2]), training=True)
    np.testing.assert_allclose(m.queue.keys.numpy()[:3], t, rtol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert again.get_config() == m.get_config()
    with pytest.raises(ValueError, match="sampling"):
        CRRCDLoss(sampling="random")
    with pytest.raises(ValueError, match="z_momentum"):
        CRRCDLoss(z_momentum=1.0)


def test_negative_weight_is_w_times_the_mean_of_the_sum():
    """Eq. 11 sums over the n negatives; negative_weight=w (ablation) uses w x their mean."""
    ms = {w: _module("unsupervised", queue=8, negative_weight=w) for w in (None, 1.0, 2.0)}
    for m in ms.values():
        m.set_weights(ms[None].get_weights())
    keys = RNG.randn(8, 6).astype(np.float32)
    t, s = RNG.randn(4, 6).astype(np.float32), RNG.randn(4, 5).astype(np.float32)
    for m in ms.values():
        m.queue.enqueue(keys, np.full(8, 5))
    y = np.array([0, 1, 2, 3])
    total, one, two = (ms[w](t, s, y).numpy() for w in (None, 1.0, 2.0))
    # one = A - S / 8, two = A - 2 S / 8, total = A - S  =>  total = one - 7 (one - two)
    np.testing.assert_allclose(total, one - 7 * (one - two), rtol=1e-4, atol=1e-5)


def test_momentum_z_follows_the_batches():
    fixed, ema = _module("unsupervised"), _module("unsupervised", z_momentum=0.5)
    ema.set_weights(fixed.get_weights())
    keys = RNG.randn(8, 6).astype(np.float32)
    for m in (fixed, ema):
        m.queue.enqueue(keys, np.zeros(8, np.int32))
    t, s = RNG.randn(4, 6).astype(np.float32), RNG.randn(4, 5).astype(np.float32)
    y = np.zeros(4, np.int32)
    fixed(t, s, y, training=True)
    ema(t, s, y, training=True)
    first = float(fixed.log_z.numpy())
    assert float(ema.log_z.numpy()) == pytest.approx(first)  # both start from the first batch
    for m in (fixed, ema):
        m(3.0 * t, 2.0 * s, y, training=True)
    assert float(fixed.log_z.numpy()) == first  # kept
    assert float(ema.log_z.numpy()) != pytest.approx(first)  # follows


XH = RNG.rand(16, 8, 8, 1).astype(np.float32)
XL = XH.reshape(16, 4, 2, 4, 2, 1).mean(axis=(2, 4))
Y = RNG.randint(0, 4, 16).astype(np.int32)


def _distiller(strategy, ref_weights=None, sampling="supervised"):
    with strategy.scope():
        teacher = tiny_model(8, embedding_dim=6, seed=1, name="t")
        student = tiny_model(4, embedding_dim=5, seed=2, name="s")
        crrcd = CRRCDLoss(dim=8, queue_size=12, data_size=16, sampling=sampling)
        terms = {"kd": DistillTerm(KDLoss(4.0), 0.5, "logits"), "crrcd": DistillTerm(crrcd, 2.0)}
        d = Distiller(student, teacher, terms, task_loss=MaskedCrossEntropy())
        if ref_weights is not None:
            for m, w in zip((teacher, student, crrcd), ref_weights):
                m.set_weights(w)
        d.compile(optimizer=keras.optimizers.SGD(0.1))
    return d, crrcd


def _data():
    return tf.data.Dataset.from_tensor_slices(({"hr": XH, "lr": XL}, Y)).batch(8)


def _backup(folder):
    """A backup that outlives the fit, so a second model can be resumed from it."""
    return keras.callbacks.BackupAndRestore(str(folder), delete_checkpoint=False)


def test_z_is_identical_on_one_and_two_replicas(mirrored):
    d, ref = _distiller(tf.distribute.get_strategy())
    w0 = [m.get_weights() for m in (d.teacher, d.student, ref)]
    one, c1 = _distiller(tf.distribute.get_strategy(), w0)
    two, c2 = _distiller(mirrored, w0)
    h1 = one.fit(_data(), epochs=2, verbose=0, shuffle=False).history
    h2 = two.fit(_data(), epochs=2, verbose=0, shuffle=False).history
    assert float(c1.z_ready.numpy()) == 1.0
    np.testing.assert_allclose(c1.log_z.numpy(), c2.log_z.numpy(), rtol=1e-6)
    np.testing.assert_allclose(h1["crrcd"], h2["crrcd"], rtol=1e-4)


def test_a_resumed_run_restores_z(tmp_path):
    from lrface_tf.training import BACKUP_DIR, restored_step

    d, crrcd = _distiller(tf.distribute.get_strategy())
    d.fit(_data(), epochs=2, verbose=0, shuffle=False, callbacks=[_backup(tmp_path / BACKUP_DIR)])
    assert float(crrcd.z_ready.numpy()) == 1.0 and os.listdir(tmp_path / BACKUP_DIR)
    fresh, fresh_crrcd = _distiller(tf.distribute.get_strategy())
    assert float(fresh_crrcd.z_ready.numpy()) == 0.0
    assert restored_step(fresh, str(tmp_path))[0] == 4
    np.testing.assert_allclose(fresh_crrcd.log_z.numpy(), crrcd.log_z.numpy())
    assert float(fresh_crrcd.z_ready.numpy()) == 1.0
    np.testing.assert_allclose(fresh_crrcd.queue.keys.numpy(), crrcd.queue.keys.numpy())


def test_a_run_resumed_after_two_epochs_equals_an_uninterrupted_one(tmp_path):
    """Unsupervised sampling, as the LR-LFW rows: the relation module, Z, the queue and the
    optimiser all come back, so epochs 3-4 of the resumed run repeat the uninterrupted
    run's to the bit."""
    from lrface_tf.training import BACKUP_DIR, restored_step

    d, ref = _distiller(tf.distribute.get_strategy(), sampling="unsupervised")
    w0 = [m.get_weights() for m in (d.teacher, d.student, ref)]
    whole, c_whole = _distiller(tf.distribute.get_strategy(), w0, "unsupervised")
    h = whole.fit(_data(), epochs=4, verbose=0, shuffle=False).history["crrcd"]
    backup = tmp_path / BACKUP_DIR
    first, _ = _distiller(tf.distribute.get_strategy(), w0, "unsupervised")
    first.fit(_data(), epochs=2, verbose=0, shuffle=False, callbacks=[_backup(backup)])
    second, c_second = _distiller(tf.distribute.get_strategy(), w0, "unsupervised")
    assert restored_step(second, str(tmp_path))[0] == 4
    rest = second.fit(
        _data(), epochs=4, verbose=0, shuffle=False, callbacks=[_backup(backup)]
    ).history["crrcd"]
    assert rest == h[2:], (rest, h)
    for a, b in zip(
        whole.student.get_weights() + c_whole.get_weights(),
        second.student.get_weights() + c_second.get_weights(),
    ):
        np.testing.assert_array_equal(a, b)
