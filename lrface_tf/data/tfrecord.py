"""Sharded TFRecords for identity-folder data sets too big for memory.

`write_tfrecords` stores each image's original encoded bytes (no re-encoding,
so no quality loss), its label and its person's name, spread round-robin over
`num_shards` files, each written atomically, plus a `manifest.json` (counts per
shard, class names). `tfrecord_dataset` streams them back: shards are read
interleaved and decoded on the fly, so memory stays flat in the data set size,
and under a multi-worker strategy tf.data's FILE auto-sharding gives each worker
its own shards (use at least as many shards as workers).

    folder = identity_folder("faces/")           # lists and verifies the images
    write_tfrecords(folder, "faces_tfr/", num_shards=64)
    ds = tfrecord_dataset("faces_tfr/", size=112)  # (image [0, 1], label)
"""

from __future__ import annotations

import json
import os

from lrface_tf.data.datasets import DataError, decode_image_bytes

MANIFEST = "manifest.json"
FORMAT = 1


def shard_name(index, num_shards):
    return f"data-{index:05d}-of-{num_shards:05d}.tfrecord"


def write_tfrecords(folder, out_dir, num_shards=16, progress=True):
    """Write an `IdentityFolder` as `num_shards` TFRecord files and a manifest.

    Example i goes to shard i % num_shards, so every shard holds a spread of
    identities. Returns the manifest dict.
    """
    import keras
    import tensorflow as tf

    from lrface_tf.export.atomic import atomic_path, write_json

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    n = len(folder.paths)
    if n == 0:
        raise DataError(f"{folder.root}: no images to write")
    os.makedirs(out_dir, exist_ok=True)
    counts = [0] * num_shards
    bar = keras.utils.Progbar(n, verbose=1 if progress else 0, unit_name="image")
    for s in range(num_shards):
        with atomic_path(os.path.join(out_dir, shard_name(s, num_shards))) as tmp:
            with tf.io.TFRecordWriter(tmp) as writer:
                for i in range(s, n, num_shards):
                    with open(folder.paths[i], "rb") as f:
                        data = f.read()
                    label = int(folder.labels[i])
                    writer.write(_example(data, label, folder.class_names[label]))
                    counts[s] += 1
                    bar.add(1)
    manifest = {
        "format": FORMAT,
        "num_examples": n,
        "num_classes": len(folder.class_names),
        "class_names": list(folder.class_names),
        "shards": [
            {"file": shard_name(s, num_shards), "examples": c} for s, c in enumerate(counts)
        ],
        "source": os.path.abspath(folder.root),
    }
    write_json(os.path.join(out_dir, MANIFEST), manifest)  # last: marks the set complete
    return manifest


def _example(data, label, name):
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "person": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_manifest(tfr_dir):
    path = os.path.join(tfr_dir, MANIFEST)
    if not os.path.exists(path):
        raise DataError(
            f"{tfr_dir}: no {MANIFEST}; not a complete TFRecord set "
            "(write it with lrface_tf.data.tfrecord.write_tfrecords)"
        )
    with open(path) as f:
        manifest = json.load(f)
    missing = [
        s["file"]
        for s in manifest["shards"]
        if not os.path.exists(os.path.join(tfr_dir, s["file"]))
    ]
    if missing:
        raise DataError(f"{tfr_dir}: shard {missing[0]} is missing ({len(missing)} missing)")
    return manifest


class TFRecordSet:
    """A written TFRecord set: its folder and manifest; `len()` is the example count."""

    def __init__(self, tfr_dir):
        self.root = tfr_dir
        self.manifest = read_manifest(tfr_dir)

    def __len__(self):
        return self.manifest["num_examples"]

    @property
    def num_classes(self):
        return self.manifest["num_classes"]

    def dataset(self, size, channels=3, seed=0):
        """Shards shuffled, then a 10,000-example shuffle buffer (training order)."""
        return tfrecord_dataset(self.root, size, channels, shuffle_files=True, seed=seed).shuffle(
            10_000, seed=seed
        )


def tfrecord_dataset(tfr_dir, size, channels=3, shuffle_files=False, seed=0, cycle_length=4):
    """Stream `(image float32 [0, 1] (size, size, C), label int32)` from a TFRecord set.

    Unbatched and not shuffled at the example level (add `.shuffle(buffer)`);
    `shuffle_files` reorders the shards. Reads `cycle_length` shards at a time.
    """
    import tensorflow as tf

    manifest = read_manifest(tfr_dir)
    files = [os.path.join(tfr_dir, s["file"]) for s in manifest["shards"]]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle_length,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def decode(record):
        ex = tf.io.parse_single_example(record, spec)
        img = decode_image_bytes(ex["image"], size, channels)
        img.set_shape((size, size, channels))
        return img, tf.cast(ex["label"], tf.int32)

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
