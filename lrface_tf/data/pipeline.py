"""tf.data pipelines that yield paired high-/low-resolution views.

From ONE element the pipeline augments once (geometric: flip, padded crop) and
then degrades, so the teacher's HR view and the student's LR view show the same
crop of the same image:

    image --augment--> hr --degrade(spec)--> lr
    yields ({"hr": hr, "lr": lr}, label)

Pixel values are float32 in [0, 1]. A label of -1 marks an unlabelled example
(used by the few-labels transfer: the teacher's soft labels still apply).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

UNLABELLED = -1


def flip_decision(seed):
    """The horizontal-flip coin of one element: a bool tensor from its stateless seed.

    Shared by the augmentation and the teacher cache, which must know which
    variant (flipped or not) the teacher would have seen.
    """
    return tf.random.stateless_uniform([], seed=seed) < 0.5


def augment_flip_crop(image, seed, pad=None, flip=True):
    """Random horizontal flip and a random crop from a reflect-padded image.

    Args:
      image: float `(H, W, C)` with static H, W.
      seed: stateless seed, int32 `(2,)`.
      pad: crop padding in pixels (default `H // 8`); 0 disables the crop.
    """
    h, w = image.shape[0], image.shape[1]
    pad = h // 8 if pad is None else pad
    if flip:
        image = tf.cond(flip_decision(seed), lambda: tf.reverse(image, [1]), lambda: image)
    if pad:
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, [h, w, image.shape[2]], seed=seed + 7)
    return image


AUGMENTATIONS = {
    "none": None,
    "flip_crop": augment_flip_crop,
    "flip": lambda image, seed: augment_flip_crop(image, seed, pad=0),
    "crop": lambda image, seed: augment_flip_crop(image, seed, flip=False),
}


def to_float(image):
    """uint8 [0, 255] (or float already in [0, 1]) -> float32 [0, 1]."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def paired_views(image, label, spec, seed, augment=None, hr_size=None):
    """One element -> ({"hr", "lr"}, label); see the module docstring."""
    hr = to_float(image)
    if hr_size is not None and (hr.shape[0] != hr_size or hr.shape[1] != hr_size):
        hr = tf.image.resize(hr, (hr_size, hr_size), method="area")
    if augment is not None:
        hr = augment(hr, seed)
    lr = spec.apply(hr, seed=seed + 13)
    return {"hr": hr, "lr": lr}, label


def _as_dataset(images, labels, teacher_cache=None, augment=None):
    """A `tf.data.Dataset` of the elements `_arrays` builds (a dataset passes through)."""
    if isinstance(images, tf.data.Dataset) and teacher_cache is None:
        return images
    return tf.data.Dataset.from_tensor_slices(_arrays(images, labels, teacher_cache, augment))


def paired_dataset(
    images,
    labels=None,
    *,
    spec,
    batch_size,
    training=True,
    augment="flip_crop",
    seed=0,
    shuffle_buffer=None,
    drop_remainder=None,
    repeat=False,
    hr_size=None,
    teacher_cache=None,
    start_step=None,
    num_classes=None,
    keep_hr=True,
):
    """Batched `({"hr", "lr"}, label)` dataset from arrays or an (image, label) dataset.

    Args:
      images: uint8/float array `(N, H, W[, C])`, or a `tf.data.Dataset` of
        `(image, label)` (then `labels` is ignored).
      labels: int array `(N,)`; -1 marks unlabelled examples.
      spec: `DegradationSpec` for the LR view.
      batch_size: global batch size.
      training: shuffle + augment when True; deterministic order otherwise.
      augment: key of `AUGMENTATIONS` (training only).
      seed: seeds shuffling and augmentation; the same seed gives the same batches.
      shuffle_buffer: default the whole array (or 10,000 for datasets).
      drop_remainder: default `training`.
      repeat: repeat forever (use with `steps_per_epoch`).
      hr_size: resize the HR view to this size first (area), if it differs.
      teacher_cache: a `TeacherCache` built on the same `images` (arrays only):
        the batch dict then also carries "teacher_embedding" / "teacher_logits"
        of the variant (flipped or not) the HR view shows, and the Distiller
        skips the teacher's forward pass. Needs augment "none" or "flip"
        (a random crop has no finite set of variants to cache).
      start_step: resumable mode (arrays, training only): an endless stream in
        which the batch at global step g depends only on (seed, g) — epoch
        e = g // steps_per_epoch uses the permutation and augmentation seeds of
        (seed, e, example). The stream starts at `start_step`, an int or a
        variable read when the iterator is created. Under `fit()` pass an int:
        `lrface_tf.training.compile_and_fit` gives the step restored from the
        backup (`restored_step`), so a resumed run sees exactly the batches an
        uninterrupted run would have seen; `fit()` reads a batch before its
        callbacks restore the optimizer, so its `iterations` is not safe here.
      keep_hr: False drops the HR view from the batches, which saves moving it
        every step when nothing needs it: a student trained alone on LR views,
        or a direct Distiller reading a teacher cache (a teacher run every step,
        an assistant or a student on the HR view needs it).
      num_classes: when given, array labels must lie in [-1, num_classes)
        (-1: unlabelled); anything else stops with an error before training.
    """
    if num_classes is not None and labels is not None and not isinstance(images, tf.data.Dataset):
        check_labels(labels, num_classes)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}: use one of {', '.join(AUGMENTATIONS)}")
    aug = AUGMENTATIONS[augment] if training else None

    def _views(element, s):
        image, label, *cached = element  # cached: (embeddings[, logits]) with a cache
        views, label = paired_views(image, label, spec, s, augment=aug, hr_size=hr_size)
        if cached:
            v = tf.cast(flip_decision(s), tf.int32) if aug is not None else 0
            views["teacher_embedding"] = cached[0][v]
            if len(cached) > 1:  # an embedding-only teacher's cache has no logits
                views["teacher_logits"] = cached[1][v]
        if not keep_hr:
            del views["hr"]
        return views, label

    if start_step is not None:
        if not training:
            raise ValueError("start_step (resumable stream) is for training datasets")
        arrays = _arrays(images, labels, teacher_cache, augment)
        ds = _step_indexed_stream(len(arrays[1]), batch_size, seed, start_step)
        consts = tuple(tf.constant(a) for a in arrays)

        def _map(e, i):
            s = tf.cast(tf.stack([(seed * 1_000_003 + e) % (2**31 - 1), i]), tf.int32)
            return _views(tuple(tf.gather(c, i) for c in consts), s)

        ds = ds.map(lambda ei: _map(ei[0], ei[1]), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)  # fmt: skip
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    ds = _as_dataset(images, labels, teacher_cache, augment)
    if training:
        n = ds.cardinality()
        buf = shuffle_buffer or (int(n) if n > 0 else 10_000)
        ds = ds.shuffle(buf, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))

    def _map(element, s):
        return _views(element, tf.cast(s % (2**31 - 1), tf.int32))

    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    drop = training if drop_remainder is None else drop_remainder
    return ds.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def check_labels(labels, num_classes):
    """Labels must be -1 (unlabelled) or a class index in [0, num_classes)."""
    labels = np.asarray(labels)
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"label {int(labels[i])} at index {i} is out of range for {num_classes} classes "
            f"({int(bad.sum())} such labels); use 0..{num_classes - 1}, or -1 for unlabelled"
        )


