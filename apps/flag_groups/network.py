"""The embedding and the classification head every trained network shares."""

from __future__ import annotations

from absl import flags

from lrface_tf.config import HEADS

FLAGS = flags.FLAGS

flags.DEFINE_integer("embedding_dim", 64, "Embedding size.")
flags.DEFINE_enum(
    "head", "softmax", list(HEADS), "Classification head ('none': embedding only, label-free)."
)
flags.DEFINE_float("margin_scale", 32.0, "Cosine-head scale s.")
flags.DEFINE_float("margin", 0.5, "ArcFace / CosFace margin m.")
flags.DEFINE_bool(
    "freeze_batchnorm", False, "Keep BatchNorm statistics fixed (fine-tuning a pretrained net)."
)


def model_config(backbone, input_size, width):
    from lrface_tf.config import ModelConfig

    return ModelConfig(
        backbone=backbone,
        input_size=input_size,
        width=width,
        embedding_dim=FLAGS.embedding_dim,
        head=FLAGS.head,
        margin_scale=FLAGS.margin_scale,
        margin=FLAGS.margin,
        freeze_batchnorm=FLAGS.freeze_batchnorm,
    )
