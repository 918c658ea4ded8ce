"""Which training data: --data, --data_dir, held-out people, subsets."""

from __future__ import annotations

from absl import flags

from lrface_tf.data.sources import RETIRED_SOURCES, SOURCES, DataConfig

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "data",
    "fashion_mnist",
    [*SOURCES, *RETIRED_SOURCES],
    "Training data set; tfds: a face data set built by apps.build_dataset, streamed "
    f"({', '.join(RETIRED_SOURCES)}: gone, the error says what to run instead).",
)
flags.DEFINE_list(
    "data_dir",
    [],
    "Data folder(s): Fashion-MNIST idx files; identity folders root/<person>/<image> "
    "(several: comma-separated); or the --dst of apps.build_dataset (--data=tfds).",
)
flags.DEFINE_list(
    "unlabelled_dir", [], "Flat folders of unlabelled images (--data=identity_folder)."
)
flags.DEFINE_list(
    "exclude_people_from",
    [],
    "Pairs files (LFW format) whose people are held out of training (counted in the record).",
)
flags.DEFINE_integer(
    "max_train_examples", 0, "Train on a seeded subset of N examples, stratified by class (0: all)."
)
flags.DEFINE_integer(
    "labelled_per_class", 0, "Few-labels transfer: keep labels for N per class (0: all)."
)
flags.DEFINE_integer(
    "min_images_per_label",
    1,
    "People with fewer images keep no label (their images still serve label-free terms).",
)
flags.DEFINE_float(
    "labelled_fraction", 0.0, "Share of every batch drawn from the labelled examples (0: uniform)."
)
flags.DEFINE_integer(
    "epoch_examples",
    0,
    "Examples per training epoch (0: every example once); passes over a large data set "
    "continue across epochs.",
)


def config(image_size, seed):
    """The `DataConfig` of the flags, decoded at `image_size`."""
    return DataConfig(
        source=FLAGS.data,
        data_dirs=tuple(FLAGS.data_dir),
        unlabelled_dirs=tuple(FLAGS.unlabelled_dir),
        exclude_people_from=tuple(FLAGS.exclude_people_from),
        image_size=image_size,
        max_examples=FLAGS.max_train_examples,
        labelled_per_class=FLAGS.labelled_per_class,
        min_images_per_label=FLAGS.min_images_per_label,
        labelled_fraction=FLAGS.labelled_fraction,
        epoch_examples=FLAGS.epoch_examples,
        seed=seed,
    )
