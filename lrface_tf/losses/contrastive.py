"""CRRCD: cross-resolution relational contrastive distillation (Zhang, Ge et al., Sec. III).

A trainable, stateful distillation term (trained with the student; not exported):

- Embeddings are projected to `dim` (128) by P_t (teacher side) and P_s (student).
- Relation module (Sec. III-A): v = phi(ReLU(phi_i e_i - phi_j e_j)), two learnable
  networks: F^t on (teacher e_i, teacher e_j) and F^{t,s} on (teacher e_i on HR,
  student e_j on LR).
- Critic (Eq. 10, with CRD's normalising constant, see below):
  h = (e^{g/tau} / Z) / (e^{g/tau} / Z + n / m), g = h1(v^t) . h2(v^ts), h1 and h2
  linear maps followed by L2 normalisation; n = negatives, m = data set size.
  Computed in log space throughout (no log(0)).
- Loss (Eq. 11): for each anchor i with partner j (the next sample of the global
  batch), the positive is (v^t_ij, v^ts_ij) (same input pair, b = 1); the negatives
  are (v^t_ik, v^ts_ij) with k from the queue of past teacher embeddings (b = 0);
  per anchor -log h(pos) - sum_k log(1 - h(neg_k)), the sum over the valid negatives.
  Sampling "supervised" keeps only queue entries whose label differs from y_j (the
  paper's best); "unsupervised" keeps every filled slot.

The normalising constant Z (the reading chosen here). Eq. 10 as printed has no Z:
the prior n/m = 512 / 50,000 is tiny next to e^{g/tau} (~1 at initialisation), so
every pair, negatives included, starts at h ~ 0.97, the n-fold negative sum of
Eq. 11 swamps the positive term, and the critic collapses to scoring everything
alike (measured: the term plateaus at log(1 + n) + 1). Eq. 10 is the critic of CRD
(Tian, Krishnan and Isola, ICLR 2020), on which CRRCD builds; CRD's reference code
divides e^{g/tau} by Z, a Monte Carlo estimate of the partition function,
Z = m * mean(e^{g/tau}) over the first training batch's positive and negative
scores, kept fixed afterwards. Neither paper writes Z down. With it every pair
starts near h = 1/(n + 1), i.e. at the balanced bound, and the critic can learn.
We estimate Z on the first training step whose queue holds negatives, over the
gathered global batch (so one device and N replicas agree), store log Z as a
non-trainable weight (saved with checkpoints, restored on resume), and keep it
fixed; `z_momentum=mu` instead follows Z with an exponential moving average
(Z <- mu Z + (1 - mu) Z_batch), reported to work as well. Until Z is set (the very
first step, whose queue is still empty) the batch's own estimate is used.
`negative_weight=w` replaces the negative sum by w times the mean over the
negatives: an ablation only (the earlier workaround for the collapse).

Our reading of the negatives: the paper samples relation tuples from the product of
marginals; we draw the independent teacher relation from the queue (MoCo style) so
n does not depend on the batch size.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from lrface_tf.layers.queue import EmbeddingQueue
from lrface_tf.losses._ops import l2_normalize
from lrface_tf.losses.base import DistillationLoss
from lrface_tf.losses.distribute import gather_replicas
from lrface_tf.validation import check_fraction, check_int, check_positive

SAMPLING = ("supervised", "unsupervised")


@keras.saving.register_keras_serializable(package="lrface_tf")
class RelationModule(layers.Layer):
    """v = phi(ReLU(phi_i e_i - phi_j e_j)); broadcasts over leading axes."""

    def __init__(self, dim=128, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        dtype = self.dtype_policy
        self.phi_i = layers.Dense(dim, name="phi_i", dtype=dtype)
        self.phi_j = layers.Dense(dim, use_bias=False, name="phi_j", dtype=dtype)
        self.phi = layers.Dense(dim, name="phi", dtype=dtype)

    def build(self, input_shape):
        self.phi_i.build(input_shape)
        self.phi_j.build(input_shape)
        self.phi.build((*input_shape[:-1], self.dim))

    def call(self, e_i, e_j):
        return self.phi(ops.relu(self.phi_i(e_i) - self.phi_j(e_j)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def _log_mean_exp(x, mask):
    """log(mean over mask of exp(x)), stable; `mask` is 0/1 of x's shape."""
    big = ops.max(ops.where(mask > 0, x, -1e30))
    total = ops.sum(ops.exp(x - big) * mask)
    return big + ops.log(ops.maximum(total, 1e-30)) - ops.log(ops.maximum(ops.sum(mask), 1.0))


