"""The Distiller: a frozen high-resolution supervisor teaches a low-resolution student."""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from lrface_tf.losses.base import as_term
from lrface_tf.losses.distribute import scale_for_replicas, unscale_for_replicas
from lrface_tf.validation import check_non_negative

OUTPUTS = ("embedding", "logits")


@dataclasses.dataclass
class DistillTerm:
    """One weighted distillation term: `weight * mean(loss(teacher[output], student[output]))`.

    Attributes:
      loss: a `lrface_tf.losses.DistillationLoss`, or a plain `keras.losses.Loss`
        (wrapped in `LossTerm`: called as `loss(teacher_value, student_value)`).
      weight: its weight in the total (>= 0).
      output: "embedding" or "logits": which output of both models it compares.
    """

    loss: object
    weight: float = 1.0
    output: str = "embedding"

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"term output must be one of {OUTPUTS}, got {self.output!r}")
        self.weight = check_non_negative("term weight", self.weight)
        self.loss = as_term(self.loss)


def is_multi_worker(strategy):
    """True under MultiWorkerMirroredStrategy (Keras' fit needs the workaround below)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _freeze(model):
    model.trainable = False
    return model


def _outputs(value):
    """A model's outputs as a dict: an embedding-only model returns a bare tensor."""
    return value if isinstance(value, dict) else {"embedding": value}


