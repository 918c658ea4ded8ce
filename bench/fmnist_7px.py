"""Fashion-MNIST at 7x7: baseline vs KD vs HORKD (direct, two-stage) and the order ablation.

    python -m bench.fmnist_7px                      # all methods, seeds 0 1 2
    python -m bench.fmnist_7px --methods=kd,horkd --seeds=0

One teacher (ResNet-8 at 28x28, seed 0) is trained once and cached; every
student is a ResNet-8 at 7x7 trained for the same epochs. Rows are appended to
bench/results/fmnist_7px.json as they finish (a rerun skips rows already there),
and bench/results/fmnist_7px.md gets the mean +- std table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# method -> (method terms name, stages)
METHODS = {
    "baseline": ("baseline", "direct"),
    "kd": ("kd", "direct"),
    "horkd": ("horkd", "direct"),
    "horkd_two_stage": ("horkd", "two_stage"),
    "horkd_l2_l3": ("horkd_l2_l3", "direct"),
    "horkd_l2_lc": ("horkd_l2_lc", "direct"),
    "horkd_all": ("horkd_all", "direct"),
    "crrcd": ("crrcd", "direct"),
    # Eq. 11's negative term averaged instead of multiplied by n (see README).
    "crrcd_mean_negatives": ("crrcd", "direct"),
    # CRRCD ablations (Fig. 3 / Sec. IV-C): queue length n under Eq. 11 as written ...
    "crrcd_q64": ("crrcd", "direct"),
    "crrcd_q128": ("crrcd", "direct"),
    "crrcd_q256": ("crrcd", "direct"),
    # ... and tau and the sampling policy on the averaged-negatives variant.
    "crrcd_mean_tau0.05": ("crrcd", "direct"),
    "crrcd_mean_tau0.2": ("crrcd", "direct"),
    "crrcd_mean_unsupervised": ("crrcd", "direct"),
    # HORKD weight sweep: the angle term at 50 cost about a point; try 5 (direct and two-stage).
    "horkd_angle5": ("horkd", "direct"),
    "horkd_two_stage_angle5": ("horkd", "two_stage"),
}
# method -> MethodConfig fields that differ from the command's config
OVERRIDES = {
    "crrcd_mean_negatives": {"crrcd_negative_weight": 1.0},
    "crrcd_q64": {"crrcd_queue": 64},
    "crrcd_q128": {"crrcd_queue": 128},
    "crrcd_q256": {"crrcd_queue": 256},
    "crrcd_mean_tau0.05": {"crrcd_negative_weight": 1.0, "crrcd_tau": 0.05},
    "crrcd_mean_tau0.2": {"crrcd_negative_weight": 1.0, "crrcd_tau": 0.2},
    "crrcd_mean_unsupervised": {"crrcd_negative_weight": 1.0, "crrcd_sampling": "unsupervised"},
    "horkd_angle5": {"rkd_angle_weight": 5.0},
    "horkd_two_stage_angle5": {"rkd_angle_weight": 5.0},
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--teacher_epochs", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--max_train_examples", type=int, default=0)
    p.add_argument("--kd_weight", type=float, default=0.5)
    p.add_argument("--kd_temperature", type=float, default=4.0)
    p.add_argument("--rkd_distance_weight", type=float, default=25.0)
    p.add_argument("--rkd_angle_weight", type=float, default=50.0)
    p.add_argument("--center_weight", type=float, default=0.05)
    p.add_argument("--feature_weight", type=float, default=0.05)
    p.add_argument("--name", default="fmnist_7px")
    p.add_argument("--cache", default="saved_models/bench")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    from lrface_tf.data import DegradationSpec, load_fashion_mnist, paired_dataset
    from lrface_tf.data.pipeline import single_view_dataset
    from lrface_tf.eval import classification_accuracy
    from lrface_tf.export import save_keras, write_json, write_text
    from lrface_tf.methods import MethodConfig, method_terms
    from lrface_tf.models import Distiller, build_recognizer, task_loss_for
    from lrface_tf.models.recognizer import copy_weights_by_name
    from lrface_tf.training import compile_and_fit

    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        sys.exit(f"error: unknown methods {unknown}; use {', '.join(METHODS)}")
    (x, y), (xs, ys) = load_fashion_mnist()
    if args.max_train_examples:
        x, y = x[: args.max_train_examples], y[: args.max_train_examples]
    x, xs = x[..., None], xs[..., None]
    spec = DegradationSpec(kernel="area", sizes=(7,))
    steps = len(y) // args.batch_size
    config = MethodConfig(
        kd_temperature=args.kd_temperature, kd_weight=args.kd_weight, task_weight=1.0,
        rkd_distance_weight=args.rkd_distance_weight, rkd_angle_weight=args.rkd_angle_weight,
        center_weight=args.center_weight, feature_weight=args.feature_weight,
        data_size=len(y),
    )  # fmt: skip

    def net(size, name):
        return build_recognizer("resnet8", size, 10, channels=1, embedding_dim=64, name=name)

    def fit(student, teacher, terms, seed, view="lr", epochs=args.epochs):
        ds = paired_dataset(x, y, spec=spec, batch_size=args.batch_size, seed=seed, repeat=True)
        d = Distiller(student, teacher, terms, task_loss=task_loss_for("softmax"),
                      task_weight=1.0, student_view=view)  # fmt: skip
        return compile_and_fit(d, ds, epochs=epochs, steps_per_epoch=steps, verbose=2)[1]

    def top1(model, size):
        ev = single_view_dataset(xs, ys, spec=DegradationSpec(sizes=(size,)), batch_size=500)
        return classification_accuracy(model, ev)["top1"]

    os.makedirs(args.cache, exist_ok=True)
    t_path = os.path.join(args.cache, f"teacher28_e{args.teacher_epochs}_n{len(y)}.keras")
    if os.path.exists(t_path):
        teacher = keras.saving.load_model(t_path, compile=False)
    else:
        keras.utils.set_random_seed(0)
        teacher = net(28, "teacher")
        fit(teacher, None, {}, 0, view="hr", epochs=args.teacher_epochs)
        save_keras(teacher, t_path)
    teacher.trainable = False
    t28 = top1(teacher, 28)

    json_path = os.path.join(RESULTS, f"{args.name}.json")
    rows, commands = [], []
    if os.path.exists(json_path):
        import json

        with open(json_path) as f:
            previous = json.load(f)
        rows = previous["rows"]
        commands = previous.get("commands", [previous.get("command", "")])
    command = "python -m bench.fmnist_7px " + " ".join(argv if argv is not None else sys.argv[1:])
    commands = [c for c in commands if c and c != command.strip()] + [command.strip()]
    done = {(r["method"], r["seed"]) for r in rows}
    for method in args.methods.split(","):
        terms_name, stages = METHODS[method]
        for seed in (int(s) for s in args.seeds.split(",")):
            if (method, seed) in done:
                continue
            keras.utils.set_random_seed(seed)
            cfg = dataclasses.replace(config, **OVERRIDES.get(method, {}))
            terms = method_terms(terms_name, cfg)
            supervisor, seconds = (teacher if terms else None), 0.0
            if stages == "two_stage":
                assistant = net(28, "assistant")
                seconds += fit(assistant, teacher, method_terms(terms_name, cfg), seed, "hr")
                assistant.trainable = False
                supervisor = assistant
            student = net(7, "student")
            if stages == "two_stage":
                copy_weights_by_name(supervisor, student)
            seconds += fit(student, supervisor, terms, seed)
            row = {
                "method": method, "seed": seed, "top1": round(100 * top1(student, 7), 2),
                "seconds": round(seconds, 1), "params": student.count_params(),
                "epochs": args.epochs, "train_examples": len(y),
            }  # fmt: skip
            rows.append(row)
            print(row, flush=True)
            _write(json_path, rows, commands, args, t28, write_json, write_text)
    _write(json_path, rows, commands, args, t28, write_json, write_text)


def _write(json_path, rows, commands, args, teacher_top1, write_json, write_text):
    """JSON rows + the markdown table (rows come from the listed commands, in order)."""
    write_json(json_path, {
        "rows": rows, "commands": commands,
        "date": datetime.date.today().isoformat(), "teacher_top1_28": round(100 * teacher_top1, 2),
        "settings": vars(args),
    })  # fmt: skip
    lines = [
        f"Fashion-MNIST, student ResNet-8 at 7x7 (area), {args.epochs} epochs; "
        f"teacher ResNet-8 at 28x28: {100 * teacher_top1:.2f}% top-1.",
        "",
        "Commands (rows accumulate across them): " + "; ".join(f"`{c}`" for c in commands),
        "",
        "| method | seeds | top-1 mean +- std (%) | train seconds (mean) |",
        "|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        acc = np.array([r["top1"] for r in sel])
        std = acc.std(ddof=1) if len(sel) > 1 else 0.0
        secs = np.mean([r["seconds"] for r in sel])
        lines.append(f"| {method} | {len(sel)} | {acc.mean():.2f} +- {std:.2f} | {secs:.0f} |")
    write_text(json_path[:-5] + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
