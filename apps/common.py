"""Flags and glue shared by the apps. Library code never reads FLAGS; this module
turns flags into library arguments, checks impossible combinations up front
(before anything is written), and writes each run's record."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from lrface_tf.backbones import BACKBONES
from lrface_tf.data.datasets import DataError
from lrface_tf.data.degrade import KERNELS, UPSAMPLE_KERNELS, DegradationSpec
from lrface_tf.data.pipeline import AUGMENTATIONS
from lrface_tf.methods import METHODS, MethodConfig
from lrface_tf.training import OPTIMIZERS, SCHEDULES, STRATEGIES

FLAGS = flags.FLAGS
DATASETS = ("fashion_mnist", "identity_folder", "tfrecord")

# data
flags.DEFINE_enum("data", "fashion_mnist", DATASETS, "Training data set.")
flags.DEFINE_string(
    "data_dir",
    None,
    "Data folder: Fashion-MNIST idx files, root/<person>/<image>, or a TFRecord set "
    "(python -m apps.write_tfrecords).",
)
flags.DEFINE_integer("max_train_examples", 0, "Use only the first N training examples (0: all).")
flags.DEFINE_integer(
    "labelled_per_class", 0, "Few-labels transfer: keep labels for N per class (0: all)."
)
flags.DEFINE_enum(
    "augment", "flip_crop", list(AUGMENTATIONS), "Geometric augmentation (shared by both views)."
)
# resolution
flags.DEFINE_integer("teacher_size", 28, "Teacher (HR) input size.")
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
# models
flags.DEFINE_enum("teacher_backbone", "resnet8", sorted(BACKBONES), "Teacher backbone.")
flags.DEFINE_enum("student_backbone", "resnet8", sorted(BACKBONES), "Student backbone.")
flags.DEFINE_float("teacher_width", 1.0, "Teacher width multiplier.")
flags.DEFINE_float("student_width", 1.0, "Student width multiplier.")
flags.DEFINE_integer("embedding_dim", 64, "Embedding size of both models.")
flags.DEFINE_enum("head", "softmax", ["softmax", "arcface", "cosface"], "Classification head.")
flags.DEFINE_float("margin_scale", 32.0, "Cosine-head scale s.")
flags.DEFINE_float("margin", 0.5, "ArcFace / CosFace margin m.")
flags.DEFINE_string("teacher", None, "Trained teacher (.keras) for apps.distill.")
# method
flags.DEFINE_enum("method", "kd", list(METHODS), "Distillation method.")
flags.DEFINE_float("kd_temperature", 4.0, "KD temperature T.")
flags.DEFINE_float("kd_weight", 0.9, "Weight of the KD term.")
flags.DEFINE_float("task_weight", 0.1, "Weight of the student's own task loss.")
flags.DEFINE_float("feature_weight", 1.0, "Weight of the feature term.")
flags.DEFINE_float("rkd_distance_weight", 25.0, "Weight of the RKD distance term.")
flags.DEFINE_float("rkd_angle_weight", 50.0, "Weight of the RKD angle term.")
flags.DEFINE_float("mmd_weight", 1.0, "Weight of the MK-MMD (or normalised L2) term.")
flags.DEFINE_float("center_weight", 1.0, "Weight gamma of the class-centre term (HORKD).")
flags.DEFINE_float("crrcd_weight", 2.0, "Weight beta of the CRRCD relation contrastive term.")
flags.DEFINE_float("crrcd_tau", 0.1, "CRRCD critic temperature tau.")
flags.DEFINE_integer("crrcd_queue", 512, "CRRCD negatives kept in the queue (n).")
flags.DEFINE_enum("crrcd_sampling", "supervised", ["supervised", "unsupervised"],
                  "CRRCD negatives: different label only, or any.")  # fmt: skip
flags.DEFINE_integer("crrcd_dim", 128, "CRRCD projection / relation size.")
flags.DEFINE_float(
    "crrcd_negative_weight", 0.0, "Factor on CRRCD's mean negative term; 0: n, as in Eq. 11."
)
flags.DEFINE_integer("angle_chunk_size", 0, "RKD angle: anchors per chunk (0: all at once).")
flags.DEFINE_enum(
    "stages",
    "direct",
    ["direct", "two_stage"],
    "direct: teacher -> student; two_stage: teacher -> assistant (HR) -> student (LR).",
)
flags.DEFINE_string("assistant_backbone", None, "Assistant backbone (default: the student's).")
flags.DEFINE_integer("assistant_epochs", 0, "Stage-1 epochs (0: --epochs).")
flags.DEFINE_bool("init_from_assistant", True, "Stage 2 starts from the assistant's weights.")
flags.DEFINE_bool("teacher_cache", False,
                  "Cache the frozen teacher's outputs once per example and flip variant "
                  "(KD_im); needs --augment=none or flip.")  # fmt: skip
# optimisation
flags.DEFINE_integer("epochs", 5, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 2e-3, "Base learning rate.")
flags.DEFINE_enum("lr_schedule", "cosine", list(SCHEDULES), "Learning-rate schedule.")
flags.DEFINE_list("lr_step_epochs", [], "Epochs at which the 'steps' schedule multiplies by 0.1.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (adamw, sgd).")
flags.DEFINE_integer("seed", 0, "Seed for weights, shuffling and augmentation.")
# running
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into N logical devices (mirrored on CPU).")
flags.DEFINE_bool(
    "sync_batchnorm", False,
    "BatchNorm statistics over the global batch under a strategy (default: per replica).",
)  # fmt: skip
flags.DEFINE_string("output_dir", None, "Run folder (default saved_models/<app>_<method>).")
flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 bar, 2 line per epoch.")
flags.DEFINE_bool(
    "deterministic", False, "TF op determinism: reproducible runs (slower); resume tests use it."
)
flags.DEFINE_integer(
    "debug_sigkill_at_step", 0, "Fault injection (tests): SIGKILL this process after step N."
)


def fail(message):
    """One-line error on stderr and exit status 2 (nothing has been written)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run(main):
    """absl `app.run` with bad input turned into one-line errors."""

    def wrapped(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
        try:
            return main(argv)
        except (ValueError, DataError, FileNotFoundError, FloatingPointError) as e:
            fail(str(e).splitlines()[0] if str(e) else type(e).__name__)

    app.run(wrapped)


def configure_devices():
    """Logical CPU devices (and op determinism) must be set before TF initialises; call first."""
    import tensorflow as tf

    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    if FLAGS.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        )


