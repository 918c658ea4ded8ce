"""Teacher-output cache: a frozen teacher gives the same outputs for the same view of the
same image, so compute them once per image and view (KD_im's cached teacher).

The cache holds, for every image and each of its K views (`lrface_tf.data.views`),
the teacher's embedding (and logits when the teacher has them). It lives in a
store file per (teacher weights, view spec, HR size, runtime), keyed inside by a
digest of each image's pixels: a run on any subset or superset of earlier data
computes only the images the store does not hold yet, so one build serves every
run (and each image's views depend only on its pixels and the spec). A stale or
unreadable store is detected and rebuilt, never silently used; stores are
written atomically under a lock.

Memory: K x N x D float32 (16 views of 32,000 images at D = 128: 262 MB). An
embedding-only teacher's class-mean logits are not stored (K x N x C would not
fit): `with_head` attaches the head, and the pipeline computes the logits from
the cached embeddings on the fly.

Runtime: "keras" runs the Keras teacher (exact); "tflite" converts it once and
runs LiteRT on every core (XNNPACK; 2x faster than TensorFlow on this CPU for
SFace, embeddings equal to float32 rounding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import zipfile

import numpy as np

from lrface_tf.data.views import ViewSpec

FORMAT = 3
RUNTIMES = ("keras", "tflite")


class StaleCacheError(ValueError):
    """The cache on disk was built for another teacher or view spec, or is unreadable."""


def image_keys(images):
    """`(N,)` uint64: a digest of each image's pixels (its identity in caches and views)."""
    images = np.ascontiguousarray(images)
    flat = images.reshape(len(images), -1)
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            for row in flat
        ],
        dtype=np.uint64,
    )


def fingerprint(teacher, views=None, hr_size=None, runtime="keras", lr_input=None):
    """sha256 over the teacher's weights, the view spec, the HR size, the runtime and, when
    the teacher reads LR views (`lr_input`), their degradation."""
    views = views or ViewSpec()
    h = hashlib.sha256()
    meta = {"format": FORMAT, "views": views.to_dict(), "hr_size": hr_size, "runtime": runtime}
    if lr_input is not None:  # absent otherwise: HR stores keep their fingerprints
        meta["lr_input"] = lr_input.to_dict()
    h.update(json.dumps(meta, sort_keys=True).encode())
    for w in teacher.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()


def _unit(e):
    """`e` scaled to unit length along its last axis (zero stays zero)."""
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


def blend(hr, lr, weight):
    """One cache whose targets mix two readings of the same views: per view and image,
    the unit vector along `(1 - weight) * e_hr + weight * e_lr` of the L2-normalised
    embeddings, and the same mix of the logits.

    For the normalised-feature term (`||s - t||^2` between unit vectors, `2 - 2 s.t`)
    one term against the blend has the gradient of the two weighted terms against `e_hr`
    and `e_lr` divided by the blend's length: the same minimiser, one term's cost.

    Raises:
      ValueError: the two caches were not built on the same views of the same images.
    """
    if hr.embedding.shape != lr.embedding.shape or not np.array_equal(hr.params, lr.params):
        raise ValueError(
            "the two teacher caches to blend hold different views or images: build both "
            "with the same --views flags on the same data"
        )

    mixed = _unit((1.0 - weight) * _unit(hr.embedding) + weight * _unit(lr.embedding))
    logits = None
    if hr.logits is not None and lr.logits is not None:
        logits = (1.0 - weight) * hr.logits + weight * lr.logits
    digest = hashlib.sha256(f"{hr.fingerprint}:{lr.fingerprint}:{weight!r}".encode())
    return dataclasses.replace(
        hr, embedding=mixed.astype(np.float32), logits=logits, fingerprint=digest.hexdigest()
    )


