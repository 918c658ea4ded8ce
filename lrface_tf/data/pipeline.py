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

from lrface_tf.data.degrade import degrade
from lrface_tf.data.views import apply_view

UNLABELLED = -1


def flip_decision(seed):
    """The horizontal-flip coin of one element: a bool tensor from its stateless seed."""
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


def _as_dataset(images, labels, teacher_cache=None, views=None):
    """A `tf.data.Dataset` of the elements `_arrays` builds (a dataset passes through)."""
    if isinstance(images, tf.data.Dataset) and teacher_cache is None and views is None:
        return images
    return tf.data.Dataset.from_tensor_slices(_arrays(images, labels, teacher_cache, views))


def paired_dataset(
    images,
    labels=None,
    *,
    spec,
    batch_size,
    training=True,
    augment="flip_crop",
    views=None,
    seed=0,
    shuffle_buffer=None,
    drop_remainder=None,
    repeat=False,
    hr_size=None,
    teacher_cache=None,
    start_step=None,
    num_classes=None,
    keep_hr=True,
    labelled_fraction=0.0,
    deterministic=True,
    precompute_lr=False,
    lr_augment=None,
):
    """Batched `({"hr", "lr"}, label)` dataset from arrays or an (image, label) dataset.

    Args:
      images: uint8/float array `(N, H, W[, C])`, or a `tf.data.Dataset` of
        `(image, label)` (then `labels` is ignored).
      labels: int array `(N,)`; -1 marks unlabelled examples.
      spec: `DegradationSpec` for the LR view.
      batch_size: global batch size.
      training: shuffle + augment when True; deterministic order otherwise.
      augment: key of `AUGMENTATIONS` (training only), for runs without `views`.
      views: a `ViewSpec` (arrays only): every image has K fixed augmented views
        (`lrface_tf.data.views`) and each step shows one of them, drawn per
        example; the LR view is made from it. Replaces `augment`.
      seed: seeds shuffling and augmentation; the same seed gives the same batches.
      shuffle_buffer: default the whole array (or 10,000 for datasets).
      drop_remainder: default `training`.
      repeat: repeat forever (use with `steps_per_epoch`).
      hr_size: resize the HR view to this size first (area), if it differs.
      teacher_cache: a `TeacherCache` built on the same `images` and views (arrays
        only): the batch dict then also carries "teacher_embedding" (and
        "teacher_logits" when the cache has logits or a head) of the view the HR
        image shows, and the Distiller skips the teacher's forward pass.
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
        or a student on the HR view, needs it).
      num_classes: when given, array labels must lie in [-1, num_classes)
        (-1: unlabelled); anything else stops with an error before training.
      labelled_fraction: resumable mode: this share of every batch is drawn from
        the labelled examples (oversampling a few labels among many unlabelled);
        0 draws uniformly.
      deterministic: keep the order of the parallel map (decode, view, degrade run
        on every core either way). True: the batch at step g is the same in every
        run, which the resumable stream's exact resume (and its tests) needs.
        False: a slow element no longer holds back the ones after it, so the map
        keeps more cores busy when element costs vary, but examples near a batch
        boundary may land in the neighbouring batch: every example is still seen
        once per epoch with the same view and augmentation, only the grouping
        into batches varies from run to run (and a resumed run no longer replays
        the exact batches). Evaluation order (`training=False`) is always kept.
      precompute_lr: with `views` (or a teacher cache) and `keep_hr=False`, make
        every image's LR views once, up front (`lr_views`), instead of warping
        and degrading the HR image at every step: each step then only gathers.
        Same values (the same ops, batched); needs a deterministic `spec` (one
        size, probability 1) and arrays. Memory: N x K x h x w x C float32 (K
        views; 10,000 faces x 2 views at 16x16x3: 61 MB), in place of the N HR
        images (N x 112 x 112 x 3 uint8: 376 MB) the stream no longer holds.
      lr_augment: an `LRAugment` (training only): the LR view perturbed afresh at
        every step (noise, random erasing), after it is made or gathered; the
        teacher's outputs stay those of the clean view.
    """
    if num_classes is not None and labels is not None and not isinstance(images, tf.data.Dataset):
        check_labels(labels, num_classes)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}: use one of {', '.join(AUGMENTATIONS)}")
    if teacher_cache is not None:
        if augment not in ("none", "flip"):
            raise ValueError(
                f"a teacher cache works with views (or augment none/flip), not augment="
                f"{augment!r}: a random crop has no finite set of views to cache"
            )
        if augment == "flip" and not (teacher_cache.num_views >= 2 and teacher_cache.views.flip):
            raise ValueError("augment 'flip' needs a cache with a mirrored view (2+ views, flip)")
        if views is None:
            views = teacher_cache.views
        elif views != teacher_cache.views:
            raise ValueError(
                f"the teacher cache holds views {teacher_cache.views}, the data asks for "
                f"{views}; rebuild the cache for these views"
            )
    elif views is not None and augment != "none":
        raise ValueError(f"pass views or augment={augment!r}, not both (views replace augment)")
    aug = AUGMENTATIONS[augment] if training and views is None else None
    head = cosine_head(teacher_cache.head) if teacher_cache is not None else None
    arrays = None
    if precompute_lr:
        _check_precompute(images, views, spec, keep_hr)
        arrays = _arrays(images, labels, teacher_cache, views)
        lr = lr_views(arrays[0], arrays[2], spec, hr_size=hr_size, training=training)
        arrays = (lr, *arrays[1:])  # the HR images are no longer needed

        def _views(element, s):
            lr, label, params, *cached = element
            v = view_index(s, params.shape[0], training)
            return {"lr": lr[v], **cached_outputs(cached, v)}, label

    else:

        def _views(element, s):
            return paired_views(
                element,
                s,
                spec=spec,
                training=training,
                augment_fn=aug,
                hr_size=hr_size,
                keep_hr=keep_hr,
            )

    if training and lr_augment is not None and lr_augment.active:
        plain_views = _views

        def _views(element, s):
            x, label = plain_views(element, s)
            return {**x, "lr": lr_augment.apply(x["lr"], s + 29)}, label

    def _batched(ds, drop):
        # A cache's head gives the logits after batching: one (B, D) x (D, C) matmul
        # instead of a (D, C) matvec per example (the map's main cost at C ~ 5,000).
        ds = ds.batch(batch_size, drop_remainder=drop)
        if head is not None:
            ds = ds.map(lambda x, y: (head_logits(x, head), y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    if start_step is not None:
        if not training:
            raise ValueError("start_step (resumable stream) is for training datasets")
        if arrays is None:
            arrays = _arrays(images, labels, teacher_cache, views)
        labelled = np.flatnonzero(arrays[1] >= 0)
        k = int(round(labelled_fraction * batch_size)) if labelled_fraction else 0
        ds = _step_indexed_stream(len(arrays[1]), batch_size, seed, start_step, labelled, k)
        consts = tuple(tf.constant(a) for a in arrays)

        def _map(e, i):
            s = tf.cast(tf.stack([(seed * 1_000_003 + e) % (2**31 - 1), i]), tf.int32)
            return _views(tuple(tf.gather(c, i) for c in consts), s)

        ds = ds.map(
            lambda ei: _map(ei[0], ei[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        return _batched(ds, True)

    if arrays is not None:
        ds = tf.data.Dataset.from_tensor_slices(arrays)
    else:
        ds = _as_dataset(images, labels, teacher_cache, views)
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

    ordered = deterministic or not training
    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    return _batched(ds, training if drop_remainder is None else drop_remainder)


def cosine_head(head):
    """A cache's head `(kernel (D, C), scale)` as `(unit-column kernel tf constant, scale)`,
    ready for `paired_views`; None stays None."""
    if head is None:
        return None
    kernel, scale = head
    kernel = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return tf.constant(kernel, tf.float32), float(scale)


def paired_views(
    element,
    seed,
    *,
    spec,
    training=True,
    augment_fn=None,
    hr_size=None,
    head=None,
    keep_hr=True,
    views=None,
):
    """One example's `({"hr", "lr"[, "teacher_embedding"[, "teacher_logits"]]}, label)`.

    The map of `paired_dataset` (in-memory arrays) and of the streamed TFDS face
    data sets (`lrface_tf.data.tfds_faces`): both show the same views.

    Args:
      element: `(image, label[, view params (K, P)[, teacher embeddings (K, D)[,
        teacher logits (K, C)]]])`; image uint8 or float `(H, W, C)`.
      seed: stateless seed of this example and epoch, int32 `(2,)`.
      spec: `DegradationSpec` of the LR view.
      training: with K > 1 views, show view v drawn from `seed` (view 0 otherwise);
        the HR image is that view, the teacher outputs are view v's and the LR
        view is made from it.
      augment_fn: `(image, seed) -> image` for elements without view params.
      hr_size: area-resize the HR image to this size first, if it differs.
      head: `cosine_head(...)`: teacher logits computed from the cached
        embedding when the element carries no logits.
      keep_hr: False drops "hr" from the output.
      views: the `ViewSpec` of the params, when known: which ops its views need is
        then decided once (`apply_view`'s `moves`, `recolours`), not per example.
    """
    image, label, *rest = element  # rest: view params[, embeddings[, logits]]
    hr = to_float(image)
    if hr_size is not None and (hr.shape[0] != hr_size or hr.shape[1] != hr_size):
        hr = tf.image.resize(hr, (hr_size, hr_size), method="area")
    out = {}
    if rest:
        params, cached = rest[0], rest[1:]
        v = view_index(seed, params.shape[0], training)
        if training and params.shape[0] > 1:
            static = (views.moves, views.recolours) if views is not None else ()
            hr = apply_view(hr, params[v], *static)
        out.update(cached_outputs(cached, v, head))
    elif augment_fn is not None:
        hr = augment_fn(hr, seed)
    out.update(hr=hr, lr=spec.apply(hr, seed=seed + 13))
    if not keep_hr:
        del out["hr"]
    return out, label


def view_index(seed, count, training=True):
    """Which of an example's `count` views a step shows: drawn from its stateless
    `seed` when training with several views, else view 0."""
    if training and count > 1:
        return tf.random.stateless_uniform([], seed=seed + 3, maxval=count, dtype=tf.int32)
    return 0


def cached_outputs(cached, v, head=None):
    """View v's teacher outputs from an element's cached `(embeddings (K, D)[, logits (K, C)])`:
    `{"teacher_embedding"[, "teacher_logits"]}`, the logits from `head` (`cosine_head`)
    when none are stored."""
    out = {}
    if cached:
        out["teacher_embedding"] = cached[0][v]
        if len(cached) > 1:
            out["teacher_logits"] = cached[1][v]
        elif head is not None:
            e = cached[0][v]
            e = e * tf.math.rsqrt(tf.reduce_sum(tf.square(e)) + 1e-12)
            out["teacher_logits"] = head[1] * tf.linalg.matvec(head[0], e, transpose_a=True)
    return out


def head_logits(batch, head):
    """A batch `{"teacher_embedding": (B, D), ...}` with "teacher_logits" `(B, C)` from a
    `cosine_head` added, unless it carries stored logits already."""
    if "teacher_logits" in batch or "teacher_embedding" not in batch:
        return batch
    e = batch["teacher_embedding"]
    e = e * tf.math.rsqrt(tf.reduce_sum(tf.square(e), -1, keepdims=True) + 1e-12)
    return {**batch, "teacher_logits": head[1] * tf.matmul(e, head[0])}


def is_deterministic(spec):
    """A `DegradationSpec` that degrades every image the same way (one size, probability 1)."""
    return len(spec.sizes) == 1 and spec.probability >= 1.0


def lr_views(images, params, spec, *, hr_size=None, training=True, batch_size=256):
    """Every image's LR views, made once: `(N, K, h, w, C)` float32 (`(N, 1, ...)` when
    only view 0 is ever shown: one view, or `training=False`).

    The same ops `paired_views` runs per example and step (to float, the area
    resize to `hr_size`, the view's warp and colour, the deterministic
    degradation), batched; `paired_dataset(precompute_lr=True)` then only gathers.

    Args:
      images: uint8/float `(N, H, W, C)`.
      params: `(N, K, P)` the views' parameters (`ViewSpec.params`, axes swapped).
      spec: a deterministic `DegradationSpec` (`is_deterministic`).
    """
    if not is_deterministic(spec):
        raise ValueError(
            f"LR views can be made once only for a deterministic degradation (one size, "
            f"probability 1), got sizes {list(spec.sizes)} with probability {spec.probability}"
        )
    count = params.shape[1] if training else 1

    @tf.function(reduce_retracing=True)
    def make(x, p):
        x = to_float(x)
        if hr_size is not None and (x.shape[1] != hr_size or x.shape[2] != hr_size):
            x = tf.image.resize(x, (hr_size, hr_size), method="area")
        out = []
        for v in range(count):
            xv = apply_view(x, p[:, v]) if count > 1 else x
            out.append(
                degrade(xv, spec.sizes[0], spec.kernel, spec.output_size, spec.upsample_kernel)
            )
        return tf.stack(out, axis=1)

    parts = [
        make(tf.constant(images[i : i + batch_size]), tf.constant(params[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate([p.numpy() for p in parts])


def _check_precompute(images, views, spec, keep_hr):
    if isinstance(images, tf.data.Dataset) or views is None or keep_hr:
        raise ValueError(
            "precompute_lr needs in-memory arrays, views (or a teacher cache) and keep_hr=False "
            "(the HR view is what it saves making)"
        )
    if not is_deterministic(spec):
        raise ValueError(
            f"precompute_lr needs a deterministic degradation (one size, probability 1), got "
            f"sizes {list(spec.sizes)} with probability {spec.probability}"
        )


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


def _arrays(images, labels, cache, views):
    """(images, labels[, params (N, V, P)[, embeddings (N, V, D)[, logits (N, V, C)]]])."""
    if isinstance(images, tf.data.Dataset):
        raise ValueError(
            "a teacher cache, views or a resumable stream need in-memory arrays, "
            "not a tf.data.Dataset"
        )
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels, np.int32)
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if views is None:
        return images, labels
    if cache is None:
        from lrface_tf.data.teacher_cache import image_keys

        params = views.params(image_keys(images))
    else:
        params = cache.params
    out = (images, labels, np.swapaxes(params, 0, 1))
    if cache is None:
        return out
    if len(images) != cache.num_examples:
        raise ValueError(f"teacher cache has {cache.num_examples} examples, data has {len(images)}")
    out += (np.swapaxes(cache.embedding, 0, 1),)
    if cache.logits is not None:
        out += (np.swapaxes(cache.logits, 0, 1),)
    return out


def _step_indexed_stream(n, batch_size, seed, start_step, labelled=None, labelled_per_batch=0):
    """Endless (epoch, example index) pairs from global step `start_step` on.

    With `labelled_per_batch` = k > 0, every batch holds k examples drawn from
    the `labelled` indices (a per-epoch permutation, cycled) and batch_size - k
    from a permutation of all examples: the labelled few are oversampled.
    """
    steps = n // batch_size
    if steps < 1:
        raise ValueError(
            f"{n} examples make no full batch of {batch_size}; lower --batch_size to at most {n}"
        )
    per_epoch = steps * batch_size
    k = int(labelled_per_batch)
    if k:
        lab = tf.constant(np.asarray(labelled, np.int64))
        if len(labelled) < 1 or k >= batch_size:
            raise ValueError(f"labelled_per_batch {k} needs labelled examples and < {batch_size}")

    def epoch(e):
        key = tf.stack([tf.constant(seed, tf.int64), e])
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)
        if k:
            rest = tf.reshape(perm[: steps * (batch_size - k)], (steps, batch_size - k))
            reps = -(-steps * k // len(labelled))
            few = tf.random.experimental.stateless_shuffle(tf.tile(lab, [reps]), seed=key + 1)
            perm = tf.reshape(tf.concat([tf.reshape(few[: steps * k], (steps, k)), rest], 1), [-1])
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
    """Indices of a fixed class-balanced subset: `per_class` examples of each class
    (unlabelled examples, label -1, are never picked)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than per_class={per_class}")
        picks.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picks))
