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
accuracy_vs_size.png into --output_dir; with --tsne_examples (classification or
identification) a t-SNE map per model, tsne_<model>.png, with its leave-one-out 5-NN
accuracy. The protocol (kernel, upsampling,
sides, flip fusion, K-fold thresholds per condition) is recorded with every row.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from apps import runner
from apps.flag_groups import data, output, resolution

FLAGS = flags.FLAGS

flags.DEFINE_list("models", [], "Models (.keras or .tflite) to evaluate.")
flags.DEFINE_list("probe_sizes", ["full"], "Probe sizes (ints or 'full').")
flags.DEFINE_string("pairs", None, "LFW-format pairs file: verification instead of classification.")
flags.DEFINE_string("image_root", None, "Image root for --pairs (root/<person>/<person>_0001.jpg).")
flags.DEFINE_string("image_ext", ".jpg", "Image file extension for --pairs.")
flags.DEFINE_integer("image_size", 112, "Size the pair images are loaded at (the aligned crop).")
flags.DEFINE_list(
    "sides",
    ["probe"],
    "Degraded side(s): probe (HR gallery vs LR probe), both, cross (gallery embedded at HR by "
    "--gallery_model, probe by the model at LR).",
)
flags.DEFINE_string(
    "gallery_model", None, "Cross-model protocol: the model that embeds the HR gallery (teacher)."
)
flags.DEFINE_bool("flip_fusion", False, "Add the embedding of the mirrored image (reported).")
flags.DEFINE_string(
    "histogram_size",
    "",
    "Verification: the probe size (one of --probe_sizes, or 'full') of the ROC curves and "
    "the same/different-person similarity histograms (CRRCD Fig. 5); default the smallest.",
)
flags.DEFINE_string(
    "identification_root",
    None,
    "Identity folder for identification: per person the first image is the HR gallery, "
    "the others are LR probes (rank-1/5, CMC); plus the linear-probe protocol.",
)
flags.DEFINE_list(
    "identification_people_from",
    [],
    "With --identification_root: only the people named in these LFW-format pairs files "
    "take part (e.g. the people a recipe-selection run held out of training).",
)
flags.DEFINE_integer("linear_probe_epochs", 100, "Epochs of the linear-probe softmax (0: skip).")
flags.DEFINE_integer(
    "tsne_examples",
    0,
    "t-SNE map of each model's embeddings at the smallest probe size (CRRCD Fig. 4) with "
    "the leave-one-out 5-NN accuracy: this many test images (classification, balanced "
    "over classes) or the images of the people with the most images (--identification_root, "
    "up to 10 people); 0: skip. Needs scikit-learn.",
)
flags.DEFINE_integer("seed", 0, "Seed of the linear probe and the t-SNE map.")

GROUPS = (data, output, resolution)


def _load(path):
    import lrface_tf.layers  # noqa: F401  (custom objects)
    import lrface_tf.losses  # noqa: F401
    from lrface_tf.experiment import load_keras_file
    from lrface_tf.export import TFLiteModel

    if not os.path.exists(path):
        raise FileNotFoundError(f"model {path} does not exist")
    if path.endswith(".tflite"):
        return TFLiteModel(path)
    return load_keras_file(path)


def _label(path):
    """The model's file name, with as many parent folders as it takes to tell it from the
    other --models ("feature_r18_seed0_student.keras" beside "feature_mfn_seed0_..."):
    names its pictures and table rows."""

    def parts(p):
        return os.path.normpath(os.path.abspath(p)).split(os.sep)

    mine = parts(path)
    others = [parts(p) for p in FLAGS.models if os.path.abspath(p) != os.path.abspath(path)]
    for depth in range(1, len(mine) + 1):
        if all(o[-depth:] != mine[-depth:] for o in others):
            return "_".join(mine[-depth:])
    return "_".join(mine)


def _sizes():
    return [None if p == "full" else int(p) for p in FLAGS.probe_sizes]


def _histogram_size():
    """The probe size of the ROC curves and similarity histograms (None: full)."""
    if not FLAGS.histogram_size:
        return min((s for s in _sizes() if s), default=None)
    given = FLAGS.histogram_size
    size = None if given == "full" else int(given) if given.isdigit() else -1
    if size not in _sizes():
        raise ValueError(
            f"--histogram_size={given} is not one of --probe_sizes "
            f"({','.join(FLAGS.probe_sizes)}); add it there or leave it out"
        )
    return size


