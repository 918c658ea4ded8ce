import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.data.datasets import (
    DataError,
    identity_folder,
    identity_folder_dataset,
    lfw_pairs,
    load_fashion_mnist,
    read_idx,
)
from tests.conftest import LFW_ROOT


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        f.write(data)


def _fake_fmnist(d, n_train=12, n_test=5):
    rng = np.random.RandomState(0)
    xt, xs = rng.randint(0, 256, (n_train, 28, 28)), rng.randint(0, 256, (n_test, 28, 28))
    yt, ys = rng.randint(0, 10, n_train), rng.randint(0, 10, n_test)
    _write_idx(os.path.join(d, "train-images-idx3-ubyte.gz"), xt)
    _write_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), yt)
    _write_idx(os.path.join(d, "t10k-images-idx3-ubyte"), xs)  # plain, not gzipped
    _write_idx(os.path.join(d, "t10k-labels-idx1-ubyte"), ys)
    return (xt, yt), (xs, ys)


def test_fashion_mnist_from_idx_files(tmp_path):
    (xt, yt), (xs, ys) = _fake_fmnist(str(tmp_path))
    (a, b), (c, d) = load_fashion_mnist(str(tmp_path))
    np.testing.assert_array_equal(a, xt)
    np.testing.assert_array_equal(b, yt)
    np.testing.assert_array_equal(c, xs)
    np.testing.assert_array_equal(d, ys)
    assert a.dtype == np.uint8 and b.dtype == np.int32


def test_truncated_idx_names_the_file(tmp_path):
    _fake_fmnist(str(tmp_path))
    p = os.path.join(tmp_path, "t10k-images-idx3-ubyte")
    with open(p, "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: idx payload has"):
        load_fashion_mnist(str(tmp_path))
    with open(p, "wb") as f:
        f.write(b"GIF89a garbage")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)


def test_missing_fashion_mnist_dir_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_real_fashion_mnist_if_installed():
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    (xt, yt), (xs, ys) = load_fashion_mnist(allow_download=False)
    assert xt.shape == (60000, 28, 28) and xs.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(yt), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ys), [1000] * 10)


def _png(path, channels=3, value=128):
    img = np.full((6, 5, channels), value, np.uint8)
    tf.io.write_file(path, tf.io.encode_png(img))


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "faces"
    for person, n in [("Ann", 2), ("Bob", 1), ("Cid", 3)]:
        (root / person).mkdir(parents=True)
        for i in range(n):
            _png(str(root / person / f"{person}_{i + 1:04d}.png"), value=40 * i)
    _png(str(root / "Bob" / "Bob_0002.png"), channels=1)  # grayscale in an RGB set
    (root / "Cid" / "Cid_0004.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "Dee").mkdir()  # empty identity
    return str(root)


def test_identity_folder_raise_names_the_bad_file(faces):
    with pytest.raises(DataError, match=r"Cid_0004\.jpg: corrupt .*on_error=.skip."):
        identity_folder(faces)


def test_identity_folder_skip_counts_everything(faces):
    f = identity_folder(faces, on_error="skip")
    assert f.class_names == ["Ann", "Bob", "Cid"]
    assert f.report.found == 8
    assert f.report.kept == 7
    assert [os.path.basename(p) for p, _ in f.report.skipped] == ["Cid_0004.jpg"]
    assert f.report.empty_classes == ["Dee"]
    np.testing.assert_array_equal(f.labels, [0, 0, 1, 1, 2, 2, 2])
    # Grayscale is converted to RGB at load time.
    images = [img.numpy() for img, _ in identity_folder_dataset(f, 4)]
    assert all(img.shape == (4, 4, 3) for img in images)


def test_identity_folder_min_images_and_exclusion(faces):
    f = identity_folder(faces, on_error="skip", min_images=3, exclude_people=["Ann"])
    assert f.class_names == ["Cid"]
    assert "Bob" in f.report.empty_classes


PAIRS = """2 2
Ann 1 2
Cid 1 3
Ann 1 Bob 1
Bob 2 Cid 2
Cid 2 3
Ann 2 2
Bob 1 Cid 1
Ann 2 Cid 3
"""


def test_lfw_pairs_parsing(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text(PAIRS)
    pairs = lfw_pairs(str(p))
    assert len(pairs) == 8
    assert [q.fold for q in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [q.same for q in pairs] == [True, True, False, False] * 2
    assert pairs[2].name_a == "Ann" and pairs[2].name_b == "Bob" and pairs[2].num_b == 1
    assert pairs[0].paths("/r") == ("/r/Ann/Ann_0001.jpg", "/r/Ann/Ann_0002.jpg")


def test_lfw_pairs_errors(tmp_path, faces):
    p = tmp_path / "pairs.txt"
    p.write_text(PAIRS.replace("Cid 2 3", "Cid two 3"))
    with pytest.raises(DataError, match=r"pairs.txt:6: expected"):
        lfw_pairs(str(p))
    p.write_text("1 1\nAnn 1 2\nAnn 1 Zed 1\n")
    with pytest.raises(DataError, match="Zed_0001.png does not exist"):
        lfw_pairs(str(p), root=faces, ext=".png")
    p.write_text("1 2\nAnn 1 2\n")
    with pytest.raises(DataError, match="header says"):
        lfw_pairs(str(p))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,count", [("pairs.txt", 6000), ("pairsDevTrain.txt", 2200), ("pairsDevTest.txt", 1000)]
)
def test_real_lfw_pairs_reference_existing_images(name, count):
    path = os.path.join(LFW_ROOT, name)
    if not os.path.exists(path):
        pytest.skip("../shared/data/lfw is not present")
    pairs = lfw_pairs(path, root=os.path.join(LFW_ROOT, "lfw-deepfunneled"))
    assert len(pairs) == count
    assert sum(q.same for q in pairs) == count // 2
