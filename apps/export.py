"""Export a trained student: SavedModel, TFLite (float32 / dynamic-range / int8).

    python -m apps.export --model=saved_models/distill_kd/student.keras \
        --output_dir=saved_models/export_kd

Each TFLite file is checked against the Keras model on real test images
(max abs error, top-1 agreement), run with LiteRT; the report is parity.json.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from apps import common
from apps.common import FLAGS

flags.DEFINE_string("model", None, "Student model (.keras) to export.")
flags.DEFINE_list("quantizations", ["float32", "dynamic_range", "int8"], "TFLite variants.")
flags.DEFINE_integer("parity_images", 500, "Real test images for the parity check.")
flags.DEFINE_integer("representative_images", 200, "Images for int8 calibration (from train).")


def _images(x, n, size, offset=0):
    import tensorflow as tf

    from lrface_tf.data.degrade import degrade

    imgs = tf.cast(x[offset : offset + n], tf.float32) / 255.0
    if imgs.shape[1] != size:
        imgs = degrade(imgs, size, FLAGS.degrade_kernel)
    return np.asarray(imgs)


def main(argv):
    import keras

    import lrface_tf.layers  # noqa: F401
    from lrface_tf.export import (
        QUANTIZATIONS,
        TFLiteModel,
        convert_tflite,
        export_savedmodel,
        parity_report,
        write_json,
    )

    if not FLAGS.model or not os.path.exists(FLAGS.model):
        raise FileNotFoundError(f"--model {FLAGS.model} does not exist; pass a student .keras")
    bad = [q for q in FLAGS.quantizations if q not in QUANTIZATIONS]
    if bad:
        raise ValueError(f"unknown quantizations {bad}: use {', '.join(QUANTIZATIONS)}")
    model = keras.saving.load_model(FLAGS.model, compile=False)
    size = model.input_shape[1]
    data = common.load_data()
    if data["test"] is None:
        raise ValueError("export parity needs --data with a test split")
    x_train, x_test = data["train"][0], data["test"][0]
    out = common.output_dir("export")
    sm = export_savedmodel(model, os.path.join(out, "saved_model"))
    test = _images(x_test, FLAGS.parity_images, size)
    reps = _images(x_train, FLAGS.representative_images, size)
    report = {"model": FLAGS.model, "input_size": size, "tflite": {}}
    for q in FLAGS.quantizations:
        path = convert_tflite(model, os.path.join(out, f"student_{q}.tflite"), q, reps, sm)
        r = parity_report(model, TFLiteModel(path), test)
        r["bytes"] = os.path.getsize(path)
        report["tflite"][q] = r
        print(f"{q}: {r}")
    write_json(os.path.join(out, "parity.json"), report)


if __name__ == "__main__":
    common.run(main)
