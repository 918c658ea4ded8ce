import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.losses import (
    ClassCenterLoss,
    FeatureLoss,
    KDLoss,
    MaskedCrossEntropy,
    MKMMDLoss,
    RKDAngleLoss,
    RKDDistanceLoss,
)
from lrface_tf.models import Distiller, DistillTerm, build_recognizer
from tests.test_case import tiny_model

RNG = np.random.RandomState(0)
B = 8
XH = RNG.rand(2 * B, 8, 8, 1).astype(np.float32)
XL = XH.reshape(2 * B, 4, 2, 4, 2, 1).mean(axis=(2, 4))
Y = RNG.randint(0, 4, 2 * B).astype(np.int32)
Y[3] = -1  # one unlabelled example


def _terms():
    return {
        "kd": DistillTerm(KDLoss(2.0), 0.5, "logits"),
        "feature": DistillTerm(FeatureLoss("l2"), 0.3),
        "rkd_distance": DistillTerm(RKDDistanceLoss(), 1.0),
        "rkd_angle": DistillTerm(RKDAngleLoss(), 2.0),
        "mk_mmd": DistillTerm(MKMMDLoss(), 1.0),
        "class_center": DistillTerm(ClassCenterLoss(4), 0.5),
    }


def _train(strategy, steps=2):
    """Two SGD steps of a tiny Distiller; returns student weights and the history."""
    ref_t, ref_s = tiny_model(8, embedding_dim=6, seed=1), tiny_model(4, embedding_dim=5, seed=2)
    with strategy.scope():
        teacher = tiny_model(8, embedding_dim=6, seed=1, name="t")
        student = tiny_model(4, embedding_dim=5, seed=2, name="s")
        teacher.set_weights(ref_t.get_weights())
        student.set_weights(ref_s.get_weights())
        d = Distiller(student, teacher, _terms(), task_loss=MaskedCrossEntropy(), task_weight=0.7)
        for term in d.terms.values():
            if term.loss.projection is not None:
                term.loss.projection.set_weights([np.eye(5, 6, dtype=np.float32)])
        d.compile(optimizer=keras.optimizers.SGD(0.1))
    ds = tf.data.Dataset.from_tensor_slices(({"hr": XH, "lr": XL}, Y)).batch(B)
    hist = d.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    centres = d.terms["class_center"].loss.centers
    centers = [centres.centers.numpy(), centres.counts.numpy()]
    return [w.copy() for w in student.get_weights()] + centers, hist.history, d


def test_mirrored_two_replicas_equal_one_device(mirrored):
    w1, h1, _ = _train(tf.distribute.get_strategy())
    assert mirrored.num_replicas_in_sync == 2
    w2, h2, _ = _train(mirrored)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Every term is logged, with the same value as on one device.
    for k in ["loss", "task", *_terms()]:
        np.testing.assert_allclose(h1[k], h2[k], rtol=1e-5, atol=1e-6)


def test_each_term_logged_and_weighted_sum_is_the_loss():
    _, h, d = _train(tf.distribute.get_strategy(), steps=1)
    weights = {name: t.weight for name, t in _terms().items()}
    total = 0.7 * h["task"][0] + sum(weights[k] * h[k][0] for k in weights)
    np.testing.assert_allclose(h["loss"][0], total, rtol=1e-5)
    # dims 5 vs 6: feature, MMD and centres own a projection; RKD compares relations only.
    projected = {name for name, t in d.terms.items() if t.loss.projection is not None}
    assert projected == {"feature", "mk_mmd", "class_center"}


