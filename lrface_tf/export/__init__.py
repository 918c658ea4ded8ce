"""Student export: SavedModel, `.keras`, TFLite (+ parity against Keras)."""

from lrface_tf.export.atomic import atomic_path, write_json, write_text
from lrface_tf.export.savedmodel import export_savedmodel, save_keras
from lrface_tf.export.tflite import (
    QUANTIZATIONS,
    TFLiteModel,
    calibration_images,
    convert_tflite,
    head_ops,
    latency_ms,
    parity_report,
)

__all__ = [
    "QUANTIZATIONS",
    "TFLiteModel",
    "atomic_path",
    "calibration_images",
    "convert_tflite",
    "export_savedmodel",
    "head_ops",
    "latency_ms",
    "parity_report",
    "save_keras",
    "write_json",
    "write_text",
]
