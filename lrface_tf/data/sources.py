"""Training data from a `DataConfig`: one loader, one return type, a record of what was used.

    data = load_training_data(DataConfig(source="identity_folder",
                                         data_dirs=("faces/",), image_size=112))
    data.images, data.labels        # uint8 (N, 112, 112, 3), int32 (-1: unlabelled)
    data.report                     # what was read, kept, skipped and why

Sources: "fashion_mnist" (the embedded default, with its test split) and
"identity_folder" (one or more `root/<person>/<image>` folders, plus flat folders
of unlabelled faces), decoded into memory at `image_size`; "tfds" streams a face
data set built by `python -m apps.build_dataset` (`lrface_tf.data.tfds_faces`):
only its labels are in memory (4 bytes per example), images are decoded per step.
Nothing is dropped silently: people held out (e.g. the people of a pairs file),
people below `min_images_per_label` (kept as unlabelled), skipped files by reason
and the subset drawn by `max_examples` are all in the report, and a streamed
source draws the same subsets, from the same labels, as the in-memory one.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from lrface_tf.data.datasets import DataError
from lrface_tf.data.pipeline import UNLABELLED
from lrface_tf.validation import check_int

SOURCES = ("fashion_mnist", "identity_folder", "tfds")
# Sources that are gone, and what to run instead (a one-line error names it).
RETIRED_SOURCES = {
    "tfrecord": (
        "--data=tfrecord is gone: build a TFDS data set with `python -m apps.build_dataset "
        "--data_dir=<identity folder> --dst=<folder>`, then train with --data=tfds "
        "--data_dir=<folder>"
    ),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which training data, and which part of it.

    Attributes:
      source: one of `SOURCES`.
      data_dirs: Fashion-MNIST's idx folder (optional), identity-folder roots, or
        the folder of a data set built by `apps.build_dataset` (source "tfds").
      unlabelled_dirs: flat folders of unlabelled images (identity_folder only).
      exclude_people_from: pairs files whose people are held out of training
        (a "tfds" data set also holds out the people excluded when it was built).
      image_size: decoded size (the teacher's input size).
      max_examples: a seeded subset of this many examples, stratified across
        classes (0: all).
      labelled_per_class: keep labels for this many examples per class, the
        rest become unlabelled (0: all labelled).
      min_images_per_label: people with fewer images keep no label (they still
        serve label-free distillation terms).
      labelled_fraction: share of every training batch drawn from the labelled
        examples (oversampling few labels among many unlabelled; 0: uniform).
      epoch_examples: examples per training epoch (0: every example once). A
        shorter epoch reports (and checkpoints) more often on a large data set;
        the passes over the data continue across epochs.
      seed: seeds the subsets.
    """

    source: str = "fashion_mnist"
    data_dirs: tuple = ()
    unlabelled_dirs: tuple = ()
    exclude_people_from: tuple = ()
    image_size: int = 28
    max_examples: int = 0
    labelled_per_class: int = 0
    min_images_per_label: int = 1
    labelled_fraction: float = 0.0
    epoch_examples: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.source in RETIRED_SOURCES:
            raise ValueError(RETIRED_SOURCES[self.source])
        if self.source not in SOURCES:
            raise ValueError(
                f"unknown data source {self.source!r}: use one of {', '.join(SOURCES)}"
            )
        for name in ("data_dirs", "unlabelled_dirs", "exclude_people_from"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        check_int("image_size", self.image_size, 1)
        check_int("max_train_examples", self.max_examples, 0)
        check_int("labelled_per_class", self.labelled_per_class, 0)
        check_int("min_images_per_label", self.min_images_per_label, 1)
        check_int("epoch_examples", self.epoch_examples, 0)
        if not 0.0 <= self.labelled_fraction < 1.0:
            raise ValueError(f"labelled_fraction must be in [0, 1), got {self.labelled_fraction}")
        if self.source != "fashion_mnist" and not self.data_dirs:
            raise ValueError(f"--data={self.source} needs --data_dir=<its folder>")
        if self.unlabelled_dirs and self.source != "identity_folder":
            raise ValueError(
                "--unlabelled_dir works with --data=identity_folder (a --data=tfds data set "
                "holds its unlabelled images: build it with apps.build_dataset --unlabelled_dir)"
            )
        if self.source == "tfds" and self.labelled_fraction:
            raise ValueError(
                "--labelled_fraction needs in-memory data (--data=identity_folder): a stream "
                "cannot draw a fixed share of every batch from the labelled examples"
            )
        if self.source == "tfds" and len(self.data_dirs) != 1:
            raise ValueError(
                f"--data=tfds reads one data set, got {len(self.data_dirs)} --data_dir folders; "
                "build the folders into one with apps.build_dataset --data_dir=<a>,<b>"
            )


@dataclasses.dataclass
class TrainingData:
    """Training examples in memory (or a stream), with what was used and why.

    Attributes:
      images: uint8 `(N, H, W, C)`, or None for a streamed source.
      labels: int32 `(N,)`, -1 for unlabelled examples (a stream's too: example
        i of the stream is `stream.index[i]` of its data set).
      num_classes: classes of the labelled examples (labels 0..C-1).
      channels: 1 or 3.
      test: `(images, labels)` of a labelled test split, or None.
      class_names: name of each class.
      report: counts of what was read, kept, held out and skipped (by reason).
      stream: for a streamed source, its `lrface_tf.data.tfds_faces.FaceDataset`.
      epoch_examples: examples per training epoch (0: all of them once).
    """

    images: np.ndarray | None
    labels: np.ndarray
    num_classes: int
    channels: int
    test: tuple | None
    class_names: list
    report: dict
    stream: object = None
    epoch_examples: int = 0

    def __len__(self):
        return len(self.labels)

    @property
    def num_labelled(self):
        return int((self.labels >= 0).sum())

    def select(self, keep):
        """Keep the examples `keep` (indices or a boolean mask), in memory or in the stream."""
        if self.images is not None:
            self.images = self.images[keep]
        if self.stream is not None:
            self.stream = self.stream.select(keep)
        self.labels = self.labels[keep]


def load_training_data(config, progress=False):
    """The `TrainingData` a `DataConfig` describes (see the module docstring)."""
    loaders = {"fashion_mnist": _fashion_mnist, "identity_folder": _face_folders, "tfds": _tfds}
    data = _subsets(loaders[config.source](config, progress), config)
    data.epoch_examples = config.epoch_examples
    if config.epoch_examples:
        data.report["epoch_examples"] = config.epoch_examples
    return data


def _fashion_mnist(config, progress=False):
    from lrface_tf.data.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    (xt, yt), (xs, ys) = load_fashion_mnist(config.data_dirs[0] if config.data_dirs else None)
    report = {"source": "fashion_mnist", "found": len(yt), "test": len(ys)}
    return TrainingData(
        xt[..., None],
        yt.astype(np.int32),
        10,
        1,
        (xs[..., None], ys),
        list(FASHION_MNIST_CLASSES),
        report,
    )


def _tfds(config, progress=False):
    """A face data set built by `apps.build_dataset`, streamed: labels in memory, the rest
    read per step. People of `exclude_people_from` are held out here as well."""
    from lrface_tf.data.tfds_faces import FaceDataset

    faces = FaceDataset(config.data_dirs[0], image_size=config.image_size)
    report = {"source": "tfds", **faces.describe(), "found": faces.num_examples}
    data = TrainingData(
        None,
        faces.labels(),
        len(faces.class_names),
        3,
        None,
        list(faces.class_names),
        report,
        stream=faces,
    )
    exclude = held_out_people(config.exclude_people_from)
    if exclude:
        people = np.array([name.rsplit("/", 1)[-1] for name in data.class_names] + [""])
        held = np.isin(people[data.labels], sorted(exclude)) & (data.labels >= 0)
        data.select(~held)
        report["exclude_people_from"] = list(config.exclude_people_from)
        report["excluded_people"] = len(exclude)  # named, as for identity folders
        report["excluded_classes"] = int(np.isin(people[:-1], sorted(exclude)).sum())
        report["excluded_images"] = int(held.sum())
        data = _min_images(data, 1)  # the held-out people leave no empty class
    return (
        _min_images(data, config.min_images_per_label) if config.min_images_per_label > 1 else data
    )


def held_out_people(pairs_files):
    """The people named in LFW-format pairs files (to keep them out of training)."""
    from lrface_tf.data.datasets import lfw_pairs

    people = set()
    for path in pairs_files:
        people |= {n for p in lfw_pairs(path) for n in (p.name_a, p.name_b)}
    return people


@dataclasses.dataclass
class FaceListing:
    """The image files of identity folders and flat folders, in training order.

    Attributes:
      paths: every usable image, root by root (people in sorted order), then the
        flat folders' images.
      labels: int32, 0..C-1 across all roots, -1 for the flat folders' images.
      class_names: "<root folder name>/<person>" of each class.
      report: what was read, kept, held out and skipped (by reason), per root.
    """

    paths: list
    labels: np.ndarray
    class_names: list
    report: dict


def list_face_folders(data_dirs, unlabelled_dirs=(), exclude_people_from=(), on_error="skip"):
    """List identity folders (and flat folders of unlabelled faces), holding out the
    people of the pairs files `exclude_people_from`; every image is decoded once
    to find corrupt files (`on_error`: "skip" counts them, "raise" stops naming one).

    One listing serves the in-memory source and `apps.build_dataset`, so a built
    data set has the examples, in the order, that `identity_folder` decodes.
    """
    from lrface_tf.data.datasets import flat_folder, identity_folder

    exclude = held_out_people(exclude_people_from)
    paths, labels, names, roots = [], [], [], []
    for root in data_dirs:
        folder = identity_folder(root, on_error=on_error, exclude_people=exclude)
        excluded = sorted(exclude & set(_people(root)))
        offset = len(names)
        paths += list(folder.paths)
        labels += [offset + int(y) for y in folder.labels]
        prefix = os.path.basename(os.path.normpath(root))
        names += [f"{prefix}/{n}" for n in folder.class_names]
        roots.append(
            {
                "root": root,
                **folder.report.to_dict(),
                "people": folder.num_classes,
                "excluded_people": len(excluded),
            }
        )
    unlabelled = []
    for root in unlabelled_dirs:
        folder = flat_folder(root, on_error=on_error)
        paths += list(folder.paths)
        labels += [UNLABELLED] * len(folder.paths)
        unlabelled.append({"root": root, **folder.report.to_dict()})
    if not paths:
        raise DataError(f"no training images in {', '.join(data_dirs)}")
    report = {
        "roots": roots,
        "unlabelled_roots": unlabelled,
        "exclude_people_from": list(exclude_people_from),
        "excluded_people": len(exclude),
        "found": len(paths),
    }
    return FaceListing(paths, np.asarray(labels, np.int32), names, report)


def skipped_by_reason(report):
    """{reason: files} over every root of a listing's report (e.g. {"corrupt": 2})."""
    counts = {}
    for part in [*report.get("roots", []), *report.get("unlabelled_roots", [])]:
        for reason, n in part.get("reasons", {}).items():
            counts[reason] = counts.get(reason, 0) + n
    return dict(sorted(counts.items()))


def _face_folders(config, progress=False):
    from lrface_tf.eval.pairs import load_images

    listing = list_face_folders(
        config.data_dirs, config.unlabelled_dirs, config.exclude_people_from
    )
    images = load_images(listing.paths, config.image_size, progress=progress)
    report = {"source": "identity_folder", **listing.report}
    names = listing.class_names
    data = TrainingData(images, listing.labels, len(names), 3, None, names, report)
    return (
        _min_images(data, config.min_images_per_label) if config.min_images_per_label > 1 else data
    )


def _people(root):
    try:
        return [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    except OSError:
        return []


def _min_images(data, min_images):
    """People with fewer than `min_images` labelled images become unlabelled; relabel 0..C-1."""
    labels = data.labels
    counts = np.bincount(labels[labels >= 0], minlength=data.num_classes)
    keep = np.flatnonzero(counts >= min_images)
    new_id = np.full(data.num_classes, UNLABELLED, np.int32)
    new_id[keep] = np.arange(len(keep), dtype=np.int32)
    relabelled = np.where(labels >= 0, new_id[np.maximum(labels, 0)], UNLABELLED).astype(np.int32)
    if min_images > 1:
        data.report["min_images_per_label"] = min_images
        data.report["people_below_min_images"] = int(data.num_classes - len(keep))
        data.report["images_unlabelled_below_min"] = int(((labels >= 0) & (relabelled < 0)).sum())
    data.labels = relabelled
    data.class_names = [data.class_names[i] for i in keep]
    data.num_classes = len(keep)
    return data


def stratified_subset(labels, n, seed=0):
    """Indices of a seeded subset of size `n`, each class (and the unlabelled) in proportion.

    Every example gets a random rank within its class; the n examples of lowest
    rank / class size are kept, so class shares match the full set to within one
    example and no class is dropped while n >= the number of classes.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    position = np.empty(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        position[idx] = (rng.permutation(len(idx)) + rng.random()) / len(idx)
    return np.sort(np.argsort(position, kind="stable")[:n])


def _subsets(data, config):
    from lrface_tf.data.pipeline import class_balanced_subset

    report = data.report
    if config.max_examples and config.max_examples < len(data.labels):
        keep = stratified_subset(data.labels, config.max_examples, config.seed)
        data.select(keep)
        before = data.num_classes
        data = _min_images(data, 1)  # classes the subset no longer has are dropped
        report["subset"] = {
            "max_examples": config.max_examples,
            "seed": config.seed,
            "classes_dropped": before - data.num_classes,
        }
    if config.labelled_per_class:
        keep = class_balanced_subset(data.labels, config.labelled_per_class, config.seed)
        masked = np.full_like(data.labels, UNLABELLED)
        masked[keep] = data.labels[keep]
        data.labels = masked
        report["labelled_per_class"] = config.labelled_per_class
    report["used"] = int(len(data.labels))
    report["labelled"] = data.num_labelled
    report["unlabelled"] = int(len(data.labels) - data.num_labelled)
    report["classes"] = data.num_classes
    return data
