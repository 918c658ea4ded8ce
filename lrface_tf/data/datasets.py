"""Data set loaders: Fashion-MNIST idx files, identity folders, flat folders, LFW pairs files.

Every loader fails loudly on a missing or corrupt file, naming the file, or,
where the caller asks for it (`on_error="skip"`), skips it and counts it in a
report. Nothing is dropped silently: every file in an image folder is looked at
by content (`lrface_tf.data.images`), and each one not used is counted with its
reason ("not an image", "corrupt", "unsupported", ...).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import gzip
import os
import struct

import numpy as np

from lrface_tf.data.images import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from lrface_tf.data.images import (
    NOT_AN_IMAGE,
    DataError,
    ImageFileError,
    check_image,
    decode_image_file,
    list_images,
    meant_as_image,
    reason_kind,
)
from lrface_tf.data.images import decode_image_bytes as decode_image_bytes

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
UNLABELLED = -1  # the label of an image with no identity (as in lrface_tf.data.pipeline)
NOT_IN_PERSON_FOLDER = "not in a person folder"


# --------------------------------------------------------------------- idx files
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an idx file (the MNIST format), gzipped or not, into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); re-download or reinstall the file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an idx file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: idx payload has {len(data) - header} bytes, header says {expected} "
            f"for shape {shape}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_idx(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def load_fashion_mnist(data_dir=None, allow_download=True):
    """Fashion-MNIST as `((x_train, y_train), (x_test, y_test))`, uint8 `(N, 28, 28)`.

    Looks in `data_dir`, then Debian's `dataset-fashion-mnist` folder
    (/usr/share/datasets/fashion-mnist); if neither has the idx files and
    `allow_download`, falls back to `keras.datasets.fashion_mnist` (network).
    """
    dirs = [data_dir] if data_dir else list(FASHION_MNIST_DIRS)
    for d in dirs:
        found = {
            split: [_find_idx(d, stem) for stem in stems]
            for split, stems in FASHION_MNIST_FILES.items()
        }
        if all(p for paths in found.values() for p in paths):
            out = []
            for split in ("train", "test"):
                x = read_idx(found[split][0])
                y = read_idx(found[split][1]).astype(np.int32)
                if x.ndim != 3 or len(x) != len(y):
                    raise DataError(
                        f"{found[split][0]}: expected (N, 28, 28) images matching "
                        f"{len(y)} labels, got shape {x.shape}"
                    )
                out.append((x, y))
            return tuple(out)
        if data_dir:
            missing = [s for stems in FASHION_MNIST_FILES.values() for s in stems]
            raise DataError(
                f"{data_dir}: Fashion-MNIST idx files missing (need {', '.join(missing)}, "
                "optionally .gz); install Debian's dataset-fashion-mnist or point --data_dir there"
            )
    if not allow_download:
        raise DataError(
            "Fashion-MNIST not found in /usr/share/datasets/fashion-mnist; run "
            "`apt-get install dataset-fashion-mnist` or pass --data_dir"
        )
    import keras

    (xt, yt), (xs, ys) = keras.datasets.fashion_mnist.load_data()
    return (xt, yt.astype(np.int32)), (xs, ys.astype(np.int32))


# ---------------------------------------------------------------- identity folders
@dataclasses.dataclass
class LoadReport:
    """What a loader read, and what it skipped and why (written into run outputs).

    found: files looked at; kept: images used; skipped: [(path, reason)] for every
    other file; empty_classes: identities left with too few images.
    """

    found: int = 0
    kept: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # [(path, reason)]
    empty_classes: list = dataclasses.field(default_factory=list)

    def counts_by_reason(self):
        """{reason without its detail: number of files}, e.g. {"corrupt": 2, "not an image": 1}."""
        return dict(sorted(collections.Counter(reason_kind(r) for _, r in self.skipped).items()))

    def to_dict(self):
        return {
            "found": self.found,
            "kept": self.kept,
            "reasons": self.counts_by_reason(),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "empty_classes": list(self.empty_classes),
        }


@dataclasses.dataclass
class IdentityFolder:
    """A listed image folder: `root/<person>/<image>` (one class per person) or, from
    `flat_folder`, `root/<image>` (no class names, every label `UNLABELLED`, -1)."""

    root: str
    paths: list
    labels: np.ndarray
    class_names: list
    report: LoadReport

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.paths)


def _check_loader_args(root, on_error, channels, layout):
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: folder not found; point the data flag at a folder of {layout}")


def _unusable(path, reason):
    return DataError(f"{ImageFileError(path, reason)}, or pass on_error='skip'")


def _entries(folder):
    """[(path, None for an image or the reason it is not)] of a folder, sorted by path."""
    images, skipped = list_images(folder)
    return sorted([(p, None) for p in images] + skipped)


def _sift(entries, on_error, verify, workers=None):
    """Walk `_entries` in order, decoding every image once (`verify`, on a few
    threads); with on_error="raise", stop at the first file meant as an image that
    cannot be used. Returns (usable paths, [(path, reason)] of the others)."""
    workers = workers or min(8, os.cpu_count() or 1)
    usable, skipped, step = [], [], 64 * workers
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(entries), step):
            chunk = entries[start : start + step]
            images = [p for p, reason in chunk if reason is None]
            checked = dict(zip(images, pool.map(check_image, images))) if verify else {}
            for path, reason in chunk:
                reason = reason or checked.get(path)
                if reason is None:
                    usable.append(path)
                elif on_error == "raise" and meant_as_image(path, reason):
                    raise _unusable(path, reason)
                else:
                    skipped.append((path, reason))
    return usable, skipped


def identity_folder(
    root, *, min_images=1, on_error="raise", verify=True, channels=3, exclude_people=()
):
    """List an identity-folder data set (one sub-folder per person).

    Every file is looked at by content, whatever its name: JPEG, PNG, BMP, GIF,
    PGM/PPM/PBM, TIFF and WEBP are kept; every other file is counted in
    `report.skipped` with its reason ("not an image", "corrupt", "unsupported",
    or "not in a person folder" for files directly in `root`). Files never meant
    as images (`.DS_Store`, `notes.txt`) are counted, never raised on.

    Args:
      root: folder with one sub-folder of images per identity (hidden ones are skipped).
      min_images: drop identities with fewer images (counted in the report).
      on_error: "raise" stops at the first corrupt, unsupported or misnamed image
        (text saved as `.jpg`) and at an identity with no readable image, with an
        error naming it; "skip" skips it and records it in `report.skipped`.
      verify: decode every image once to find corrupt or truncated files.
      channels: 3 (RGB; grayscale images are converted when decoded) or 1.
      exclude_people: identity names to leave out (e.g. the test people).

    Returns:
      `IdentityFolder` with paths, int32 labels, class names and a `LoadReport`.
    """
    _check_loader_args(root, on_error, channels, "<person>/<image> files")
    report = LoadReport()
    people = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith("."):
            kind = "folder" if os.path.isdir(path) else "file"
            report.skipped.append((path, f"{NOT_AN_IMAGE} (hidden {kind})"))
        elif os.path.isdir(path):
            people.append(name)
        else:
            report.skipped.append((path, NOT_IN_PERSON_FOLDER))
    report.found = len(report.skipped)
    if not people:
        raise DataError(f"{root}: no identity sub-folders; expected root/<person>/<image>")
    exclude = set(exclude_people)
    kept = [p for p in people if p not in exclude]
    entries = [e for person in kept for e in _entries(os.path.join(root, person))]
    report.found += len(entries)
    usable, skipped = _sift(entries, on_error, verify)
    report.skipped.extend(skipped)
    by_person = {person: [] for person in kept}
    for path in usable:
        by_person[os.path.basename(os.path.dirname(path))].append(path)
    paths, labels, names = [], [], []
    for person, good in by_person.items():
        if len(good) < min_images:
            if not good and on_error == "raise" and min_images <= 1:
                raise DataError(
                    f"{os.path.join(root, person)}: identity folder has no readable images; "
                    "remove it or pass on_error='skip'"
                )
            report.empty_classes.append(person)
            report.skipped.extend((f, f"identity has fewer than {min_images} images") for f in good)
            continue
        label = len(names)
        names.append(person)
        paths.extend(good)
        labels.extend([label] * len(good))
    report.kept = len(paths)
    return IdentityFolder(root, paths, np.asarray(labels, np.int32), names, report)


def flat_folder(root, *, on_error="raise", verify=True, channels=3):
    """List a flat folder of unlabelled images (`root/<image>`: face crops with no
    identities, for label-free distillation).

    Files are looked at and reported as in `identity_folder`; sub-folders are not
    read (each is counted as "not an image").

    Args:
      root: the folder.
      on_error: "raise" stops at the first corrupt, unsupported or misnamed image;
        "skip" skips it and records it in `report.skipped`.
      verify: decode every image once to find corrupt or truncated files.
      channels: 3 (RGB; grayscale images are converted when decoded) or 1.

    Returns:
      `IdentityFolder` with the image paths, every label `UNLABELLED` (-1), no class
      names, and a `LoadReport`. A folder with no readable image raises `DataError`.

    Example:
      extra = flat_folder("faces_extra/utkface_unlabelled", on_error="skip")
      extra.report.counts_by_reason()   # {} when every file is a readable image
    """
    _check_loader_args(root, on_error, channels, "image files")
    report = LoadReport()
    entries = _entries(root)
    report.found = len(entries)
    paths, report.skipped = _sift(entries, on_error, verify)
    if not paths:
        counts = ", ".join(f"{n} {r}" for r, n in report.counts_by_reason().items()) or "empty"
        raise DataError(
            f"{root}: no readable images ({counts}); point the data flag at a folder of "
            "JPEG, PNG, BMP, GIF, PGM/PPM/PBM, TIFF or WEBP files"
        )
    report.kept = len(paths)
    labels = np.full(len(paths), UNLABELLED, np.int32)
    return IdentityFolder(root, paths, labels, [], report)


def identity_folder_dataset(folder, size, channels=3):
    """`tf.data.Dataset` of `(image float32 [0,1] (size, size, C), label)` for a listed folder."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((folder.paths, folder.labels))
    return ds.map(
        lambda p, y: (decode_image_file(p, size, channels), y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


# -------------------------------------------------------------------- LFW pairs
@dataclasses.dataclass(frozen=True)
class Pair:
    """One verification pair: (person_a, image number a, person_b, number b, same, fold)."""

    name_a: str
    num_a: int
    name_b: str
    num_b: int
    same: bool
    fold: int

    def paths(self, root, ext=".jpg"):
        return (
            lfw_image_path(root, self.name_a, self.num_a, ext),
            lfw_image_path(root, self.name_b, self.num_b, ext),
        )


def lfw_image_path(root, name, num, ext=".jpg"):
    """LFW file naming: root/Name/Name_0001.jpg."""
    return os.path.join(root, name, f"{name}_{num:04d}{ext}")


def lfw_pairs(path, root=None, ext=".jpg"):
    """Parse an LFW pairs file (pairs.txt: 10 folds; pairsDevTrain/DevTest: 1 split).

    The header is either "N" (one set of N same + N different pairs) or
    "K N" (K folds, each N same then N different). Same-person lines are
    "name n1 n2"; different-person lines are "name1 n1 name2 n2".

    Args:
      path: the pairs file.
      root: optional image root; if given, every referenced image must exist there.

    Returns:
      list of `Pair` in file order; `pair.fold` numbers the folds from 0.
    """
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: pairs file not found") from None
    if not lines:
        raise DataError(f"{path}: empty pairs file")
    head = lines[0].split()
    try:
        if len(head) == 1:
            folds, per = 1, int(head[0])
        elif len(head) == 2:
            folds, per = int(head[0]), int(head[1])
        else:
            raise ValueError
    except ValueError:
        raise DataError(f"{path}:1: header must be 'N' or 'FOLDS N', got {lines[0]!r}") from None
    if folds < 1 or per < 1:
        raise DataError(
            f"{path}:1: header {lines[0]!r} announces no pairs; it must be 'N' or 'FOLDS N' "
            "with N >= 1 (pairs per kind per fold)"
        )
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise DataError(
            f"{path}: header says {folds} folds x {2 * per} pairs = {folds * 2 * per} lines, "
            f"found {len(body)}"
        )
    pairs = []
    for i, line in enumerate(body):
        lineno = i + 2
        fold, pos = divmod(i, 2 * per)
        parts = line.split()
        try:
            if len(parts) == 3:
                pair = Pair(parts[0], int(parts[1]), parts[0], int(parts[2]), True, fold)
            elif len(parts) == 4:
                pair = Pair(parts[0], int(parts[1]), parts[2], int(parts[3]), False, fold)
            else:
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {line!r}"
            ) from None
        if pair.same != (pos < per):
            kind = "same-person" if pos < per else "different-person"
            raise DataError(f"{path}:{lineno}: expected a {kind} line here, got {line!r}")
        if root is not None:
            for p in pair.paths(root, ext):
                if not os.path.exists(p):
                    raise DataError(
                        f"{path}:{lineno}: image {p} does not exist; check the name and number, "
                        "or point the image root at the right LFW copy"
                    )
        pairs.append(pair)
    return pairs
