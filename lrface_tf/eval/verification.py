"""Face verification on pairs: K-fold accuracy, ROC, AUC, TAR at FAR, EER.

The protocol is declared, never implicit: embeddings are L2-normalised and
compared by cosine similarity; in the K-fold protocol (LFW's 10 folds of 300 +
300 pairs) the threshold for fold k is chosen on the other K-1 folds only and
applied to fold k, and the report is mean +- std accuracy over the folds. A
threshold tuned on the test pairs themselves is never reported.
"""

from __future__ import annotations

import numpy as np

from lrface_tf.eval.embeddings import unit_rows


def cosine_scores(emb_a, emb_b):
    """Row-wise cosine similarity of two `(N, D)` embedding arrays."""
    return np.sum(unit_rows(emb_a) * unit_rows(emb_b), axis=1)


def best_threshold(scores, same):
    """Threshold maximising accuracy of "same if score >= t" on these pairs.

    Candidates are midpoints between consecutive distinct scores (plus both
    ends), so the chosen threshold never sits exactly on a training score.
    Returns (threshold, accuracy on these pairs).
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    u = np.unique(scores)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    order = np.sort(scores[same])
    neg = np.sort(scores[~same])
    # same pairs accepted: scores >= t; different pairs rejected: scores < t.
    tp = len(order) - np.searchsorted(order, cands, side="left")
    tn = np.searchsorted(neg, cands, side="left")
    acc = (tp + tn) / len(scores)
    i = int(np.argmax(acc))
    return float(cands[i]), float(acc[i])


def kfold_accuracy(scores, same, folds):
    """K-fold verification accuracy; fold k's threshold is fit on the others only.

    Args:
      scores: `(N,)` similarities; same: `(N,)` bool; folds: `(N,)` int fold ids.

    Returns:
      dict with mean, std (population, as LFW reports), per-fold accuracies
      and thresholds.
    """
    scores, same, folds = np.asarray(scores), np.asarray(same, bool), np.asarray(folds)
    ids = np.unique(folds)
    if len(ids) < 2:
        raise ValueError("k-fold verification needs at least 2 folds")
    accs, ths = [], []
    for k in ids:
        test = folds == k
        t, _ = best_threshold(scores[~test], same[~test])
        accs.append(float(np.mean((scores[test] >= t) == same[test])))
        ths.append(t)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "fold_thresholds": ths,
    }


def roc_curve(scores, same):
    """(fpr, tpr, thresholds) over every distinct score, thresholds descending."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    th = np.unique(scores)[::-1]
    pos, neg = np.sort(scores[same]), np.sort(scores[~same])
    tpr = (len(pos) - np.searchsorted(pos, th, side="left")) / max(len(pos), 1)
    fpr = (len(neg) - np.searchsorted(neg, th, side="left")) / max(len(neg), 1)
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, th]


def auc(fpr, tpr):
    """Area under a ROC curve (trapezoids)."""
    return float(np.trapezoid(tpr, fpr))


def tar_at_far(scores, same, far):
    """Highest true-accept rate with false-accept rate <= `far`."""
    fpr, tpr, _ = roc_curve(scores, same)
    ok = fpr <= far + 1e-12
    return float(np.max(tpr[ok])) if ok.any() else 0.0


def equal_error_rate(scores, same):
    """EER: where the false-accept and false-reject rates cross (linear interpolation)."""
    fpr, tpr, _ = roc_curve(scores, same)
    fnr = 1.0 - tpr
    d = fpr - fnr
    i = int(np.argmax(d >= 0))
    if i == 0:
        return float(fpr[0])
    x0, x1 = d[i - 1], d[i]
    w = 0.0 if x1 == x0 else -x0 / (x1 - x0)
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def similarity_statistics(scores, same, bins=100):
    """CRRCD Fig. 5 statistics: histogram intersection of the positive and negative
    score distributions (lower is better) and the expectation margin
    E[score | same] - E[score | different] (higher is better)."""
    scores, same = np.asarray(scores), np.asarray(same, bool)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    hp, _ = np.histogram(scores[same], edges)
    hn, _ = np.histogram(scores[~same], edges)
    hp, hn = hp / max(hp.sum(), 1), hn / max(hn.sum(), 1)
    return {
        "histogram_intersection": float(np.minimum(hp, hn).sum()),
        "expectation_margin": float(scores[same].mean() - scores[~same].mean()),
    }


def stratified_folds(same, k=10):
    """Fold ids for a single split (e.g. pairsDevTest): the i-th same pair of n goes to
    fold i*k//n, and likewise for different pairs, so every fold is balanced
    (50 + 50 for DevTest's 500 + 500) and keeps file order."""
    same = np.asarray(same, bool)
    folds = np.empty(len(same), int)
    for mask in (same, ~same):
        n = int(mask.sum())
        folds[mask] = np.arange(n) * k // max(n, 1)
    return folds


def verification_report(scores, same, folds=None):
    """Every verification number for one condition. `folds` None: 10 balanced
    folds from `stratified_folds` (for a single split such as pairsDevTest)."""
    scores, same = np.asarray(scores), np.asarray(same, bool)
    if folds is None:
        folds = stratified_folds(same)
    fpr, tpr, _ = roc_curve(scores, same)
    return {
        **kfold_accuracy(scores, same, folds),
        "auc": auc(fpr, tpr),
        "tar_at_far_1e-2": tar_at_far(scores, same, 1e-2),
        "tar_at_far_1e-3": tar_at_far(scores, same, 1e-3),
        "eer": equal_error_rate(scores, same),
        **similarity_statistics(scores, same),
        "pairs": int(len(scores)),
    }
