"""The main job on the embedded default data (Fashion-MNIST): `make demo`.

    python -m apps.demo --flagfile=configs/demo.cfg

Trains a teacher at 28x28, then students at 7x7, and prints one table:
  teacher@28; the teacher on 7x7 probes upsampled to 28; the student trained
  on 7x7 alone (baseline); the KD student; and the few-labels case: the
  student with only N labelled 7x7 images alone, versus the same labels plus
  the teacher's soft labels on all 60,000 HR views (the student sees their
  7x7 views).
Rows (top-1 on the 10,000 test images, parameters, wall seconds) also go to
<output_dir>/results.json and results.md.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags

from apps import common
from apps.common import FLAGS

flags.DEFINE_integer("teacher_epochs", 4, "Teacher epochs.")
flags.DEFINE_integer(
    "few_labels_per_class", 100, "Labelled images per class in the few-labels case."
)
flags.DEFINE_integer(
    "few_labels_epochs", 60, "Epochs over the labelled subset when it trains alone."
)
flags.DEFINE_float(
    "few_labels_fraction", 0.25, "Share of each few-labels KD batch drawn from the labelled subset."
)


def _row(model, input_size, labelled, top1, params, seconds):
    return {
        "model": model,
        "input_size": input_size,
        "labelled_images": int(labelled),
        "top1": round(100 * top1, 2),
        "params": int(params),
        "seconds": round(seconds, 1),
    }


def _table(rows):
    lines = [
        "| model | input | labelled images | top-1 (%) | params | seconds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['input_size']}x{r['input_size']} | {r['labelled_images']:,} | "
        f"{r['top1']:.2f} | {r['params']:,} | {r['seconds']:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv):
    common.configure_devices()
    spec = common.spec_from_flags()
    strategy = common.strategy_from_flags()
    data = common.load_data()
    out = common.output_dir("demo")
    import keras
    import tensorflow as tf

    from lrface_tf.data.pipeline import UNLABELLED
    from lrface_tf.export import save_keras, write_json, write_text
    from lrface_tf.methods import method_terms
    from lrface_tf.models import build_recognizer

    (x, y), (xs, ys) = data["train"], data["test"]
    hr, lr = FLAGS.teacher_size, FLAGS.student_size
    bs = FLAGS.batch_size
    steps = len(y) // bs
    rows = []

    def recognizer(backbone, size, width, name):
        return build_recognizer(
            backbone, size, data["num_classes"], channels=data["channels"], head=FLAGS.head,
            scale=FLAGS.margin_scale, width_multiplier=width,
            embedding_dim=FLAGS.embedding_dim, name=name,
        )  # fmt: skip

    def student_run(name, terms, ds, epochs, steps_, task_weight=None):
        with strategy.scope():
            keras.utils.set_random_seed(FLAGS.seed)
            student = recognizer(FLAGS.student_backbone, lr, FLAGS.student_width, "student")
            _, hist, secs = common.train_distiller(
                student, teacher, terms, ds, epochs=epochs, steps=steps_,
                out_dir=os.path.join(out, name), task_weight=task_weight,
            )  # fmt: skip
        acc = common.evaluate_on_test(student, xs, ys, lr)
        save_keras(student, os.path.join(out, name, "student.keras"))
        print(f"== {name}: top-1 {100 * acc['top1']:.2f}% in {secs:.0f}s", flush=True)
        return student, acc, secs, hist

    # 1. Teacher at full resolution.
    print(f"== teacher@{hr}: {FLAGS.teacher_epochs} epochs on {len(y):,} images", flush=True)
    with strategy.scope():
        keras.utils.set_random_seed(FLAGS.seed)
        teacher = recognizer(FLAGS.teacher_backbone, hr, FLAGS.teacher_width, "teacher")
        ds = common.paired(x, y, spec, training=True, repeat=True)
        _, t_hist, t_secs = common.train_distiller(
            teacher, None, {}, ds, epochs=FLAGS.teacher_epochs, steps=steps,
            out_dir=os.path.join(out, "teacher"), student_view="hr", task_weight=1.0,
        )  # fmt: skip
    save_keras(teacher, os.path.join(out, "teacher", "teacher.keras"))
    t_acc = common.evaluate_on_test(teacher, xs, ys, hr)
    rows.append(_row(f"teacher@{hr}", hr, len(y), t_acc["top1"], teacher.count_params(), t_secs))
    t0 = time.perf_counter()
    t_lr = common.evaluate_on_test(teacher, xs, ys, lr, input_size=hr)
    rows.append(_row(f"teacher on {lr}x{lr} upsampled to {hr}", hr, len(y), t_lr["top1"],
                     teacher.count_params(), time.perf_counter() - t0))  # fmt: skip
    print(f"== teacher@{hr}: {100 * t_acc['top1']:.2f}%, on {lr}px probes: "
          f"{100 * t_lr['top1']:.2f}%", flush=True)  # fmt: skip

    # 2. Students at LR with all labels: alone vs KD.
    ds = common.paired(x, y, spec, training=True, repeat=True)
    s, acc, secs, _ = student_run("baseline", {}, ds, FLAGS.epochs, steps, task_weight=1.0)
    rows.append(_row(f"student@{lr} alone", lr, len(y), acc["top1"], s.count_params(), secs))
    terms = method_terms(FLAGS.method, common.method_config())
    s, acc, secs, _ = student_run(FLAGS.method, terms, ds, FLAGS.epochs, steps)
    rows.append(
        _row(f"student@{lr} {FLAGS.method}", lr, len(y), acc["top1"], s.count_params(), secs)
    )

    # 3. Few labels: N labelled LR images alone, vs + teacher soft labels on all images.
    y_few, keep = common.with_few_labels(y, FLAGS.few_labels_per_class, FLAGS.seed)
    n_lab = len(keep)
    few_ds = common.paired(x[keep], y[keep], spec, training=True, repeat=True)
    few_steps = max(1, n_lab // bs)
    s, acc, secs, _ = student_run("few_labels_alone", {}, few_ds, FLAGS.few_labels_epochs,
                                  few_steps, task_weight=1.0)  # fmt: skip
    rows.append(_row(f"student@{lr} alone, {n_lab:,} labels", lr, n_lab, acc["top1"],
                     s.count_params(), secs))  # fmt: skip
    frac = FLAGS.few_labels_fraction
    labelled = tf.data.Dataset.from_tensor_slices((x[keep], y[keep])).repeat()
    everything = tf.data.Dataset.from_tensor_slices((x, np.full_like(y_few, UNLABELLED))).repeat()
    mixed = tf.data.Dataset.sample_from_datasets(
        [labelled, everything], weights=[frac, 1.0 - frac], seed=FLAGS.seed
    )
    mixed_ds = common.paired(mixed, None, spec, training=True)
    # Same per-labelled-example weight as the KD run: the masked CE averages
    # over the whole batch, of which only `frac` is labelled.
    s, acc, secs, _ = student_run(f"few_labels_{FLAGS.method}", terms, mixed_ds, FLAGS.epochs,
                                  steps, task_weight=FLAGS.task_weight / frac)  # fmt: skip
    rows.append(_row(f"student@{lr} {FLAGS.method}, {n_lab:,} labels + teacher on all",
                     lr, n_lab, acc["top1"], s.count_params(), secs))  # fmt: skip

    table = _table(rows)
    write_json(os.path.join(out, "results.json"), rows)
    write_text(os.path.join(out, "results.md"), table + "\n")
    common.write_run_record(out, spec, {"rows": rows, "data": data["report"]})
    print()
    print(table)


if __name__ == "__main__":
    common.run(main)
