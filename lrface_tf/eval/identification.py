"""Identification: rank-k accuracy and the CMC curve of LR probes against an HR gallery."""

from __future__ import annotations

import numpy as np

from lrface_tf.eval.embeddings import unit_rows


def cmc_curve(gallery, gallery_ids, probes, probe_ids, max_rank=None):
    """Cumulative match characteristic: fraction of probes whose identity is within rank r.

    Each identity scores its best gallery image (max cosine over its images),
    so galleries with several images per identity are handled.

    Returns:
      `(R,)` array, element r-1 = rank-r accuracy; R = number of identities.
    """
    g, p = unit_rows(gallery), unit_rows(probes)
    gallery_ids, probe_ids = np.asarray(gallery_ids), np.asarray(probe_ids)
    ids = np.unique(gallery_ids)
    missing = set(np.unique(probe_ids)) - set(ids)
    if missing:
        raise ValueError(f"probe identities {sorted(missing)[:5]} have no gallery image")
    sim = p @ g.T
    per_id = np.full((len(p), len(ids)), -np.inf)
    col = np.searchsorted(ids, gallery_ids)
    for j in range(len(ids)):
        per_id[:, j] = sim[:, col == j].max(axis=1)
    true_col = np.searchsorted(ids, probe_ids)
    true_score = per_id[np.arange(len(p)), true_col]
    # rank = 1 + number of identities scoring strictly higher than the true one
    rank = 1 + np.sum(per_id > true_score[:, None], axis=1)
    r = max_rank or len(ids)
    return np.array([np.mean(rank <= k) for k in range(1, r + 1)])


def rank_k(gallery, gallery_ids, probes, probe_ids, ks=(1, 5)):
    """{"rank1": ..., "rank5": ...} identification accuracy."""
    cmc = cmc_curve(gallery, gallery_ids, probes, probe_ids)
    return {f"rank{k}": float(cmc[min(k, len(cmc)) - 1]) for k in ks}


def linear_probe(
    train_embeddings,
    train_ids,
    test_embeddings,
    test_ids,
    *,
    epochs=100,
    learning_rate=0.01,
    weight_decay=1e-4,
    batch_size=256,
    seed=0,
    ks=(1, 5),
    min_steps=500,
):
    """The UCCS-style protocol of the papers: a frozen embedding, a linear softmax.

    The embeddings are L2-normalised; a linear softmax classifier (weights and
    bias, L2 weight decay) is trained with Adam on the training split only, and
    top-k accuracy is measured on the test split. Identities are any integers;
    a test identity absent from the training split stops with an error.

    Returns:
      {"top1": ..., "top5": ..., "train_top1": ...}.
    """
    import keras

    train_ids, test_ids = np.asarray(train_ids), np.asarray(test_ids)
    classes = np.unique(train_ids)
    unknown = set(np.unique(test_ids)) - set(classes)
    if unknown:
        raise ValueError(
            f"test identities {[int(i) for i in sorted(unknown)[:5]]} are not in the training "
            "split; a linear probe can only name identities it was trained on"
        )
    xt = unit_rows(train_embeddings).astype(np.float32)
    xs = unit_rows(test_embeddings).astype(np.float32)
    yt, ys = np.searchsorted(classes, train_ids), np.searchsorted(classes, test_ids)
    keras.utils.set_random_seed(seed)
    probe = keras.Sequential(
        [
            keras.Input((xt.shape[1],)),
            keras.layers.Dense(
                len(classes), kernel_regularizer=keras.regularizers.L2(weight_decay)
            ),
        ]
    )
    probe.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # Small splits get at least `min_steps` updates (100 epochs of 3 batches underfit). The
    # epochs run as one `fit()` epoch over a repeated, reshuffled stream: the same updates
    # without Keras' per-epoch overhead, which dominated on small splits.
    import tensorflow as tf

    batches = -(-len(xt) // batch_size)
    epochs = max(epochs, -(-min_steps // batches))
    stream = (
        tf.data.Dataset.from_tensor_slices((xt, yt))
        .shuffle(len(xt), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .repeat(epochs)
    )
    probe.fit(stream, epochs=1, steps_per_epoch=epochs * batches, verbose=0)

    def top(x, y, k):
        logits = probe.predict(x, batch_size=1024, verbose=0)
        best = np.argsort(-logits, axis=1)[:, :k]
        return float(np.mean(np.any(best == y[:, None], axis=1)))

    out = {f"top{k}": top(xs, ys, k) for k in ks}
    out["train_top1"] = top(xt, yt, 1)
    return out
