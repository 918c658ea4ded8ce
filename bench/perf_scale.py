"""Data at scale (issue 15): peak memory and epoch time while streaming a TFDS face data set of
10k, 100k and 1M examples, and the cached-distillation step over a student-only step when the
teacher's outputs stream from disk.

    python -m bench.perf_scale                              # 10k, 100k, 1M
    python -m bench.perf_scale --sizes=10000,100000 --pool=2000

The pool: `--pool` aligned LFW faces from saved_models/lfw_aligned (people of
pairsDevTest held out; whole people in sorted order), or synthetic 112x112 faces
when that folder is absent. Each size is ONE data set built by

    python -m apps.build_dataset --flagfile=configs/perf/build_pool.cfg --replicate=R

so every record is a copy of a pool face (its own example: its own index, shuffled
into the shards like any other), with SFace's stored embeddings of 2 views. A
replicated pool measures the streaming machinery (records on disk, shards, shuffle
buffer, decoding), not what the model learns from it. Then, per size:

  fixed steps  `apps.distill --flagfile=configs/perf/scale_feature_cached.cfg
               --epochs=4 --epoch_examples=12800` (100 steps per epoch): peak RSS of
               the process and the fastest of epochs 2-4 -> memory flatness and
               step time, the same work at every size;
  full epoch   the same flagfile, one epoch over every example (sizes up to
               --full_epoch_max; the 1M epoch, ~7,800 steps, is beyond 2 cores);

and at the smallest size the ratio: the student alone (configs/perf/scale_student.cfg,
same flags) and the cached distillation, runs alternated (--ratio_rounds of each) so
both meet the same background load; the fastest epoch of each, and the CPU time
(user + sys) of the processes. The bench trains nothing itself: it runs the apps as
child processes and reads their metrics.json (history epoch_seconds) and the child's
`rusage` (`os.wait4`: peak RSS, CPU time). Writes bench/results/perf_scale.json and .md;
the rows of sizes this invocation did not run (and the last ratio, with --ratio_rounds=0)
are kept from the earlier record, each row with the bench command that measured it.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench.runner import RESULTS, ROOT, read_json, write_results

LFW_ALIGNED = "saved_models/lfw_aligned"
HELD_OUT = "../shared/data/lfw/pairsDevTest.txt"
TEACHER = "saved_models/sface/teacher.keras"
BUILD = "configs/perf/build_pool.cfg"
CACHED = "configs/perf/scale_feature_cached.cfg"
STUDENT = "configs/perf/scale_student.cfg"
BATCH = 128


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="examples per data set")
    p.add_argument("--pool", type=int, default=2000, help="distinct faces replicated")
    p.add_argument("--fixed_steps", type=int, default=100, help="steps per epoch, every size")
    p.add_argument("--full_epoch_max", type=int, default=100_000, help="largest full epoch")
    p.add_argument("--work", default="saved_models/bench_scale", help="data sets and runs")
    p.add_argument("--keep", action="store_true", help="keep the data sets (GBs at 1M)")
    p.add_argument(
        "--ratio_rounds", type=int, default=2, help="runs of each, alternated (0: keep the last)"
    )
    return p.parse_args(argv)


def run_child(app, args, log_path):
    """`python -m apps.<app> <args>`: (command, wall seconds, that process's `rusage`:
    peak RSS `ru_maxrss` in kB, CPU seconds `ru_utime + ru_stime`)."""
    cmd = [sys.executable, "-m", f"apps.{app}", *args]
    shown = " ".join(["python", "-m", f"apps.{app}", *args])
    print(f"$ {shown}", flush=True)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        log.write(f"\n$ {shown}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shown} failed (exit {proc.returncode}); see {log_path}")
    return shown, seconds, usage


def _mb(usage):
    return usage.ru_maxrss / 1024.0  # Linux: kilobytes


def _cpu(usage):
    return usage.ru_utime + usage.ru_stime


def make_pool(folder, size):
    """A pool of >= `size` faces in `folder`: symlinked LFW people, or synthetic faces."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    lfw = os.path.join(ROOT, LFW_ALIGNED)
    if os.path.isdir(lfw):
        held = set()
        if os.path.exists(os.path.join(ROOT, HELD_OUT)):
            from lrface_tf.data.sources import held_out_people

            held = held_out_people([os.path.join(ROOT, HELD_OUT)])
        count = 0
        for person in sorted(os.listdir(lfw)):
            if person in held or not os.path.isdir(os.path.join(lfw, person)):
                continue
            os.symlink(os.path.join(lfw, person), os.path.join(folder, person))
            count += len(os.listdir(os.path.join(lfw, person)))
            if count >= size:
                break
        return {"source": f"{LFW_ALIGNED} (people of {HELD_OUT} held out)", "images": count}
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:112, :112]
    tone = None
    face = ((xx - 56) / 38.0) ** 2 + ((yy - 60) / 48.0) ** 2 <= 1.0
    for i in range(size):
        person = os.path.join(folder, f"person_{i // 5:05d}")
        os.makedirs(person, exist_ok=True)
        if i % 5 == 0:
            tone = rng.integers(60, 220, 3)  # one skin tone per person
        img = np.where(face[..., None], tone, 30) + rng.normal(0, 12, (112, 112, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(person, f"{i:06d}.jpg"), quality=90
        )
    return {"source": "synthetic 112x112 faces, 5 per person", "images": size}


def _folder_mb(folder):
    return (
        sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs) / 2**20
    )


