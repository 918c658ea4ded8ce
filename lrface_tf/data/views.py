"""A fixed set of K augmented views per image, with their parameters written down.

Distillation from a frozen teacher can be cached: the teacher's output for an
image never changes. With augmentation it changes with the view, so the views
are made a property of the data: each image has K views, each a deterministic
function of the image and a parameter vector drawn once from (seed, view,
image). A training step picks one view per example; the teacher's output for
it can be computed once (`TeacherCache`) or every step, with the same result.
The student's LR view is made from the same augmented HR view, so both see
the same geometry.

View 0 is the image itself; view 1 (when K >= 2 and `flip`) its mirror image;
views 2.. draw a random flip, shift, scale, rotation and colour change within
the `ViewSpec`'s ranges.

Parameters per view (`PARAMS`): flip (0/1), shift x and y (fractions of the
side), scale (zoom factor), rotation (degrees), brightness (added), contrast
(factor around the image mean), saturation (factor toward grey).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from lrface_tf.validation import check_int, check_non_negative

PARAMS = ("flip", "shift_x", "shift_y", "scale", "rotation", "brightness", "contrast", "saturation")
IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """How the K views of every image are drawn (recorded with runs and caches).

    Attributes:
      count: K >= 1 views per image.
      flip: view 1 is the mirror image and views 2.. flip at random.
      shift: largest translation, as a fraction of the side.
      scale: largest zoom change (a factor in [1 - scale, 1 + scale]).
      rotation: largest rotation in degrees.
      colour: largest brightness change (added) and contrast / saturation change
        (a factor in [1 - colour, 1 + colour]).
      seed: seeds the parameters; the same spec gives the same views.
    """

    count: int = 1
    flip: bool = True
    shift: float = 0.0
    scale: float = 0.0
    rotation: float = 0.0
    colour: float = 0.0
    seed: int = 0

    def __post_init__(self):
        check_int("views", self.count, 1)
        for name in ("shift", "scale", "rotation", "colour"):
            check_non_negative(f"view {name}", getattr(self, name))
        if self.scale >= 1.0 or self.colour >= 1.0 or self.shift >= 0.5:
            raise ValueError(
                f"view ranges too wide: need scale < 1, colour < 1, shift < 0.5, got {self}"
            )

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def moves(self):
        """Whether some view shifts, zooms or rotates (else each is the image or its mirror)."""
        return self.count > 2 and (self.shift > 0 or self.scale > 0 or self.rotation > 0)

    @property
    def recolours(self):
        """Whether some view changes brightness, contrast or saturation."""
        return self.count > 2 and self.colour > 0

    def params(self, keys):
        """`(K, N, len(PARAMS))` float32: every view's parameters for N images.

        `keys` are the images' identities (`teacher_cache.image_keys`, or any
        distinct integers): image i's views depend only on (seed, keys[i]), so a
        subset or a reordering of the data keeps each image's views.
        """
        keys = np.asarray(keys, np.uint64)
        n = len(keys)
        out = np.tile(np.asarray(IDENTITY, np.float32), (self.count, n, 1))
        if self.count >= 2 and self.flip:
            out[1, :, 0] = 1.0
        k = self.count - 2
        if k > 0:
            # One uniform draw per (view, parameter, image) from (seed, key, view).
            u = np.empty((k, 8, n), np.float64)
            for i, key in enumerate(keys):
                rng = np.random.default_rng([self.seed, int(key) & 0xFFFFFFFF, int(key) >> 32])
                u[:, :, i] = rng.random((k, 8))
            sym = (2.0 * u - 1.0).astype(np.float32)  # uniform in [-1, 1)
            out[2:, :, 0] = (u[:, 0] < 0.5) if self.flip else 0.0
            out[2:, :, 1] = self.shift * sym[:, 1]
            out[2:, :, 2] = self.shift * sym[:, 2]
            out[2:, :, 3] = 1.0 + self.scale * sym[:, 3]
            out[2:, :, 4] = self.rotation * sym[:, 4]
            out[2:, :, 5] = self.colour * sym[:, 5]
            out[2:, :, 6] = 1.0 + self.colour * sym[:, 6]
            out[2:, :, 7] = 1.0 + self.colour * sym[:, 7]
        return out


def apply_view(images, params, moves=None, recolours=None):
    """Images under their views' parameters: `(B, H, W, C)` float in [0, 1] and `(B, P)`.

    Geometry (flip, shift, zoom, rotation about the centre) is one bilinear
    projective warp per image with reflected borders; colour changes are clipped
    to [0, 1]. A single image `(H, W, C)` with params `(P,)` works too.

    A batch whose views only flip (no shift, zoom or rotation) is mirrored by
    `tf.reverse` (the warp's values exactly: it samples whole pixels), and one
    with no colour change skips the colour ops: the plain and mirrored views of
    `ViewSpec(count=2)` cost a copy, not a warp. `moves` / `recolours` (a
    `ViewSpec`'s properties) say so ahead, saving the check per call; None checks
    the params.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    single = images.shape.rank == 3
    if single:
        images, params = images[None], tf.reshape(params, (1, -1))
    p = tf.cast(params, tf.float32)
    if moves is None:
        moves = tf.reduce_any(tf.not_equal(p[:, 1:5], tf.constant(IDENTITY[1:5])))
    x = _either(moves, lambda: _warp(images, p), lambda: _mirror(images, p[:, 0]))
    if recolours is None:
        recolours = tf.reduce_any(tf.not_equal(p[:, 5:8], tf.constant(IDENTITY[5:8])))
    x = _either(recolours, lambda: _recolour(x, p, images.shape[-1]), lambda: x)
    return x[0] if single else x


def _either(flag, true_fn, false_fn):
    """`tf.cond` on a tensor flag, a plain branch on a Python bool."""
    if isinstance(flag, bool):
        return true_fn() if flag else false_fn()
    return tf.cond(flag, true_fn, false_fn)


def _mirror(images, flip):
    """The images mirrored where `flip` is 1."""
    if images.shape[0] == 1:  # one image (a tf.data map): mirror it or not, no select
        return tf.cond(flip[0] > 0.5, lambda: tf.reverse(images, [2]), lambda: images)
    return tf.where(flip[:, None, None, None] > 0.5, tf.reverse(images, [2]), images)


def _warp(images, p):
    """One bilinear projective warp per image: flip, shift, zoom and rotation."""
    h, w = images.shape[1], images.shape[2]
    flip, sx, sy, scale = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    angle = p[:, 4] * (math.pi / 180.0)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # Output pixel (x, y) samples the input at centre + R(-angle) (out - centre - shift) / scale,
    # then x_in -> (w - 1) - x_in when the view is mirrored.
    a0, a1 = tf.cos(angle) / scale, tf.sin(angle) / scale
    b0, b1 = -a1, a0
    tx, ty = sx * w, sy * h
    a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
    b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
    sign = 1.0 - 2.0 * flip
    a0, a1, a2 = sign * a0, sign * a1, sign * a2 + flip * (w - 1)
    zero = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([h, w], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _recolour(x, p, channels):
    """Brightness (added), contrast (around the image mean), saturation; clipped to [0, 1]."""
    brightness, contrast, saturation = (p[:, i, None, None, None] for i in (5, 6, 7))
    x = x + brightness
    mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean
    if channels == 3:
        grey = tf.reduce_mean(x, axis=-1, keepdims=True)
        x = grey + (x - grey) * saturation
    return tf.clip_by_value(x, 0.0, 1.0)
