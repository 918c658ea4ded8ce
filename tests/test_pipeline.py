import numpy as np
import pytest

from lrface_tf.data.degrade import DegradationSpec, LRAugment, degrade
from lrface_tf.data.pipeline import UNLABELLED, class_balanced_subset, paired_dataset
from tests.test_case import digits


def test_lr_view_is_the_degraded_hr_view():
    x, y = digits(64)
    spec = DegradationSpec(kernel="area", sizes=(4,))
    ds = paired_dataset(x, y, spec=spec, batch_size=16, seed=3)
    views, labels = next(iter(ds))
    hr, lr = views["hr"].numpy(), views["lr"].numpy()
    assert hr.shape == (16, 8, 8, 1) and lr.shape == (16, 4, 4, 1)
    np.testing.assert_allclose(lr, degrade(hr, 4, "area").numpy(), atol=1e-6)
    # Augmentation happened (some HR views differ from their source image)...
    src = {int(lab): None for lab in labels.numpy()}
    assert len(src) > 1
    raw = x.astype(np.float32) / 255.0
    matches = [any(np.allclose(h, r) for r in raw) for h in hr]
    assert not all(matches)
    # ...and values stay in [0, 1].
    assert hr.min() >= 0.0 and hr.max() <= 1.0


def test_same_seed_same_batches_other_seed_other_batches():
    x, y = digits(64)
    spec = DegradationSpec(sizes=(4,))

    def first(seed):
        v, lab = next(iter(paired_dataset(x, y, spec=spec, batch_size=8, seed=seed)))
        return v["hr"].numpy(), lab.numpy()

    a, b, c = first(1), first(1), first(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_evaluation_order_is_deterministic_and_complete():
    x, y = digits(50)
    ds = paired_dataset(x, y, spec=DegradationSpec(sizes=(4,)), batch_size=16, training=False)
    labels = np.concatenate([lab.numpy() for _, lab in ds])
    np.testing.assert_array_equal(labels, y)  # nothing dropped, nothing reordered


def test_class_balanced_subset():
    _, y = digits()
    idx = class_balanced_subset(y, 5, seed=0)
    assert len(idx) == 50
    np.testing.assert_array_equal(np.bincount(y[idx]), [5] * 10)
    np.testing.assert_array_equal(idx, class_balanced_subset(y, 5, seed=0))
    assert UNLABELLED == -1


def _batches(ds, k):
    out = []
    for views, labels in ds.take(k):
        out.append((views["hr"].numpy(), views["lr"].numpy(), labels.numpy()))
    return out


def test_resumable_stream_depends_only_on_the_global_step():
    import tensorflow as tf

    x, y = digits(40)  # 5 steps of 8 per epoch
    spec = DegradationSpec(sizes=(4,))

    def stream(start):
        return paired_dataset(x, y, spec=spec, batch_size=8, seed=4, start_step=start)

    full = _batches(stream(0), 12)
    resumed = _batches(stream(3), 9)  # crosses two epoch boundaries
    for a, b in zip(full[3:], resumed):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    # Each epoch is a permutation of the data (no example twice within an epoch).
    first_epoch = np.concatenate([b[2] for b in full[:5]])
    np.testing.assert_array_equal(np.sort(first_epoch), np.sort(y))
    # A variable is read when the iterator is created (e.g. optimizer.iterations).
    step = tf.Variable(0, dtype=tf.int64)
    ds = stream(step)
    np.testing.assert_array_equal(_batches(ds, 1)[0][2], full[0][2])
    step.assign(7)
    np.testing.assert_array_equal(_batches(ds, 1)[0][2], full[7][2])


def test_out_of_range_labels_are_refused_up_front():
    x, y = digits(20)
    y = y.copy()
    y[7] = 12
    with pytest.raises(ValueError, match="label 12 at index 7 is out of range for 10 classes"):
        paired_dataset(x, y, spec=DegradationSpec(sizes=(4,)), batch_size=4, num_classes=10)
    y[7] = -1  # unlabelled is fine
    paired_dataset(x, y, spec=DegradationSpec(sizes=(4,)), batch_size=4, num_classes=10)


def _view_streams(**kw):
    """Digits with ids as labels, 3 views (shift, rotation, colour) and a fake teacher cache."""
    from lrface_tf.data.teacher_cache import TeacherCache, image_keys
    from lrface_tf.data.views import ViewSpec

    x, _ = digits(48)
    ids = np.arange(48, dtype=np.int32)
    views = ViewSpec(count=3, shift=0.1, rotation=10.0, colour=0.2)
    emb = np.random.RandomState(0).randn(3, 48, 4).astype(np.float32)
    cache = TeacherCache(emb, None, views.params(image_keys(x)), views, "test")
    cache = cache.with_head(np.random.RandomState(1).randn(4, 5).astype(np.float32), 8.0)
    base = dict(spec=DegradationSpec(sizes=(4,)), batch_size=8, seed=2, augment="none")
    return x, paired_dataset(x, ids, teacher_cache=cache, keep_hr=False, **{**base, **kw})


@pytest.mark.parametrize("start_step", [0, None])  # resumable stream, one shuffled pass
def test_precomputed_lr_views_equal_the_views_made_every_step(start_step):
    every_step = _batches_of(_view_streams(start_step=start_step)[1], 12)
    once = _batches_of(_view_streams(start_step=start_step, precompute_lr=True)[1], 12)
    assert len(once) == len(every_step) == (6 if start_step is None else 12)
    for (a, ya), (b, yb) in zip(every_step, once):
        np.testing.assert_array_equal(ya, yb)  # the same examples, in the same order
        assert sorted(a) == sorted(b) == ["lr", "teacher_embedding", "teacher_logits"]
        np.testing.assert_allclose(b["lr"], a["lr"], atol=1e-6)  # the same ops, batched
        np.testing.assert_array_equal(b["teacher_embedding"], a["teacher_embedding"])
        np.testing.assert_allclose(b["teacher_logits"], a["teacher_logits"], atol=1e-5)


def _batches_of(ds, k):
    return [({n: v.numpy() for n, v in x.items()}, y.numpy()) for x, y in ds.take(k)]


def test_unordered_input_keeps_the_examples_and_their_views():
    # One pass over 48 examples (ids as labels) in 6 batches; out of order, each
    # example still comes once, with the view and degradation its seed gives.
    def by_id(ds):
        batches = _batches_of(ds, 100)
        assert len(batches) == 6
        return {int(i): lr for x, y in batches for i, lr in zip(y, x["lr"])}

    ordered, unordered = by_id(_view_streams()[1]), by_id(_view_streams(deterministic=False)[1])
    assert sorted(ordered) == sorted(unordered) == list(range(48))
    for i in ordered:
        np.testing.assert_array_equal(ordered[i], unordered[i])


def test_precompute_lr_refuses_what_it_cannot_do():
    x, y = digits(16)
    with pytest.raises(ValueError, match="keep_hr=False"):
        paired_dataset(x, y, spec=DegradationSpec(sizes=(4,)), batch_size=4, precompute_lr=True)
    random_size = DegradationSpec(sizes=(2, 4), output_size=4)
    with pytest.raises(ValueError, match="deterministic degradation"):
        _view_streams(start_step=0, precompute_lr=True, spec=random_size)


def test_lr_augment_erases_one_square_with_the_mean_colour():
    import tensorflow as tf

    img = np.random.RandomState(0).rand(16, 16, 3).astype(np.float32)
    aug = LRAugment(erase=1.0)
    squares = set()
    for k in range(20):
        seed = tf.constant([7, k], tf.int32)
        out = aug.apply(tf.constant(img), seed).numpy()
        np.testing.assert_array_equal(out, aug.apply(tf.constant(img), seed).numpy())
        changed = np.argwhere(np.any(out != img, axis=-1))
        (top, left), (bottom, right) = changed.min(0), changed.max(0)
        side = bottom - top + 1
        assert side == right - left + 1 and 3 <= side <= 6  # 20-40% of 16 px
        assert len(changed) == side * side  # one full square, nothing outside it
        np.testing.assert_allclose(out[top, left], img.mean(axis=(0, 1)), atol=1e-6)
        squares.add((top, left, side))
    assert len(squares) > 5  # placed and sized afresh per seed


def test_lr_augment_noise_stays_in_range_and_never_moves_the_teacher_target():
    aug = LRAugment(noise=0.1, erase=0.5)
    clean = _batches_of(_view_streams(start_step=0, precompute_lr=True)[1], 4)
    noisy = _batches_of(_view_streams(start_step=0, precompute_lr=True, lr_augment=aug)[1], 4)
    again = _batches_of(_view_streams(start_step=0, lr_augment=aug)[1], 4)  # made every step
    for (a, ya), (b, yb), (c, _) in zip(clean, noisy, again):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(a["teacher_embedding"], b["teacher_embedding"])
        residual = b["lr"] - a["lr"]
        assert 0.0 < np.abs(residual).mean() and 0.0 <= b["lr"].min() <= b["lr"].max() <= 1.0
        np.testing.assert_allclose(c["lr"], b["lr"], atol=1e-5)  # same seeds, same noise
    # Evaluation streams are never perturbed.
    x, y = digits(16)
    spec = DegradationSpec(sizes=(4,))
    ev = dict(spec=spec, batch_size=16, training=False)
    plain = next(iter(paired_dataset(x, y, **ev)))[0]["lr"].numpy()
    evaluated = next(iter(paired_dataset(x, y, lr_augment=aug, **ev)))[0]["lr"].numpy()
    np.testing.assert_array_equal(plain, evaluated)


def test_lr_augment_refuses_out_of_range_values():
    with pytest.raises(ValueError, match="LR noise is a pixel std in \\[0, 0.5\\], got 0.7"):
        LRAugment(noise=0.7)
    with pytest.raises(ValueError, match="LR erase probability must be in \\[0, 1\\]"):
        LRAugment(erase=1.5)
