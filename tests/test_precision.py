"""Mixed precision end to end (CPU, so mixed_bfloat16: CPUs have no fast float16): every
method's Distiller step is finite on degenerate inputs, a short fit tracks the float32 fit,
the apps' library runs set and restore the policy, and a student trained under the policy
exports float32 at its input and outputs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.config import DistillConfig, ModelConfig, TrainConfig
from lrface_tf.data.degrade import DegradationSpec
from lrface_tf.data.pipeline import paired_dataset
from lrface_tf.data.sources import DataConfig
from lrface_tf.experiment import build_student, distill, train_teacher
from lrface_tf.losses import MarginCrossEntropy
from lrface_tf.methods import METHODS, method_terms
from lrface_tf.models import Distiller, build_recognizer, float32_copy
from lrface_tf.training import compile_and_fit, precision_policy
from tests.test_case import degenerate_batch, digits, tiny_distiller

MIXED = "mixed_bfloat16"


@pytest.fixture(autouse=True)
def _float32_after():
    """Whatever a test does, the next one starts under the float32 policy."""
    yield
    keras.config.set_dtype_policy("float32")


def _finite(values):
    return all(np.all(np.isfinite(np.asarray(v))) for v in values)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_is_finite_on_degenerate_inputs_under_mixed_bfloat16(method):
    with precision_policy(MIXED):
        d = tiny_distiller(method)
    assert d.student.get_layer("embedding").compute_dtype == "bfloat16"
    if d.teacher is not None:  # the frozen teacher runs in half precision too
        assert d.teacher.get_layer("embedding").compute_dtype == "bfloat16"
    x, y = degenerate_batch()
    d.compile(optimizer=keras.optimizers.SGD(0.05))
    # Three steps through fit(): CRRCD's queue fills, so its negatives take part after.
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(3)
    logs = d.fit(ds, epochs=1, verbose=0).history
    assert _finite(v[-1] for v in logs.values()), logs

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = d(x, training=True)
            loss = d.compute_loss(x, y, out, training=True)
        return loss, tape.gradient(loss, d.trainable_variables)

    loss, grads = step()
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
    assert _finite(g for g in grads if g is not None)
    student = d.student.trainable_variables
    g_student = grads[: len(student)]
    assert all(g is not None for g in g_student)
    assert any(np.any(g.numpy() != 0) for g in g_student)


def _digits_fit(precision):
    """45 Adam steps (3 x 15, batch 16) of the library's HORKD Distiller on real digits:
    a width-0.25 ResNet-8 student with an ArcFace head on 4 px views (upsampled to 8)
    under an 8 px teacher, both built under `precision`. Returns (history, student)."""
    x, y = digits(240)
    spec = DegradationSpec("area", (4,), output_size=8)
    train = TrainConfig(epochs=3, batch_size=16, learning_rate=2e-3, verbose=0)
    with precision_policy(precision):
        keras.utils.set_random_seed(0)
        teacher_cfg = ModelConfig("resnet8", 8, 0.25, 16, head="softmax")
        student_cfg = ModelConfig("resnet8", 8, 0.25, 16, head="arcface")
        teacher = build_student(teacher_cfg, 10, 1, name="teacher")
        student = build_student(student_cfg, 10, 1)
        terms = method_terms("horkd", {"angle_chunk_size": 8}, num_classes=10)
        d = Distiller(student, teacher, terms, task_loss=MarginCrossEntropy(32.0, 0.5))

        def dataset(start_step):
            return paired_dataset(
                x, y, spec=spec, batch_size=16, augment="none", start_step=start_step
            )

        history, _ = compile_and_fit(d, dataset, train, steps_per_epoch=15)
    return history, student


@pytest.fixture(scope="module")
def fits():
    return {p: _digits_fit(p) for p in ("float32", MIXED)}


def test_a_mixed_bfloat16_fit_tracks_the_float32_fit(fits):
    h32, h16 = fits["float32"][0], fits[MIXED][0]
    # Same weights, same batches: the runs differ only by bfloat16 rounding of the
    # activations (8-bit significand: ~0.4% relative per conv / matmul), which nudges
    # every update and drifts the two trajectories apart a little. The total loss per
    # epoch stays within 3% of float32 (measured: 1.0%). The relational terms are small
    # differences of O(1) relations (loss ~0.05), so the same drift is ~10x larger
    # relative to them: within 15% (measured: 4.5% angle, 4.1% distance, 3.7% task).
    np.testing.assert_allclose(h16["loss"], h32["loss"], rtol=0.03)
    for name in ("task", "rkd_distance", "rkd_angle", "class_center"):
        np.testing.assert_allclose(h16[name], h32[name], rtol=0.15, err_msg=name)
    assert h16["loss"][-1] < 0.8 * h16["loss"][0] and h32["loss"][-1] < 0.8 * h32["loss"][0]


def test_a_student_trained_under_mixed_bfloat16_exports_float32(fits, tmp_path):
    from lrface_tf.export import TFLiteModel, convert_tflite, export_savedmodel, save_keras

    _, student = fits[MIXED]
    backbone = student.layers[1]
    assert backbone.get_layer("stem_conv").compute_dtype == "bfloat16"  # trained in half
    x = digits(16)[0].astype(np.float32) / 255.0
    out = student(x, training=False)
    assert student.input.dtype == "float32"
    assert {k: v.dtype for k, v in out.items()} == {"embedding": "float32", "logits": "float32"}

    copy = float32_copy(student)
    assert {layer.dtype_policy.name for layer in copy.layers[1].layers} == {"float32"}
    ref = copy(x, training=False)
    for k in ref:  # the same weights: equal up to bfloat16 rounding of the activations
        cos = np.sum(ref[k] * out[k], -1) / (
            np.linalg.norm(ref[k], axis=-1) * np.linalg.norm(out[k], axis=-1)
        )
        assert cos.min() > 0.99, (k, cos.min())

    lite = TFLiteModel(convert_tflite(student, str(tmp_path / "student.tflite")))
    assert lite.input_detail["dtype"] == np.float32
    assert {k: d["dtype"] for k, d in lite.output_details.items()} == {
        "embedding": np.float32,
        "logits": np.float32,
    }
    got = lite(x)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-4, rtol=1e-4)

    sm = tf.saved_model.load(export_savedmodel(student, str(tmp_path / "sm")))
    sig = sm.signatures["serving_default"]
    assert [s.dtype for s in sig.structured_input_signature[1].values()] == [tf.float32]
    assert {k: s.dtype for k, s in sig.structured_outputs.items()} == {
        "embedding": tf.float32,
        "logits": tf.float32,
    }

    loaded = keras.saving.load_model(save_keras(student, str(tmp_path / "student.keras")))
    assert {layer.dtype_policy.name for layer in loaded.layers[1].layers} == {"float32"}
    np.testing.assert_allclose(loaded(x)["embedding"], ref["embedding"], atol=1e-6)


def test_a_half_precision_backbone_still_gives_float32_outputs():
    with precision_policy(MIXED):
        image = keras.Input((4, 4, 1))
        half = keras.layers.Dense(6)(keras.layers.Flatten()(image))  # last layer in bfloat16
        model = build_recognizer(keras.Model(image, half), 4, 3, channels=1)
    assert half.dtype == "bfloat16"
    assert model.get_layer("embedding_float32").compute_dtype == "float32"
    out = model(np.ones((2, 4, 4, 1), np.float32))
    assert {k: v.dtype for k, v in out.items()} == {"embedding": "float32", "logits": "float32"}


def test_mixed_float16_scales_the_loss():
    with precision_policy("mixed_float16"):
        d = tiny_distiller("kd")
        x, y = degenerate_batch()
        train = TrainConfig(epochs=1, batch_size=8, verbose=0)
        history, _ = compile_and_fit(
            d, tf.data.Dataset.from_tensors((x, y)).repeat(2), train, steps_per_epoch=2
        )
    assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
    assert d.student.get_layer("embedding").compute_dtype == "float16"
    assert _finite(v[-1] for v in history.values()), history


def test_precision_policy_is_restored_after_an_error():
    with pytest.raises(RuntimeError), precision_policy(MIXED):
        assert keras.config.dtype_policy().name == MIXED
        raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Digits as 16x16 RGB faces of 4 people, 16 images each: root/<person>/<image>.png."""
    from PIL import Image

    root = tmp_path_factory.mktemp("faces")
    x, y = digits()
    for person in range(4):
        folder = root / f"person_{person}"
        folder.mkdir()
        for i, img in enumerate(x[y == person][:16]):
            rgb = np.repeat(np.kron(img[..., 0], np.ones((2, 2), np.uint8))[..., None], 3, -1)
            Image.fromarray(rgb).save(folder / f"{i}.png")
    return str(root)


