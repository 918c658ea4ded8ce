"""Performance report (issue 8): inference latency, training-step cost, epoch time vs data
size, one device vs two mirrored replicas, and the RKD angle memory figures.

    python -m bench.perf                         # every part
    python -m bench.perf --parts=latency,step_cost

Each figure is measured in this one run (ratios from the same process), except
the RKD angle memory, which is read from bench/results/rkd_angle_memory.json
(its own command, one process per configuration). Writes bench/results/perf.json
(named figures, each with how it was measured) and bench/results/perf.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PARTS = ("latency", "step_cost", "epoch_vs_size", "mirrored", "rkd_memory")
FACE_CLASSES = 4786  # the LFW pool of bench.lfw_devtest


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument(
        "--teacher",
        default="saved_models/sface/teacher.keras",
        help="SFace in Keras (python -m apps.build_teacher)",
    )
    p.add_argument("--calls", type=int, default=300, help="timed single-image calls (student)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    parts = args.parts.split(",")
    for part in parts:
        if part not in PARTS:
            sys.exit(f"error: unknown part {part!r}: use {', '.join(PARTS)}")
    path = os.path.join(RESULTS, "perf.json")
    record = json.load(open(path)) if os.path.exists(path) else {"figures": {}}
    for part in parts:
        print(f"--- {part}")
        figures = globals()[f"_{part}"](args)
        record["figures"].update(figures)
        for k, v in figures.items():
            print(f"{k}: {v['value']} {v.get('unit', '')}")
    command = " ".join(["python -m bench.perf", *(sys.argv[1:] if argv is None else argv)])
    if command not in record.setdefault("commands", []):
        record["commands"].append(command)
    record["date"] = datetime.date.today().isoformat()
    from lrface_tf.export import write_json, write_text

    write_json(path, record)
    write_text(os.path.join(RESULTS, "perf.md"), _markdown(record))


def _fig(value, unit, how, **extra):
    return {"value": value, "unit": unit, "how": how, **extra}


def _student(size=16, classes=FACE_CLASSES):
    from lrface_tf.models import build_recognizer

    return build_recognizer(
        "resnet18",
        size,
        classes,
        head="arcface",
        width_multiplier=0.25,
        embedding_dim=128,
        name="student",
    )


def _teacher(args):
    import keras

    if not os.path.exists(args.teacher):
        sys.exit(f"error: {args.teacher} does not exist; run python -m apps.build_teacher")
    t = keras.saving.load_model(args.teacher, compile=False)
    t.trainable = False
    return t


def _latency(args):
    """One-thread LiteRT latency per image: the 16x16 student vs the SFace teacher at 112."""
    from lrface_tf.export import convert_tflite, latency_ms
    from lrface_tf.models import embedding_model

    rng = np.random.default_rng(0)
    out, how = (
        {},
        (
            "median of {n} single-image calls after 10 warm-up calls, LiteRT "
            "Interpreter num_threads=1, {model}"
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, n in (
            ("student16", embedding_model(_student()), args.calls),
            ("teacher112", _teacher(args), max(30, args.calls // 10)),
        ):
            side = model.input_shape[1]
            x = rng.random((64, side, side, 3), dtype=np.float32)
            for q in ("float32", "int8"):
                p = convert_tflite(
                    model, os.path.join(tmp, f"{name}_{q}.tflite"), q, representative_images=x
                )
                desc = f"{name} ({model.count_params():,} params, {side}x{side}, {q})"
                out[f"latency_ms_{name}_{q}"] = _fig(
                    round(latency_ms(p, x, n), 4),
                    "ms",
                    how.format(n=n, model=desc),
                    file_bytes=os.path.getsize(p),
                )
    for q in ("float32", "int8"):
        t, s = (out[f"latency_ms_{m}_{q}"]["value"] for m in ("teacher112", "student16"))
        ratio = t / s
        out[f"speedup_student16_vs_teacher112_{q}"] = _fig(
            round(ratio, 1), "x", f"latency_ms_teacher112_{q} / latency_ms_student16_{q}"
        )
    return out


class _StepTimer:
    def __init__(self):
        import keras

        class T(keras.callbacks.Callback):
            def on_train_batch_begin(s, batch, logs=None):
                s.t = time.perf_counter()

            def on_train_batch_end(s, batch, logs=None):
                self.times.append(time.perf_counter() - s.t)

        self.times = []
        self.callback = T()

    def median(self, skip=3):
        return float(np.median(self.times[skip:]))


def _step_cost(args):
    """Distillation step / student-only step on the face setting (SFace at 112 -> 16 px student),
    with the teacher run every step and with its outputs cached."""
    import keras

    from lrface_tf.data import DegradationSpec, paired_dataset
    from lrface_tf.data.teacher_cache import TeacherCache
    from lrface_tf.losses import FeatureLoss
    from lrface_tf.models import Distiller, DistillTerm, task_loss_for
    from lrface_tf.training import compile_and_fit

    bs, n = 128, 128 * 8
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    y = rng.integers(0, FACE_CLASSES, n).astype(np.int32)
    teacher = _teacher(args)
    spec = DegradationSpec(kernel="area", sizes=(16,))
    cache = TeacherCache.build(teacher, x, ("none", "flip"), batch_size=64, progress=False)
    medians = {}
    for variant in ("student_only", "distill_uncached", "distill_cached"):
        keras.utils.set_random_seed(0)
        terms = (
            {}
            if variant == "student_only"
            else {"feature_l2": DistillTerm(FeatureLoss("l2", normalize=True), 10.0)}
        )
        use_cache = cache if variant == "distill_cached" else None
        ds = paired_dataset(
            x,
            y,
            spec=spec,
            batch_size=bs,
            augment="flip",
            hr_size=112,
            teacher_cache=use_cache,
            repeat=True,
            keep_hr=variant == "distill_uncached",
        )
        d = Distiller(
            _student(),
            teacher if terms else None,
            terms,
            task_loss=task_loss_for("arcface"),
            task_weight=1.0,
        )
        timer = _StepTimer()
        compile_and_fit(
            d, ds, epochs=1, steps_per_epoch=args.steps + 3, verbose=0, callbacks=[timer.callback]
        )
        medians[variant] = timer.median()
    how = (
        f"median wall time of {args.steps} fit() steps after 3 warm-up steps, batch {bs}, "
        "ResNet-18 x0.25 student at 16x16 (ArcFace, 4,786 classes), SFace teacher at 112, "
        "normalised-feature term; same process; the HR view is built only where the "
        "teacher runs (keep_hr)"
    )
    out = {f"step_seconds_{k}": _fig(round(v, 4), "s", how) for k, v in medians.items()}
    for k in ("distill_cached", "distill_uncached"):
        out[f"ratio_{k}_over_student_only"] = _fig(
            round(medians[k] / medians["student_only"], 3),
            "x",
            f"step_seconds_{k} / step_seconds_student_only",
        )
    return out


def _epoch_vs_size(args):
    """Student-only epoch time on Fashion-MNIST 28 -> 7 at growing data sizes (linear?)."""
    import keras

    from lrface_tf.data import DegradationSpec, load_fashion_mnist, paired_dataset
    from lrface_tf.models import Distiller, build_recognizer, task_loss_for
    from lrface_tf.training import compile_and_fit

    (x, y), _ = load_fashion_mnist()
    sizes, seconds = (4096, 8192, 16384, 32768), []
    for n in sizes:
        keras.utils.set_random_seed(0)
        student = build_recognizer("resnet8", 7, 10, channels=1, embedding_dim=64)
        ds = paired_dataset(
            x[:n, ..., None],
            y[:n],
            spec=DegradationSpec(sizes=(7,)),
            batch_size=128,
            augment="flip",
            repeat=True,
        )
        d = Distiller(student, None, {}, task_loss=task_loss_for("softmax"))
        hist, _ = compile_and_fit(d, ds, epochs=2, steps_per_epoch=n // 128, verbose=0)
        seconds.append(hist["epoch_seconds"][1])  # the second epoch: no tracing
    slope, icept = np.polyfit(sizes, seconds, 1)
    pred = slope * np.asarray(sizes) + icept
    r2 = 1 - np.sum((np.asarray(seconds) - pred) ** 2) / np.sum((seconds - np.mean(seconds)) ** 2)
    how = (
        "second-epoch seconds of a student-only fit() (ResNet-8 at 7x7, batch 128) at "
        f"{', '.join(map(str, sizes))} examples; least-squares line"
    )
    return {
        "epoch_seconds_vs_examples": _fig(
            [round(s, 2) for s in seconds], "s", how, examples=list(sizes)
        ),
        "epoch_time_per_1000_examples": _fig(round(1000 * slope, 3), "s", how),
        "epoch_time_linear_fit_r2": _fig(round(float(r2), 4), "", how),
    }


MIRRORED_CHILD = r"""
import json, os, sys
import tensorflow as tf
devices, sync = int(sys.argv[1]), sys.argv[2] == "sync"
if devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from lrface_tf.data import DegradationSpec, load_fashion_mnist, paired_dataset
from lrface_tf.losses import RKDDistanceLoss
from lrface_tf.models import Distiller, DistillTerm, build_recognizer, task_loss_for
from lrface_tf.models import synchronize_batchnorm
from lrface_tf.training import compile_and_fit, make_strategy
(x, y), _ = load_fashion_mnist()
x, y = x[:4096, ..., None], y[:4096]
if devices > 1:
    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