def test_teacher_frozen_batchnorm_untouched_student_trained():
    teacher = build_recognizer("resnet8", 8, 4, channels=1, embedding_dim=8, width_multiplier=0.25)
    student = tiny_model(4, embedding_dim=8)
    t_before = [w.copy() for w in teacher.get_weights()]
    s_before = [w.copy() for w in student.get_weights()]
    assert any("moving_mean" in w.path for w in teacher.weights)
    d = Distiller(student, teacher, _terms(), task_loss=MaskedCrossEntropy())
    d.compile(optimizer="adam")
    ds = tf.data.Dataset.from_tensor_slices(({"hr": XH, "lr": XL}, Y)).batch(B)
    d.fit(ds, epochs=2, verbose=0)
    for a, b in zip(t_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not teacher.trainable
    assert all(not np.array_equal(a, b) for a, b in zip(s_before, student.get_weights()))
    # The teacher is not among the trained variables.
    t_ids = {id(v) for v in teacher.weights}
    assert not any(id(v) in t_ids for v in d.trainable_weights)


def test_cached_teacher_outputs_replace_the_forward_pass():
    teacher, student = (
        tiny_model(8, embedding_dim=6, seed=1),
        tiny_model(4, embedding_dim=6, seed=2),
    )
    d = Distiller(student, teacher, _terms(), task_loss=MaskedCrossEntropy())
    x = {"hr": XH[:B], "lr": XL[:B]}
    t_out = teacher(XH[:B], training=False)
    cached = {
        "hr": XH[:B] * 0.0,
        "lr": XL[:B],
        "teacher_embedding": t_out["embedding"],
        "teacher_logits": t_out["logits"],
    }
    y_pred = d(x)
    a = d.compute_loss(x, Y[:B], y_pred)
    b = d.compute_loss(cached, Y[:B], y_pred)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_call_accepts_the_batch_dict_and_returns_student_outputs():
    teacher, student = tiny_model(8, seed=1), tiny_model(4, seed=2)
    d = Distiller(student, teacher, _terms())
    out = d({"hr": XH[:2], "lr": XL[:2]})
    np.testing.assert_allclose(out["logits"], student(XL[:2])["logits"], rtol=1e-6)


def test_bad_configurations():
    student = tiny_model(4)
    with pytest.raises(ValueError, match="need a teacher"):
        Distiller(student, None, _terms())
    embedding_only = keras.Model(student.input, student.output["embedding"])
    with pytest.raises(ValueError, match="teacher has only embedding.*class_mean"):
        Distiller(student, embedding_only, {"kd": DistillTerm(KDLoss(), 1.0, "logits")})
    with pytest.raises(ValueError, match="nothing to train"):
        Distiller(student, None)
    with pytest.raises(ValueError, match="term output"):
        DistillTerm(KDLoss(), 1.0, "features")
    with pytest.raises(NotImplementedError, match="distiller.student"):
        Distiller(student, None, task_loss=MaskedCrossEntropy()).get_config()


def test_baseline_without_teacher_trains():
    student = tiny_model(4)
    d = Distiller(student, None, task_loss=MaskedCrossEntropy())
    d.compile(optimizer=keras.optimizers.SGD(0.5))
    ds = tf.data.Dataset.from_tensor_slices(({"hr": XH, "lr": XL}, Y)).batch(B).repeat()
    h = d.fit(ds, epochs=5, steps_per_epoch=2, verbose=0)
    assert h.history["task"][-1] < h.history["task"][0]


def _train_bn_student(strategy, sync):
    from lrface_tf.models import synchronize_batchnorm

    keras.utils.set_random_seed(4)
    ref = build_recognizer("resnet8", 8, 4, channels=1, embedding_dim=6, width_multiplier=0.25)
    with strategy.scope():
        student = build_recognizer(
            "resnet8", 8, 4, channels=1, embedding_dim=6, width_multiplier=0.25
        )
        student.set_weights(ref.get_weights())
        if sync:
            student = synchronize_batchnorm(student)
        d = Distiller(student, None, {}, task_loss=MaskedCrossEntropy(), student_view="hr")
        d.compile(optimizer=keras.optimizers.SGD(0.1))
    ds = tf.data.Dataset.from_tensor_slices(({"hr": XH, "lr": XL}, Y)).batch(B)
    d.fit(ds, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    return student.get_weights()


def test_synchronized_batchnorm_makes_two_replicas_equal_one_device(mirrored):
    one = _train_bn_student(tf.distribute.get_strategy(), sync=True)
    two = _train_bn_student(mirrored, sync=True)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Keras' default per-replica statistics do not (the reason for the option).
    plain = _train_bn_student(mirrored, sync=False)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, plain)) > 1e-3
