"""What every benchmark shares: run flagfiles x seeds through the apps, collect their records.

A benchmark builds and trains nothing itself. It lists rows, each one flagfile
under configs/, runs

    python -m apps.<app> --flagfile=<row> --seed=<s> --output_dir=<runs>/<row>/seed<s>

for every seed (a run whose metrics.json exists is done and is not rerun, so an
interrupted benchmark continues where it stopped), reads each run's
metrics.json (and whatever else the benchmark asks the apps to write), and
writes bench/results/<name>.json (rows of plain fields, the commands, the date)
and <name>.md. With --update_headers it writes each row's measured result into
the "# result:" line of its flagfile, so a flagfile says what it produced here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: a flagfile run by an app.

    Attributes:
      name: the row's name in the tables.
      flagfile: path under configs/.
      app: the app that runs it ("distill", "train_teacher").
      fixed: run once (seed 0) into the flagfile's own --output_dir, because
        other rows read its output (a teacher, a fine-tuned teacher).
    """

    name: str
    flagfile: str
    app: str = "distill"
    fixed: bool = False


def run_app(app, args, log_path, env=None):
    """`python -m apps.<app> <args>` from the repo root, output appended to `log_path`.

    Returns the command as a string; raises `RuntimeError` naming the log on failure.
    """
    cmd = [sys.executable, "-m", f"apps.{app}", *args]
    shown = " ".join(["python", "-m", f"apps.{app}", *args])
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ {shown}\n")
        log.flush()
        full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    if proc.returncode != 0:
        raise RuntimeError(f"{shown} failed (exit {proc.returncode}); see {log_path}")
    return shown


def export_face_model(model, folder, log_path, latency_calls=300, quantizations=None):
    """apps.export of a 16x16 face model into `folder/export` on the aligned LFW crops
    (200 parity images, 200 int8 calibration images, `latency_calls` one-thread LiteRT
    calls), unless that folder already has a parity.json with every asked quantisation.

    Returns:
      (the export's parity["tflite"] dict, [the command run] or []).
    """
    ex = os.path.join(folder, "export")
    parity = os.path.join(ROOT, ex, "parity.json")
    commands = []
    done = os.path.exists(parity) and (
        not quantizations or set(quantizations.split(",")) <= set(read_json(parity)["tflite"])
    )
    if not done:
        args = [f"--model={model}"]
        if quantizations:
            args.append(f"--quantizations={quantizations}")
        args += [
            "--data=identity_folder",
            "--data_dir=saved_models/lfw_aligned",
            "--teacher_size=112",
            "--student_size=16",
            "--parity_images=200",
            "--representative_images=200",
            f"--latency_calls={latency_calls}",
            f"--output_dir={ex}",
        ]
        commands.append(run_app("export", args, log_path))
    return read_json(os.path.join(ex, "parity.json"))["tflite"], commands


def run_dir(runs, row, seed):
    """The folder of one run: the flagfile's own --output_dir for a fixed row."""
    if row.fixed:
        return flag_value(row.flagfile, "output_dir")
    return os.path.join(runs, row.name, f"seed{seed}")


def run_rows(rows, seeds, runs, log_path, extra=(), env=None):
    """Run every row for every seed (fixed rows once); yields (row, seed, folder, command).

    A run is done when its metrics.json exists and was made by the same flags: each
    run folder keeps `bench_flags.txt` (the flagfile with its nested files inlined,
    plus the added flags); when the flagfile has changed since, the folder is removed
    and the row runs again.
    """
    import shutil

    sys.path.insert(0, ROOT)
    from apps.runner import _flatten

    for row in rows:
        for seed in [0] if row.fixed else seeds:
            folder = run_dir(runs, row, seed)
            args = [f"--flagfile={row.flagfile}", *extra]
            if not row.fixed:
                args += [f"--seed={seed}", f"--output_dir={folder}"]
            shown = " ".join(["python", "-m", f"apps.{row.app}", *args])
            flags = "\n".join([*_flatten(os.path.join(ROOT, row.flagfile)), *args[1:]]) + "\n"
            here = os.path.join(ROOT, folder)
            stamp = os.path.join(here, "bench_flags.txt")
            if os.path.exists(os.path.join(here, "metrics.json")):
                if os.path.exists(stamp) and open(stamp).read() != flags:
                    print(f"--- {row.name} seed {seed}: its flags changed; running it again")
                    shutil.rmtree(here)
            if not os.path.exists(os.path.join(here, "metrics.json")):
                print(f"--- {row.name} seed {seed}: {shown}", flush=True)
                t0 = time.perf_counter()
                run_app(row.app, args, log_path, env)
                print(f"    done in {time.perf_counter() - t0:.0f} s", flush=True)
            if not os.path.exists(stamp):
                with open(stamp, "w") as f:
                    f.write(flags)
            yield row, seed, folder, shown


