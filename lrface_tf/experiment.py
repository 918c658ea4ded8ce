"""Run a distillation described by a `DistillConfig`: what `apps.distill` does, as a function.

    result = distill(config)     # trains, evaluates, saves <output_dir>/student.keras

One run, in order:

1. the training data (`lrface_tf.data.sources`), checked to make full batches;
2. the frozen teacher; an embedding-only teacher gets its class-mean head
   (`teacher_head="class_mean"`), fitted on the training classes;
3. the supervisor's cached outputs per image and view, when asked for
   (`teacher_cache`), built once and shared across runs by fingerprint;
4. the stages (`lrface_tf.stages`): direct (teacher -> student), or HORKD's
   teacher -> assistant -> student, each in its own folder, resumed when
   interrupted and skipped when done;
5. evaluation: top-1 on a labelled test split, verification on validation pairs;
6. the student saved as `student.keras` (the record is the caller's: see
   `lrface_tf.runs.write_record`).
"""

from __future__ import annotations

import dataclasses
import os

from lrface_tf.data.degrade import DegradationSpec


def load_teacher(path, expected_size=None):
    """Load a frozen teacher `.keras`; one-line errors name the file and what to do."""

    import lrface_tf.layers  # noqa: F401  (registers custom objects)
    import lrface_tf.losses  # noqa: F401

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"teacher {path} does not exist; train one with apps.train_teacher or build one "
            "with apps.build_teacher"
        )
    model = load_keras_file(path, "teacher")
    size = model.input_shape[1]
    if expected_size is not None and size != expected_size:
        raise ValueError(
            f"teacher {path} takes {size}x{size} inputs but the HR images are "
            f"{expected_size}x{expected_size}; set --teacher_size={size}"
        )
    model.trainable = False
    return model


def load_keras_file(path, what="model"):
    """`keras.saving.load_model` with errors that say which file is broken and what to do."""
    import zipfile

    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{what} {path} is not a readable .keras file ({detail}); save it again "
            "(model.save) or point at another file"
        ) from None


def embedding_network(model):
    """The deployed part of a recognizer: image -> embedding (shares weights)."""
    import keras

    out = model.output
    if isinstance(out, dict):
        if set(out) == {"embedding"}:
            return model
        return keras.Model(model.input, out["embedding"], name=f"{model.name}_embedding")
    return model


def _embedding_size(model):
    out = model.output
    return int((out["embedding"] if isinstance(out, dict) else out).shape[-1])


def _check_embedding_space(flag, path, model, size, of, why):
    """One-line refusal of a model (`--flag=path`) whose embedding size is not `size`."""
    got = _embedding_size(model)
    if got != size:
        raise ValueError(f"--{flag}={path} embeds in {got} dimensions but {of} in {size}: {why}")


def clone_network(model, name):
    """A trainable copy of `model` with the same weights (every layer unfrozen).

    `clone_model` copies each layer's `trainable=False`; setting it on the copy
    does not reach layers frozen themselves, so each layer is unfrozen.
    """
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in _all_layers(copy):
        layer.trainable = True
    return keras.Model(copy.input, copy.output, name=name)


