"""Resolution degradation in pure TensorFlow ops.

A low-resolution (LR) view is made from a high-resolution (HR) image by
downsampling it with a chosen kernel and, where the model needs a fixed input
size, upsampling it back. The choice of kernel moves face-verification results
by points, so it is always explicit and recorded through `DegradationSpec`.
"""

from __future__ import annotations

import dataclasses
import json
import math

import tensorflow as tf

# Kernel name -> tf.image.resize method. "gaussian" is handled separately:
# a Gaussian blur matched to the scale factor, then area subsampling.
_RESIZE_METHODS = {
    "bilinear": tf.image.ResizeMethod.BILINEAR,
    "bicubic": tf.image.ResizeMethod.BICUBIC,
    "area": tf.image.ResizeMethod.AREA,
    "nearest": tf.image.ResizeMethod.NEAREST_NEIGHBOR,
}
KERNELS = tuple(_RESIZE_METHODS) + ("gaussian",)
UPSAMPLE_KERNELS = ("bilinear", "bicubic", "nearest", "area")


def _check_kernel(kernel, allowed, what):
    if kernel not in allowed:
        raise ValueError(f"unknown {what} {kernel!r}: use one of {', '.join(allowed)}")


def gaussian_kernel_1d(sigma, radius):
    """Normalised 1-D Gaussian taps, shape `(2 * radius + 1,)`."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    taps = tf.exp(-0.5 * tf.square(x / sigma))
    return taps / tf.reduce_sum(taps)


def gaussian_blur(images, sigma):
    """Separable Gaussian blur of an NHWC float batch with reflect padding.

    Args:
      images: float tensor `(B, H, W, C)`.
      sigma: Python float, standard deviation in pixels; `<= 0` returns `images`.
    """
    if sigma <= 0:
        return images
    radius = max(1, int(math.ceil(3.0 * sigma)))
    taps = gaussian_kernel_1d(float(sigma), radius)
    channels = images.shape[-1]
    if channels is None:
        raise ValueError("gaussian_blur needs a static channel count")
    h, w = images.shape[1], images.shape[2]
    pad_h = min(radius, (h or radius + 1) - 1)
    pad_w = min(radius, (w or radius + 1) - 1)
    x = tf.pad(images, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="REFLECT")
    # Reflect padding is limited by the image size; pad the rest by edge values.
    extra_h, extra_w = radius - pad_h, radius - pad_w
    if extra_h or extra_w:
        x = tf.pad(x, [[0, 0], [extra_h, extra_h], [extra_w, extra_w], [0, 0]], mode="SYMMETRIC")
    kh = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, channels, 1])
    kw = tf.tile(tf.reshape(taps, [1, -1, 1, 1]), [1, 1, channels, 1])
    x = tf.nn.depthwise_conv2d(x, kh, strides=[1, 1, 1, 1], padding="VALID")
    return tf.nn.depthwise_conv2d(x, kw, strides=[1, 1, 1, 1], padding="VALID")


def anti_alias_sigma(scale):
    """Blur sigma for downsampling by `scale` (> 1): the common 0.5 * scale rule.

    (A Gaussian of sigma = s / 2 keeps the spectrum mostly under the new Nyquist
    frequency; a smaller scale than 1 needs no blur.)
    """
    return 0.5 * scale if scale > 1 else 0.0


def degrade(images, size, kernel="area", upsample_to=None, upsample_kernel="bilinear"):
    """Downsample an image batch to `size` and optionally upsample it back.

    Args:
      images: `(B, H, W, C)` or `(H, W, C)` tensor, any real dtype; returned as
        float32 in the same value range.
      size: int or `(height, width)`: the low-resolution size.
      kernel: one of `KERNELS`. "gaussian" blurs with sigma = scale / 2 and then
        area-subsamples (a common model of a defocused, small face).
      upsample_to: None, or int / `(height, width)`: bring the LR image back to
        this size (for a model with a fixed input size).
      upsample_kernel: one of `UPSAMPLE_KERNELS`, used with `upsample_to`.

    Returns:
      float32 tensor `(B, size, size, C)` or `(B, upsample_to, upsample_to, C)`
      (no batch axis if the input had none).

    Example:
      >>> x = tf.ones([2, 28, 28, 1])
      >>> degrade(x, 7, "area", upsample_to=28).shape
      TensorShape([2, 28, 28, 1])
    """
    _check_kernel(kernel, KERNELS, "degradation kernel")
    images = tf.convert_to_tensor(images)
    unbatched = images.shape.rank == 3
    x = tf.cast(images, tf.float32)
    if unbatched:
        x = x[None]
    lr_hw = _pair(size)
    if kernel == "gaussian":
        in_h = x.shape[1] if x.shape[1] is not None else lr_hw[0]
        sigma = anti_alias_sigma(in_h / lr_hw[0])
        x = gaussian_blur(x, sigma)
        x = tf.image.resize(x, lr_hw, method=tf.image.ResizeMethod.AREA)
    else:
        x = tf.image.resize(x, lr_hw, method=_RESIZE_METHODS[kernel], antialias=False)
    if upsample_to is not None:
        _check_kernel(upsample_kernel, UPSAMPLE_KERNELS, "upsample kernel")
        x = tf.image.resize(x, _pair(upsample_to), method=_RESIZE_METHODS[upsample_kernel])
    return x[0] if unbatched else x


def _pair(size):
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


@dataclasses.dataclass(frozen=True)
class DegradationSpec:
    """How a low-resolution view is made; written into every run's outputs.

    Attributes:
      kernel: downsampling kernel, one of `KERNELS`.
      sizes: LR sizes to draw from (one is drawn per example when several).
      probability: fraction of examples degraded; the rest keep full resolution
        (KD_im's LR augmentation uses 0.4; plain cross-resolution uses 1.0).
      output_size: the student's input size. None keeps the LR size (only valid
        with one size and probability 1); otherwise LR images are resized to it.
      upsample_kernel: kernel used to reach `output_size`.
      two_sided: evaluation only: degrade both images of a pair (True) or the
        probe only (False, "HR gallery vs LR probe").
    """

    kernel: str = "area"
    sizes: tuple = (7,)
    probability: float = 1.0
    output_size: int | None = None
    upsample_kernel: str = "bilinear"
    two_sided: bool = False

    def __post_init__(self):
        _check_kernel(self.kernel, KERNELS, "degradation kernel")
        _check_kernel(self.upsample_kernel, UPSAMPLE_KERNELS, "upsample kernel")
        from lrface_tf.validation import check_fraction, check_int

        try:
            sizes = tuple(check_int("degradation size", s, 1) for s in self.sizes)
        except ValueError as e:
            raise ValueError(f"{e} (sizes {self.sizes}); LR sizes are whole pixels >= 1") from None
        if not sizes:
            raise ValueError("degradation sizes must not be empty")
        object.__setattr__(self, "sizes", sizes)
        check_fraction("degradation probability", self.probability)
        if self.output_size is not None:
            object.__setattr__(self, "output_size", check_int("output_size", self.output_size, 1))
        if self.output_size is None and (len(sizes) > 1 or self.probability < 1.0):
            raise ValueError(
                "output_size is required when several LR sizes are drawn or probability < 1 "
                "(images of different sizes cannot share a batch); set --student_size"
            )

    @property
    def student_size(self):
        return self.output_size if self.output_size is not None else self.sizes[0]

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["sizes"] = list(self.sizes)
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(**{**d, "sizes": tuple(d["sizes"])})

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    def check_hr_size(self, hr_size):
        """Every LR size (and the output size) must be at most the HR size it is made from."""
        if max(self.sizes) > hr_size:
            raise ValueError(
                f"LR sizes {list(self.sizes)} exceed the HR size {hr_size}: an LR view cannot "
                "be larger than the image it is made from"
            )

    def apply(self, image, seed=None):
        """Degrade ONE image `(H, W, C)` per the spec (random size / probability).

        `seed` is a stateless seed pair `(2,)` int tensor; None draws from the
        global generator. Deterministic specs (one size, probability 1) ignore it.
        """
        image = tf.cast(image, tf.float32)
        if len(self.sizes) == 1 and self.probability >= 1.0:
            return degrade(
                image, self.sizes[0], self.kernel, self.output_size, self.upsample_kernel
            )
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        u = tf.random.stateless_uniform([], seed=seed)
        pick = tf.random.stateless_uniform(
            [], seed=seed + 1, maxval=len(self.sizes), dtype=tf.int32
        )
        branches = [
            (lambda s=s: degrade(image, s, self.kernel, self.output_size, self.upsample_kernel))
            for s in self.sizes
        ]
        lr = tf.switch_case(pick, branches)
        keep = tf.image.resize(image, _pair(self.output_size), method=_RESIZE_METHODS["area"])
        return tf.cond(u < self.probability, lambda: lr, lambda: keep)


@dataclasses.dataclass(frozen=True)
class LRAugment:
    """Per-step perturbations of the student's LR view (training only).

    With a teacher cache the K views are fixed, so over a long schedule the
    student sees the same K LR images of a face again and again and learns them
    by heart (measured on LR-LFW: its cosine to the teacher is 0.60 on the training
    views and 0.43 on held-out faces, bench/results/lfw_val.md and
    configs/lfw/val/eval_agreement.cfg). These perturbations are drawn afresh at
    every step from the example's stateless seed, after the LR view is made, so
    they cost a few ops on a 16x16 image and leave the teacher's target (the
    clean HR view's embedding) as it is: the student learns to ignore them. On
    LR-LFW they lowered the training fit and raised TAR@FAR=1e-3, not the accuracy
    (configs/lfw/val/feature_r18_100_lraug.cfg).

    Attributes:
      noise: Gaussian pixel noise, its std drawn per example from [0, noise]
        (pixel values in [0, 1]; results clipped to [0, 1]).
      erase: probability of erasing one square (a side of 20-40% of the image's)
        at a random place, filled with the image's mean colour (random erasing).
    """

    noise: float = 0.0
    erase: float = 0.0

    def __post_init__(self):
        from lrface_tf.validation import check_fraction

        check_fraction("LR noise", self.noise)
        check_fraction("LR erase probability", self.erase)
        if self.noise > 0.5:
            raise ValueError(f"LR noise is a pixel std in [0, 0.5], got {self.noise}")

    @property
    def active(self):
        return self.noise > 0 or self.erase > 0

    def to_dict(self):
        return dataclasses.asdict(self)

    def apply(self, image, seed):
        """The perturbed `(H, W, C)` float image in [0, 1]; `seed` int32 `(2,)`."""
        x = image
        if self.noise > 0:
            std = tf.random.stateless_uniform([], seed=seed, maxval=self.noise)
            noise = tf.random.stateless_normal(tf.shape(x), seed=seed + 1)
            x = tf.clip_by_value(x + std * noise, 0.0, 1.0)
        if self.erase > 0:
            h, w = tf.shape(x)[0], tf.shape(x)[1]
            u = tf.random.stateless_uniform([4], seed=seed + 2)
            side = tf.cast(
                tf.round((0.2 + 0.2 * u[0]) * tf.cast(tf.minimum(h, w), tf.float32)), tf.int32
            )
            side = tf.maximum(side, 1)
            top = tf.cast(u[1] * tf.cast(h - side + 1, tf.float32), tf.int32)
            left = tf.cast(u[2] * tf.cast(w - side + 1, tf.float32), tf.int32)
            rows = tf.range(h)[:, None, None]
            cols = tf.range(w)[None, :, None]
            inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            inside = inside & (u[3] < self.erase)
            mean = tf.reduce_mean(x, axis=[0, 1], keepdims=True)
            x = tf.where(inside, mean, x)
        return x