def view_mean(cache, weight):
    """This cache with every view's target pulled toward its image's mean over its views:
    per view and image, the unit vector along `(1 - weight) * e_v + weight * m` of the
    L2-normalised embeddings, where `m` is the unit vector along the mean of the image's
    normalised view embeddings (a view-ensemble reading of the image); the logits get the
    same mix of the view's logits and their mean over the views.

    Weight 1 gives all views of an image one target: the student is then taught an
    embedding that does not follow the view's crop, flip, rotation or colour, where the
    teacher's own reading of one view does (test-time flip fusion averages that part
    away at twice the cost). Weight 0 only normalises.

    Raises:
      ValueError: `weight` is outside [0, 1], or the cache holds a single view.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"view-mean weight {weight} is outside [0, 1]")
    if cache.num_views < 2:
        raise ValueError(
            f"a view-mean target needs a cache of 2+ views per image, this one has "
            f"{cache.num_views}: set --views (or --augment=flip)"
        )

    own = _unit(cache.embedding)
    mean = _unit(own.mean(axis=0, keepdims=True))
    mixed = _unit((1.0 - weight) * own + weight * mean)
    logits = None
    if cache.logits is not None:
        logits = (1.0 - weight) * cache.logits + weight * cache.logits.mean(axis=0, keepdims=True)
        logits = logits.astype(np.float32)
    digest = hashlib.sha256(f"{cache.fingerprint}:view_mean:{weight!r}".encode())
    return dataclasses.replace(
        cache, embedding=mixed.astype(np.float32), logits=logits, fingerprint=digest.hexdigest()
    )


@dataclasses.dataclass
class TeacherCache:
    """Teacher outputs per view and image, aligned with a data set's images.

    Attributes:
      embedding: `(V, N, D)` float32.
      logits: `(V, N, C)` float32, or None (an embedding-only teacher).
      params: `(V, N, P)` the views' parameters (`lrface_tf.data.views.PARAMS`).
      views: the `ViewSpec` they were drawn from.
      fingerprint: see `fingerprint`.
      head: None, or `(kernel (D, C), scale)` of a cosine head whose logits the
        pipeline computes from the cached embeddings (`with_head`).
    """

    embedding: np.ndarray
    logits: np.ndarray | None
    params: np.ndarray
    views: ViewSpec
    fingerprint: str
    head: tuple | None = None

    @property
    def num_examples(self):
        return self.embedding.shape[1]

    @property
    def num_views(self):
        return self.embedding.shape[0]

    def with_head(self, kernel, scale):
        """This cache with cosine-head logits `scale * cos(e, kernel[:, c])` computed on the fly."""
        return dataclasses.replace(self, head=(np.asarray(kernel, np.float32), float(scale)))

    @classmethod
    def build(
        cls,
        teacher,
        images,
        views=None,
        batch_size=64,
        hr_size=None,
        progress=True,
        runtime="keras",
        lr_input=None,
    ):
        """Run the frozen teacher (inference mode) over every image and view."""
        views = views or ViewSpec()
        images = _nhwc(images)
        params = views.params(image_keys(images))
        emb, logits = run_teacher(
            teacher, images, params, batch_size, hr_size, progress, runtime, lr_input
        )
        fp = fingerprint(teacher, views, hr_size, runtime, lr_input)
        return cls(emb, logits, params, views, fp)


def _nhwc(images):
    images = np.asarray(images)
    return images[..., None] if images.ndim == 3 else images


def run_teacher(teacher, images, params, batch_size, hr_size, progress, runtime, lr_input=None):
    """`(V, N, D)` embeddings and `(V, N, C)` logits (or None) of every image and view.

    Args:
      images: uint8 `(N, H, W, C)`; params: `(V, N, P)` view parameters.
      hr_size: area-resize the images to this size first, if they differ.
      runtime: "keras", "tflite", or a `teacher_runner` made once for many calls.
      lr_input: None (the teacher reads the HR view), or a deterministic
        `DegradationSpec`: the teacher reads each view degraded to the spec's LR size
        and brought back to its own size (its reading of the student's input).
    """
    import keras
    import tensorflow as tf

    from lrface_tf.data.degrade import degrade
    from lrface_tf.data.pipeline import to_float
    from lrface_tf.data.views import apply_view

    run = runtime if callable(runtime) else teacher_runner(teacher, runtime)

    @tf.function
    def prepare(x, p):
        x = to_float(x)
        if hr_size is not None and x.shape[1] != hr_size:
            x = tf.image.resize(x, (hr_size, hr_size), method="area")
        x = apply_view(x, p)
        if lr_input is not None:
            size = lr_input.sizes[0]
            x = degrade(x, size, lr_input.kernel, x.shape[1], lr_input.upsample_kernel)
        return x

    views, n = params.shape[0], len(images)
    steps = -(-n // batch_size)
    bar = keras.utils.Progbar(steps * views, verbose=1 if progress else 0, unit_name="batch")
    embs, logits = [], []
    for v in range(views):
        e_v, l_v = [], []
        for i in range(0, n, batch_size):
            x = prepare(
                tf.constant(images[i : i + batch_size]), tf.constant(params[v, i : i + batch_size])
            )
            # Keras: the compiled predict function (eager calls of a 112x112 teacher
            # kept gigabytes of activations alive).
            out = run(x)
            out = out if isinstance(out, dict) else {"embedding": out}
            e_v.append(np.asarray(out["embedding"], np.float32))
            if "logits" in out:
                l_v.append(np.asarray(out["logits"], np.float32))
            bar.add(1)
        embs.append(np.concatenate(e_v))
        if l_v:
            logits.append(np.concatenate(l_v))
    return np.stack(embs), (np.stack(logits) if logits else None)


def teacher_runner(teacher, runtime="keras"):
    """`batch -> outputs` of the frozen teacher: Keras' compiled predict, or a LiteRT copy.

    Pass it as `runtime` to `run_teacher` to convert a teacher once for many batches.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown cache runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    return _tflite_runner(teacher) if runtime == "tflite" else teacher.predict_on_batch


def _tflite_runner(teacher):
    """A float32 LiteRT copy of `teacher` on every core: batch -> dict of outputs."""
    import tempfile

    from lrface_tf.export import TFLiteModel, convert_tflite

    folder = tempfile.mkdtemp(prefix="teacher_tflite_")
    path = convert_tflite(teacher, os.path.join(folder, "teacher.tflite"), "float32")
    return TFLiteModel(path, num_threads=os.cpu_count() or 1)


# ----------------------------------------------------------------------- the store
def store_path(cache_dir, teacher, views=None, hr_size=None, runtime="keras", lr_input=None):
    """The store file of a teacher, view spec, HR size, runtime and LR input in `cache_dir`."""
    views = views or ViewSpec()
    fp = fingerprint(teacher, views, hr_size, runtime, lr_input)
    return os.path.join(cache_dir, f"teacher_{fp[:20]}.npz"), fp


def _load_store(path, fp):
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT or meta.get("fingerprint") != fp:
                raise StaleCacheError(f"{path}: built for another teacher or view spec")
            return {k: z[k] for k in z.files if k != "meta"}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, StaleCacheError):
            raise
        raise StaleCacheError(f"{path}: unreadable teacher cache ({e}); rebuilding") from None


