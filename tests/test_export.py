import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.data.pipeline import single_view_dataset
from lrface_tf.export import (
    TFLiteModel,
    atomic_path,
    calibration_images,
    convert_tflite,
    export_savedmodel,
    parity_report,
    save_keras,
)
from lrface_tf.models import build_recognizer, logits_model
from tests.test_case import digits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small ResNet trained briefly on real 8x8 digits (so logits mean something)."""
    keras.utils.set_random_seed(0)
    x, y = digits()
    m = build_recognizer("resnet8", 8, 10, channels=1, embedding_dim=16, width_multiplier=0.5)
    lm = logits_model(m)
    lm.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    ds = single_view_dataset(x[:1500], y[:1500], batch_size=64)
    lm.fit(ds.repeat(), epochs=3, steps_per_epoch=25, verbose=0)
    test = np.concatenate([b.numpy() for b, _ in single_view_dataset(x[1500:], y[1500:])])
    acc = np.mean(np.argmax(m(test)["logits"], -1) == y[1500:])
    assert acc > 0.8, acc  # learned something real
    return m, test, x[:200].astype(np.float32) / 255.0, tmp_path_factory.mktemp("export")


def test_tflite_float32_matches_keras(trained):
    m, test, reps, out = trained
    path = convert_tflite(m, os.path.join(out, "f32.tflite"), "float32")
    t = TFLiteModel(path)
    assert t.input_shape == (8, 8, 1)
    r = parity_report(m, t, test)
    assert r["logits"]["max_abs_error"] < 1e-4
    assert r["logits"]["top1_agreement"] == 1.0
    assert r["embedding"]["mean_cosine"] > 0.99999


def test_tflite_quantized_agree_with_keras(trained):
    m, test, reps, out = trained
    dr = parity_report(
        m, TFLiteModel(convert_tflite(m, os.path.join(out, "dr.tflite"), "dynamic_range")), test
    )
    assert dr["logits"]["top1_agreement"] >= 0.98
    path = convert_tflite(m, os.path.join(out, "i8.tflite"), "int8", representative_images=reps)
    t = TFLiteModel(path)
    assert t.input_detail["dtype"] == np.int8
    i8 = parity_report(m, t, test)
    assert i8["logits"]["top1_agreement"] >= 0.95
    assert i8["embedding"]["mean_cosine"] > 0.98
    assert os.path.getsize(path) < os.path.getsize(os.path.join(out, "dr.tflite")) * 1.5
    with pytest.raises(ValueError, match="representative_images"):
        convert_tflite(m, os.path.join(out, "x.tflite"), "int8")


def test_savedmodel_and_keras_round_trip(trained):
    m, test, _, out = trained
    sm = export_savedmodel(m, os.path.join(out, "sm"))
    loaded = tf.saved_model.load(sm)  # keep a reference: its variables die with it
    served = loaded.serve(tf.constant(test[:5]))
    np.testing.assert_allclose(served["logits"], m(test[:5])["logits"], rtol=1e-5, atol=1e-5)
    path = save_keras(m, os.path.join(out, "student.keras"))
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again(test)["logits"], m(test)["logits"], rtol=1e-5, atol=1e-5)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model.tflite"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_int8_calibration_leaves_out_extreme_embeddings(tmp_path):
    """One image with an extreme embedding norm in the calibration sample coarsens every
    int8 step; `calibration_images` leaves the largest norms out, and the int8 model
    agrees better with Keras on ordinary images."""
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16),
        ]
    )
    x, _ = digits()
    faint = 0.1 * x.astype(np.float32) / 255.0  # dim digits beside one all-white image
    sample = np.concatenate([faint[:199], np.ones((1, 8, 8, 1), np.float32)])
    norms = np.linalg.norm(m(sample), axis=-1)
    assert norms[-1] > 5 * np.median(norms)  # the premise: an outlier
    kept, report = calibration_images(m, sample, trim=0.05)
    assert report["dropped_largest_norm"] == len(sample) // 20
    assert len(kept) == report["kept"] == len(sample) - report["dropped_largest_norm"]
    assert not np.any(np.all(kept == 1.0, axis=(1, 2, 3)))  # the extreme image went
    assert report["norm_max_kept"] < report["norm_max"]
    cos = {}
    for trim in (0, 0.05):
        path = str(tmp_path / f"trim{trim}.tflite")
        convert_tflite(m, path, "int8", sample, calibration_trim=trim)
        (r,) = parity_report(m, TFLiteModel(path), faint[200:700]).values()
        cos[trim] = r["p05_cosine"]
    assert cos[0.05] > 0.999 and cos[0] < cos[0.05] - 0.005, cos
    with pytest.raises(ValueError, match="trim"):
        calibration_images(m, sample, trim=1.0)


def test_int8_float_head_keeps_a_dead_channel_from_moving_every_embedding(tmp_path):
    """A BatchNormalization between global pooling and the Dense head, with one dead
    channel (variance 0, so a factor of 1/sqrt(epsilon)): full int8 gives every feature
    one scale and the others a few levels, and the embeddings move far from Keras's;
    `int8_float_head` keeps the body int8 and runs the head in float, and agrees."""
    keras.utils.set_random_seed(0)
    x, _ = digits()
    x = x.astype(np.float32) / 255.0
    conv = keras.layers.Conv2D(8, 3, activation="relu")
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    pool = keras.layers.GlobalAveragePooling2D()
    m = keras.Sequential([keras.Input((8, 8, 1)), conv, pool, bn, keras.layers.Dense(16)])
    kernel, bias = conv.get_weights()
    kernel[..., 0], bias[0] = 0.0, -0.1  # channel 0 never fires
    conv.set_weights([kernel, bias])
    feats = pool(conv(x)).numpy()
    gamma, beta, _, _ = bn.get_weights()
    bn.set_weights([gamma, beta, feats.mean(0), feats.var(0)])
    cos = {}
    for q in ("int8", "int8_float_head"):
        path = convert_tflite(m, str(tmp_path / f"{q}.tflite"), q, x[:200])
        (r,) = parity_report(m, TFLiteModel(path), x[200:700]).values()
        cos[q] = r["p05_cosine"]
    assert cos["int8"] < 0.5 and cos["int8_float_head"] > 0.99, cos
    interpreter = TFLiteModel(str(tmp_path / "int8_float_head.tflite")).interpreter
    tensors = interpreter.get_tensor_details()
    out = {
        op["op_name"]: tensors[op["outputs"][0]]["dtype"] for op in interpreter._get_ops_details()
    }
    assert out["CONV_2D"] == np.int8 and out["FULLY_CONNECTED"] == np.float32, out
