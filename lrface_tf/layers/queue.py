"""A fixed-length FIFO queue of teacher embeddings and labels (MoCo-style negatives)."""

from __future__ import annotations

import keras
from keras import layers, ops

from lrface_tf.losses.distribute import gather_replicas


@keras.saving.register_keras_serializable(package="lrface_tf")
class EmbeddingQueue(layers.Layer):
    """FIFO queue of `size` embeddings with their labels; negatives for CRRCD.

    `enqueue(keys, labels)` writes the batch at the head, wrapping around;
    `valid` marks filled slots (before the queue is full only those are used).
    Under `tf.distribute` keys and labels are all-gathered in replica order and
    every replica writes the same values into "only_first_replica" variables,
    so the queue equals the one-device queue for the same global batches.

    Args:
      size: number of slots (CRRCD default 512; the paper's ablation 64-1024).
    """

    def __init__(self, size=512, **kwargs):
        super().__init__(**kwargs)
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.size = int(size)

    def build(self, input_shape):
        kw = {"trainable": False, "aggregation": "only_first_replica"}
        self.keys = self.add_weight(
            name="keys", shape=(self.size, input_shape[-1]), initializer="zeros", **kw
        )
        self.labels = self.add_weight(
            name="labels", shape=(self.size,), initializer="zeros", dtype="int32", **kw
        )
        self.head = self.add_weight(name="head", shape=(), initializer="zeros", dtype="int32", **kw)
        self.filled = self.add_weight(
            name="filled", shape=(), initializer="zeros", dtype="int32", **kw
        )

    @property
    def valid(self):
        """`(size,)` float: 1 for filled slots."""
        return ops.cast(ops.arange(self.size) < self.filled, "float32")

    def enqueue(self, keys, labels):
        """Push a batch (gathered across replicas); the oldest entries are overwritten."""
        keys = gather_replicas(ops.stop_gradient(ops.cast(keys, self.keys.dtype)))
        labels = gather_replicas(ops.reshape(ops.cast(labels, "int32"), (-1,)))
        n = ops.shape(keys)[0]
        if keys.shape[0] is not None and keys.shape[0] > self.size:
            keys, labels, n = keys[-self.size :], labels[-self.size :], self.size
        idx = (self.head + ops.arange(n, dtype="int32")) % self.size
        self.keys.assign(ops.scatter_update(self.keys, idx[:, None], keys))
        self.labels.assign(ops.scatter_update(self.labels, idx[:, None], labels))
        self.head.assign((self.head + n) % self.size)
        self.filled.assign(ops.minimum(self.filled + n, self.size))

    def call(self, inputs):
        return self.keys

    def get_config(self):
        return {**super().get_config(), "size": self.size}