def strategy_from_flags():
    from lrface_tf.training import check_batch_divides, is_chief, make_strategy, worker_index

    devices = None
    if FLAGS.strategy == "mirrored" and FLAGS.cpu_devices > 1:
        devices = [f"/cpu:{i}" for i in range(FLAGS.cpu_devices)]
    strategy = make_strategy(FLAGS.strategy, devices)
    check_batch_divides(FLAGS.batch_size, strategy)
    _WORKER.update(chief=is_chief(strategy), index=worker_index(strategy))
    return strategy


def student_input_size():
    return FLAGS.student_input_size or FLAGS.student_size


def spec_from_flags():
    """The training `DegradationSpec`; checks the sizes."""
    if FLAGS.student_size > FLAGS.teacher_size:
        raise ValueError(
            f"student_size must be <= teacher_size, got {FLAGS.student_size} > "
            f"{FLAGS.teacher_size}; lower --student_size or raise --teacher_size"
        )
    sizes = tuple(int(s) for s in FLAGS.lr_sizes) or (FLAGS.student_size,)
    if max(sizes) > FLAGS.teacher_size:
        raise ValueError(f"lr_sizes {list(sizes)} exceed teacher_size {FLAGS.teacher_size}")
    plain = sizes == (FLAGS.student_size,) and FLAGS.lr_probability >= 1.0
    out = None if plain and not FLAGS.student_input_size else student_input_size()
    return DegradationSpec(
        kernel=FLAGS.degrade_kernel,
        sizes=sizes,
        probability=FLAGS.lr_probability,
        output_size=out,
        upsample_kernel=FLAGS.upsample_kernel,
    )