@keras.saving.register_keras_serializable(package="lrface_tf")
class CRRCDLoss(DistillationLoss):
    """Relation contrastive distillation term with a negative queue (see module doc).

    Args:
      dim: projection and relation size (128).
      queue_size: negatives kept, n (512).
      tau: critic temperature (0.1).
      data_size: m in Eq. 10, the training-set size.
      sampling: "supervised" or "unsupervised".
      negative_weight: None (default): the negative part is the sum over the
        negatives, as Eq. 11 writes it; a number w: w times their mean (ablation).
      z_momentum: None (default): Z is estimated once and kept; mu in [0, 1): Z
        follows an exponential moving average of the batch estimates.

    Call arguments:
      teacher: `(B, Dt)` teacher embeddings; student: `(B, Ds)` student embeddings;
      labels: int `(B,)` (supervised sampling; stored in the queue);
      training: enqueue the batch's teacher embeddings after the loss and set Z.

    Returns:
      `(B_global,)` per-anchor losses over the gathered batch.
    """

    def __init__(
        self,
        dim=128,
        queue_size=512,
        tau=0.1,
        data_size=50000,
        sampling="supervised",
        negative_weight=None,
        z_momentum=None,
        name="crrcd",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if sampling not in SAMPLING:
            raise ValueError(f"CRRCD sampling must be one of {SAMPLING}, got {sampling!r}")
        self.dim = check_int("CRRCD dim", dim, 1)
        self.queue_size = check_int("CRRCD queue_size", queue_size, 1)
        self.tau = check_positive("CRRCD tau", tau)
        self.data_size = check_int("CRRCD data_size", data_size, 1)
        self.sampling = sampling
        self.negative_weight = (
            None
            if negative_weight is None
            else check_positive("CRRCD negative_weight", negative_weight)
        )
        if z_momentum is not None and check_fraction("CRRCD z_momentum", z_momentum) >= 1.0:
            raise ValueError(f"CRRCD z_momentum must be in [0, 1), got {z_momentum}")
        self.z_momentum = z_momentum
        self.needs_labels = sampling == "supervised"
        f32 = "float32"  # every part computes in float32 whatever the global policy
        self.proj_t = layers.Dense(dim, name="proj_t", dtype=f32)
        self.proj_s = layers.Dense(dim, name="proj_s", dtype=f32)
        self.rel_t = RelationModule(dim, name="relation_t", dtype=f32)
        self.rel_ts = RelationModule(dim, name="relation_ts", dtype=f32)
        self.h1 = layers.Dense(dim, use_bias=False, name="h1", dtype=f32)
        self.h2 = layers.Dense(dim, use_bias=False, name="h2", dtype=f32)
        self.queue = EmbeddingQueue(queue_size, name="queue", dtype=f32)

    def build(self, teacher_shape, student_shape=None):
        student_shape = teacher_shape if student_shape is None else student_shape
        self.proj_t.build(teacher_shape)
        self.proj_s.build(student_shape)
        for layer in (self.rel_t, self.rel_ts, self.h1, self.h2):
            layer.build((None, self.dim))
        self.queue.build(teacher_shape)
        kw = {"trainable": False, "aggregation": "only_first_replica"}
        self.log_z = self.add_weight(name="log_z", shape=(), initializer="zeros", **kw)
        self.z_ready = self.add_weight(name="z_ready", shape=(), initializer="zeros", **kw)
        super().build(teacher_shape, student_shape)

    @property
    def log_prior(self):
        """log(n / m) of Eq. 10."""
        return math.log(self.queue_size / self.data_size)

    def scores(self, v_t, v_ts):
        """g / tau of Eq. 10: the scaled cosine of h1(v^t) and h2(v^ts)."""
        return ops.sum(l2_normalize(self.h1(v_t)) * l2_normalize(self.h2(v_ts)), -1) / self.tau

    def log_critic(self, scores, log_z):
        """(log h, log(1 - h)) of the normalised critic for scores g / tau."""
        x = scores - log_z  # log(e^{g/tau} / Z)
        denom = ops.logaddexp(x, self.log_prior)
        return x - denom, self.log_prior - denom

    def compute(self, teacher, student, labels, training):
        batch = ops.shape(teacher)[0]
        if labels is None:
            labels = ops.zeros((batch,), "int32")
        t, s, y = gather_replicas(teacher), gather_replicas(student), gather_replicas(labels)
        zt, zs = self.proj_t(t), self.proj_s(s)
        zt_j, zs_j, y_j = (ops.roll(a, -1, axis=0) for a in (zt, zs, y))
        v_ts = self.rel_ts(zt, zs_j)  # (B, dim): cross-space relation of (i, j)
        v_t = self.rel_t(zt, zt_j)  # (B, dim): teacher-space relation of (i, j)
        pos = self.scores(v_t, v_ts)  # (B,)
        keys = self.proj_t(ops.convert_to_tensor(self.queue.keys))  # (K, dim)
        v_t_neg = self.rel_t(zt[:, None, :], keys[None, :, :])  # (B, K, dim)
        neg = self.scores(v_t_neg, v_ts[:, None, :])  # (B, K)
        mask = self.queue.valid[None, :] * ops.ones_like(neg)
        if self.sampling == "supervised":
            queue_labels = ops.convert_to_tensor(self.queue.labels)
            mask = mask * ops.cast(queue_labels[None, :] != y_j[:, None], "float32")
        log_z = self._log_z(pos, neg, mask, training)
        log_pos, _ = self.log_critic(pos, log_z)
        _, log_neg = self.log_critic(neg, log_z)
        neg_sum = ops.sum(log_neg * mask, axis=1)
        if self.negative_weight is not None:
            neg_sum = self.negative_weight * neg_sum / ops.maximum(ops.sum(mask, axis=1), 1.0)
        if training:
            self.queue.enqueue(teacher, labels)
        return -log_pos - neg_sum

    def _log_z(self, pos, neg, mask, training):
        """log Z: the stored constant, or this batch's estimate m * mean(e^{g/tau})."""
        scores = ops.concatenate([pos[:, None], neg], axis=1)
        valid = ops.concatenate([ops.ones_like(pos)[:, None], mask], axis=1)
        batch = ops.stop_gradient(math.log(self.data_size) + _log_mean_exp(scores, valid))
        stored = ops.convert_to_tensor(self.log_z)
        ready = ops.convert_to_tensor(self.z_ready) > 0
        if training:
            has_negatives = ops.sum(mask) > 0
            if self.z_momentum:  # log(mu Z + (1 - mu) Z_batch)
                mu = float(self.z_momentum)
                ema = ops.logaddexp(math.log(mu) + stored, math.log(1.0 - mu) + batch)
                new = ops.where(ready, ema, batch)
            elif self.z_momentum == 0:
                new = batch
            else:
                new = ops.where(ready, stored, batch)
            self.log_z.assign(ops.where(has_negatives, new, stored))
            self.z_ready.assign(ops.where(has_negatives, 1.0, ops.convert_to_tensor(self.z_ready)))
            return ops.where(has_negatives, new, ops.where(ready, stored, batch))
        return ops.where(ready, stored, batch)

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "queue_size": self.queue_size,
            "tau": self.tau,
            "data_size": self.data_size,
            "sampling": self.sampling,
            "negative_weight": self.negative_weight,
            "z_momentum": self.z_momentum,
        }
