"""Logits for an embedding-only teacher: a cosine head fitted in closed form.

A pretrained face recognizer (SFace) gives embeddings, not logits over *our*
training identities, yet KD and the soft terms of KD_im / CRRCD need teacher
logits. `with_class_mean_head` fits the simplest such head on the frozen
teacher: the weight of identity c is the mean of the teacher's L2-normalised
embeddings of c's training images, and the logits are `scale * cos(e, mean_c)`
(a nearest-class-mean classifier). Nothing is trained, so the teacher stays the
teacher; results that use it say so.
"""

from __future__ import annotations

import numpy as np

HEAD_NAME = "class_mean_head"


def class_means(embeddings, labels, num_classes):
    """`(C, D)` unit-length means of the unit-length embeddings of each class.

    A class without examples stops with an error: it would get a zero weight.
    """
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) to fit a class-mean head")
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(
            f"class {int(np.flatnonzero(counts == 0)[0])} has no example; "
            "relabel the classes to 0..C-1 without gaps"
        )
    means = np.zeros((num_classes, e.shape[1]))
    np.add.at(means, labels, e)
    return (means / np.linalg.norm(means, axis=-1, keepdims=True).clip(1e-12)).astype(np.float32)


def with_class_mean_head(teacher, embeddings, labels, num_classes, scale=16.0):
    """The frozen `teacher` with logits `scale * cos(e, mean_c)` added.

    Args:
      teacher: Keras model, image -> `{"embedding"}` (or an embedding tensor).
      embeddings: the teacher's embeddings of the training images `(N, D)`.
      labels: their identities `(N,)` in [0, num_classes).
      scale: s of the cosine logits (KD divides by its temperature as usual).

    Returns:
      a non-trainable `keras.Model`, image -> `{"embedding", "logits"}`.
    """
    import keras

    from lrface_tf.layers.heads import CosineHead

    means = class_means(embeddings, labels, num_classes)
    image = keras.Input(teacher.input_shape[1:], name="image")
    out = teacher(image)
    emb = out["embedding"] if isinstance(out, dict) else out
    head = CosineHead(num_classes, scale=scale, name=HEAD_NAME)
    logits = head(emb)
    head.set_weights([means.T])
    model = keras.Model(image, {"embedding": emb, "logits": logits}, name=f"{teacher.name}_cm")
    model.trainable = False
    return model
