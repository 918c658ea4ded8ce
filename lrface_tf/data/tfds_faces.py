"""Face data sets on TensorFlow Datasets: built once from identity folders, streamed to training.

    faces = build_face_dataset("faces_tfds", ["aligned/"], exclude_people_from=["pairs.txt"],
                               teacher="teacher.keras", views=ViewSpec(count=2))
    faces = FaceDataset("faces_tfds", image_size=112)   # tfds.builder_from_directory inside
    tfds.show_examples(faces.builder.as_dataset("train"), faces.builder.info)

A built data set is a plain TFDS data set (`<dst>/identity_faces/1.0.0/`):
versioned, sharded TFRecords (each record carries a CRC32C that TensorFlow
checks on every read; the sha256 of every shard is in the metadata, checked by
`FaceDataset.verify`), written into a temporary folder and renamed when
complete, so a killed build never leaves a data set that reads as whole.
Every tool of TFDS reads it (`tfds.builder_from_directory`, `tfds.as_dataframe`,
`tfds.show_examples`).

Features of every example:
  image               the file's original bytes, never re-encoded (JPEG, PNG, BMP,
                      GIF, PGM/PPM/PBM, TIFF, WEBP: `FaceImage` decodes each format)
  label               int64, 0..C-1 (classes in `metadata["class_names"]`), -1 unlabelled
  person              the person folder's name ("" for unlabelled images)
  path                the source file (absolute)
  index               int64 position in build order (root by root, people sorted,
                      then the flat folders): the order `identity_folder` decodes, so
                      subsets drawn by index are the in-memory source's subsets
  view_params         float32 (K, P): the K fixed views' parameters (with views;
                      `lrface_tf.data.views.PARAMS`)
  teacher_embedding   float32 (K, D): the frozen teacher's embedding of each view
  teacher_logits      float32 (K, C): its logits, when the teacher has them

Metadata (`builder.info.metadata`, metadata.json): the class names, the labels in
index order (run-length), the roots read and the files skipped by reason, the
pairs files whose people are held out and how many, the splits (one "train"
split: the training pool; test people are held out, not stored), the view spec,
the teacher (path, fingerprint, runtime, HR size), and the shard checksums.

Streaming (`FaceDataset.paired_dataset`): under `strategy.distribute_datasets_from_function`
each input pipeline (worker) reads its own shards (`tfds.ReadConfig(input_context=...)`;
build at least as many shards as workers). Memory is flat in the data set size:
encoded records pass through a bounded shuffle buffer and are decoded per step;
only the labels (4 bytes per example) are in memory. The stream is a sequence of
passes, each a deterministic function of (seed, pass): shards shuffled, records
filtered to the run's examples and shuffled, then `steps_per_pass` batches per
worker. Views, teacher outputs and the LR view are made as `paired_dataset`
makes them for arrays (`paired_views`), each example seeded by (seed, pass, index).

Resume: the batch of global step g is a function of (seed, g) for a fixed
number of workers and batch size, as for in-memory arrays; a resumed stream
opens pass g // steps_per_pass and skips the (g % steps_per_pass) batches
already trained, reading (not decoding) their records again, so it sees exactly
the batches an uninterrupted run would have seen. Changing the number of workers
between the kill and the resume changes which shards each worker reads: the
resumed run then sees another (equally valid) order; so does
`deterministic=False` (--nodeterministic_input), which lets decoded examples
overtake each other.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import glob
import hashlib
import math
import os
import re
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lrface_tf.data.images import DataError, decode_image_bytes
from lrface_tf.data.views import PARAMS, ViewSpec

NAME = "identity_faces"
DATASET_VERSION = "1.0.0"
FORMAT = 1  # of the metadata lrface_tf writes and reads
SPLIT = "train"
NOT_SELECTED = -2  # label-table value of an example the run does not use


class FaceImage(tfds.features.Image):
    """An image stored as its file's original bytes, in any format lrface_tf reads.

    `tfds.features.Image` decodes with `tf.image.decode_image` (JPEG, PNG, GIF,
    BMP); this decodes with `lrface_tf.data.images.decode_image_bytes` (also
    PGM/PPM/PBM, TIFF, WEBP) to uint8 `(H, W, 3)`. TFDS finds the class by its
    module path when reading a data set, so any tool of TFDS shows the images.
    """

    def decode_example(self, example):
        image = decode_image_bytes(example, channels=self.shape[-1])
        return tf.cast(tf.round(image * 255.0), tf.uint8)


def face_features(num_views=0, embedding_dim=0, num_logits=0):
    """The `FeaturesDict` of a face data set (see the module docstring)."""
    features = {
        "image": FaceImage(shape=(None, None, 3), doc="the file's original bytes"),
        "label": tfds.features.Scalar(np.int64, doc="identity 0..C-1; -1: unlabelled"),
        "person": tfds.features.Text(doc="person folder name; empty when unlabelled"),
        "path": tfds.features.Text(doc="source file"),
        "index": tfds.features.Scalar(np.int64, doc="position in build order"),
    }
    if num_views:
        features["view_params"] = tfds.features.Tensor(
            shape=(num_views, len(PARAMS)), dtype=np.float32, doc=", ".join(PARAMS)
        )
    if embedding_dim:
        features["teacher_embedding"] = tfds.features.Tensor(
            shape=(num_views, embedding_dim), dtype=np.float32
        )
    if num_logits:
        features["teacher_logits"] = tfds.features.Tensor(
            shape=(num_views, num_logits), dtype=np.float32
        )
    return tfds.features.FeaturesDict(features)


class _FaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A GeneratorBasedBuilder (not `store_as_tfds_dataset`, whose builder takes no
    metadata): examples come from a generator that decodes, runs the teacher and
    yields one chunk of files at a time, and the metadata (exclusion, splits,
    views, teacher, shard checksums) is written with the data set."""

    name = NAME
    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {
        DATASET_VERSION: "Original image bytes, label, person, source path and build index; "
        "optionally K views' parameters and the frozen teacher's outputs for each."
    }

    def __init__(self, *, examples, features, description, metadata, **kwargs):
        self._face_examples = examples
        self._face_features = features
        self._face_description = description
        self._face_metadata = metadata
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._face_description,
            features=self._face_features,
            metadata=tfds.core.MetadataDict(self._face_metadata),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {SPLIT: self._generate_examples()}

    def _generate_examples(self):
        yield from self._face_examples

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config)
        # The shards are in the (temporary) data folder now; the metadata is written after.
        self.info.metadata["shard_sha256"] = {
            os.path.basename(p): _sha256(p) for p in sorted(glob.glob(_shard_glob(self.data_dir)))
        }


