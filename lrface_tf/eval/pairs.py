"""Verification on an LFW-format pairs file at any probe resolution.

The degradation protocol is explicit and recorded with every number: the
probe (second image of each pair; "HR gallery vs LR probe") or both images are
downsampled to the probe size with `kernel`, then resized to the model's input
size with `upsample_kernel`. Images at full resolution are only resized to the
model's input size (area). Each condition gets its own K-fold thresholds.
"""

from __future__ import annotations

import os

import numpy as np

from lrface_tf.data.datasets import lfw_pairs
from lrface_tf.eval.embeddings import extract_embeddings
from lrface_tf.eval.verification import cosine_scores, roc_curve, verification_report

SIDES = ("probe", "both", "cross")


def load_images(paths, size=112, channels=3, progress=False):
    """Decode image files of any supported format to uint8 `(N, size, size, C)`, in order.

    Each file is read by `lrface_tf.data.images.read_image` (JPEG, PNG, BMP, GIF,
    PGM/PPM/PBM, TIFF, WEBP; grayscale becomes RGB), then area-resized to `size` in
    float [0, 1] and rounded, as the tf.data pipelines do. A file that cannot be
    read raises `DataError` naming it and what to do.
    """
    import concurrent.futures

    import keras

    from lrface_tf.data.images import read_image

    paths = list(paths)
    out = np.empty((len(paths), size, size, channels), np.uint8)
    bar = keras.utils.Progbar(len(paths), verbose=1 if progress else 0, unit_name="image")

    def load(i):  # resized on the worker: memory stays at a few full-size images
        out[i] = _resize_area(read_image(paths[i], channels)[None], size)[0]

    workers, step = min(8, os.cpu_count() or 1), 256
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), step):
            done = list(pool.map(load, range(start, min(start + step, len(paths)))))
            bar.add(len(done))
    return out


def _resize_area(images, size):
    """uint8 `(N, H, W, C)` -> uint8 `(N, size, size, C)`: area resize in float [0, 1]."""
    import tensorflow as tf

    if images.shape[1:3] == (size, size):
        return images
    x = tf.image.convert_image_dtype(images, tf.float32)
    x = tf.image.resize(x, (size, size), method="area")
    return np.clip(np.round(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def load_pair_images(pairs_path, root, size=112, ext=".jpg"):
    """Decode every image a pairs file names (each once), resized to `size` (area).

    Returns:
      dict with images_a, images_b (uint8 `(N, size, size, 3)`), same `(N,)` bool,
      folds `(N,)` int (the file's folds, or None for a single split), pairs.
    """

    pairs = lfw_pairs(pairs_path, root=root, ext=ext)
    paths = sorted({p for pair in pairs for p in pair.paths(root, ext)})
    index = {p: i for i, p in enumerate(paths)}
    images = load_images(paths, size)
    a = np.array([index[pair.paths(root, ext)[0]] for pair in pairs])
    b = np.array([index[pair.paths(root, ext)[1]] for pair in pairs])
    folds = np.array([pair.fold for pair in pairs])
    return {
        "images_a": images[a],
        "images_b": images[b],
        "same": np.array([pair.same for pair in pairs]),
        "folds": folds if len(set(folds)) > 1 else None,
        "pairs": pairs,
    }


def model_input_size(model):
    """Input size of a Keras model or a `TFLiteModel`."""
    shape = getattr(model, "input_shape", None)
    shape = shape[1:] if shape is not None and len(shape) == 4 else shape
    return int(shape[0])


def prepare(images, input_size, probe_size=None, kernel="area", upsample_kernel="bilinear"):
    """uint8 images -> float [0, 1] at the model's input size, degraded to `probe_size` first."""
    import tensorflow as tf

    from lrface_tf.data.degrade import degrade

    x = tf.cast(images, tf.float32) / 255.0
    full = images.shape[1]
    if probe_size is None or probe_size >= full:
        if full != input_size:
            x = tf.image.resize(x, (input_size, input_size), method="area")
        return np.asarray(x)
    if probe_size >= input_size:  # the model cannot see more than its input
        return np.asarray(degrade(x, input_size, kernel))
    return np.asarray(degrade(x, probe_size, kernel, input_size, upsample_kernel))


def _embed(model, x, flip_fusion, batch_size):
    e = extract_embeddings(model, x, batch_size, progress=False)
    if flip_fusion:
        e = e + extract_embeddings(model, x[:, :, ::-1], batch_size, progress=False)
    return e


def evaluate_pairs(
    model,
    data,
    probe_size=None,
    side="probe",
    kernel="area",
    upsample_kernel="bilinear",
    flip_fusion=False,
    batch_size=64,
    cache=None,
    gallery_model=None,
):
    """Verification report of one model under one degradation condition.

    Args:
      data: the dict of `load_pair_images`.
      probe_size: None (full resolution) or the LR size in pixels.
      side: "probe" (the second image of each pair degraded: an HR gallery vs an
        LR probe, both embedded by `model`), "both" (both degraded), or "cross"
        (the cross-model protocol: the gallery image embedded at full resolution
        by `gallery_model`, e.g. the teacher, the LR probe by `model`; their
        embeddings must share a space, as a student distilled into the
        teacher's embedding space does).
      cache: optional dict reused across calls for the same models and data: the
        embeddings of each (model, side of the pair, size) condition are computed once.

    Returns:
      `verification_report` dict plus the condition, and "roc" (fpr, tpr) lists;
      "cross" adds "teacher_agreement": the mean cosine between the gallery
      model's HR embedding and `model`'s LR embedding of the same images.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "cross" and gallery_model is None:
        raise ValueError("side 'cross' needs gallery_model (the model of the HR gallery)")
    size = model_input_size(model)
    cache = {} if cache is None else cache

    def embed(net, which, degrade_to):
        key = (id(net), which, degrade_to, kernel, upsample_kernel, flip_fusion)
        if key not in cache:
            x = prepare(data[which], model_input_size(net), degrade_to, kernel, upsample_kernel)
            cache[key] = _embed(net, x, flip_fusion, batch_size)
        return cache[key]

    gallery = gallery_model if side == "cross" else model
    ea = embed(gallery, "images_a", probe_size if side == "both" else None)
    eb = embed(model, "images_b", probe_size)
    if ea.shape[1] != eb.shape[1]:
        raise ValueError(
            f"the gallery model gives {ea.shape[1]}-d embeddings and the probe model "
            f"{eb.shape[1]}-d; the cross-model protocol needs one embedding space"
        )
    scores = cosine_scores(ea, eb)
    report = verification_report(scores, data["same"], data["folds"])
    if side == "cross":
        # How well the probe model reproduces the gallery model's HR embedding of the
        # same image (on people it never trained on: the student's generalisation).
        lr_a = embed(model, "images_a", probe_size)
        report["teacher_agreement"] = float(np.mean(cosine_scores(ea, lr_a)))
    fpr, tpr, _ = roc_curve(scores, data["same"])
    report.update(
        {
            "probe_size": probe_size or data["images_b"].shape[1],
            "side": side,
            "kernel": kernel,
            "upsample_kernel": upsample_kernel,
            "flip_fusion": flip_fusion,
            "input_size": size,
            "scores": scores.tolist(),
            "roc": [fpr.tolist(), tpr.tolist()],
        }
    )
    return report