def method_config(data_size=50000):
    """MethodConfig from the flags of the same names (0 means "none" for the two optional ones)."""
    values = {
        f.name: FLAGS[f.name].value for f in dataclasses.fields(MethodConfig) if f.name in FLAGS
    }
    values["angle_chunk_size"] = FLAGS.angle_chunk_size or None
    values["crrcd_negative_weight"] = FLAGS.crrcd_negative_weight or None
    return MethodConfig(**{**values, "data_size": data_size})


def load_data():
    """`{"train": (x, y), "test": (x, y) or None, "channels", "num_classes", "report"}`."""
    from lrface_tf.data.datasets import identity_folder, load_fashion_mnist

    if FLAGS.data == "fashion_mnist":
        (xt, yt), (xs, ys) = load_fashion_mnist(FLAGS.data_dir)
        if FLAGS.max_train_examples:
            xt, yt = xt[: FLAGS.max_train_examples], yt[: FLAGS.max_train_examples]
        return {
            "train": (xt[..., None], yt),
            "test": (xs[..., None], ys),
            "channels": 1,
            "num_classes": 10,
            "report": {"name": "fashion_mnist", "train": len(yt), "test": len(ys)},
        }
    if not FLAGS.data_dir:
        raise ValueError(f"--data={FLAGS.data} needs --data_dir=<its folder>")
    if FLAGS.data == "tfrecord":
        from lrface_tf.data.tfrecord import TFRecordSet

        records = TFRecordSet(FLAGS.data_dir)
        return {
            "train": records,
            "test": None,
            "channels": 3,
            "num_classes": records.num_classes,
            "report": {"name": "tfrecord", "examples": len(records), "root": FLAGS.data_dir},
        }
    folder = identity_folder(FLAGS.data_dir, on_error="skip")
    if FLAGS.max_train_examples:
        folder.paths = folder.paths[: FLAGS.max_train_examples]
        folder.labels = folder.labels[: FLAGS.max_train_examples]
    return {
        "train": folder,
        "test": None,
        "channels": 3,
        "num_classes": folder.num_classes,
        "report": {"name": "identity_folder", **folder.report.to_dict()},
    }


def with_few_labels(labels, per_class, seed):
    """Labels with all but a class-balanced subset of `per_class` each set to -1."""
    from lrface_tf.data.pipeline import UNLABELLED, class_balanced_subset

    keep = class_balanced_subset(labels, per_class, seed)
    masked = np.full_like(labels, UNLABELLED)
    masked[keep] = labels[keep]
    return masked, keep


_WORKER = {"chief": True, "index": 0}


def output_dir(default_name):
    """The run folder; a non-chief multi-worker process writes to `<folder>/worker_<i>`."""
    base = FLAGS.output_dir or os.path.join("saved_models", default_name)
    return base if _WORKER["chief"] else os.path.join(base, f"worker_{_WORKER['index']}")


def load_teacher(path, expected_size):
    """Load a teacher `.keras` and check its input size."""
    import keras

    import lrface_tf.layers  # noqa: F401  (registers custom objects)
    import lrface_tf.losses  # noqa: F401

    if not path:
        raise ValueError("this method needs a teacher: pass --teacher=<path to teacher.keras>")
    if not os.path.exists(path):
        raise FileNotFoundError(f"teacher {path} does not exist; train one with apps.train_teacher")
    model = keras.saving.load_model(path, compile=False)
    size = model.input_shape[1]
    if size != expected_size:
        raise ValueError(
            f"teacher {path} takes {size}x{size} inputs but --teacher_size={expected_size}; "
            "set --teacher_size to match"
        )
    return model


def write_run_record(out_dir, spec, extra):
    """Resolved flags (as a flagfile and JSON), the degradation spec and metrics."""
    from lrface_tf.export.atomic import write_json, write_text

    os.makedirs(out_dir, exist_ok=True)
    write_text(os.path.join(out_dir, "flags.cfg"), FLAGS.flags_into_string())
    values = {
        k: v for k, v in FLAGS.flag_values_dict().items() if k in _OUR_FLAGS and not callable(v)
    }
    write_json(os.path.join(out_dir, "flags.json"), values)
    if spec is not None:
        write_json(os.path.join(out_dir, "degradation.json"), spec.to_dict())
    write_json(
        os.path.join(out_dir, "metrics.json"),
        {**extra, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)},
    )
    logging.info("wrote %s", out_dir)


