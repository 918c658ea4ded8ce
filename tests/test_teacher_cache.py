import keras
import numpy as np
import pytest

from lrface_tf.data import DegradationSpec, paired_dataset
from lrface_tf.data.teacher_cache import (
    TeacherCache,
    blend,
    image_keys,
    load_or_build,
    store_path,
    view_mean,
)
from lrface_tf.data.views import ViewSpec
from lrface_tf.losses import KDLoss, MaskedCrossEntropy, RKDDistanceLoss
from lrface_tf.models import Distiller, DistillTerm, build_recognizer
from tests.test_case import digits, tiny_model

SPEC = DegradationSpec(sizes=(4,))
VIEWS = ViewSpec(count=4, shift=0.1, scale=0.1, rotation=10.0, colour=0.2)


@pytest.fixture(scope="module")
def setup():
    x, y = digits(96)
    keras.utils.set_random_seed(3)
    teacher = build_recognizer("resnet8", 8, 10, channels=1, embedding_dim=6, width_multiplier=0.25)
    return x, y, teacher


def test_cached_outputs_are_the_teachers_outputs_for_the_shown_view(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, VIEWS, progress=False)
    assert cache.embedding.shape == (4, 96, 6) and cache.params.shape == (4, 96, 8)
    ds = paired_dataset(x, y, spec=SPEC, batch_size=32, augment="none", seed=5, teacher_cache=cache)
    views, _ = next(iter(ds))
    ref = teacher(views["hr"], training=False)
    np.testing.assert_allclose(views["teacher_embedding"], ref["embedding"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(views["teacher_logits"], ref["logits"], rtol=1e-4, atol=1e-5)


def test_a_teacher_reading_lr_views_gets_the_students_input_at_its_size(setup, tmp_path):
    from lrface_tf.data import degrade

    x, y, teacher = setup
    lr = DegradationSpec(sizes=(4,), upsample_kernel="bilinear")
    cache, status, path = load_or_build(
        str(tmp_path), teacher, x, VIEWS, progress=False, lr_input=lr
    )
    assert status == "built" and path != store_path(str(tmp_path), teacher, VIEWS)[0]
    ds = paired_dataset(x, y, spec=SPEC, batch_size=32, augment="none", seed=5, teacher_cache=cache)
    views, _ = next(iter(ds))
    # The teacher's target is its output on the shown view, degraded to 4 px and brought
    # back to 8: what the student sees, at the teacher's size.
    seen = degrade(views["hr"], 4, "area", 8, "bilinear")
    ref = teacher(seen, training=False)["embedding"]
    np.testing.assert_allclose(views["teacher_embedding"], ref, rtol=1e-4, atol=1e-5)
    hr = teacher(views["hr"], training=False)["embedding"]
    assert not np.allclose(views["teacher_embedding"], hr, atol=1e-3)


def test_a_blended_target_has_the_two_feature_terms_minimiser(setup, tmp_path):
    import tensorflow as tf

    from lrface_tf.losses import FeatureLoss

    x, y, teacher = setup
    hr, _, _ = load_or_build(str(tmp_path), teacher, x, VIEWS, progress=False)
    lr, _, _ = load_or_build(
        str(tmp_path), teacher, x, VIEWS, progress=False, lr_input=DegradationSpec(sizes=(4,))
    )
    w = 0.3
    mixed = blend(hr, lr, w)
    assert mixed.fingerprint not in (hr.fingerprint, lr.fingerprint)
    np.testing.assert_allclose(np.linalg.norm(mixed.embedding, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(mixed.logits, 0.7 * hr.logits + 0.3 * lr.logits, rtol=1e-5)
    # One normalised-feature term against the blend pulls a student embedding the way the
    # two weighted terms against the HR and the LR readings do (gradient / blend length).
    loss = FeatureLoss("l2", normalize=True)
    s = tf.Variable(np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32))
    t_hr, t_lr, t_mix = hr.embedding[0], lr.embedding[0], mixed.embedding[0]
    with tf.GradientTape(persistent=True) as tape:
        one = tf.reduce_sum(loss.compute(t_mix, s, None, True))
        two = tf.reduce_sum(
            (1 - w) * loss.compute(t_hr, s, None, True) + w * loss.compute(t_lr, s, None, True)
        )
    unit = lambda e: e / np.linalg.norm(e, axis=-1, keepdims=True)  # noqa: E731
    length = np.linalg.norm((1 - w) * unit(t_hr) + w * unit(t_lr), axis=-1, keepdims=True)
    np.testing.assert_allclose(
        tape.gradient(two, s), length * tape.gradient(one, s), rtol=1e-4, atol=1e-6
    )
    assert not np.allclose(tape.gradient(two, s), 0.0)
    other = TeacherCache.build(teacher, x[:48], VIEWS, progress=False)
    with pytest.raises(ValueError, match="hold different views or images"):
        blend(hr, other, w)


def test_a_view_mean_target_turns_toward_the_images_mean_over_its_views():
    # Two views of two images in 2-D: image 0's views point at 0 and 90 degrees, image 1's
    # both at 90. The mean direction of image 0 is 45 degrees; half of it bisects again.
    e = np.array([[[2.0, 0.0], [0.0, 3.0]], [[0.0, 1.0], [0.0, 0.5]]], np.float32)
    logits = np.array([[[1.0, 0.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 2.0]]], np.float32)
    cache = TeacherCache(e, logits, np.zeros((2, 2, 8), np.float32), ViewSpec(count=2), "fp")
    polar = lambda a: np.array([np.cos(np.radians(a)), np.sin(np.radians(a))])  # noqa: E731
    half = view_mean(cache, 0.5)
    np.testing.assert_allclose(half.embedding[:, 0], [polar(22.5), polar(67.5)], atol=1e-6)
    np.testing.assert_allclose(half.embedding[:, 1], [polar(90), polar(90)], atol=1e-6)
    np.testing.assert_allclose(half.logits[:, 0], [[1.5, 0.0], [2.5, 0.0]])
    np.testing.assert_allclose(half.logits[:, 1], [[0.0, 0.5], [0.0, 1.5]])
    whole = view_mean(cache, 1.0)
    np.testing.assert_allclose(whole.embedding[:, 0], [polar(45), polar(45)], atol=1e-6)
    np.testing.assert_allclose(
        view_mean(cache, 0.0).embedding[:, 0], [polar(0), polar(90)], atol=1e-6
    )
    assert len({half.fingerprint, whole.fingerprint, cache.fingerprint}) == 3
    with pytest.raises(ValueError, match=r"weight 1.5 is outside \[0, 1\]"):
        view_mean(cache, 1.5)
    one = TeacherCache(e[:1], None, np.zeros((1, 2, 8), np.float32), ViewSpec(), "fp")
    with pytest.raises(ValueError, match="needs a cache of 2\\+ views per image, this one has 1"):
        view_mean(one, 0.5)


def test_every_shown_view_carries_the_view_mean_target(setup):
    x, y, teacher = setup
    raw = TeacherCache.build(teacher, x, VIEWS, progress=False)
    ds = paired_dataset(
        x, y, spec=SPEC, batch_size=96, augment="none", seed=5, teacher_cache=view_mean(raw, 1.0)
    )
    views, _ = next(iter(ds))
    # Whichever view a step shows, the target is the teacher's reading averaged over all
    # of the image's views (here by hand from the raw per-view outputs).
    unit = lambda e: e / np.linalg.norm(e, axis=-1, keepdims=True)  # noqa: E731
    means = unit(unit(raw.embedding).mean(axis=0))
    target = views["teacher_embedding"].numpy()
    nearest = np.min(np.linalg.norm(target[:, None] - means[None], axis=-1), axis=1)
    np.testing.assert_allclose(nearest, 0.0, atol=1e-5)
    own = unit(teacher(views["hr"], training=False)["embedding"].numpy())
    assert np.max(np.linalg.norm(target - own, axis=-1)) > 1e-2  # not the shown view's reading


def _train(x, y, teacher, cache, keep_hr=True):
    student = tiny_model(4, num_classes=10, embedding_dim=6, seed=9)
    terms = {"kd": DistillTerm(KDLoss(2.0), 0.5, "logits"), "rkd": DistillTerm(RKDDistanceLoss())}
    d = Distiller(student, teacher, terms, task_loss=MaskedCrossEntropy())
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    ds = paired_dataset(
        x,
        y,
        spec=SPEC,
        batch_size=32,
        augment="none",
        views=VIEWS,
        seed=1,
        teacher_cache=cache,
        keep_hr=keep_hr,
        start_step=0,
    )
    d.fit(ds, epochs=3, steps_per_epoch=3, verbose=0)
    return student.get_weights()


def test_training_with_cache_equals_training_without(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, VIEWS, progress=False)
    for a, b in zip(_train(x, y, teacher, None), _train(x, y, teacher, cache)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Without the HR view in the batches (nothing reads it): the same training.
    for a, b in zip(_train(x, y, teacher, cache), _train(x, y, teacher, cache, keep_hr=False)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_views_belong_to_the_image_not_its_position():
    x, _ = digits(40)
    keys = image_keys(x)
    assert len(np.unique(keys)) == len(x)
    params = VIEWS.params(keys)
    perm = np.random.RandomState(0).permutation(40)
    np.testing.assert_array_equal(VIEWS.params(keys[perm]), params[:, perm])
    np.testing.assert_array_equal(params[0], np.tile(params[0, :1], (40, 1)))  # view 0: identity
    assert np.all(params[1, :, 0] == 1.0)  # view 1: the mirror image


def test_plain_and_mirrored_views_are_copies_with_the_warps_pixels():
    import tensorflow as tf

    from lrface_tf.data.views import _warp, apply_view

    x = tf.random.stateless_uniform((5, 12, 10, 3), seed=(1, 2))
    params = ViewSpec(count=2).params(np.arange(5, dtype=np.uint64))
    assert not ViewSpec(count=2).moves and VIEWS.moves and VIEWS.recolours
    for v in range(2):  # the mirror (no warp, no colour ops) gives the warp's values exactly
        warped = _warp(x, tf.constant(params[v])).numpy()
        np.testing.assert_array_equal(apply_view(x, params[v]), warped)
        np.testing.assert_array_equal(apply_view(x, params[v], False, False), warped)
        np.testing.assert_array_equal(apply_view(x[2], params[v][2]), warped[2])
    np.testing.assert_array_equal(warped, x.numpy()[:, :, ::-1])
    moving = VIEWS.params(np.arange(5, dtype=np.uint64))[2]
    np.testing.assert_array_equal(apply_view(x, moving), apply_view(x, moving, True, True))


def test_one_store_serves_subsets_and_supersets(setup, tmp_path):
    x, _, teacher = setup
    cache, status, path = load_or_build(str(tmp_path), teacher, x[:50], VIEWS, progress=False)
    assert status == "built"
    again, status, _ = load_or_build(str(tmp_path), teacher, x[10:30][::-1], VIEWS, progress=False)
    assert status == "loaded"  # a reordered subset costs nothing
    np.testing.assert_array_equal(again.embedding, cache.embedding[:, 10:30][:, ::-1])
    more, status, _ = load_or_build(str(tmp_path), teacher, x, VIEWS, progress=False)
    assert status == "extended by 46 images"
    np.testing.assert_array_equal(more.embedding[:, :50], cache.embedding)
    fresh = TeacherCache.build(teacher, x, VIEWS, progress=False)
    np.testing.assert_allclose(more.embedding, fresh.embedding, rtol=1e-5, atol=1e-6)
    # Another teacher or another view spec: another store.
    other = build_recognizer("resnet8", 8, 10, channels=1, embedding_dim=6, width_multiplier=0.25)
    assert store_path(str(tmp_path), other, VIEWS)[0] != path
    assert store_path(str(tmp_path), teacher, ViewSpec(count=2))[0] != path
    # A truncated store is never taken for a cache.
    with open(path, "r+b") as f:
        f.truncate(50)
    _, status, _ = load_or_build(str(tmp_path), teacher, x[:5], VIEWS, progress=False)
    assert status.startswith("rebuilt (stale")


def test_cache_refuses_random_crops_and_mismatched_views(setup):
    x, y, teacher = setup
    cache = TeacherCache.build(teacher, x, ViewSpec(count=1), progress=False)
    with pytest.raises(ValueError, match="random crop"):
        paired_dataset(x, y, spec=SPEC, batch_size=8, augment="flip_crop", teacher_cache=cache)
    with pytest.raises(ValueError, match="mirrored view"):
        paired_dataset(x, y, spec=SPEC, batch_size=8, augment="flip", teacher_cache=cache)
    with pytest.raises(ValueError, match="rebuild the cache"):
        paired_dataset(
            x, y, spec=SPEC, batch_size=8, augment="none", views=VIEWS, teacher_cache=cache
        )


def _embedding_only(teacher):
    return keras.Model(teacher.input, {"embedding": teacher.output["embedding"]})


def test_embedding_only_teacher_and_the_class_mean_head(setup, tmp_path):
    from lrface_tf.teachers import class_means, with_class_mean_head

    x, y, teacher = setup
    emb_teacher = _embedding_only(teacher)
    cache, _, _ = load_or_build(str(tmp_path), emb_teacher, x, VIEWS, progress=False)
    assert cache.logits is None
    views, _ = next(
        iter(
            paired_dataset(
                x, y, spec=SPEC, batch_size=32, augment="none", seed=5, teacher_cache=cache
            )
        )
    )
    assert "teacher_logits" not in views
    # The class-mean head: its logits computed from the cached embeddings on the fly
    # equal the wrapped teacher's on the view shown.
    means = class_means(cache.embedding[0], y, 10)
    wrapped = with_class_mean_head(emb_teacher, cache.embedding[0], y, 10, scale=8.0)
    assert not wrapped.trainable_weights
    headed = cache.with_head(means.T, 8.0)
    views, _ = next(
        iter(
            paired_dataset(
                x, y, spec=SPEC, batch_size=32, augment="none", seed=5, teacher_cache=headed
            )
        )
    )
    ref = wrapped(views["hr"], training=False)
    np.testing.assert_allclose(views["teacher_logits"], ref["logits"], rtol=1e-4, atol=1e-4)


def test_class_means_reference_values():
    from lrface_tf.teachers import class_means

    e = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    means = class_means(e, np.array([0, 0, 1]), 2)
    # class 0: mean of (1, 0) and (0, 1) normalised; class 1: (1, 1) normalised.
    np.testing.assert_allclose(means, np.full((2, 2), 2**-0.5), rtol=1e-6)
    with pytest.raises(ValueError, match="class 2 has no example"):
        class_means(e, np.array([0, 0, 1]), 3)
