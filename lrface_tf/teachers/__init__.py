"""Pretrained high-resolution teachers: name -> builder. `build_teacher("sface")`."""

from lrface_tf.teachers.heads import class_means, with_class_mean_head
from lrface_tf.teachers.sface import (
    SFACE_SHA256,
    build_sface,
    load_sface_onnx_weights,
    onnx_reference_embeddings,
    sface_model_path,
)

TEACHERS = {"sface": build_sface}


def build_teacher(name, **kwargs):
    """Build a registered pretrained teacher; raises a ValueError listing the names on a typo."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}: use one of {', '.join(sorted(TEACHERS))}")
    return TEACHERS[name](**kwargs)


__all__ = [
    "SFACE_SHA256",
    "TEACHERS",
    "class_means",
    "with_class_mean_head",
    "build_sface",
    "build_teacher",
    "load_sface_onnx_weights",
    "onnx_reference_embeddings",
    "sface_model_path",
]
