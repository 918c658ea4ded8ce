"""Evaluate one or more models side by side at several probe sizes.

    python -m apps.evaluate --models=saved_models/teacher/teacher.keras,\
        saved_models/distill_kd/student.keras --probe_sizes=7,14,28

Classification top-1/top-5 on the test split, each probe degraded to the probe
size and resized to the model's input size. Writes results.json and results.md
in --output_dir. (Face verification / identification: issue 6.)
"""

from __future__ import annotations

import os

from absl import flags

from apps import common
from apps.common import FLAGS

flags.DEFINE_list("models", [], "Models (.keras) to evaluate.")
flags.DEFINE_list("probe_sizes", ["full"], "Probe sizes (ints or 'full').")


def main(argv):
    import keras

    import lrface_tf.layers  # noqa: F401
    from lrface_tf.export.atomic import write_json, write_text

    if not FLAGS.models:
        raise ValueError("pass --models=<a.keras>[,<b.keras>...]")
    for path in FLAGS.models:
        if not os.path.exists(path):
            raise FileNotFoundError(f"model {path} does not exist")
    data = common.load_data()
    if data["test"] is None:
        raise ValueError(f"--data={FLAGS.data} has no labelled test split to classify")
    x, y = data["test"]
    full = x.shape[1]
    rows = []
    for path in FLAGS.models:
        model = keras.saving.load_model(path, compile=False)
        in_size = model.input_shape[1]
        for p in FLAGS.probe_sizes:
            probe = full if p == "full" else int(p)
            seen = min(probe, in_size)
            acc = common.evaluate_on_test(model, x, y, seen, in_size)
            rows.append({
                "model": path, "input_size": in_size, "probe_size": probe,
                "top1": acc["top1"], "top5": acc["top5"], "n": acc["n"],
                "kernel": FLAGS.degrade_kernel, "upsample_kernel": FLAGS.upsample_kernel,
            })  # fmt: skip
    out = common.output_dir("evaluate")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), {"rows": rows})
    md = ["| model | input | probe | top-1 | top-5 |", "|---|---|---|---|---|"]
    md += [
        f"| {r['model']} | {r['input_size']} | {r['probe_size']} | "
        f"{100 * r['top1']:.2f} | {100 * r['top5']:.2f} |"
        for r in rows
    ]
    write_text(os.path.join(out, "results.md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    common.run(main)
