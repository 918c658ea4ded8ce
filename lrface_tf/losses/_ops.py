"""Numerically safe building blocks shared by the relational losses."""

from __future__ import annotations

from keras import ops

EPS = 1e-12


def l2_normalize(x, axis=-1, eps=EPS):
    """x / ||x|| with a finite gradient at x = 0 (x * rsqrt(sum x^2 + eps))."""
    return x * ops.rsqrt(ops.sum(ops.square(x), axis=axis, keepdims=True) + eps)


def pairwise_squared_distances(x):
    """`(B, B)` squared Euclidean distances via the Gram matrix, >= 0, zero diagonal.

    The batch is centred first: distances do not change, and the Gram form no
    longer cancels catastrophically when the points sit far from the origin
    relative to their spread (e.g. 1e-3 apart around 5.0 in float32).
    """
    x = x - ops.mean(x, axis=0, keepdims=True)
    sq = ops.sum(ops.square(x), axis=-1)
    d = sq[:, None] + sq[None, :] - 2.0 * ops.matmul(x, ops.transpose(x))
    b = ops.shape(x)[0]
    off = 1.0 - ops.eye(b, dtype=x.dtype)
    return ops.maximum(d, 0.0) * off


def safe_distances(x, eps=EPS):
    """`(B, B)` Euclidean distances, exactly 0 on the diagonal, finite gradients."""
    d2 = pairwise_squared_distances(x)
    return d2 * ops.rsqrt(d2 + eps)


def huber(x, delta=1.0):
    """Elementwise Huber / smooth-L1 with threshold `delta`."""
    a = ops.abs(x)
    return ops.where(a <= delta, 0.5 * ops.square(x), delta * (a - 0.5 * delta))
