"""Peak memory and time of the RKD angle loss (value + gradient) vs batch size.

    python -m bench.rkd_angle_memory

Each configuration runs in its own process (so peaks do not mix); the figure is
the process's peak resident memory (ru_maxrss) minus the same process's
resident memory just before the first loss call, i.e. what the loss and its
gradient added. Time is the median of 3 calls after one warm-up (graph mode).
Writes bench/results/rkd_angle_memory.json and .md.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

RESULTS = os.path.join(os.path.dirname(__file__), "results")
CHILD = r"""
import json, resource, sys, time
import numpy as np, tensorflow as tf
from lrface_tf.losses import RKDAngleLoss
b, chunk, dim = int(sys.argv[1]), int(sys.argv[2]) or None, 128
loss = RKDAngleLoss(chunk_size=chunk)
t = tf.constant(np.random.RandomState(0).randn(b, dim).astype("float32"))
s = tf.Variable(np.random.RandomState(1).randn(b, dim).astype("float32"))
@tf.function
def step():
    with tf.GradientTape() as tape:
        v = tf.reduce_mean(loss(t, s))  # the term returns one value per anchor
    return v, tape.gradient(v, s)
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
before = rss_mb()
step()
times = []
for _ in range(3):
    t0 = time.perf_counter(); v, g = step(); float(v); times.append(time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"batch": b, "chunk_size": chunk, "peak_added_mb": round(peak - before, 1),
                  "seconds": round(sorted(times)[1], 4), "value": float(v)}))
"""


def main():
    rows = []
    for b in (64, 128, 256, 512):
        for chunk in (0, 32):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(b), str(chunk)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["mode"] = "naive" if not chunk else f"chunked ({chunk} anchors)"
            rows.append(row)
            print(row, flush=True)
    from lrface_tf.export import write_json, write_text

    command = "python -m bench.rkd_angle_memory"
    write_json(
        os.path.join(RESULTS, "rkd_angle_memory.json"),
        {
            "rows": rows,
            "command": command,
            "date": datetime.date.today().isoformat(),
            "embedding_dim": 128,
        },
    )
    lines = [
        f"Command: `{command}` (embedding size 128, value + gradient, CPU)",
        "",
        "| batch | mode | peak memory added (MB) | seconds | loss value |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batch']} | {r['mode']} | {r['peak_added_mb']:.0f} | {r['seconds']:.3f} | "
        f"{r['value']:.6f} |"
        for r in rows
    ]
    write_text(os.path.join(RESULTS, "rkd_angle_memory.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
