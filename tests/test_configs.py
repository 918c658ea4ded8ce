"""Every flagfile under configs/ is an experiment that parses and builds a valid config.

Each runnable flagfile starts with its command and a "# result:" line; its flags
(nested base files included) must be known to the app its command names, and must
build the frozen config that app runs, with every value checked. Nothing is trained.
"""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags

import apps.distill
import apps.train_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.cfg"), recursive=True))
FLAGS = flags.FLAGS


def _added_flags(path):
    """Flags a bench adds to a flagfile ("# bench.x adds: --a=<...>"), placeholders filled."""
    import re

    with open(path) as f:
        for line in f:
            if re.match(r"# bench\.\w+ adds: ", line):
                return [
                    re.sub(r"<[^>]*>", "placeholder", a) for a in line.split(": ", 1)[1].split()
                ]
    return []


def _parse(path):
    FLAGS.unparse_flags()
    cwd = os.getcwd()
    os.chdir(ROOT)  # flagfiles name their nested files from the repository root
    try:
        FLAGS(["prog", f"--flagfile={path}", *_added_flags(path)])
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_flagfile_parses_and_builds_its_config(path):
    with open(path) as f:
        first, second = f.readline(), f.readline()
    assert second.startswith("# result:"), f"{path}: the second line must be '# result: ...'"
    if "not run on its own" in first:
        return
    rel = os.path.relpath(path, ROOT)
    assert first.strip().endswith(f"--flagfile={rel}"), f"{path}: first line must be its command"
    app = first.split("python -m apps.")[1].split()[0]
    from apps.runner import _flatten

    flat = "\n".join(_flatten(path))
    if "../shared/" in flat and not os.path.isdir(os.path.join(ROOT, "..", "shared")):
        pytest.skip("../shared (LFW) is not beside the repository")
    if app in ("demo", "build_dataset", "evaluate"):
        # Their own flags clash with apps.distill's in one process: a subprocess parses them.
        proc = subprocess.run(
            [sys.executable, "-m", f"apps.{app}", f"--flagfile={rel}", "--helpshort"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT},
        )
        assert "error" not in proc.stderr.lower(), proc.stderr[-2000:]
        assert "Try --helpfull" in proc.stdout, proc.stdout[-2000:]
        return
    _parse(path)
    try:
        if app == "distill":
            cfg = apps.distill.config()
            assert cfg.output_dir.startswith("saved_models/") or _added_flags(path)
            assert cfg.to_dict()["hyperparameters"]["task_weight"] >= 0
        elif app == "train_teacher":
            from apps.flag_groups import data, network, training

            data.config(FLAGS.teacher_size, FLAGS.seed)
            network.model_config(FLAGS.teacher_backbone, FLAGS.teacher_size, FLAGS.teacher_width)
            training.config()
        else:
            pytest.fail(f"{path}: unknown app {app}")
    finally:
        FLAGS.unparse_flags()


def test_every_table_row_has_a_flagfile():
    from bench import fmnist_7px, lfw_devtest

    for name in fmnist_7px.ROWS:
        assert os.path.exists(os.path.join(ROOT, "configs", "fmnist", f"{name}.cfg")), name
    for name in lfw_devtest.ROWS:
        assert os.path.exists(os.path.join(ROOT, "configs", "lfw", f"{name}.cfg")), name


def test_lfw_devtest_names_a_row_without_a_flagfile_in_one_line(capsys):
    from bench import lfw_devtest

    with pytest.raises(SystemExit) as stop:
        lfw_devtest.main(["--rows=teacher,sface_lr,no_such_row", "--configs=configs/lfw/val"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no_such_row" in last and "sface_lr" not in last and "configs/lfw/val" in last


def test_a_bench_keeps_the_seeds_it_does_not_rerun_while_their_flags_are_unchanged(
    tmp_path, monkeypatch
):
    import json

    from bench import runner

    monkeypatch.setattr(runner, "RESULTS", str(tmp_path))
    old = [
        {"row": "a", "seed": 0, "flags_sha1": "x", "v": 1},
        {"row": "a", "seed": 1, "flags_sha1": "x", "v": 2},
        {"row": "b", "seed": 0, "v": 3},  # from before the fingerprint was recorded
        {"row": "c", "seed": 0, "flags_sha1": "old", "v": 4},
        {"row": "d", "seed": 2, "flags_sha1": "z", "v": 5},  # a row this run leaves alone
    ]
    (tmp_path / "t.json").write_text(json.dumps({"date": "d", "rows": old, "commands": ["k"]}))
    kept, commands = runner.previous_rows("t", {("a", 1)}, {"a": "x", "b": "y", "c": "new"})
    assert [(r["row"], r["seed"]) for r in kept] == [("a", 0), ("b", 0), ("d", 2)]
    assert all(r["date"] == "d" for r in kept) and commands == ["k"]
    merged = runner.sorted_rows(
        [*kept, {"row": "a", "seed": 1}, {"row": "e", "seed": 0}], ["d", "a", "d"]
    )
    assert [(r["row"], r["seed"]) for r in merged] == [
        ("d", 2),
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("e", 0),
    ]
    rows, cmds = runner.merge_previous("t", [{"row": "a", "seed": 1}], ["n"], {"a": "x"}, ["d"])
    assert [(r["row"], r["seed"]) for r in rows] == [
        ("d", 2),
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("c", 0),  # not rerun and not fingerprinted here: kept
    ]
    assert cmds == ["k", "n"]
    runner.write_results("t", rows, cmds, "")
    written = json.loads((tmp_path / "t.json").read_text())["rows"]
    today = runner.datetime.date.today().isoformat()
    assert [r["date"] for r in written] == ["d", "d", today, "d", "d"]


def test_update_header_replaces_only_the_result_line_of_the_same_benchmark(tmp_path, monkeypatch):
    from bench import runner

    monkeypatch.setattr(runner, "ROOT", str(tmp_path))
    path = tmp_path / "x.cfg"
    path.write_text("# python -m apps.distill --flagfile=x.cfg\n# result: not run yet\n--a=1\n")
    runner.update_header("x.cfg", "pairsDevTrain 1")
    runner.update_header("x.cfg", "LFW 2")
    runner.update_header("x.cfg", "pairsDevTrain 3")
    assert path.read_text().splitlines() == [
        "# python -m apps.distill --flagfile=x.cfg",
        "# result: pairsDevTrain 3",
        "# result: LFW 2",
        "--a=1",
    ]


def test_the_latency_plot_labels_every_point_without_two_labels_overlapping():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from bench import lfw_devtest

    # Five rows within 0.5 ms and 1.5 points of each other, as the fine-tuned SFace rows are.
    points = [(f"row_{i}", 6.0 + 0.1 * i, 97.0 + 0.3 * (i % 3)) for i in range(5)]
    points += [("alone", 0.2, 70.0)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    ax.set_xscale("log")
    fig.tight_layout()
    markers = [(x, y) for _, x, y in points]
    texts = lfw_devtest.place_labels(ax, points, markers)
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): Text.get_window_extent(t, renderer) for t in texts}
    plt.close(fig)
    assert sorted(boxes) == sorted(p[0] for p in points)
    names = sorted(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not boxes[a].overlaps(boxes[b]), (a, b)
    # Right-hand points are labelled on their left, so the words stay inside the axes.
    axes = ax.get_window_extent(renderer)
    assert all(boxes[f"row_{i}"].x1 <= axes.x1 for i in range(5))
    assert boxes["alone"].x0 > ax.transData.transform((0.2, 70.0))[0]
