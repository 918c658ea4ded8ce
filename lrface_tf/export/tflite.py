"""TFLite export of the student (float32, dynamic-range, full int8) and parity checks.

Conversion goes through the SavedModel (`TFLiteConverter.from_saved_model`);
`from_concrete_functions` silently produced NaN outputs on this stack. The
converted model runs with LiteRT (`ai_edge_litert`), not the deprecated
`tf.lite.Interpreter`.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np

from lrface_tf.export.atomic import atomic_path
from lrface_tf.export.savedmodel import export_savedmodel

QUANTIZATIONS = ("float32", "dynamic_range", "int8", "int8_float_head")


def calibration_images(model, images, trim=0.05):
    """The int8 calibration sample without the images whose embeddings have the largest norms.

    The converter takes every tensor's int8 range from the minimum and maximum
    over the calibration sample, so one extreme image sets the step for all
    the others. Embeddings trained with scale-free (cosine) terms have
    heavy-tailed norms: measured on a label-free ResNet-18 x0.25 face student,
    200 LFW crops had a median norm of 4.6 and a maximum of 895; calibrated on
    all of them the int8 embedding kept a mean cosine of 0.86 to the float one,
    without the top 5% 0.998 (README, "Export for edge devices"). The rarely
    seen extreme images are clipped instead (their directions suffer, the rest
    keep their precision).

    Args:
      model: the Keras student: its "embedding" output when it returns a dict, else
        its single output.
      images: float `(N, H, W, C)` in the model's input range.
      trim: fraction of the images, those with the largest norms, left out (0 keeps all).

    Returns:
      (kept images, report dict: images, kept, dropped, norm median / max of
      the sample and the largest norm kept).
    """
    if not 0 <= trim < 1:
        raise ValueError(f"calibration trim must be in [0, 1), got {trim}")
    from lrface_tf.eval.embeddings import extract_embeddings

    images = np.asarray(images, np.float32)
    norms = np.linalg.norm(extract_embeddings(model, images, progress=False), axis=-1)
    drop = int(np.floor(trim * len(images)))
    keep = np.sort(np.argsort(norms, kind="stable")[: len(images) - drop])
    report = {
        "images": len(images),
        "kept": len(keep),
        "dropped_largest_norm": drop,
        "norm_median": float(np.median(norms)),
        "norm_max": float(norms.max()),
        "norm_max_kept": float(norms[keep].max()),
    }
    return images[keep], report


def convert_tflite(
    model,
    path,
    quantization="float32",
    representative_images=None,
    saved_model_dir=None,
    calibration_trim=0.05,
):
    """Convert a Keras model to a `.tflite` file.

    Args:
      model: the student (image -> outputs).
      path: output `.tflite` path (written atomically).
      quantization: "float32", "dynamic_range" (int8 weights, float activations),
        "int8" (int8 weights and activations, int8 input and outputs) or
        "int8_float_head" (`head_ops`: int8 up to the global pooling, the head
        after it in float32; float input and outputs).
      representative_images: float array `(N, H, W, C)` in the model's input
        range, required for "int8" (a few hundred real images).
      saved_model_dir: reuse an exported SavedModel instead of exporting again.
      calibration_trim: for "int8", the fraction of `representative_images`
        with the largest embedding norms left out of calibration
        (`calibration_images`); 0 calibrates on all of them.

    Returns:
      `path`.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}: use one of {QUANTIZATIONS}")
    if not 0 <= calibration_trim < 1:
        raise ValueError(f"calibration_trim must be in [0, 1), got {calibration_trim}")
    full_int8 = quantization in ("int8", "int8_float_head")
    if full_int8 and representative_images is None:
        raise ValueError(
            f"{quantization} quantization needs representative_images (a few hundred real inputs)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        sm = saved_model_dir or export_savedmodel(model, os.path.join(tmp, "sm"))
        conv = tf.lite.TFLiteConverter.from_saved_model(sm)
        if quantization != "float32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if full_int8:
            reps = np.asarray(representative_images, np.float32)
            if calibration_trim:
                reps, _ = calibration_images(model, reps, calibration_trim)

            def gen():
                for i in range(len(reps)):
                    yield [reps[i : i + 1]]

            conv.representative_dataset = gen
        if quantization == "int8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        if quantization == "int8_float_head":
            head = head_ops(tf.lite.TFLiteConverter.from_saved_model(sm).convert())
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
            # Selective quantisation: calibrate once, quantise all but the head's ops. The
            # debugger runs its models in TF's own tf.lite.Interpreter, whose deprecation
            # warning (use ai_edge_litert) no caller can act on: that one warning is muted.
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", r"\s*Warning: tf\.lite\.Interpreter is deprecated", UserWarning
                )
                blob = tf.lite.experimental.QuantizationDebugger(
                    converter=conv,
                    debug_dataset=gen,
                    debug_options=tf.lite.experimental.QuantizationDebugOptions(
                        denylisted_nodes=head
                    ),
                ).get_nondebug_quantized_model()
        else:
            blob = conv.convert()
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as f:
        f.write(blob)
    return path


