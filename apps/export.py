"""Export a trained student: SavedModel and TFLite (float32 / dynamic-range / int8), with parity.

(int8_float_head: int8 up to the global pooling, the embedding head in float; see
`lrface_tf.export.head_ops` for when full int8 loses the embedding.)

    python -m apps.export --model=saved_models/fmnist/kd/student.keras \
        --output_dir=saved_models/fmnist_kd_export
    python -m apps.export --model=saved_models/lfw/best/student.keras \
        --data=identity_folder --data_dir=saved_models/lfw_aligned --teacher_size=112 \
        --output_dir=saved_models/lfw_best_export --latency_calls=300

Each TFLite file is checked against the Keras model on real images (max abs
error, top-1 agreement or embedding cosine), run with LiteRT; with
--latency_calls the one-thread milliseconds per image are measured too. Face
students get their images from --data=identity_folder (decoded at
--teacher_size and area-resized to the model's input; with --student_size below
the input size, degraded to it first with --degrade_kernel and brought back).
The export is all or nothing: it is written to a temporary sibling folder and
moved into --output_dir only when complete, so a failed or killed export leaves
the previous export (or nothing), never a mix.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from apps import runner
from apps.flag_groups import data, output, resolution

FLAGS = flags.FLAGS

flags.DEFINE_string("model", None, "Student model (.keras) to export.")
flags.DEFINE_list(
    "quantizations",
    ["float32", "dynamic_range", "int8", "int8_float_head"],
    "TFLite variants.",
)
flags.DEFINE_integer("parity_images", 500, "Real images for the parity check (>= 1).")
flags.DEFINE_integer("representative_images", 200, "Images for int8 calibration (>= 1).")
flags.DEFINE_float(
    "calibration_trim",
    0.05,
    "int8: fraction of the calibration images with the largest embedding norms left out "
    "(min/max calibration lets one extreme image coarsen every step); 0 keeps all.",
)
flags.DEFINE_integer("latency_calls", 0, "Time this many one-image LiteRT calls (0: skip).")
flags.DEFINE_integer("seed", 0, "Seed of the image sample (face data).")

GROUPS = (data, output, resolution)


def _images(model_size):
    """(parity images, representative images): float [0, 1] at the model's input size,
    from different examples."""
    from lrface_tf.data.sources import load_training_data
    from lrface_tf.eval.pairs import prepare

    need = FLAGS.parity_images + FLAGS.representative_images
    cfg = data.config(FLAGS.teacher_size, FLAGS.seed)
    loaded = load_training_data(cfg)
    if loaded.test is not None:
        parity, reps = loaded.test[0][: FLAGS.parity_images], loaded.images
    else:
        if len(loaded) < need:
            raise ValueError(
                f"{len(loaded)} images cannot give {FLAGS.parity_images} parity + "
                f"{FLAGS.representative_images} calibration images; lower the two flags"
            )
        pick = np.random.default_rng(FLAGS.seed).permutation(len(loaded))
        parity = loaded.images[pick[: FLAGS.parity_images]]
        reps = loaded.images[pick[FLAGS.parity_images : need]]
    # Degrade to --student_size only when it is given (and below the model's input): a 16x16
    # face student's images are its 112x112 crops area-resized to 16, nothing smaller.
    given = FLAGS["student_size"].present
    size = FLAGS.student_size if given and FLAGS.student_size < model_size else None

    def at_input(x):
        return prepare(np.asarray(x), model_size, size, FLAGS.degrade_kernel, FLAGS.upsample_kernel)

    return at_input(parity), at_input(reps[: FLAGS.representative_images])


def main(argv):
    import lrface_tf.layers  # noqa: F401
    from lrface_tf.experiment import load_keras_file
    from lrface_tf.export import (
        QUANTIZATIONS,
        TFLiteModel,
        atomic_path,
        calibration_images,
        convert_tflite,
        export_savedmodel,
        latency_ms,
        parity_report,
        write_json,
    )

    if not FLAGS.model or not os.path.exists(FLAGS.model):
        raise FileNotFoundError(f"--model {FLAGS.model} does not exist; pass a student .keras")
    bad = [q for q in FLAGS.quantizations if q not in QUANTIZATIONS]
    if bad or not FLAGS.quantizations:
        raise ValueError(f"--quantizations {bad or '[]'}: use some of {', '.join(QUANTIZATIONS)}")
    for name in ("parity_images", "representative_images"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    if not 0 <= FLAGS.calibration_trim < 1:
        raise ValueError(f"--calibration_trim must be in [0, 1), got {FLAGS.calibration_trim}")
    if FLAGS.latency_calls < 0:
        raise ValueError(f"--latency_calls must be >= 0, got {FLAGS.latency_calls}")
    model = load_keras_file(FLAGS.model)
    size = model.input_shape[1]
    out = output.folder("export")
    parity, reps = _images(size)  # before anything is written: bad data stops here
    with atomic_path(out) as tmp:
        sm = export_savedmodel(model, os.path.join(tmp, "saved_model"))
        report = {"model": FLAGS.model, "input_size": size, "tflite": {}}
        if any(q.startswith("int8") for q in FLAGS.quantizations):
            reps, report["calibration"] = calibration_images(model, reps, FLAGS.calibration_trim)
            print(f"int8 calibration: {report['calibration']}")
        for q in FLAGS.quantizations:
            path = os.path.join(tmp, f"student_{q}.tflite")
            path = convert_tflite(model, path, q, reps, sm, calibration_trim=0)
            r = parity_report(model, TFLiteModel(path), parity)
            r["bytes"] = os.path.getsize(path)
            if FLAGS.latency_calls:
                r["latency_ms"] = latency_ms(path, parity, FLAGS.latency_calls)
            report["tflite"][q] = r
            print(f"{q}: {r}")
        write_json(os.path.join(tmp, "parity.json"), report)
    print(f"exported {FLAGS.model} to {out}")


if __name__ == "__main__":
    runner.run(main, adopt=GROUPS)