def _save_store(path, arrays, fp, views):
    from lrface_tf.export.atomic import atomic_path

    meta = {"format": FORMAT, "fingerprint": fp, "views": views.to_dict()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(meta)))


@contextlib.contextmanager
def _locked(path):
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that is filling the teacher cache {path}", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load_or_build(
    cache_dir,
    teacher,
    images,
    views=None,
    batch_size=64,
    hr_size=None,
    progress=True,
    runtime="keras",
    lr_input=None,
):
    """The cache of `images`, from the store in `cache_dir`, computing what it lacks.

    `lr_input`: see `run_teacher` (None: the teacher reads the HR views).

    Returns:
      (cache aligned with `images`, status, store path); status says "loaded",
      "built", "extended by N images" or "rebuilt (stale: ...)".
    """
    images, views = _nhwc(images), views or ViewSpec()
    path, fp = store_path(cache_dir, teacher, views, hr_size, runtime, lr_input)
    keys = image_keys(images)
    with _locked(path):
        store, status = None, "built"
        if os.path.exists(path):
            try:
                store = _load_store(path, fp)
            except StaleCacheError as e:
                status = f"rebuilt (stale: {e})"
        have = {} if store is None else {int(k): i for i, k in enumerate(store["keys"])}
        unique, first = np.unique(keys, return_index=True)
        missing = [int(i) for k, i in zip(unique, first) if int(k) not in have]
        if missing:
            part = images[np.sort(missing)]
            params = views.params(keys[np.sort(missing)])
            emb, logits = run_teacher(
                teacher, part, params, batch_size, hr_size, progress, runtime, lr_input
            )
            new = {"keys": keys[np.sort(missing)], "embedding": emb, "params": params}
            if logits is not None:
                new["logits"] = logits
            if store is not None:
                new = {
                    k: np.concatenate([store[k], new[k]], axis=0 if k == "keys" else 1) for k in new
                }
                status = f"extended by {len(missing)} images"
            _save_store(path, new, fp, views)
            store = new
            have = {int(k): i for i, k in enumerate(store["keys"])}
        elif store is not None:
            status = "loaded"
    rows = np.array([have[int(k)] for k in keys])
    logits = store["logits"][:, rows] if "logits" in store else None
    cache = TeacherCache(store["embedding"][:, rows], logits, store["params"][:, rows], views, fp)
    return cache, status, path
