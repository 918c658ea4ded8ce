"""Image files in every common format: detection by content, exact decoding, the
tf.data decoders, and loaders that count every unused file by reason."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lrface_tf.data.datasets import DataError, flat_folder, identity_folder, identity_folder_dataset
from lrface_tf.data.images import (
    check_image,
    decode_image_bytes,
    decode_image_file,
    image_format,
    list_images,
    read_image,
)

H, W = 16, 24
# Every pixel distinct per channel, so a flip, transpose or channel swap shows.
RGB = np.stack(
    [
        np.add.outer(np.arange(H) * 8, np.arange(W) * 2),
        np.add.outer(np.arange(H) * 3, 250 - np.arange(W) * 5),
        np.add.outer(255 - np.arange(H) * 15, np.zeros(W, int)),
    ],
    -1,
).astype(np.uint8)
GRAY = np.add.outer(np.arange(H) * 10, np.arange(W)).astype(np.uint8)  # 0..173
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(32)


def _save(path, array, fmt, **kwargs):
    Image.fromarray(array).save(path, fmt, **kwargs)
    return str(path)


def _pgm16(path, values, maxval=65535):
    """A binary PGM (P5) with 16-bit big-endian samples, written by hand from the spec."""
    h, w = values.shape
    header = f"P5\n{w} {h}\n{maxval}\n".encode()
    with open(path, "wb") as f:
        f.write(header + values.astype(">u2").tobytes())
    return str(path)


def _truncated_jpeg(path):
    _save(path, RGB, "JPEG")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return str(path)


# ------------------------------------------------------------------ one file
def test_format_comes_from_content_not_name(tmp_path):
    files = {
        "a.png": ("jpeg", lambda p: _save(p, RGB, "JPEG")),  # misnamed
        "b": ("gif", lambda p: _save(p, GRAY, "GIF")),  # no extension
        "c.pgm": ("pnm", lambda p: _save(p, GRAY, "PPM")),
        "d.ppm": ("pnm", lambda p: _save(p, RGB, "PPM")),
        "e.pbm": ("pnm", lambda p: _save(p, GRAY > 80, "PPM")),
        "f.tif": ("tiff", lambda p: _save(p, RGB, "TIFF")),
        "g.webp": ("webp", lambda p: _save(p, RGB, "WEBP", lossless=True)),
        "h.bmp": ("bmp", lambda p: _save(p, RGB, "BMP")),
        "i.jpg": ("png", lambda p: _save(p, RGB, "PNG")),  # misnamed
        "notes.jpg": (None, lambda p: p.write_text("not an image, despite the name\n")),
        ".DS_Store": (None, lambda p: p.write_bytes(DS_STORE)),
    }
    for name, (expected, write) in files.items():
        write(tmp_path / name)
        assert image_format(str(tmp_path / name)) == expected, name
    with open(tmp_path / "e.pbm", "rb") as f:
        assert f.read(2) == b"P4"  # a real PBM (1 bit per pixel)


@pytest.mark.parametrize(
    "fmt,kwargs",
    [
        ("PNG", {}),
        ("BMP", {}),
        ("PPM", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("WEBP", {"lossless": True}),
        ("JPEG", {"quality": 100, "subsampling": 0}),
    ],
)
def test_rgb_formats_decode_exactly(tmp_path, fmt, kwargs):
    path = _save(tmp_path / "face", RGB, fmt, **kwargs)
    image = read_image(path)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    if fmt == "JPEG":  # lossy: close, not equal
        assert np.abs(image.astype(int) - RGB).max() <= 3
    else:
        np.testing.assert_array_equal(image, RGB)


@pytest.mark.parametrize("fmt", ["PNG", "PPM", "GIF", "TIFF", "BMP", "WEBP"])
def test_grayscale_becomes_three_equal_channels(tmp_path, fmt):
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    path = _save(tmp_path / "gray", GRAY, fmt, **kwargs)
    rgb = read_image(path)
    assert rgb.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], GRAY)
    np.testing.assert_array_equal(read_image(path, channels=1), GRAY[..., None])


def test_pbm_is_black_and_white(tmp_path):
    bits = GRAY > 80
    for plain in (False, True):  # P4 (binary) and P1 (ASCII)
        path = tmp_path / f"bits{plain}.pbm"
        if plain:
            rows = "\n".join(" ".join("0" if b else "1" for b in row) for row in bits)
            path.write_text(f"P1\n{W} {H}\n{rows}\n")  # PBM: 1 is black
        else:
            _save(path, bits, "PPM")
        np.testing.assert_array_equal(read_image(str(path))[..., 1], bits * 255)


def test_16_bit_samples_are_scaled_not_clipped(tmp_path):
    values = np.arange(H * W, dtype=np.int64).reshape(H, W) * 170  # 0 .. 65110
    expected = (values >> 8).astype(np.uint8)  # the high byte
    assert expected.max() > 250 and (values[expected < 10] > 255).any()  # clipping would show
    files = {
        "pgm": _pgm16(tmp_path / "deep.pgm", values),
        "tiff": _save(tmp_path / "deep.tif", values.astype(np.uint16), "TIFF"),
        "png": _save(tmp_path / "deep.png", values.astype(np.uint16), "PNG"),
    }
    for name, path in files.items():
        image = read_image(path)
        np.testing.assert_array_equal(image[..., 0], expected, err_msg=name)
        np.testing.assert_array_equal(image[..., 2], expected, err_msg=name)
    # a 10-bit PGM (maxval 1023) spans the full 8-bit range
    ten_bit = np.arange(H * W).reshape(H, W) * 1023 // (H * W - 1)
    image = read_image(_pgm16(tmp_path / "ten.pgm", ten_bit, maxval=1023))[..., 0]
    assert image.min() == 0 and image.max() == 255
    assert np.abs(image.astype(float) - ten_bit * 255 / 1023).max() <= 1


def test_first_frame_of_an_animated_gif(tmp_path):
    path = str(tmp_path / "anim.gif")
    frames = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(read_image(path)[..., 0], GRAY)


def test_orient_applies_the_exif_rotation_only_when_asked(tmp_path):
    path = str(tmp_path / "phone.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
    Image.fromarray(RGB).save(path, "JPEG", exif=exif, quality=95)
    stored = read_image(path)  # as TensorFlow's decoders give it
    assert stored.shape == (H, W, 3)
    np.testing.assert_array_equal(read_image(path, orient=True), np.rot90(stored, k=-1))


def test_unusable_files_get_a_reason_and_a_one_line_error(tmp_path):
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(40))
    float_tiff = _save(tmp_path / "float.tif", GRAY.astype(np.float32), "TIFF")
    (tmp_path / "text.jpg").write_text("hello\n")
    (tmp_path / "empty").write_bytes(b"")
    reasons = {
        "cut.jpg": check_image(_truncated_jpeg(tmp_path / "cut.jpg")),
        "text.jpg": check_image(str(tmp_path / "text.jpg")),
        "empty": check_image(str(tmp_path / "empty")),
        "phone.heic": check_image(str(heic)),
        "float.tif": check_image(float_tiff),
    }
    assert reasons["cut.jpg"].startswith("corrupt (truncated JPEG")
    assert reasons["text.jpg"] == "not an image (text, although named .jpg)"
    assert reasons["empty"] == "not an image (empty file)"
    assert reasons["phone.heic"] == "unsupported (HEIF/HEIC/AVIF file)"
    assert reasons["float.tif"].startswith("unsupported (TIFF: floating-point samples")
    assert check_image(_save(tmp_path / "ok.png", RGB, "PNG")) is None
    with pytest.raises(DataError, match=r"cut\.jpg: corrupt \(truncated JPEG.*re-download") as e:
        read_image(str(tmp_path / "cut.jpg"))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="phone.heic: unsupported .*convert it to PNG or JPEG"):
        read_image(str(heic))
    with pytest.raises(DataError, match="missing.png: file not found"):
        read_image(str(tmp_path / "missing.png"))


# ------------------------------------------------------------------- tf.data
def test_tf_decoders_equal_read_image_for_every_format(tmp_path):
    paths = [
        _save(tmp_path / "a.jpg", RGB, "JPEG", quality=90),
        _save(tmp_path / "b.png", GRAY, "PNG"),
        _save(tmp_path / "c.png", RGB, "PNG"),
        _save(tmp_path / "d", GRAY, "GIF"),
        _save(tmp_path / "e.bmp", RGB, "BMP"),
        _save(tmp_path / "f.pgm", GRAY, "PPM"),
        _save(tmp_path / "g.tif", RGB, "TIFF"),
        _save(tmp_path / "h.webp", RGB, "WEBP", lossless=True),
        _pgm16(tmp_path / "i.pgm", GRAY.astype(np.int64) * 300),
        _save(tmp_path / "j.png", (GRAY.astype(np.uint16) * 300), "PNG"),  # 16-bit PNG via TF
        _save(tmp_path / "k.pgm", GRAY[::-1, ::-1], "PPM"),  # ends in a 0 byte
    ]
    palette_bmp = str(tmp_path / "l.bmp")  # 8-bit palette: TF's own BMP decoder ignores it
    Image.fromarray(RGB).quantize(64).save(palette_bmp)
    paths.append(palette_bmp)
    with open(paths[-2], "rb") as f:
        assert f.read()[-1] == 0
    for path in paths:
        expected = read_image(path)
        from_file = np.round(decode_image_file(path).numpy() * 255)
        np.testing.assert_array_equal(from_file, expected, err_msg=path)
        with open(path, "rb") as f:
            from_bytes = np.round(decode_image_bytes(f.read()).numpy() * 255)
        np.testing.assert_array_equal(from_bytes, expected, err_msg=path)
    # inside a tf.data graph: static shape, area resize (2x2 block means of a 16x24 image)
    ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: decode_image_file(p, 8))
    assert ds.element_spec.shape == (8, 8, 3)
    images = np.stack(list(ds.as_numpy_iterator()))
    assert images.shape == (len(paths), 8, 8, 3)
    np.testing.assert_allclose(images[1, 0, 0, 0], GRAY[:2, :3].mean() / 255, atol=1e-6)
    one = decode_image_file(paths[5], channels=1)
    np.testing.assert_array_equal(np.round(one.numpy() * 255)[..., 0], GRAY)


def test_tf_decoder_error_names_the_file(tmp_path):
    path = str(tmp_path / "broken.pgm")
    with open(path, "wb") as f:
        f.write(b"P5\n24 16\n255\n" + bytes(10))  # 10 of 384 pixels
    ds = tf.data.Dataset.from_tensor_slices([path]).map(lambda p: decode_image_file(p, 8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"broken\.pgm: corrupt"):
        list(ds)


# ------------------------------------------------------------------- folders
def test_list_images_looks_at_every_file(tmp_path):
    _save(tmp_path / "b.pgm", GRAY, "PPM")
    _save(tmp_path / "a", RGB, "GIF")
    (tmp_path / ".DS_Store").write_bytes(DS_STORE)
    (tmp_path / "landmarks.json").write_text('{"eyes": []}')
    (tmp_path / "sub").mkdir()
    images, skipped = list_images(str(tmp_path))
    assert [os.path.basename(p) for p in images] == ["a", "b.pgm"]
    assert [(os.path.basename(p), r) for p, r in skipped] == [
        (".DS_Store", "not an image (hidden file)"),
        ("landmarks.json", "not an image (text)"),
        ("sub", "not an image (a folder; only files directly in it are read)"),
    ]


@pytest.fixture
def netpbm_faces(tmp_path):
    """Identities whose images are only PGM, PPM, PBM, TIFF and an extensionless GIF."""
    root = tmp_path / "faces"
    for person in ("Ann", "Bob", "Cid"):
        (root / person).mkdir(parents=True)
    _save(root / "Ann" / "Ann_0001.pgm", GRAY, "PPM")
    _save(root / "Ann" / "Ann_0002.ppm", RGB, "PPM")
    _save(root / "Bob" / "Bob_0001.tif", RGB, "TIFF")
    _save(root / "Bob" / "Bob_0002.pbm", GRAY > 80, "PPM")
    _save(root / "Cid" / "Cid_0001", GRAY, "GIF")
    (root / "Cid" / ".DS_Store").write_bytes(DS_STORE)
    return root


def test_identity_folder_of_netpbm_tiff_and_gif(netpbm_faces):
    folder = identity_folder(str(netpbm_faces))  # on_error="raise": .DS_Store is no error
    assert folder.class_names == ["Ann", "Bob", "Cid"]
    np.testing.assert_array_equal(folder.labels, [0, 0, 1, 1, 2])
    assert folder.report.found == 6 and folder.report.kept == 5
    assert folder.report.counts_by_reason() == {"not an image": 1}
    assert folder.report.to_dict()["reasons"] == {"not an image": 1}
    images = [(img.numpy(), int(y)) for img, y in identity_folder_dataset(folder, 8)]
    assert all(img.shape == (8, 8, 3) for img, _ in images)
    gray, _ = images[0]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # PGM -> 3 equal channels


def test_identity_folder_counts_every_unused_file_by_reason(netpbm_faces):
    _truncated_jpeg(netpbm_faces / "Ann" / "Ann_0003.jpg")
    (netpbm_faces / "Bob" / "Bob_0003.jpg").write_text("a text file renamed .jpg\n")
    (netpbm_faces / "Bob" / "Bob_0004.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(8))
    (netpbm_faces / "Cid" / "notes.txt").write_text("taken 2004\n")
    (netpbm_faces / "README").write_text("faces\n")
    with pytest.raises(DataError, match=r"Ann_0003\.jpg: corrupt .*on_error='skip'"):
        identity_folder(str(netpbm_faces))
    folder = identity_folder(str(netpbm_faces), on_error="skip")
    assert folder.report.found == 11 and folder.report.kept == 5
    assert folder.report.counts_by_reason() == {
        "corrupt": 1,
        "not an image": 3,  # .DS_Store, notes.txt, the text "Bob_0003.jpg"
        "not in a person folder": 1,
        "unsupported": 1,
    }
    reasons = {os.path.basename(p): r for p, r in folder.report.skipped}
    assert reasons["Bob_0003.jpg"] == "not an image (text, although named .jpg)"
    assert reasons["Ann_0003.jpg"].startswith("corrupt (truncated JPEG")
    # a misnamed text file is an error with on_error="raise", a sidecar never is
    os.remove(netpbm_faces / "Ann" / "Ann_0003.jpg")
    with pytest.raises(DataError, match=r"Bob_0003\.jpg: not an image \(text, although named"):
        identity_folder(str(netpbm_faces))


def test_flat_folder_labels_every_image_unlabelled(tmp_path):
    from lrface_tf.data.pipeline import UNLABELLED

    root = tmp_path / "crops"
    root.mkdir()
    _save(root / "1.webp", RGB, "WEBP", lossless=True)
    _save(root / "2.pgm", GRAY, "PPM")
    _save(root / "3.jpg", RGB, "JPEG")
    _truncated_jpeg(root / "4.jpg")
    (root / ".DS_Store").write_bytes(DS_STORE)
    (root / "nested").mkdir()
    folder = flat_folder(str(root), on_error="skip")
    assert [os.path.basename(p) for p in folder.paths] == ["1.webp", "2.pgm", "3.jpg"]
    np.testing.assert_array_equal(folder.labels, [UNLABELLED] * 3)
    assert folder.labels.dtype == np.int32 and folder.class_names == [] and len(folder) == 3
    assert folder.report.counts_by_reason() == {"corrupt": 1, "not an image": 2}
    assert folder.report.found == 6 and folder.report.kept == 3
    with pytest.raises(DataError, match=r"4\.jpg: corrupt"):
        flat_folder(str(root))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match=r"no readable images \(1 not an image\)"):
        flat_folder(str(tmp_path / "empty"))


# ---------------------------------------------------------------- evaluation
def test_load_images_reads_any_format_and_names_the_bad_file(tmp_path):
    from lrface_tf.eval.pairs import load_images

    small_gray, small_rgb = GRAY[:8, :8], RGB[:8, :8]
    paths = [  # 16 x 16 images of constant 2 x 2 blocks: the area resize to 8 is exact
        _save(tmp_path / "a.pgm", np.kron(small_gray, np.ones((2, 2), np.uint8)), "PPM"),
        _save(tmp_path / "b", np.kron(small_gray, np.ones((2, 2), np.uint8)), "GIF"),
        _save(tmp_path / "c.tif", np.kron(small_rgb, np.ones((2, 2, 1), np.uint8)), "TIFF"),
        _save(tmp_path / "d.webp", RGB, "WEBP", lossless=True),
    ]
    images = load_images(paths, size=8)
    assert images.shape == (4, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], np.repeat(small_gray[..., None], 3, -1))
    np.testing.assert_array_equal(images[1], images[0])
    np.testing.assert_array_equal(images[2], small_rgb)
    # 16 x 24 -> 8 x 8 mixes pixels: the same numbers as the tf.data path
    ref = np.round(decode_image_file(paths[3], 8).numpy() * 255)
    np.testing.assert_array_equal(images[3], ref)
    bad = _truncated_jpeg(tmp_path / "Zed_0001.jpg")
    with pytest.raises(DataError, match=r"Zed_0001\.jpg: corrupt"):
        load_images(paths + [bad], size=8)
