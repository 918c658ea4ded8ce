"""--method and one flag per hyper-parameter (None: the method's default, see
lrface_tf.methods)."""

from __future__ import annotations

from absl import flags

from lrface_tf.methods import HYPERPARAMETERS, METHODS

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "method",
    "kd",
    list(METHODS),
    "Distillation method: " + "; ".join(f"{k}: {m.doc}" for k, m in METHODS.items()),
)
_HELP = {
    "task_weight": "Weight of the student's own task loss (0: label-free).",
    "kd_weight": "Weight of the KD term.",
    "kd_temperature": "KD temperature T.",
    "feature_weight": "Weight of the point-wise feature term (feature_l1 / feature_l2).",
    "rkd_distance_weight": "Weight of the RKD distance term.",
    "rkd_angle_weight": "Weight of the RKD angle term.",
    "angle_chunk_size": "RKD angle: anchors per chunk (memory; unset: all at once).",
    "center_weight": "Weight gamma of HORKD's class-centre term.",
    "mmd_weight": "Weight of KD_im's MK-MMD term.",
    "crrcd_weight": "Weight beta of CRRCD's relation contrastive term.",
    "crrcd_tau": "CRRCD critic temperature tau.",
    "crrcd_queue": "CRRCD negatives kept in the queue (n).",
    "crrcd_sampling": "CRRCD negatives: supervised (other labels only) or unsupervised.",
    "crrcd_dim": "CRRCD projection / relation size.",
    "crrcd_negative_weight": "Ablation: w x the mean negative term instead of the sum (Eq. 11).",
    "crrcd_z_momentum": "CRRCD normalising constant Z: EMA momentum (unset: fixed after step 1).",
}
for _name, _default in HYPERPARAMETERS.items():
    _help = _HELP[_name] + " Default: the method's."
    if _name == "crrcd_sampling":
        flags.DEFINE_enum(_name, None, ["supervised", "unsupervised"], _help)
    elif _name in ("angle_chunk_size", "crrcd_queue", "crrcd_dim"):
        flags.DEFINE_integer(_name, None, _help)
    else:
        flags.DEFINE_float(_name, None, _help)


def hyperparameters():
    """The hyper-parameters set on the command line or in a flagfile (the rest: defaults)."""
    return {k: FLAGS[k].value for k in HYPERPARAMETERS if FLAGS[k].value is not None}
