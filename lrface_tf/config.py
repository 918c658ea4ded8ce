"""Frozen configuration of a run: what the apps build from their flags, and what user
code can build directly. Every value is checked here, where it is given.

    DistillConfig(
        data=DataConfig("identity_folder", ("faces/",), image_size=112),
        spec=DegradationSpec("area", (16,)),
        student=ModelConfig("mobilefacenet16", 16),
        teacher="saved_models/sface/teacher.keras", teacher_head="class_mean",
        method="feature", hyperparameters={"task_weight": 0.0},
        train=TrainConfig(epochs=30, batch_size=128),
        output_dir="saved_models/faces_lr16",
    )

`lrface_tf.experiment.distill(config)` runs it; `to_dict()` is the resolved
configuration written next to every run's outputs.
"""

from __future__ import annotations

import dataclasses

from lrface_tf.data.degrade import DegradationSpec, LRAugment
from lrface_tf.data.sources import DataConfig
from lrface_tf.data.views import ViewSpec
from lrface_tf.validation import check_int, check_non_negative, check_positive

HEADS = ("softmax", "arcface", "cosface", "none")
TEACHER_INPUTS = ("hr", "lr", "mix")
TEACHER_HEADS = ("own", "class_mean")
INIT_FROM = ("none", "teacher", "assistant")
STAGES = ("direct", "two_stage")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A recognizer: backbone, its input size and width, the embedding and the head.

    `backbone="teacher"` makes a copy of the teacher's own network (the
    teacher-sized student of an LR fine-tune); its weights come from
    `init_from="teacher"`. `head="none"` builds an embedding-only model (for
    label-free distillation); `freeze_batchnorm` keeps BatchNorm statistics and
    scales fixed (fine-tuning a pretrained network on a small set).
    """

    backbone: str = "resnet8"
    input_size: int = 7
    width: float = 1.0
    embedding_dim: int = 64
    head: str = "softmax"
    margin_scale: float = 32.0
    margin: float = 0.5
    freeze_batchnorm: bool = False

    def __post_init__(self):
        check_int("input size", self.input_size, 4)
        check_positive("width multiplier", self.width)
        check_int("embedding_dim", self.embedding_dim, 1)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}: use one of {', '.join(HEADS)}")
        check_positive("margin_scale", self.margin_scale)
        check_non_negative("margin", self.margin)
        from lrface_tf.backbones import BACKBONES

        if self.backbone != "teacher" and self.backbone not in BACKBONES:
            raise ValueError(
                f"unknown backbone {self.backbone!r}: use 'teacher' or one of "
                f"{', '.join(sorted(BACKBONES))}"
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and execution of one training stage.

    `precision` is the Keras dtype policy the stage's models are built under;
    `jit_compile` compiles the train step with XLA; `deterministic_input=False`
    lets the input map deliver out of order (faster, batches vary between runs;
    see `lrface_tf.data.pipeline.paired_dataset`).
    """

    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    lr_step_epochs: tuple = ()
    weight_decay: float = 0.0
    seed: int = 0
    verbose: int = 2
    sync_batchnorm: bool = False
    jit_compile: bool = False
    precision: str = "float32"
    deterministic_input: bool = True

    def __post_init__(self):
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_positive("learning_rate", self.learning_rate)
        from lrface_tf.training import OPTIMIZERS, SCHEDULES

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: use {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(
                f"unknown lr schedule {self.lr_schedule!r}: use {', '.join(SCHEDULES)}"
            )
        check_non_negative("weight_decay", self.weight_decay)
        if self.weight_decay and self.optimizer == "adam":
            raise ValueError(
                "adam has no decoupled weight decay: use --optimizer=adamw (or sgd), or "
                "--weight_decay=0"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"
            )
        object.__setattr__(self, "lr_step_epochs", tuple(int(e) for e in self.lr_step_epochs))


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """HORKD's two-stage transfer (Sec. 3.3): teacher -> assistant -> student.

    Stage 1 distils the teacher into the assistant (its own backbone, width and
    input size; it sees the HR image resized to its size); stage 2 distils the
    frozen assistant into the student, which starts from the assistant's (or the
    teacher's) weights by layer name when `init_from` says so. Each stage has its
    own folder, resumes when interrupted and is skipped when done.
    """

    stages: str = "direct"
    assistant: ModelConfig | None = None
    assistant_epochs: int = 0
    init_from: str = "none"

    def __post_init__(self):
        if self.stages not in STAGES:
            raise ValueError(f"unknown stages {self.stages!r}: use one of {', '.join(STAGES)}")
        if self.init_from not in INIT_FROM:
            raise ValueError(f"unknown init_from {self.init_from!r}: use {', '.join(INIT_FROM)}")
        if self.stages == "two_stage" and self.assistant is None:
            raise ValueError("two_stage needs an assistant ModelConfig")
        if self.init_from == "assistant" and self.stages != "two_stage":
            raise ValueError("--init_from=assistant needs --stages=two_stage")
        check_int("assistant_epochs", self.assistant_epochs, 0)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything one `apps.distill` run does (see the module docstring).

    Attributes:
      data: the training data.
      spec: how the student's LR view is made from the HR view.
      student: the student network.
      teacher: path of the frozen teacher (.keras); None for a student alone.
      teacher_head: "own" (the teacher's logits, if any) or "class_mean" (an
        embedding-only teacher gets a cosine head on its class means over the
        training classes, fitted in closed form; `lrface_tf.teachers`).
      teacher_head_scale: the scale s of that head.
      teacher_input: "hr": the teacher reads the HR view (the cross-resolution
        target); "lr": it reads the student's LR view brought back to its own size
        (area down, the spec's upsampling up), so the target is a function of what
        the student sees: a student that matches it exactly verifies LR probes
        against the teacher's HR gallery as well as the teacher does. Cached only.
        "mix": both, blended per view (`lrface_tf.data.teacher_cache.blend`): for the
        normalised-feature term this is the same as one term against each target,
        weighted 1 - `teacher_mix` (HR) and `teacher_mix` (LR).
      teacher_mix: with teacher_input "mix", the weight of the LR reading, in (0, 1).
      teacher_view_mean: in [0, 1], the weight of the image's mean over its cached
        views in every view's target (`lrface_tf.data.teacher_cache.view_mean`): 0
        keeps each view's own teacher output, 1 gives all views of an image the
        view-averaged one. Needs a teacher cache of 2+ views.
      lr_teacher: with teacher_input "lr" or "mix", the model whose reading of the LR
        view is the target (e.g. the teacher fine-tuned on LR views), while `teacher`
        keeps the HR reading and the class-mean head; None: `teacher` reads both.
      method: a name of `lrface_tf.methods.METHODS`.
      hyperparameters: overrides of the method's defaults (None: the default).
      views: the K fixed augmented views per image (`lrface_tf.data.views`), or
        None to use `augment`.
      augment: per-step augmentation when there are no views.
      lr_augment: per-step perturbations of the student's LR view (`LRAugment`:
        noise, random erasing), with or without views; None: none.
      teacher_cache: cache the frozen supervisor's outputs per image and view.
      cache_dir: where caches are kept and shared across runs (by fingerprint).
      cache_runtime: "keras" or "tflite" (LiteRT on every core; faster on CPUs).
      stages: single or two-stage transfer.
      train: optimisation; `assistant_train` overrides it for stage 1.
      output_dir: the run folder.
      val_pairs, val_image_root: optional verification pairs scored after
        training (validation; never the test pairs) at `val_probe_size` (default:
        the LR size, which must then be one size).
      val_gallery: the model that embeds the HR gallery of the validation's
        cross-model protocol (default: `teacher`). Recipes that change `teacher` (a
        fine-tuned supervisor) keep one gallery, and so one comparable column.
    """

    data: DataConfig
    spec: DegradationSpec
    student: ModelConfig
    teacher: str | None = None
    teacher_head: str = "own"
    teacher_head_scale: float = 16.0
    teacher_input: str = "hr"
    teacher_mix: float = 0.5
    teacher_view_mean: float = 0.0
    lr_teacher: str | None = None
    method: str = "baseline"
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    views: ViewSpec | None = None
    augment: str = "flip_crop"
    lr_augment: LRAugment | None = None
    teacher_cache: bool = False
    cache_dir: str = "saved_models/cache"
    cache_runtime: str = "keras"
    stages: StageConfig = StageConfig()
    train: TrainConfig = TrainConfig()
    output_dir: str = "saved_models/distill"
    val_pairs: str | None = None
    val_image_root: str | None = None
    val_probe_size: int | None = None
    val_gallery: str | None = None

    def __post_init__(self):
        from lrface_tf.methods import check_hyperparameters, get_method

        method = get_method(self.method)
        check_hyperparameters(self.method, self.hyperparameters)  # bad values stop here
        if self.teacher_head not in TEACHER_HEADS:
            raise ValueError(
                f"unknown teacher_head {self.teacher_head!r}: use {', '.join(TEACHER_HEADS)}"
            )
        check_positive("teacher_head_scale", self.teacher_head_scale)
        if self.teacher_input not in TEACHER_INPUTS:
            raise ValueError(
                f"unknown teacher_input {self.teacher_input!r}: use {', '.join(TEACHER_INPUTS)}"
            )
        if self.teacher_input == "mix":
            if not 0.0 < self.teacher_mix < 1.0:
                raise ValueError(
                    f"--teacher_mix={self.teacher_mix} is outside (0, 1): it is the weight of "
                    "the teacher's LR reading (use --teacher_input=hr or =lr for 0 or 1)"
                )
        elif self.teacher_mix != 0.5:
            raise ValueError(
                f"--teacher_mix only applies to --teacher_input=mix (here {self.teacher_input}): "
                "drop it or add --teacher_input=mix"
            )
        if not 0.0 <= self.teacher_view_mean <= 1.0:
            raise ValueError(
                f"--teacher_view_mean={self.teacher_view_mean} is outside [0, 1]: it is the "
                "weight of the view-averaged target"
            )
        if self.teacher_view_mean > 0:
            views = self.effective_views
            if not self.teacher_cache or views is None or views.count < 2:
                raise ValueError(
                    f"--teacher_view_mean={self.teacher_view_mean} averages the cached teacher "
                    "outputs of an image's views: add --teacher_cache and --views=2 or more"
                )
        if self.lr_teacher and (self.teacher_input == "hr" or not self.teacher):
            raise ValueError(
                f"--lr_teacher={self.lr_teacher} only applies to a run with --teacher and "
                "--teacher_input=lr or =mix: add them or drop --lr_teacher"
            )
        if self.teacher_input != "hr":
            from lrface_tf.data.pipeline import is_deterministic

            flag = f"--teacher_input={self.teacher_input}"
            if not self.teacher_cache or self.stages.stages != "direct":
                raise ValueError(
                    f"{flag} needs --teacher_cache and --stages=direct (the teacher's "
                    "reading of the LR views is cached once)"
                )
            if not is_deterministic(self.spec):
                raise ValueError(
                    f"{flag} needs one LR size and --lr_probability=1 (one LR view "
                    "per view to cache)"
                )
        if self.data.source == "tfds":  # a stream reads the HR outputs stored with it
            streamed = [
                flag
                for flag, used in (
                    (f"--teacher_input={self.teacher_input}", self.teacher_input != "hr"),
                    ("--lr_noise / --lr_erase", bool(self.lr_augment and self.lr_augment.active)),
                    ("--teacher_view_mean", self.teacher_view_mean > 0),
                )
                if used
            ]
            if streamed:
                raise ValueError(
                    f"{' and '.join(streamed)} work on in-memory data, not on a streamed TFDS "
                    "data set yet: drop them or use --data=identity_folder"
                )
        hyper = self.hyper
        if self.student.head == "none" and hyper["task_weight"] > 0:
            raise ValueError(
                f"--head=none gives the student no logits, but task_weight is "
                f"{hyper['task_weight']}; set --task_weight=0 (label-free) or choose a head"
            )
        from lrface_tf.methods import TERMS

        reads_logits = [t for t in method.terms if TERMS[t](hyper, 2, 2).output == "logits"]
        if self.student.head == "none" and reads_logits:
            raise ValueError(
                f"method {self.method}'s {', '.join(reads_logits)} compares logits, but "
                "--head=none gives the student none; choose a head"
            )
        if self.views is not None and self.augment != "none":
            raise ValueError(
                f"--views replace --augment: drop --augment={self.augment} (the views include "
                "flips and shifts)"
            )
        needs_teacher = (
            method.needs_teacher
            or self.stages.stages == "two_stage"
            or self.stages.init_from == "teacher"
        )
        if needs_teacher and not self.teacher:
            raise ValueError(
                f"method {self.method} needs a teacher: pass --teacher=<path to teacher.keras>"
            )
        if self.stages.stages == "two_stage" and not method.needs_teacher:
            raise ValueError("--stages=two_stage needs a distillation method, not baseline")
        if self.student.backbone == "teacher" and self.stages.init_from != "teacher":
            raise ValueError("--student_backbone=teacher needs --init_from=teacher")
        self.spec.check_hr_size(self.data.image_size)
        if self.spec.student_size != self.student.input_size:
            raise ValueError(
                f"the LR view is {self.spec.student_size} px but the student takes "
                f"{self.student.input_size} px; set --student_input_size"
            )
        if self.teacher_cache and self.views is None and self.augment not in ("none", "flip"):
            raise ValueError(
                f"--teacher_cache needs --views or --augment=none/flip (got --augment="
                f"{self.augment}): a random crop has no finite set of views to cache"
            )
        if (self.val_pairs is None) != (self.val_image_root is None):
            raise ValueError("pass --val_pairs and --val_image_root together")
        if self.val_gallery is not None and self.val_pairs is None:
            raise ValueError(
                f"--val_gallery={self.val_gallery} only applies to validation pairs: "
                "pass --val_pairs and --val_image_root too"
            )
        if self.val_pairs is not None:
            from lrface_tf.data.datasets import lfw_pairs

            lfw_pairs(self.val_pairs)  # a bad pairs file stops here (images: when loaded)
            if self.val_probe_size is None and len(self.spec.sizes) > 1:
                raise ValueError(
                    f"the LR view has several sizes {list(self.spec.sizes)}: say which one the "
                    "validation pairs are scored at with --val_probe_size"
                )

    @property
    def hyper(self):
        """Every hyper-parameter value the method uses (defaults resolved)."""
        from lrface_tf.methods import resolve

        return resolve(self.method, self.hyperparameters)

    @property
    def val_size(self):
        """The probe size the validation pairs are scored at."""
        return self.val_probe_size or self.spec.sizes[0]

    @property
    def effective_views(self):
        """The views the data pipeline uses: `views`, or `augment` none/flip as 1/2 views
        when the teacher is cached."""
        if self.views is not None:
            return self.views
        if self.teacher_cache:
            return ViewSpec(count=2 if self.augment == "flip" else 1)
        return None

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict()
        from lrface_tf.methods import used_hyperparameters

        d["hyperparameters"] = used_hyperparameters(self.method, self.hyperparameters)
        return d