def _steady(history):
    """The fastest epoch after the first (which traces and fills the shuffle buffer): on a
    machine shared with other jobs, the one they disturbed least."""
    seconds = history["epoch_seconds"]
    return float(np.min(seconds[1:] if len(seconds) > 1 else seconds))


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(os.path.join(ROOT, TEACHER)):
        sys.exit(f"error: {TEACHER} does not exist; run python -m apps.build_teacher")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = os.path.join(ROOT, args.work)
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "perf_scale.log")
    pool = make_pool(os.path.join(work, "pool"), args.pool)
    print(f"pool: {pool['images']} faces from {pool['source']}", flush=True)
    epoch_examples = args.fixed_steps * BATCH
    invocation = " ".join(["python -m bench.perf_scale", *(sys.argv[1:] if argv is None else argv)])
    rows, commands, ratio = [], [], None if args.ratio_rounds else {}
    for size in sizes:
        replicate = math.ceil(size / pool["images"])
        dst = os.path.join(work, f"data_{size}")
        shutil.rmtree(dst, ignore_errors=True)
        cmd, build_s, build_usage = run_child(
            "build_dataset",
            [
                f"--flagfile={BUILD}",
                f"--data_dir={work}/pool",
                f"--dst={dst}",
                f"--replicate={replicate}",
            ],
            log,
        )
        commands.append(cmd)
        row = {
            "measured_by": invocation,
            "fixed_steps": args.fixed_steps,
            "examples": pool["images"] * replicate,
            "replicate": replicate,
            "build_seconds": round(build_s, 1),
            "build_peak_rss_mb": round(_mb(build_usage)),
            "disk_mb": round(_folder_mb(dst)),
        }
        runs = os.path.join(work, f"runs_{size}")
        shutil.rmtree(runs, ignore_errors=True)
        fixed = [f"--data_dir={dst}", "--epochs=4", f"--epoch_examples={epoch_examples}"]
        cmd, _, usage = run_child(
            "distill", [f"--flagfile={CACHED}", *fixed, f"--output_dir={runs}/fixed"], log
        )
        commands.append(cmd)
        hist = read_json(os.path.join(runs, "fixed", "metrics.json"))["history"]
        row.update(
            fixed_steps_peak_rss_mb=round(_mb(usage)),
            fixed_steps_epoch_seconds=[round(s, 2) for s in hist["epoch_seconds"]],
            step_seconds_cached=round(_steady(hist) / args.fixed_steps, 4),
        )
        if ratio is None:  # the student alone, same data set and flags
            ratio = _ratio(row, (hist, usage), fixed, runs, log, commands, args)
        if row["examples"] <= args.full_epoch_max:
            cmd, _, usage = run_child(
                "distill",
                [
                    f"--flagfile={CACHED}",
                    f"--data_dir={dst}",
                    "--epochs=1",
                    f"--output_dir={runs}/full",
                ],
                log,
            )
            commands.append(cmd)
            hist = read_json(os.path.join(runs, "full", "metrics.json"))["history"]
            row.update(
                full_epoch_seconds=round(hist["epoch_seconds"][0], 1),
                full_epoch_peak_rss_mb=round(_mb(usage)),
            )
        rows.append(row)
        print(row, flush=True)
        if not args.keep:
            shutil.rmtree(dst, ignore_errors=True)
    rows, commands, ratio = _merge(rows, commands, ratio)
    write_results(
        "perf_scale",
        rows,
        commands,
        _markdown(rows, ratio, pool, args),
        pool=pool,
        ratio=ratio,
        batch_size=BATCH,
    )


