"""Loss terms. Distillation terms share one interface (`DistillationLoss`):
`term(teacher, student, labels, training=...)` -> per-anchor values. The task
losses on the student's logits are `keras.losses.Loss` subclasses."""

from lrface_tf.losses.base import DistillationLoss, LossTerm, as_term
from lrface_tf.losses.class_center import ClassCenterLoss
from lrface_tf.losses.classification import MarginCrossEntropy, MaskedCrossEntropy
from lrface_tf.losses.contrastive import CRRCDLoss, RelationModule
from lrface_tf.losses.feature import FeatureLoss
from lrface_tf.losses.kd import KDLoss
from lrface_tf.losses.mmd import MKMMDLoss
from lrface_tf.losses.rkd import RKDAngleLoss, RKDDistanceLoss

__all__ = [
    "CRRCDLoss",
    "ClassCenterLoss",
    "DistillationLoss",
    "FeatureLoss",
    "KDLoss",
    "LossTerm",
    "MKMMDLoss",
    "MarginCrossEntropy",
    "MaskedCrossEntropy",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RelationModule",
    "as_term",
]
