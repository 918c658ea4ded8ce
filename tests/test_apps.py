"""The apps as a user runs them: subprocesses with flagfiles, one-line errors,
run records, and a tiny end-to-end teacher -> student -> TFLite chain."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def run_app(app, *flags, cwd=ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", f"apps.{app}", *flags],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line_error(proc):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "FATAL"))]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--student_size=32", "--teacher_size=28"], "student_size must be <= teacher_size"),
        (["--method=horkdd"], "--method"),
        (["--bogus_flag=1"], "bogus_flag"),
        (["--strategy=mirrored", "--cpu_devices=2", "--batch_size=3"], "does not divide across 2"),
        (["--method=kd", "--teacher=/nonexistent/teacher.keras"], "/nonexistent/teacher.keras"),
        (["--method=kd"], "needs --teacher"),
        (["--data=identity_folder", "--method=baseline"], "--data_dir"),
    ],
)
def test_bad_flags_give_one_line_errors_and_write_nothing(tmp_path, flags, message):
    out = tmp_path / "run"
    proc = run_app("distill", f"--output_dir={out}", *flags)
    assert message in one_line_error(proc)
    assert not out.exists()


@pytest.mark.slow
def test_flagfile_with_unknown_flag(tmp_path):
    cfg = tmp_path / "x.cfg"
    cfg.write_text(f"--flagfile={ROOT}/configs/base.cfg\n--method=kd\n--temprature=3\n")
    assert "temprature" in one_line_error(run_app("distill", f"--flagfile={cfg}"))


@pytest.mark.slow
def test_teacher_student_export_chain(tmp_path):
    if not os.path.exists(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    common = [
        f"--flagfile={ROOT}/configs/base.cfg",
        "--max_train_examples=3072",
        "--verbose=0",
        "--batch_size=64",
    ]
    t_dir, s_dir, e_dir = tmp_path / "teacher", tmp_path / "student", tmp_path / "export"
    proc = run_app("train_teacher", *common, "--epochs=3", f"--output_dir={t_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("teacher.keras", "flags.cfg", "flags.json", "degradation.json", "metrics.json"):
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
    assert "takes 28x28 inputs but --teacher_size=32" in one_line_error(proc)
    assert not (tmp_path / "x").exists()

    proc = run_app(
        "distill",
        *common,
        "--method=kd",
        "--epochs=3",
        f"--teacher={t_dir / 'teacher.keras'}",
        f"--output_dir={s_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s_metrics = json.loads((s_dir / "metrics.json").read_text())
    assert set(s_metrics["history"]) >= {"loss", "task", "kd"}
    assert s_metrics["test"]["top1"] > 0.3
    flags = json.loads((s_dir / "flags.json").read_text())
    assert flags["method"] == "kd" and flags["student_size"] == 7
    spec = json.loads((s_dir / "degradation.json").read_text())
    assert spec["kernel"] == "area" and spec["sizes"] == [7]
    # The resolved flagfile reproduces the run's settings.
    assert "--student_size=7" in (s_dir / "flags.cfg").read_text()

    proc = run_app(
        "export",
        *common,
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
        *common,
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
        f"--flagfile={ROOT}/configs/base.cfg",
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


@pytest.mark.slow
def test_write_tfrecords_then_distill_streams_from_them(tmp_path):
    import keras

    from tests.test_eval import _colour_people

    _colour_people(tmp_path / "faces", people=4, per=8, size=24)
    tfr = tmp_path / "tfr"
    proc = run_app(
        "write_tfrecords",
        f"--data_dir={tmp_path / 'faces'}",
        f"--dst={tfr}",
        "--num_shards=3",
        "--verbose=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tfr / "manifest.json").read_text())["num_examples"] == 32
    out = tmp_path / "run"
    proc = run_app(
        "distill",
        f"--flagfile={ROOT}/configs/base.cfg",
        "--data=tfrecord",
        f"--data_dir={tfr}",
        "--method=baseline",
        "--teacher_size=24",
        "--student_size=8",
        "--batch_size=8",
        "--epochs=1",
        "--verbose=0",
        "--student_width=0.25",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["examples"] == 32 and len(metrics["history"]["loss"]) == 1
    student = keras.saving.load_model(out / "student.keras", compile=False)
    assert student.input_shape == (None, 8, 8, 3) and student.output["logits"].shape[-1] == 4
    proc = run_app(
        "distill",
        "--data=tfrecord",
        f"--data_dir={tmp_path / 'faces'}",
        "--method=baseline",
        f"--output_dir={tmp_path / 'bad'}",
    )
    assert "no manifest.json" in one_line_error(proc)


@pytest.mark.slow
def test_evaluate_identification_rank_k_cmc_and_linear_probe(tmp_path):
    from tests.test_eval import _colour_people

    _colour_people(tmp_path / "faces", people=6, per=5)
    _mean_colour_model(tmp_path / "m.keras")
    out = tmp_path / "eval"
    proc = run_app(
        "evaluate",
        f"--identification_root={tmp_path / 'faces'}",
        "--image_size=16",
        f"--models={tmp_path / 'm.keras'}",
        "--probe_sizes=4,full",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["probe_size"], r["people"], r["probes"]) for r in rows] == [(4, 6, 24), (16, 6, 24)]
    # One colour per person: every probe finds its person first, and so does the probe softmax.
    assert all(r["rank1"] == 1.0 and r["linear_probe_top1"] == 1.0 for r in rows)
    assert (out / "cmc.png").stat().st_size > 1000
    assert "| m.keras | 4 | 100.00 | 100.00 | 100.00 | 100.00 |" in (out / "results.md").read_text()
