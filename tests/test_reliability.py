"""Failure behaviour (README "Failure behaviour"): no hangs, no silent loss, no half-written
outputs, every bad input named in one line. The apps run as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_apps import ROOT, one_line_error, run_app

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
TINY = ["--method=baseline", "--student_width=0.25", "--verbose=0", "--epochs=1"]


def _faces(root, people=3, per=1, size=24):
    from PIL import Image

    rng = np.random.RandomState(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        for i in range(per):
            img = rng.randint(0, 255, (size, size, 3), np.uint8)
            Image.fromarray(img).save(root / f"p{p}" / f"p{p}_{i + 1:04d}.png")
    return root


def _face_flags(root, out):
    return [
        "--data=identity_folder",
        f"--data_dir={root}",
        "--teacher_size=24",
        "--student_size=8",
        *TINY,
        f"--output_dir={out}",
    ]


@pytest.mark.slow
def test_fewer_examples_than_a_batch_stop_at_once_instead_of_hanging(tmp_path):
    root = _faces(tmp_path / "faces")
    proc = run_app("distill", *_face_flags(root, tmp_path / "run"), "--batch_size=6", timeout=120)
    assert "3 training examples make no full batch of 6" in one_line_error(proc)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_busy_output_folder_is_refused_and_an_unwritable_one_named(tmp_path):
    from lrface_tf.runs import RunFolder

    root = _faces(tmp_path / "faces", per=4)
    with RunFolder(tmp_path / "busy"):
        proc = run_app("distill", *_face_flags(root, tmp_path / "busy"), "--batch_size=4")
    assert "is in use by a live run (pid" in one_line_error(proc)
    assert sorted(os.listdir(tmp_path / "busy")) == [".lock"]
    (tmp_path / "file").write_text("x")
    proc = run_app("distill", *_face_flags(root, tmp_path / "file" / "run"), "--batch_size=4")
    assert "cannot write the output folder" in one_line_error(proc)
    # apps.evaluate checks its folder before evaluating anything.
    proc = run_app(
        "evaluate", "--models=/nonexistent.keras", f"--output_dir={tmp_path / 'file' / 'e'}"
    )
    assert "does not exist" in one_line_error(proc)


@pytest.mark.slow
def test_resume_checks_the_backup_and_keeps_the_whole_history(tmp_path):
    if not os.path.exists(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    base = [
        f"--flagfile={ROOT}/configs/fmnist/base.cfg",
        "--method=baseline",
        "--max_train_examples=512",
        "--batch_size=64",
        "--epochs=3",
        "--verbose=0",
        "--student_width=0.25",
        f"--output_dir={tmp_path / 'run'}",
    ]
    proc = run_app("distill", *base, "--debug_sigkill_at_step=12")  # 8 steps an epoch: epoch 2
    assert proc.returncode == -9
    backup = tmp_path / "run" / "backup"
    state = json.loads((backup / "run_state.json").read_text())
    assert len(state["history"]["loss"]) == 1
    # Another batch size would see another stream: refused, naming backup/ and the change.
    err = one_line_error(run_app("distill", *base, "--batch_size=32"))
    assert f"{backup} was written by another configuration" in err and "batch_size" in err
    # The same command resumes, says so, and records every epoch.
    proc = run_app("distill", *base)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming from step 8 (1 epochs done)" in proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 3 and len(metrics["history"]["epoch_seconds"]) == 3
    assert metrics["train_seconds"] == pytest.approx(sum(metrics["history"]["epoch_seconds"]))


@pytest.mark.slow
def test_a_truncated_backup_is_refused_in_one_line(tmp_path):
    if not os.path.exists(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    base = [
        f"--flagfile={ROOT}/configs/fmnist/base.cfg",
        "--method=baseline",
        "--max_train_examples=256",
        "--batch_size=64",
        "--epochs=2",
        "--verbose=0",
        "--student_width=0.25",
        f"--output_dir={tmp_path / 'run'}",
    ]
    assert run_app("distill", *base, "--debug_sigkill_at_step=6").returncode == -9
    weights = tmp_path / "run" / "backup" / "latest.weights.h5"
    with open(weights, "r+b") as f:
        f.truncate(100)
    err = one_line_error(run_app("distill", *base))
    assert f"{weights} cannot be restored" in err and "to start afresh" in err


@pytest.mark.slow
def test_sigterm_stops_a_run_cleanly_and_keeps_the_backup(tmp_path):
    if not os.path.exists(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "apps.distill",
        f"--flagfile={ROOT}/configs/fmnist/base.cfg",
        "--method=baseline",
        "--max_train_examples=2048",
        "--batch_size=64",
        "--epochs=50",
        "--verbose=0",
        "--student_width=0.25",
        f"--output_dir={out}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "backup" / "latest.weights.h5").exists():
        assert time.time() < deadline and proc.poll() is None, "no backup written"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "stopped: stopped by SIGTERM" in err and "rerun the same command to resume" in err
    assert (out / "backup" / "latest.weights.h5").exists() and not (out / "student.keras").exists()


@pytest.mark.slow
def test_an_export_is_all_or_nothing(tmp_path):
    import keras

    from tests.test_case import tiny_model

    out = tmp_path / "export"
    out.mkdir()
    (out / "student_float32.tflite").write_text("the previous export")
    (out / "parity.json").write_text("{}")
    before = sorted(os.listdir(out))
    # Bad numbers stop before anything is written.
    proc = run_app("export", "--model=x.keras", f"--output_dir={out}", "--parity_images=0")
    assert "does not exist" in one_line_error(proc)
    model = tmp_path / "m.keras"
    tiny_model(7, channels=1, num_classes=10).save(model)
    proc = run_app("export", f"--model={model}", f"--output_dir={out}", "--parity_images=0")
    assert "--parity_images must be >= 1" in one_line_error(proc)
    # A corrupt model file is named (not "file not found").
    (tmp_path / "bad.keras").write_text("not a zip")
    proc = run_app("export", f"--model={tmp_path / 'bad.keras'}", f"--output_dir={out}")
    assert "is not a readable .keras file" in one_line_error(proc)
    assert sorted(os.listdir(out)) == before
    assert (out / "student_float32.tflite").read_text() == "the previous export"
    del keras


@pytest.mark.slow
def test_one_line_errors_for_bad_inputs(tmp_path):
    root = _faces(tmp_path / "faces", per=4)
    # A pairs file whose header announces no pairs.
    (tmp_path / "pairs.txt").write_text("0\n")
    proc = run_app(
        "distill",
        *_face_flags(root, tmp_path / "r1"),
        "--batch_size=4",
        f"--val_pairs={tmp_path / 'pairs.txt'}",
        f"--val_image_root={root}",
    )
    assert "announces no pairs" in one_line_error(proc)
    # An embedding-only teacher cannot give KD logits: say how to get them.
    import keras

    image = keras.Input((24, 24, 3))
    emb = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(image))
    keras.Model(image, {"embedding": emb}).save(tmp_path / "t.keras")
    flags = _face_flags(root, tmp_path / "r2")
    flags[flags.index("--method=baseline")] = "--method=kd"
    proc = run_app("distill", *flags, "--batch_size=4", f"--teacher={tmp_path / 't.keras'}")
    assert "--teacher_head=class_mean" in one_line_error(proc)
    assert not (tmp_path / "r2").exists()
    # A malformed TF_CONFIG is named.
    env_cmd = ["--strategy=multi_worker", *_face_flags(root, tmp_path / "r3")]
    proc = run_app("distill", *env_cmd, env={"TF_CONFIG": "{not json"})
    assert "TF_CONFIG is not valid" in one_line_error(proc)
    # Non-integer LR sizes are refused, not truncated.
    from lrface_tf.data.degrade import DegradationSpec

    with pytest.raises(ValueError, match="must be an integer"):
        DegradationSpec(sizes=(7.9,))


@pytest.mark.slow
def test_a_missing_multi_worker_peer_gives_up_in_bounded_time(tmp_path):
    from tests.test_multi_worker import _free_port

    root = _faces(tmp_path / "faces", per=4)
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    t0 = time.time()
    proc = run_app(
        "distill",
        "--strategy=multi_worker",
        "--worker_timeout=10",
        "--batch_size=4",
        *_face_flags(root, tmp_path / "run"),
        env={"TF_CONFIG": config},
        timeout=240,
    )
    assert proc.returncode == -9 and time.time() - t0 < 200
    assert "waited 10 s for the other workers of TF_CONFIG" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_help_lists_the_flags_and_flagfiles_resolve_from_anywhere(tmp_path):
    proc = run_app("distill", "--help")
    assert "--method" in proc.stdout and "--teacher_cache" in proc.stdout
    proc = run_app("distill", "--flagfile=configs/fmnist/kd.cfg", "--epochs=0", cwd=tmp_path)
    assert "epochs must be >= 1" in one_line_error(proc)
    # The demo's flagfile parses (absl prints the help, exit 1, after parsing every flag).
    proc = run_app("demo", "--flagfile=configs/demo.cfg", "--helpshort", cwd=tmp_path)
    assert "--few_labels_per_class" in proc.stdout and "error" not in proc.stderr.lower()
