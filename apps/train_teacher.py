"""Train a high-resolution teacher recognizer.

    python -m apps.train_teacher --flagfile=configs/fmnist_teacher.cfg

Writes <output_dir>/teacher.keras, flags.cfg/json, degradation.json,
metrics.json and TensorBoard logs.
"""

from __future__ import annotations

import os

from apps import common
from apps.common import FLAGS


def main(argv):
    common.configure_devices()
    spec = common.spec_from_flags()
    strategy = common.strategy_from_flags()
    data = common.load_data()
    out = common.output_dir("teacher")
    import keras

    from lrface_tf.export import save_keras
    from lrface_tf.models import build_recognizer

    x, y = data["train"] if isinstance(data["train"], tuple) else (data["train"], None)
    n = len(data["train"][1]) if isinstance(data["train"], tuple) else len(x)
    steps = n // FLAGS.batch_size
    with strategy.scope():
        keras.utils.set_random_seed(FLAGS.seed)
        teacher = build_recognizer(
            FLAGS.teacher_backbone, FLAGS.teacher_size, data["num_classes"],
            channels=data["channels"], head=FLAGS.head, scale=FLAGS.margin_scale,
            width_multiplier=FLAGS.teacher_width, embedding_dim=FLAGS.embedding_dim,
            name="teacher",
        )  # fmt: skip
        teacher = common.maybe_synchronized(teacher)
        ds = common.paired(x, y, spec, training=True, repeat=True, num_classes=data["num_classes"])
        _, history, seconds = common.train_distiller(
            teacher, None, {}, ds, epochs=FLAGS.epochs, steps=steps, out_dir=out,
            student_view="hr", task_weight=1.0,
        )  # fmt: skip
    result = {"history": history, "train_seconds": seconds, "params": teacher.count_params()}
    if data["test"] is not None:
        result["test"] = common.evaluate_on_test(teacher, *data["test"], FLAGS.teacher_size)
        print(f"teacher@{FLAGS.teacher_size}: top-1 {100 * result['test']['top1']:.2f}%")
    save_keras(teacher, os.path.join(out, "teacher.keras"))
    common.write_run_record(out, spec, {**result, "data": data["report"]})


if __name__ == "__main__":
    common.run(main)
