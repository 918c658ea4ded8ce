"""Evaluation: classification, verification (K-fold, ROC, EER), identification, plots."""

from lrface_tf.eval.callbacks import VerificationCallback
from lrface_tf.eval.classification import classification_accuracy, predict_logits, top_k_accuracy
from lrface_tf.eval.embeddings import extract_embeddings
from lrface_tf.eval.identification import cmc_curve, linear_probe, rank_k
from lrface_tf.eval.pairs import evaluate_pairs, load_pair_images
from lrface_tf.eval.verification import (
    auc,
    best_threshold,
    cosine_scores,
    equal_error_rate,
    kfold_accuracy,
    roc_curve,
    similarity_statistics,
    stratified_folds,
    tar_at_far,
    verification_report,
)

__all__ = [
    "VerificationCallback",
    "extract_embeddings",
    "auc",
    "best_threshold",
    "classification_accuracy",
    "cmc_curve",
    "cosine_scores",
    "equal_error_rate",
    "evaluate_pairs",
    "kfold_accuracy",
    "linear_probe",
    "load_pair_images",
    "predict_logits",
    "rank_k",
    "roc_curve",
    "similarity_statistics",
    "stratified_folds",
    "tar_at_far",
    "top_k_accuracy",
    "verification_report",
]
