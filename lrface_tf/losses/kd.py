"""Hinton knowledge distillation on softened logits."""

from __future__ import annotations

import keras
from keras import ops

from lrface_tf.losses.base import DistillationLoss
from lrface_tf.validation import check_positive


@keras.saving.register_keras_serializable(package="lrface_tf")
class KDLoss(DistillationLoss):
    """KL(teacher || student) on temperature-softened logits, times T^2.

    Hinton et al. 2015; the soft term of KD_im (Eq. 9) and CRRCD (Eq. 12).
    Per example: T^2 * sum_c p_t(c) (log p_t(c) - log p_s(c)) with
    p = softmax(logits / T). The T^2 factor keeps gradient magnitudes
    comparable across temperatures.

    Args:
      temperature: T > 0.

    Call arguments:
      teacher: teacher logits `(B, C)` (gradient stopped).
      student: student logits `(B, C)`.

    Returns:
      `(B,)` per-example values.

    Example:
      >>> KDLoss(4.0)(teacher_logits, student_logits)   # (B,)
    """

    def __init__(self, temperature=4.0, name="kd", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = check_positive("KDLoss temperature", temperature)

    def compute(self, teacher, student, labels, training):
        log_pt = ops.log_softmax(teacher / self.temperature, axis=-1)
        log_ps = ops.log_softmax(student / self.temperature, axis=-1)
        kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
        return kl * (self.temperature**2)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
