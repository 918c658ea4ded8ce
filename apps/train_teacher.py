"""Train a high-resolution teacher recognizer.

    python -m apps.train_teacher --flagfile=configs/fmnist/teacher.cfg

Writes <output_dir>/teacher.keras and the run record (flags.cfg, config.json,
metrics.json) and TensorBoard logs.
"""

from __future__ import annotations

from absl import flags

from apps import runner
from apps.flag_groups import data, devices, network, output, resolution, training

FLAGS = flags.FLAGS

flags.DEFINE_string("teacher_backbone", "resnet8", "Teacher backbone.")
flags.DEFINE_float("teacher_width", 1.0, "Teacher width multiplier.")

GROUPS = (data, devices, network, output, resolution, training)


def main(argv):
    devices.configure()
    data_cfg = data.config(FLAGS.teacher_size, FLAGS.seed)
    model = network.model_config(FLAGS.teacher_backbone, FLAGS.teacher_size, FLAGS.teacher_width)
    train = training.config(verbose=output.verbose())
    strategy = devices.strategy(train.batch_size)
    from lrface_tf.experiment import train_teacher
    from lrface_tf.runs import RunFolder, write_record

    out = output.folder("teacher", strategy)
    config = {
        "data": data_cfg.__dict__,
        "model": model.__dict__,
        "train": train.__dict__,
        "augment": FLAGS.augment,
    }
    with RunFolder(out):
        result = train_teacher(
            data_cfg,
            model,
            train,
            augment=FLAGS.augment,
            output_dir=out,
            strategy=strategy,
            callbacks=devices.fault_injection(),
        )
        write_record(
            out,
            metrics=result,
            config=config,
            flags_text=runner.flags_text(),
            command=runner.command(),
        )


if __name__ == "__main__":
    runner.run(main, adopt=GROUPS)
