"""lrface_tf: low-resolution recognition by cross-resolution knowledge distillation."""

__version__ = "0.1.0"
