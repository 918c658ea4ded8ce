import keras
import numpy as np
import pytest

from lrface_tf.data import DegradationSpec, paired_dataset
from lrface_tf.data.teacher_cache import (
    StaleCacheError,
    TeacherCache,
    fingerprint,
    load_or_build,
)
from lrface_tf.losses import KDLoss, MaskedCrossEntropy, RKDDistanceLoss
from lrface_tf.models import Distiller, DistillTerm, build_recognizer
from tests.test_case import digits, tiny_model

SPEC = DegradationSpec(sizes=(4,))


@pytest.fixture(scope="module")
def setup():
    x, y = digits(96)
    keras.utils.set_random_seed(3)
    teacher = build_recognizer("resnet8", 8, 10, channels=1, embedding_dim=6,
                               width_multiplier=0.25)  # fmt: skip
    return x, y, teacher


def test_cached_outputs_are_the_teachers_outputs_for_the_shown_variant(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, progress=False)
    ds = paired_dataset(x, y, spec=SPEC, batch_size=32, augment="flip", seed=5,
                        teacher_cache=cache)  # fmt: skip
    views, _ = next(iter(ds))
    ref = teacher(views["hr"], training=False)
    np.testing.assert_allclose(views["teacher_embedding"], ref["embedding"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(views["teacher_logits"], ref["logits"], rtol=1e-4, atol=1e-5)


def _train(x, y, teacher, cache):
    student = tiny_model(4, num_classes=10, embedding_dim=6, seed=9)
    d = Distiller(student, teacher, {"kd": DistillTerm(KDLoss(2.0), 0.5, "logits"),
                                     "rkd": DistillTerm(RKDDistanceLoss(), 1.0)},
                  task_loss=MaskedCrossEntropy())  # fmt: skip
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    ds = paired_dataset(x, y, spec=SPEC, batch_size=32, augment="flip", seed=1,
                        teacher_cache=cache)  # fmt: skip
    d.fit(ds, epochs=3, verbose=0)
    return student.get_weights()


def test_training_with_cache_equals_training_without(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, progress=False)
    for a, b in zip(_train(x, y, teacher, None), _train(x, y, teacher, cache)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_stale_cache_is_detected_and_rebuilt(setup, tmp_path):
    x, y, teacher = setup
    path = str(tmp_path / "cache.npz")
    cache, status = load_or_build(path, teacher, x, progress=False)
    assert status == "built"
    assert load_or_build(path, teacher, x, progress=False)[1] == "loaded"
    # Other data -> stale.
    assert load_or_build(path, teacher, x[::-1], progress=False)[1] == "rebuilt (stale)"
    # Another teacher -> stale.
    other = build_recognizer("resnet8", 8, 10, channels=1, embedding_dim=6, width_multiplier=0.25)
    with pytest.raises(StaleCacheError, match="another teacher"):
        TeacherCache.load(path, fingerprint(other, x))
    # A truncated file is never taken for a cache.
    with open(path, "r+b") as f:
        f.truncate(50)
    with pytest.raises(StaleCacheError, match="unreadable"):
        TeacherCache.load(path)


def test_cache_refuses_random_crops(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, variants=("none",), progress=False)
    with pytest.raises(ValueError, match="random crop"):
        paired_dataset(x, y, spec=SPEC, batch_size=8, augment="flip_crop", teacher_cache=cache)
    with pytest.raises(ValueError, match="variants"):
        paired_dataset(x, y, spec=SPEC, batch_size=8, augment="flip", teacher_cache=cache)


def _embedding_only(teacher):
    return keras.Model(teacher.input, {"embedding": teacher.output["embedding"]})


def test_embedding_only_teacher_caches_round_trip_and_feed_no_logits(setup, tmp_path):
    x, y, teacher = setup
    emb_teacher = _embedding_only(teacher)
    path = str(tmp_path / "emb.npz")
    cache, status = load_or_build(path, emb_teacher, x, progress=False)
    assert status == "built" and cache.logits is None
    again, status = load_or_build(path, emb_teacher, x, progress=False)
    assert status == "loaded" and again.logits is None
    np.testing.assert_array_equal(again.embedding, cache.embedding)
    views, _ = next(iter(paired_dataset(x, y, spec=SPEC, batch_size=32, augment="flip", seed=5,
                                        teacher_cache=again)))  # fmt: skip
    assert "teacher_logits" not in views
    ref = emb_teacher(views["hr"], training=False)["embedding"]
    np.testing.assert_allclose(views["teacher_embedding"], ref, rtol=1e-4, atol=1e-5)


def test_class_means_reference_values():
    from lrface_tf.teachers import class_means

    e = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    means = class_means(e, np.array([0, 0, 1]), 2)
    # class 0: mean of (1, 0) and (0, 1) normalised; class 1: (1, 1) normalised.
    np.testing.assert_allclose(means, np.full((2, 2), 2**-0.5), rtol=1e-6)
    with pytest.raises(ValueError, match="class 2 has no example"):
        class_means(e, np.array([0, 0, 1]), 3)


def test_class_mean_head_logits_and_the_cache_built_from_embeddings(setup):
    from lrface_tf.teachers import add_head_logits, class_means, with_class_mean_head

    x, y, teacher = setup
    emb_teacher = _embedding_only(teacher)
    cache = TeacherCache.build(emb_teacher, x, progress=False)
    wrapped = with_class_mean_head(emb_teacher, cache.embedding[0], y, 10, scale=8.0)
    assert not wrapped.trainable_weights
    out = wrapped.predict_on_batch(x[:16].astype("float32") / 255.0)
    e = out["embedding"] / np.linalg.norm(out["embedding"], axis=-1, keepdims=True)
    np.testing.assert_allclose(out["logits"], 8.0 * e @ class_means(cache.embedding[0], y, 10).T,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    full = add_head_logits(cache, wrapped, x)
    built = TeacherCache.build(wrapped, x, progress=False)
    assert full.fingerprint == built.fingerprint
    np.testing.assert_allclose(full.logits, built.logits, rtol=1e-4, atol=1e-4)


def test_dropping_the_hr_view_with_a_cache_trains_the_same(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, progress=False)

    def ds():
        return paired_dataset(x, y, spec=SPEC, batch_size=32, augment="flip", seed=1,
                              teacher_cache=cache, keep_hr=False)  # fmt: skip

    views, _ = next(iter(ds()))
    assert "hr" not in views and {"lr", "teacher_embedding", "teacher_logits"} <= set(views)
    student = tiny_model(4, num_classes=10, embedding_dim=6, seed=9)
    d = Distiller(student, teacher, {"kd": DistillTerm(KDLoss(2.0), 0.5, "logits"),
                                     "rkd": DistillTerm(RKDDistanceLoss(), 1.0)},
                  task_loss=MaskedCrossEntropy())  # fmt: skip
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    d.fit(ds(), epochs=3, verbose=0)
    for a, b in zip(_train(x, y, teacher, cache), student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
