"""Plots written next to the JSON results (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path, **legend):
    ax.grid(alpha=0.3)
    ax.legend(**{"fontsize": 8, **legend})
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def plot_roc(curves, path, title="ROC"):
    """curves: {label: (fpr, tpr)}; log-scale FAR axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    return _finish(fig, ax, path)


def plot_similarity_histograms(scores, same, path, title="cosine similarity"):
    """Positive vs negative pair similarity histograms (CRRCD Fig. 5)."""
    from lrface_tf.eval.verification import similarity_statistics

    plt = _plt()
    scores, same = np.asarray(scores), np.asarray(same, bool)
    stats = similarity_statistics(scores, same)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(-1, 1, 61)
    ax.hist(scores[same], bins, alpha=0.6, density=True, label="same person")
    ax.hist(scores[~same], bins, alpha=0.6, density=True, label="different people")
    ax.set_title(
        f"{title}\nintersection {stats['histogram_intersection']:.3f}, "
        f"margin {stats['expectation_margin']:.3f}",
        fontsize=9,
    )
    return _finish(fig, ax, path)


def plot_embedding_map(points, labels, names, path, title="t-SNE"):
    """2-D points (a t-SNE map) coloured by class; `names[label]` in the legend."""
    plt = _plt()
    points, labels = np.asarray(points), np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(*points[sel].T, s=6, color=cmap(i % cmap.N), label=str(names[c])[:24])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return _finish(fig, ax, path, fontsize=6, markerscale=2)


def plot_accuracy_vs_size(series, path, ylabel="accuracy (%)"):
    """series: {label: [(probe_size, accuracy), ...]}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, pts in series.items():
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("probe size (px)")
    ax.set_ylabel(ylabel)
    return _finish(fig, ax, path)


def plot_cmc(curves, path, max_rank=20):
    """curves: {label: cmc array (element r-1 = rank-r accuracy)}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, cmc in curves.items():
        r = np.arange(1, min(max_rank, len(cmc)) + 1)
        ax.plot(r, 100 * np.asarray(cmc)[: len(r)], marker=".", label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_title("CMC")
    return _finish(fig, ax, path)
