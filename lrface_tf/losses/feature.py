"""1-order (point-wise) feature distillation."""

from __future__ import annotations

import keras
from keras import ops

from lrface_tf.losses._ops import l2_normalize
from lrface_tf.losses.base import DistillationLoss

NORMS = ("l1", "l2")


@keras.saving.register_keras_serializable(package="lrface_tf")
class FeatureLoss(DistillationLoss):
    """Point-wise distance between teacher and student embeddings.

    HORKD Eq. 2 (1-order, L1 on the raw embeddings) and KD_im Eq. 6 (L2 on
    L2-normalised embeddings, which equals 2 - 2 cos). Per example:
    sum_d |t - s| ("l1") or sum_d (t - s)^2 ("l2"). When the sizes differ, a
    learned projection maps the student embedding to the teacher's size.

    Args:
      norm: "l1" or "l2".
      normalize: L2-normalise both embeddings first.

    Call arguments:
      teacher: `(B, Dt)` embeddings (gradient stopped); student: `(B, Ds)`.

    Returns:
      `(B,)` per-example values.
    """

    needs_projection = True

    def __init__(self, norm="l1", normalize=False, name=None, **kwargs):
        super().__init__(name=name or f"feature_{norm}", **kwargs)
        if norm not in NORMS:
            raise ValueError(f"FeatureLoss norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        self.normalize = bool(normalize)

    def compute(self, teacher, student, labels, training):
        if self.normalize:
            teacher, student = l2_normalize(teacher), l2_normalize(student)
        d = teacher - student
        return ops.sum(ops.abs(d) if self.norm == "l1" else ops.square(d), axis=-1)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm, "normalize": self.normalize}
