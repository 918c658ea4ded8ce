"""Custom layers."""

from lrface_tf.layers.heads import CosineHead, build_head

__all__ = ["CosineHead", "build_head"]