def head_ops(float_blob):
    """The output tensor names of a float TFLite model's head: the ops that make the
    (batch, features) tensors after global pooling, i.e. every op whose output has rank 2
    or less.

    Why `int8_float_head` keeps them in float: a BatchNormalization between the pooling
    and the head's Dense scales each feature by gamma / sqrt(var). A nearly dead channel
    (variance ~0) scales its feature by hundreds; int8 then takes one scale for that
    whole constant vector (or, folded into the Dense, for each output column), and the
    other features keep a few levels. Every embedding moves by about the same vector:
    measured on a ResNet-18 x0.25 face student (README, "Export for edge devices"), mean
    cosine to Keras 0.94 in int8 against 0.998 with the head in float (+6% latency).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=float_blob)
    tensors = interpreter.get_tensor_details()
    return [
        tensors[i]["name"]
        for op in interpreter._get_ops_details()
        for i in op["outputs"]
        if len(tensors[i]["shape"]) <= 2
    ]


class TFLiteModel:
    """Run a `.tflite` model with LiteRT; float in, float out (int8 I/O handled).

    Call arguments:
      images: float array `(B, H, W, C)` in the model's input range.

    Returns:
      dict of float32 outputs by signature name (e.g. "embedding", "logits"),
      one row per image.
    """

    def __init__(self, path, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: TFLite model not found; export it with apps.export")
        self.path = path
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner()
        ((self.input_name, self.input_detail),) = self.runner.get_input_details().items()
        self.output_details = self.runner.get_output_details()

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.input_detail["shape"][1:])

    def _quantize(self, x):
        d = self.input_detail
        if d["dtype"] == np.float32:
            return x.astype(np.float32)
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])

    def _dequantize(self, name, y):
        d = self.output_details[name]
        if d["dtype"] == np.float32:
            return y
        scale, zero = d["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        rows = []
        for i in range(len(images)):  # the converted graph has batch 1
            out = self.runner(**{self.input_name: self._quantize(images[i : i + 1])})
            rows.append({k: self._dequantize(k, v) for k, v in out.items()})
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def latency_ms(path, images, calls=300, warmup=10, num_threads=1):
    """Median milliseconds of one single-image call of a `.tflite` model with LiteRT.

    `warmup` calls first (not timed), then `calls` timed calls cycling through
    `images` (float, the model's input range).
    """
    import time

    lite = TFLiteModel(path, num_threads=num_threads)
    images = np.asarray(images, np.float32)
    one = [images[i % len(images)][None] for i in range(warmup + calls)]
    for x in one[:warmup]:
        lite(x)
    times = []
    for x in one[warmup:]:
        t = time.perf_counter()
        lite(x)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def parity_report(keras_model, tflite_model, images):
    """Compare Keras and TFLite outputs on the same real images.

    Returns:
      dict per output: max_abs_error, and for "logits" top1_agreement (fraction
      of images where both predict the same class); for "embedding" the mean,
      5th percentile and minimum cosine similarity (a few badly clipped images
      hide in the mean).
    """
    ref = keras_model(np.asarray(images, np.float32), training=False)
    got = tflite_model(images)
    report = {}
    for name, value in got.items():
        r = np.asarray(ref[name] if isinstance(ref, dict) else ref)
        entry = {"max_abs_error": float(np.max(np.abs(r - value)))}
        if name == "logits":
            entry["top1_agreement"] = float(np.mean(np.argmax(r, -1) == np.argmax(value, -1)))
        else:
            num = np.sum(r * value, -1)
            den = np.linalg.norm(r, axis=-1) * np.linalg.norm(value, axis=-1) + 1e-12
            cos = num / den
            entry["mean_cosine"] = float(np.mean(cos))
            entry["p05_cosine"] = float(np.percentile(cos, 5))
            entry["min_cosine"] = float(np.min(cos))
        report[name] = entry
    return report
