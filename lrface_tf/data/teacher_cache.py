"""Teacher-output cache (KD_im): a frozen teacher on unchanged HR images gives the
same outputs every epoch, so compute them once per example and variant.

The cache stores, for every training example and every deterministic
augmentation variant ("none", "flip"), the teacher's embedding and logits. It is
validated by a fingerprint of the teacher's weights, the images, the variants
and the HR size; a stale cache is detected and rebuilt, never silently used.
Files are written atomically (a killed build leaves no valid-looking file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile

import numpy as np

VARIANTS = ("none", "flip")
FORMAT = 1


class StaleCacheError(ValueError):
    """The cache on disk was built for another teacher, data set or spec."""


def fingerprint(teacher, images, variants=VARIANTS, hr_size=None):
    """sha256 over the teacher's weights, the image bytes, the variants and the HR size."""
    h = hashlib.sha256()
    h.update(
        json.dumps({"format": FORMAT, "variants": list(variants), "hr_size": hr_size}).encode()
    )
    for w in teacher.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class TeacherCache:
    """Teacher outputs per variant and example: embedding `(V, N, D)`, logits `(V, N, C)`.

    `logits` is None for an embedding-only teacher (a pretrained face model);
    `lrface_tf.teachers.with_class_mean_head` adds logits to such a cache.
    """

    embedding: np.ndarray
    logits: np.ndarray
    variants: tuple
    fingerprint: str

    @property
    def num_examples(self):
        return self.embedding.shape[1]

    @classmethod
    def build(cls, teacher, images, variants=VARIANTS, batch_size=256, hr_size=None,
              progress=True):  # fmt: skip
        """Run the frozen teacher (training=False) over every image and variant."""
        import keras
        import tensorflow as tf

        from lrface_tf.data.pipeline import to_float

        for v in variants:
            if v not in VARIANTS:
                raise ValueError(f"unknown cache variant {v!r}: use {VARIANTS}")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        embs, logits = [], []
        steps = -(-len(images) // batch_size)
        bar = keras.utils.Progbar(steps * len(variants), verbose=1 if progress else 0)
        for v in variants:
            e_v, l_v = [], []
            for i in range(0, len(images), batch_size):
                x = to_float(tf.constant(images[i : i + batch_size]))
                if hr_size is not None and x.shape[1] != hr_size:
                    x = tf.image.resize(x, (hr_size, hr_size), method="area")
                if v == "flip":
                    x = tf.reverse(x, [2])
                # The compiled predict function (inference mode): eager calls of a
                # 112x112 teacher kept gigabytes of activations alive.
                out = teacher.predict_on_batch(x)
                out = out if isinstance(out, dict) else {"embedding": out}
                e_v.append(np.asarray(out["embedding"]))
                if "logits" in out:
                    l_v.append(np.asarray(out["logits"]))
                bar.add(1)
            embs.append(np.concatenate(e_v))
            if l_v:
                logits.append(np.concatenate(l_v))
        fp = fingerprint(teacher, images, variants, hr_size)
        return cls(np.stack(embs), np.stack(logits) if logits else None, tuple(variants), fp)

    def save(self, path):
        """Write `path` (.npz) atomically, with the fingerprint inside."""
        from lrface_tf.export.atomic import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                arrays = {"embedding": self.embedding}
                if self.logits is not None:
                    arrays["logits"] = self.logits
                meta = {"variants": list(self.variants), "fingerprint": self.fingerprint}
                np.savez(f, **arrays, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path, expected_fingerprint=None):
        """Load a cache; raise `StaleCacheError` if its fingerprint differs."""
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                logits = z["logits"] if "logits" in z.files else None
                cache = cls(z["embedding"], logits, tuple(meta["variants"]), meta["fingerprint"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise StaleCacheError(
                f"{path}: unreadable teacher cache ({e}); delete it to rebuild"
            ) from None
        if expected_fingerprint is not None and cache.fingerprint != expected_fingerprint:
            raise StaleCacheError(
                f"{path}: teacher cache was built for another teacher, data set or spec"
            )
        return cache


def load_or_build(path, teacher, images, variants=VARIANTS, batch_size=256, hr_size=None,
                  progress=True):  # fmt: skip
    """The valid cache at `path`, rebuilding it (and saying so) when missing or stale.

    Returns:
      (cache, status) with status "loaded", "built" or "rebuilt (stale)".
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    fp = fingerprint(teacher, images, variants, hr_size)
    status = "built"
    if os.path.exists(path):
        try:
            return TeacherCache.load(path, fp), "loaded"
        except StaleCacheError:
            status = "rebuilt (stale)"
    cache = TeacherCache.build(teacher, images, variants, batch_size, hr_size, progress)
    cache.save(path)
    return cache, status
