"""LR-LFW: the SFace teacher and students of every method on LFW pairsDevTest at 8-32 px.

    python -m bench.lfw_devtest                          # every row
    python -m bench.lfw_devtest --rows=sface,student_lr,kdim_l2 --epochs=12

Protocol (issue 7). Students train only on people who do NOT appear in
pairsDevTest.txt (10,492 aligned images of 4,786 people), at 16x16: area
downsample of the YuNet-aligned 112x112 crop (what `apps.align` writes). The
teacher is SFace (`lrface_tf.teachers.sface`), frozen; its embeddings of the pool
(plain and mirrored) are cached once. SFace has no logits over the pool
identities, so the soft terms (KD, KD_im, CRRCD) use a closed-form class-mean
cosine head on its embeddings (`lrface_tf.teachers.with_class_mean_head`).
Evaluation: pairsDevTest (500 + 500 pairs), 10 stratified folds, threshold fit
on 9 folds per condition, probe-only and both-sides degradation at
8/12/16/20/24/32/full (area down, bilinear up to a model's input where needed).
A 16x16 student sees every probe of 16 px or more at 16 px.

Each row also has its parameter count (the deployed embedding network),
the one-thread LiteRT latency of its TFLite export (fp32 and int8) and its
training seconds. Rows accumulate in bench/results/lfw_devtest.json (a rerun
skips (row, seed) pairs already there); bench/results/lfw_devtest.md has the
table and a paired comparison against the teacher on the same folds.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")
SIZES = (8, 12, 16, 20, 24, 32, None)
SIDES = ("probe", "both")

# row -> (what it is, for the table)
ROWS = {
    "sface": "SFace teacher (frozen, never trained on LFW)",
    "student_lr": "compact student on LR images alone (ArcFace on the pool identities)",
    "kd": "+ KD from the teacher's class-mean head (T 4)",
    "feature": "+ 1-order feature term on normalised embeddings (no KD)",
    "kdim_l2": "KD_im: LR-augmented (8/12/16 px) + KD + normalised-feature L2 (Eq. 6)",
    "kdim_mmd": "KD_im: LR-augmented (8/12/16 px) + KD + MK-MMD (Eq. 9)",
    "horkd": "HORKD direct: RKD distance + angle + class-centre (L2 + L3 + LC)",
    "horkd_two_stage": "HORKD two-stage: teacher -> assistant (32 px HR) -> student (16 px)",
    "crrcd": "CRRCD: KD + relation contrastive (queue 512, supervised negatives)",
    "sface_finetuned": "SFace fine-tuned on LR (16 px, upsampled) to its HR embeddings",
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lfw", default="../shared/data/lfw")
    p.add_argument(
        "--aligned",
        default="saved_models/lfw_aligned",
        help="aligned LFW (python -m apps.align --src=<lfw>/lfw-deepfunneled --dst=...)",
    )
    p.add_argument(
        "--teacher",
        default="saved_models/sface/teacher.keras",
        help="SFace in Keras (python -m apps.build_teacher)",
    )
    p.add_argument("--work", default="saved_models/bench/lfw")
    p.add_argument("--size", type=int, default=16, help="probe / LR size the student sees")
    p.add_argument("--input_size", type=int, default=0,
                   help="student input size, LR upsampled to it (0: --size)")  # fmt: skip
    p.add_argument("--task_weight", type=float, default=1.0,
                   help="ArcFace weight in distillation rows (student_lr: 1)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--finetune_epochs", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--kd_weight", type=float, default=0.5)
    p.add_argument("--feature_weight", type=float, default=10.0)
    p.add_argument("--mmd_weight", type=float, default=10.0)
    p.add_argument("--head_scale", type=float, default=16.0)
    p.add_argument("--name", default="lfw_devtest")
    p.add_argument("--no_latency", action="store_true", help="skip the TFLite timing (pilots)")
    p.add_argument("--merge", default=None,
                   help="only fold in the rows of another results JSON (a parallel run "
                   "under another --name), with deltas vs the teacher")  # fmt: skip
    return p.parse_args(argv)


def load_pool(aligned, devtest_pairs):
    """uint8 (N, 112, 112, 3) images and labels 0..C-1 of the people not in `devtest_pairs`."""
    from lrface_tf.data.datasets import identity_folder, lfw_pairs
    from lrface_tf.eval.pairs import load_images

    held_out = {n for p in lfw_pairs(devtest_pairs) for n in (p.name_a, p.name_b)}
    folder = identity_folder(aligned, exclude_people=held_out)  # labels 0..C-1 of the rest
    return load_images(folder.paths, 112), folder.labels.astype(np.int32), len(held_out)


def main(argv=None):
    args = parse_args(argv)
    rows_wanted = args.rows.split(",")
    for r in rows_wanted:
        if r not in ROWS:
            sys.exit(f"error: unknown row {r!r}: use {', '.join(ROWS)}")
    for path in (args.aligned, args.teacher):
        if not os.path.exists(path):
            sys.exit(f"error: {path} does not exist (see --help for the command that makes it)")
    import keras

    import lrface_tf.layers  # noqa: F401  (custom objects)
    from lrface_tf.data.teacher_cache import load_or_build
    from lrface_tf.eval.pairs import load_pair_images
    from lrface_tf.export import write_json, write_text
    from lrface_tf.teachers import add_head_logits, with_class_mean_head

    os.makedirs(args.work, exist_ok=True)
    json_path = os.path.join(RESULTS, f"{args.name}.json")
    record = _load_record(json_path)
    if args.merge:
        _merge(record, _load_record(args.merge))
        write_json(json_path, record)
        write_text(os.path.join(RESULTS, f"{args.name}.md"), _markdown(record))
        print(_markdown(record))
        return
    done = {(r["model"], r["seed"]) for r in record["rows"]}
    todo = [r for r in rows_wanted if (r, args.seed) not in done]
    if not todo:
        print("every requested row is already in", json_path)
    devtest = os.path.join(args.lfw, "pairsDevTest.txt")
    pairs = load_pair_images(devtest, args.aligned, size=112)
    teacher = keras.saving.load_model(args.teacher, compile=False)
    teacher.trainable = False
    t0 = time.perf_counter()
    images, labels, n_held = load_pool(args.aligned, devtest)
    num_classes = int(labels.max()) + 1
    print(f"pool: {len(images)} images of {num_classes} people "
          f"({n_held} DevTest people held out), {time.perf_counter() - t0:.0f} s")  # fmt: skip
    cache, status = load_or_build(os.path.join(args.work, "pool_sface_cache.npz"), teacher,
                                  images, ("none", "flip"), batch_size=64, hr_size=112)  # fmt: skip
    print("teacher cache:", status)
    cm_teacher = with_class_mean_head(teacher, cache.embedding[0], labels, num_classes,
                                      args.head_scale)  # fmt: skip
    cm_cache = add_head_logits(cache, cm_teacher, images, hr_size=112)
    train = Trainer(args, images, labels, num_classes, cm_teacher, cache, cm_cache)
    teacher_folds = {(r["probe_size"], r["side"]): r["fold_accuracies"]
                     for r in record["rows"] if r["model"] == "sface"}  # fmt: skip
    for row in todo:
        print(f"--- {row}: {ROWS[row]}")
        if row == "sface":
            model, seconds, params = teacher, 0.0, teacher.count_params()
        else:
            model, seconds = train(row)
            params = model.count_params()
        latency = {"float32": float("nan"), "int8": float("nan")}
        if not args.no_latency:
            latency = _latency(model, images, os.path.join(args.work, row), args.size)
        results = _sweep(model, pairs)
        for res in results:
            key = (res["probe_size"], res["side"])
            if row == "sface":
                teacher_folds[key] = res["fold_accuracies"]
            record["rows"].append(_row(row, args, res, params, latency, seconds,
                                       teacher_folds.get(key)))  # fmt: skip
        command = " ".join(["python -m bench.lfw_devtest", *sys.argv[1:]])
        if command not in record["commands"]:
            record["commands"].append(command)
        record["date"] = datetime.date.today().isoformat()
        write_json(json_path, record)
        write_text(os.path.join(RESULTS, f"{args.name}.md"), _markdown(record))
        print(_markdown(record, only=row))


class Trainer:
    """Trains one row's student on the pool with the library's Distiller and `fit()`."""

    def __init__(self, args, images, labels, num_classes, teacher, cache, cm_cache):
        self.args, self.images, self.labels = args, images, labels
        self.num_classes, self.teacher = num_classes, teacher
        self.cache, self.cm_cache = cache, cm_cache

    def __call__(self, row):
        import keras

        from lrface_tf.data.degrade import DegradationSpec
        from lrface_tf.export import save_keras
        from lrface_tf.models import build_recognizer, embedding_model, task_loss_for
        from lrface_tf.models.recognizer import copy_weights_by_name

        a = self.args
        out = os.path.join(a.work, row)
        keras.utils.set_random_seed(a.seed)
        terms, cache, task = self._terms(row), self.cm_cache, task_loss_for("arcface", 32.0, 0.5)
        inp = a.input_size or a.size
        up = inp if inp != a.size else None
        spec = DegradationSpec(kernel="area", sizes=(a.size,), output_size=up)
        epochs, lr = a.epochs, a.learning_rate
        if row in ("kdim_l2", "kdim_mmd"):
            spec = DegradationSpec(kernel="area", sizes=(8, 12, a.size), output_size=inp)
        if row == "feature":
            cache = self.cache  # no logits needed
        teacher = self.teacher
        if row == "horkd_two_stage":
            teacher, cache, seconds1 = self._assistant(inp, spec)
        if row == "sface_finetuned":
            student, task, cache = self._finetuned(), None, self.cache
            spec = DegradationSpec(kernel="area", sizes=(a.size,), output_size=112)
            epochs, lr = a.finetune_epochs, 1e-4
        else:
            student = build_recognizer(a.backbone, inp, self.num_classes, head="arcface",
                                       width_multiplier=a.width, embedding_dim=128,
                                       name="student")  # fmt: skip
        if row == "horkd_two_stage":  # stage 2 starts from the assistant (Sec. 3.3)
            copy_weights_by_name(teacher.get_layer("assistant"), student)
        seconds = self._fit(student, teacher if terms else None, terms, spec, cache, task,
                            epochs, lr, out)  # fmt: skip
        if row == "horkd_two_stage":
            seconds += seconds1
        save_keras(student, os.path.join(out, "student.keras"))
        return embedding_model(student) if "logits" in student.output else student, seconds

    def _fit(self, student, teacher, terms, spec, cache, task, epochs, lr, out):
        from lrface_tf.data.pipeline import paired_dataset
        from lrface_tf.models import Distiller
        from lrface_tf.training import compile_and_fit

        a = self.args
        steps = len(self.labels) // a.batch_size
        total = max(1, int(round(epochs * steps)))

        def data(start_step):
            return paired_dataset(self.images, self.labels, spec=spec, batch_size=a.batch_size,
                                  augment="flip", seed=a.seed, hr_size=112,
                                  teacher_cache=cache if terms else None,
                                  start_step=start_step)  # fmt: skip

        distiller = Distiller(student, teacher, terms, task_loss=task,
                              task_weight=a.task_weight if terms else 1.0)  # fmt: skip
        _, seconds = compile_and_fit(distiller, data, epochs=max(1, total // steps),
                                     steps_per_epoch=min(steps, total), learning_rate=lr,
                                     output_dir=out, verbose=2)  # fmt: skip
        return seconds

    def _assistant(self, inp, spec):
        """HORKD stage 1 (cross-structure): teacher -> a compact assistant on 32 px HR views.

        Returns the frozen assistant behind an area resize 112 -> 32 (so stage 2 can
        feed it the HR view), no cache (it runs every step), and stage-1 seconds.
        """
        import keras

        from lrface_tf.data.degrade import DegradationSpec
        from lrface_tf.models import build_recognizer, task_loss_for

        a = self.args
        assistant = build_recognizer(a.backbone, 32, self.num_classes, head="arcface",
                                     width_multiplier=a.width, embedding_dim=128,
                                     name="assistant")  # fmt: skip
        seconds = self._fit(assistant, self.teacher, self._terms("horkd"),
                            DegradationSpec(kernel="area", sizes=(32,)), self.cm_cache,
                            task_loss_for("arcface", 32.0, 0.5), a.epochs, a.learning_rate,
                            os.path.join(a.work, "horkd_two_stage", "stage1"))  # fmt: skip
        assistant.trainable = False
        image = keras.Input((112, 112, 3))
        small = keras.layers.Resizing(32, 32, interpolation="area")(image)
        frozen = keras.Model(image, assistant(small), name="assistant_112")
        frozen.trainable = False
        return frozen, None, seconds

    def _terms(self, row):
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

        a = self.args
        row = "horkd" if row == "horkd_two_stage" else row  # both stages use HORKD's terms
        kd = {"kd": DistillTerm(KDLoss(4.0), a.kd_weight, "logits")}
        l2 = DistillTerm(FeatureLoss("l2", normalize=True), a.feature_weight)
        return {
            "student_lr": {},
            "kd": kd,
            "feature": {"feature_l2": l2},
            "kdim_l2": {**kd, "feature_l2": l2},
            "kdim_mmd": {**kd, "mk_mmd": DistillTerm(MKMMDLoss(), a.mmd_weight)},
            "horkd": {
                "rkd_distance": DistillTerm(RKDDistanceLoss(), 25.0),
                "rkd_angle": DistillTerm(RKDAngleLoss(chunk_size=32), 50.0),
                "class_center": DistillTerm(ClassCenterLoss(), 1.0),
            },
            "crrcd": {
                **kd,
                "crrcd": DistillTerm(CRRCDLoss(128, 512, 0.1, len(self.labels), "supervised"), 2.0),
            },  # fmt: skip
            "sface_finetuned": {"feature_l2": l2},
        }[row]

    def _finetuned(self):
        """SFace's own weights, BN frozen, as a student that sees upsampled LR faces."""
        import keras

        student = keras.models.clone_model(self.teacher.layers[1])
        student.set_weights(self.teacher.layers[1].get_weights())
        # The clone copies each layer's frozen flag: unfreeze layer by layer (a model's
        # `trainable = True` does not reach layers that are frozen themselves).
        student.trainable = True
        for layer in student.layers:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        if not student.trainable_weights:
            raise RuntimeError("the fine-tuned student has no trainable weights")
        return student


