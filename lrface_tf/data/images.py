"""Image files: their format (by content), decoding, and a reason for every file not used.

Supported formats: JPEG, PNG, BMP, GIF, PGM/PPM/PBM (P1-P6), TIFF and WEBP. A
file's format is read from its first bytes, never from its name, so a GIF
called `face` or a PNG called `face.jpg` is read like any other, and `.DS_Store`
or `notes.txt` is never mistaken for a face.

Decoding (`read_image`) uses Pillow for every format: the first frame of a GIF
or TIFF, converted to RGB (`channels=3`: grayscale, palette, 1-bit and CMYK
become RGB, alpha is dropped) or to Pillow's ITU-R 601-2 luma (`channels=1`);
16-bit samples (PNG, PGM, TIFF) keep their high byte (v >> 8, as libpng and
TensorFlow do). Inside tf.data (`decode_image_file`, `decode_image_bytes`),
JPEG and PNG are decoded by TensorFlow's own ops, with the accurate integer DCT
so that the pixels equal Pillow's, and every other format goes through
`read_image` in a `tf.numpy_function` (TensorFlow's BMP decoder ignores
palettes and rejects 1-bit files).

A file that is not used gets one of three reasons, with a detail in brackets:
"not an image" (no image signature: text, sidecars, hidden files, folders),
"corrupt" (an image signature, but the data does not decode: truncated,
damaged) or "unsupported" (a real image in a format or variant not read here:
HEIC, AVIF, JPEG 2000, floating-point TIFF, ...).

Example:
    image = read_image("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")  # uint8 (250, 250, 3)
    paths, skipped = list_images("faces/Ann")   # skipped: [(path, "not an image (hidden file)")]
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
import zlib

import numpy as np

NOT_AN_IMAGE = "not an image"
CORRUPT = "corrupt"
UNSUPPORTED = "unsupported"
REASONS = (NOT_AN_IMAGE, CORRUPT, UNSUPPORTED)

# File names that say "image": a file so named that is not a usable image was meant
# to be one (a loader stops at it with on_error="raise"); listing never uses names.
IMAGE_EXTENSIONS = tuple(
    ".jpg .jpeg .jpe .jfif .png .bmp .dib .gif .pgm .ppm .pbm .pnm .tif .tiff .webp "
    ".heic .heif .avif .jp2 .j2k .jxl .psd .pam .pfm .exr".split()
)
_HEAD_BYTES = 32
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)
_HINTS = {
    NOT_AN_IMAGE: "remove it, or replace it with the image it should be",
    CORRUPT: "re-download or re-encode it, or delete it",
    UNSUPPORTED: "convert it to PNG or JPEG",
}


class DataError(ValueError):
    """A data file or folder is missing, corrupt or inconsistent."""


class ImageFileError(DataError):
    """One image file cannot be used; `reason` is "not an image", "corrupt" or
    "unsupported" with a detail in brackets."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}; {_HINTS[reason_kind(reason)]}")
        self.path, self.reason = path, reason


def reason_kind(reason):
    """The reason without its detail: "corrupt (truncated)" -> "corrupt"."""
    return reason.split(" (", 1)[0]


# ----------------------------------------------------------------- by content
def _is_bmp(head):
    size = struct.unpack("<I", head[14:18])[0] if len(head) >= 18 else 0
    return head[:2] == b"BM" and size in _BMP_HEADER_SIZES


def _is_pnm(head):
    return len(head) >= 3 and head[:1] == b"P" and head[1] in b"123456" and head[2] in b" \t\r\n#"


