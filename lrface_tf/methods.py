"""Distillation methods: one registry, each method's terms and defaults side by side.

A method is a set of named loss terms (`TERMS`) added to the student's task loss,
plus the hyper-parameter values it uses unless told otherwise. Every
hyper-parameter has one name and one meaning everywhere (flags, flagfiles, run
records, logs):

| name | meaning |
|---|---|
| task_weight | weight of the student's own task loss (CE / ArcFace) |
| kd_weight, kd_temperature | Hinton KD on logits (term "kd") |
| feature_weight | the point-wise feature term ("feature_l1" or "feature_l2") |
| rkd_distance_weight, rkd_angle_weight, angle_chunk_size | RKD distance / angle |
| center_weight | HORKD's class-centre term |
| mmd_weight | KD_im's MK-MMD term (only that term) |
| crrcd_* | CRRCD's relation contrastive term |

A variant is a flag override in a flagfile (e.g. `--rkd_angle_weight=5`), never a
second table. `resolve("crrcd", {"crrcd_queue": 64})` gives every value a run
uses; `method_terms` builds the terms from them.
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
from lrface_tf.validation import check_non_negative

# Every hyper-parameter of every term, with its global default (a method may override).
HYPERPARAMETERS = {
    "task_weight": 1.0,
    "kd_weight": 0.9,
    "kd_temperature": 4.0,
    "feature_weight": 1.0,
    "rkd_distance_weight": 25.0,
    "rkd_angle_weight": 50.0,
    "angle_chunk_size": None,
    "center_weight": 1.0,
    "mmd_weight": 1.0,
    "crrcd_weight": 2.0,
    "crrcd_tau": 0.1,
    "crrcd_queue": 512,
    "crrcd_sampling": "supervised",
    "crrcd_dim": 128,
    "crrcd_negative_weight": None,
    "crrcd_z_momentum": None,
}


# term name -> builder(h: resolved hyper-parameters, num_classes, data_size)
TERMS = {
    # Hinton KD on logits (KD_im Eq. 9's soft term, CRRCD Eq. 12).
    "kd": lambda h, c, n: DistillTerm(KDLoss(h["kd_temperature"]), h["kd_weight"], "logits"),
    # HORKD's 1-order term: L1 between embeddings (Eq. 2).
    "feature_l1": lambda h, c, n: DistillTerm(FeatureLoss("l1"), h["feature_weight"]),
    # KD_im's feature term: L2 between L2-normalised embeddings (Eq. 6) = 2 - 2 cos.
    "feature_l2": lambda h, c, n: DistillTerm(
        FeatureLoss("l2", normalize=True, name="feature_l2"), h["feature_weight"]
    ),
    # HORKD's 2-order term (RKD distance, Eq. 3) and 3-order term (RKD angle, Eqs. 4-5).
    "rkd_distance": lambda h, c, n: DistillTerm(RKDDistanceLoss(), h["rkd_distance_weight"]),
    "rkd_angle": lambda h, c, n: DistillTerm(
        RKDAngleLoss(chunk_size=h["angle_chunk_size"]), h["rkd_angle_weight"]
    ),
    # HORKD's C-order term (Eqs. 6-7), owning its class centres.
    "class_center": lambda h, c, n: DistillTerm(ClassCenterLoss(c), h["center_weight"]),
    # KD_im's MK-MMD on normalised embeddings (Eq. 8).
    "mk_mmd": lambda h, c, n: DistillTerm(MKMMDLoss(), h["mmd_weight"]),
    # CRRCD's relation contrastive term (Eqs. 10-11), owning its queue and constant Z.
    "crrcd": lambda h, c, n: DistillTerm(
        CRRCDLoss(
            h["crrcd_dim"],
            h["crrcd_queue"],
            h["crrcd_tau"],
            n,
            h["crrcd_sampling"],
            negative_weight=h["crrcd_negative_weight"],
            z_momentum=h["crrcd_z_momentum"],
        ),
        h["crrcd_weight"],
    ),
}


# term name -> the hyper-parameters it reads
TERM_HYPERPARAMETERS = {
    "kd": ("kd_weight", "kd_temperature"),
    "feature_l1": ("feature_weight",),
    "feature_l2": ("feature_weight",),
    "rkd_distance": ("rkd_distance_weight",),
    "rkd_angle": ("rkd_angle_weight", "angle_chunk_size"),
    "class_center": ("center_weight",),
    "mk_mmd": ("mmd_weight",),
    "crrcd": tuple(k for k in HYPERPARAMETERS if k.startswith("crrcd_")),
}


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method: its terms, its defaults, and what it is."""

    terms: tuple
    defaults: dict
    doc: str

    @property
    def needs_teacher(self):
        return bool(self.terms)


