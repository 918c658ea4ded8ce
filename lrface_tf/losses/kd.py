"""Hinton knowledge distillation on softened logits."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lrface_tf")
class KDLoss(keras.losses.Loss):
    """KL(teacher || student) on temperature-softened logits, times T^2.

    Hinton et al. 2015; the soft term of KD_im (Eq. 9) and CRRCD (Eq. 12).
    Per example: T^2 * sum_c p_t(c) (log p_t(c) - log p_s(c)) with
    p = softmax(logits / T). The T^2 factor keeps gradient magnitudes
    comparable across temperatures.

    Args:
      temperature: T > 0.

    Call arguments:
      y_true: teacher logits `(B, C)` (gradient stopped).
      y_pred: student logits `(B, C)`.

    Returns:
      `(B,)` per-example values (Keras reduces them).

    Example:
      >>> KDLoss(4.0)(teacher_logits, student_logits)
    """

    def __init__(self, temperature=4.0, name="kd", **kwargs):
        super().__init__(name=name, **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        t = ops.stop_gradient(ops.convert_to_tensor(y_true)) / self.temperature
        s = ops.convert_to_tensor(y_pred) / self.temperature
        log_pt = ops.log_softmax(t, axis=-1)
        log_ps = ops.log_softmax(s, axis=-1)
        kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
        return kl * (self.temperature**2)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
