"""Loss terms: `keras.losses.Loss` subclasses called as `loss(teacher, student)`."""

from lrface_tf.losses.class_center import ClassCenterLoss
from lrface_tf.losses.classification import MarginCrossEntropy, MaskedCrossEntropy
from lrface_tf.losses.contrastive import CRRCDLoss, RelationModule
from lrface_tf.losses.feature import FeatureLoss
from lrface_tf.losses.kd import KDLoss
from lrface_tf.losses.mmd import MKMMDLoss
from lrface_tf.losses.rkd import RKDAngleLoss, RKDDistanceLoss

__all__ = [
    "CRRCDLoss",
    "RelationModule",
    "ClassCenterLoss",
    "FeatureLoss",
    "KDLoss",
    "MKMMDLoss",
    "MarginCrossEntropy",
    "MaskedCrossEntropy",
    "RKDAngleLoss",
    "RKDDistanceLoss",
]
