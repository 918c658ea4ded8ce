"""The main job on the embedded default data (Fashion-MNIST): `make demo`.

    python -m apps.demo --flagfile=configs/demo.cfg

Trains a teacher at 28x28, then students at 7x7 (each run is a library call of
the same kind `apps.train_teacher` / `apps.distill` make), and prints one table:
teacher@28; the teacher on 7x7 probes upsampled to 28; the student trained on
7x7 alone (baseline); the KD student; and the few-labels case: the student with
only N labelled 7x7 images alone, versus the same labels plus the teacher's soft
labels on all 60,000 HR views (the student sees their 7x7 views; a share of each
batch comes from the labelled few).
Rows (top-1 on the 10,000 test images, parameters, wall seconds) also go to
<output_dir>/results.json and results.md.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import flags

from apps import runner
from apps.flag_groups import data, devices, method, network, output, resolution, training

FLAGS = flags.FLAGS

flags.DEFINE_string("teacher_backbone", "resnet8", "Teacher backbone.")
flags.DEFINE_string("student_backbone", "resnet8", "Student backbone.")
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

GROUPS = (data, devices, method, network, output, resolution, training)


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
    devices.configure()
    from lrface_tf.config import DistillConfig
    from lrface_tf.data.degrade import DegradationSpec
    from lrface_tf.data.sources import load_training_data
    from lrface_tf.experiment import distill, load_teacher, test_accuracy, train_teacher
    from lrface_tf.export import write_json, write_text
    from lrface_tf.runs import RunFolder, write_record

    hr, lr = FLAGS.teacher_size, FLAGS.student_size
    spec = resolution.spec()
    data_cfg = data.config(hr, FLAGS.seed)
    verbose = output.verbose()
    train = training.config(verbose=verbose)
    strategy = devices.strategy(train.batch_size)
    out = output.folder("demo", strategy)
    student = network.model_config(FLAGS.student_backbone, lr, 1.0)
    base = DistillConfig(
        data=data_cfg,
        spec=spec,
        student=student,
        method="baseline",
        augment=FLAGS.augment,
        train=train,
        output_dir=out,
    )
    rows = []
    with RunFolder(out):
        # 1. Teacher at full resolution, and on 7x7 probes upsampled back to 28.
        print(f"== teacher@{hr}: {FLAGS.teacher_epochs} epochs", flush=True)
        t_dir = os.path.join(out, "teacher")
        t_model = network.model_config(FLAGS.teacher_backbone, hr, 1.0)
        t = train_teacher(
            data_cfg,
            t_model,
            dataclasses.replace(train, epochs=FLAGS.teacher_epochs),
            augment=FLAGS.augment,
            output_dir=t_dir,
            strategy=strategy,
        )
        n = t["data"]["used"]
        rows.append(
            _row(f"teacher@{hr}", hr, n, t["test"]["top1"], t["params"], t["train_seconds"])
        )
        teacher_path = os.path.join(t_dir, "teacher.keras")
        t0 = time.perf_counter()
        test = load_training_data(data_cfg).test
        up = DegradationSpec(
            FLAGS.degrade_kernel, (lr,), output_size=hr, upsample_kernel=FLAGS.upsample_kernel
        )
        t_lr = test_accuracy(load_teacher(teacher_path), test, up)
        rows.append(
            _row(
                f"teacher on {lr}x{lr} upsampled to {hr}",
                hr,
                n,
                t_lr["top1"],
                t["params"],
                time.perf_counter() - t0,
            )
        )
        print(f"== teacher on {lr}px probes: {100 * t_lr['top1']:.2f}%", flush=True)

        def student_row(name, label, labelled, **changes):
            cfg = dataclasses.replace(base, output_dir=os.path.join(out, name), **changes)
            print(f"== {name}", flush=True)
            r = distill(cfg, strategy=strategy)
            rows.append(
                _row(label, lr, labelled, r["test"]["top1"], r["params"], r["train_seconds"])
            )

        # 2. Students at LR with all labels: alone vs the method (KD).
        kd = {
            "method": FLAGS.method,
            "teacher": teacher_path,
            "hyperparameters": method.hyperparameters(),
        }
        student_row("baseline", f"student@{lr} alone", n)
        student_row(FLAGS.method, f"student@{lr} {FLAGS.method}", n, **kd)
        # 3. Few labels: N labelled LR images alone, vs + teacher soft labels on all images.
        few = dataclasses.replace(data_cfg, labelled_per_class=FLAGS.few_labels_per_class)
        n_few = 10 * FLAGS.few_labels_per_class
        student_row(
            "few_labels_alone",
            f"student@{lr} alone, {n_few:,} labels",
            n_few,
            data=few,
            train=dataclasses.replace(train, epochs=FLAGS.few_labels_epochs),
        )
        frac = FLAGS.few_labels_fraction
        # Same weight per labelled example as the KD run: the masked CE averages over the
        # whole batch, of which `frac` is labelled.
        hyper = {**kd["hyperparameters"]}
        from lrface_tf.methods import resolve

        hyper["task_weight"] = resolve(FLAGS.method, hyper)["task_weight"] / frac
        student_row(
            f"few_labels_{FLAGS.method}",
            f"student@{lr} {FLAGS.method}, {n_few:,} labels + teacher on all",
            n_few,
            data=dataclasses.replace(few, labelled_fraction=frac),
            **{**kd, "hyperparameters": hyper},
        )
        table = _table(rows)
        write_json(os.path.join(out, "results.json"), rows)
        write_text(os.path.join(out, "results.md"), table + "\n")
        write_record(
            out,
            metrics={"rows": rows},
            flags_text=runner.flags_text(),
            command=runner.command(),
            spec=spec,
        )
    print()
    print(table)


if __name__ == "__main__":
    runner.run(main, adopt=GROUPS)
