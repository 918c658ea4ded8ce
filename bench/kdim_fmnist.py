"""KD_im on Fashion-MNIST: frozen teacher + LR-augmented student, vs the two-step scheme.

    python -m bench.kdim_fmnist

Teacher: the ResNet-8 at 28x28 of bench.fmnist_7px (trained once, cached).
Student: ResNet-8 with 28x28 input, trained on LR-augmented views: 40% of the
images are Gaussian-blurred and downsampled to 7, 10 or 14 px and brought back
to 28 (bilinear); the teacher always sees the unchanged image (KD_im, Sec. 2.1).
Schemes (one seed, the same epochs):
  student_alone   the student on the LR-augmented data, no teacher
  kdim_mmd        hard CE + soft KD + MK-MMD on normalised features (Eq. 9), teacher cached
  kdim_l2         hard CE + soft KD + normalised-feature L2 (Eq. 6), teacher cached
  two_step        Fig. 1A: fine-tune the teacher on the LR-augmented data, then distil
                  (KD + MK-MMD) from it; time includes the teacher's fine-tuning
Reported: top-1 at probe sizes 7, 10, 14 and 28 (Gaussian downsample, bilinear back
to 28), total training seconds per scheme, and the step-time ratios of one run:
distillation epoch / student-only epoch, with and without the teacher cache.
Writes bench/results/kdim_fmnist.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PROBES = (7, 10, 14, 28)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--teacher_epochs", type=int, default=4)
    p.add_argument("--max_train_examples", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="saved_models/bench")
    args = p.parse_args(argv)

    import keras

    from lrface_tf.data import DegradationSpec, load_fashion_mnist, paired_dataset
    from lrface_tf.data.pipeline import single_view_dataset
    from lrface_tf.data.teacher_cache import load_or_build
    from lrface_tf.eval import classification_accuracy
    from lrface_tf.export import save_keras, write_json, write_text
    from lrface_tf.methods import MethodConfig, method_terms
    from lrface_tf.models import Distiller, build_recognizer, task_loss_for
    from lrface_tf.training import compile_and_fit

    (x, y), (xs, ys) = load_fashion_mnist()
    x, y = x[: args.max_train_examples, ..., None], y[: args.max_train_examples]
    xs = xs[..., None]
    bs, steps = 128, len(y) // 128
    aug_spec = DegradationSpec(kernel="gaussian", sizes=(7, 10, 14), probability=0.4,
                               output_size=28)  # fmt: skip
    config = MethodConfig(kd_weight=0.5, kd_temperature=4.0, mmd_weight=1.0)

    def net(name):
        return build_recognizer("resnet8", 28, 10, channels=1, embedding_dim=64, name=name)

    def fit(model, teacher, terms, spec, view="lr", cache=None, epochs=args.epochs):
        ds = paired_dataset(x, y, spec=spec, batch_size=bs, seed=args.seed, augment="flip",
                            repeat=True, teacher_cache=cache)  # fmt: skip
        d = Distiller(model, teacher, terms, task_loss=task_loss_for("softmax"),
                      task_weight=1.0, student_view=view)  # fmt: skip
        hist, secs = compile_and_fit(d, ds, epochs=epochs, steps_per_epoch=steps, verbose=2)
        return hist, secs

    def probes(model):
        out = {}
        for size in PROBES:
            spec = DegradationSpec(kernel="gaussian", sizes=(size,),
                                   output_size=28 if size != 28 else None)  # fmt: skip
            ev = single_view_dataset(xs, ys, spec=spec, batch_size=500)
            out[size] = round(100 * classification_accuracy(model, ev)["top1"], 2)
        return out

    # The teacher (shared with bench.fmnist_7px; trained with flip+crop on HR).
    os.makedirs(args.cache, exist_ok=True)
    t_path = os.path.join(args.cache, f"teacher28_e{args.teacher_epochs}_n{len(y)}.keras")
    if not os.path.exists(t_path):
        sys.exit(f"error: {t_path} missing; run python -m bench.fmnist_7px first (it trains it)")
    teacher = keras.saving.load_model(t_path, compile=False)
    teacher.trainable = False
    rows = [{"scheme": "teacher (HR-trained)", "train_seconds": None, **_pk(probes(teacher))}]

    keras.utils.set_random_seed(args.seed)
    alone = net("student")
    h_alone, s_alone = fit(alone, None, {}, aug_spec)
    rows.append({"scheme": "student_alone", "train_seconds": round(s_alone, 1),
                 **_pk(probes(alone))})  # fmt: skip

    t0 = time.perf_counter()
    cache, status = load_or_build(os.path.join(args.cache, "kdim_teacher_cache.npz"), teacher, x,
                                  ("none", "flip"), progress=False)  # fmt: skip
    cache_seconds = time.perf_counter() - t0
    timings = {"cache_build_seconds": round(cache_seconds, 1), "cache_status": status}
    for method in ("kdim_mmd", "kdim_l2"):
        keras.utils.set_random_seed(args.seed)
        student = net("student")
        hist, secs = fit(student, teacher, method_terms(method, config), aug_spec, cache=cache)
        rows.append({"scheme": method, "train_seconds": round(secs + cache_seconds, 1),
                     **_pk(probes(student))})  # fmt: skip
        if method == "kdim_mmd":
            timings["epoch_seconds_cached"] = hist["epoch_seconds"]

    # The same KD_im + MK-MMD run without the cache, for the epoch-time comparison.
    keras.utils.set_random_seed(args.seed)
    hist_nc, secs_nc = fit(net("student"), teacher, method_terms("kdim_mmd", config), aug_spec,
                           epochs=1)  # fmt: skip
    timings["epoch_seconds_uncached"] = hist_nc["epoch_seconds"]
    timings["epoch_seconds_student_only"] = h_alone["epoch_seconds"]

    # Ratios from epochs after the first (the first includes tracing).
    def steady(seconds):
        return float(np.median(seconds[1:] or seconds))

    alone_epoch = steady(h_alone["epoch_seconds"])
    cached_epoch = steady(timings["epoch_seconds_cached"])
    timings["ratio_distill_cached_over_student_only"] = round(cached_epoch / alone_epoch, 3)
    timings["ratio_distill_uncached_over_student_only"] = round(
        hist_nc["epoch_seconds"][0] / h_alone["epoch_seconds"][0], 3
    )

    # Two-step (Fig. 1A): fine-tune a copy of the teacher on LR-augmented data, then distil.
    keras.utils.set_random_seed(args.seed)
    tuned = net("teacher_tuned")
    tuned.set_weights(teacher.get_weights())
    _, s_tune = fit(tuned, None, {}, aug_spec)
    tuned.trainable = False
    keras.utils.set_random_seed(args.seed)
    student = net("student")
    _, s_two = fit(student, tuned, method_terms("kdim_mmd", config), aug_spec)
    rows.append({"scheme": "two_step (teacher fine-tuned, then KD + MK-MMD)",
                 "train_seconds": round(s_tune + s_two, 1), **_pk(probes(student))})  # fmt: skip
    rows.append({"scheme": "teacher fine-tuned on LR-augmented data",
                 "train_seconds": round(s_tune, 1), **_pk(probes(tuned))})  # fmt: skip
    save_keras(student, os.path.join(args.cache, "kdim_two_step_student.keras"))

    command = "python -m bench.kdim_fmnist " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(os.path.join(RESULTS, "kdim_fmnist.json"), {
        "rows": rows, "timings": timings, "command": command.strip(),
        "date": datetime.date.today().isoformat(), "settings": vars(args),
    })  # fmt: skip
    head = "| scheme | " + " | ".join(f"top-1 @{p}px" for p in PROBES) + " | train seconds |"
    lines = [f"Command: `{command.strip()}` ({len(y):,} training images, seed {args.seed}, "
             f"{args.epochs} epochs)", "", head, "|---" * (len(PROBES) + 2) + "|"]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{r[f'top1_{p}']:.2f}" for p in PROBES)
        secs = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['scheme']} | {cells} | {secs} |")
    lines += ["", "Timings (one run): " + ", ".join(f"{k} = {v}" for k, v in timings.items())]
    write_text(os.path.join(RESULTS, "kdim_fmnist.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def _pk(probe_accs):
    return {f"top1_{p}": a for p, a in probe_accs.items()}


if __name__ == "__main__":
    main()