def _arrays(images, labels, cache, augment):
    """(images, labels[, embeddings (N, V, D)[, logits (N, V, C)]]) as numpy arrays."""
    if isinstance(images, tf.data.Dataset):
        raise ValueError(
            "a teacher cache or a resumable stream needs in-memory arrays, not a tf.data.Dataset"
        )
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels, np.int32)
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if cache is None:
        return images, labels
    if augment not in ("none", "flip"):
        raise ValueError(
            f"teacher_cache works with augment 'none' or 'flip', got {augment!r}: "
            "a random crop has no finite set of variants to cache"
        )
    if len(images) != cache.num_examples:
        raise ValueError(f"teacher cache has {cache.num_examples} examples, data has {len(images)}")
    emb = np.swapaxes(cache.embedding, 0, 1)  # (N, V, D)
    if augment == "flip" and emb.shape[1] < 2:
        raise ValueError("augment 'flip' needs a cache built with variants ('none', 'flip')")
    if cache.logits is None:
        return images, labels, emb
    return images, labels, emb, np.swapaxes(cache.logits, 0, 1)


def _step_indexed_stream(n, batch_size, seed, start_step):
    """Endless (epoch, example index) pairs from global step `start_step` on."""
    steps = n // batch_size
    if steps < 1:
        raise ValueError(f"{n} examples make no full batch of {batch_size}")
    per_epoch = steps * batch_size

    def epoch(e):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), e])
        )
        return tf.data.Dataset.from_tensor_slices(
            tf.stack([tf.fill([per_epoch], e), perm[:per_epoch]], axis=1)
        )

    def from_step(g):
        return (
            tf.data.Dataset.range(g // steps, 2**62).flat_map(epoch).skip((g % steps) * batch_size)
        )

    def read(_):
        value = start_step
        if not isinstance(value, tf.Variable) and hasattr(value, "value"):  # a Keras variable
            value = value.value
        return tf.cast(tf.convert_to_tensor(value), tf.int64)

    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(read).flat_map(from_step)


def single_view_dataset(images, labels, *, size=None, batch_size=256, spec=None):
    """Batched `(image, label)` for evaluation: full resolution, or degraded by `spec`.

    Args:
      size: None keeps the images; an int resizes with area (no degradation model).
      spec: a `DegradationSpec` whose deterministic form (first size) is applied.
    """
    ds = _as_dataset(images, labels)

    def _map(image, label):
        x = to_float(image)
        if spec is not None:
            x = spec.apply(x, seed=tf.constant([0, 0], tf.int32))
        elif size is not None:
            x = tf.image.resize(x, (size, size), method="area")
        return x, label

    return ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def class_balanced_subset(labels, per_class, seed=0):
    """Indices of a fixed class-balanced subset: `per_class` examples of each class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than per_class={per_class}")
        picks.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picks))
