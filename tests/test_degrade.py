import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.data.degrade import (
    KERNELS,
    DegradationSpec,
    degrade,
    gaussian_blur,
    gaussian_kernel_1d,
)


@pytest.mark.parametrize("kernel", KERNELS)
def test_constant_image_stays_constant(kernel):
    x = tf.fill([2, 16, 16, 3], 0.3)
    y = degrade(x, 4, kernel, upsample_to=16)
    assert y.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(y.numpy(), 0.3, atol=1e-6)


def test_area_is_block_mean():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    y = degrade(x, 2, "area").numpy()[0, ..., 0]
    np.testing.assert_allclose(y, [[2.5, 4.5], [10.5, 12.5]])


def test_nearest_returns_input_values_and_unbatched_input():
    x = np.random.RandomState(0).rand(8, 8, 1).astype(np.float32)
    y = degrade(x, 4, "nearest").numpy()
    assert y.shape == (4, 4, 1)
    assert set(np.round(y.ravel(), 6)) <= set(np.round(x.ravel(), 6))


def test_gaussian_taps_and_blur():
    taps = gaussian_kernel_1d(1.5, 5).numpy()
    np.testing.assert_allclose(taps.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(taps, taps[::-1])
    # A blurred impulse keeps its mass (away from the border) and spreads it.
    x = np.zeros((1, 21, 21, 1), np.float32)
    x[0, 10, 10, 0] = 1.0
    y = gaussian_blur(tf.constant(x), 1.5).numpy()
    np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-5)
    assert y.max() < 0.1


def test_gaussian_removes_aliasing_that_nearest_keeps():
    # A 1-pixel checkerboard has no content at 1/4 scale: gaussian -> flat grey.
    x = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)[None, ..., None]
    g = degrade(x, 8, "gaussian").numpy()
    n = degrade(x, 8, "nearest").numpy()
    assert g.std() < 0.02
    assert n.std() > 0.3 or abs(n.mean() - 0.5) > 0.3


def test_errors_name_the_kernel():
    with pytest.raises(ValueError, match="unknown degradation kernel 'lanczos'"):
        degrade(tf.zeros([1, 8, 8, 1]), 4, "lanczos")
    with pytest.raises(ValueError, match="probability"):
        DegradationSpec(probability=1.5)
    with pytest.raises(ValueError, match="output_size is required"):
        DegradationSpec(sizes=(7, 14))


def test_spec_round_trip_and_apply():
    spec = DegradationSpec(kernel="gaussian", sizes=(4, 8), probability=0.4, output_size=16)
    assert DegradationSpec.from_dict(spec.to_dict()) == spec
    assert DegradationSpec.from_dict(__import__("json").loads(spec.to_json())) == spec
    img = tf.random.stateless_uniform([16, 16, 1], seed=[1, 2])
    degraded = 0
    for i in range(200):
        out = spec.apply(img, seed=tf.constant([i, 7]))
        assert out.shape == (16, 16, 1)
        degraded += int(not np.allclose(out.numpy(), img.numpy(), atol=1e-6))
    # 40% +- a generous binomial margin (sd ~ 3.5%).
    assert 0.25 < degraded / 200 < 0.55
    # The same seed gives the same view.
    a = spec.apply(img, seed=tf.constant([3, 3])).numpy()
    np.testing.assert_array_equal(a, spec.apply(img, seed=tf.constant([3, 3])).numpy())
