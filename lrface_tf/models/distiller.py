"""The Distiller: a frozen high-resolution teacher supervises a low-resolution student."""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

from lrface_tf.layers.class_centers import ClassCenters
from lrface_tf.losses.distribute import scale_for_replicas, unscale_for_replicas

OUTPUTS = ("embedding", "logits")
SOURCES = ("teacher", "assistant")


@dataclasses.dataclass
class DistillTerm:
    """One weighted distillation term: `weight * loss(source[output], student[output])`.

    Attributes:
      loss: a `keras.losses.Loss` called as `loss(teacher_value, student_value)`.
      weight: its weight in the total.
      output: "embedding" or "logits": which output of both models it compares.
      source: "teacher" or "assistant": who supervises (both frozen).
    """

    loss: keras.losses.Loss
    weight: float = 1.0
    output: str = "embedding"
    source: str = "teacher"

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"term output must be one of {OUTPUTS}, got {self.output!r}")
        if self.source not in SOURCES:
            raise ValueError(f"term source must be one of {SOURCES}, got {self.source!r}")


def is_multi_worker(strategy):
    """True under MultiWorkerMirroredStrategy (Keras' fit needs the workaround below)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _freeze(model):
    model.trainable = False
    return model


class Distiller(keras.Model):
    """Cross-resolution knowledge distillation as a `keras.Model` trained with `fit()`.

    The teacher (and an optional assistant) see the high-resolution view and are
    frozen: called with `training=False` under `stop_gradient`, so neither their
    weights nor their BatchNorm statistics change. The student sees the
    low-resolution view. The loss is

        task_weight * task_loss(y, student_logits) + sum_k weight_k * term_k

    and every part is logged as its own metric ("task", then each term's name).
    The student, never the Distiller, is what gets saved and exported.

    Args:
      student: model `image -> {"embedding", "logits"}` (see `build_recognizer`).
      teacher: model `image -> {"embedding", "logits"}` (frozen here); None
        when there are no terms (the student alone, e.g. a baseline or a teacher
        trained on the HR view with `student_view="hr"`).
      terms: `{name: DistillTerm}`.
      task_loss: loss on `(labels, student logits)`, e.g. `MaskedCrossEntropy()`;
        None trains on the distillation terms only.
      task_weight: its weight.
      assistant: optional second frozen supervisor on the HR view.
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

    When a term needs equal embedding sizes (`loss.needs_same_dim`) and the
    student's differs from its supervisor's, a learned linear projection
    (trainable, not exported) maps the student embedding to the supervisor's size.
    """

    def __init__(
        self,
        student,
        teacher,
        terms=None,
        task_loss=None,
        task_weight=1.0,
        assistant=None,
        student_view="lr",
        teacher_view="hr",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = _freeze(teacher) if teacher is not None else None
        self.assistant = _freeze(assistant) if assistant is not None else None
        self.terms = dict(terms or {})
        self.task_loss = task_loss
        self.task_weight = float(task_weight)
        self.student_view = student_view
        self.teacher_view = teacher_view
        if self.terms and teacher is None:
            raise ValueError("distillation terms need a teacher; pass teacher= or no terms")
        for name, term in self.terms.items():
            if term.source == "assistant" and assistant is None:
                raise ValueError(f"term {name!r} reads the assistant, but no assistant was given")
        self.projections = {}
        for name, term in self.terms.items():
            t_dim = self._supervisor(term.source).output[term.output].shape[-1]
            s_dim = student.output[term.output].shape[-1]
            if t_dim != s_dim and getattr(term.loss, "needs_same_dim", False):
                proj = layers.Dense(t_dim, use_bias=False, name=f"proj_{name}")
                proj.build((None, s_dim))
                self.projections[name] = proj
        # Class-centre terms (HORKD Eq. 6-7) share one centre state, kept in the
        # supervisor's embedding space and updated from labelled batches.
        self.class_centers = None
        center_terms = [t for t in self.terms.values() if getattr(t.loss, "needs_centers", False)]
        if center_terms:
            supervisor = self._supervisor(center_terms[0].source)
            self.class_centers = ClassCenters(student.output["logits"].shape[-1], name="centers")
            self.class_centers.build(supervisor.output["embedding"].shape)
        # Trainable loss modules (e.g. CRRCD's relation networks and queue) are
        # Layers: tracked here so their weights train with the student's.
        self.loss_modules = []
        for term in self.terms.values():
            if isinstance(term.loss, layers.Layer):
                supervisor = self._supervisor(term.source)
                term.loss.build(supervisor.output[term.output].shape,
                                student.output[term.output].shape)  # fmt: skip
                self.loss_modules.append(term.loss)
        self.trackers = {"task": keras.metrics.Mean(name="task")} if task_loss else {}
        for name in self.terms:
            self.trackers[name] = keras.metrics.Mean(name=name)
        # Every sub-model and projection is built: the Distiller is usable by
        # BackupAndRestore and checkpoints before its first step.
        self.built = True

    def _supervisor(self, source):
        """The frozen model a term reads: "teacher" or "assistant"."""
        return self.teacher if source == "teacher" else self.assistant

    # ------------------------------------------------------------------ forward
    def _student_input(self, x):
        return x[self.student_view] if isinstance(x, dict) else x

    def call(self, x, training=False):
        return self.student(self._student_input(x), training=training)

    def supervisor_outputs(self, x):
        """Frozen teacher / assistant outputs for a batch (from the cache when present)."""
        out = {}
        if isinstance(x, dict) and "teacher_embedding" in x:
            out["teacher"] = {k: x[f"teacher_{k}"] for k in OUTPUTS if f"teacher_{k}" in x}
        else:
            out["teacher"] = self.teacher(x[self.teacher_view], training=False)
        if self.assistant is not None:
            out["assistant"] = self.assistant(x[self.teacher_view], training=False)
        return {s: {k: ops.stop_gradient(v) for k, v in o.items()} for s, o in out.items()}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.zeros(())
        if self.task_loss is not None and y is not None:
            task = self.task_loss(y, y_pred["logits"], sample_weight=sample_weight)
            self.trackers["task"].update_state(unscale_for_replicas(task))
            total = total + self.task_weight * task
        if self.terms:
            sup = self.supervisor_outputs(x)
            centers = None
            for name, term in self.terms.items():
                student_value = y_pred[term.output]
                if name in self.projections:
                    student_value = self.projections[name](student_value)
                target = sup[term.source][term.output]
                if getattr(term.loss, "needs_centers", False):
                    if centers is None:  # one centre update per step, shared by the terms
                        centers = self._class_centers(target, y, training, name)
                    target = {"embedding": target, "centers": centers[0], "valid": centers[1]}
                if isinstance(term.loss, layers.Layer):
                    labels = (
                        y if y is not None else ops.zeros(ops.shape(student_value)[:1], "int32")
                    )
                    per_anchor = term.loss(target, student_value, labels, training=training)
                    # A hand-made mean: divide by the replica count like Keras' Loss does.
                    value = scale_for_replicas(ops.mean(per_anchor))
                else:
                    value = term.loss(target, student_value)
                self.trackers[name].update_state(unscale_for_replicas(value))
                total = total + term.weight * value
        return total

    def _class_centers(self, embeddings, y, training, term_name):
        """Update (training) or read the class centres: `(centers (C, D), valid (C,))`."""
        if y is None:
            raise ValueError(f"term {term_name!r} needs labels to compute class centres")
        if training:
            return self.class_centers(embeddings, y)
        valid = ops.cast(self.class_centers.counts > 0, "float32")
        return ops.convert_to_tensor(self.class_centers.centers), valid

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
