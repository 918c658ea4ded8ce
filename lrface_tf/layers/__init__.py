"""Custom layers."""

from lrface_tf.layers.class_centers import ClassCenters
from lrface_tf.layers.heads import CosineHead, build_head

__all__ = ["ClassCenters", "CosineHead", "build_head"]
