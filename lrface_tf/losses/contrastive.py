"""CRRCD: cross-resolution relational contrastive distillation (Zhang, Ge et al., Sec. III).

A trainable loss module (a Layer, trained with the student; not exported):

- Embeddings are projected to `dim` (128) by P_t (teacher side) and P_s (student).
- Relation module (Sec. III-A): v = phi(ReLU(phi_i e_i - phi_j e_j)), two learnable
  networks: F^t on (teacher e_i, teacher e_j) and F^{t,s} on (teacher e_i on HR,
  student e_j on LR).
- Critic (Eq. 10): h(v^t, v^ts) = exp(g / tau) / (exp(g / tau) + n / m),
  g = h1(v^t) . h2(v^ts), h1 and h2 linear maps followed by L2 normalisation;
  n = negatives, m = data set size. Computed in log space (no log(0)).
- Loss (Eq. 11): for each anchor i with partner j (the next sample of the
  global batch), the positive is (v^t_ij, v^ts_ij) (same input pair, b = 1);
  the negatives are (v^t_ik, v^ts_ij) with k from the queue of past teacher
  embeddings (b = 0); per anchor -log h(pos) - n * mean_k log(1 - h(neg_k)).
  Sampling "supervised" keeps only queue entries whose label differs from
  y_j (the paper's best); "unsupervised" keeps every filled slot.

Our reading of the negatives: the paper samples relation tuples from the product
of marginals; we draw the independent teacher relation from the queue (MoCo
style) so n does not depend on the batch size.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from lrface_tf.layers.queue import EmbeddingQueue
from lrface_tf.losses._ops import l2_normalize
from lrface_tf.losses.distribute import gather_replicas

SAMPLING = ("supervised", "unsupervised")


@keras.saving.register_keras_serializable(package="lrface_tf")
class RelationModule(layers.Layer):
    """v = phi(ReLU(phi_i e_i - phi_j e_j)); broadcasts over leading axes."""

    def __init__(self, dim=128, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.phi_i = layers.Dense(dim, name="phi_i")
        self.phi_j = layers.Dense(dim, use_bias=False, name="phi_j")
        self.phi = layers.Dense(dim, name="phi")

    def build(self, input_shape):
        self.phi_i.build(input_shape)
        self.phi_j.build(input_shape)
        self.phi.build((*input_shape[:-1], self.dim))

    def call(self, e_i, e_j):
        return self.phi(ops.relu(self.phi_i(e_i) - self.phi_j(e_j)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


@keras.saving.register_keras_serializable(package="lrface_tf")
class CRRCDLoss(layers.Layer):
    """Relation contrastive distillation term with a negative queue (see module doc).

    Args:
      dim: projection and relation size (128).
      queue_size: negatives kept (512).
      tau: critic temperature (0.1).
      data_size: m in Eq. 10, the training-set size.
      sampling: "supervised" or "unsupervised".
      negative_weight: the factor on the mean negative term; None uses n (the
        queue size), as Eq. 11 writes it.

    Call arguments:
      teacher: `(B, Dt)` teacher embeddings (gradient stopped).
      student: `(B, Ds)` student embeddings.
      labels: int `(B,)` (used by supervised sampling and stored in the queue).
      training: enqueue the batch's teacher embeddings after the loss when True.

    Returns:
      `(B_global,)` per-anchor losses over the gathered batch.
    """

    def __init__(self, dim=128, queue_size=512, tau=0.1, data_size=50000,
                 sampling="supervised", negative_weight=None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if tau <= 0 or data_size < 1:
            raise ValueError(f"need tau > 0 and data_size >= 1, got {tau}, {data_size}")
        self.dim, self.queue_size, self.tau = int(dim), int(queue_size), float(tau)
        self.data_size, self.sampling = int(data_size), sampling
        self.negative_weight = negative_weight
        self.proj_t = layers.Dense(dim, name="proj_t")
        self.proj_s = layers.Dense(dim, name="proj_s")
        self.rel_t = RelationModule(dim, name="relation_t")
        self.rel_ts = RelationModule(dim, name="relation_ts")
        self.h1 = layers.Dense(dim, use_bias=False, name="h1")
        self.h2 = layers.Dense(dim, use_bias=False, name="h2")
        self.queue = EmbeddingQueue(queue_size, name="queue")

    def build(self, teacher_shape, student_shape):
        self.proj_t.build(teacher_shape)
        self.proj_s.build(student_shape)
        for layer in (self.rel_t, self.rel_ts, self.h1, self.h2):
            layer.build((None, self.dim))
        self.queue.build(teacher_shape)

    def log_critic(self, v_t, v_ts):
        """(log h, log(1 - h)) of Eq. 10, computed stably in log space."""
        g = ops.sum(l2_normalize(self.h1(v_t)) * l2_normalize(self.h2(v_ts)), -1) / self.tau
        log_prior = math.log(self.queue_size / self.data_size)  # log(n / m)
        denom = ops.logaddexp(g, log_prior)
        return g - denom, log_prior - denom

    def call(self, teacher, student, labels, training=False):
        t = gather_replicas(ops.stop_gradient(teacher))
        s = gather_replicas(student)
        y = gather_replicas(ops.reshape(ops.cast(labels, "int32"), (-1,)))
        zt, zs = self.proj_t(t), self.proj_s(s)
        zt_j, zs_j, y_j = (ops.roll(a, -1, axis=0) for a in (zt, zs, y))
        v_ts = self.rel_ts(zt, zs_j)  # (B, dim): cross-space relation of (i, j)
        v_t = self.rel_t(zt, zt_j)  # (B, dim): teacher-space relation of (i, j)
        log_pos, _ = self.log_critic(v_t, v_ts)
        keys = self.proj_t(ops.convert_to_tensor(self.queue.keys))  # (K, dim)
        v_t_neg = self.rel_t(zt[:, None, :], keys[None, :, :])  # (B, K, dim)
        _, log_neg = self.log_critic(v_t_neg, v_ts[:, None, :])  # (B, K)
        mask = self.queue.valid[None, :] * ops.ones_like(log_neg)
        if self.sampling == "supervised":
            differ = ops.cast(ops.convert_to_tensor(self.queue.labels)[None, :] != y_j[:, None],
                              "float32")  # fmt: skip
            mask = mask * differ
        count = ops.sum(mask, axis=1)
        neg_mean = ops.sum(log_neg * mask, axis=1) / ops.maximum(count, 1.0)
        n = self.queue_size if self.negative_weight is None else self.negative_weight
        loss = -log_pos - n * neg_mean
        if training:
            self.queue.enqueue(teacher, labels)
        return loss

    def get_config(self):
        return {
            **super().get_config(), "dim": self.dim, "queue_size": self.queue_size,
            "tau": self.tau, "data_size": self.data_size, "sampling": self.sampling,
            "negative_weight": self.negative_weight,
        }  # fmt: skip
