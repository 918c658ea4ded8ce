"""C-order (class-centre) relational distillation, HORKD Eq. 7."""

from __future__ import annotations

import keras
from keras import ops

from lrface_tf.losses._ops import EPS


def _center_distances(x, centers):
    """`(B, C)` Euclidean distances with a finite gradient at 0 (Gram form, shared origin)."""
    sq = (ops.sum(ops.square(x), -1)[:, None] + ops.sum(ops.square(centers), -1)[None, :]
          - 2.0 * ops.matmul(x, ops.transpose(centers)))  # fmt: skip
    sq = ops.maximum(sq, 0.0)
    return sq * ops.rsqrt(sq + EPS)


@keras.saving.register_keras_serializable(package="lrface_tf")
class ClassCenterLoss(keras.losses.Loss):
    """Squared difference of sample-to-class-centre distances (HORKD Eq. 7).

    psi_e(f, u_c) = ||f - u_c||_2 for every class centre u_c (computed in the
    teacher's embedding space; see `lrface_tf.layers.ClassCenters`);
    per example: mean over the valid classes c of (psi_e(t_i, u_c) - psi_e(s_i, u_c))^2.
    (Eq. 7 sums over c; the mean keeps the scale independent of C, so the
    weight gamma transfers between data sets.) The student embedding must be in
    the teacher's space: the Distiller projects it when the sizes differ.

    Call arguments:
      y_true: dict {"embedding": teacher `(B, D)`, "centers": `(C, D)`,
        "valid": `(C,)` 1 for classes with a centre}.
      y_pred: student embeddings `(B, D)`.

    Returns:
      `(B,)` per-example values.
    """

    needs_same_dim = True
    needs_centers = True

    def __init__(self, name="class_center", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        t = ops.stop_gradient(y_true["embedding"])
        centers = ops.stop_gradient(y_true["centers"])
        valid = ops.stop_gradient(y_true["valid"])
        # A common origin (mean valid centre) keeps the Gram form accurate.
        origin = ops.sum(centers * valid[:, None], 0) / ops.maximum(ops.sum(valid), 1.0)
        t, s, centers = t - origin, y_pred - origin, centers - origin
        diff = _center_distances(t, centers) - _center_distances(s, centers)
        per = ops.sum(ops.square(diff) * valid[None, :], -1)
        return per / ops.maximum(ops.sum(valid), 1.0)
