"""Distil a low-resolution student from a trained high-resolution teacher.

    python -m apps.distill --flagfile=configs/fmnist_kd.cfg

--method picks the loss terms (lrface_tf.methods.METHODS); "baseline" trains
the student alone on LR images. Writes <output_dir>/student.keras and the run
record (flags, degradation spec, metrics, TensorBoard logs).
"""

from __future__ import annotations

import os

from apps import common
from apps.common import FLAGS


def main(argv):
    common.configure_devices()
    spec = common.spec_from_flags()
    strategy = common.strategy_from_flags()
    from lrface_tf.methods import method_terms

    terms_needed = bool(method_terms(FLAGS.method))
    if terms_needed and not FLAGS.teacher:
        raise ValueError(f"method {FLAGS.method} needs --teacher=<teacher.keras>")
    data = common.load_data()
    out = common.output_dir(f"distill_{FLAGS.method}")
    import keras

    from lrface_tf.export import save_keras
    from lrface_tf.models import build_recognizer

    x, y = data["train"] if isinstance(data["train"], tuple) else (data["train"], None)
    n = len(y) if y is not None else len(x.paths)
    if FLAGS.labelled_per_class:
        y, _ = common.with_few_labels(y, FLAGS.labelled_per_class, FLAGS.seed)
    steps = n // FLAGS.batch_size
    with strategy.scope():
        keras.utils.set_random_seed(FLAGS.seed)
        teacher = common.load_teacher(FLAGS.teacher, FLAGS.teacher_size) if terms_needed else None
        size = common.student_input_size()
        student = build_recognizer(
            FLAGS.student_backbone, size, data["num_classes"], channels=data["channels"],
            head=FLAGS.head, scale=FLAGS.margin_scale, width_multiplier=FLAGS.student_width,
            embedding_dim=FLAGS.embedding_dim, name="student",
        )  # fmt: skip
        terms = method_terms(FLAGS.method, common.method_config())
        ds = common.paired(x, y, spec, training=True, repeat=True)
        _, history, seconds = common.train_distiller(
            student, teacher, terms, ds, epochs=FLAGS.epochs, steps=steps, out_dir=out
        )
    result = {
        "method": FLAGS.method,
        "history": history,
        "train_seconds": seconds,
        "params": student.count_params(),
    }
    if data["test"] is not None:
        result["test"] = common.evaluate_on_test(student, *data["test"], FLAGS.student_size, size)
        top1 = 100 * result["test"]["top1"]
        print(f"student@{FLAGS.student_size} ({FLAGS.method}): top-1 {top1:.2f}%")
    save_keras(student, os.path.join(out, "student.keras"))
    common.write_run_record(out, spec, {**result, "data": data["report"]})


if __name__ == "__main__":
    common.run(main)
