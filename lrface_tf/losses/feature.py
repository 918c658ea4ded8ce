"""1-order (point-wise) feature distillation."""

from __future__ import annotations

import keras
from keras import ops

from lrface_tf.losses._ops import l2_normalize


@keras.saving.register_keras_serializable(package="lrface_tf")
class FeatureLoss(keras.losses.Loss):
    """Point-wise distance between teacher and student embeddings.

    HORKD Eq. 2 (1-order, L1) and KD_im Eq. 6 (L2 on normalised features).
    Per example: sum_d |t - s| ("l1") or sum_d (t - s)^2 ("l2"); with
    `normalize=True` both embeddings are L2-normalised first (then "l2" equals
    2 - 2 cos). Embedding sizes must match: the Distiller inserts a learned
    projection on the student side when they differ.

    Call arguments:
      y_true: teacher embeddings `(B, D)` (gradient stopped).
      y_pred: student embeddings `(B, D)`.

    Returns:
      `(B,)` per-example values.
    """

    needs_same_dim = True

    def __init__(self, norm="l1", normalize=False, name="feature", **kwargs):
        super().__init__(name=name, **kwargs)
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        self.norm = norm
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred):
        t = ops.stop_gradient(ops.convert_to_tensor(y_true))
        s = ops.convert_to_tensor(y_pred)
        if self.normalize:
            t, s = l2_normalize(t), l2_normalize(s)
        d = t - s
        return ops.sum(ops.abs(d) if self.norm == "l1" else ops.square(d), axis=-1)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm, "normalize": self.normalize}
