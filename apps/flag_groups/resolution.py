"""How the LR view is made: sizes, kernels, LR augmentation."""

from __future__ import annotations

from absl import flags

from lrface_tf.data.degrade import KERNELS, UPSAMPLE_KERNELS, DegradationSpec

FLAGS = flags.FLAGS

flags.DEFINE_integer("teacher_size", 28, "HR size: the teacher's input size.")
flags.DEFINE_integer("student_size", 7, "LR size the student sees.")
flags.DEFINE_integer(
    "student_input_size", 0, "Student input size if LR images are upsampled (0: student_size)."
)
flags.DEFINE_list(
    "lr_sizes", [], "LR sizes drawn per example (KD_im augmentation; default: student_size)."
)
flags.DEFINE_float("lr_probability", 1.0, "Fraction of training examples degraded.")
flags.DEFINE_enum("degrade_kernel", "area", list(KERNELS), "Downsampling kernel.")
flags.DEFINE_enum("upsample_kernel", "bilinear", list(UPSAMPLE_KERNELS), "Upsampling kernel.")
flags.DEFINE_float(
    "lr_noise", 0.0, "Training: Gaussian noise on the LR view, std drawn per step from [0, x]."
)
flags.DEFINE_float(
    "lr_erase", 0.0, "Training: probability of erasing a random square of the LR view."
)


def lr_augment():
    """The training `LRAugment` of --lr_noise / --lr_erase, or None when both are 0."""
    from lrface_tf.data.degrade import LRAugment

    aug = LRAugment(noise=FLAGS.lr_noise, erase=FLAGS.lr_erase)
    return aug if aug.active else None


def student_input_size():
    return FLAGS.student_input_size or FLAGS.student_size


def spec():
    """The training `DegradationSpec`; checks the sizes against each other."""
    for name in ("teacher_size", "student_size"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    if FLAGS.student_size > FLAGS.teacher_size:
        raise ValueError(
            f"student_size must be <= teacher_size, got {FLAGS.student_size} > "
            f"{FLAGS.teacher_size}; lower --student_size or raise --teacher_size"
        )
    try:
        sizes = tuple(int(s) for s in FLAGS.lr_sizes) or (FLAGS.student_size,)
    except ValueError:
        raise ValueError(f"--lr_sizes must be integers, got {FLAGS.lr_sizes}") from None
    if max(sizes) > FLAGS.teacher_size:
        raise ValueError(
            f"--lr_sizes {list(sizes)} exceed --teacher_size {FLAGS.teacher_size}; "
            "the LR view cannot be larger than the HR one"
        )
    plain = sizes == (FLAGS.student_size,) and FLAGS.lr_probability >= 1.0
    out = None if plain and not FLAGS.student_input_size else student_input_size()
    return DegradationSpec(
        kernel=FLAGS.degrade_kernel,
        sizes=sizes,
        probability=FLAGS.lr_probability,
        output_size=out,
        upsample_kernel=FLAGS.upsample_kernel,
    )
