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


def make_strategy(name="default", devices=None, worker_timeout=600):
    """A `tf.distribute` strategy by name.

    Args:
      name: "default" (no distribution), "mirrored" (all local GPUs, or the
        given `devices`), "multi_worker" (configured by TF_CONFIG).
      devices: optional device list for "mirrored", e.g. ["/cpu:0", "/cpu:1"].
      worker_timeout: multi_worker: seconds to wait for every worker of TF_CONFIG
        to join; past it (or on SIGTERM / SIGINT while waiting) the process
        stops with one line instead of waiting forever.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        cfg = check_tf_config()
        with bounded_wait(worker_timeout, f"the other workers of TF_CONFIG {cfg['cluster']}"):
            return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


_WATCHDOG = """
import os, signal, sys, time
pid, timeout, what = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + timeout
while time.monotonic() < end:
    time.sleep(0.5)
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(0)
print(f"error: waited {timeout:.0f} s for {what}, which never all joined; start every worker "
      "(same command, its own task index) or raise --worker_timeout", file=sys.stderr, flush=True)
os.kill(pid, signal.SIGKILL)  # blocked in C++, the process may not act on SIGTERM
"""


@contextlib.contextmanager
def bounded_wait(timeout, what):
    """Run a call that may block forever (a multi-worker cluster assembling) at most
    `timeout` seconds: past it a watchdog process prints one line and ends this
    one (SIGKILL, exit status 137; nothing has been written yet).

    TensorFlow blocks in C++ there, holding the interpreter, so no Python thread
    or signal handler runs until it returns; the watchdog is a separate process.
    SIGTERM gets its default action while waiting (the process ends at once).
    """
    import signal
    import subprocess
    import sys

    # A C-level handler some native library installs would swallow SIGTERM while
    # TensorFlow blocks: the default action ends the process at once instead.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), what]
    )
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


def check_tf_config():
    """TF_CONFIG must be JSON naming a cluster with workers and this task's type and index."""
    import json

    raw = os.environ.get("TF_CONFIG")
    hint = "see README 'Beyond one machine'"
    if not raw:
        raise ValueError(f"strategy multi_worker needs the TF_CONFIG environment variable; {hint}")
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"TF_CONFIG is not valid ({type(e).__name__}: {e}); it must be JSON like "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            f'"index": 0}}; {hint}'
        ) from None
    if kind == "worker" and not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task index {index} is not one of the {len(workers)} workers")
    return cfg


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


# Normalisation scales and offsets, biases and PReLU slopes ("alpha") are not decayed:
# under batch norm, shrinking a scale only changes the layer's output scale, and pulling a
# slope towards 0 turns PReLU into ReLU; decay there is a bias, not a regulariser.
NO_DECAY = ("gamma", "beta", "bias", "alpha")


def make_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9):
    """Adam, AdamW or SGD (momentum); weight decay in the optimizer, not as regularizers
    (Keras does not scale regularization losses by the replica count), and only on kernels
    and embeddings (not on the variables named in NO_DECAY)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=momentum, weight_decay=weight_decay or None
        )
    else:
        raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


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


RUN_STATE = "run_state.json"  # inside BACKUP_DIR: the configuration and the history so far


class BackupMismatch(ValueError):
    """A backup/ folder that another configuration wrote, or that cannot be read."""


class RunInterrupted(RuntimeError):
    """SIGTERM (or SIGINT) stopped training; the backup of the last finished epoch is kept."""


def standard_callbacks(output_dir=None, tensorboard=True, backup=True, fingerprint=None):
    """NaN guard, epoch timer, and (with an output folder) TensorBoard, the run state
    (configuration fingerprint and history, for resume checks) and BackupAndRestore."""
    cbs = [NaNGuard(), EpochTimer()]
    if output_dir:
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")))
        if backup:
            # The run state is written before the weights, so a backup never holds weights
            # of an epoch its history does not have (see `restored_step`).
            cbs.append(RunState(os.path.join(output_dir, BACKUP_DIR), fingerprint))
            cbs.append(keras.callbacks.BackupAndRestore(os.path.join(output_dir, BACKUP_DIR)))
    return cbs


class RunState(keras.callbacks.Callback):
    """Writes `backup/run_state.json` at every epoch end: the run's configuration
    fingerprint and every epoch's logs so far (with the history of earlier, resumed
    parts), so a resumed run can be checked and can report its whole history."""

    def __init__(self, folder, fingerprint=None, earlier=None):
        super().__init__()
        self.path = os.path.join(folder, RUN_STATE)
        self.fingerprint = fingerprint
        self.history = {k: list(v) for k, v in (earlier or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        from lrface_tf.export.atomic import write_json

        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        state = {"fingerprint": self.fingerprint, "history": self.history, "epochs": epoch + 1}
        write_json(self.path, state)


def _fingerprint(config):
    import hashlib
    import json

    if config is None:
        return None
    text = json.dumps(config, sort_keys=True, default=str)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "config": json.loads(text)}


def _differences(a, b, prefix=""):
    """Keys whose values differ between two nested dicts (for the mismatch message)."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} -> {y!r}")
    return out