# name -> does the file start like one (Pillow's own plugins accept the same).
SIGNATURES = {
    "jpeg": lambda h: h[:3] == b"\xff\xd8\xff",
    "png": lambda h: h[:8] == b"\x89PNG\r\n\x1a\n",
    "bmp": _is_bmp,
    "gif": lambda h: h[:6] in (b"GIF87a", b"GIF89a"),
    "pnm": _is_pnm,
    "tiff": lambda h: h[:4] in (b"II*\x00", b"MM\x00*"),
    "webp": lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP",
}
_PILLOW_FORMATS = {name: name.upper() for name in SIGNATURES} | {"pnm": "PPM"}
# Images in formats not read here: reported as "unsupported", not "not an image".
_OTHER_IMAGE_SIGNATURES = {
    "HEIF/HEIC/AVIF": lambda h: (
        h[4:8] == b"ftyp"
        and h[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")
    ),
    "JPEG 2000": lambda h: h[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or h[:4] == b"\xffO\xffQ",
    "JPEG XL": lambda h: h[:2] == b"\xff\x0a" or h[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n",
    "BigTIFF": lambda h: h[:4] in (b"II+\x00", b"MM\x00+"),
    "Photoshop": lambda h: h[:4] == b"8BPS",
    "PAM/PFM": lambda h: h[:2] in (b"P7", b"Pf", b"PF"),
    "OpenEXR": lambda h: h[:4] == b"\x76\x2f\x31\x01",
}


def _head(path):
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); check its permissions") from None


def _sniff(head):
    return next((name for name, match in SIGNATURES.items() if match(head)), None)


def image_format(path):
    """The format a file holds by its first bytes, whatever its name.

    Returns:
      "jpeg", "png", "bmp", "gif", "pnm" (PGM/PPM/PBM), "tiff", "webp", or None
      for a file that holds none of them.
    """
    return _sniff(_head(path))


def _not_supported_reason(path, head):
    """The reason for a file whose first bytes match no supported format."""
    other = next((n for n, match in _OTHER_IMAGE_SIGNATURES.items() if match(head)), None)
    if other:
        return f"{UNSUPPORTED} ({other} file)"
    text = head.decode("utf-8", "ignore")
    is_text = len(text) >= len(head) // 2 and all(c.isprintable() or c in "\t\r\n" for c in text)
    what = "empty file" if not head else "text" if is_text else "no image signature"
    ext = os.path.splitext(path)[1]
    if ext.lower() in IMAGE_EXTENSIONS:
        what += f", although named {ext}"
    return f"{NOT_AN_IMAGE} ({what})"


def meant_as_image(path, reason):
    """Whether an unused file was meant to be an image (a loader that raises stops at it).

    True for a corrupt or unsupported image and for a visible file named like an
    image (e.g. text saved as `face.jpg`); False for hidden files, folders and
    files such as `notes.txt` or `landmarks.json`.
    """
    if reason_kind(reason) != NOT_AN_IMAGE:
        return True
    name = os.path.basename(path)
    visible_file = not name.startswith(".") and os.path.isfile(path)
    return visible_file and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# ------------------------------------------------------------------ decoding
def _pillow_reason(fmt, error):
    """Map a Pillow failure to "corrupt (...)" or "unsupported (...)"."""
    from PIL import Image

    name = _PILLOW_FORMATS[fmt]
    if isinstance(error, Image.UnidentifiedImageError):
        return f"{CORRUPT} (the header is not valid {name})"
    if isinstance(error, Image.DecompressionBombError):
        return f"{UNSUPPORTED} (too large: {error})"
    msg = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
    if re.search(r"unsupported|not supported|not available|unknown|cannot handle", msg, re.I):
        return f"{UNSUPPORTED} ({name}: {msg})"
    if re.search(r"truncated|premature|end of file|eof", msg, re.I):
        return f"{CORRUPT} (truncated {name}: {msg})"
    return f"{CORRUPT} ({name}: {msg})"


def _to_array(im, channels):
    """A loaded Pillow image -> uint8 (H, W, channels); ValueError(detail) if impossible."""
    mode = im.mode
    if mode.startswith("I;16") or (mode == "I" and im.format in ("PPM", "PNG")):
        gray = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)  # 16 -> 8 bit
        return np.repeat(gray[..., None], channels, axis=-1)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ValueError(f"{kind} samples; save it with 8- or 16-bit samples")
    target = "RGB" if channels == 3 else "L"
    if mode != target:
        try:
            im = im.convert(target)
        except ValueError as e:
            raise ValueError(f"mode {mode} cannot convert to {target} ({e})") from None
    array = np.asarray(im, np.uint8)
    return np.ascontiguousarray(array if channels == 3 else array[..., None])


# What a damaged file makes Pillow raise.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_PILLOW_ERRORS += (struct.error, zlib.error)


def _decode(source, fmt, channels, name, orient=False):
    """Pillow decode of `source` (a path or a file object) known to hold `fmt`."""
    from PIL import Image, ImageOps

    try:
        with Image.open(source, formats=[_PILLOW_FORMATS[fmt]]) as im:
            im.load()  # the first frame of an animated GIF / multi-page TIFF
            image = ImageOps.exif_transpose(im) if orient else im
            try:
                return _to_array(image, channels)
            except ValueError as e:
                raise ImageFileError(name, f"{UNSUPPORTED} ({_PILLOW_FORMATS[fmt]}: {e})") from None
    except ImageFileError:
        raise
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except (*_PILLOW_ERRORS, Image.DecompressionBombError) as e:
        raise ImageFileError(name, _pillow_reason(fmt, e)) from None


def _check_channels(channels):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def read_image(path, channels=3, orient=False):
    """Decode an image file of any supported format to uint8 `(H, W, channels)`.

    Args:
      path: the file; its format is read from its content, not its name.
      channels: 3 (RGB) or 1 (luma).
      orient: apply the EXIF orientation tag (as a camera means it). TensorFlow's
        decoders ignore it, so the default gives the pixels the tf.data pipelines see.

    Returns:
      uint8 numpy array `(H, W, channels)`.

    Raises:
      ImageFileError (a `DataError`) naming the file and what to do, for a file that
      is not an image, is corrupt or truncated, or is in an unsupported format.
    """
    _check_channels(channels)
    head = _head(path)
    fmt = _sniff(head)
    if fmt is None:
        raise ImageFileError(path, _not_supported_reason(path, head))
    return _decode(path, fmt, channels, path, orient)


def check_image(path):
    """None if `read_image(path)` succeeds, else the reason: "not an image (...)",
    "corrupt (...)" or "unsupported (...)". Decodes the whole image once."""
    try:
        read_image(path)
    except ImageFileError as e:
        return e.reason
    except DataError as e:  # unreadable: gone or no permission
        return f"{CORRUPT} ({str(e).split(': ', 1)[-1]})"
    return None


def list_images(folder):
    """The image files directly in `folder` (by content), and a reason for everything else.

    Every entry is looked at: hidden files (`.DS_Store`, `._face.jpg`) and
    sub-folders are "not an image" without being read; any other file is kept if
    its first bytes are a supported format's. Only the first bytes are read:
    `check_image` finds corrupt files among the kept ones.

    Returns:
      (sorted image paths, [(path, reason)] for every other entry, sorted).
    """
    images, skipped = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            kind = "folder" if os.path.isdir(path) else "file"
            skipped.append((path, f"{NOT_AN_IMAGE} (hidden {kind})"))
        elif os.path.isdir(path):
            skipped.append((path, f"{NOT_AN_IMAGE} (a folder; only files directly in it are read)"))
        elif not os.path.isfile(path):
            skipped.append((path, f"{NOT_AN_IMAGE} (not a regular file, or a broken link)"))
        else:
            head = _head(path)
            if _sniff(head) is None:
                skipped.append((path, _not_supported_reason(path, head)))
            else:
                images.append(path)
    return images, skipped


# ------------------------------------------------------------------- tf.data
def _tf_bytes(value):
    """A tf.string scalar as `tf.numpy_function` hands it over (bytes in a graph, a 0-d
    object array eagerly) -> bytes. A 0-d `S` array gives them by `tobytes()`, which
    keeps trailing NUL bytes (`.item()` would strip them from an image's last pixels)."""
    if isinstance(value, np.ndarray):
        return value.item() if value.dtype == object else value.tobytes()
    return bytes(value)


def _decode_bytes_numpy(data, channels):
    data = _tf_bytes(data)
    fmt = _sniff(data[:_HEAD_BYTES])
    if fmt is None:
        raise ImageFileError("encoded image", _not_supported_reason("", data[:_HEAD_BYTES]))
    return _decode(io.BytesIO(data), fmt, channels, "encoded image")


def _decode_file_numpy(path, channels):
    return read_image(os.fsdecode(_tf_bytes(path)), channels)


def _finish(image, size, channels):
    import tensorflow as tf

    image.set_shape((None, None, channels))
    image = tf.image.convert_image_dtype(image, tf.float32)
    if size is not None:
        image = tf.image.resize(image, (size, size), method="area")
        image.set_shape((size, size, channels))
    return image


def _decode_tf(data, channels, other):
    """uint8 `(H, W, 3)`: JPEG and PNG with TF's ops, anything else (and every
    1-channel decode: one definition of gray, Pillow's) through `other()`."""
    import tensorflow as tf

    if channels != 3:
        return other()
    is_jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
    is_png = tf.strings.substr(data, 0, 8) == b"\x89PNG\r\n\x1a\n"

    def jpeg():
        return tf.io.decode_jpeg(data, 3, dct_method="INTEGER_ACCURATE")

    def png():  # 16-bit PNGs keep their high byte, as in tf.io.decode_image
        return tf.image.convert_image_dtype(tf.io.decode_png(data, 3, tf.uint16), tf.uint8)

    return tf.case([(is_jpeg, jpeg), (is_png, png)], default=other)


def decode_image_bytes(data, size=None, channels=3):
    """tf op: encoded image bytes of any supported format -> float32 [0, 1] `(H, W, C)`.

    Resized to `(size, size)` with area interpolation when `size` is given (the
    shape is then static).
    """
    import tensorflow as tf

    _check_channels(channels)
    data = tf.convert_to_tensor(data, tf.string)
    decode = functools.partial(_decode_bytes_numpy, channels=channels)

    def other():
        return tf.numpy_function(decode, [data], tf.uint8, stateful=False)

    return _finish(_decode_tf(data, channels, other), size, channels)


def decode_image_file(path, size=None, channels=3):
    """tf op: read and decode one image file of any supported format (see
    `decode_image_bytes`); a file TF cannot decode is read by `read_image`, whose
    error names it."""
    import tensorflow as tf

    _check_channels(channels)
    path = tf.convert_to_tensor(path, tf.string)
    decode = functools.partial(_decode_file_numpy, channels=channels)

    def other():
        return tf.numpy_function(decode, [path], tf.uint8, stateful=False)

    return _finish(_decode_tf(tf.io.read_file(path), channels, other), size, channels)