def _latency(model, images, folder, size, calls=300):
    """One-thread LiteRT latency (ms per image, median) of fp32 and int8 exports."""
    from lrface_tf.data.degrade import degrade
    from lrface_tf.export import convert_tflite, latency_ms

    side = model.input_shape[1]
    x = np.asarray(images[:200], np.float32) / 255.0
    x = np.asarray(degrade(x, size, "area", side if side != size else None, "bilinear"))
    os.makedirs(folder, exist_ok=True)
    out = {}
    for q in ("float32", "int8"):
        path = convert_tflite(model, os.path.join(folder, f"model_{q}.tflite"), q,
                              representative_images=x)  # fmt: skip
        out[q] = latency_ms(path, x, calls if side <= 32 else 30)
    return out


def _sweep(model, pairs):
    from lrface_tf.eval.pairs import evaluate_pairs

    cache, results = {}, []
    for size in SIZES:
        for side in SIDES:
            if size is None and side == "both":
                continue  # full resolution is the same on both sides
            results.append(evaluate_pairs(model, pairs, size, side, cache=cache))
    return results


def _row(name, args, res, params, latency, seconds, teacher_folds):
    row = {
        "model": name,
        "seed": args.seed,
        "probe_size": res["probe_size"] or 112,
        "side": res["side"],
        "accuracy": res["accuracy"],
        "accuracy_std": res["accuracy_std"],
        "tar_at_far_1e-3": res["tar_at_far_1e-3"],
        "auc": res["auc"],
        "fold_accuracies": [float(v) for v in res["fold_accuracies"]],
        "params": int(params),
        "latency_ms": latency["float32"],
        "latency_int8_ms": latency["int8"],
        "train_seconds": seconds,
        "input_size": res["input_size"],
    }
    if teacher_folds is not None:
        d = np.asarray(row["fold_accuracies"]) - np.asarray(teacher_folds)
        row["delta_vs_teacher"] = float(d.mean())
        row["delta_vs_teacher_std"] = float(d.std())
    return row


