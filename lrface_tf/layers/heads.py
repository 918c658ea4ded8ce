"""Classification heads on embeddings: linear softmax and the cosine (margin) head."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="lrface_tf")
class CosineHead(layers.Layer):
    """Scaled cosine logits s * cos(theta_c) between an embedding and class weights.

    The head of ArcFace / CosFace: the margin itself is applied by
    `lrface_tf.losses.MarginCrossEntropy` at training time, so inference needs
    no labels and the head exports like any layer.

    Computes in float32 unless given another `dtype`, whatever the global
    policy: under mixed precision the logits (and the margin loss on them) stay
    float32, as Keras' mixed-precision guide asks of a model's last layer.

    Args:
      num_classes: C.
      scale: s.

    Call arguments:
      embeddings: `(B, D)`.

    Returns:
      `(B, C)` logits in [-s, s].
    """

    def __init__(self, num_classes, scale=32.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.scale = float(scale)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.num_classes),
            initializer="glorot_uniform",
        )

    def call(self, embeddings):
        e = embeddings * ops.rsqrt(ops.sum(ops.square(embeddings), -1, keepdims=True) + 1e-12)
        w = self.kernel * ops.rsqrt(ops.sum(ops.square(self.kernel), 0, keepdims=True) + 1e-12)
        return self.scale * ops.matmul(e, w)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "scale": self.scale}


def build_head(kind, num_classes, scale=32.0, name="logits"):
    """ "softmax" -> Dense; "arcface"/"cosface" -> CosineHead (margin in the loss).

    Both compute in float32 whatever the global dtype policy (float32 logits
    under mixed precision).
    """
    if kind == "softmax":
        return layers.Dense(num_classes, name=name, dtype="float32")
    if kind in ("arcface", "cosface"):
        return CosineHead(num_classes, scale=scale, name=name)
    raise ValueError(f"unknown head {kind!r}: use softmax, arcface or cosface")