def read_json(path):
    with open(os.path.join(ROOT, path)) as f:
        return json.load(f)


def flag_value(flagfile, name):
    """The value a flagfile (following nested flagfiles) gives `--name`; the last one wins."""
    value = None
    with open(os.path.join(ROOT, flagfile)) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--flagfile="):
                inner = flag_value(line.split("=", 1)[1], name)
                value = inner if inner is not None else value
            elif line.startswith(f"--{name}="):
                value = line.split("=", 1)[1]
    return value


def crrcd_terms(history):
    """CRRCD's relation contrastive term at the first and last epoch of a run's history
    ({} for a run without it), as the benchmarks record it."""
    term = history.get("crrcd")
    return {"crrcd_term_first": term[0], "crrcd_term_last": term[-1]} if term else {}


def mean_std(values):
    """(mean, sample std) of a list; std 0 for one value."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values, scale=100.0, digits=2):
    """ "mean +- std" of a list of fractions, as percentages."""
    m, s = mean_std([scale * v for v in values])
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def previous_rows(name, rerun, flags=None):
    """Rows and commands of bench/results/<name>.json that this bench run does not redo, so
    a bench run on some rows or seeds keeps the others; each kept row keeps its date.

    Args:
      name: the benchmark.
      rerun: the (row, seed) pairs this run measures; their old rows are dropped.
      flags: {row: flags_sha1 of its flagfile now}; an old row of such a row whose recorded
        `flags_sha1` differs was made by other flags and is dropped too (rows from before
        the fingerprint was recorded have none and are kept).
    """
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return [], []
    old = read_json(path)
    flags = flags or {}
    kept = [
        {"date": old.get("date"), **r}
        for r in old["rows"]
        if (r["row"], r["seed"]) not in rerun
        and (r["row"] not in flags or r.get("flags_sha1", flags[r["row"]]) == flags[r["row"]])
    ]
    return kept, (list(old.get("commands", [])) if kept else [])


def sorted_rows(rows, order):
    """Rows sorted by the first place of their row name in `order` (names not in it last),
    then seed."""
    place = {}
    for i, name in enumerate(order):
        place.setdefault(name, i)
    return sorted(rows, key=lambda r: (place.get(r["row"], len(place)), r["seed"]))


def merge_previous(name, rows, commands, flags, order=()):
    """This run's rows and commands with those of bench/results/<name>.json it did not redo
    (`previous_rows`: the (row, seed) pairs in `rows` are the ones redone), sorted by
    `sorted_rows` with the names of `order` first, the others as they first appear.

    Returns:
      (rows, commands).
    """
    kept, kept_commands = previous_rows(name, {(r["row"], r["seed"]) for r in rows}, flags)
    merged = kept + rows
    return sorted_rows(merged, [*order, *(r["row"] for r in merged)]), kept_commands + commands


def flags_sha1(flagfile):
    """Fingerprint of a flagfile with its nested flagfiles inlined (comments dropped)."""
    import hashlib

    sys.path.insert(0, ROOT)
    from apps.runner import _flatten

    return hashlib.sha1("\n".join(_flatten(os.path.join(ROOT, flagfile))).encode()).hexdigest()


def write_results(name, rows, commands, markdown, **extra):
    """bench/results/<name>.json (rows, commands, date, extra fields) and <name>.md; a
    row without a date (measured by this run) gets today's."""
    sys.path.insert(0, ROOT)
    from lrface_tf.export import write_json, write_text

    today = datetime.date.today().isoformat()
    record = {
        "name": name,
        "date": today,
        "rows": [{"date": today, **r} for r in rows],  # kept rows keep their own date
        "commands": sorted(set(commands)),
        **extra,
    }
    write_json(os.path.join(RESULTS, f"{name}.json"), record)
    write_text(os.path.join(RESULTS, f"{name}.md"), markdown)
    print(markdown)


def update_header(flagfile, result):
    """Write `result` (one line) into the flagfile's "# result:" lines.

    A flagfile may carry one result line per benchmark (recipe selection on validation
    pairs, the final test rows): the line whose text starts with the same word as `result`
    is replaced, as is a "not run yet" line; otherwise the line is added after the others.
    """
    path = os.path.join(ROOT, flagfile)
    with open(path) as f:
        lines = f.read().splitlines()
    key = result.split()[0]
    found = [i for i, line in enumerate(lines) if line.startswith("# result:")]
    for i in found:
        text = lines[i][len("# result:") :].split()
        if not text or text[0] == key or text[:3] == ["not", "run", "yet"]:
            lines[i] = f"# result: {result}"
            break
    else:
        lines.insert(found[-1] + 1 if found else 1, f"# result: {result}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
