"""Cross-replica helpers for losses under `tf.distribute`.

Keras divides a `keras.losses.Loss` result by the number of replicas itself
(`sum_over_batch_size` reduction), so per-example losses need nothing here.
Batch-relational losses (distance, angle, MMD, contrastive) must see the global
batch: `gather_replicas` all-gathers along the batch axis inside a replica
context. Its gradient sends each replica the gradient of its own slice summed
over replicas, which, together with Keras' 1/replicas scaling and the
optimizer's cross-replica gradient sum, gives exactly the one-device gradient
(tested in tests/test_distiller.py).
"""

from __future__ import annotations

import tensorflow as tf


def num_replicas():
    """Replicas in sync for the current strategy (1 outside any strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_replicas(x, axis=0):
    """All-gather `x` across replicas along `axis`; identity with one replica."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    out = ctx.all_gather(x, axis=axis)
    if axis == 0 and x.shape.rank and x.shape[0] is not None:
        # The gathered batch is static when the local one is (chunked terms need it).
        out = tf.ensure_shape(out, [x.shape[0] * ctx.num_replicas_in_sync, *x.shape[1:]])
    return out


def scale_for_replicas(value):
    """Divide a hand-made scalar loss by the replica count (Keras does this for Loss objects)."""
    n = num_replicas()
    return value / n if n > 1 else value


def unscale_for_replicas(value):
    """Undo `scale_for_replicas` for logging (so metrics match one device)."""
    n = num_replicas()
    return value * n if n > 1 else value