class PolicySpy(keras.callbacks.Callback):
    """Records the global policy and the trained network's compute dtypes inside fit()."""

    def on_train_begin(self, logs=None):
        model = getattr(self.model, "student", self.model)
        self.policy = keras.config.dtype_policy().name
        self.dtypes = {
            "stem": model.layers[1].get_layer("stem_conv").compute_dtype,
            "embedding": model.layers[1].get_layer("embedding").compute_dtype,
            "logits": model.get_layer("logits").compute_dtype,
        }


def test_distill_and_train_teacher_build_under_the_policy_and_restore_it(faces, tmp_path):
    data = DataConfig("identity_folder", (faces,), image_size=16)
    train = TrainConfig(epochs=1, batch_size=16, precision=MIXED, verbose=0)
    model = ModelConfig("resnet8", 16, 0.25, 8, head="arcface")
    expect = {"stem": "bfloat16", "embedding": "float32", "logits": "float32"}
    spy = PolicySpy()
    train_teacher(data, model, train, output_dir=str(tmp_path / "t"), callbacks=[spy], log=print)
    assert (spy.policy, spy.dtypes) == (MIXED, expect)
    assert keras.config.dtype_policy().name == "float32"

    config = DistillConfig(
        data=data,
        spec=DegradationSpec("area", (8,)),
        student=ModelConfig("resnet8", 8, 0.25, 8, head="softmax"),
        train=train,
        output_dir=str(tmp_path / "s"),
    )
    spy = PolicySpy()
    distill(config, callbacks=[spy], log=lambda *a: None)
    assert (spy.policy, spy.dtypes) == (MIXED, expect)
    assert keras.config.dtype_policy().name == "float32"
    saved = keras.saving.load_model(os.path.join(tmp_path, "s", "student.keras"))
    assert {layer.dtype_policy.name for layer in saved.layers[1].layers} == {"float32"}
