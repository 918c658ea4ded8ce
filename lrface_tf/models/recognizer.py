"""Recognizer: a backbone plus a classification head, with both outputs named."""

from __future__ import annotations

import keras

from lrface_tf.backbones import build_backbone
from lrface_tf.layers.heads import build_head
from lrface_tf.losses.classification import MarginCrossEntropy, MaskedCrossEntropy


def build_recognizer(
    backbone,
    input_size,
    num_classes,
    *,
    channels=3,
    head="softmax",
    scale=32.0,
    name="recognizer",
    **backbone_kwargs,
):
    """Functional model: image `(B, H, W, C)` in [0, 1] -> {"embedding", "logits"}.

    Args:
      backbone: a name from `lrface_tf.backbones.BACKBONES` or a built backbone model.
      input_size: H = W.
      num_classes: C of the head (the training identities / classes).
      head: "softmax", "arcface" or "cosface".
      scale: cosine-head scale s.

    Returns:
      `keras.Model` with outputs `{"embedding": (B, D), "logits": (B, C)}`.
    """
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, (input_size, input_size, channels), **backbone_kwargs)
    image = keras.Input((input_size, input_size, channels), name="image")
    emb = backbone(image)
    logits = build_head(head, num_classes, scale)(emb)
    return keras.Model(image, {"embedding": emb, "logits": logits}, name=name)


def task_loss_for(head, scale=32.0, margin=0.5, label_smoothing=0.0):
    """The task loss that matches a head: CE for softmax, margin CE for arcface/cosface."""
    if head == "softmax":
        return MaskedCrossEntropy(label_smoothing=label_smoothing)
    if head in ("arcface", "cosface"):
        return MarginCrossEntropy(scale=scale, margin=margin, kind=head)
    raise ValueError(f"unknown head {head!r}: use softmax, arcface or cosface")


def logits_model(recognizer):
    """Image -> logits view of a recognizer (shares weights)."""
    return keras.Model(
        recognizer.input, recognizer.output["logits"], name=f"{recognizer.name}_logits"
    )


def embedding_model(recognizer):
    """Image -> embedding view of a recognizer (shares weights)."""
    return keras.Model(
        recognizer.input, recognizer.output["embedding"], name=f"{recognizer.name}_embedding"
    )
