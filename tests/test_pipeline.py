import numpy as np

from lrface_tf.data.degrade import DegradationSpec, degrade
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
