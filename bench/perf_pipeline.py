"""Does the input pipeline keep a GPU fed? Images per second the face pipeline delivers on this
machine, beside the images per second the compact student's train step consumes here.

    python -m bench.perf_pipeline                       # both parts
    python -m bench.perf_pipeline --parts=pipeline --images=2048 --batches=40

pipeline  `lrface_tf.data.pipeline.paired_dataset` as `apps.distill` builds it (the
          resumable stream, batch 128) on synthetic uint8 112x112 faces in memory (the
          real size; pixel values do not change the cost), with K fixed views (flip,
          shift, zoom, rotation, colour: the views of the face pool's teacher cache) and
          the 16x16 area LR view. Variants: the teacher run every step (HR + LR views
          delivered), a teacher cache (its embeddings plus the class-mean head's logits
          over 5,000 people; no HR view) with the views made at every step, the same with
          the LR views made once up front (`precompute_lr`, what the apps now do with
          fixed views and a cache), and unordered maps (`deterministic=False`). No model
          is built: this is the data alone.
step      `python -m apps.distill` on configs/perf/pipeline_feature.cfg (ResNet-18 x0.25 at
          16x16, embedding 128, ArcFace over 4,786 people, the `feature` method on cached
          SFace embeddings) and on its XLA twin; the rate is 128 x steps per epoch over
          the median epoch_seconds of the epochs after the first (metrics.json history).
          The bench trains nothing itself: it runs the app and reads its record.

Writes bench/results/perf_pipeline.json (rows of plain fields, the commands, the date, the
load average seen) and perf_pipeline.md, with what the two rates imply for one GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bench.runner import ROOT, Row, read_json, run_rows, write_results

PARTS = ("pipeline", "step")
HR, LR, BATCH, CLASSES, DIM = 112, 16, 128, 5000, 128
STEP_ROWS = [
    Row("feature", "configs/perf/pipeline_feature.cfg"),
    Row("feature_xla", "configs/perf/pipeline_feature_xla.cfg"),
]
# What a GPU step is assumed to be worth, in CPU steps of this machine (see the report).
GPU_SPEEDUPS = (20, 50)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--images", type=int, default=2048, help="synthetic faces in memory")
    p.add_argument("--views", type=int, default=8, help="K fixed views per face")
    p.add_argument("--batches", type=int, default=40, help="timed batches per variant")
    p.add_argument("--name", default="perf_pipeline")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    for part in parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}: use {', '.join(PARTS)}")
    given = sys.argv[1:] if argv is None else argv
    shown = " ".join(["python -m bench.perf_pipeline", *given])
    rows, commands = [], [shown]
    if "pipeline" in parts:
        rows += pipeline_rows(args)
    if "step" in parts:
        step, cmds = step_rows(args)
        rows += step
        commands += cmds
    write_results(
        args.name,
        rows,
        commands,
        markdown(rows, commands),
        cpu_count=os.cpu_count(),
        gpu_speedups=list(GPU_SPEEDUPS),
    )


# ----------------------------------------------------------------------------- pipeline
def pipeline_rows(args):
    """Images per second of each pipeline variant (see the module docstring)."""
    import tensorflow as tf

    from lrface_tf.data.degrade import DegradationSpec
    from lrface_tf.data.pipeline import paired_dataset
    from lrface_tf.data.teacher_cache import TeacherCache, image_keys
    from lrface_tf.data.views import ViewSpec

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, HR, HR, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, args.images).astype(np.int32)
    views = ViewSpec(count=args.views, shift=0.05, scale=0.05, rotation=8.0, colour=0.2)
    spec = DegradationSpec("area", (LR,))
    emb = rng.standard_normal((args.views, args.images, DIM)).astype(np.float32)
    cache = TeacherCache(emb, None, views.params(image_keys(images)), views, "synthetic")
    cache = cache.with_head(rng.standard_normal((DIM, CLASSES)).astype(np.float32), 16.0)
    variants = [
        ("teacher every step: HR + LR views", {"views": views, "keep_hr": True}),
        ("teacher every step, unordered", {"views": views, "keep_hr": True, "det": False}),
        ("cached teacher, views made every step", {"teacher_cache": cache}),
        ("cached teacher, views every step, unordered", {"teacher_cache": cache, "det": False}),
        ("cached teacher, LR views made once (apps)", {"teacher_cache": cache, "pre": True}),
    ]
    rows = []
    for name, kw in variants:
        t0 = time.perf_counter()
        ds = paired_dataset(
            images,
            labels,
            spec=spec,
            batch_size=BATCH,
            augment="none",
            views=kw.get("views"),
            teacher_cache=kw.get("teacher_cache"),
            keep_hr=kw.get("keep_hr", False),
            start_step=0,
            deterministic=kw.get("det", True),
            precompute_lr=kw.get("pre", False),
        )
        setup = time.perf_counter() - t0
        load = os.getloadavg()[0]
        rate, cpu_rate, keys = _rate(ds, args.batches)
        rows.append(
            {
                "part": "pipeline",
                "variant": name,
                "images_per_second": round(rate, 1),
                "images_per_cpu_second": round(cpu_rate, 1),
                "precompute_lr": kw.get("pre", False),
                "deterministic": kw.get("det", True),
                "setup_seconds": round(setup, 2),
                "outputs": ",".join(keys),
                "views": args.views,
                "images": args.images,
                "batch": BATCH,
                "hr": HR,
                "lr": LR,
                "load_average_1min": round(load, 2),
                "tensorflow": tf.__version__,
            }
        )
        print(
            f"{name}: {rate:,.0f} images/s, {cpu_rate:,.0f} per CPU-second (load {load:.1f})",
            flush=True,
        )
    return rows


def _rate(ds, batches, warmup=5):
    """(images per wall second, images per CPU-second of this process, the batch's keys)
    over `batches` batches after `warmup` (the stream is endless).

    CPU time counts every thread of the process (tf.data's too), so images per
    CPU-second is what one core delivers, whatever else shares the machine.
    """
    it = iter(ds)
    for _ in range(warmup):
        x, _ = next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return batches * BATCH / wall, batches * BATCH / cpu, sorted(x)


# --------------------------------------------------------------------------------- step
def step_rows(args):
    """The student's train-step rate, from apps.distill's own record of each row."""
    runs = "saved_models/runs/perf_pipeline"
    rows, commands = [], []
    for row, _, folder, shown in run_rows(STEP_ROWS, [0], runs, os.path.join(runs, "log.txt")):
        commands.append(shown)
        record = os.path.join(ROOT, folder, "metrics.json")
        fresh = time.time() - os.path.getmtime(record) < 120  # run just now, not reused
        m = read_json(record)
        cfg = read_json(os.path.join(folder, "config.json"))
        batch = cfg["train"]["batch_size"]
        steps = m["data"]["used"] // batch
        seconds = m["history"]["epoch_seconds"]
        later = float(np.median(seconds[1:])) if len(seconds) > 1 else float(seconds[0])
        rows.append(
            {
                "part": "step",
                "variant": row.name,
                "flagfile": row.flagfile,
                "images_per_second": round(steps * batch / later, 1),
                "seconds_per_step": round(later / steps, 4),
                "epoch_seconds": [round(s, 2) for s in seconds],
                "steps_per_epoch": steps,
                "batch": batch,
                "classes": m["data"]["classes"],
                "params": m["params"],
                "jit_compile": cfg["train"]["jit_compile"],
                "precision": cfg["train"]["precision"],
                "teacher_cache": m.get("teacher_cache", {}).get("status"),
                "date": m.get("date"),
                # The 5-minute load average just after the run (None: an earlier run reused).
                "load_average_5min": round(os.getloadavg()[1], 2) if fresh else None,
            }
        )
    return rows, commands


# ------------------------------------------------------------------------------- report
def quiet_step():
    """The same step timed on a quiet machine by the earlier performance report, if any:
    (seconds per step of 128, where it comes from)."""
    path = os.path.join(ROOT, "bench", "results", "perf.json")
    if not os.path.exists(path):
        return None
    fig = read_json(path).get("figures", {}).get("step_seconds_distill_cached")
    return (fig["value"], "bench/results/perf.json step_seconds_distill_cached") if fig else None


def implications(rows):
    """What the measured rates mean for one GPU, under the stated assumptions."""
    pipe = {r["variant"]: r["images_per_cpu_second"] for r in rows if r["part"] == "pipeline"}
    step = [r for r in rows if r["part"] == "step" and not r["jit_compile"]]
    if not pipe or not step:
        return []
    cpu = step[0]["images_per_second"]
    cores = os.cpu_count() or 1
    lines = [
        f"- The student's step consumes {cpu:,.0f} images/s on this {cores}-core CPU "
        f"({step[0]['seconds_per_step']:.3f} s per step of {step[0]['batch']}, shared machine).",
    ]
    quiet = quiet_step()
    if quiet:
        cpu = max(cpu, BATCH / quiet[0])
        lines.append(
            f"- The same step on this machine with nothing else running: {quiet[0]:.4f} s "
            f"({BATCH / quiet[0]:,.0f} images/s; {quiet[1]}). The GPU rates below start "
            f"from the faster of the two: {cpu:,.0f} images/s."
        )
    for speedup in GPU_SPEEDUPS:
        need = speedup * cpu
        lines.append(
            f"- A GPU step {speedup}x faster consumes {need:,.0f} images/s; the pipeline "
            "variants need, at their measured images per CPU-second:"
        )
        for name, per_core in pipe.items():
            lines.append(f"  - {name}: {per_core:,.0f} per core -> {need / per_core:.1f} cores")
    return lines


def markdown(rows, commands):
    out = [
        "# Input pipeline vs train step",
        "",
        f"{os.cpu_count()} CPU cores. images/s is wall-clock; other jobs shared the machine "
        "(the 1-minute load average at each measurement is in the table), so those are lower "
        "bounds. Images per CPU-second (the pipeline process's CPU time, every thread) is what "
        "one core delivers whatever else runs.",
        "",
        "| part | variant | images/s | per CPU-second | load | notes |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["part"] == "pipeline":
            notes = f"K={r['views']} views, {r['images']} faces, outputs {r['outputs']}"
            if r["precompute_lr"]:
                notes += f"; LR views made once in {r['setup_seconds']:.0f} s"
            load = f"{r['load_average_1min']:.1f}"
            per_cpu = f"{r['images_per_cpu_second']:,.0f}"
        else:
            notes = (
                f"{r['flagfile']}: {r['steps_per_epoch']} steps of {r['batch']}, "
                f"epochs {r['epoch_seconds']} s, {r['classes']} classes"
            )
            per_cpu = "-"
            load = (
                "-" if r["load_average_5min"] is None else f"{r['load_average_5min']:.1f} (5 min)"
            )
        rate = f"{r['images_per_second']:,.0f}"
        out.append(f"| {r['part']} | {r['variant']} | {rate} | {per_cpu} | {load} | {notes} |")
    lines = implications(rows)
    if lines:
        out += [
            "",
            "## What this implies for one GPU",
            "",
            "Assumptions: a GPU runs this step 20-50x faster than this CPU's wall-clock step "
            "(a few ms per step of 128 at 16x16); the pipeline's map scales with CPU cores "
            "(tf.data runs it on every core) and the GPU host's cores are like these. The CPU "
            "step was timed on a shared machine, so the GPU rates below are lower bounds.",
            "",
            *lines,
            "",
            "The teacher-every-step rows feed a step that also runs the 112x112 teacher "
            "(20x the student's step on this CPU: bench/results/perf.json "
            "ratio_distill_uncached_over_student_only), so a GPU running both consumes "
            "about 1/20 of the images above. Unordered maps cost the same CPU per image here "
            "(every element costs the same); they help when element costs vary.",
        ]
    out += ["", "Commands:", "", *[f"    {c}" for c in commands], ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
