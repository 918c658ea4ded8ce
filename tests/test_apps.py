"""The apps as a user runs them: subprocesses with flagfiles, one-line errors,
run records, and a tiny end-to-end teacher -> student -> TFLite chain."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def run_app(app, *flags, cwd=ROOT, env=None, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"apps.{app}", *flags],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "FATAL"))]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


BAD_FLAGS = [
    (["--student_size=32", "--teacher_size=28"], "student_size must be <= teacher_size"),
    (["--method=horkdd"], "--method"),
    (["--bogus_flag=1"], "bogus_flag"),
    (
        ["--method=baseline", "--strategy=mirrored", "--cpu_devices=2", "--batch_size=3"],
        "does not divide across 2",
    ),
    (["--method=kd", "--teacher=/nonexistent/teacher.keras"], "/nonexistent/teacher.keras"),
    (["--method=kd"], "needs a teacher"),
    (["--data=identity_folder", "--method=baseline"], "--data_dir"),
    (["--method=baseline", "--batch_size=0"], "batch_size must be >= 1"),
    (["--method=baseline", "--epochs=0"], "epochs must be >= 1"),
    (["--method=baseline", "--epochs=-1"], "epochs must be >= 1"),
    (["--method=baseline", "--learning_rate=-0.1"], "learning_rate must be > 0"),
    (["--method=baseline", "--max_train_examples=-1"], "max_train_examples must be >= 0"),
    (["--method=baseline", "--labelled_per_class=-3"], "labelled_per_class must be >= 0"),
    (["--method=baseline", "--lr_sizes=64"], "--lr_sizes [64] exceed --teacher_size 28"),
    (["--method=kd", "--teacher=x.keras", "--kd_temperature=nan"], "must be finite"),
    (["--method=crrcd", "--teacher=x.keras", "--crrcd_queue=0"], "queue_size must be >= 1"),
]

# Every case in one process: absl's flags are reset between cases, and the app's own
# entry point (`runner.run`) turns each into its one-line error and exit status.
_DRIVER = """
import contextlib, io, json, sys
from absl import flags
from apps import distill, runner
out = []
for argv in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    sys.argv, err, code = ["distill", *argv], io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            runner.run(distill.main, adopt=distill.GROUPS)
        except SystemExit as e:
            code = e.code
    out.append({"returncode": code, "stderr": err.getvalue()})
