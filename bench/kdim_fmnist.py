"""KD_im on Fashion-MNIST: frozen teacher + LR-augmented student vs the two-step scheme.

    python -m bench.kdim_fmnist [--seeds=0] [--update_headers]

Rows are flagfiles of configs/fmnist/ (kdim_*.cfg): the LR-augmented student
alone; KD_im with MK-MMD (Eq. 9) and with the normalised-feature L2 (Eq. 6),
teacher cached; the two-step scheme (Fig. 1A): the teacher fine-tuned on the
LR-augmented data, then KD + MK-MMD from it. Each run goes through apps.distill;
apps.evaluate then scores every student (and the teacher) at probe sizes 7, 10,
14 and 28 (Gaussian downsample, bilinear back to 28). Also reported: the
cached-distillation epoch over the student-only epoch (median of epochs 2-3).
Seeds not run this time are kept from the last results unless their row's
flagfile changed since.
"""

from __future__ import annotations

import argparse
import os

from bench.runner import (
    Row,
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

PROBES = (7, 10, 14, 28)
ROWS = [
    Row("teacher", "configs/fmnist/teacher.cfg", app="train_teacher", fixed=True),
    Row("kdim_alone", "configs/fmnist/kdim_alone.cfg"),
    Row("kdim_mmd", "configs/fmnist/kdim_mmd.cfg"),
    Row("kdim_l2", "configs/fmnist/kdim_l2.cfg"),
    Row("kdim_teacher_finetuned", "configs/fmnist/kdim_teacher_finetuned.cfg", fixed=True),
    Row("kdim_two_step", "configs/fmnist/kdim_two_step.cfg"),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0")
    p.add_argument("--update_headers", action="store_true")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, log = "saved_models/runs/kdim_fmnist", "saved_models/runs/kdim_fmnist/log.txt"
    sha = {row.name: flags_sha1(row.flagfile) for row in ROWS}
    out, commands = [], []
    for row, seed, folder, cmd in run_rows(ROWS, seeds, runs, log):
        commands.append(cmd)
        m = read_json(os.path.join(folder, "metrics.json"))
        model = os.path.join(
            folder, "teacher.keras" if row.app == "train_teacher" else "student.keras"
        )
        ev = os.path.join(folder, "eval_probes")
        if not os.path.exists(os.path.join(ev, "results.json")):
            commands.append(
                run_app(
                    "evaluate",
                    [
                        f"--models={model}",
                        "--probe_sizes=" + ",".join(map(str, PROBES)),
                        "--degrade_kernel=gaussian",
                        "--teacher_size=28",
                        "--max_train_examples=20000",
                        f"--output_dir={ev}",
                    ],
                    log,
                )
            )
        acc = {
            r["probe_size"]: r["top1"] for r in read_json(os.path.join(ev, "results.json"))["rows"]
        }
        hist = m.get("history", {}).get("epoch_seconds", [])
        out.append(
            {
                "row": row.name,
                "seed": seed,
                "flagfile": row.flagfile,
                "run": folder,
                "flags_sha1": sha[row.name],
                **{f"top1_{s}": acc[s] for s in PROBES},
                "train_seconds": m["train_seconds"],
                "epoch_seconds": hist,
            }
        )
    out, commands = merge_previous("kdim_fmnist", out, commands, sha, [r.name for r in ROWS])
    table = markdown(out)
    write_results("kdim_fmnist", out, commands, table)
    if args.update_headers:
        for row in ROWS:
            sel = [r for r in out if r["row"] == row.name]
            cells = ", ".join(f"@{s} {fmt([r[f'top1_{s}'] for r in sel])}" for s in PROBES)
            update_header(
                row.flagfile,
                f"top-1 {cells} % (seeds "
                f"{','.join(str(r['seed']) for r in sel)}; python -m bench.kdim_fmnist)",
            )


def _median_later_epochs(rows, name):
    times = [t for r in rows if r["row"] == name for t in r["epoch_seconds"][1:]]
    return float(sorted(times)[len(times) // 2]) if times else float("nan")


def markdown(rows):
    lines = [
        "KD_im on Fashion-MNIST: 28x28-input ResNet-8 students on LR-augmented data (40% "
        "Gaussian-degraded to 7/10/14 px), 20,000 images, 3 epochs; top-1 (%) at each probe "
        "size.",
        "",
        "| row | flagfile | " + " | ".join(f"@{s}" for s in PROBES) + " | train s |",
        "|---|---|" + "---|" * (len(PROBES) + 1),
    ]
    for name in dict.fromkeys(r["row"] for r in rows):
        sel = [r for r in rows if r["row"] == name]
        cells = " | ".join(fmt([r[f"top1_{s}"] for r in sel]) for s in PROBES)
        secs = mean_std([r["train_seconds"] for r in sel])[0]
        lines.append(f"| {name} | `{sel[0]['flagfile']}` | {cells} | {secs:.0f} |")
    ratio = _median_later_epochs(rows, "kdim_mmd") / _median_later_epochs(rows, "kdim_alone")
    lines += [
        "",
        f"Cached distillation epoch / student-only epoch (median of epochs 2-3): {ratio:.3f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