def _merge(record, other):
    """Append `other`'s rows not already in `record`, with deltas vs `record`'s teacher."""
    teacher = {(r["probe_size"], r["side"]): r["fold_accuracies"]
               for r in record["rows"] if r["model"] == "sface"}  # fmt: skip
    have = {(r["model"], r["seed"], r["probe_size"], r["side"]) for r in record["rows"]}
    for r in other["rows"]:
        if (r["model"], r["seed"], r["probe_size"], r["side"]) in have:
            continue
        folds = teacher.get((r["probe_size"], r["side"]))
        if folds is not None:
            d = np.asarray(r["fold_accuracies"]) - np.asarray(folds)
            r = {**r, "delta_vs_teacher": float(d.mean()), "delta_vs_teacher_std": float(d.std())}
        record["rows"].append(r)
    record["commands"] += [c for c in other.get("commands", []) if c not in record["commands"]]


def _load_record(path):
    import json

    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"name": "lfw_devtest", "protocol": __doc__.split("\n\n")[2], "rows": [],
            "commands": []}  # fmt: skip


def _markdown(record, only=None):
    rows = [r for r in record["rows"] if only is None or r["model"] == only]
    head = [] if only else ["Commands: " + "; ".join(f"`{c}`" for c in record["commands"]), ""]
    lines = head + [
        "| model | side | 8 | 12 | 16 | 20 | 24 | 32 | full | 16: vs teacher | params | "
        "ms fp32 / int8 | train s |",
        "|---|---|" + "---|" * 11,
    ]
    seen = []
    for r in rows:
        if (r["model"], r["seed"], r["side"]) not in seen:
            seen.append((r["model"], r["seed"], r["side"]))
    for model, seed, side in seen:
        mine = {r["probe_size"]: r for r in rows
                if (r["model"], r["seed"]) == (model, seed) and r["side"] == side}  # fmt: skip
        full = [r for r in rows if (r["model"], r["seed"], r["probe_size"]) == (model, seed, 112)]
        cells = [f"{100 * mine[s]['accuracy']:.2f}" if s in mine else "" for s in SIZES[:-1]]
        cells.append(f"{100 * full[0]['accuracy']:.2f}" if full else "")
        r16 = mine.get(16, {})
        delta = (f"{100 * r16['delta_vs_teacher']:+.2f} +- {100 * r16['delta_vs_teacher_std']:.2f}"
                 if "delta_vs_teacher" in r16 else "")  # fmt: skip
        any_r = next(iter(mine.values()))
        lines.append(
            f"| {model} (seed {seed}) | {side} | " + " | ".join(cells) + f" | {delta} | "
            f"{any_r['params']:,} | {any_r['latency_ms']:.2f} / {any_r['latency_int8_ms']:.2f} | "
            f"{any_r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
