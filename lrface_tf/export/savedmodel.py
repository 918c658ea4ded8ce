"""Student export: SavedModel (serving) and the `.keras` file."""

from __future__ import annotations

from lrface_tf.export.atomic import atomic_path


def export_savedmodel(model, path):
    """`model.export(path)` as a TF SavedModel (serving_default signature), atomically."""
    with atomic_path(path) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
    return path


def save_keras(model, path):
    """Save a `.keras` file atomically."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"a Keras model file must end in .keras, got {path}")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path
