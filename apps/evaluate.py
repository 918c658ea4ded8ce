"""Evaluate a teacher and students side by side, on the same data and degradation.

Classification (objects, a labelled test split):
    python -m apps.evaluate --flagfile=configs/base.cfg \
        --models=saved_models/fmnist_teacher/teacher.keras,saved_models/fmnist_kd/student.keras \
        --probe_sizes=7,14,full

Face verification on an LFW-format pairs file, swept over probe sizes and sides:
    python -m apps.evaluate --pairs=../shared/data/lfw/pairsDevTest.txt \
        --image_root=<aligned LFW> --models=teacher.keras,student.keras,student_int8.tflite \
        --probe_sizes=8,12,16,20,24,32,full --sides=probe,both

Models may be .keras files or .tflite files (run with LiteRT). Writes results.json,
results.md and (verification) roc.png, similarity_<model>.png and
accuracy_vs_size.png into --output_dir. The protocol (kernel, upsampling,
sides, flip fusion, K-fold thresholds per condition) is recorded with every row.
"""

from __future__ import annotations

import os

from absl import flags

from apps import common
from apps.common import FLAGS

flags.DEFINE_list("models", [], "Models (.keras or .tflite) to evaluate.")
flags.DEFINE_list("probe_sizes", ["full"], "Probe sizes (ints or 'full').")
flags.DEFINE_string("pairs", None, "LFW-format pairs file: verification instead of classification.")
flags.DEFINE_string("image_root", None, "Image root for --pairs (root/<person>/<person>_0001.jpg).")
flags.DEFINE_string("image_ext", ".jpg", "Image file extension for --pairs.")
flags.DEFINE_integer("image_size", 112, "Size the pair images are loaded at (the aligned crop).")
flags.DEFINE_list("sides", ["probe"], "Degraded side(s): probe (HR gallery vs LR probe), both.")
flags.DEFINE_bool("flip_fusion", False, "Add the embedding of the mirrored image (reported).")


def _load(path):
    import keras

    import lrface_tf.layers  # noqa: F401  (custom objects)
    import lrface_tf.losses  # noqa: F401
    from lrface_tf.export import TFLiteModel

    if not os.path.exists(path):
        raise FileNotFoundError(f"model {path} does not exist")
    if path.endswith(".tflite"):
        return TFLiteModel(path)
    return keras.saving.load_model(path, compile=False)


def _sizes():
    return [None if p == "full" else int(p) for p in FLAGS.probe_sizes]


def classification(models, out):
    data = common.load_data()
    if data["test"] is None:
        raise ValueError(f"--data={FLAGS.data} has no labelled test split; pass --pairs")
    x, y = data["test"]
    rows = []
    for path, model in models.items():
        in_size = model.input_shape[1]
        for p in _sizes():
            probe = x.shape[1] if p is None else p
            acc = common.evaluate_on_test(model, x, y, min(probe, in_size), in_size)
            rows.append({
                "model": path, "input_size": in_size, "probe_size": probe,
                "top1": acc["top1"], "top5": acc["top5"], "n": acc["n"],
                "kernel": FLAGS.degrade_kernel, "upsample_kernel": FLAGS.upsample_kernel,
            })  # fmt: skip
    md = ["| model | input | probe | top-1 | top-5 |", "|---|---|---|---|---|"]
    md += [
        f"| {r['model']} | {r['input_size']} | {r['probe_size']} | "
        f"{100 * r['top1']:.2f} | {100 * r['top5']:.2f} |"
        for r in rows
    ]
    return rows, md


def verification(models, out):
    from lrface_tf.eval import evaluate_pairs, load_pair_images
    from lrface_tf.eval.plots import plot_accuracy_vs_size, plot_roc, plot_similarity_histograms

    if not FLAGS.image_root:
        raise ValueError("--pairs needs --image_root=<folder of person folders>")
    bad = [s for s in FLAGS.sides if s not in ("probe", "both")]
    if bad:
        raise ValueError(f"unknown sides {bad}: use probe, both")
    data = load_pair_images(FLAGS.pairs, FLAGS.image_root, FLAGS.image_size, FLAGS.image_ext)
    os.makedirs(out, exist_ok=True)
    rows, curves, md = [], {}, []
    for path, model in models.items():
        name = os.path.basename(path)
        cache = {}
        md += [f"### {name}", "", "| probe | " + " | ".join(FLAGS.sides) + " |",
               "|---" * (len(FLAGS.sides) + 1) + "|"]  # fmt: skip
        for p in _sizes():
            cells = []
            for side in FLAGS.sides:
                r = evaluate_pairs(model, data, p, side, FLAGS.degrade_kernel,
                                   FLAGS.upsample_kernel, FLAGS.flip_fusion,
                                   cache=cache)  # fmt: skip
                scores, roc = r.pop("scores"), r.pop("roc")
                rows.append({"model": path, **r})
                cells.append(f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}")
                if p == min((s for s in _sizes() if s), default=None) and side == "probe":
                    curves[f"{name} @{p}px probe"] = roc
                    plot_similarity_histograms(
                        scores, data["same"], os.path.join(out, f"similarity_{name}.png"),
                        title=f"{name}, {p}px probe",
                    )  # fmt: skip
            md.append(f"| {p or 'full'} | " + " | ".join(cells) + " |")
        md.append("")
    if curves:
        plot_roc(curves, os.path.join(out, "roc.png"))
    series = {}
    for r in rows:
        series.setdefault(f"{os.path.basename(r['model'])} ({r['side']})", []).append(
            (r["probe_size"], 100 * r["accuracy"])
        )
    plot_accuracy_vs_size(series, os.path.join(out, "accuracy_vs_size.png"))
    header = [f"Pairs: {FLAGS.pairs}; kernel {FLAGS.degrade_kernel}, upsampling "
              f"{FLAGS.upsample_kernel}, flip fusion {FLAGS.flip_fusion}; accuracy mean +- std "
              "over folds, thresholds fit on the other folds per condition.", ""]  # fmt: skip
    return rows, header + md


def main(argv):
    from lrface_tf.export.atomic import write_json, write_text

    if not FLAGS.models:
        raise ValueError("pass --models=<a.keras>[,<b.tflite>...]")
    models = {path: _load(path) for path in FLAGS.models}
    out = common.output_dir("evaluate")
    rows, md = verification(models, out) if FLAGS.pairs else classification(models, out)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), {"rows": rows})
    write_text(os.path.join(out, "results.md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    common.run(main)
