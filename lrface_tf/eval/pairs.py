"""Verification on an LFW-format pairs file at any probe resolution.

The degradation protocol is explicit and recorded with every number: the
probe (second image of each pair; "HR gallery vs LR probe") or both images are
downsampled to the probe size with `kernel`, then resized to the model's input
size with `upsample_kernel`. Images at full resolution are only resized to the
model's input size (area). Each condition gets its own K-fold thresholds.
"""

from __future__ import annotations

import numpy as np

from lrface_tf.data.datasets import lfw_pairs
from lrface_tf.eval.embeddings import extract_embeddings
from lrface_tf.eval.verification import cosine_scores, roc_curve, verification_report

SIDES = ("probe", "both")


def load_images(paths, size=112):
    """Decode image files to uint8 `(N, size, size, 3)` (area resize), in order."""
    import tensorflow as tf

    from lrface_tf.data.datasets import decode_image_file

    ds = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        lambda p: decode_image_file(p, size), num_parallel_calls=tf.data.AUTOTUNE
    )
    images = np.concatenate([np.asarray(b) for b in ds.batch(256)])
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


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


def evaluate_pairs(model, data, probe_size=None, side="probe", kernel="area",
                   upsample_kernel="bilinear", flip_fusion=False, batch_size=64,
                   cache=None):  # fmt: skip
    """Verification report of one model under one degradation condition.

    Args:
      data: the dict of `load_pair_images`.
      probe_size: None (full resolution) or the LR size in pixels.
      side: "probe" (second image degraded) or "both".
      cache: optional dict reused across calls for the same model and data: the
        embeddings of each (side of the pair, size) condition are computed once.

    Returns:
      `verification_report` dict plus the condition, and "roc" (fpr, tpr) lists.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    size = model_input_size(model)
    cache = {} if cache is None else cache

    def embed(which, degrade_to):
        key = (id(model), which, degrade_to, kernel, upsample_kernel, flip_fusion)
        if key not in cache:
            x = prepare(data[which], size, degrade_to, kernel, upsample_kernel)
            cache[key] = _embed(model, x, flip_fusion, batch_size)
        return cache[key]

    ea = embed("images_a", probe_size if side == "both" else None)
    scores = cosine_scores(ea, embed("images_b", probe_size))
    report = verification_report(scores, data["same"], data["folds"])
    fpr, tpr, _ = roc_curve(scores, data["same"])
    report.update({
        "probe_size": probe_size or data["images_b"].shape[1], "side": side,
        "kernel": kernel, "upsample_kernel": upsample_kernel, "flip_fusion": flip_fusion,
        "input_size": size, "scores": scores.tolist(), "roc": [fpr.tolist(), tpr.tolist()],
    })  # fmt: skip
    return report