def restored_step(model, output_dir, config=None, log=print, steps_per_epoch=None):
    """The global step a resumed run starts at (0 without a backup), and the history so far.

    Loads `output_dir/backup` (what `BackupAndRestore` restores again in
    `on_train_begin`) *before* the dataset exists, so a step-indexed stream is
    built from a plain int. Reading the optimizer's `iterations` lazily inside
    tf.data raced with the restore: `fit()` peeks at the iterator before the
    callbacks run, and some resumed runs started from step 0.

    With `config` (a JSON-able dict of everything that shapes the training
    stream and the model), the backup must have been written by the same
    configuration; a mismatched, unreadable or truncated backup stops with
    `BackupMismatch` naming the folder and how to start fresh.

    Returns:
      (step, history dict of the epochs already done).
    """
    if not output_dir:
        return 0, {}
    folder = os.path.join(output_dir, BACKUP_DIR)
    path = os.path.join(folder, "latest.weights.h5")  # the file BackupAndRestore writes
    if not os.path.exists(path):
        return 0, {}
    fresh = f"delete {folder} to start afresh, or pass another --output_dir"
    state = {}
    state_path = os.path.join(folder, RUN_STATE)
    if os.path.exists(state_path):
        import json

        try:
            with open(state_path) as f:
                state = json.load(f)
        except (OSError, ValueError) as e:
            raise BackupMismatch(f"{state_path} is unreadable ({e}); {fresh}") from None
    mine, theirs = _fingerprint(config), state.get("fingerprint")
    if mine is not None and theirs is not None and mine["sha256"] != theirs["sha256"]:
        diff = "; ".join(_differences(theirs["config"], mine["config"])[:4])
        raise BackupMismatch(
            f"{folder} was written by another configuration ({diff}); rerun with the "
            f"original flags to resume, or {fresh}"
        )
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as e:  # h5py, Keras and TF raise many kinds for a bad file
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise BackupMismatch(f"{path} cannot be restored ({detail}); {fresh}") from None
    epochs = _backup_epoch(folder)
    # Backups are written at epoch ends: the step is epochs x steps. (The optimizer's
    # `iterations` is not: a loss-scaled optimizer does not count the steps it skips.)
    step = epochs * steps_per_epoch if steps_per_epoch else int(model.optimizer.iterations.numpy())
    # The history written before a kill may hold one epoch the weights do not: cut it.
    history = {k: v[:epochs] for k, v in state.get("history", {}).items()}
    log(f"resuming from step {step} ({epochs} epochs done) in {folder}")
    return step, history


def _backup_epoch(folder):
    """The epochs BackupAndRestore's backup has finished (its training_metadata.json)."""
    import json

    try:
        with open(os.path.join(folder, "training_metadata.json")) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        raise BackupMismatch(
            f"{folder}/training_metadata.json is missing or unreadable; delete {folder} to "
            "start afresh, or pass another --output_dir"
        ) from None


class _StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM / SIGINT into `RunInterrupted` at the end of the running batch.

    Raising (instead of `stop_training`) skips `on_train_end`, so BackupAndRestore
    keeps the backup of the last finished epoch: rerunning the command resumes.
    """

    def __init__(self):
        super().__init__()
        self.signal = None

    def handler(self, signum, frame):
        self.signal = signum

    def on_train_batch_end(self, batch, logs=None):
        if self.signal is not None:
            import signal

            name = signal.Signals(self.signal).name
            raise RunInterrupted(
                f"stopped by {name}; the backup of the last finished epoch is kept: rerun the "
                "same command to resume"
            )


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


def compile_and_fit(
    model, dataset, train, *, steps_per_epoch, output_dir=None, callbacks=(), config=None, log=print
):
    """Compile `model` (a Distiller) as a `TrainConfig` says and `fit()` it.

    `dataset` may be a callable `start_step -> dataset`: it is called after
    compiling with the step restored from `output_dir/backup` (0 without one),
    so a step-indexed stream (`paired_dataset(..., start_step=...)`) resumes
    exactly where a run killed and restored by `BackupAndRestore` left off.
    `config` (a JSON-able dict of what shapes the stream and the model) is
    fingerprinted into the backup: a rerun with other settings is refused
    instead of resumed (`restored_step`). SIGTERM / SIGINT stop the run after
    the running batch with `RunInterrupted`, the backup kept.
    Under the "mixed_float16" policy the optimizer scales the loss
    (`keras.optimizers.LossScaleOptimizer`); `train.jit_compile` compiles the
    train step with XLA.

    Returns:
      (history dict of float lists, wall seconds of training): both cover the
      whole run, earlier parts of a resumed run included.
    """
    import signal
    import threading

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
    step, earlier = restored_step(model, output_dir, config, log, steps_per_epoch)
    if callable(dataset):
        dataset = dataset(step)
    fingerprint = _fingerprint(config)
    cbs = standard_callbacks(output_dir, fingerprint=fingerprint)
    for cb in cbs:
        if isinstance(cb, RunState):
            cb.history = {k: list(v) for k, v in earlier.items()}
    stop = _StopOnSignal()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop.handler)
    t0 = time.perf_counter()
    try:
        hist = model.fit(
            dataset,
            epochs=train.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=[*cbs, stop, *callbacks],
            verbose=train.verbose,
            shuffle=False,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    history = {
        k: list(earlier.get(k, [])) + [float(v) for v in vs] for k, vs in hist.history.items()
    }
    seconds = sum(history.get("epoch_seconds", [])) or time.perf_counter() - t0
    return history, seconds
