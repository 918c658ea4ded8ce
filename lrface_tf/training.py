"""Training plumbing shared by the apps and user code: strategies, optimizers, fit()."""

from __future__ import annotations

import contextlib
import os
import time

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "steps")


def make_strategy(name="default", devices=None):
    """A `tf.distribute` strategy by name.

    Args:
      name: "default" (no distribution), "mirrored" (all local GPUs, or the
        given `devices`), "multi_worker" (configured by TF_CONFIG).
      devices: optional device list for "mirrored", e.g. ["/cpu:0", "/cpu:1"].
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy multi_worker needs TF_CONFIG; see README 'Beyond one machine'"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


def is_chief(strategy):
    """True unless this process is a non-chief worker of a multi-worker cluster.

    The chief is the "chief" task, or worker 0 when the cluster has no chief.
    Only the chief writes a run's outputs; other workers write theirs to
    `<output_dir>/worker_<i>` (see `apps.flag_groups.output.folder`).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_index(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def check_batch_divides(batch_size, strategy):
    """The global batch must split evenly across replicas."""
    n = strategy.num_replicas_in_sync
    if batch_size % n:
        raise ValueError(
            f"batch_size {batch_size} does not divide across {n} replicas; use a multiple of {n}"
        )


def learning_rate_schedule(
    base, schedule="cosine", total_steps=1, steps_per_epoch=1, boundaries_epochs=(), decay=0.1
):
    """A learning rate (float or `keras.optimizers.schedules`) by name.

    "steps" multiplies by `decay` at each epoch in `boundaries_epochs` (CRRCD's
    x0.1 at epochs 21, 28, 32).
    """
    if schedule == "constant":
        return float(base)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(float(base), max(1, int(total_steps)))
    if schedule == "steps":
        bounds = [int(e) * int(steps_per_epoch) for e in boundaries_epochs]
        values = [float(base) * decay**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    raise ValueError(f"unknown lr schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")


def make_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9):
    """Adam, AdamW or SGD (momentum); weight decay in the optimizer, not as regularizers
    (Keras does not scale regularization losses by the replica count)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate, momentum=momentum, weight_decay=weight_decay or None
        )
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss term and say which term, step and batch.

    Keras' TerminateOnNaN only sees the total; this names the culprit and
    raises, so a run never ends with a silently NaN model.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not _finite(v)}
        if bad:
            self.model.stop_training = True
            step = int(self.model.optimizer.iterations.numpy())
            raise FloatingPointError(
                f"non-finite loss at epoch {self.epoch + 1}, batch {batch}, step {step}: "
                + ", ".join(f"{k}={v}" for k, v in bad.items())
                + "; lower the learning rate or check the input data"
            )


def _finite(v):
    try:
        import math

        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return True


class EpochTimer(keras.callbacks.Callback):
    """Records wall seconds per epoch into the logs as `epoch_seconds`."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._t


BACKUP_DIR = "backup"  # BackupAndRestore's folder inside a run's output_dir


def standard_callbacks(output_dir=None, tensorboard=True, backup=True):
    """NaN guard, epoch timer, and (with an output folder) TensorBoard + BackupAndRestore."""
    cbs = [NaNGuard(), EpochTimer()]
    if output_dir:
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")))
        if backup:
            cbs.append(keras.callbacks.BackupAndRestore(os.path.join(output_dir, BACKUP_DIR)))
    return cbs


def restored_step(model, output_dir):
    """The global step a resumed run starts at: 0, or the step of the backup.

    Loads `output_dir/backup` (what `BackupAndRestore` restores again in
    `on_train_begin`) *before* the dataset exists, so a step-indexed stream is
    built from a plain int. Reading the optimizer's `iterations` lazily inside
    tf.data raced with the restore: `fit()` peeks at the iterator before the
    callbacks run, and some resumed runs started from step 0.
    """
    # The file BackupAndRestore writes inside its folder.
    path = os.path.join(output_dir, BACKUP_DIR, "latest.weights.h5") if output_dir else None
    if not path or not os.path.exists(path):
        return 0
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return int(model.optimizer.iterations.numpy())


@contextlib.contextmanager
def precision_policy(name):
    """Build models under the Keras dtype policy `name`; the previous policy is restored on exit.

    "mixed_float16" / "mixed_bfloat16" compute layers in half precision with
    float32 weights; "float32" is the default. Models keep the policy they were
    built under, so build them inside. Losses and metrics compute in float32
    whatever the policy (every distillation term and task loss casts its
    inputs; the heads and the embedding layer output float32).

    Example:
      >>> with precision_policy("mixed_bfloat16"):
      ...     student = build_recognizer("resnet18", 16, 100)
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compile_and_fit(model, dataset, train, *, steps_per_epoch, output_dir=None, callbacks=()):
    """Compile `model` (a Distiller) as a `TrainConfig` says and `fit()` it.

    `dataset` may be a callable `start_step -> dataset`: it is called after
    compiling with the step restored from `output_dir/backup` (0 without one),
    so a step-indexed stream (`paired_dataset(..., start_step=...)`) resumes
    exactly where a run killed and restored by `BackupAndRestore` left off.
    Under the "mixed_float16" policy the optimizer scales the loss
    (`keras.optimizers.LossScaleOptimizer`); `train.jit_compile` compiles the
    train step with XLA.

    Returns:
      (history dict of float lists, wall seconds of `fit`).
    """
    lr = learning_rate_schedule(
        train.learning_rate,
        train.lr_schedule,
        total_steps=train.epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        boundaries_epochs=train.lr_step_epochs,
    )
    optimizer = make_optimizer(train.optimizer, lr, train.weight_decay)
    if keras.config.dtype_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=bool(train.jit_compile))
    if callable(dataset):
        dataset = dataset(restored_step(model, output_dir))
    t0 = time.perf_counter()
    hist = model.fit(
        dataset,
        epochs=train.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=[*standard_callbacks(output_dir), *callbacks],
        verbose=train.verbose,
        shuffle=False,
    )
    seconds = time.perf_counter() - t0
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}, seconds
