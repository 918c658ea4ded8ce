"""Face data sets on TFDS, on small images the tests write (PGM, TIFF, WEBP, JPEG in person
folders, PNG in a flat unlabelled folder): every image and label round-trips, the stored
teacher outputs are the teacher's on each view, the stream shows one view per example with
its stored outputs, resumes exactly, is the same under two mirrored replicas, honours the
subset flags as the in-memory source does, and trains through `distill` and `apps.distill`."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.data.datasets import DataError
from lrface_tf.data.degrade import DegradationSpec
from lrface_tf.data.sources import DataConfig, load_training_data
from lrface_tf.data.tfds_faces import FaceDataset, build_face_dataset
from lrface_tf.data.views import ViewSpec
from lrface_tf.eval.pairs import load_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEOPLE, PER, FLAT, SIZE = 4, 5, 3, 16
FORMATS = (("pgm", "PPM", {}), ("tif", "TIFF", {}), ("webp", "WEBP", {"lossless": True}))
FORMATS += (("jpg", "JPEG", {"quality": 95}),)
VIEWS = ViewSpec(count=3, shift=0.05, colour=0.1)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """4 people x 5 images (PGM, TIFF, WEBP, JPEG; 20-28 px; one colour per person plus
    noise), a flat folder of 3 PNGs, and a pairs file naming person_3 (held out)."""
    from PIL import Image

    base = tmp_path_factory.mktemp("tfds_faces")
    rng = np.random.default_rng(0)
    for p in range(PEOPLE):
        folder = base / "people" / f"person_{p}"
        folder.mkdir(parents=True)
        for i in range(PER):
            ext, fmt, kw = FORMATS[(p + i) % len(FORMATS)]
            side = 20 + 4 * (i % 3)
            img = np.full((side, side, 3), 40, np.uint8)
            img[..., p % 3] = 80 + 40 * p
            img = np.clip(img + rng.integers(0, 50, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img[..., 0] if fmt == "PPM" else img).save(
                folder / f"person_{p}_{i + 1:04d}.{ext}", fmt, **kw
            )
    (base / "flat").mkdir()
    for i in range(FLAT):
        noise = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(noise).save(base / "flat" / f"u{i}.png")
    pairs = base / "pairs.txt"
    pairs.write_text("1\nperson_3 1 2\nperson_3 1 stranger 1\n")  # 2 people, 1 with a folder
    return {"root": str(base / "people"), "flat": str(base / "flat"), "pairs": str(pairs)}


def _teacher(path, with_logits, classes=PEOPLE, seed=1):
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = {"embedding": keras.layers.Dense(6, name="embedding")(x)}
    if with_logits:
        out["logits"] = keras.layers.Dense(classes, name="logits")(out["embedding"])
    keras.Model(image, out).save(path)
    return str(path)


@pytest.fixture(scope="module")
def built(faces, tmp_path_factory):
    """Three data sets: plain (person_3 held out, 2 shards); with a logit teacher's
    outputs of 3 views (everyone, 3 shards); with an embedding-only teacher's (2 views)."""
    base = tmp_path_factory.mktemp("tfds_built")
    t_logits = _teacher(base / "t_logits.keras", with_logits=True)
    t_emb = _teacher(base / "t_emb.keras", with_logits=False, seed=2)
    flat = {"unlabelled_dirs": [faces["flat"]], "progress": False}
    plain = build_face_dataset(
        base / "plain", [faces["root"]], exclude_people_from=[faces["pairs"]], num_shards=2, **flat
    )
    logits = build_face_dataset(
        base / "logits", [faces["root"]], teacher=t_logits, views=VIEWS, num_shards=3, **flat
    )
    emb = build_face_dataset(
        base / "emb", [faces["root"]], teacher=t_emb, views=ViewSpec(count=2), **flat
    )
    return {"plain": plain, "logits": logits, "emb": emb, "t_logits": t_logits, "t_emb": t_emb}


def _records(faces_ds, **kw):
    return sorted(faces_ds.records(**kw).as_numpy_iterator(), key=lambda r: r["index"])