def _shard_glob(folder):
    return os.path.join(os.fspath(folder), f"{NAME}-{SPLIT}.tfrecord-*")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _runs(labels):
    """Run-length `[[label, count], ...]` of a label array (JSON-ready)."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    counts = np.diff(np.r_[starts, len(labels)])
    return [[int(labels[s]), int(c)] for s, c in zip(starts, counts)]


def _teacher_dims(teacher):
    """(embedding dim, number of logits or 0) of a Keras teacher."""
    out = teacher.output
    out = out if isinstance(out, dict) else {"embedding": out}
    logits = out.get("logits")
    return int(out["embedding"].shape[-1]), int(logits.shape[-1]) if logits is not None else 0


def build_face_dataset(
    dst,
    data_dirs,
    *,
    unlabelled_dirs=(),
    exclude_people_from=(),
    on_error="raise",
    teacher=None,
    views=None,
    image_size=None,
    runtime="keras",
    num_shards=16,
    replicate=1,
    batch_size=64,
    chunk_size=256,
    progress=True,
):
    """Write identity folders (and flat folders of unlabelled faces) as a TFDS data set.

    Args:
      dst: output folder; the data set goes to `<dst>/identity_faces/1.0.0/`.
      data_dirs: identity folders `root/<person>/<image>`.
      unlabelled_dirs: flat folders of unlabelled faces (label -1).
      exclude_people_from: LFW-format pairs files whose people are not written.
      on_error: "raise" stops at the first corrupt or unsupported image, naming
        it; "skip" skips it and lists it in the report (counts by reason).
      teacher: a frozen teacher (`.keras` path or model): its embeddings (and
        logits) of each image's K views are stored with the views' parameters.
      views: the `ViewSpec` of those views (default: one view, the image itself).
      image_size: the HR size the views (and the teacher) see; default the
        teacher's input size. The same pixels as the in-memory source.
      runtime: "keras" or "tflite": what runs the teacher.
      num_shards: shard files (at least the number of training workers); 0 lets
        TFDS choose by size (64 MiB to 1 GiB per shard).
      replicate: write every image this many times, each a distinct example with
        the same bytes and teacher outputs (benchmarks: a large data set from a
        small pool of faces).
      chunk_size: images decoded (and run through the teacher) at a time.

    Returns:
      the `FaceDataset` written; `.report` says what was read, written and skipped.
    """
    from lrface_tf.data.sources import list_face_folders, skipped_by_reason
    from lrface_tf.data.teacher_cache import fingerprint, image_keys, run_teacher, teacher_runner
    from lrface_tf.eval.pairs import load_images
    from lrface_tf.validation import check_int

    check_int("num_shards", num_shards, 0)
    check_int("replicate", replicate, 1)
    existing = _find_versions(dst)
    if existing:
        raise DataError(
            f"{dst} already holds a data set ({existing[0]}); choose another --dst or delete it"
        )
    teacher_path = None
    if isinstance(teacher, (str, os.PathLike)):
        from lrface_tf.experiment import load_teacher

        teacher_path, teacher = os.path.abspath(teacher), load_teacher(teacher)
    if teacher is not None:
        size = int(teacher.input_shape[1])
        if image_size and image_size != size:
            raise ValueError(
                f"the teacher takes {size}x{size} images; its outputs are stored at that size "
                f"(drop --image_size={image_size} or set it to {size})"
            )
        image_size, views = size, views or ViewSpec()
    if views is not None and not image_size:
        raise ValueError("views need the HR size they are drawn at: pass --image_size")
    listing = list_face_folders(data_dirs, unlabelled_dirs, exclude_people_from, on_error)
    paths, labels = listing.paths, listing.labels
    people = [n.rsplit("/", 1)[-1] for n in listing.class_names] + [""]
    total = len(paths) * replicate

    dims = _teacher_dims(teacher) if teacher is not None else (0, 0)
    run = teacher_runner(teacher, runtime) if teacher is not None else None
    teacher_record = None
    if teacher is not None:
        teacher_record = {
            "path": teacher_path or teacher.name,
            "fingerprint": fingerprint(teacher, views, image_size, runtime),
            "runtime": runtime,
            "hr_size": int(image_size),
            "embedding_dim": dims[0],
            "num_logits": dims[1],
        }

    def examples():
        for start in range(0, len(paths), chunk_size):
            part = paths[start : start + chunk_size]
            extra = {}
            if views is not None:
                pixels = load_images(part, image_size)  # the in-memory source's pixels
                params = views.params(image_keys(pixels))
                extra["view_params"] = params
                if teacher is not None:
                    emb, logits = run_teacher(teacher, pixels, params, batch_size, None, False, run)
                    extra["teacher_embedding"] = emb
                    if logits is not None:
                        extra["teacher_logits"] = logits
            for j, path in enumerate(part):
                i = start + j
                with open(path, "rb") as f:
                    data = f.read()
                example = {
                    "image": data,
                    "label": int(labels[i]),
                    "person": people[labels[i]],
                    "path": os.path.abspath(path),
                    **{k: v[:, j] for k, v in extra.items()},
                }
                for r in range(replicate):
                    yield i * replicate + r, {**example, "index": i * replicate + r}

    report = {
        **listing.report,
        "skipped_by_reason": skipped_by_reason(listing.report),
        "written": total,
        "replicate": replicate,
    }
    metadata = {
        "format": FORMAT,
        "num_examples": total,
        "class_names": list(listing.class_names),
        "label_runs": _runs(np.repeat(labels, replicate)),
        "splits": {SPLIT: total},
        "image_size": int(image_size) if image_size else None,
        "views": views.to_dict() if views is not None else None,
        "teacher": teacher_record,
        "report": report,
    }
    builder = _FaceBuilder(
        examples=examples(),
        features=face_features(views.count if views else 0, *dims),
        description=_description(listing, total, views, teacher_record, exclude_people_from),
        metadata=metadata,
        data_dir=dst,
    )
    tfds.display_progress_bar(progress)
    shards = min(num_shards, total) if num_shards else None
    with tempfile.TemporaryDirectory() as downloads:
        builder.download_and_prepare(
            download_dir=downloads,
            download_config=tfds.download.DownloadConfig(num_shards=shards),
        )
    faces = FaceDataset(builder.data_dir)
    faces.report = report
    return faces


def _description(listing, total, views, teacher, exclude_people_from):
    labelled = int((listing.labels >= 0).sum())
    roots = ", ".join(r["root"] for r in listing.report["roots"]) or "no identity folder"
    text = (
        f"{total} face images ({labelled} labelled of {len(listing.class_names)} people, "
        f"{len(listing.labels) - labelled} unlabelled) from {roots}"
    )
    flat = listing.report["unlabelled_roots"]
    if flat:
        text += " and the flat folders " + ", ".join(r["root"] for r in flat)
    text += f". One split, '{SPLIT}': the training pool."
    if exclude_people_from:
        present = sum(r["excluded_people"] for r in listing.report["roots"])
        text += (
            f" The people of {', '.join(exclude_people_from)} are held out: {present} of them "
            "had folders here (not written)."
        )
    if views is not None:
        text += f" Each image has {views.count} fixed views ({views.to_dict()})"
        text += f" and the outputs of the teacher {teacher['path']} for each." if teacher else "."
    return text + " Built by lrface_tf (python -m apps.build_dataset)."


# ----------------------------------------------------------------------- reading
def _find_versions(folder):
    """The complete data sets in `folder` (itself, <version>/ or <name>/<version>/), newest
    first."""
    folder = os.fspath(folder)
    if os.path.exists(os.path.join(folder, "dataset_info.json")):
        return [folder]
    found = []
    for info in glob.glob(os.path.join(folder, "*", "dataset_info.json")) or glob.glob(
        os.path.join(folder, "*", "*", "dataset_info.json")
    ):
        version = os.path.basename(os.path.dirname(info))
        if re.fullmatch(r"\d+\.\d+\.\d+", version):  # not a killed build's temporary folder
            found.append(os.path.dirname(info))
    return sorted(found, key=lambda p: [int(x) for x in os.path.basename(p).split(".")])[::-1]


def dataset_dir(folder):
    """The version folder of the face data set in `folder` (its --dst, or the folder itself)."""
    found = _find_versions(folder)
    if not found:
        raise DataError(
            f"{folder}: no TFDS data set here (no dataset_info.json); build one with "
            f"python -m apps.build_dataset --data_dir=<identity folder> --dst={folder}"
        )
    if len(found) > 1:
        raise DataError(f"{folder} holds several data sets ({', '.join(found)}); point at one")
    return found[0]


@dataclasses.dataclass
class StoredTeacherOutputs:
    """The frozen teacher's outputs stored in a face data set: the streamed counterpart
    of `TeacherCache` (what `Distiller` reads instead of running the teacher).

    Attributes:
      dataset: the `FaceDataset` (with the run's examples).
      views: the `ViewSpec` the outputs were computed for.
      teacher: the metadata's teacher record (path, fingerprint, runtime, sizes).
      head: None, or `(kernel (D, C), scale)` of a cosine head whose logits the
        stream computes from the stored embeddings (`with_head`).
    """

    dataset: FaceDataset
    views: ViewSpec
    teacher: dict
    head: tuple | None = None

    @property
    def num_views(self):
        return self.views.count

    @property
    def has_logits(self):
        return bool(self.teacher["num_logits"])

    def with_head(self, kernel, scale):
        """These outputs with cosine-head logits `scale * cos(e, kernel[:, c])` on the fly."""
        return dataclasses.replace(self, head=(np.asarray(kernel, np.float32), float(scale)))

    def class_sums(self, labels, num_classes):
        """`(C, D)` sums of the unit-length view-0 embeddings of each class (one pass)."""
        return self.dataset.class_sums(labels, num_classes)


class FaceDataset:
    """A face data set built by `build_face_dataset`, and the examples a run uses.

    Args:
      path: the data set's folder (the --dst of the build, or its version folder).
      image_size: the size images are decoded to (default the size its views
        and teacher outputs were computed at).

    Attributes:
      builder: the `tfds` builder (`tfds.builder_from_directory`).
      metadata: the metadata lrface_tf wrote (see the module docstring).
      index: the examples in use (data-set indices; `select` narrows them).
    """

    def __init__(self, path, image_size=None):
        self.path = dataset_dir(path)
        self.builder = tfds.builder_from_directory(self.path)
        self.metadata = dict(self.builder.info.metadata or {})
        if self.metadata.get("format") != FORMAT:
            raise DataError(
                f"{self.path}: not a face data set of lrface_tf (format {FORMAT}); build one "
                "with python -m apps.build_dataset"
            )
        self.image_size = image_size or self.metadata.get("image_size")
        self.index = np.arange(self.num_examples, dtype=np.int64)
        self.report = self.metadata.get("report", {})

    def __len__(self):
        return len(self.index)

    @property
    def num_examples(self):
        return int(self.metadata["num_examples"])

    @property
    def class_names(self):
        return list(self.metadata["class_names"])

    @property
    def views(self):
        v = self.metadata.get("views")
        return ViewSpec(**v) if v else None

    @property
    def teacher(self):
        return self.metadata.get("teacher")

    @property
    def num_shards(self):
        return len(self.builder.info.splits[SPLIT].shard_lengths)

    def labels(self):
        """int32 `(num_examples,)`: every example's label, in index order."""
        return np.concatenate(
            [np.full(n, y, np.int32) for y, n in self.metadata["label_runs"]] or [[]]
        ).astype(np.int32)

    def select(self, keep):
        """A copy that uses the examples `keep` (indices or mask into `index`)."""
        out = copy.copy(self)
        out.index = self.index[keep]
        return out

    def describe(self):
        """What the run record says about the data set."""
        info = self.builder.info
        built = {k: self.report.get(k) for k in ("exclude_people_from", "excluded_people")}
        built["roots"] = [
            {k: r.get(k) for k in ("root", "found", "kept", "people", "reasons")}
            for r in [*self.report.get("roots", []), *self.report.get("unlabelled_roots", [])]
        ]
        teacher = self.teacher
        return {
            "root": self.path,
            "dataset": f"{info.name} {info.version}",
            "shards": self.num_shards,
            "image_size": self.image_size,
            "views": self.metadata.get("views"),
            "teacher": {k: teacher[k] for k in ("path", "fingerprint")} if teacher else None,
            "replicate": self.report.get("replicate", 1),
            "built_from": built,
        }

    def verify(self):
        """Check every shard against its sha256 in the metadata (reads the whole data set)."""
        sums = self.metadata.get("shard_sha256", {})
        for name, digest in sorted(sums.items()):
            path = os.path.join(self.path, name)
            if not os.path.exists(path):
                raise DataError(f"{path}: shard missing; rebuild the data set")
            if _sha256(path) != digest:
                raise DataError(f"{path}: checksum mismatch (corrupt or changed); rebuild it")
        return len(sums)

    def records(self, *, decode_images=True, shuffle_seed=None, input_context=None):
        """Every example as TFDS reads it (in shard order unless `shuffle_seed`)."""
        read = tfds.ReadConfig(
            shuffle_seed=shuffle_seed, input_context=input_context, try_autocache=False
        )
        decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
        return self.builder.as_dataset(
            SPLIT, shuffle_files=shuffle_seed is not None, read_config=read, decoders=decoders
        )

    # ------------------------------------------------------------- teacher outputs
    def teacher_outputs(self, teacher, views=None):
        """The stored outputs of `teacher`, checked: the same weights, the run's views
        (`views`, when given) and its HR size; a one-line error says what to rebuild."""
        from lrface_tf.data.teacher_cache import fingerprint

        stored = self.teacher
        if not stored:
            raise ValueError(
                f"{self.path} holds no teacher outputs; rebuild it with python -m "
                "apps.build_dataset --teacher=<teacher.keras> and the run's view flags, or "
                "drop --teacher_cache"
            )
        if views is not None and views != self.views:
            raise ValueError(
                f"{self.path} holds teacher outputs for views {self.views}, the run asks for "
                f"{views}; rebuild it with the run's view flags (--views, --augment=flip: 2)"
            )
        if self.image_size != stored["hr_size"]:
            raise ValueError(
                f"{self.path} holds teacher outputs at {stored['hr_size']} px but the run "
                f"decodes at {self.image_size} px; set --teacher_size={stored['hr_size']}"
            )
        fp = fingerprint(teacher, self.views, stored["hr_size"], stored["runtime"])
        if fp != stored["fingerprint"]:
            raise ValueError(
                f"{self.path} holds the outputs of another teacher ({stored['path']}); pass "
                "that --teacher, or rebuild the data set with this one"
            )
        return StoredTeacherOutputs(self, self.views, stored)

    def class_sums(self, labels, num_classes):
        """`(C, D)` float64 sums of the unit-length view-0 teacher embeddings of each
        class (`labels`: the run's labels of `index`); one pass, images not decoded."""
        table = tf.constant(self._label_table(labels))
        ds = self.records(decode_images=False).map(
            lambda r: (tf.gather(table, r["index"]), r["teacher_embedding"][0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        sums = np.zeros((num_classes, self.teacher["embedding_dim"]))
        for y, e in ds.filter(lambda y, e: y >= 0).batch(1024).as_numpy_iterator():
            e = e.astype(np.float64)
            np.add.at(sums, y, e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
        return sums

    def _label_table(self, labels):
        labels = np.asarray(labels, np.int32)
        if len(labels) != len(self.index):
            raise ValueError(f"got {len(labels)} labels for {len(self.index)} examples")
        table = np.full(self.num_examples, NOT_SELECTED, np.int32)
        table[self.index] = labels
        return table

    # ------------------------------------------------------------------ streaming
    def paired_dataset(
        self,
        labels,
        *,
        spec,
        batch_size,
        end_step,
        seed=0,
        start_step=0,
        augment="none",
        views=None,
        teacher_outputs=None,
        keep_hr=True,
        deterministic=True,
        shuffle_buffer=10_000,
        strategy=None,
    ):
        """Batched `({"hr", "lr"[, "teacher_embedding"[, "teacher_logits"]]}, label)`
        per replica, from global step `start_step` to `end_step`, distributed with
        `strategy.distribute_datasets_from_function` (default: the current strategy).

        Args:
          labels: the run's labels of `index` (relabelled, masked by subsets).
          spec, batch_size (global), seed, augment, keep_hr: as `paired_dataset`.
          views: a `ViewSpec` the data set stores (each step shows one view per
            example), or None for `augment`.
          teacher_outputs: `teacher_outputs(...)`: the stored outputs of the view
            shown replace running the teacher (a head's logits are computed per batch).
          deterministic: keep the decode map's order (the exact resume above);
            False lets slow examples be overtaken (faster; batches vary).
          shuffle_buffer: encoded records shuffled per worker (memory bound).
        """
        from lrface_tf.data.pipeline import AUGMENTATIONS, cosine_head, head_logits, paired_views

        if not self.image_size:
            raise ValueError(f"{self.path}: pass the image size to decode to (--teacher_size)")
        table = tf.constant(self._label_table(labels))
        steps_per_pass = len(labels) // batch_size
        if steps_per_pass < 1:
            raise ValueError(
                f"{len(labels)} examples make no full batch of {batch_size}; lower --batch_size"
            )
        if teacher_outputs is not None:
            views = teacher_outputs.views
        if views is not None and views != self.views:
            raise ValueError(
                f"{self.path} stores views {self.views}, the run asks for {views}; rebuild it "
                "with the run's view flags"
            )
        fields = ["view_params"] if views is not None else []
        if teacher_outputs is not None:
            fields.append("teacher_embedding")
            if teacher_outputs.has_logits:
                fields.append("teacher_logits")
        head = cosine_head(teacher_outputs.head) if teacher_outputs is not None else None
        views_of = functools.partial(
            paired_views,
            spec=spec,
            training=True,
            augment_fn=AUGMENTATIONS[augment] if views is None else None,
            keep_hr=keep_hr,
            views=views,
        )
        size = int(self.image_size)
        buffer = max(1, min(shuffle_buffer, len(labels)))

        def one_pass(p, ctx, length, skip):
            pass_seed = (seed * 1_000_003 + p) % (2**31 - 1)
            ds = self.records(decode_images=False, shuffle_seed=pass_seed, input_context=ctx)

            def pick(r):
                return (
                    r["index"],
                    r["image"],
                    tf.gather(table, r["index"]),
                    *(r[k] for k in fields),
                )

            ds = ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE)
            ds = ds.filter(lambda i, image, label, *rest: label > NOT_SELECTED)
            ds = ds.shuffle(buffer, seed=pass_seed).repeat().take(length).skip(skip)

            def element(i, image, label, *rest):
                pixels = decode_image_bytes(image, size)  # float, area-resized
                pixels = tf.cast(tf.round(pixels * 255.0), tf.uint8)  # the in-memory pixels
                s = tf.cast(tf.stack([tf.constant(pass_seed, tf.int64), i]), tf.int32)
                return views_of((pixels, label, *rest), s)

            return ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

        def dataset_fn(ctx):
            if ctx.num_input_pipelines > self.num_shards:
                raise ValueError(
                    f"{self.path} has {self.num_shards} shards for {ctx.num_input_pipelines} "
                    f"workers; rebuild it with --num_shards >= {ctx.num_input_pipelines}"
                )
            per_worker = batch_size // ctx.num_input_pipelines
            first, offset = divmod(int(start_step), steps_per_pass)
            last = max(first + 1, math.ceil(int(end_step) / steps_per_pass))
            passes = [
                one_pass(
                    p, ctx, steps_per_pass * per_worker, offset * per_worker if p == first else 0
                )
                for p in range(first, last)
            ]
            ds = functools.reduce(lambda a, b: a.concatenate(b), passes)
            ds = ds.take(max(0, int(end_step) - int(start_step)) * per_worker)
            ds = ds.batch(ctx.get_per_replica_batch_size(batch_size), drop_remainder=True)
            if head is not None:  # one (B, D) x (D, C) product per batch
                ds = ds.map(
                    lambda x, y: (head_logits(x, head), y), num_parallel_calls=tf.data.AUTOTUNE
                )
            return ds.prefetch(tf.data.AUTOTUNE)

        strategy = strategy or tf.distribute.get_strategy()
        return strategy.distribute_datasets_from_function(dataset_fn)
