"""Models: the recognizer (backbone + head) and the Distiller."""

from lrface_tf.models.distiller import Distiller, DistillTerm
from lrface_tf.models.recognizer import (
    build_recognizer,
    embedding_model,
    float32_copy,
    logits_model,
    synchronize_batchnorm,
    task_loss_for,
)

__all__ = [
    "DistillTerm",
    "Distiller",
    "build_recognizer",
    "embedding_model",
    "float32_copy",
    "logits_model",
    "synchronize_batchnorm",
    "task_loss_for",
]
