"""Identification: rank-k accuracy and the CMC curve of LR probes against an HR gallery."""

from __future__ import annotations

import numpy as np


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cmc_curve(gallery, gallery_ids, probes, probe_ids, max_rank=None):
    """Cumulative match characteristic: fraction of probes whose identity is within rank r.

    Each identity scores its best gallery image (max cosine over its images),
    so galleries with several images per identity are handled.

    Returns:
      `(R,)` array, element r-1 = rank-r accuracy; R = number of identities.
    """
    g, p = _normalize(gallery), _normalize(probes)
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
