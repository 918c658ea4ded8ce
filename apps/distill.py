"""Distil a low-resolution student from a frozen high-resolution teacher.

    python -m apps.distill --flagfile=configs/fmnist/kd.cfg
    python -m apps.distill --flagfile=configs/lfw/horkd_two_stage.cfg

--method picks the loss terms (lrface_tf.methods.METHODS; "baseline" trains the
student alone on LR images); every hyper-parameter flag left unset takes the
method's default. --stages=two_stage runs HORKD's Sec. 3.3: stage 1
(cross-structure) distils the teacher into an assistant (--assistant_backbone,
--assistant_width, --assistant_size); stage 2 (cross-resolution) distils the
frozen assistant into the student, which starts from the assistant's weights
with --init_from=assistant. Each stage has its own folder; a finished stage is
not redone and an interrupted one resumes from its backup.

Faces: --data=identity_folder --data_dir=<aligned faces>[,<more>] with
--unlabelled_dir=<flat folders>, --exclude_people_from=<test pairs file>; or
--data=tfds --data_dir=<a data set built by apps.build_dataset>, streamed (its
stored teacher outputs serve --teacher_cache);
--teacher_head=class_mean gives an embedding-only teacher (SFace) logits over
the training people; --views=K and --teacher_cache run the teacher once per
image and view; --val_pairs scores the student on validation pairs at the end.

Writes <output_dir>/student.keras and the run record (flags.cfg, config.json,
degradation.json, metrics.json).
"""

from __future__ import annotations

from absl import flags

from apps import runner
from apps.flag_groups import data, devices, method, network, output, resolution, training, views
from lrface_tf.config import INIT_FROM, STAGES, TEACHER_HEADS, TEACHER_INPUTS

FLAGS = flags.FLAGS

flags.DEFINE_string("student_backbone", "resnet8", "Student backbone ('teacher': a copy of it).")
flags.DEFINE_float("student_width", 1.0, "Student width multiplier.")
flags.DEFINE_string("teacher", None, "The frozen teacher (.keras).")
flags.DEFINE_enum(
    "teacher_head",
    "own",
    list(TEACHER_HEADS),
    "Teacher logits: its own, or a cosine head on its class means over the training people "
    "(for an embedding-only teacher such as SFace).",
)
flags.DEFINE_float("teacher_head_scale", 16.0, "Scale s of the class-mean head.")
flags.DEFINE_enum(
    "teacher_input",
    "hr",
    list(TEACHER_INPUTS),
    "What the frozen teacher reads: the HR view, or the student's LR view brought back to "
    "its size (cached; the target is then a function of the student's input), or both "
    "blended (mix).",
)
flags.DEFINE_float(
    "teacher_mix",
    0.5,
    "With --teacher_input=mix: the weight of the teacher's LR reading in the blended target.",
)
flags.DEFINE_float(
    "teacher_view_mean",
    0.0,
    "Weight in [0, 1] of the mean over an image's cached views in every view's target "
    "(0: each view's own teacher output; 1: one view-averaged target per image).",
)
flags.DEFINE_string(
    "lr_teacher",
    None,
    "With --teacher_input=lr or mix: the model (.keras) whose reading of the LR view is the "
    "target, e.g. the teacher fine-tuned on LR views (default: --teacher reads both).",
)
flags.DEFINE_bool(
    "teacher_cache",
    False,
    "Cache the frozen supervisor's outputs per image and view (built once, shared by fingerprint).",
)
flags.DEFINE_string("cache_dir", "saved_models/cache", "Where teacher caches are kept.")
flags.DEFINE_enum(
    "cache_runtime", "keras", ["keras", "tflite"], "What runs the teacher to fill the cache."
)
flags.DEFINE_enum(
    "stages",
    "direct",
    list(STAGES),
    "direct: teacher -> student; two_stage: teacher -> assistant -> student (HORKD Sec. 3.3).",
)
flags.DEFINE_string("assistant_backbone", None, "Assistant backbone (default: the student's).")
flags.DEFINE_float("assistant_width", 0.0, "Assistant width (0: the student's).")
flags.DEFINE_integer("assistant_size", 0, "Assistant input size (0: --teacher_size).")
flags.DEFINE_integer("assistant_epochs", 0, "Stage-1 epochs (0: --epochs).")
flags.DEFINE_enum(
    "init_from", "none", list(INIT_FROM), "Start the student from these weights (by layer name)."
)
flags.DEFINE_string("val_pairs", None, "Validation pairs file (LFW format), scored after training.")
flags.DEFINE_string("val_image_root", None, "Image root of --val_pairs.")
flags.DEFINE_integer(
    "val_probe_size", 0, "Probe size --val_pairs are scored at (0: the LR size, if only one)."
)
flags.DEFINE_string(
    "val_gallery",
    None,
    "The model (.keras) that embeds the HR gallery of --val_pairs' cross-model protocol "
    "(default: --teacher).",
)