# ------------------------------------------------------------------------ building
def test_every_image_and_label_round_trips_with_its_metadata(faces, built, tmp_path):
    import tensorflow_datasets as tfds

    from lrface_tf.data.images import read_image
    from lrface_tf.data.sources import list_face_folders

    ds = built["plain"]
    listing = list_face_folders([faces["root"]], [faces["flat"]], [faces["pairs"]])
    n = (PEOPLE - 1) * PER + FLAT
    assert len(ds) == ds.num_examples == len(listing.paths) == n
    raw, decoded = _records(ds, decode_images=False), _records(ds)
    assert [r["index"] for r in raw] == list(range(n))
    for r, d, path, label in zip(raw, decoded, listing.paths, listing.labels):
        assert r["path"].decode() == os.path.abspath(path) and r["label"] == label
        assert r["image"] == open(path, "rb").read()  # the original bytes, any format
        np.testing.assert_array_equal(d["image"], read_image(path))  # FaceImage decodes all
        person = os.path.basename(os.path.dirname(path)) if label >= 0 else ""
        assert r["person"].decode() == person
    assert {r["path"].decode().rsplit(".", 1)[-1] for r in raw} == {
        "pgm",
        "tif",
        "webp",
        "jpg",
        "png",
    }
    np.testing.assert_array_equal(ds.labels(), listing.labels)
    info = ds.builder.info
    assert (info.name, str(info.version), ds.num_shards) == ("identity_faces", "1.0.0", 2)
    assert sum(info.splits["train"].shard_lengths) == n
    meta = ds.metadata
    assert meta["splits"] == {"train": n} and meta["class_names"] == listing.class_names
    assert meta["report"]["exclude_people_from"] == [faces["pairs"]]
    assert meta["report"]["excluded_people"] == 2  # named in the pairs file
    assert meta["report"]["roots"][0]["excluded_people"] == 1  # with a folder here
    assert "person_3" not in str(meta["class_names"])
    assert "held out: 1 of them had folders here" in info.description
    assert meta["views"] is None and meta["teacher"] is None
    # TFDS's own tools read it.
    fig = tfds.show_examples(ds.builder.as_dataset("train"), info, rows=1, cols=3)
    assert len(fig.axes) == 3
    # Checksums: a changed shard is found.
    assert ds.verify() == 2
    copy = tmp_path / "copy"
    shutil.copytree(ds.path, copy)
    shard = sorted(p for p in os.listdir(copy) if ".tfrecord-" in p)[0]
    with open(copy / shard, "r+b") as f:
        f.seek(40)
        f.write(b"\x00\x01\x02")
    with pytest.raises(DataError, match="checksum mismatch"):
        FaceDataset(copy).verify()
    with pytest.raises(DataError, match="already holds a data set"):
        build_face_dataset(os.path.dirname(os.path.dirname(ds.path)), [faces["root"]])


def test_stored_outputs_are_the_teachers_on_each_view(built):
    import keras

    from lrface_tf.data.pipeline import to_float
    from lrface_tf.data.teacher_cache import fingerprint, image_keys
    from lrface_tf.data.views import apply_view

    ds = built["logits"]
    teacher = keras.saving.load_model(built["t_logits"], compile=False)
    assert ds.teacher["fingerprint"] == fingerprint(teacher, VIEWS, SIZE, "keras")
    assert ds.views == VIEWS and ds.image_size == SIZE
    records = _records(ds, decode_images=False)
    pixels = load_images([r["path"].decode() for r in records], SIZE)
    params = VIEWS.params(image_keys(pixels))  # (K, N, P)
    for v in range(VIEWS.count):
        np.testing.assert_array_equal(np.stack([r["view_params"][v] for r in records]), params[v])
        out = teacher.predict_on_batch(apply_view(to_float(pixels), params[v]))
        for key in ("embedding", "logits"):
            stored = np.stack([r[f"teacher_{key}"][v] for r in records])
            np.testing.assert_allclose(stored, out[key], atol=1e-5)


# ----------------------------------------------------------------------- streaming
def _stream(ds, labels, strategy=None, **kw):
    base = dict(spec=DegradationSpec("area", (8,)), batch_size=4, end_step=7, seed=3)
    batches = []
    for batch, y in ds.paired_dataset(labels, strategy=strategy, **{**base, **kw}):
        if strategy is not None:  # per replica -> the global batch
            batch = {
                k: tf.concat(strategy.experimental_local_results(v), 0) for k, v in batch.items()
            }
            y = tf.concat(strategy.experimental_local_results(y), 0)
        batches.append(({k: v.numpy() for k, v in batch.items()}, y.numpy()))
    return batches


def test_each_step_shows_one_view_with_its_stored_outputs(built):
    import keras

    ds = built["logits"]
    teacher = keras.saving.load_model(built["t_logits"], compile=False)
    batches = _stream(ds, ds.labels(), teacher_outputs=ds.teacher_outputs(teacher))
    assert len(batches) == 7
    for batch, _ in batches:  # the HR view shown is the view whose stored outputs ride along
        out = teacher.predict_on_batch(batch["hr"])
        np.testing.assert_allclose(batch["teacher_embedding"], out["embedding"], atol=1e-4)
        np.testing.assert_allclose(batch["teacher_logits"], out["logits"], atol=1e-4)
        lr = tf.image.resize(batch["hr"], (8, 8), method="area").numpy()
        np.testing.assert_allclose(batch["lr"], lr, atol=1e-6)  # made from that HR view


