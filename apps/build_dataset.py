"""Build a TFDS data set from identity folders (and flat folders of unlabelled faces).

    python -m apps.build_dataset --data_dir=saved_models/lfw_aligned \
        --exclude_people_from=../shared/data/lfw/pairsDevTest.txt --dst=saved_models/lfw_tfds
    python -m apps.build_dataset ... --teacher=saved_models/sface/teacher.keras --views=2 \
        --cache_runtime=tflite          # + the teacher's outputs of each image's 2 views
    python -m apps.distill --data=tfds --data_dir=saved_models/lfw_tfds --teacher_cache ...

Writes <dst>/identity_faces/1.0.0/ (sharded TFRecords, dataset_info.json,
metadata.json; see lrface_tf.data.tfds_faces) and <dst>/build_report.json. Every
image is decoded once: a corrupt, unsupported or misnamed image stops the build
with a one-line error naming it, or with --skip_bad is skipped and listed (counts
by reason on the console, every file in build_report.json and the metadata).
Subsets (--max_train_examples, --labelled_per_class, --min_images_per_label) are
chosen when training, from the stored labels; the data set keeps every image.
"""

from __future__ import annotations

import os

from absl import flags

from apps import runner
from apps.flag_groups import data, views

FLAGS = flags.FLAGS

flags.DEFINE_string("dst", None, "Output folder of the data set.")
flags.DEFINE_integer(
    "num_shards",
    16,
    "Shard files (at least the number of training workers); 0: by size (64 MiB - 1 GiB each).",
)
flags.DEFINE_string("teacher", None, "Store this frozen teacher's outputs (.keras) for each view.")
flags.DEFINE_enum(
    "cache_runtime", "keras", ["keras", "tflite"], "What runs the teacher (tflite: LiteRT)."
)
flags.DEFINE_integer(
    "image_size", 0, "HR size of the views without a teacher (with one: its input size)."
)
flags.DEFINE_bool("skip_bad", False, "Skip (and list) unreadable images instead of stopping.")
flags.DEFINE_integer(
    "replicate",
    1,
    "Write every image N times as N examples (benchmarks: a large data set from a small pool).",
)
flags.DEFINE_integer("verbose", 1, "0: no progress bars.")

# Data flags that choose what a run trains on, not what a data set holds.
TRAINING_ONLY = ("max_train_examples", "labelled_per_class", "min_images_per_label")
TRAINING_ONLY += ("labelled_fraction", "epoch_examples")


def main(argv):
    from lrface_tf.data.datasets import DataError
    from lrface_tf.data.sources import skipped_by_reason
    from lrface_tf.data.tfds_faces import build_face_dataset
    from lrface_tf.export import write_json

    for name in TRAINING_ONLY:
        if FLAGS[name].present:
            raise ValueError(
                f"--{name} is chosen when training (apps.distill --data=tfds), not when "
                "building: the data set keeps every image"
            )
    if FLAGS["data"].present and FLAGS.data != "identity_folder":
        raise ValueError(
            "apps.build_dataset reads identity folders: drop --data or pass it as identity_folder"
        )
    if not FLAGS.data_dir or not FLAGS.dst:
        raise ValueError(
            "pass --data_dir=<root/<person>/<image>>[,<more>] and --dst=<output folder>"
        )
    if os.path.abspath(FLAGS.dst) in {os.path.abspath(d) for d in FLAGS.data_dir}:
        raise ValueError("--dst must differ from --data_dir")
    try:
        faces = build_face_dataset(
            FLAGS.dst,
            FLAGS.data_dir,
            unlabelled_dirs=FLAGS.unlabelled_dir,
            exclude_people_from=FLAGS.exclude_people_from,
            on_error="skip" if FLAGS.skip_bad else "raise",
            teacher=FLAGS.teacher,
            views=views.spec(),
            image_size=FLAGS.image_size or None,
            runtime=FLAGS.cache_runtime,
            num_shards=FLAGS.num_shards,
            replicate=FLAGS.replicate,
            progress=FLAGS.verbose > 0,
        )
    except DataError as e:  # the library's advice, in the app's words
        raise DataError(str(e).replace("pass on_error='skip'", "pass --skip_bad")) from None
    report = faces.report
    write_json(os.path.join(FLAGS.dst, "build_report.json"), report)
    labels = faces.labels()
    print(
        f"wrote {faces.num_examples} examples ({int((labels >= 0).sum())} labelled of "
        f"{len(faces.class_names)} people, {int((labels < 0).sum())} unlabelled) in "
        f"{faces.num_shards} shards to {faces.path}"
    )
    reasons = skipped_by_reason(report)
    if reasons:
        counts = ", ".join(f"{n} {r}" for r, n in reasons.items())
        print(f"skipped {sum(reasons.values())} files ({counts}):")
        for part in [*report["roots"], *report["unlabelled_roots"]]:
            for item in part["skipped"]:
                print(f"  {item['path']}: {item['reason']}")
        print(f"(listed in {os.path.join(FLAGS.dst, 'build_report.json')})")


if __name__ == "__main__":
    runner.run(main, adopt=(data, views))