GROUPS = (data, devices, method, network, output, resolution, training, views)


def config():
    """The frozen `DistillConfig` of the flags."""
    from lrface_tf.config import DistillConfig, StageConfig

    spec = resolution.spec()
    student = network.model_config(
        FLAGS.student_backbone, resolution.student_input_size(), FLAGS.student_width
    )
    assistant = None
    if FLAGS.stages == "two_stage":
        assistant = network.model_config(
            FLAGS.assistant_backbone or FLAGS.student_backbone,
            FLAGS.assistant_size or FLAGS.teacher_size,
            FLAGS.assistant_width or FLAGS.student_width,
        )
    view_spec = views.spec()
    return DistillConfig(
        data=data.config(FLAGS.teacher_size, FLAGS.seed),
        spec=spec,
        student=student,
        teacher=FLAGS.teacher,
        teacher_head=FLAGS.teacher_head,
        teacher_head_scale=FLAGS.teacher_head_scale,
        teacher_input=FLAGS.teacher_input,
        teacher_mix=FLAGS.teacher_mix,
        teacher_view_mean=FLAGS.teacher_view_mean,
        lr_teacher=FLAGS.lr_teacher,
        method=FLAGS.method,
        hyperparameters=method.hyperparameters(),
        views=view_spec,
        # With views, --augment is replaced unless given explicitly (then the config refuses it).
        augment=FLAGS.augment if view_spec is None or FLAGS["augment"].present else "none",
        lr_augment=resolution.lr_augment(),
        teacher_cache=FLAGS.teacher_cache,
        cache_dir=FLAGS.cache_dir,
        cache_runtime=FLAGS.cache_runtime,
        stages=StageConfig(FLAGS.stages, assistant, FLAGS.assistant_epochs, FLAGS.init_from),
        train=training.config(verbose=output.verbose()),
        output_dir=output.folder(f"distill_{FLAGS.method}"),
        val_pairs=FLAGS.val_pairs,
        val_image_root=FLAGS.val_image_root,
        val_probe_size=FLAGS.val_probe_size or None,
        val_gallery=FLAGS.val_gallery,
    )


def main(argv):
    devices.configure()
    cfg = config()  # every flag checked before anything is written
    strategy = devices.strategy(cfg.train.batch_size)
    import dataclasses

    from lrface_tf.experiment import distill
    from lrface_tf.runs import RunFolder, write_record

    cfg = dataclasses.replace(cfg, output_dir=output.folder(f"distill_{FLAGS.method}", strategy))
    with RunFolder(cfg.output_dir):
        result = distill(cfg, strategy=strategy, callbacks=devices.fault_injection())
        write_record(
            cfg.output_dir,
            metrics=result,
            config=cfg.to_dict(),
            flags_text=runner.flags_text(),
            command=runner.command(),
            spec=cfg.spec,
        )


if __name__ == "__main__":
    runner.run(main, adopt=GROUPS)
