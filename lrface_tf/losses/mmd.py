"""Multi-kernel maximum mean discrepancy (MK-MMD) between embedding batches."""

from __future__ import annotations

import keras
from keras import ops

from lrface_tf.losses._ops import l2_normalize, pairwise_squared_distances
from lrface_tf.losses.base import DistillationLoss
from lrface_tf.losses.distribute import gather_replicas


@keras.saving.register_keras_serializable(package="lrface_tf")
class MKMMDLoss(DistillationLoss):
    """Biased MMD^2 with a sum of Gaussian kernels (KD_im, Eq. 8).

    k(x, y) = sum_m exp(-||x - y||^2 / (2 m sigma^2)), m in
    `bandwidth_multipliers`; sigma^2 is the mean squared distance over all
    distinct pairs of the pooled 2B embeddings, computed without gradient.
    MMD^2 = mean K_tt + mean K_ss - 2 mean K_ts (each mean over all B x B
    entries, diagonals included): exactly 0 for identical batches, never
    negative. With `normalize=True` both sides are L2-normalised first.

    Call arguments:
      teacher: teacher embeddings `(B, D)`; student: student embeddings `(B, Ds)`
        (projected to D by a learned map when the sizes differ).

    Returns:
      `(B_global,)` row terms whose mean is MMD^2 over the gathered batch.
    """

    needs_projection = True

    def __init__(
        self, bandwidth_multipliers=(1, 2, 4, 8, 16), normalize=True, name="mk_mmd", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.bandwidth_multipliers = tuple(float(m) for m in bandwidth_multipliers)
        if not self.bandwidth_multipliers or min(self.bandwidth_multipliers) <= 0:
            raise ValueError(f"bandwidth_multipliers must be positive, got {bandwidth_multipliers}")
        self.normalize = bool(normalize)

    def compute(self, teacher, student, labels, training):
        t = ops.stop_gradient(gather_replicas(teacher))
        s = gather_replicas(student)
        if self.normalize:
            t, s = l2_normalize(t), l2_normalize(s)
        b = ops.shape(t)[0]
        z = ops.concatenate([t, s], axis=0)
        d2 = pairwise_squared_distances(z)
        n = ops.cast(2 * b, z.dtype)
        sigma2 = ops.stop_gradient(ops.sum(d2) / ops.maximum(n * (n - 1.0), 1.0))
        sigma2 = ops.maximum(sigma2, 1e-12)
        k = sum(ops.exp(-d2 / (2.0 * m * sigma2)) for m in self.bandwidth_multipliers)
        ktt, kts = k[:b, :b], k[:b, b:]
        kst, kss = k[b:, :b], k[b:, b:]
        # Row i: mean_j K_tt[i,j] + mean_j K_ss[i,j] - mean_j K_ts[i,j] - mean_j K_st[i,j];
        # the mean over i of these rows is the biased MMD^2.
        return (
            ops.mean(ktt, axis=1)
            + ops.mean(kss, axis=1)
            - ops.mean(kts, axis=1)
            - ops.mean(kst, axis=1)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "bandwidth_multipliers": list(self.bandwidth_multipliers),
            "normalize": self.normalize,
        }