def _all_layers(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def freeze_batchnorm(model):
    """Keep BatchNorm statistics and scales fixed (inference mode) while the rest trains."""
    import keras

    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def build_student(cfg, num_classes, channels, teacher=None, name="student", sync_batchnorm=False):
    """The network a `ModelConfig` describes: `{"embedding"[, "logits"]}`.

    `backbone="teacher"` copies the teacher's network (embedding part); a head
    (unless `head="none"` or there are no labelled classes) maps the embedding
    to the training classes.
    """
    import keras

    from lrface_tf.backbones import build_backbone
    from lrface_tf.layers.heads import build_head
    from lrface_tf.models.recognizer import as_float32

    if cfg.backbone == "teacher":
        if teacher is None:
            raise ValueError("--student_backbone=teacher needs a teacher")
        backbone = clone_network(embedding_network(teacher), f"{name}_backbone")
        if backbone.input_shape[1] != cfg.input_size:
            raise ValueError(
                f"the teacher takes {backbone.input_shape[1]} px; with "
                f"--student_backbone=teacher set --student_input_size={backbone.input_shape[1]}"
            )
    else:
        backbone = build_backbone(
            cfg.backbone,
            (cfg.input_size, cfg.input_size, channels),
            width_multiplier=cfg.width,
            embedding_dim=cfg.embedding_dim,
        )
    if cfg.freeze_batchnorm:
        freeze_batchnorm(backbone)
    image = keras.Input((cfg.input_size, cfg.input_size, channels), name="image")
    emb = backbone(image)
    emb = as_float32(emb["embedding"] if isinstance(emb, dict) else emb)
    outputs = {"embedding": emb}
    if cfg.head != "none" and num_classes > 0:
        outputs["logits"] = build_head(cfg.head, num_classes, cfg.margin_scale)(emb)
    model = keras.Model(image, outputs, name=name)
    if sync_batchnorm:
        # Cross-replica BatchNorm statistics; the copy is the model that trains and is saved.
        from lrface_tf.models import synchronize_batchnorm

        model = synchronize_batchnorm(model)
    return model


def task_loss_for_model(cfg, student, task_weight):
    """The student's task loss (None when it has no head or its weight is 0)."""
    from lrface_tf.models import task_loss_for

    if task_weight == 0 or "logits" not in student.output:
        return None
    return task_loss_for(cfg.head, cfg.margin_scale, cfg.margin)


def at_input_size(model, size, name):
    """`model` behind an area resize from `size`, when it takes another size (a frozen
    assistant reads the teacher's HR view); otherwise `model` itself."""
    import keras

    own = model.input_shape[1]
    if own == size:
        return model
    image = keras.Input((size, size, model.input_shape[-1]), name="image")
    small = keras.layers.Resizing(own, own, interpolation="area", name="to_input")(image)
    wrapped = keras.Model(image, model(small), name=name)
    wrapped.trainable = False
    return wrapped


def class_mean_teacher(teacher, cache, labels, num_classes, scale):
    """The teacher with a cosine head on its class means (view 0 of the cache), and the
    cache with the same head (its logits computed on the fly). Outputs stored in a
    streamed data set give the class means in one pass over it."""
    import numpy as np

    from lrface_tf.data.teacher_cache import TeacherCache
    from lrface_tf.teachers import class_means, with_class_mean_head

    labelled = labels >= 0
    if not labelled.any():
        raise ValueError("--teacher_head=class_mean needs labelled training images")
    if isinstance(cache, TeacherCache):
        emb, y = cache.embedding[0][labelled], labels[labelled]
    else:  # `StoredTeacherOutputs`: per-class sums of unit embeddings, same means
        emb, y = cache.class_sums(labels, num_classes), np.arange(num_classes)
    wrapped = with_class_mean_head(teacher, emb, y, num_classes, scale)
    means = class_means(emb, y, num_classes)
    return wrapped, cache.with_head(means.T, scale)


def distill(config, *, strategy=None, callbacks=(), log=print):
    """Run one `DistillConfig` (see the module docstring); returns the result dict.

    Every model of the run is built under the dtype policy `config.train.precision`
    (`lrface_tf.training.precision_policy`); the previous policy is restored at the end.
    """
    from lrface_tf.training import precision_policy

    with precision_policy(config.train.precision):
        return _distill(config, strategy=strategy, callbacks=callbacks, log=log)


def _distill(config, *, strategy, callbacks, log):
    import keras
    import tensorflow as tf

    from lrface_tf.data.sources import load_training_data
    from lrface_tf.data.teacher_cache import blend, load_or_build, view_mean
    from lrface_tf.data.views import ViewSpec
    from lrface_tf.export import save_keras
    from lrface_tf.methods import get_method, method_terms, used_hyperparameters
    from lrface_tf.stages import run_stage

    strategy = strategy or tf.distribute.get_strategy()
    data = load_training_data(config.data, progress=config.train.verbose == 1)
    hyper = config.hyper
    if not get_method(config.method).needs_teacher and data.num_labelled < len(data):
        # A student alone learns from labels only: train on the labelled examples.
        keep = data.labels >= 0
        data.report["unlabelled_dropped_no_teacher"] = int((~keep).sum())
        data.select(keep)
        data.report["used"] = data.report["labelled"] = int(keep.sum())
        data.report["unlabelled"] = 0
    _check_batches(len(data), config.train.batch_size)
    _say_skipped(data.report, log)
    out = config.output_dir
    used = used_hyperparameters(config.method, config.hyperparameters)
    result = {
        "method": config.method,
        "hyperparameters": used,
        "stages": config.stages.stages,
        "data": data.report,
    }
    views = config.effective_views
    # The teacher's outputs (a cache, a class-mean head) only serve distillation terms.
    distils = get_method(config.method).needs_teacher
    with strategy.scope():
        keras.utils.set_random_seed(config.train.seed)
        teacher = None
        if config.teacher:
            teacher = load_teacher(config.teacher, config.data.image_size)
        gallery = _val_gallery(config, teacher)  # a bad one stops here, not after training
        cache = None
        if not distils:
            pass
        elif teacher is not None and data.stream is not None:
            cache = _stored_teacher_outputs(config, data.stream, teacher, views, result, log)
        elif teacher is not None and (config.teacher_cache or config.teacher_head == "class_mean"):
            cache_views = views if config.teacher_cache else ViewSpec(count=1)
            readings = {"hr": ("hr",), "lr": ("lr",), "mix": ("hr", "lr")}[config.teacher_input]
            readers = {"hr": teacher, "lr": teacher}
            if config.lr_teacher:
                readers["lr"] = load_teacher(config.lr_teacher, config.data.image_size)
                _check_embedding_space(
                    "lr_teacher",
                    config.lr_teacher,
                    readers["lr"],
                    _embedding_size(teacher),
                    f"--teacher={config.teacher}",
                    "both readings must share one embedding space (use a fine-tune of the teacher)",
                )
            caches, records = [], []
            for reading in readings:
                one, status, path = load_or_build(
                    config.cache_dir,
                    readers[reading],
                    data.images,
                    cache_views,
                    progress=config.train.verbose == 1,
                    runtime=config.cache_runtime,
                    lr_input=config.spec if reading == "lr" else None,
                )
                log(f"teacher cache ({cache_views.count} views, {reading} input): {status} {path}")
                caches.append(one)
                record = {"status": status, "path": path, "views": one.num_views}
                if reading == "lr" and config.lr_teacher:
                    record["model"] = config.lr_teacher
                records.append(record)
            cache = caches[0] if len(caches) == 1 else blend(*caches, config.teacher_mix)
            if config.teacher_view_mean:
                cache = view_mean(cache, config.teacher_view_mean)
                for record in records:
                    record["view_mean"] = config.teacher_view_mean
            result["teacher_cache"] = records[0] if len(records) == 1 else records
        base_teacher = teacher
        if config.teacher_head == "class_mean" and distils:
            teacher, cache = class_mean_teacher(
                teacher, cache, data.labels, data.num_classes, config.teacher_head_scale
            )
            result["teacher_head"] = {
                "kind": "class_mean",
                "scale": config.teacher_head_scale,
                "classes": data.num_classes,
            }
        if not config.teacher_cache:
            cache = None
        supervisor, supervisor_cache = teacher, cache
        if config.stages.stages == "two_stage":
            assistant, result["stage1"] = run_stage(
                os.path.join(out, "stage1_assistant"),
                "assistant.keras",
                lambda folder: _train_assistant(
                    config, data, teacher, cache, views, folder, callbacks, log
                ),
                log=log,
                key=_resume_key(config, "assistant"),
            )
            assistant.trainable = False
            supervisor = at_input_size(assistant, config.data.image_size, "assistant")
            supervisor_cache = None
            if config.teacher_cache and data.stream is not None:
                log("stage 2 runs the assistant every step (a stream has no cache of its outputs)")
                result["assistant_cache"] = "none: the data set streams"
            elif config.teacher_cache:
                # Keras runs the assistant (its area resize has no LiteRT kernel).
                supervisor_cache, status, path = load_or_build(
                    config.cache_dir,
                    supervisor,
                    data.images,
                    views,
                    progress=config.train.verbose == 1,
                    runtime="keras",
                )
                log(f"assistant cache: {status} {path}")
        student = build_student(
            config.student,
            data.num_classes,
            data.channels,
            teacher,
            sync_batchnorm=config.train.sync_batchnorm,
        )
        if config.stages.init_from != "none":
            from lrface_tf.models.recognizer import copy_weights_by_name

            source = assistant if config.stages.init_from == "assistant" else teacher
            copied = copy_weights_by_name(source, student)
            result["init_from"] = {"source": config.stages.init_from, "layers": copied}
        terms = (
            method_terms(config.method, hyper, num_classes=data.num_classes, data_size=len(data))
            if supervisor is not None
            else {}
        )
        history, seconds = train_stage(
            student,
            supervisor if terms else None,
            terms,
            data,
            config.spec,
            model_cfg=config.student,
            task_weight=hyper["task_weight"],
            views=views,
            cache=supervisor_cache if terms else None,
            augment=config.augment,
            lr_augment=config.lr_augment,
            train=config.train,
            out_dir=out,
            callbacks=callbacks,
            labelled_fraction=config.data.labelled_fraction,
            resume_config=_resume_key(config, "student"),
            log=log,
        )
    result.update(
        history=history,
        train_seconds=seconds,
        params=int(embedding_network(student).count_params()),
    )
    # Saved before the evaluation: a failure there must not lose the trained student.
    save_keras(student, os.path.join(out, "student.keras"))
    result.update(
        evaluate_student(student, data, config, gallery if gallery is not None else base_teacher)
    )
    if gallery is not None:
        result["val"]["gallery"] = config.val_gallery
    for line in _summary(result, config):
        log(line)
    return result


def _stored_teacher_outputs(config, stream, teacher, views, result, log):
    """The teacher outputs a streamed data set stores, checked against the run's teacher
    and views, when the run reads them (`--teacher_cache`, or the class-mean head)."""
    if not (config.teacher_cache or config.teacher_head == "class_mean"):
        return None
    stored = stream.teacher_outputs(teacher, views if config.teacher_cache else None)
    log(f"teacher outputs ({stored.num_views} views): stored in {stream.path}")
    result["teacher_cache"] = {
        "status": "stored in the data set",
        "path": stream.path,
        "views": stored.num_views,
    }
    return stored


def _train_key(train):
    """The optimisation settings that shape a run (not how verbose it is)."""
    return {k: v for k, v in dataclasses.asdict(train).items() if k != "verbose"}


def _resume_key(config, stage):
    """What a backup (or a finished stage) must have been written by to be reused:
    everything that shapes the training stream and the networks of this stage (not
    where outputs go, nor the evaluation). The assistant's stage does not depend on
    the student's settings."""
    d = config.to_dict()
    for k in (
        "output_dir",
        "val_pairs",
        "val_image_root",
        "val_probe_size",
        "val_gallery",
        "cache_dir",
    ):
        d.pop(k, None)
    d["train"] = _train_key(config.train)
    # Options at their defaults leave the key as it was before they existed, so backups
    # written then still resume.
    if d.get("lr_augment") is None:
        d.pop("lr_augment", None)
    if d.get("teacher_input") == "hr":
        d.pop("teacher_input", None)
    if d.get("teacher_input") != "mix":
        d.pop("teacher_mix", None)
    if d.get("lr_teacher") is None:
        d.pop("lr_teacher", None)
    if not d.get("teacher_view_mean"):
        d.pop("teacher_view_mean", None)
    if stage == "assistant":
        for k in ("student", "spec", "lr_augment"):
            d.pop(k, None)
        d["stages"] = {k: v for k, v in d["stages"].items() if k != "init_from"}
    return {"stage": stage, **d}


def _check_batches(n, batch_size):
    if n // batch_size < 1:
        raise ValueError(
            f"{n} training examples make no full batch of {batch_size}; lower --batch_size "
            f"to at most {n} or add data"
        )


def _say_skipped(report, log):
    """One console line for every file that was not used, by reason (the files are
    listed in the record)."""
    from lrface_tf.data.sources import skipped_by_reason

    reasons = skipped_by_reason(report)
    if reasons:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        log(f"skipped {sum(reasons.values())} files ({counts}); listed in metrics.json")


def train_stage(
    student,
    supervisor,
    terms,
    data,
    spec,
    *,
    model_cfg,
    task_weight,
    views,
    cache,
    augment,
    train,
    out_dir,
    callbacks=(),
    student_view="lr",
    labelled_fraction=0.0,
    resume_config=None,
    log=print,
    lr_augment=None,
):
    """One Distiller trained with `fit()` on a resumable, step-indexed stream.

    Returns (history dict, seconds).
    """
    import dataclasses

    from lrface_tf.data.pipeline import is_deterministic, paired_dataset
    from lrface_tf.models import Distiller
    from lrface_tf.training import compile_and_fit

    task = task_loss_for_model(model_cfg, student, task_weight)
    distiller = Distiller(
        student,
        supervisor,
        terms,
        task_loss=task,
        task_weight=task_weight if task is not None else 0.0,
        student_view=student_view,
    )
    keep_hr = student_view == "hr" or (bool(terms) and cache is None)
    if cache is not None and all(t.output != "logits" for t in terms.values()):
        cache = dataclasses.replace(cache, head=None)  # no term reads the teacher's logits
    labels = data.labels
    steps = max(1, (data.epoch_examples or len(labels)) // train.batch_size)

    def dataset(start_step):
        if data.stream is not None:  # a TFDS face data set, each worker reading its shards
            return data.stream.paired_dataset(
                labels,
                spec=spec,
                batch_size=train.batch_size,
                end_step=train.epochs * steps,
                seed=train.seed,
                start_step=start_step,
                augment="none" if views is not None else augment,
                views=views,
                teacher_outputs=cache,
                keep_hr=keep_hr,
                deterministic=train.deterministic_input,
            )
        return paired_dataset(
            data.images,
            labels,
            spec=spec,
            batch_size=train.batch_size,
            augment="none" if views is not None else augment,
            views=views,
            seed=train.seed,
            hr_size=data.images.shape[1],
            teacher_cache=cache,
            start_step=start_step,
            num_classes=max(data.num_classes, 1),
            keep_hr=keep_hr,
            labelled_fraction=labelled_fraction,
            deterministic=train.deterministic_input,
            # Fixed views, no HR view needed: make the LR views once, not every step.
            precompute_lr=views is not None and not keep_hr and is_deterministic(spec),
            lr_augment=lr_augment,
        )

    return compile_and_fit(
        distiller,
        dataset,
        train,
        steps_per_epoch=steps,
        output_dir=out_dir,
        callbacks=callbacks,
        config=resume_config,
        log=log,
    )


def _train_assistant(config, data, teacher, cache, views, folder, callbacks, log):
    """HORKD stage 1 (cross-structure): teacher -> assistant at its own input size."""
    from lrface_tf.methods import method_terms

    a = config.stages.assistant
    assistant = build_student(
        a,
        data.num_classes,
        data.channels,
        teacher,
        name="assistant",
        sync_batchnorm=config.train.sync_batchnorm,
    )
    spec = DegradationSpec(kernel="area", sizes=(a.input_size,))
    terms = method_terms(
        config.method, config.hyper, num_classes=data.num_classes, data_size=len(data)
    )
    train = config.train
    if config.stages.assistant_epochs:
        import dataclasses

        train = dataclasses.replace(train, epochs=config.stages.assistant_epochs)
    history, seconds = train_stage(
        assistant,
        teacher,
        terms,
        data,
        spec,
        model_cfg=a,
        task_weight=config.hyper["task_weight"],
        views=views,
        cache=cache,
        augment=config.augment,
        train=train,
        out_dir=folder,
        callbacks=callbacks,
        resume_config=_resume_key(config, "assistant"),
        log=log,
        labelled_fraction=config.data.labelled_fraction,
    )
    record = {
        "history": history,
        "train_seconds": seconds,
        "input_size": a.input_size,
        "params": int(embedding_network(assistant).count_params()),
    }
    if data.test is not None:
        record["test"] = test_accuracy(assistant, data.test, spec)
        log(f"assistant@{a.input_size}: top-1 {100 * record['test']['top1']:.2f}%")
    return assistant, record


def test_accuracy(model, test, spec):
    """Top-1/top-5 on a labelled test split under the deterministic form of `spec`."""
    from lrface_tf.data.pipeline import single_view_dataset
    from lrface_tf.eval import classification_accuracy

    plain = DegradationSpec(
        kernel=spec.kernel,
        sizes=(spec.sizes[0],),
        output_size=spec.output_size,
        upsample_kernel=spec.upsample_kernel,
    )
    return classification_accuracy(model, single_view_dataset(*test, spec=plain, batch_size=500))


def _val_gallery(config, teacher):
    """The `--val_gallery` model, checked against the student's embedding size (None
    without one: the teacher embeds the gallery)."""
    if config.val_gallery is None:
        return None
    gallery = load_teacher(config.val_gallery, config.data.image_size)
    if config.student.backbone == "teacher":
        size, of = _embedding_size(teacher), f"--teacher={config.teacher}"
    else:
        size, of = config.student.embedding_dim, "the student"
    _check_embedding_space(
        "val_gallery",
        config.val_gallery,
        gallery,
        size,
        of,
        "the cross-model protocol compares the two (use a model of the student's embedding space)",
    )
    return gallery


def evaluate_student(student, data, config, teacher=None):
    """Test-split accuracy, and validation-pair verification at the student's size:
    probe-only, both sides, full resolution, and (with a teacher of the same embedding
    size) the cross-model protocol: the teacher's HR gallery against the student's LR probe."""
    out = {}
    if data.test is not None and "logits" in student.output:
        out["test"] = test_accuracy(student, data.test, config.spec)
    if config.val_pairs:
        from lrface_tf.eval.pairs import evaluate_pairs, load_pair_images

        pairs = load_pair_images(config.val_pairs, config.val_image_root, config.data.image_size)
        net, rows, cache = embedding_network(student), [], {}
        size = config.val_size
        conditions = [(size, "probe"), (size, "both"), (None, "probe")]
        gallery = embedding_network(teacher) if teacher is not None else None
        if gallery is not None and gallery.output_shape[-1] == net.output_shape[-1]:
            conditions.append((size, "cross"))
        for probe, side in conditions:
            r = evaluate_pairs(
                net,
                pairs,
                probe,
                side,
                config.spec.kernel,
                config.spec.upsample_kernel,
                cache=cache,
                gallery_model=gallery,
            )
            r.pop("scores"), r.pop("roc")
            rows.append(r)
        out["val"] = {"pairs": config.val_pairs, "rows": rows}
    return out


def _summary(result, config):
    if "test" in result:
        yield (
            f"student@{config.spec.sizes[0]} ({config.method}, {config.stages.stages}): "
            f"top-1 {100 * result['test']['top1']:.2f}%"
        )
    for r in result.get("val", {}).get("rows", []):
        yield (
            f"val {os.path.basename(config.val_pairs)} @{r['probe_size']} {r['side']}: "
            f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}"
        )


def train_teacher(
    data_config,
    model,
    train,
    *,
    augment="flip_crop",
    output_dir,
    strategy=None,
    callbacks=(),
    log=print,
):
    """Train a recognizer on the HR images (the teacher of later distillations).

    Returns the result dict; saves `<output_dir>/teacher.keras`. The teacher is built
    under the dtype policy `train.precision`; the previous policy is restored at the end.
    """
    from lrface_tf.training import precision_policy

    with precision_policy(train.precision):
        return _train_teacher(
            data_config,
            model,
            train,
            augment=augment,
            output_dir=output_dir,
            strategy=strategy,
            callbacks=callbacks,
            log=log,
        )


def _train_teacher(data_config, model, train, *, augment, output_dir, strategy, callbacks, log):
    import keras
    import tensorflow as tf

    from lrface_tf.data.sources import load_training_data
    from lrface_tf.export import save_keras

    if data_config.labelled_fraction:
        raise ValueError("--labelled_fraction is for distillation runs, not a teacher's")
    strategy = strategy or tf.distribute.get_strategy()
    data = load_training_data(data_config, progress=train.verbose == 1)
    _check_batches(len(data), train.batch_size)
    _say_skipped(data.report, log)
    spec = DegradationSpec(kernel="area", sizes=(data_config.image_size,))
    with strategy.scope():
        keras.utils.set_random_seed(train.seed)
        teacher = build_student(
            model,
            data.num_classes,
            data.channels,
            name="teacher",
            sync_batchnorm=train.sync_batchnorm,
        )
        history, seconds = train_stage(
            teacher,
            None,
            {},
            data,
            spec,
            model_cfg=model,
            task_weight=1.0,
            views=None,
            cache=None,
            augment=augment,
            train=train,
            out_dir=output_dir,
            callbacks=callbacks,
            student_view="hr",
            resume_config={
                "stage": "teacher",
                "data": dataclasses.asdict(data_config),
                "model": dataclasses.asdict(model),
                "train": _train_key(train),
                "augment": augment,
            },
            log=log,
        )
    result = {
        "history": history,
        "train_seconds": seconds,
        "data": data.report,
        "params": int(teacher.count_params()),
    }
    if data.test is not None:
        result["test"] = test_accuracy(teacher, data.test, spec)
        log(f"teacher@{data_config.image_size}: top-1 {100 * result['test']['top1']:.2f}%")
    save_keras(teacher, os.path.join(output_dir, "teacher.keras"))
    return result
