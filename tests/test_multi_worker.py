"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 == one process.

Keras 3.15's `fit()` fails under this strategy upstream (keras-team/keras#20585);
`Distiller` carries the workaround. Each worker trains the same tiny Distiller
(task + KD + gathered RKD distance) with `fit()` on the same global batches
(tf.data auto-shards by worker), and both must end with the weights of a
single-process run.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
import keras
from lrface_tf.data import DegradationSpec, paired_dataset
from lrface_tf.losses import KDLoss, MaskedCrossEntropy, RKDDistanceLoss
from lrface_tf.models import Distiller, DistillTerm
from lrface_tf.training import is_chief, make_strategy
from tests.test_case import digits, tiny_model

strategy = make_strategy(sys.argv[1])
x, y = digits(256)
with strategy.scope():
    teacher = tiny_model(8, num_classes=10, embedding_dim=6, seed=1)
    teacher.trainable = False
    student = tiny_model(4, num_classes=10, embedding_dim=6, seed=2)
    terms = {"kd": DistillTerm(KDLoss(2.0), 0.5, "logits"),
             "rkd": DistillTerm(RKDDistanceLoss(), 1.0)}
    d = Distiller(student, teacher, terms, task_loss=MaskedCrossEntropy())
    d.compile(optimizer=keras.optimizers.SGD(0.1))
ds = paired_dataset(x, y, spec=DegradationSpec(sizes=(4,)), batch_size=32, augment="none",
                    training=False, repeat=True)
hist = d.fit(ds, epochs=2, steps_per_epoch=4, verbose=0)
out = {"weights": [w.tolist() for w in student.get_weights()], "loss": hist.history["loss"],
       "chief": is_chief(strategy), "replicas": strategy.num_replicas_in_sync}
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **extra}


@pytest.mark.slow
def test_two_workers_end_with_the_weights_of_one_process(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(
            subprocess.Popen(
                [sys.executable, str(child), "multi_worker", str(tmp_path / f"w{i}.json")],
                cwd=ROOT,
                env=_env(TF_CONFIG=config),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    single = subprocess.run(
        [sys.executable, str(child), "default", str(tmp_path / "one.json")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    w0, w1, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("w0", "w1", "one"))
    assert (w0["chief"], w1["chief"], w0["replicas"]) == (True, False, 2)
    for a, b, c in zip(w0["weights"], w1["weights"], one["weights"]):
        np.testing.assert_array_equal(a, b)  # the workers agree exactly
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)  # and equal one process
    np.testing.assert_allclose(w0["loss"], one["loss"], rtol=1e-5)


@pytest.mark.slow
def test_distill_app_multi_worker_chief_writes_the_run_and_workers_agree(tmp_path):
    """`apps.distill --strategy=multi_worker`: the chief writes the run folder, worker 1
    its own copy under worker_1/; trainable weights agree exactly. (BatchNorm moving
    statistics are per replica, as under MirroredStrategy, so those may differ.)"""
    import keras

    fmnist = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(fmnist):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    flags = [
        f"--flagfile={ROOT}/configs/fmnist/base.cfg",
        "--method=baseline",
        "--epochs=1",
        "--max_train_examples=256",
        "--batch_size=64",
        "--verbose=0",
        "--student_width=0.25",
        "--strategy=multi_worker",
        f"--output_dir={out}",
    ]
    procs = []
    for i in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "apps.distill", *flags],
                cwd=ROOT,
                env=_env(TF_CONFIG=config),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert (out / "metrics.json").exists() and (out / "worker_1" / "student.keras").exists()
    assert not (out / "worker_0").exists()
    chief = keras.saving.load_model(out / "student.keras", compile=False)
    other = keras.saving.load_model(out / "worker_1" / "student.keras", compile=False)
    for a, b in zip(chief.trainable_weights, other.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