def _tsne(models, images, labels, names, out):
    """Per model: embeddings of `images` (uint8) at the smallest probe size, a t-SNE
    picture `tsne_<model>.png` and the leave-one-out 5-NN accuracy; rows and md lines."""
    from lrface_tf.eval import extract_embeddings
    from lrface_tf.eval.embeddings import embedding_map, knn_accuracy
    from lrface_tf.eval.pairs import model_input_size, prepare
    from lrface_tf.eval.plots import plot_embedding_map

    probe = min((p for p in _sizes() if p), default=None)
    os.makedirs(out, exist_ok=True)
    rows = []
    md = ["", "| t-SNE map | probe | images | classes | 5-NN accuracy (leave-one-out, cosine) |"]
    md.append("|---|---|---|---|---|")
    for path, model in models.items():
        size = model_input_size(model)
        x = prepare(images, size, probe, FLAGS.degrade_kernel, FLAGS.upsample_kernel)
        e = extract_embeddings(model, x, progress=False)
        knn = knn_accuracy(e, labels)
        name = _label(path)
        png = os.path.join(out, f"tsne_{name}.png")
        title = f"{name} at {probe or 'full'} px: 5-NN {100 * knn:.1f}%"
        plot_embedding_map(embedding_map(e, FLAGS.seed), labels, names, png, title)
        rows.append(
            {
                "model": path,
                "probe_size": probe or images.shape[1],
                "images": len(labels),
                "classes": len(set(labels.tolist())),
                "knn5_accuracy": knn,
                "picture": os.path.basename(png),
            }
        )
        md.append(
            f"| {name} | {probe or 'full'} | {len(labels)} | {rows[-1]['classes']} | "
            f"{100 * knn:.2f} |"
        )
    return rows, md


def _balanced(labels, total):
    """Indices of the first `total // classes` examples of every class."""
    classes = np.unique(labels)
    per = max(1, total // len(classes))
    return np.concatenate([np.flatnonzero(labels == c)[:per] for c in classes])


def classification(models, out):
    from lrface_tf.data.degrade import DegradationSpec
    from lrface_tf.data.sources import load_training_data
    from lrface_tf.experiment import test_accuracy

    loaded = load_training_data(data.config(FLAGS.teacher_size, FLAGS.seed))
    test = loaded.test
    if test is None:
        raise ValueError(f"--data={FLAGS.data} has no labelled test split; pass --pairs")
    x, y = test
    rows = []
    for path, model in models.items():
        in_size = model.input_shape[1]
        for p in _sizes():
            probe = x.shape[1] if p is None else p
            size = min(probe, in_size)
            spec = DegradationSpec(
                FLAGS.degrade_kernel,
                (size,),
                output_size=in_size if in_size != size else None,
                upsample_kernel=FLAGS.upsample_kernel,
            )
            acc = test_accuracy(model, (x, y), spec)
            rows.append(
                {
                    "model": path,
                    "input_size": in_size,
                    "probe_size": probe,
                    "top1": acc["top1"],
                    "top5": acc["top5"],
                    "n": acc["n"],
                    "kernel": FLAGS.degrade_kernel,
                    "upsample_kernel": FLAGS.upsample_kernel,
                }
            )
    md = ["| model | input | probe | top-1 | top-5 |", "|---|---|---|---|---|"]
    md += [
        f"| {r['model']} | {r['input_size']} | {r['probe_size']} | "
        f"{100 * r['top1']:.2f} | {100 * r['top5']:.2f} |"
        for r in rows
    ]
    extra = {}
    if FLAGS.tsne_examples:
        y = np.asarray(y)
        pick = _balanced(y, FLAGS.tsne_examples)
        names = list(loaded.class_names)
        extra["tsne"], lines = _tsne(models, np.asarray(x)[pick], y[pick], names, out)
        md += lines
    return rows, md, extra


def verification(models, out):
    from lrface_tf.eval import evaluate_pairs, load_pair_images
    from lrface_tf.eval.plots import plot_accuracy_vs_size, plot_roc, plot_similarity_histograms

    if not FLAGS.image_root:
        raise ValueError("--pairs needs --image_root=<folder of person folders>")
    bad = [s for s in FLAGS.sides if s not in ("probe", "both", "cross")]
    if bad:
        raise ValueError(f"unknown sides {bad}: use probe, both, cross")
    gallery = None
    if "cross" in FLAGS.sides:
        if not FLAGS.gallery_model:
            raise ValueError("--sides=cross needs --gallery_model=<the HR gallery model>")
        gallery = _load(FLAGS.gallery_model)
    pairs = load_pair_images(FLAGS.pairs, FLAGS.image_root, FLAGS.image_size, FLAGS.image_ext)
    os.makedirs(out, exist_ok=True)
    rows, curves, md = [], {}, []
    shown = _histogram_size()
    for path, model in models.items():
        name = _label(path)
        cache = {}
        md += [
            f"### {name}",
            "",
            "| probe | " + " | ".join(FLAGS.sides) + " |",
            "|---" * (len(FLAGS.sides) + 1) + "|",
        ]
        for p in _sizes():
            cells = []
            for side in FLAGS.sides:
                r = evaluate_pairs(
                    model,
                    pairs,
                    p,
                    side,
                    FLAGS.degrade_kernel,
                    FLAGS.upsample_kernel,
                    FLAGS.flip_fusion,
                    cache=cache,
                    gallery_model=gallery,
                )
                scores, roc = r.pop("scores"), r.pop("roc")
                rows.append({"model": path, **r})
                cell = f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}"
                if "teacher_agreement" in r:
                    cell += f" (teacher cosine {r['teacher_agreement']:.3f})"
                cells.append(cell)
                if p == shown and side == "probe":
                    curves[f"{name} @{p or 'full'}px probe"] = roc
                    plot_similarity_histograms(
                        scores,
                        pairs["same"],
                        os.path.join(out, f"similarity_{name}.png"),
                        title=f"{name}, {p or 'full'}px probe",
                    )
            md.append(f"| {p or 'full'} | " + " | ".join(cells) + " |")
        md.append("")
    if curves:
        plot_roc(curves, os.path.join(out, "roc.png"))
    series = {}
    for r in rows:
        series.setdefault(f"{_label(r['model'])} ({r['side']})", []).append(
            (r["probe_size"], 100 * r["accuracy"])
        )
    plot_accuracy_vs_size(series, os.path.join(out, "accuracy_vs_size.png"))
    header = [
        f"Pairs: {FLAGS.pairs}; kernel {FLAGS.degrade_kernel}, upsampling "
        f"{FLAGS.upsample_kernel}, flip fusion {FLAGS.flip_fusion}; accuracy mean +- std "
        "over folds, thresholds fit on the other folds per condition.",
        "",
    ]
    return rows, header + md, {}


