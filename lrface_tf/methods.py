"""Distillation methods: name -> the loss terms the Distiller adds to the task loss.

A method is a small function of a `MethodConfig`; new methods register here
(no if/elif ladders in the apps).
"""

from __future__ import annotations

import dataclasses

from lrface_tf.losses import (
    ClassCenterLoss,
    CRRCDLoss,
    FeatureLoss,
    KDLoss,
    MKMMDLoss,
    RKDAngleLoss,
    RKDDistanceLoss,
)
from lrface_tf.models.distiller import DistillTerm


@dataclasses.dataclass
class MethodConfig:
    """Hyper-parameters of the distillation terms (weights and temperatures)."""

    kd_temperature: float = 4.0
    kd_weight: float = 0.9
    task_weight: float = 0.1
    feature_weight: float = 1.0
    feature_norm: str = "l1"
    rkd_distance_weight: float = 25.0
    rkd_angle_weight: float = 50.0
    mmd_weight: float = 1.0
    center_weight: float = 1.0
    angle_chunk_size: int | None = None
    crrcd_weight: float = 2.0
    crrcd_tau: float = 0.1
    crrcd_queue: int = 512
    crrcd_sampling: str = "supervised"
    crrcd_dim: int = 128
    data_size: int = 50000
    crrcd_negative_weight: float | None = None


def _kd(c):
    return {"kd": DistillTerm(KDLoss(c.kd_temperature), c.kd_weight, "logits")}


def _horkd(*orders):
    """HORKD (Ge et al. 2020, Eq. 8) with the chosen orders: "1", "2", "3", "C"."""

    def terms(c):
        make = {
            "1": ("feature", lambda: DistillTerm(FeatureLoss("l1"), c.feature_weight)),
            "2": ("rkd_distance", lambda: DistillTerm(RKDDistanceLoss(), c.rkd_distance_weight)),
            "3": ("rkd_angle", lambda: DistillTerm(
                RKDAngleLoss(chunk_size=c.angle_chunk_size), c.rkd_angle_weight)),
            "C": ("class_center", lambda: DistillTerm(ClassCenterLoss(), c.center_weight)),
        }  # fmt: skip
        return {make[o][0]: make[o][1]() for o in orders}

    return terms


METHODS = {
    # Student alone on LR images (no teacher needed).
    "baseline": lambda c: {},
    # Hinton KD on logits.
    "kd": _kd,
    # 1-order feature loss on embeddings (HORKD Eq. 2), plus KD.
    "feature": lambda c: {
        **_kd(c),
        "feature": DistillTerm(FeatureLoss(c.feature_norm), c.feature_weight),
    },
    # RKD distance + angle (2- and 3-order), plus KD.
    "rkd": lambda c: {
        **_kd(c),
        "rkd_distance": DistillTerm(RKDDistanceLoss(), c.rkd_distance_weight),
        "rkd_angle": DistillTerm(RKDAngleLoss(), c.rkd_angle_weight),
    },
    # HORKD: the ablation's best, L2 + L3 + LC without L1 (Sec. 4.4), and Fig. 4's variants.
    "horkd": _horkd("2", "3", "C"),
    "horkd_all": _horkd("1", "2", "3", "C"),
    "horkd_l2_l3": _horkd("2", "3"),
    "horkd_l2_lc": _horkd("2", "C"),
    # CRRCD (Eq. 13): L_cls + alpha KD + beta relation contrastive (alpha 0.5, beta 2, T 4).
    "crrcd": lambda c: {
        **_kd(c),
        "crrcd": DistillTerm(
            CRRCDLoss(
                c.crrcd_dim,
                c.crrcd_queue,
                c.crrcd_tau,
                c.data_size,
                c.crrcd_sampling,
                negative_weight=c.crrcd_negative_weight,
            ),
            c.crrcd_weight,
        ),
    },
    # KD_im: hard CE + soft KD + MK-MMD on normalised features (Eq. 9).
    "kdim_mmd": lambda c: {**_kd(c), "mk_mmd": DistillTerm(MKMMDLoss(), c.mmd_weight)},
    # KD_im with the normalised-feature L2 term instead (Eq. 6).
    "kdim_l2": lambda c: {
        **_kd(c),
        "feature_l2": DistillTerm(FeatureLoss("l2", normalize=True), c.mmd_weight),
    },
}


def method_terms(name, config=None):
    """The `{name: DistillTerm}` of a registered method."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name](config or MethodConfig())


def needs_teacher(name):
    return bool(method_terms(name))
