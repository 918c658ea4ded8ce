"""Stages of a multi-stage run (HORKD's teacher -> assistant -> student): each in its own
folder, resumed when interrupted, skipped when done.

A stage is done when its model file exists: the file is written last and
atomically, after the stage's record, so a stage killed at any point is either
done or resumable from its `backup/` (Keras `BackupAndRestore`), never half done.
The record keeps a fingerprint of the stage's configuration: a finished stage is
reused only by a run with the same one, and refused, naming its folder, otherwise.
"""

from __future__ import annotations

import os


def run_stage(folder, filename, train, log=print, key=None):
    """Train a stage, or reuse it when done.

    Args:
      folder: the stage's folder (its backup, TensorBoard logs and record).
      filename: the model file that marks the stage as done (e.g. "assistant.keras").
      train: `folder -> (model, record dict)`; trains (resuming from
        `folder/backup` when there is one) and returns the model.
      key: a JSON-able dict of what shapes the stage (its configuration).

    Returns:
      (model, record); a reused stage's record is the one written when it finished.
    """
    import json

    from lrface_tf.experiment import load_keras_file
    from lrface_tf.export import save_keras, write_json

    fingerprint = None
    if key is not None:
        import hashlib

        text = json.dumps(key, sort_keys=True, default=str)
        fingerprint = hashlib.sha256(text.encode()).hexdigest()
    path = os.path.join(folder, filename)
    record_path = os.path.join(folder, "metrics.json")
    if os.path.exists(path):
        record = {}
        if os.path.exists(record_path):
            with open(record_path) as f:
                record = json.load(f)
        theirs = record.get("fingerprint")
        if fingerprint is not None and theirs is not None and theirs != fingerprint:
            raise ValueError(
                f"{folder} holds a finished stage of another configuration; delete {folder} "
                "to train it again, or pass another --output_dir"
            )
        log(f"stage {os.path.basename(folder)} already done: reusing {path}")
        return load_keras_file(path, "stage model"), {**record, "reused": path}
    model, record = train(folder)
    if fingerprint is not None:
        record = {**record, "fingerprint": fingerprint}
    write_json(record_path, record)
    save_keras(model, path)  # last: its presence marks the stage as done
    return model, record
