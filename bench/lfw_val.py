"""Recipe selection for compact LR face students, on validation pairs (never pairsDevTest).

    python -m bench.lfw_val --rows=feature_r18,feature_mfn [--seeds=0] [--update_headers]

Every row is a flagfile of configs/lfw/val/: the training pool of configs/lfw/pool.cfg
without the people of pairsDevTest and pairsDevTrain, scored after training on
pairsDevTrain (2,200 pairs, 10 folds) at the student's size: probe-only (one model),
cross-model (the teacher's HR gallery vs the student's LR probe) and both sides LR.
Runs go through apps.distill; this collects each run's metrics.json into
bench/results/lfw_val.json and .md, keeping the rows (and seeds) it does not rerun, as long
as their flagfile is unchanged.
"""

from __future__ import annotations

import argparse
import glob
import os

from bench.runner import (
    ROOT,
    Row,
    crrcd_terms,
    flags_sha1,
    fmt,
    mean_std,
    merge_previous,
    read_json,
    run_rows,
    update_header,
    write_results,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = sorted(
        os.path.basename(f)[:-4]
        for f in glob.glob(os.path.join(ROOT, "configs", "lfw", "val", "*.cfg"))
        if not f.endswith("base.cfg") and not os.path.basename(f).startswith("eval_")
    )
    p.add_argument("--rows", default=",".join(known))
    p.add_argument("--seeds", default="0")
    p.add_argument("--update_headers", action="store_true")
    args = p.parse_args(argv)
    names = args.rows.split(",")
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"unknown rows {unknown}; use {', '.join(known)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [Row(n, f"configs/lfw/val/{n}.cfg") for n in names]
    sha = {row.name: flags_sha1(row.flagfile) for row in rows}
    out, commands = [], []
    runs = "saved_models/runs/lfw_val"
    for row, seed, folder, cmd in run_rows(rows, seeds, runs, os.path.join(runs, "log.txt")):
        commands.append(cmd)
        m = read_json(os.path.join(folder, "metrics.json"))
        record = {
            "row": row.name,
            "seed": seed,
            "flagfile": row.flagfile,
            "run": folder,
            "flags_sha1": sha[row.name],
            "params": m["params"],
            "train_seconds": m["train_seconds"],
            "epochs": len(m["history"]["loss"]),
        }
        for r in m["val"]["rows"]:
            key = "full" if r["side"] == "probe" and r["probe_size"] == 112 else r["side"]
            record[f"val_{key}"] = r["accuracy"]
            if key == "both":
                record["val_tar_at_far_1e-3_both"] = r["tar_at_far_1e-3"]
            if "teacher_agreement" in r:  # runs from before it was measured lack it
                record["val_teacher_agreement"] = r["teacher_agreement"]
        if "feature_l2" in m["history"]:  # 2 - 2 cos on the training views, last epoch
            record["train_teacher_agreement"] = 1.0 - m["history"]["feature_l2"][-1] / 2.0
        record.update(crrcd_terms(m["history"]))
        out.append(record)
    out, commands = merge_previous("lfw_val", out, commands, sha)
    table = markdown(out)
    write_results("lfw_val", out, commands, table)
    if args.update_headers:
        for row in rows:
            sel = [r for r in out if r["row"] == row.name]  # kept seeds and this run's
            cells = ", ".join(
                f"{k} {fmt([r[f'val_{k}'] for r in sel])}"
                for k in ("probe", "cross", "both", "full")
                if all(f"val_{k}" in r for r in sel)
            )
            update_header(
                row.flagfile,
                f"pairsDevTrain (validation) @16 {cells} (seeds "
                f"{','.join(str(r['seed']) for r in sel)}; python -m bench.lfw_val)",
            )


def agree(sel):
    """'held-out / training' teacher cosines of a row (blank where not measured)."""
    parts = []
    for k in ("val_teacher_agreement", "train_teacher_agreement"):
        v = [r[k] for r in sel if k in r]
        parts.append(f"{mean_std(v)[0]:.3f}" if len(v) == len(sel) else "-")
    return " / ".join(parts)


def markdown(rows):
    lines = [
        "Validation (pairsDevTrain, people held out of training), accuracy (%) at 16 px, "
        "mean +- std over seeds.",
        "",
        "Teacher cosine: the mean cosine between the student's LR embedding and the teacher's "
        "HR embedding of the same image, on the validation images (people never trained on) "
        "and on the training views (last epoch); the gap between the two is the overfit.",
        "",
        "| row | flagfile | seeds | probe-only | cross-model | both | full | TAR@FAR=1e-3 "
        "both | teacher cosine held-out / training | params | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in rows):
        sel = [r for r in rows if r["row"] == name]

        def cell(k, sel=sel):
            return fmt([r[k] for r in sel]) if all(k in r for r in sel) else ""

        secs = mean_std([r["train_seconds"] for r in sel])[0]
        lines.append(
            f"| {name} | `{sel[0]['flagfile']}` | {len(sel)} | {cell('val_probe')} | "
            f"{cell('val_cross')} | {cell('val_both')} | {cell('val_full')} | "
            f"{cell('val_tar_at_far_1e-3_both')} | {agree(sel)} | {sel[0]['params']:,} | "
            f"{secs:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