def _merge(rows, commands, ratio):
    """These rows and ratio, plus the earlier record's rows of other sizes (and its ratio
    when none was measured now)."""
    path = os.path.join(RESULTS, "perf_scale.json")
    if not os.path.exists(path):
        return rows, commands, ratio or None
    old = read_json(path)
    sizes = {r["examples"] for r in rows}
    kept = [r for r in old.get("rows", []) if r["examples"] not in sizes]
    rows = sorted(kept + rows, key=lambda r: r["examples"])
    if kept or not ratio:
        commands = [*old.get("commands", []), *commands]
    return rows, commands, ratio or old.get("ratio")


def _ratio(row, first_cached, fixed, runs, log, commands, args):
    """Cached distillation over the student alone on one data set, the runs alternated
    (cached, student, cached, student, ...) so that both meet the same background load:
    per flagfile the fastest epoch (wall) and the least CPU time (user + sys) of a run."""
    seen = {"cached": [first_cached], "student": []}
    order = ["student"] + ["cached", "student"] * (args.ratio_rounds - 1)
    for i, name in enumerate(order):
        flagfile = STUDENT if name == "student" else CACHED
        out = os.path.join(runs, f"{name}_{i}")
        cmd, _, usage = run_child(
            "distill", [f"--flagfile={flagfile}", *fixed, f"--output_dir={out}"], log
        )
        commands.append(cmd)
        seen[name].append((read_json(os.path.join(out, "metrics.json"))["history"], usage))
    step = {k: min(_steady(h) for h, _ in v) / args.fixed_steps for k, v in seen.items()}
    cpu = {k: min(_cpu(u) for _, u in v) for k, v in seen.items()}
    return {
        "examples": row["examples"],
        "runs_each": args.ratio_rounds,
        "steps": args.fixed_steps,
        "step_seconds_student_only": round(step["student"], 4),
        "step_seconds_distill_cached": round(step["cached"], 4),
        "ratio": round(step["cached"] / step["student"], 3),
        "cpu_seconds_student_only": round(cpu["student"], 1),
        "cpu_seconds_distill_cached": round(cpu["cached"], 1),
        "cpu_ratio": round(cpu["cached"] / cpu["student"], 3),
    }


def _markdown(rows, ratio, pool, args):
    lines = [
        "# Data at scale: streaming a TFDS face data set (bench.perf_scale)",
        "",
        "Commands: "
        + "; ".join(f"`{c}`" for c in sorted({r["measured_by"] for r in rows}))
        + " (2-core CPU, shared with other jobs; no GPU).",
        f"Pool: {pool['images']} faces from {pool['source']}, replicated to each size "
        "(every copy its own example); SFace's embeddings of 2 views stored with each. "
        f"Training: configs/perf/scale_feature_cached.cfg, batch {BATCH}.",
        "",
        "| examples | build s | build peak RSS MB | on disk MB | steps/epoch | peak RSS MB | "
        "s/step | full epoch s | full-epoch peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        full = r.get("full_epoch_seconds", "not run (see text)")
        lines.append(
            f"| {r['examples']:,} | {r['build_seconds']} | {r['build_peak_rss_mb']} | "
            f"{r['disk_mb']:,} | {r['fixed_steps']} | {r['fixed_steps_peak_rss_mb']} | "
            f"{r['step_seconds_cached']} | {full} | {r.get('full_epoch_peak_rss_mb', '-')} |"
        )
    lines += [
        "",
        "s/step: the fastest of epochs 2-4 of the fixed-step runs / steps (epoch 1 traces and "
        "fills the shuffle buffer; the fastest is the one other jobs disturbed least). Full "
        "epoch: one epoch over every example, its first (tracing included), run up to "
        "--full_epoch_max examples (a 1M epoch is ~7,800 steps of "
        f"{BATCH}, hours on a shared 2-core machine); the fixed-step runs measure the memory "
        "and step time of streaming every size.",
    ]
    if ratio:
        lines += [
            "",
            f"Cached distillation over the student alone, both streamed ({ratio['examples']:,} "
            f"examples, {ratio['runs_each']} alternated runs of each, {ratio['steps']} x 4 "
            f"steps): {ratio['step_seconds_distill_cached']} / "
            f"{ratio['step_seconds_student_only']} s per step = **{ratio['ratio']}x** (the "
            "fastest epoch of each); CPU time of the whole process (user + sys, start-up "
            f"included): {ratio['cpu_seconds_distill_cached']} / "
            f"{ratio['cpu_seconds_student_only']} s = **{ratio['cpu_ratio']}x**. Goal <= 1.15x "
            "(configs/perf/scale_feature_cached.cfg vs configs/perf/scale_student.cfg).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