print("RESULTS" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """{case index: (completed run, its --output_dir)} for every BAD_FLAGS case."""
    import types

    root = tmp_path_factory.mktemp("bad_flags")
    argvs = [[f"--output_dir={root / str(i)}", *flags] for i, (flags, _) in enumerate(BAD_FLAGS)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(argvs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS")]
    assert lines, proc.stderr[-3000:]
    results = json.loads(lines[0][len("RESULTS") :])
    return {i: (types.SimpleNamespace(**r), root / str(i)) for i, r in enumerate(results)}


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(BAD_FLAGS)), ids=lambda i: BAD_FLAGS[i][1])
def test_bad_flags_give_one_line_errors_and_write_nothing(bad_flag_runs, case):
    proc, out = bad_flag_runs[case]
    assert BAD_FLAGS[case][1] in one_line_error(proc)
    assert not out.exists()


@pytest.mark.slow
def test_flagfile_with_unknown_flag(tmp_path):
    cfg = tmp_path / "x.cfg"
    cfg.write_text(f"--flagfile={ROOT}/configs/fmnist/base.cfg\n--method=kd\n--temprature=3\n")
    assert "temprature" in one_line_error(run_app("distill", f"--flagfile={cfg}"))


@pytest.mark.slow
def test_teacher_student_export_chain(tmp_path):
    if not os.path.exists(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    common = [
        f"--flagfile={ROOT}/configs/fmnist/base.cfg",
        "--max_train_examples=2048",
        "--verbose=0",
        "--batch_size=64",
    ]
    t_dir, s_dir, e_dir = tmp_path / "teacher", tmp_path / "student", tmp_path / "export"
    proc = run_app("train_teacher", *common, "--epochs=3", f"--output_dir={t_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("teacher.keras", "flags.cfg", "config.json", "metrics.json"):
        assert (t_dir / name).exists(), name
    assert (t_dir / "tensorboard").is_dir()
    assert not (t_dir / "backup").exists()  # BackupAndRestore cleans up after a finished run
    t_metrics = json.loads((t_dir / "metrics.json").read_text())
    assert t_metrics["test"]["n"] == 10000
    assert t_metrics["test"]["top1"] > 0.4  # 10 classes: chance is 0.1

    # A teacher of another input size is refused before anything is written.
    proc = run_app(
        "distill",
        *common,
        "--method=kd",
        "--teacher_size=32",
        f"--teacher={t_dir / 'teacher.keras'}",
        f"--output_dir={tmp_path / 'x'}",
    )
    assert "takes 28x28 inputs but the HR images are 32x32" in one_line_error(proc)
    assert not (tmp_path / "x").exists()

    proc = run_app(
        "distill",
        *common,
        "--method=kd",
        "--epochs=2",
        f"--teacher={t_dir / 'teacher.keras'}",
        f"--output_dir={s_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s_metrics = json.loads((s_dir / "metrics.json").read_text())
    assert set(s_metrics["history"]) >= {"loss", "task", "kd"}
    assert s_metrics["test"]["top1"] > 0.3
    config = json.loads((s_dir / "config.json").read_text())
    assert config["method"] == "kd" and config["student"]["input_size"] == 7
    assert config["hyperparameters"] == {
        "task_weight": 0.1,
        "kd_weight": 0.9,
        "kd_temperature": 4.0,
    }
    assert s_metrics["data"]["subset"]["max_examples"] == 2048
    spec = json.loads((s_dir / "degradation.json").read_text())
    assert spec["kernel"] == "area" and spec["sizes"] == [7]
    # The resolved flagfile reproduces the run's settings.
    assert "--student_size=7" in (s_dir / "flags.cfg").read_text()

    proc = run_app(
        "export",
        "--max_train_examples=2048",
        f"--model={s_dir / 'student.keras'}",
        "--quantizations=float32,int8",
        "--parity_images=200",
        f"--output_dir={e_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parity = json.loads((e_dir / "parity.json").read_text())
    assert parity["tflite"]["float32"]["logits"]["max_abs_error"] < 1e-3
    assert parity["tflite"]["float32"]["logits"]["top1_agreement"] == 1.0
    assert parity["tflite"]["int8"]["logits"]["top1_agreement"] > 0.9
    assert (e_dir / "saved_model" / "saved_model.pb").exists()
    assert not [p for p in os.listdir(e_dir) if p.startswith(".tmp-")]

    proc = run_app(
        "evaluate",
        f"--models={s_dir / 'student.keras'}",
        "--probe_sizes=7,full",
        f"--output_dir={tmp_path / 'eval'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]
    assert [r["probe_size"] for r in rows] == [7, 28]
    # A 7px student sees a 28px probe only at 7px: both rows score the same.
    assert rows[0]["top1"] == pytest.approx(s_metrics["test"]["top1"], abs=1e-6)
    assert rows[1]["top1"] == pytest.approx(rows[0]["top1"], abs=1e-6)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_an_uninterrupted_run(tmp_path):
    if not os.path.exists(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    import keras
    import numpy as np

    base = [
        f"--flagfile={ROOT}/configs/fmnist/base.cfg",
        "--method=baseline",
        "--max_train_examples=1024",
        "--batch_size=64",
        "--epochs=3",
        "--verbose=0",
        "--student_width=0.5",
        "--deterministic",
    ]
    ref, run = tmp_path / "uninterrupted", tmp_path / "killed"
    proc = run_app("distill", *base, f"--output_dir={ref}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 16 steps per epoch: die by SIGKILL in the middle of epoch 2.
    proc = run_app("distill", *base, f"--output_dir={run}", "--debug_sigkill_at_step=24")
    assert proc.returncode == -9
    assert (run / "backup").is_dir() and not (run / "student.keras").exists()
    proc = run_app("distill", *base, f"--output_dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = keras.saving.load_model(ref / "student.keras", compile=False).get_weights()
    b = keras.saving.load_model(run / "student.keras", compile=False).get_weights()
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def _mean_colour_model(path):
    """A 16x16 "face model" whose embedding is the image's centred mean colour."""
    import keras

    image = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    centre = keras.initializers.Constant(-0.5)
    emb = keras.layers.Dense(3, kernel_initializer="identity", bias_initializer=centre)(pooled)
    keras.Model(image, {"embedding": emb}).save(path)


def test_evaluate_verification_sweep_writes_results_and_plots(tmp_path):
    from tests.test_eval import _colour_people

    pairs = _colour_people(tmp_path / "faces")
    _mean_colour_model(tmp_path / "m.keras")
    out = tmp_path / "eval"
    proc = run_app(
        "evaluate",
        f"--pairs={pairs}",
        f"--image_root={tmp_path / 'faces'}",
        "--image_size=16",
        f"--models={tmp_path / 'm.keras'}",
        "--probe_sizes=4,full",
        "--sides=probe,both",
        "--histogram_size=full",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    conditions = [(r["probe_size"], r["side"]) for r in rows]
    assert conditions == [(4, "probe"), (4, "both"), (16, "probe"), (16, "both")]
    assert all(r["accuracy"] == 1.0 for r in rows)
    for png in ("roc.png", "accuracy_vs_size.png", "similarity_m.keras.png"):
        assert (out / png).stat().st_size > 1000
    assert "| 4 | 100.00 +- 0.00 | 100.00 +- 0.00 |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tsne_examples=20"], "--tsne_examples needs labelled images"),
        (
            ["--probe_sizes=8,16", "--histogram_size=12"],
            "--histogram_size=12 is not one of --probe_sizes (8,16)",
        ),
    ],
    ids=["tsne_without_labels", "histogram_size_not_swept"],
)
def test_evaluate_refuses_bad_pairs_flags_in_one_line(tmp_path, flags, message):
    proc = run_app(
        "evaluate",
        "--pairs=pairs.txt",
        "--image_root=faces",
        "--models=m.keras",
        *flags,
        f"--output_dir={tmp_path / 'eval'}",
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last, proc.stderr[-2000:]
    assert not (tmp_path / "eval").exists()  # nothing written


def test_evaluate_labels_tell_same_named_models_apart():
    # Three runs' student.keras, two of them in folders named seed0: each label takes as
    # many parent folders as it needs, no more.
    script = (
        "from absl import flags; from apps import evaluate; "
        "flags.FLAGS(['x', '--models=r/a/seed0/student.keras,r/b/seed0/student.keras,"
        "r/c/seed1/student.keras,t.keras']); "
        "print([evaluate._label(p) for p in flags.FLAGS.models])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(
        ["a_seed0_student.keras", "b_seed0_student.keras", "seed1_student.keras", "t.keras"]
    )


@pytest.mark.slow
def test_evaluate_identification_rank_k_cmc_and_linear_probe(tmp_path):
    from tests.test_eval import _colour_people

    _colour_people(tmp_path / "faces", people=8, per=5)
    # Only the six people of this pairs file take part (P6 and P7 are left out).
    people = tmp_path / "people.txt"
    people.write_text("3\nP0 1 2\nP1 1 2\nP2 1 2\nP3 1 P4 1\nP5 1 P0 1\nP1 1 P2 1\n")
    for run in ("a", "b"):  # two runs' models with one file name
        (tmp_path / run).mkdir()
        _mean_colour_model(tmp_path / run / "m.keras")
    out = tmp_path / "eval"
    proc = run_app(
        "evaluate",
        f"--identification_root={tmp_path / 'faces'}",
        f"--identification_people_from={people}",
        "--image_size=16",
        f"--models={tmp_path / 'a' / 'm.keras'},{tmp_path / 'b' / 'm.keras'}",
        "--probe_sizes=4,full",
        "--tsne_examples=20",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert results["people_from"] == {"pairs": [str(people)], "people_left_out": 2}
    assert [(r["probe_size"], r["people"], r["probes"]) for r in rows] == [
        (4, 6, 24),
        (16, 6, 24),
    ] * 2
    # One colour per person: every probe finds its person first, and so does the probe softmax.
    assert all(r["rank1"] == 1.0 and r["linear_probe_top1"] == 1.0 for r in rows)
    assert (out / "cmc.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    for run in ("a", "b"):  # told apart by their folders
        assert f"| {run}_m.keras | 4 | 100.00 | 100.00 | 100.00 | 100.00 |" in md
    # The t-SNE maps: the 4 people with the most images (5 each) fit in 20 images.
    for tsne, run in zip(results["tsne"], ("a", "b"), strict=True):
        assert (tsne["probe_size"], tsne["images"], tsne["classes"]) == (4, 20, 4)
        assert tsne["knn5_accuracy"] == 1.0
        assert (out / f"tsne_{run}_m.keras.png").stat().st_size > 1000


LFW = os.path.join(ROOT, "..", "shared", "data", "lfw")


@pytest.mark.slow
def test_a_tiny_face_run_from_a_flagfile_holds_out_the_test_people(tmp_path):
    """configs/lfw/base.cfg at small sizes on six LFW people, two of them in pairsDevTest:
    those two are held out and counted; the run record says what was used."""
    import keras

    from lrface_tf.data.datasets import lfw_pairs

    devtest = os.path.join(LFW, "pairsDevTest.txt")
    if not os.path.exists(devtest):
        pytest.skip("../shared/data/lfw is not beside the repository")
    images = os.path.join(LFW, "lfw-deepfunneled")
    held = {n for p in lfw_pairs(devtest) for n in (p.name_a, p.name_b)}
    people = sorted(p for p in os.listdir(images) if len(os.listdir(os.path.join(images, p))) >= 6)
    chosen = [p for p in people if p not in held][:4] + [p for p in people if p in held][:2]
    root = tmp_path / "faces"
    root.mkdir()
    for p in chosen:
        (root / p).symlink_to(os.path.join(images, p))
    image = keras.Input((32, 32, 3))
    emb = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(image))
    keras.Model(image, {"embedding": emb}).save(tmp_path / "teacher.keras")
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(
        "\n".join(
            [
                f"--flagfile={ROOT}/configs/lfw/base.cfg",
                "--method=kd",
                "--teacher_cache",
                f"--data_dir={root}",
                f"--teacher={tmp_path / 'teacher.keras'}",
                "--teacher_size=32",
                "--student_size=8",
                "--student_backbone=resnet8",
                "--student_width=0.25",
                "--embedding_dim=8",
                "--views=2",
                "--augment=none",
                f"--cache_dir={tmp_path / 'cache'}",
                "--cache_runtime=keras",
                "--epochs=1",
                "--batch_size=8",
                "--verbose=0",
                f"--output_dir={tmp_path / 'run'}",
            ]
        )
        + "\n"
    )
    proc = run_app("distill", f"--flagfile={cfg}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    data = metrics["data"]
    assert data["roots"][0]["excluded_people"] == 2 and data["classes"] == 4
    kept = sum(len(os.listdir(root / p)) for p in chosen[:4])
    assert data["used"] == data["labelled"] == kept and data["unlabelled"] == 0
    assert data["exclude_people_from"] == ["../shared/data/lfw/pairsDevTest.txt"]
    assert metrics["teacher_head"]["kind"] == "class_mean"
    assert metrics["teacher_cache"]["status"] == "built" and metrics["teacher_cache"]["views"] == 2
    assert metrics["hyperparameters"]["kd_weight"] == 0.5  # from configs/lfw/base.cfg
    assert metrics["command"].startswith("python -m apps.distill --flagfile=")
    config = json.loads((run / "config.json").read_text())
    assert config["views"]["count"] == 2 and config["teacher_head"] == "class_mean"
    assert (
        "--exclude_people_from=../shared/data/lfw/pairsDevTest.txt"
        in (run / "flags.cfg").read_text()
    )
    student = keras.saving.load_model(run / "student.keras", compile=False)
    assert student.input_shape == (None, 8, 8, 3) and student.output["logits"].shape[-1] == 4
    # The RGB face student exports (identity-folder data, no test split): its TFLite model
    # gives the Keras embeddings on real faces of the folder.
    out = tmp_path / "export"
    proc = run_app(
        "export",
        f"--model={run / 'student.keras'}",
        "--data=identity_folder",
        f"--data_dir={root}",
        "--teacher_size=32",
        "--student_size=8",
        "--quantizations=float32",
        "--parity_images=8",
        "--representative_images=8",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parity = json.loads((out / "parity.json").read_text())["tflite"]["float32"]
    assert parity["embedding"]["mean_cosine"] > 0.9999