def identification(models, out):
    """Rank-k / CMC of LR probes against a one-image HR gallery, and the linear probe.

    People with >= 2 images take part. Gallery: each person's first image at full
    resolution. Probes: the others, degraded to each probe size. Linear probe
    (the UCCS-style protocol): each person's images alternate into a training and
    a test split (both at the probe size); a softmax on the frozen, normalised
    embeddings is trained on the first and scored on the second.
    """
    from lrface_tf.data.datasets import identity_folder
    from lrface_tf.eval import extract_embeddings, linear_probe
    from lrface_tf.eval.identification import cmc_curve
    from lrface_tf.eval.pairs import load_images, model_input_size, prepare
    from lrface_tf.eval.plots import plot_cmc

    exclude = ()
    if FLAGS.identification_people_from:
        from lrface_tf.data.sources import held_out_people

        keep = held_out_people(FLAGS.identification_people_from)
        root = FLAGS.identification_root
        present = [
            p
            for p in os.listdir(root)
            if not p.startswith(".") and os.path.isdir(os.path.join(root, p))
        ]
        exclude = [p for p in present if p not in keep]
        if len(exclude) == len(present):
            raise ValueError(
                f"{FLAGS.identification_root}: none of the people of "
                f"{','.join(FLAGS.identification_people_from)} has a folder there; point "
                "--identification_people_from at pairs of the same data set"
            )
    folder = identity_folder(
        FLAGS.identification_root, min_images=2, on_error="skip", exclude_people=exclude
    )
    reasons = folder.report.counts_by_reason()
    if reasons:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        print(f"skipped {sum(reasons.values())} files ({counts}); listed in results.json")
    if folder.num_classes < 2:
        raise ValueError(f"{FLAGS.identification_root}: needs >= 2 people with >= 2 images each")
    images = load_images(folder.paths, FLAGS.image_size)
    labels = np.asarray(folder.labels)
    first = np.r_[True, labels[1:] != labels[:-1]]  # each person's first image (sorted)
    rank_in_person = np.arange(len(labels)) - np.maximum.accumulate(
        np.where(first, np.arange(len(labels)), 0)
    )
    train = rank_in_person % 2 == 0
    os.makedirs(out, exist_ok=True)
    rows, curves = [], {}
    md = [
        f"Identification on {FLAGS.identification_root}: {folder.num_classes} people, "
        f"{int(first.sum())} gallery images (HR), {int((~first).sum())} probes; kernel "
        f"{FLAGS.degrade_kernel}, upsampling {FLAGS.upsample_kernel}.",
        "",
        "| model | probe | rank-1 | rank-5 | linear probe top-1 | top-5 |",
        "|---|---|---|---|---|---|",
    ]

    def embed(model, x, size, probe):
        x = prepare(x, size, probe, FLAGS.degrade_kernel, FLAGS.upsample_kernel)
        return extract_embeddings(model, x, progress=False)

    for path, model in models.items():
        size = model_input_size(model)
        gallery = embed(model, images[first], size, None)
        for p in _sizes():
            probes = embed(model, images, size, p)
            cmc = cmc_curve(gallery, labels[first], probes[~first], labels[~first])
            row = {
                "model": path,
                "probe_size": p or FLAGS.image_size,
                "rank1": float(cmc[0]),
                "rank5": float(cmc[min(5, len(cmc)) - 1]),
                "people": folder.num_classes,
                "probes": int((~first).sum()),
                "kernel": FLAGS.degrade_kernel,
                "upsample_kernel": FLAGS.upsample_kernel,
            }
            if FLAGS.linear_probe_epochs:
                lp = linear_probe(
                    probes[train],
                    labels[train],
                    probes[~train],
                    labels[~train],
                    epochs=FLAGS.linear_probe_epochs,
                    seed=FLAGS.seed,
                )
                row.update(linear_probe_top1=lp["top1"], linear_probe_top5=lp["top5"])
            rows.append(row)
            curves[f"{_label(path)} @{p or 'full'}"] = cmc
            lp = [row.get(f"linear_probe_top{k}") for k in (1, 5)]
            lp_cells = " | ".join("-" if v is None else f"{100 * v:.2f}" for v in lp)
            md.append(
                f"| {_label(path)} | {p or 'full'} | {100 * row['rank1']:.2f} | "
                f"{100 * row['rank5']:.2f} | {lp_cells} |"
            )
    plot_cmc(curves, os.path.join(out, "cmc.png"))
    extra = {"data": folder.report.to_dict()}
    if FLAGS.identification_people_from:
        extra["people_from"] = {
            "pairs": list(FLAGS.identification_people_from),
            "people_left_out": len(exclude),
        }
    if FLAGS.tsne_examples:
        counts = np.bincount(labels)
        people, total = [], 0
        for c in np.argsort(-counts, kind="stable")[:10]:
            if people and total + counts[c] > FLAGS.tsne_examples:
                break
            people.append(c)
            total += counts[c]
        pick = np.flatnonzero(np.isin(labels, people))
        names = list(folder.class_names)
        extra["tsne"], lines = _tsne(models, images[pick], labels[pick], names, out)
        md += lines
    return rows, md, extra


