"""Embedding extraction for any image -> embedding model (Keras, or TFLite via LiteRT)."""

from __future__ import annotations

import numpy as np


def extract_embeddings(model, images, batch_size=64, output="embedding", progress=True):
    """Embeddings of `images` in batches, with a Keras progress bar.

    Args:
      model: a Keras model (dict outputs or a single tensor) or any callable on a
        float batch, such as `lrface_tf.export.TFLiteModel`.
      images: float array `(N, H, W, C)` or a `tf.data.Dataset` of image batches
        (or `(images, labels)` batches).
      output: key to read when the model returns a dict.

    Returns:
      float32 `(N, D)`.
    """
    import keras

    if isinstance(images, np.ndarray):
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        total = -(-len(images) // batch_size)
    else:
        batches, total = iter(images), None
    bar = keras.utils.Progbar(total, verbose=1 if progress else 0, unit_name="batch")
    outs = []
    for batch in batches:
        if isinstance(batch, tuple):
            batch = batch[0]
        if isinstance(model, keras.Model):
            # The compiled predict function: eager calls of a 112x112 network kept
            # gigabytes of activations cached (an LFW sweep was OOM-killed at 19 GB).
            y = model.predict_on_batch(batch)
        else:
            y = model(np.asarray(batch))
        if isinstance(y, dict):
            y = y[output]
        outs.append(np.asarray(y, np.float32))
        bar.add(1)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
