"""C-order (class-centre) relational distillation, HORKD Eqs. 6-7."""

from __future__ import annotations

import keras
from keras import ops

from lrface_tf.layers.class_centers import ClassCenters
from lrface_tf.losses._ops import EPS
from lrface_tf.losses.base import DistillationLoss
from lrface_tf.validation import check_int


def _center_distances(x, centers):
    """`(B, C)` Euclidean distances with a finite gradient at 0 (Gram form, shared origin)."""
    sq = (
        ops.sum(ops.square(x), -1)[:, None]
        + ops.sum(ops.square(centers), -1)[None, :]
        - 2.0 * ops.matmul(x, ops.transpose(centers))
    )
    sq = ops.maximum(sq, 0.0)
    return sq * ops.rsqrt(sq + EPS)


def center_distance_loss(teacher, student, centers, valid):
    """`(B,)`: mean over valid classes c of (||t - u_c|| - ||s - u_c||)^2 (Eq. 7 per example)."""
    # A common origin (mean valid centre) keeps the Gram form accurate.
    origin = ops.sum(centers * valid[:, None], 0) / ops.maximum(ops.sum(valid), 1.0)
    t, s, centers = teacher - origin, student - origin, centers - origin
    diff = _center_distances(t, centers) - _center_distances(s, centers)
    per = ops.sum(ops.square(diff) * valid[None, :], -1)
    return per / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="lrface_tf")
class ClassCenterLoss(DistillationLoss):
    """Squared difference of sample-to-class-centre distances (HORKD Eq. 7).

    psi_e(f, u_c) = ||f - u_c||_2 for every class centre u_c of the teacher's
    embeddings (Eq. 6). The term owns the centres (`self.centers`, a
    `ClassCenters` layer: the cumulative mean of every labelled teacher
    embedding seen in training, i.e. Eq. 6 after one epoch; saved with
    checkpoints). Per example: the mean over the classes seen so far of
    (psi_e(t_i, u_c) - psi_e(s_i, u_c))^2. (Eq. 7 sums over c; the mean keeps the
    scale independent of C, so the weight gamma transfers between data sets.)
    The student embedding is projected to the teacher's size when they differ.

    Args:
      num_classes: C, the training classes (labels 0..C-1; -1 is ignored).
      momentum: None (cumulative mean) or an EMA momentum for the centres.

    Call arguments:
      teacher `(B, Dt)`, student `(B, Ds)`, labels `(B,)` (required), training
      (True: the batch updates the centres first).

    Returns:
      `(B,)` per-example values.
    """

    needs_projection = True
    needs_labels = True

    def __init__(self, num_classes, momentum=None, name="class_center", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = check_int("ClassCenterLoss num_classes", num_classes, 1)
        self.momentum = momentum
        self.centers = ClassCenters(self.num_classes, momentum, dtype="float32", name="centers")

    def build(self, teacher_shape, student_shape=None):
        self.centers.build(teacher_shape)
        super().build(teacher_shape, student_shape)

    def compute(self, teacher, student, labels, training):
        if training:
            centers, valid = self.centers(teacher, labels)
        else:
            centers = ops.convert_to_tensor(self.centers.centers)
            valid = ops.cast(ops.convert_to_tensor(self.centers.counts) > 0, "float32")
        return center_distance_loss(
            teacher, student, ops.stop_gradient(centers), ops.stop_gradient(valid)
        )

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "momentum": self.momentum}