def main(argv):
    from lrface_tf.export.atomic import write_json, write_text
    from lrface_tf.runs import RunFolder, write_record

    if not FLAGS.models:
        raise ValueError("pass --models=<a.keras>[,<b.tflite>...]")
    if FLAGS.pairs and FLAGS.identification_root:
        raise ValueError("pass either --pairs (verification) or --identification_root, not both")
    if FLAGS.tsne_examples < 0 or FLAGS.tsne_examples == 1:
        raise ValueError(f"--tsne_examples must be 0 (no map) or >= 2, got {FLAGS.tsne_examples}")
    if FLAGS.pairs:
        _histogram_size()  # a bad --histogram_size stops here, before anything is loaded
    if FLAGS.tsne_examples and FLAGS.pairs:
        raise ValueError(
            "--tsne_examples needs labelled images: use it with a classification data set or "
            "--identification_root, not --pairs"
        )
    models = {path: _load(path) for path in FLAGS.models}
    out = output.folder("evaluate")
    with RunFolder(out):  # the folder is writable and ours before any work is done
        if FLAGS.pairs:
            rows, md, extra = verification(models, out)
        elif FLAGS.identification_root:
            rows, md, extra = identification(models, out)
        else:
            rows, md, extra = classification(models, out)
        write_json(os.path.join(out, "results.json"), {"rows": rows, **extra})
        write_text(os.path.join(out, "results.md"), "\n".join(md) + "\n")
        write_record(
            out,
            metrics={"results": "results.json"},
            flags_text=runner.flags_text(),
            command=runner.command(),
        )
    print("\n".join(md))


if __name__ == "__main__":
    runner.run(main, adopt=GROUPS)