def test_a_resumed_stream_sees_the_batches_of_an_uninterrupted_one_also_mirrored(built, mirrored):
    ds = built["logits"]
    labels = ds.labels()  # 23 examples: 5 steps of 4 per pass, so step 6 is in the second pass
    whole = _stream(ds, labels, views=VIEWS)
    resumed = _stream(ds, labels, views=VIEWS, start_step=3)
    assert len(resumed) == 4
    for (a, ya), (b, yb) in zip(whole[3:], resumed):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(a["lr"], b["lr"])
    two = _stream(ds, labels, strategy=mirrored, views=VIEWS)
    for (a, ya), (b, yb) in zip(whole, two):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(a["lr"], b["lr"], atol=1e-6)


def test_each_worker_reads_its_own_shards(built):
    """Two input pipelines (workers) of one replica each, as MultiWorkerMirroredStrategy's
    `distribute_datasets_from_function` makes them: disjoint shards, half the global batch."""

    class TwoWorkers:
        def distribute_datasets_from_function(self, fn):
            return [fn(tf.distribute.InputContext(2, i, 2)) for i in range(2)]

    ds = built["logits"]  # 3 shards: worker 0 reads two, worker 1 one
    workers = ds.paired_dataset(
        ds.labels(),
        spec=DegradationSpec("area", (8,)),
        batch_size=4,
        end_step=5,
        strategy=TwoWorkers(),
    )
    seen = []
    for worker in workers:
        batches = list(worker.as_numpy_iterator())
        assert len(batches) == 5 and all(len(y) == 2 for _, y in batches)
        seen.append({x.tobytes() for b, _ in batches for x in np.round(b["hr"] * 255)})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_subsets_and_held_out_people_are_the_in_memory_ones(faces, built):
    both = dict(image_size=SIZE, exclude_people_from=(faces["pairs"],), max_examples=11)
    memory = load_training_data(
        DataConfig("identity_folder", (faces["root"],), unlabelled_dirs=(faces["flat"],), **both)
    )
    stream = load_training_data(
        DataConfig("tfds", (os.path.dirname(built["logits"].path),), **both)  # <dst>/<name>
    )
    np.testing.assert_array_equal(memory.labels, stream.labels)
    for key in ("subset", "used", "labelled", "unlabelled", "classes", "excluded_people"):
        assert memory.report[key] == stream.report[key], key
    assert stream.report["source"] == "tfds" and stream.report["excluded_images"] == PER
    # The stream's examples are the in-memory images, in order ...
    paths = {r["index"]: r["path"].decode() for r in _records(built["logits"], decode_images=False)}
    chosen = load_images([paths[i] for i in stream.stream.index], SIZE)
    np.testing.assert_array_equal(chosen, memory.images)
    # ... and one streamed pass shows exactly them (views off, no augmentation).
    batches = _stream(stream.stream, stream.labels, batch_size=11, end_step=1)
    hr = np.round(batches[0][0]["hr"] * 255).astype(np.uint8)
    key = lambda a: a.tobytes()  # noqa: E731
    assert sorted(map(key, hr)) == sorted(map(key, memory.images))
    with pytest.raises(ValueError, match="labelled_fraction needs in-memory data"):
        DataConfig("tfds", ("x",), labelled_fraction=0.5)
    with pytest.raises(ValueError, match="--data=tfrecord is gone: .*apps.build_dataset"):
        DataConfig("tfrecord", ("x",))


def test_the_wrong_teacher_views_or_size_are_refused(built):
    import keras

    ds = built["logits"]
    other = keras.saving.load_model(built["t_emb"], compile=False)
    with pytest.raises(ValueError, match="holds the outputs of another teacher"):
        ds.teacher_outputs(other)
    teacher = keras.saving.load_model(built["t_logits"], compile=False)
    with pytest.raises(ValueError, match="holds teacher outputs for views"):
        ds.teacher_outputs(teacher, ViewSpec(count=2))
    with pytest.raises(ValueError, match="set --teacher_size=16"):
        FaceDataset(ds.path, image_size=24).teacher_outputs(teacher)
    with pytest.raises(ValueError, match="holds no teacher outputs"):
        built["plain"].teacher_outputs(teacher)


