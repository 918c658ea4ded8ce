"""Fashion-MNIST at 7x7: every method as a flagfile of configs/fmnist/, x seeds.

    python -m bench.fmnist_7px                              # every row, seeds 0 1 2
    python -m bench.fmnist_7px --rows=crrcd,crrcd_q64 --seeds=0,1,2 --update_headers

Runs configs/fmnist/teacher.cfg once (apps.train_teacher), then each row's
flagfile for every seed (apps.distill) into saved_models/runs/fmnist_7px/, and
collects each run's top-1 on the 10,000 test images at 7x7 and its seconds and
last CRRCD term, when it has one, from metrics.json. Writes
bench/results/fmnist_7px.json and .md (mean +- std over seeds per row); rows and
seeds not run this time are kept from the last results unless their flagfile
changed since.
"""

from __future__ import annotations

import argparse
import os

from bench.runner import (
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

ROWS = [
    "baseline",
    "kd",
    "horkd",
    "horkd_two_stage",
    "horkd_l2_l3",
    "horkd_l2_lc",
    "horkd_all",
    "horkd_angle5",
    "horkd_two_stage_angle5",
    "crrcd",
    "crrcd_q64",
    "crrcd_q128",
    "crrcd_q256",
    "crrcd_q1024",
    "crrcd_tau0.05",
    "crrcd_tau0.2",
    "crrcd_unsupervised",
    "crrcd_mean_negatives",
]
TEACHER = Row("teacher", "configs/fmnist/teacher.cfg", app="train_teacher", fixed=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--name", default="fmnist_7px")
    p.add_argument("--update_headers", action="store_true")
    args = p.parse_args(argv)
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; use {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, log = "saved_models/runs/fmnist_7px", "saved_models/runs/fmnist_7px/log.txt"
    rows = [TEACHER] + [Row(n, f"configs/fmnist/{n}.cfg") for n in names]
    sha = {row.name: flags_sha1(row.flagfile) for row in rows}
    out, commands = [], []
    for row, seed, folder, cmd in run_rows(rows, seeds, runs, log):
        m = read_json(os.path.join(folder, "metrics.json"))
        commands.append(cmd)
        record = {
            "row": row.name,
            "seed": seed,
            "flagfile": row.flagfile,
            "run": folder,
            "flags_sha1": sha[row.name],
            "top1": m["test"]["top1"],
            "train_seconds": m["train_seconds"],
            "params": m["params"],
        }
        record.update(crrcd_terms(m.get("history", {})))
        out.append(record)
    out, commands = merge_previous(args.name, out, commands, sha, ["teacher", *ROWS])
    table = markdown(out)
    write_results(args.name, out, commands, table)
    if args.update_headers:
        for row in rows:
            mine = [r for r in out if r["row"] == row.name]  # kept seeds and this run's
            if mine:
                seeds_run = ",".join(str(r["seed"]) for r in mine)
                size = "28x28" if row is TEACHER else "7x7"  # the teacher sees HR only
                update_header(
                    row.flagfile,
                    f"top-1 at {size} {fmt([r['top1'] for r in mine])} % "
                    f"(seeds {seeds_run}; python -m bench.fmnist_7px)",
                )


def markdown(rows):
    lines = [
        "Fashion-MNIST, 20,000 training images, ResNet-8 students at 7x7 (area), 3 epochs; "
        "top-1 on the 10,000 test images at 7x7, mean +- std over seeds.",
        "",
        "| row | flagfile | seeds | top-1 (%) | CRRCD term (last epoch) | train s (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in rows):
        sel = [r for r in rows if r["row"] == name]
        term = [r["crrcd_term_last"] for r in sel if "crrcd_term_last" in r]
        term_cell = f"{mean_std(term)[0]:.3f}" if term else ""
        lines.append(
            f"| {name} | `{sel[0]['flagfile']}` | {len(sel)} | {fmt([r['top1'] for r in sel])} | "
            f"{term_cell} | {mean_std([r['train_seconds'] for r in sel])[0]:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
