"""Top-k classification accuracy of a recognizer (objects, or identities)."""

from __future__ import annotations

import numpy as np


def predict_logits(model, dataset, output="logits", verbose=0):
    """Run `model` over a `(x, y)` dataset; returns (outputs, labels) as numpy."""
    outs, labels = [], []
    for x, y in dataset:
        pred = model(x, training=False)
        if isinstance(pred, dict):
            pred = pred[output]
        outs.append(np.asarray(pred))
        labels.append(np.asarray(y))
    return np.concatenate(outs), np.concatenate(labels)


def top_k_accuracy(logits, labels, k=1):
    """Fraction of rows whose true label is among the k largest logits (ties: lower index)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no examples to score")
    k = min(k, logits.shape[-1])
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(order == labels[:, None], axis=-1)))


def classification_accuracy(model, dataset, ks=(1, 5)):
    """{"top1": ..., "top5": ..., "n": N} of a model on a `(x, y)` dataset."""
    logits, labels = predict_logits(model, dataset)
    out = {f"top{k}": top_k_accuracy(logits, labels, k) for k in ks}
    out["n"] = int(len(labels))
    return out
