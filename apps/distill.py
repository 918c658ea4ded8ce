"""Distil a low-resolution student from a trained high-resolution teacher.

    python -m apps.distill --flagfile=configs/fmnist_kd.cfg
    python -m apps.distill --flagfile=configs/fmnist_horkd_two_stage.cfg

--method picks the loss terms (lrface_tf.methods.METHODS); "baseline" trains
the student alone on LR images. --stages=two_stage runs HORKD's Sec. 3.3:
stage 1 (cross-structure) distils the teacher into a compact assistant on HR
images; stage 2 (cross-resolution) distils the assistant into a student of the
same architecture on LR images, optionally initialised from the assistant.
Each stage has its own folder; a finished stage is not redone and an
interrupted one resumes from its BackupAndRestore checkpoint.
Writes <output_dir>/student.keras and the run record.
"""

from __future__ import annotations

import os

from apps import common
from apps.common import FLAGS


def _build(data, backbone, size, name):
    from lrface_tf.models import build_recognizer

    return common.maybe_synchronized(build_recognizer(
        backbone, size, data["num_classes"], channels=data["channels"], head=FLAGS.head,
        scale=FLAGS.margin_scale, width_multiplier=FLAGS.student_width,
        embedding_dim=FLAGS.embedding_dim, name=name,
    ))  # fmt: skip


def main(argv):
    common.configure_devices()
    spec = common.spec_from_flags()
    strategy = common.strategy_from_flags()
    from lrface_tf.methods import method_terms

    terms_needed = bool(method_terms(FLAGS.method))
    if terms_needed and not FLAGS.teacher:
        raise ValueError(f"method {FLAGS.method} needs --teacher=<teacher.keras>")
    if FLAGS.stages == "two_stage" and not terms_needed:
        raise ValueError("--stages=two_stage needs a distillation method, not baseline")
    cache_ok = FLAGS.augment in ("none", "flip") and FLAGS.stages == "direct"
    if FLAGS.teacher_cache and not (cache_ok and FLAGS.data == "fashion_mnist"):
        raise ValueError(
            "--teacher_cache needs --augment=none or flip, --stages=direct and in-memory data "
            f"(got --augment={FLAGS.augment}, --stages={FLAGS.stages}, --data={FLAGS.data})"
        )
    data = common.load_data()
    out = common.output_dir(f"distill_{FLAGS.method}")
    import keras

    from lrface_tf.export import save_keras
    from lrface_tf.models.recognizer import copy_weights_by_name

    x, y = data["train"] if isinstance(data["train"], tuple) else (data["train"], None)
    n = len(y) if y is not None else len(x)
    if FLAGS.labelled_per_class:
        y, _ = common.with_few_labels(y, FLAGS.labelled_per_class, FLAGS.seed)
    steps = n // FLAGS.batch_size
    size = common.student_input_size()
    result = {"method": FLAGS.method, "stages": FLAGS.stages}
    with strategy.scope():
        keras.utils.set_random_seed(FLAGS.seed)
        teacher = common.load_teacher(FLAGS.teacher, FLAGS.teacher_size) if terms_needed else None
        if FLAGS.stages == "two_stage":
            teacher, result["stage1"] = _stage1_assistant(data, teacher, x, y, spec, n, out)
        student = _build(data, FLAGS.student_backbone, size, "student")
        if FLAGS.stages == "two_stage" and FLAGS.init_from_assistant:
            copy_weights_by_name(teacher, student)
        terms = method_terms(FLAGS.method, common.method_config(n))
        cache = None
        if FLAGS.teacher_cache and terms_needed:
            from lrface_tf.data.teacher_cache import load_or_build

            variants = ("none", "flip") if FLAGS.augment == "flip" else ("none",)
            cache, status = load_or_build(
                os.path.join(out, "teacher_cache.npz"), teacher, x, variants,
                hr_size=FLAGS.teacher_size, progress=FLAGS.verbose > 0,
            )  # fmt: skip
            print(f"teacher cache: {status}")
            result["teacher_cache"] = status
        # The HR view is needed only by a teacher that runs every step.
        keep_hr = terms_needed and cache is None
        ds = common.paired(x, y, spec, training=True, repeat=True, teacher_cache=cache,
                           num_classes=data["num_classes"], keep_hr=keep_hr)  # fmt: skip
        stage_dir = os.path.join(out, "stage2_student") if FLAGS.stages == "two_stage" else out
        _, history, seconds = common.train_distiller(
            student, teacher, terms, ds, epochs=FLAGS.epochs, steps=steps, out_dir=stage_dir
        )
    result.update(history=history, train_seconds=seconds, params=student.count_params())
    if data["test"] is not None:
        result["test"] = common.evaluate_on_test(student, *data["test"], FLAGS.student_size, size)
        top1 = 100 * result["test"]["top1"]
        print(f"student@{FLAGS.student_size} ({FLAGS.method}, {FLAGS.stages}): top-1 {top1:.2f}%")
    save_keras(student, os.path.join(out, "student.keras"))
    common.write_run_record(out, spec, {**result, "data": data["report"]})


def _stage1_assistant(data, teacher, x, y, spec, n, out):
    """Cross-structure stage: teacher -> assistant on HR views; skipped when done."""
    import keras

    from lrface_tf.export import save_keras, write_json
    from lrface_tf.methods import method_terms

    stage_dir = os.path.join(out, "stage1_assistant")
    path = os.path.join(stage_dir, "assistant.keras")
    if os.path.exists(path):
        print(f"stage 1 already done: reusing {path}")
        assistant = keras.saving.load_model(path, compile=False)
        return assistant, {"reused": path}
    backbone = FLAGS.assistant_backbone or FLAGS.student_backbone
    if FLAGS.init_from_assistant and backbone != FLAGS.student_backbone:
        raise ValueError(
            "--init_from_assistant needs --assistant_backbone equal to --student_backbone"
        )
    assistant = _build(data, backbone, FLAGS.teacher_size, "assistant")
    terms = method_terms(FLAGS.method, common.method_config(n))
    steps = n // FLAGS.batch_size
    ds = common.paired(x, y, spec, training=True, repeat=True, num_classes=data["num_classes"])
    epochs = FLAGS.assistant_epochs or FLAGS.epochs
    _, history, seconds = common.train_distiller(
        assistant, teacher, terms, ds, epochs=epochs, steps=steps, out_dir=stage_dir,
        student_view="hr",
    )  # fmt: skip
    record = {"history": history, "train_seconds": seconds, "params": assistant.count_params()}
    if data["test"] is not None:
        record["test"] = common.evaluate_on_test(assistant, *data["test"], FLAGS.teacher_size)
        print(f"assistant@{FLAGS.teacher_size}: top-1 {100 * record['test']['top1']:.2f}%")
    write_json(os.path.join(stage_dir, "metrics.json"), record)
    save_keras(assistant, path)  # written last: its presence marks the stage as done
    assistant.trainable = False
    return assistant, record


if __name__ == "__main__":
    common.run(main)
