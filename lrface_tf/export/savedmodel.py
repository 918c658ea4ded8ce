"""Student export: SavedModel (serving) and the `.keras` file."""

from __future__ import annotations

from lrface_tf.export.atomic import atomic_path


def export_savedmodel(model, path):
    """`model.export(path)` as a TF SavedModel (serving_default signature), atomically.

    A model trained under mixed precision is exported as its float32 copy
    (`lrface_tf.models.float32_copy`): float32 from input to outputs.
    """
    from lrface_tf.models.recognizer import float32_copy

    with atomic_path(path) as tmp:
        float32_copy(model).export(tmp, format="tf_saved_model", verbose=False)
    return path


def save_keras(model, path):
    """Save a `.keras` file atomically.

    A model trained under mixed precision is saved as its float32 copy
    (`lrface_tf.models.float32_copy`), so the file runs and exports the same on
    any device whatever the policy it was trained under.
    """
    from lrface_tf.models.recognizer import float32_copy

    if not str(path).endswith(".keras"):
        raise ValueError(f"a Keras model file must end in .keras, got {path}")
    with atomic_path(path) as tmp:
        float32_copy(model).save(tmp)
    return path
