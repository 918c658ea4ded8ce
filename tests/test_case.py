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
