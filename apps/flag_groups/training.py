"""Optimisation: epochs, batch, optimizer and schedule, seed, augmentation, precision."""

from __future__ import annotations

from absl import flags

from lrface_tf.config import PRECISIONS, TrainConfig
from lrface_tf.data.pipeline import AUGMENTATIONS
from lrface_tf.training import OPTIMIZERS, SCHEDULES

FLAGS = flags.FLAGS

flags.DEFINE_integer("epochs", 5, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Global batch size (split over all replicas).")
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 2e-3, "Base learning rate.")
flags.DEFINE_enum("lr_schedule", "cosine", list(SCHEDULES), "Learning-rate schedule.")
flags.DEFINE_list("lr_step_epochs", [], "Epochs at which the 'steps' schedule multiplies by 0.1.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (adamw, sgd).")
flags.DEFINE_integer("seed", 0, "Seed for weights, shuffling, subsets and augmentation.")
flags.DEFINE_enum(
    "augment", "flip_crop", list(AUGMENTATIONS), "Geometric augmentation (without --views)."
)
flags.DEFINE_bool(
    "sync_batchnorm",
    False,
    "BatchNorm statistics over the global batch under a strategy (default: per replica).",
)
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_enum(
    "precision",
    "float32",
    list(PRECISIONS),
    "Keras dtype policy of the models (mixed_float16: GPUs with a loss-scale optimizer; "
    "mixed_bfloat16: TPUs, recent GPUs and CPUs); losses and outputs stay float32.",
)
flags.DEFINE_bool(
    "deterministic_input",
    True,
    "Keep the input map's order: the same batches in every run and an exact resume. "
    "--nodeterministic_input lets slow examples be overtaken (faster input; batches vary).",
)


def config(epochs=None, verbose=2):
    try:
        steps = tuple(int(e) for e in FLAGS.lr_step_epochs)
    except ValueError:
        raise ValueError(f"--lr_step_epochs must be integers, got {FLAGS.lr_step_epochs}") from None
    return TrainConfig(
        epochs=FLAGS.epochs if epochs is None else epochs,
        batch_size=FLAGS.batch_size,
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule,
        lr_step_epochs=steps,
        weight_decay=FLAGS.weight_decay,
        seed=FLAGS.seed,
        verbose=verbose,
        sync_batchnorm=FLAGS.sync_batchnorm,
        jit_compile=FLAGS.jit_compile,
        precision=FLAGS.precision,
        deterministic_input=FLAGS.deterministic_input,
    )
