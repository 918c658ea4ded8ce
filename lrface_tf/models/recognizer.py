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
    emb = as_float32(backbone(image))
    logits = build_head(head, num_classes, scale)(emb)
    return keras.Model(image, {"embedding": emb, "logits": logits}, name=name)


def as_float32(embedding):
    """The embedding as float32: itself, or behind a float32 linear Activation when the
    backbone's last layer computes in half precision (mixed precision: a model's outputs,
    and every loss on them, stay float32)."""
    if embedding.dtype == "float32":
        return embedding
    return keras.layers.Activation("linear", dtype="float32", name="embedding_float32")(embedding)


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


def copy_weights_by_name(source, target, optional=("logits",)):
    """Copy weights layer by layer, matching layer names (recursing into nested models).

    Used to start a low-resolution student from a high-resolution assistant of
    the same architecture (HORKD stage 2): the weights are size-agnostic, but
    the layer order of a functional graph can differ with the input size
    (stride-2 padding layers appear only where a stage downsamples).

    Layers named in `optional` (the classification head) are copied when the
    source has them with the same shapes, and skipped otherwise.

    Returns:
      number of layers copied; raises if any other weighted layer of `target`
      has no counterpart in `source`, or a counterpart of another shape.
    """
    src = {layer.name: layer for layer in _weighted_layers(source)}
    copied = 0
    for layer in _weighted_layers(target):
        theirs = src.get(layer.name)
        same = theirs is not None and [w.shape for w in theirs.weights] == [
            w.shape for w in layer.weights
        ]
        if not same:
            if layer.name in optional:
                continue
            why = "no layer" if theirs is None else "a layer of another shape"
            raise ValueError(
                f"{source.name} has {why} {layer.name!r} to copy into {target.name}; "
                "initialise from a model of the same architecture"
            )
        layer.set_weights(theirs.get_weights())
        copied += 1
    return copied


def _weighted_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def synchronize_batchnorm(model):
    """A copy of `model` whose BatchNormalization layers use cross-replica statistics.

    Under `MirroredStrategy` Keras' BatchNormalization normalises each replica's
    slice of the batch on its own, so two replicas train a (slightly) different
    model than one device. `synchronized=True` (TensorFlow backend) computes the
    mean and variance over the global batch instead. Weights are copied; nested
    models (a recognizer's backbone) are converted too. Build it inside the
    strategy's scope, like the model itself.
    """

    def clone(layer):
        if isinstance(layer, keras.Model):
            return synchronize_batchnorm(layer)
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def float32_copy(model):
    """`model` itself when every layer computes in float32; else a float32 copy, same weights.

    A model built under a mixed-precision policy keeps half-precision layers when
    saved and exported; TFLite has no bfloat16 kernels (conversion fails) and a
    CPU runs half precision slowly. Exports and saved model files therefore hold
    this copy: float32 from input to outputs, the trained weights unchanged
    (weights are float32 under mixed precision, so nothing is rounded).
    """
    if all(layer.dtype_policy.name == "float32" for layer in _all_layers(model)):
        return model

    def clone(layer):
        if isinstance(layer, keras.Model):
            return float32_copy(layer)
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
