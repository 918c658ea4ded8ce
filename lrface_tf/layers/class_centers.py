"""Class centres of the frozen teacher's embeddings (HORKD Eq. 6), as layer state."""

from __future__ import annotations

import keras
from keras import layers, ops

from lrface_tf.losses.distribute import gather_replicas


@keras.saving.register_keras_serializable(package="lrface_tf")
class ClassCenters(layers.Layer):
    """Per-class mean teacher embedding u_c, updated from every training batch.

    HORKD Eq. 6 defines u_c as the mean teacher feature of class c over the
    training set. The teacher is frozen, so its embeddings are stationary and a
    running mean is exact: with `momentum=None` (default) u_c is the cumulative
    mean of every labelled teacher embedding of class c seen so far, i.e. Eq. 6
    over the (augmented) training set after one epoch, with no extra pass over
    the data. `momentum=m` instead keeps an exponential moving average
    (u <- m u + (1 - m) batch mean), for a teacher that is not frozen.

    Under `tf.distribute` the batch embeddings and labels are all-gathered, every
    replica computes the same update, and the variables aggregate with
    "only_first_replica", so the centres equal the one-device centres.
    Labels < 0 (unlabelled) are ignored.

    Args:
      num_classes: C.
      momentum: None (cumulative mean) or EMA momentum in [0, 1).

    Call arguments:
      embeddings: teacher embeddings `(B, D)`; labels: int `(B,)`.

    Returns:
      `(centers (C, D), valid (C,))` after the update; valid is 1 for classes
      seen at least once.
    """

    def __init__(self, num_classes, momentum=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be None or in [0, 1), got {momentum}")
        self.momentum = momentum

    def build(self, input_shape):
        dim = input_shape[-1]
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, dim),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.counts = self.add_weight(
            name="counts",
            shape=(self.num_classes,),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def call(self, embeddings, labels):
        emb = gather_replicas(ops.stop_gradient(ops.cast(embeddings, "float32")))
        lab = gather_replicas(ops.reshape(ops.cast(labels, "int32"), (-1,)))
        mask = ops.cast(lab >= 0, "float32")
        onehot = ops.one_hot(ops.clip(lab, 0, self.num_classes - 1), self.num_classes)
        onehot = onehot * mask[:, None]
        batch_sum = ops.matmul(ops.transpose(onehot), emb)  # (C, D)
        batch_count = ops.sum(onehot, axis=0)  # (C,)
        old_c, old_n = ops.convert_to_tensor(self.centers), ops.convert_to_tensor(self.counts)
        new_n = old_n + batch_count
        if self.momentum is None:
            merged = (old_c * old_n[:, None] + batch_sum) / ops.maximum(new_n, 1.0)[:, None]
        else:
            batch_mean = batch_sum / ops.maximum(batch_count, 1.0)[:, None]
            ema = self.momentum * old_c + (1.0 - self.momentum) * batch_mean
            merged = ops.where((old_n > 0)[:, None], ema, batch_mean)
        new_c = ops.where((batch_count > 0)[:, None], merged, old_c)
        self.centers.assign(new_c)
        self.counts.assign(new_n)
        return new_c, ops.cast(new_n > 0, "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "momentum": self.momentum}