def test_distill_streams_with_a_class_mean_head_on_two_mirrored_replicas(built, mirrored, tmp_path):
    from lrface_tf.config import DistillConfig, ModelConfig, TrainConfig
    from lrface_tf.data.teacher_cache import TeacherCache
    from lrface_tf.experiment import distill
    from lrface_tf.teachers import class_means

    ds = built["emb"]
    data = DataConfig("tfds", (ds.path,), image_size=SIZE, epoch_examples=8)
    cfg = DistillConfig(
        data=data,
        spec=DegradationSpec("area", (8,)),
        student=ModelConfig("resnet8", 8, width=0.25, embedding_dim=6, head="arcface"),
        train=TrainConfig(epochs=2, batch_size=4, verbose=0),
        output_dir=str(tmp_path / "run"),
        teacher=built["t_emb"],
        teacher_head="class_mean",
        method="kd",
        augment="flip",
        teacher_cache=True,
    )
    lines = []
    result = distill(cfg, strategy=mirrored, log=lines.append)
    assert result["data"]["source"] == "tfds" and result["data"]["epoch_examples"] == 8
    assert result["teacher_cache"] == {
        "status": "stored in the data set",
        "path": ds.path,
        "views": 2,
    }
    assert result["teacher_head"]["classes"] == PEOPLE
    assert len(result["history"]["kd"]) == 2 and np.isfinite(result["history"]["kd"]).all()
    assert any("stored in" in line for line in lines)
    # The class means from one pass over the stored outputs are the in-memory ones.
    import keras

    teacher = keras.saving.load_model(built["t_emb"], compile=False)
    records = _records(ds, decode_images=False)
    pixels = load_images([r["path"].decode() for r in records], SIZE)
    labels = np.array([r["label"] for r in records])
    cache = TeacherCache.build(teacher, pixels, ViewSpec(count=2), progress=False)
    sums = ds.teacher_outputs(teacher).class_sums(ds.labels(), PEOPLE)
    np.testing.assert_allclose(
        class_means(sums, np.arange(PEOPLE), PEOPLE),
        class_means(cache.embedding[0][labels >= 0], labels[labels >= 0], PEOPLE),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="holds teacher outputs for views"):
        distill(dataclasses.replace(cfg, augment="none"), strategy=mirrored)


# -------------------------------------------------------------------------- the apps
def _app(app, *flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", f"apps.{app}", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_line_error(proc):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "FATAL"))]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_apps_build_stop_at_a_corrupt_file_or_list_it_then_distill_streams(faces, tmp_path):
    people = tmp_path / "people"
    shutil.copytree(faces["root"], people)
    bad = people / "person_1" / "person_1_0099.jpg"
    good = open(people / "person_1" / "person_1_0003.jpg", "rb").read()
    bad.write_bytes(good[: len(good) // 2])
    dst = tmp_path / "built"
    build = (
        "build_dataset",
        f"--data_dir={people}",
        f"--dst={dst}",
        "--num_shards=2",
        "--verbose=0",
    )
    line = _one_line_error(_app(*build))
    assert str(bad) in line and "corrupt" in line and "--skip_bad" in line
    assert not os.path.exists(dst / "identity_faces" / "1.0.0")
    proc = _app(*build, "--skip_bad")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 files (1 corrupt)" in proc.stdout and str(bad) in proc.stdout
    report = json.loads((dst / "build_report.json").read_text())
    assert report["skipped_by_reason"] == {"corrupt": 1} and report["written"] == PEOPLE * PER
    assert FaceDataset(dst).metadata["report"]["roots"][0]["skipped"][0]["path"] == str(bad)
    assert "chosen when training" in _one_line_error(_app(*build, "--max_train_examples=5"))
    out = tmp_path / "run"
    proc = _app(
        "distill",
        "--data=tfds",
        f"--data_dir={dst}",
        "--method=baseline",
        "--teacher_size=16",
        "--student_size=8",
        "--student_width=0.25",
        "--batch_size=4",
        "--epochs=1",
        "--epoch_examples=8",
        "--max_train_examples=12",
        "--strategy=mirrored",
        "--cpu_devices=2",
        "--verbose=0",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["source"] == "tfds" and metrics["data"]["used"] == 12
    assert metrics["data"]["subset"] == {"max_examples": 12, "seed": 0, "classes_dropped": 0}
    assert len(metrics["history"]["loss"]) == 1
    proc = _app("distill", "--data=tfrecord", f"--data_dir={dst}", f"--output_dir={tmp_path / 'x'}")
    assert "--data=tfrecord is gone" in _one_line_error(proc)
    assert "apps.build_dataset" in _one_line_error(proc)
