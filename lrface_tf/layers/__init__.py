"""Custom layers."""

from lrface_tf.layers.class_centers import ClassCenters
from lrface_tf.layers.heads import CosineHead, build_head
from lrface_tf.layers.queue import EmbeddingQueue

__all__ = ["ClassCenters", "CosineHead", "EmbeddingQueue", "build_head"]
