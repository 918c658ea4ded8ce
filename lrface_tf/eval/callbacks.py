"""Keras callback: the verification protocol on a validation pairs set at epoch end."""

from __future__ import annotations

import keras
import numpy as np

from lrface_tf.eval.embeddings import extract_embeddings
from lrface_tf.eval.verification import cosine_scores, kfold_accuracy, stratified_folds


class VerificationCallback(keras.callbacks.Callback):
    """K-fold verification accuracy of the (student) embedding after each epoch.

    Adds `val_verification_accuracy` (and its std) to the epoch logs, so
    TensorBoard, CSVLogger and ModelCheckpoint see it, and writes it to
    `log_dir` as a TensorBoard scalar when given.

    Args:
      images_a, images_b: float arrays `(N, H, W, C)`, the two sides of each pair
        at the model's input size (degraded as the protocol says).
      same: `(N,)` bool; folds: `(N,)` int or None (balanced 10 folds).
      model_fn: picks the embedding model from the trained model (default: its
        `student` attribute if any, else the model itself).
    """

    def __init__(
        self, images_a, images_b, same, folds=None, model_fn=None, log_dir=None, batch_size=64
    ):
        super().__init__()
        self.images_a, self.images_b = images_a, images_b
        self.same = np.asarray(same, bool)
        self.folds = stratified_folds(self.same) if folds is None else np.asarray(folds)
        self.model_fn = model_fn or (lambda m: getattr(m, "student", m))
        self.batch_size = batch_size
        self.writer = None
        if log_dir:
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(log_dir)

    def on_epoch_end(self, epoch, logs=None):
        net = self.model_fn(self.model)
        ea = extract_embeddings(net, self.images_a, self.batch_size, progress=False)
        eb = extract_embeddings(net, self.images_b, self.batch_size, progress=False)
        r = kfold_accuracy(cosine_scores(ea, eb), self.same, self.folds)
        if logs is not None:
            logs["val_verification_accuracy"] = r["accuracy"]
            logs["val_verification_accuracy_std"] = r["accuracy_std"]
        if self.writer is not None:
            import tensorflow as tf

            with self.writer.as_default():
                tf.summary.scalar("verification_accuracy", r["accuracy"], step=epoch)
            self.writer.flush()