_OUR_FLAGS = {f.name for f in FLAGS.get_flags_for_module(__name__)}


def paired(x, y, spec, training, seed=None, repeat=False, teacher_cache=None, num_classes=None,
           keep_hr=True):  # fmt: skip
    """The training dataset; for in-memory data, a resumable step-indexed stream:
    returns `start_step -> dataset` (see `lrface_tf.training.compile_and_fit`)."""
    import tensorflow as tf

    from lrface_tf.data.datasets import IdentityFolder, identity_folder_dataset
    from lrface_tf.data.pipeline import check_labels, paired_dataset
    from lrface_tf.data.tfrecord import TFRecordSet

    if isinstance(x, IdentityFolder):
        x = identity_folder_dataset(x, FLAGS.teacher_size)
    elif isinstance(x, TFRecordSet):
        x = x.dataset(FLAGS.teacher_size, seed=FLAGS.seed if seed is None else seed)
    elif training and repeat and not isinstance(x, tf.data.Dataset):
        if num_classes is not None:
            check_labels(y, num_classes)
        return lambda start_step: paired_dataset(
            x, y, spec=spec, batch_size=FLAGS.batch_size, augment=FLAGS.augment,
            seed=FLAGS.seed if seed is None else seed, hr_size=FLAGS.teacher_size,
            teacher_cache=teacher_cache, start_step=start_step,
            keep_hr=keep_hr,
        )  # fmt: skip
    return paired_dataset(
        x,
        y,
        spec=spec,
        batch_size=FLAGS.batch_size,
        training=training,
        augment=FLAGS.augment,
        seed=FLAGS.seed if seed is None else seed,
        hr_size=FLAGS.teacher_size,
        repeat=repeat,
        teacher_cache=teacher_cache,
    )


def maybe_synchronized(model):
    """`model` with cross-replica BatchNorm when --sync_batchnorm (build it in the scope)."""
    from lrface_tf.models import synchronize_batchnorm

    return synchronize_batchnorm(model) if FLAGS.sync_batchnorm else model


def train_distiller(student, teacher, terms, train_ds, *, epochs, steps, out_dir,
                    student_view="lr", task_weight=None, head=None):  # fmt: skip
    """Build, compile and fit a Distiller; returns (distiller, history dict, seconds)."""
    from lrface_tf.models import Distiller, task_loss_for
    from lrface_tf.training import compile_and_fit

    head = head or FLAGS.head
    distiller = Distiller(
        student,
        teacher,
        terms,
        task_loss=task_loss_for(head, FLAGS.margin_scale, FLAGS.margin),
        task_weight=FLAGS.task_weight if task_weight is None else task_weight,
        student_view=student_view,
    )
    history, seconds = compile_and_fit(
        distiller, train_ds, epochs=epochs, steps_per_epoch=steps, optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate, schedule=FLAGS.lr_schedule,
        step_epochs=FLAGS.lr_step_epochs, weight_decay=FLAGS.weight_decay, output_dir=out_dir,
        verbose=FLAGS.verbose, callbacks=_fault_injection(),
    )  # fmt: skip
    return distiller, history, seconds


def _fault_injection():
    if not FLAGS.debug_sigkill_at_step:
        return []
    import signal

    import keras

    class SigkillAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= FLAGS.debug_sigkill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)

    return [SigkillAt()]


def evaluate_on_test(model, x, y, size, input_size=None, spec=None):
    """Top-1/top-5 on the test split degraded to `size` (and upsampled to `input_size`)."""
    from lrface_tf.data.pipeline import single_view_dataset
    from lrface_tf.eval import classification_accuracy

    if spec is None:
        needs_up = input_size is not None and input_size != size
        spec = DegradationSpec(
            kernel=FLAGS.degrade_kernel,
            sizes=(size,),
            output_size=input_size if needs_up else None,
            upsample_kernel=FLAGS.upsample_kernel,
        )
    return classification_accuracy(model, single_view_dataset(x, y, spec=spec, batch_size=500))
