"""LR-LFW: the SFace teacher and students of every method on LFW pairsDevTest at 8-32 px.

    python -m bench.lfw_devtest                                   # every row, seed 0
    python -m bench.lfw_devtest --rows=kd,horkd --seeds=0,1,2 --update_headers
    python -m bench.lfw_devtest --name=lfw_devtest_val --configs=configs/lfw/val \
        --runs=saved_models/runs/lfw_val --rows=teacher,feature_r18_100

Needs the aligned LFW and the SFace teacher:
    python -m apps.align --src=../shared/data/lfw/lfw-deepfunneled --dst=saved_models/lfw_aligned
    python -m apps.build_teacher --name=sface --output=saved_models/sface/teacher.keras

Every row is a flagfile of configs/lfw/ (students train only on people who are not in
pairsDevTest; see configs/lfw/base.cfg) run by apps.distill; then, for every model:
apps.evaluate on pairsDevTest (1,000 pairs, 10 balanced folds, thresholds fit on the
other 9 folds per condition) at 8/12/16/20/24/32/full with three protocols:
"probe" (HR gallery vs LR probe, one model), "both" (both images LR) and "cross"
(the gallery embedded at HR by the teacher, the probe at LR by the student); and
apps.export for the one-thread LiteRT latency of the fp32 and int8 models, and the int8
models' agreement with Keras (mean cosine; full int8 and int8 with a float32 head).
The "teacher" row evaluates SFace itself (no training). Rows in
bench/results/<name>.json: one per (row, seed, probe size, protocol), with fold
accuracies, TAR at FAR 1e-3, params, latency and training seconds; the markdown
table has mean +- std over seeds and a paired per-fold comparison with the teacher. Rows
(and seeds) not rerun are kept from the previous results file while their flagfile is
unchanged.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bench.runner import (
    ROOT,
    Row,
    crrcd_terms,
    export_face_model,
    flags_sha1,
    fmt,
    mean_std,
    merge_previous,
    read_json,
    run_app,
    run_rows,
    update_header,
    write_results,
)

TEACHER = "saved_models/sface/teacher.keras"
PAIRS = "../shared/data/lfw/pairsDevTest.txt"
ALIGNED = "saved_models/lfw_aligned"
SIZES = ("8", "12", "16", "20", "24", "32", "full")
INT8_FORMS = ("int8", "int8_float_head")  # each one's mean cosine to Keras is recorded
QUANTIZATIONS = ",".join(("float32", *INT8_FORMS))
ROWS = [
    "student_lr",
    "feature",
    "kd",
    "kdim_l2",
    "kdim_mmd",
    "horkd",
    "horkd_two_stage",
    "crrcd",
    "feature_r18_100_mix",
    "feature_r18_100_mix_wd",
    "sface_lr16",
    "sface_lr",  # before the row whose --lr_teacher it is
    "sface_lr_3ep",
    "sface_lr_vmean",
    "sface_lr_3ep_vmean",
    "feature_r18_100_sfacemix_wd40",
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(["teacher", *ROWS]))
    p.add_argument("--seeds", default="0")
    p.add_argument("--configs", default="configs/lfw", help="folder of the row flagfiles")
    p.add_argument("--name", default="lfw_devtest")
    p.add_argument(
        "--runs",
        default=None,
        help="folder of the row runs (default saved_models/runs/<name>); "
        "--configs=configs/lfw/val --runs=saved_models/runs/lfw_val scores the recipe-selection "
        "runs as trained (their training held out the pairsDevTest people too)",
    )
    p.add_argument("--update_headers", action="store_true")
    args = p.parse_args(argv)
    names = args.rows.split(",")
    rows = [Row(n, f"{args.configs}/{n}.cfg") for n in names if n != "teacher"]
    missing = [r.name for r in rows if not os.path.exists(os.path.join(ROOT, r.flagfile))]
    if missing:
        p.error(f"no flagfile for rows {missing} in {args.configs}; name files there without .cfg")
    for path in (ALIGNED, TEACHER):
        if not os.path.exists(os.path.join(ROOT, path)):
            p.error(f"{path} does not exist (see --help for the command that makes it)")
    seeds = [int(s) for s in args.seeds.split(",")]
    own = f"saved_models/runs/{args.name}"  # the log and the teacher's evaluation
    runs = args.runs or own
    log = os.path.join(own, "log.txt")
    out, commands = [], []
    if "teacher" in names:
        commands += _evaluate_model(
            "teacher",
            0,
            TEACHER,
            os.path.join(own, "teacher"),
            log,
            out,
            {"params": None, "train_seconds": 0.0},
        )
    sha = {row.name: flags_sha1(row.flagfile) for row in rows}
    for row, seed, folder, cmd in run_rows(rows, seeds, runs, log):
        commands.append(cmd)
        m = read_json(os.path.join(folder, "metrics.json"))
        model = os.path.join(folder, "student.keras")
        commands += _evaluate_model(
            row.name, seed, model, folder, log, out, m, row.flagfile, sha[row.name]
        )
    out, commands = merge_previous(args.name, out, commands, sha, ["teacher"])
    _deltas(out)
    table = markdown(out)
    write_results(args.name, out, commands, table, protocol=__doc__.split("\n\n")[3])
    _plot(out, os.path.join(ROOT, "bench", "results", f"{args.name}_latency.png"))
    if args.update_headers:
        for row in rows:
            sel = _cells(out, row.name)
            if sel:
                update_header(row.flagfile, _header(sel, args.name))


def _evaluate_model(name, seed, model, folder, log, out, metrics, flagfile=None, flags=None):
    """apps.evaluate (3 protocols) and apps.export (latency) of one model; appends rows."""
    commands = []
    ev = os.path.join(folder, "eval_devtest")
    sides = "probe,both" if name == "teacher" else "probe,both,cross"
    if not os.path.exists(os.path.join(ROOT, ev, "results.json")):
        commands.append(
            run_app(
                "evaluate",
                [
                    f"--models={model}",
                    f"--pairs={PAIRS}",
                    f"--image_root={ALIGNED}",
                    "--probe_sizes=" + ",".join(SIZES),
                    f"--sides={sides}",
                    f"--gallery_model={TEACHER}",
                    "--histogram_size=16",  # CRRCD Fig. 5's histograms, at 16 px
                    f"--output_dir={ev}",
                ],
                log,
            )
        )
    latency_calls = 300 if "sface" not in name and name != "teacher" else 30
    parity, exported = export_face_model(
        model,
        folder,
        log,
        latency_calls=latency_calls,
        # the teacher's export only times it (its int8 is slower than fp32 here)
        quantizations="float32,int8" if name == "teacher" else QUANTIZATIONS,
    )
    commands += exported
    results = read_json(os.path.join(ev, "results.json"))["rows"]
    params = metrics.get("params") or _params(model)
    extra = {}  # fields only some exports or methods have
    if "int8_float_head" in parity:
        extra["latency_ms_int8_float_head"] = parity["int8_float_head"]["latency_ms"]
    extra.update(crrcd_terms(metrics.get("history", {})))
    for r in results:
        out.append(
            {
                "row": name,
                "seed": seed,
                "flagfile": flagfile,
                "run": folder,
                "flags_sha1": flags,
                "probe_size": r["probe_size"],
                "side": r["side"],
                "accuracy": r["accuracy"],
                "accuracy_std": r["accuracy_std"],
                "fold_accuracies": r["fold_accuracies"],
                "tar_at_far_1e-3": r["tar_at_far_1e-3"],
                "auc": r["auc"],
                "params": params,
                "latency_ms_fp32": parity["float32"]["latency_ms"],
                "latency_ms_int8": parity["int8"]["latency_ms"],
                **{
                    f"{q}_cosine": parity[q]["embedding"]["mean_cosine"]
                    for q in INT8_FORMS
                    if q in parity
                },
                **extra,
                "train_seconds": metrics.get("train_seconds", 0.0)
                + metrics.get("stage1", {}).get("train_seconds", 0.0),
                "input_size": r["input_size"],
            }
        )
    return commands


def _params(model):
    import keras

    import lrface_tf.layers  # noqa: F401

    return int(keras.saving.load_model(os.path.join(ROOT, model), compile=False).count_params())


def _deltas(rows):
    """Paired per-fold accuracy difference against the teacher under the same condition."""
    teacher = {
        (r["probe_size"], r["side"]): r["fold_accuracies"] for r in rows if r["row"] == "teacher"
    }
    for r in rows:
        ref = teacher.get((r["probe_size"], "probe" if r["side"] == "cross" else r["side"]))
        if ref is not None and r["row"] != "teacher":
            d = np.asarray(r["fold_accuracies"]) - np.asarray(ref)
            r["delta_vs_teacher"], r["delta_vs_teacher_std"] = float(d.mean()), float(d.std())


def _cells(rows, name):
    """{(size, side): [row of each seed]} of one table row."""
    cells = {}
    for r in rows:
        if r["row"] == name:
            size = (
                "full" if r["probe_size"] == 112 and r["side"] == "probe" else str(r["probe_size"])
            )
            cells.setdefault((size, r["side"]), []).append(r)
    return cells


def _acc(cells, size, side):
    sel = cells.get((size, side))
    return fmt([r["accuracy"] for r in sel]) if sel else ""


def _header(cells, name):
    seeds = ",".join(str(r["seed"]) for r in cells[("16", "probe")])
    return (
        f"LFW pairsDevTest @16 probe-only {_acc(cells, '16', 'probe')}, cross-model "
        f"{_acc(cells, '16', 'cross')}, both {_acc(cells, '16', 'both')}; @8 both "
        f"{_acc(cells, '8', 'both')}; full {_acc(cells, 'full', 'probe')} (seeds {seeds}; "
        f"python -m bench.lfw_devtest --name={name})"
    )


def markdown(rows):
    lines = [
        "LFW pairsDevTest, verification accuracy (%) mean +- std over seeds (each seed: the "
        "mean of 10 folds); probe = HR gallery vs LR probe, cross = teacher's HR gallery vs "
        "the student's LR probe, both = both LR.",
        "",
        "| row | flagfile | seeds | probe 8 / 12 / 16 / 20 | cross 16 | both 8 / 12 / 16 / 20 "
        "| full | both 16 vs teacher (paired folds) | TAR@FAR=1e-3 both 16 | params | TFLite ms "
        "fp32 / int8 | int8 cosine, full / float head | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in rows):
        c = _cells(rows, name)
        any_r = next(iter(c.values()))[0]
        b16 = c.get(("16", "both"), [])
        delta = ""
        if b16 and "delta_vs_teacher" in b16[0]:
            d = mean_std([100 * r["delta_vs_teacher"] for r in b16])
            delta = f"{d[0]:+.2f} (fold std {100 * b16[0]['delta_vs_teacher_std']:.2f})"
        tar = fmt([r["tar_at_far_1e-3"] for r in b16], digits=1) if b16 else ""
        probe = " / ".join(_acc(c, s, "probe").split(" +-")[0] for s in ("8", "12", "16", "20"))
        both = " / ".join(_acc(c, s, "both").split(" +-")[0] for s in ("8", "12", "16", "20"))
        seeds = len(c.get(("16", "probe"), []))
        sel = c[("16", "probe")]
        secs = mean_std([r["train_seconds"] for r in sel])[0]
        flagfile = f"`{any_r['flagfile']}`" if any_r["flagfile"] else "(SFace, evaluated only)"
        cosine = " / ".join(  # rows exported before the cosine was recorded lack it
            f"{mean_std([r[k] for r in sel])[0]:.3f}" if all(k in r for r in sel) else "-"
            for k in (f"{q}_cosine" for q in INT8_FORMS)
        )
        lines.append(
            f"| {name} | {flagfile} | {seeds} | {probe} | {_acc(c, '16', 'cross')} | {both} | "
            f"{_acc(c, 'full', 'probe')} | {delta} | {tar} | {any_r['params']:,} | "
            f"{any_r['latency_ms_fp32']:.2f} / {any_r['latency_ms_int8']:.2f} | {cosine} | "
            f"{secs:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows, path):
    """Accuracy at 16 px against fp32 TFLite latency, one point per row: probe-only (dots)
    and, for students, cross-model with the teacher's gallery (triangles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points, markers = [], []
    for i, name in enumerate(dict.fromkeys(r["row"] for r in rows)):
        cells = _cells(rows, name)
        sel = cells.get(("16", "probe"), [])
        if not sel:
            continue
        ms, colour = sel[0]["latency_ms_fp32"], plt.get_cmap("tab20")(i % 20)
        acc = mean_std([100 * r["accuracy"] for r in sel])[0]
        ax.scatter(ms, acc, color=colour, label="probe-only" if i == 0 else None)
        points.append((name, ms, acc))
        markers.append((ms, acc))
        cross = cells.get(("16", "cross"), [])
        if cross:
            c = mean_std([100 * r["accuracy"] for r in cross])[0]
            ax.scatter(ms, c, color=colour, marker="^")
            markers.append((ms, c))
    ax.scatter([], [], color="grey", marker="^", label="cross-model (teacher's HR gallery)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("TFLite fp32 ms per image (one LiteRT thread)")
    ax.set_ylabel("LFW pairsDevTest @16 px (%)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    place_labels(ax, points, markers)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def place_labels(ax, points, markers=(), fontsize=7):
    """Writes each (label, x, y) beside its point so that no label covers another or one of
    the markers at (x, y) in data units: the highest point is labelled first, and a label
    that would cover one moves down one line at a time, joined to its point by a thin line.
    Points in the right half of the axes are labelled on their left, so that labels stay
    inside the figure. Returns the labels."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    middle = (frame.x0 + frame.x1) / 2
    r = fontsize / 2  # a marker's half-width in pixels, about
    centres = [ax.transData.transform(m) for m in markers]
    placed = [Bbox([[cx - r, cy - r], [cx + r, cy + r]]) for cx, cy in centres]
    texts = []
    for name, x, y in sorted(points, key=lambda p: -p[2]):
        left = ax.transData.transform((x, y))[0] > middle
        for line in range(len(points) + 1):
            text = ax.annotate(
                name,
                (x, y),
                fontsize=fontsize,
                xytext=(-4 if left else 4, 3 - 1.2 * fontsize * line),
                textcoords="offset points",
                ha="right" if left else "left",
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"} if line else None,
            )
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)  # the words, not the line
            if not any(box.overlaps(other) for other in placed) or line == len(points):
                break
            text.remove()
        placed.append(box)
        texts.append(text)
    return texts


if __name__ == "__main__":
    main()
