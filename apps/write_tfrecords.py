"""Write an identity-folder data set as sharded TFRecords (for data sets beyond memory).

    python -m apps.write_tfrecords --data_dir=saved_models/lfw_aligned \
        --dst=saved_models/lfw_tfr --num_shards=16
    python -m apps.distill --data=tfrecord --data_dir=saved_models/lfw_tfr ...

Every image is decoded once to find corrupt files (skipped and listed in
<dst>/write_report.json with --skip_bad, else a one-line error naming it);
the original bytes are stored, shards are written atomically and the manifest
last, so a killed run leaves no set that reads as complete.
"""

from __future__ import annotations

import os

from absl import flags

from apps import runner

FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "Identity folder to write (root/<person>/<image>).")
flags.DEFINE_integer("verbose", 1, "0: no progress bar.")
flags.DEFINE_string("dst", None, "Output folder for the shards and manifest.json.")
flags.DEFINE_integer("num_shards", 16, "Number of shard files (>= the number of workers).")
flags.DEFINE_bool("skip_bad", False, "Skip (and report) unreadable images instead of stopping.")


def main(argv):
    from lrface_tf.data.datasets import identity_folder
    from lrface_tf.data.tfrecord import write_tfrecords
    from lrface_tf.export import write_json

    if not FLAGS.data_dir or not FLAGS.dst:
        raise ValueError("pass --data_dir=<root/<person>/<image>> and --dst=<output folder>")
    if os.path.abspath(FLAGS.dst) == os.path.abspath(FLAGS.data_dir):
        raise ValueError("--dst must differ from --data_dir")
    folder = identity_folder(FLAGS.data_dir, on_error="skip" if FLAGS.skip_bad else "raise")
    manifest = write_tfrecords(folder, FLAGS.dst, FLAGS.num_shards, progress=FLAGS.verbose > 0)
    write_json(os.path.join(FLAGS.dst, "write_report.json"), folder.report.to_dict())
    print(
        f"wrote {manifest['num_examples']} images of {manifest['num_classes']} people "
        f"in {FLAGS.num_shards} shards to {FLAGS.dst}"
    )


if __name__ == "__main__":
    runner.run(main)