else:
    strategy = make_strategy("default")
with strategy.scope():
    keras.utils.set_random_seed(0)
    teacher = build_recognizer("resnet8", 28, 10, channels=1, embedding_dim=32, name="teacher")
    teacher.trainable = False
    student = build_recognizer("resnet8", 7, 10, channels=1, embedding_dim=32, name="student")
    if sync:
        student = synchronize_batchnorm(student)
    d = Distiller(student, teacher, {"rkd": DistillTerm(RKDDistanceLoss(), 25.0)},
                  task_loss=task_loss_for("softmax"), task_weight=1.0)
    ds = paired_dataset(x, y, spec=DegradationSpec(sizes=(7,)), batch_size=128, augment="flip",
                        start_step=0)
    hist, _ = compile_and_fit(d, ds, epochs=4, steps_per_epoch=32, verbose=0)
print("RESULT", json.dumps(hist["loss"]))
"""


def _mirrored(args):
    """The same run on one device and on MirroredStrategy over 2 logical CPUs."""
    curves = {}
    for devices, bn in ((1, "plain"), (2, "plain"), (2, "sync")):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(
            [sys.executable, "-c", MIRRORED_CHILD, str(devices), bn],
            capture_output=True,
            text=True,
            env=env,
        )
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
        if proc.returncode != 0 or not line:
            sys.exit(f"error: mirrored child failed:\n{proc.stderr[-2000:]}")
        curves[devices, bn] = np.asarray(json.loads(line[0].split(" ", 1)[1]))
    one = curves[1, "plain"]
    how = (
        "per-epoch mean loss of 4 epochs x 32 steps, Fashion-MNIST 28 -> 7, ResNet-8 "
        "teacher (untrained, frozen) and student with BatchNorm, task + RKD distance "
        "(gathered), batch 128; one process per run"
    )
    out = {"mirrored_loss_curve_1_device": _fig([round(float(v), 5) for v in one], "", how)}
    for bn, what in (
        ("plain", "Keras' per-replica BatchNorm statistics (64 examples each)"),
        ("sync", "synchronize_batchnorm (--sync_batchnorm): global-batch statistics"),
    ):
        two = curves[2, bn]
        out[f"mirrored_loss_curve_2_replicas_{bn}_bn"] = _fig(
            [round(float(v), 5) for v in two], "", f"{how}; {what}"
        )
        out[f"mirrored_max_relative_loss_difference_{bn}_bn"] = _fig(
            round(float(np.max(np.abs(one - two) / np.abs(one))), 5),
            "",
            f"max over epochs of |2 replicas - 1 device| / 1 device; {what}",
        )
    return out


def _rkd_memory(args):
    path = os.path.join(RESULTS, "rkd_angle_memory.json")
    if not os.path.exists(path):
        sys.exit(f"error: {path} missing; run python -m bench.rkd_angle_memory first")
    rec = json.load(open(path))
    how = f"read from {os.path.relpath(path)} (command: {rec.get('command')}, {rec.get('date')})"
    out = {}
    for r in rec["rows"]:
        mode = "chunked" if r.get("chunk_size") else "naive"
        out[f"rkd_angle_peak_mb_batch{r['batch']}_{mode}"] = _fig(r["peak_added_mb"], "MB", how)
        out[f"rkd_angle_seconds_batch{r['batch']}_{mode}"] = _fig(r["seconds"], "s", how)
    return out


def _markdown(record):
    lines = [
        "Commands: " + "; ".join(f"`{c}`" for c in record.get("commands", [])),
        f"({record.get('date')}, 2-core CPU, no GPU)",
        "",
        "| figure | value | how it was measured |",
        "|---|---|---|",
    ]
    for name, f in record["figures"].items():
        v = f["value"]
        v = ", ".join(map(str, v)) if isinstance(v, list) else v
        lines.append(f"| {name} | {v} {f.get('unit', '')} | {f['how']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