class Distiller(keras.Model):
    """Cross-resolution knowledge distillation as a `keras.Model` trained with `fit()`.

    The teacher (the supervisor: a pretrained model, or a finished assistant of a
    multi-stage run) sees the high-resolution view and is frozen: called with
    `training=False` under `stop_gradient`, so neither its weights nor its
    BatchNorm statistics change. The student sees the low-resolution view. The
    loss is

        task_weight * task_loss(y, student_logits) + sum_k weight_k * term_k

    and every part is logged as its own metric ("task", then each term's name).
    Every term is a `lrface_tf.losses.DistillationLoss`, built here from the
    teacher's and the student's output shapes and called the same way; terms
    own their projections and state (class centres, a queue), which train and
    checkpoint with the student. The student, never the Distiller, is what
    gets saved and exported.

    Keras' own `keras.distillation.Distiller` feeds one input to both models and
    its terms see no labels and hold no weights; this one exists for HR/LR
    views, labelled terms (class centres, supervised negatives) and trainable,
    stateful terms (CRRCD).

    Args:
      student: model `image -> {"embedding", "logits"}` (see `build_recognizer`).
      teacher: model `image -> {"embedding"[, "logits"]}` (frozen here); None
        when there are no terms (the student alone, e.g. a baseline or a teacher
        trained on the HR view with `student_view="hr"`).
      terms: `{name: DistillTerm}`.
      task_loss: loss on `(labels, student logits)`, e.g. `MaskedCrossEntropy()`;
        None trains on the distillation terms only.
      task_weight: its weight.
      student_view / teacher_view: keys of the batch dict each model reads.

    Call arguments:
      x: the training batch `{"hr": (B, H, W, C), "lr": (B, h, w, C)}`; a cache
        may add "teacher_embedding" / "teacher_logits", which replace the
        teacher's forward pass. A bare tensor is taken as the student's input.

    Returns:
      the student's outputs `{"embedding": (B, D), "logits": (B, C)}`.

    Example:
      >>> d = Distiller(student, teacher, {"kd": DistillTerm(KDLoss(4.0), 0.9, "logits")},
      ...               task_loss=MaskedCrossEntropy(), task_weight=0.1)
      >>> d.compile(optimizer="adam")
      >>> d.fit(paired_dataset(x, y, spec=spec, batch_size=128), epochs=5)
    """

    def __init__(
        self,
        student,
        teacher,
        terms=None,
        task_loss=None,
        task_weight=1.0,
        student_view="lr",
        teacher_view="hr",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = _freeze(teacher) if teacher is not None else None
        self.terms = {name: _as_distill_term(t) for name, t in (terms or {}).items()}
        self.task_loss = task_loss
        self.task_weight = check_non_negative("task_weight", task_weight)
        self.student_view = student_view
        self.teacher_view = teacher_view
        if self.terms and teacher is None:
            raise ValueError("distillation terms need a teacher; pass teacher= or no terms")
        if task_loss is None and not self.terms:
            raise ValueError("nothing to train: give a task loss, distillation terms, or both")
        teacher_out = _outputs(teacher.output) if teacher is not None else {}
        student_out = _outputs(student.output)
        for name, term in self.terms.items():
            for who, out in (("teacher", teacher_out), ("student", student_out)):
                if term.output not in out:
                    hint = (
                        "; give an embedding-only teacher logits with --teacher_head=class_mean "
                        "(lrface_tf.teachers.with_class_mean_head)"
                        if who == "teacher"
                        else ""
                    )
                    raise ValueError(
                        f"term {name!r} compares {term.output}, but the {who} has only "
                        f"{', '.join(out)}{hint}"
                    )
            # Terms own their projections and state: built once, tracked here, so
            # they train and checkpoint with the student.
            term.loss.build(teacher_out[term.output].shape, student_out[term.output].shape)
        self.term_losses = [term.loss for term in self.terms.values()]
        self.trackers = {"task": keras.metrics.Mean(name="task")} if task_loss else {}
        for name in self.terms:
            self.trackers[name] = keras.metrics.Mean(name=name)
        # Every sub-model and term is built: the Distiller is usable by
        # BackupAndRestore and checkpoints before its first step.
        self.built = True

    # ------------------------------------------------------------------ forward
    def _student_input(self, x):
        return x[self.student_view] if isinstance(x, dict) else x

    def call(self, x, training=False):
        return self.student(self._student_input(x), training=training)

    def teacher_outputs(self, x):
        """Frozen teacher outputs for a batch (from the cache when the batch carries one)."""
        if isinstance(x, dict) and "teacher_embedding" in x:
            out = {k: x[f"teacher_{k}"] for k in OUTPUTS if f"teacher_{k}" in x}
        else:
            out = _outputs(self.teacher(x[self.teacher_view], training=False))
        return {k: ops.stop_gradient(ops.cast(v, "float32")) for k, v in out.items()}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.zeros((), "float32")
        if self.task_loss is not None and y is not None:
            logits = ops.cast(y_pred["logits"], "float32")
            task = self.task_loss(y, logits, sample_weight=sample_weight)
            self.trackers["task"].update_state(unscale_for_replicas(task))
            total = total + self.task_weight * task
        if self.terms:
            teacher = self.teacher_outputs(x)
            for name, term in self.terms.items():
                per_anchor = term.loss(
                    teacher[term.output], y_pred[term.output], y, training=training
                )
                # A hand-made mean: divide by the replica count like Keras' Loss does.
                value = scale_for_replicas(ops.mean(per_anchor))
                self.trackers[name].update_state(unscale_for_replicas(value))
                total = total + term.weight * value
        return total

    # ------------------------------------------- multi-worker (keras-team/keras#20585)
    # Keras 3.15 `fit()` under MultiWorkerMirroredStrategy fails twice: it peeks at a
    # PerReplica batch and `strategy.reduce`s it (impossible for dict inputs), and it
    # reduces each scalar log with `reduce("MEAN", v, axis=0)`, which needs a batch
    # axis. These two overrides are the whole workaround: build from one local
    # replica's batch (same shapes), and give logs a length-1 axis under that
    # strategy only. tests/test_multi_worker.py checks 2 workers == 1 process.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or not is_multi_worker(self.distribute_strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        import tensorflow as tf

        if iterator is not None:
            local = self.distribute_strategy.experimental_local_results
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(it),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def train_step(self, data):
        return self._per_replica_logs(super().train_step(data))

    def test_step(self, data):
        return self._per_replica_logs(super().test_step(data))

    def _per_replica_logs(self, logs):
        if not is_multi_worker(self.distribute_strategy):
            return logs
        return {k: ops.reshape(v, (1,)) for k, v in logs.items()}

    @property
    def metrics(self):
        seen, out = set(), []
        for m in [*super().metrics, *self.trackers.values()]:
            if id(m) not in seen:
                seen.add(id(m))
                out.append(m)
        return out

    def get_config(self):
        raise NotImplementedError(
            "a Distiller is not saved whole: save or export `distiller.student` "
            "(lrface_tf.export) and checkpoint training with BackupAndRestore"
        )


def _as_distill_term(term):
    if isinstance(term, DistillTerm):
        return term
    raise TypeError(
        f"terms must map names to DistillTerm(loss, weight, output), got {type(term).__name__}"
    )
