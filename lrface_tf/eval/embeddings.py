"""Embedding extraction for any image -> embedding model (Keras, or TFLite via LiteRT)."""

from __future__ import annotations

import numpy as np


def unit_rows(x):
    """Rows of `x` scaled to unit L2 norm, in float64 (all-zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
            if output not in y:
                raise ValueError(
                    f"the model has no {output!r} output (it has {', '.join(sorted(y))}): "
                    "pass the output to read, or a model with an embedding output"
                )
            y = y[output]
        outs.append(np.asarray(y, np.float32))
        bar.add(1)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def knn_accuracy(embeddings, labels, k=5):
    """Leave-one-out k-nearest-neighbour accuracy under cosine similarity (majority vote,
    ties to the nearest): how well the classes separate in the embedding space itself."""
    e = unit_rows(embeddings)
    labels = np.asarray(labels)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = labels[nearest]
    hits = 0
    for row, y in zip(votes, labels):
        values, counts = np.unique(row, return_counts=True)
        best = values[counts == counts.max()]
        pick = next(v for v in row if v in best)  # ties: the nearest of the tied classes
        hits += pick == y
    return hits / len(labels)


def embedding_map(embeddings, seed=0, perplexity=30.0):
    """A 2-D t-SNE map of L2-normalised embeddings (the pictures of CRRCD's Fig. 4).

    Needs scikit-learn (`pip install scikit-learn`). Returns float `(N, 2)`.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise ImportError("the t-SNE map needs scikit-learn: pip install scikit-learn") from e
    e = unit_rows(embeddings)
    perplexity = min(perplexity, (len(e) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine")
    return tsne.fit_transform(e).astype(np.float32)
