"""The one interface every distillation term shares.

A term compares what a frozen supervisor (teacher or assistant) computed with
what the student computed, and returns one value per anchor. The Distiller
calls every term the same way and never asks what kind of term it holds:

    term.build(teacher_shape, student_shape)
    values = term(teacher, student, labels, training=training)   # (A,)

A term declares what it needs as class attributes, and owns what it needs:

- `needs_projection`: the student value must live in the supervisor's space
  (e.g. a point-wise feature loss). When the sizes differ, `build` adds a
  learned linear projection (trained with the student, never exported).
- `needs_labels`: the term reads `labels` (class centres, supervised negatives);
  called without labels it stops with an error naming the term.
- state (class centres, a negative queue, a normalising constant) is created in
  `build` as non-trainable weights of the term, so checkpoints and
  `BackupAndRestore` save and restore it with everything else.

Terms compute in float32 whatever the global dtype policy (mixed precision):
inputs are cast on entry. Unlike `keras.distillation.DistillationLoss` (one
input for teacher and student, no labels, no trainable state), a term here sees
the teacher's high-resolution outputs and the student's low-resolution ones,
the labels, and may train or keep state.

A plain `keras.losses.Loss` works as a term too: `as_term` wraps it in
`LossTerm`, whose per-anchor values are the loss's per-example values.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="lrface_tf")
class DistillationLoss(layers.Layer):
    """Base class of the distillation terms (see the module docstring).

    Subclasses implement `compute(teacher, student, labels, training)` on
    float32 tensors (the teacher's under `stop_gradient`, the student's already
    projected when `needs_projection`) and return `(A,)` per-anchor values.
    Relational terms gather the batch across replicas and return values over
    the global batch; the Distiller averages them and scales for the replica
    count like Keras does for its own losses.

    Call arguments:
      teacher: `(B, Dt)` supervisor values (embeddings or logits).
      student: `(B, Ds)` student values.
      labels: int `(B,)` or None; -1 marks an unlabelled example.
      training: True inside `fit()`: stateful terms update their state.

    Returns:
      `(A,)` float32 per-anchor values.
    """

    needs_projection = False
    needs_labels = False

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.projection = None

    def build(self, teacher_shape, student_shape=None):
        """Create the projection (when needed and the sizes differ) and any state."""
        student_shape = teacher_shape if student_shape is None else student_shape
        t_dim, s_dim = teacher_shape[-1], student_shape[-1]
        if self.needs_projection and t_dim != s_dim and self.projection is None:
            self.projection = layers.Dense(
                t_dim, use_bias=False, dtype="float32", name=f"{self.name}_projection"
            )
            self.projection.build((None, s_dim))
        self.built = True

    def call(self, teacher, student, labels=None, training=False):
        if labels is None and self.needs_labels:
            raise ValueError(
                f"distillation term {self.name!r} needs labels; give the data labels "
                "(or -1 for unlabelled examples)"
            )
        teacher = ops.stop_gradient(ops.cast(teacher, "float32"))
        student = ops.cast(student, "float32")
        if self.projection is not None:
            student = self.projection(student)
        if labels is not None:
            labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return self.compute(teacher, student, labels, training)

    def compute(self, teacher, student, labels, training):
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")


@keras.saving.register_keras_serializable(package="lrface_tf")
class LossTerm(DistillationLoss):
    """A plain `keras.losses.Loss` used as a distillation term.

    Its per-anchor values are the loss's per-example values `loss.call(teacher,
    student)`; the loss's own reduction is not used (the Distiller reduces).

    Args:
      loss: a `keras.losses.Loss` called as `loss(teacher, student)`.
      project: learn a linear map of the student value to the supervisor's size
        when the sizes differ.
    """

    def __init__(self, loss, project=False, **kwargs):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        kwargs.setdefault("name", getattr(loss, "name", None))
        super().__init__(**kwargs)
        self.loss = loss
        self.project = bool(project)
        self.needs_projection = self.project

    def compute(self, teacher, student, labels, training):
        return ops.reshape(self.loss.call(teacher, student), (-1,))

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "project": self.project,
        }


def as_term(loss):
    """A `DistillationLoss` as it is; a `keras.losses.Loss` wrapped in `LossTerm`."""
    if isinstance(loss, DistillationLoss):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return LossTerm(loss)
    raise TypeError(
        f"a distillation term must be a DistillationLoss or a keras.losses.Loss, got "
        f"{type(loss).__name__}"
    )
