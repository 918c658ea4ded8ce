"""Performance report: TFLite latency (fp32 / dynamic-range / int8), one device vs two mirrored
replicas, epoch time against data size, and the RKD angle memory figures.

    python -m bench.perf                         # every part
    python -m bench.perf --parts=latency

Every figure comes from apps runs of flagfiles under configs/perf/ (this script trains and
builds nothing itself) and their records:

xla           apps.distill on configs/perf/xla_*.cfg: the label-free face step of
              MobileFaceNet-16 and ResNet-18 x0.25 with and without --jit_compile.
latency       apps.distill on configs/perf/latency_*.cfg (three compact 16x16 students,
              trained briefly), then apps.export --latency_calls=300 for float32,
              dynamic-range and int8 TFLite models: median ms of one single-image call
              on one LiteRT thread (XNNPACK), the parity of each against Keras, and the
              file sizes. Also read: the SFace teacher's latency from the LR-LFW bench
              when it has run (bench/results/lfw_devtest.json).
mirrored      apps.distill on configs/perf/mirrored.cfg on one device, and with
              --strategy=mirrored --cpu_devices=2, with and without --sync_batchnorm:
              the largest relative gap of the per-epoch loss against one device.
epoch_size    apps.distill on configs/perf/epoch_size.cfg at 4,096 to 32,768 examples:
              the second epoch's seconds, and a linear fit.
rkd_memory    read from bench/results/rkd_angle_memory.json (python -m bench.rkd_angle_memory).

Writes bench/results/perf.json (named figures, each with how it was measured and the
commands) and perf.md. Timings are wall times on the machine as it was: the load average
seen during the run is recorded with them.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bench.runner import ROOT, Row, export_face_model, read_json, run_app, run_rows, write_results

PARTS = ("latency", "xla", "mirrored", "epoch_size", "rkd_memory")
XLA_ROWS = ["xla_mobilefacenet16", "xla_mobilefacenet16_xla", "xla_resnet18", "xla_resnet18_xla"]
LATENCY_ROWS = [
    "latency_resnet18",
    "latency_resnet18_gdc",
    "latency_mobilefacenet16",
    "latency_mobilefacenet16_prelu",
]
SIZES = (4096, 8192, 16384, 32768)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS))
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    for part in parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}: use {', '.join(PARTS)}")
    path = os.path.join(ROOT, "bench", "results", "perf.json")
    old = read_json(path) if os.path.exists(path) else {}
    # Figures of parts not rerun are kept; names from before the parts existed are dropped.
    figures = {
        k: v
        for k, v in old.get("figures", {}).items()
        if k.split(".")[0] in PARTS and k.split(".")[0] not in parts
    }
    commands = list(old.get("commands", [])) if figures else []
    log = "saved_models/runs/perf/log.txt"
    for part in parts:
        print(f"--- {part}", flush=True)
        new, cmds = globals()[f"_{part}"](log)
        figures.update({f"{part}.{k}": v for k, v in new.items()})
        commands += cmds
    write_results(
        "perf", [], commands, _markdown(figures), figures=figures, load_average=os.getloadavg()
    )


def _fig(value, unit, how, **extra):
    return {"value": value, "unit": unit, "how": how, **extra}


def _latency(log):
    figures, commands = {}, []
    rows = [Row(n, f"configs/perf/{n}.cfg", fixed=True) for n in LATENCY_ROWS]
    for row, _, folder, cmd in run_rows(rows, [0], "saved_models/runs/perf", log):
        commands.append(cmd)
        parity, exported = export_face_model(f"{folder}/student.keras", folder, log)
        commands += exported
        params = read_json(os.path.join(folder, "metrics.json"))["params"]
        name = row.name.removeprefix("latency_")
        for q, r in parity.items():
            figures[f"{name}.{q}_ms"] = _fig(
                round(r["latency_ms"], 3),
                "ms",
                "apps.export --latency_calls=300: median of "
                "300 single-image calls, one LiteRT thread",
                bytes=r["bytes"],
                params=params,
                cosine=r.get("embedding", {}).get("mean_cosine"),
            )
    lfw = os.path.join(ROOT, "bench", "results", "lfw_devtest.json")
    if os.path.exists(lfw):
        teacher = [r for r in read_json(lfw)["rows"] if r["row"] == "teacher"]
        if teacher:
            figures["sface_teacher.float32_ms"] = _fig(
                round(teacher[0]["latency_ms_fp32"], 2), "ms", "from bench.lfw_devtest"
            )
            figures["sface_teacher.int8_ms"] = _fig(
                round(teacher[0]["latency_ms_int8"], 2), "ms", "from bench.lfw_devtest"
            )
    return figures, commands


def _xla(log):
    figures, commands = {}, []
    rows = [Row(n, f"configs/perf/{n}.cfg", fixed=True) for n in XLA_ROWS]
    for row, _, folder, cmd in run_rows(rows, [0], "saved_models/runs/perf", log):
        commands.append(cmd)
        m = read_json(os.path.join(folder, "metrics.json"))
        secs = float(np.median(m["history"]["epoch_seconds"][1:]))
        figures[f"{row.name.removeprefix('xla_')}.epoch_seconds"] = _fig(
            round(secs, 2),
            "s",
            f"{row.flagfile}: median seconds of epochs 2-3 (3,000 faces, batch 128)",
            images_per_second=round(m["data"]["used"] / secs),
            params=m["params"],
        )
    return figures, commands


def _mirrored(log):
    variants = {
        "one_device": [],
        "two_replicas": ["--strategy=mirrored", "--cpu_devices=2"],
        "two_replicas_sync_bn": ["--strategy=mirrored", "--cpu_devices=2", "--sync_batchnorm"],
    }
    losses, commands = {}, []
    for name, extra in variants.items():
        folder = f"saved_models/runs/perf/mirrored_{name}"
        if not os.path.exists(os.path.join(ROOT, folder, "metrics.json")):
            commands.append(
                run_app(
                    "distill",
                    ["--flagfile=configs/perf/mirrored.cfg", *extra, f"--output_dir={folder}"],
                    log,
                )
            )
        losses[name] = np.asarray(
            read_json(os.path.join(folder, "metrics.json"))["history"]["loss"]
        )
    ref = losses["one_device"]
    figures = {}
    for name in ("two_replicas", "two_replicas_sync_bn"):
        gap = float(np.max(np.abs(losses[name] - ref) / np.abs(ref)))
        figures[f"{name}_max_relative_loss_gap"] = _fig(
            round(gap, 5),
            "",
            "max over 4 epochs of |loss - loss(one device)| / loss(one "
            "device), configs/perf/mirrored.cfg (deterministic ops)",
        )
    return figures, commands


def _epoch_size(log):
    secs, commands = [], []
    for n in SIZES:
        folder = f"saved_models/runs/perf/epoch_size_{n}"
        if not os.path.exists(os.path.join(ROOT, folder, "metrics.json")):
            commands.append(
                run_app(
                    "distill",
                    [
                        "--flagfile=configs/perf/epoch_size.cfg",
                        f"--max_train_examples={n}",
                        f"--output_dir={folder}",
                    ],
                    log,
                )
            )
        secs.append(read_json(os.path.join(folder, "metrics.json"))["history"]["epoch_seconds"][-1])
    slope, intercept = np.polyfit(SIZES, secs, 1)
    pred = slope * np.asarray(SIZES) + intercept
    r2 = 1 - np.sum((np.asarray(secs) - pred) ** 2) / np.sum((secs - np.mean(secs)) ** 2)
    how = "configs/perf/epoch_size.cfg, second epoch's seconds, --max_train_examples=" + ",".join(
        map(str, SIZES)
    )
    return {
        "epoch_seconds": _fig([round(s, 2) for s in secs], "s", how, examples=list(SIZES)),
        "linear_fit_r2": _fig(round(float(r2), 4), "", "least squares on the four points"),
        "seconds_per_1000_examples": _fig(round(1000 * float(slope), 3), "s", how),
    }, commands


def _rkd_memory(log):
    path = os.path.join(ROOT, "bench", "results", "rkd_angle_memory.json")
    if not os.path.exists(path):
        return {}, []
    rec = read_json(path)
    return {
        "source": _fig(
            "bench/results/rkd_angle_memory.json",
            "",
            "python -m bench.rkd_angle_memory",
            rows=rec.get("rows", rec),
        )
    }, []


def _markdown(figures):
    lines = [
        "Performance figures (bench/results/perf.json has how each was measured).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for k in sorted(figures):
        f = figures[k]
        extra = ""
        if "bytes" in f:
            extra = f" ({f['bytes'] / 1024:.0f} KiB, {f['params']:,} params)"
        lines.append(f"| {k} | {f['value']} {f['unit']}{extra} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
