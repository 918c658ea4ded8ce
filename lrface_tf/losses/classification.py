"""Task losses on the student's logits: cross-entropy and the ArcFace/CosFace margins.

Labels of -1 mark unlabelled examples; they contribute 0 (the few-labels
transfer trains on them through the distillation terms only). The margin
losses take the scaled cosine logits of `lrface_tf.layers.CosineHead`
(s * cos(theta)), so the model itself stays a plain functional network and the
exported student needs no labels.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def _labels_and_mask(y_true, num_classes):
    y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    mask = ops.cast(y >= 0, "float32")
    y = ops.clip(y, 0, num_classes - 1)
    return y, mask


@keras.saving.register_keras_serializable(package="lrface_tf")
class MaskedCrossEntropy(keras.losses.Loss):
    """Sparse softmax cross-entropy from logits; label -1 gives 0 (unlabelled).

    Call arguments:
      y_true: int labels `(B,)`, -1 for unlabelled.
      y_pred: logits `(B, C)`.

    Returns:
      `(B,)` per-example values.
    """

    def __init__(self, label_smoothing=0.0, name="cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")  # float32 whatever the policy (mixed precision)
        c = logits.shape[-1]
        y, mask = _labels_and_mask(y_true, c)
        onehot = ops.one_hot(y, c)
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / c
        ce = -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)
        return ce * mask

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="lrface_tf")
class MarginCrossEntropy(keras.losses.Loss):
    """ArcFace (additive angular) or CosFace (additive cosine) margin softmax.

    Deng et al. 2019 (ArcFace): logit of the true class s * cos(theta + m);
    Wang et al. 2018 (CosFace): s * (cos(theta) - m). Other classes keep
    s * cos(theta). Input logits are s * cos(theta) from `CosineHead`.

    Args:
      scale: s, the same scale the head uses.
      margin: m (radians for ArcFace).
      kind: "arcface" or "cosface".

    Returns:
      `(B,)` per-example values; label -1 gives 0.
    """

    def __init__(self, scale=32.0, margin=0.5, kind="arcface", name="margin_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("arcface", "cosface"):
            raise ValueError(f"kind must be 'arcface' or 'cosface', got {kind!r}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.kind = kind

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")  # float32 whatever the policy (mixed precision)
        c = logits.shape[-1]
        y, mask = _labels_and_mask(y_true, c)
        onehot = ops.one_hot(y, c)
        cos = ops.clip(logits / self.scale, -1.0 + 1e-6, 1.0 - 1e-6)
        if self.kind == "arcface":
            sin = ops.sqrt(1.0 - cos * cos)
            target = cos * math.cos(self.margin) - sin * math.sin(self.margin)
            # Easy-margin fallback past theta = pi - m keeps the logit monotonic.
            thresh = math.cos(math.pi - self.margin)
            target = ops.where(
                cos > thresh, target, cos - math.sin(math.pi - self.margin) * self.margin
            )
        else:
            target = cos - self.margin
        adjusted = self.scale * (onehot * target + (1.0 - onehot) * cos)
        ce = -ops.sum(onehot * ops.log_softmax(adjusted, axis=-1), axis=-1)
        return ce * mask

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "margin": self.margin,
            "kind": self.kind,
        }
