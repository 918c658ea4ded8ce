"""2-order and 3-order relational knowledge distillation (RKD distance and angle).

Park et al. 2019 (RKD); used as the 2-/3-order terms of HORKD (Ge et al. 2020,
Eqs. 3-5). Both see the global batch under `tf.distribute` (embeddings are
all-gathered) and return per-anchor values over that global batch.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lrface_tf.losses._ops import EPS, huber, l2_normalize, safe_distances
from lrface_tf.losses.base import DistillationLoss
from lrface_tf.losses.distribute import gather_replicas
from lrface_tf.validation import check_int, check_positive


def _normalized_distances(x):
    d = safe_distances(x)
    b = ops.cast(ops.shape(x)[0], x.dtype)
    mu = ops.sum(d) / ops.maximum(b * (b - 1.0), 1.0)
    return d / ops.maximum(mu, EPS)


@keras.saving.register_keras_serializable(package="lrface_tf")
class RKDDistanceLoss(DistillationLoss):
    """RKD distance (2-order): Huber between mean-normalised pairwise distances.

    psi(x_i, x_j) = ||x_i - x_j||_2 / mu, mu = mean off-diagonal distance of the
    batch (each side its own mu); loss = Huber_1(psi_t - psi_s) averaged over
    all B x B entries (HORKD Eq. 3). Scale invariant; exactly 0 at batch 2.

    Call arguments:
      teacher: teacher embeddings `(B, Dt)` (gradient stopped).
      student: student embeddings `(B, Ds)`; Ds may differ from Dt.

    Returns:
      `(B_global,)`: row means of the Huber matrix over the gathered batch.
    """

    def __init__(self, delta=1.0, name="rkd_distance", **kwargs):
        super().__init__(name=name, **kwargs)
        self.delta = check_positive("RKDDistanceLoss delta", delta)

    def compute(self, teacher, student, labels, training):
        t, s = gather_replicas(teacher), gather_replicas(student)
        diff = _normalized_distances(ops.stop_gradient(t)) - _normalized_distances(s)
        return ops.mean(huber(diff, self.delta), axis=-1)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


def _angles(x, anchors):
    """cos of the angle at each anchor j: `(A, B, B)`, entries <e_ji, e_jk>."""
    d = x[None, :, :] - ops.take(x, anchors, axis=0)[:, None, :]
    e = l2_normalize(d)
    return ops.matmul(e, ops.transpose(e, (0, 2, 1)))


@keras.saving.register_keras_serializable(package="lrface_tf")
class RKDAngleLoss(DistillationLoss):
    """RKD angle (3-order): Huber between triplet angle cosines.

    For every triplet (i, j, k): cos of the angle at j between f_i - f_j and
    f_k - f_j on unit-normalised difference vectors (HORKD Eqs. 4-5);
    loss = Huber_1(cos_t - cos_s) averaged over all B^3 entries. Cost is cubic
    in B:

    - `chunk_size=None`: one `(B, B, B)` tensor (fast for small batches).
    - `chunk_size=c`: anchors in chunks of c, each chunk under
      `tf.recompute_grad`, so the forward AND backward peak is O(c B^2 + c B D)
      instead of O(B^3); exact (same value and gradient). Needs a static batch.
    - `num_anchors=a`: sampled-triplet mode: a random anchors per step
      (unbiased estimate of the same mean; not exact).

    Differences of a row with itself are 0 vectors; their normalised value is 0
    with a finite gradient (x * rsqrt(|x|^2 + eps)), and they contribute 0 on
    both sides. Scale invariant.

    Call arguments:
      teacher: teacher embeddings `(B, Dt)`; student: student `(B, Ds)`.

    Returns:
      `(A,)` per-anchor means over the (i, k) plane (A = B_global or num_anchors).
    """

    def __init__(
        self, delta=1.0, chunk_size=None, num_anchors=None, seed=None, name="rkd_angle", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.delta = check_positive("RKDAngleLoss delta", delta)
        self.chunk_size = check_int("RKDAngleLoss chunk_size", chunk_size, 1, allow_none=True)
        self.num_anchors = check_int("RKDAngleLoss num_anchors", num_anchors, 1, allow_none=True)
        self.seed = seed

    def _per_anchor(self, t, s, anchors):
        diff = _angles(t, anchors) - _angles(s, anchors)
        return ops.mean(huber(diff, self.delta), axis=(1, 2))

    def compute(self, teacher, student, labels, training):
        t = ops.stop_gradient(gather_replicas(teacher))
        s = gather_replicas(student)
        b = ops.shape(s)[0]
        if self.num_anchors:
            # Drawn from the gathered teacher batch itself (with `seed`), so every replica
            # draws the same anchors and N replicas equal one device.
            key = tf.cast(tf.bitcast(tf.reduce_sum(t), tf.int32), tf.int64)
            seed = tf.stack([tf.constant(self.seed or 0, tf.int64), key])
            order = tf.random.experimental.stateless_shuffle(tf.range(b), seed=seed)
            return self._per_anchor(t, s, order[: self.num_anchors])
        if not self.chunk_size:
            return self._per_anchor(t, s, ops.arange(b))
        b_static = s.shape[0]
        if b_static is None:
            raise ValueError(
                "RKDAngleLoss(chunk_size=...) needs a static batch size; batch with "
                "drop_remainder=True or use chunk_size=None"
            )
        outs = []
        for start in range(0, b_static, self.chunk_size):
            idx = tf.range(start, min(start + self.chunk_size, b_static))
            fn = tf.recompute_grad(lambda s_, idx=idx: self._per_anchor(t, s_, idx))
            outs.append(fn(s))
        return ops.concatenate(outs, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "delta": self.delta,
            "chunk_size": self.chunk_size,
            "num_anchors": self.num_anchors,
            "seed": self.seed,
        }