METHODS = {
    "baseline": Method((), {}, "the student alone on LR images (task loss only)"),
    "kd": Method(("kd",), {"task_weight": 0.1}, "Hinton KD from the HR teacher (T 4, 0.9 / 0.1)"),
    "feature": Method(
        ("feature_l2",),
        {"feature_weight": 10.0},
        "normalised-feature distillation: the LR student's embedding pulled to the HR "
        "teacher's (cosine); label-free with --task_weight=0",
    ),
    "feature_crrcd": Method(
        ("feature_l2", "crrcd"),
        {"feature_weight": 10.0, "crrcd_weight": 1.0, "crrcd_sampling": "unsupervised"},
        "the normalised-feature term plus CRRCD's relation contrastive term over a queue of "
        "512 teacher embeddings of other faces (unsupervised sampling: needs no labels)",
    ),
    "horkd": Method(
        ("rkd_distance", "rkd_angle", "class_center"),
        {},
        "HORKD (Ge et al. 2020), the ablation's best orders: L2 + L3 + LC (Sec. 4.4)",
    ),
    "horkd_all": Method(
        ("feature_l1", "rkd_distance", "rkd_angle", "class_center"),
        {},
        "HORKD with all four orders L1 + L2 + L3 + LC (Eq. 8)",
    ),
    "horkd_l2_l3": Method(("rkd_distance", "rkd_angle"), {}, "HORKD ablation: L2 + L3"),
    "horkd_l2_lc": Method(("rkd_distance", "class_center"), {}, "HORKD ablation: L2 + LC"),
    "crrcd": Method(
        ("kd", "crrcd"),
        {"kd_weight": 0.5, "crrcd_weight": 2.0},
        "CRRCD (Eq. 13): task + 0.5 KD + 2 relation contrastive (512 supervised negatives)",
    ),
    "kdim_mmd": Method(
        ("kd", "mk_mmd"),
        {"kd_weight": 1.0, "mmd_weight": 1.0},
        "KD_im (Eq. 9): hard CE + soft KD + MK-MMD on normalised embeddings",
    ),
    "kdim_l2": Method(
        ("kd", "feature_l2"),
        {"kd_weight": 1.0, "feature_weight": 1.0},
        "KD_im with the normalised-feature L2 term (Eq. 6) instead of MK-MMD",
    ),
}


def get_method(name):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve(name, overrides=None):
    """Every hyper-parameter value a run of method `name` uses.

    Precedence: `overrides` (values that are not None) > the method's defaults >
    `HYPERPARAMETERS`. Unknown names stop with an error.
    """
    method = get_method(name)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyper-parameters {unknown}; known: {', '.join(HYPERPARAMETERS)}")
    return {**HYPERPARAMETERS, **method.defaults, **overrides}


def used_hyperparameters(name, overrides=None):
    """The resolved values of the hyper-parameters method `name` reads (task weight included)."""
    h = resolve(name, overrides)
    used = ["task_weight"] + [k for t in get_method(name).terms for k in TERM_HYPERPARAMETERS[t]]
    return {k: h[k] for k in used}


def method_terms(name, hyperparameters=None, *, num_classes=None, data_size=None):
    """The `{term name: DistillTerm}` of method `name`.

    Args:
      hyperparameters: overrides (see `resolve`); None keeps the method's defaults.
      num_classes: the training classes (needed by "class_center").
      data_size: the training-set size m (needed by "crrcd").
    """
    h = resolve(name, hyperparameters)
    terms = {}
    for term in get_method(name).terms:
        if term == "class_center" and not num_classes:
            raise ValueError(f"method {name!r} needs num_classes (its class-centre term)")
        if term == "crrcd" and not data_size:
            raise ValueError(f"method {name!r} needs data_size (CRRCD's m)")
        terms[term] = TERMS[term](h, num_classes, data_size)
    return terms


def check_hyperparameters(name, hyperparameters=None):
    """Build method `name`'s terms once with stand-in data facts, so a bad value (a NaN
    temperature, an empty queue) stops where it is given, naming it."""
    h = resolve(name, hyperparameters)
    check_non_negative("task_weight", h["task_weight"])
    method_terms(name, hyperparameters, num_classes=2, data_size=max(int(h["crrcd_queue"]), 1))


def needs_teacher(name):
    return get_method(name).needs_teacher
