"""Shared helpers for the tests: tiny models and small real data."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


def tiny_model(input_size, channels=1, embedding_dim=8, num_classes=4, hidden=16, name="m", seed=0):
    """A BN-free functional model image -> {"embedding", "logits"} (exact under replicas)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    image = keras.Input((input_size, input_size, channels), name="image")
    x = layers.Flatten()(image)
    x = layers.Dense(hidden, activation="tanh", kernel_initializer=init)(x)
    emb = layers.Dense(embedding_dim, kernel_initializer=init, name="embedding")(x)
    logits = layers.Dense(num_classes, kernel_initializer=init, name="logits")(emb)
    return keras.Model(image, {"embedding": emb, "logits": logits}, name=name)


def digits(n=None):
    """scikit-learn's 8x8 digits as uint8 (N, 8, 8, 1) in [0, 255] and int32 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = d.target.astype(np.int32)
    return (x[:n], y[:n]) if n else (x, y)


def bias_free_model(input_size, channels=1, embedding_dim=8, num_classes=4, name="m", seed=0):
    """Like `tiny_model` without biases: a zero image gives a zero embedding, and every
    layer computes under the global dtype policy (degenerate inputs for the numerics tests)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    kw = {"use_bias": False, "kernel_initializer": init}
    image = keras.Input((input_size, input_size, channels), name="image")
    x = layers.Dense(16, activation="tanh", **kw)(layers.Flatten()(image))
    emb = layers.Dense(embedding_dim, name="embedding", **kw)(x)
    logits = layers.Dense(num_classes, name="logits", **kw)(emb)
    return keras.Model(image, {"embedding": emb, "logits": logits}, name=name)


def degenerate_batch(batch=8, size=8, num_classes=4, seed=0):
    """`({"hr", "lr"}, labels)` with a duplicated row (zero distance) and a zero image
    (a zero embedding under `bias_free_model`); LR is the 2x area downsample."""
    rng = np.random.RandomState(seed)
    hr = rng.rand(batch, size, size, 1).astype(np.float32)
    hr[1] = hr[0]
    hr[3] = 0.0
    lr = hr.reshape(batch, size // 2, 2, size // 2, 2, 1).mean(axis=(2, 4))
    labels = (np.arange(batch) % num_classes).astype(np.int32)
    labels[1] = labels[0]
    return {"hr": hr, "lr": lr}, labels


# Small state for the stateful terms (CRRCD's queue and projection; a chunked angle).
TINY_HYPERPARAMETERS = {"crrcd_queue": 8, "crrcd_dim": 8, "angle_chunk_size": 4}


def tiny_distiller(method, num_classes=4, seed=0):
    """A Distiller with `method`'s registry terms on `bias_free_model`s: an 8x8 teacher
    (embedding 6) and a 4x4 student (embedding 5, so terms that need it project).
    The same seed builds the same weights, terms' included."""
    from lrface_tf.losses import MaskedCrossEntropy
    from lrface_tf.methods import method_terms, needs_teacher, resolve
    from lrface_tf.models import Distiller

    keras.utils.set_random_seed(seed)
    hyper = resolve(method, TINY_HYPERPARAMETERS)
    teacher, terms = None, {}
    if needs_teacher(method):
        teacher = bias_free_model(8, embedding_dim=6, num_classes=num_classes, seed=1, name="t")
        terms = method_terms(method, hyper, num_classes=num_classes, data_size=100)
    student = bias_free_model(4, embedding_dim=5, num_classes=num_classes, seed=2, name="s")
    return Distiller(
        student, teacher, terms, task_loss=MaskedCrossEntropy(), task_weight=hyper["task_weight"]
    )
