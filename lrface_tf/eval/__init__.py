"""Evaluation: classification accuracy (verification and identification: issue 6)."""

from lrface_tf.eval.classification import classification_accuracy, predict_logits, top_k_accuracy

__all__ = ["classification_accuracy", "predict_logits", "top_k_accuracy"]
