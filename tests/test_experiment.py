"""The library's run of a DistillConfig, on small real images the tests write: data
sources and their record, the face path (class-mean head, views, cache), label-free
students, and the two-stage runner (resumed, skipped when done)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from lrface_tf.config import DistillConfig, ModelConfig, StageConfig, TrainConfig
from lrface_tf.data.degrade import DegradationSpec, LRAugment
from lrface_tf.data.sources import DataConfig, load_training_data, stratified_subset
from lrface_tf.data.views import ViewSpec
from tests.test_case import digits

PEOPLE, PER = 8, 20


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Digits as 16x16 RGB "faces": root/<person>/<image>.png, a flat unlabelled folder,
    and an LFW-format pairs file naming two of the people."""
    from PIL import Image

    root = tmp_path_factory.mktemp("faces")
    x, y = digits()
    for person in range(PEOPLE):
        folder = root / "people" / f"person_{person}"
        folder.mkdir(parents=True)
        for i, img in enumerate(x[y == person][:PER]):
            rgb = np.repeat(np.kron(img[..., 0], np.ones((2, 2), np.uint8))[..., None], 3, -1)
            Image.fromarray(rgb).save(folder / f"person_{person}_{i + 1:04d}.jpg", quality=95)
    flat = root / "unlabelled"
    flat.mkdir()
    for i, img in enumerate(x[y == 9][:24]):
        Image.fromarray(np.kron(img[..., 0], np.ones((2, 2), np.uint8))).save(flat / f"u{i}.png")
    (flat / "notes.txt").write_text("not an image")
    pairs = root / "pairs.txt"
    same = [f"person_{6 + i % 2} {1 + i} {11 + i}" for i in range(10)]
    different = [f"person_6 {1 + i} person_7 {2 + i}" for i in range(10)]
    pairs.write_text("\n".join(["10", *same, *different]) + "\n")
    return {"root": str(root / "people"), "flat": str(flat), "pairs": str(pairs), "base": root}


def _data(faces, **kw):
    base = {"source": "identity_folder", "data_dirs": (faces["root"],), "image_size": 16}
    return DataConfig(**{**base, **kw})


def test_face_folders_record_what_was_used(faces):
    data = load_training_data(
        _data(faces, unlabelled_dirs=(faces["flat"],), exclude_people_from=(faces["pairs"],))
    )
    assert data.images.shape == ((PEOPLE - 2) * PER + 24, 16, 16, 3)
    assert data.num_classes == PEOPLE - 2 and (data.labels == -1).sum() == 24
    r = data.report
    assert r["excluded_people"] == 2 and r["roots"][0]["excluded_people"] == 2
    assert r["unlabelled_roots"][0]["skipped"][0]["path"].endswith("notes.txt")
    assert (r["labelled"], r["unlabelled"], r["classes"]) == ((PEOPLE - 2) * PER, 24, PEOPLE - 2)
    # People below min_images_per_label keep their images, unlabelled.
    few = load_training_data(_data(faces, min_images_per_label=PER + 1))
    assert few.num_classes == 0 and (few.labels == -1).all()
    assert few.report["people_below_min_images"] == PEOPLE


def test_subsets_are_seeded_stratified_and_recorded(faces):
    labels = np.repeat(np.arange(4), [40, 20, 20, 20])
    idx = stratified_subset(labels, 50, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [20, 10, 10, 10])
    np.testing.assert_array_equal(idx, stratified_subset(labels, 50, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 50, seed=4))
    data = load_training_data(_data(faces, max_examples=40))
    assert len(data) == 40 and data.num_classes == PEOPLE
    assert np.bincount(data.labels).tolist() == [5] * PEOPLE
    assert data.report["subset"] == {"max_examples": 40, "seed": 0, "classes_dropped": 0}
    assert data.report["used"] == 40


def _tiny_teacher(path, size=16, with_logits=False, classes=PEOPLE, seed=1, dim=12):
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = {"embedding": keras.layers.Dense(dim, name="embedding")(x)}
    if with_logits:
        out["logits"] = keras.layers.Dense(classes, name="logits")(out["embedding"])
    keras.Model(image, out).save(path)
    return str(path)


def _config(faces, tmp_path, **kw):
    base = dict(
        data=_data(faces),
        spec=DegradationSpec("area", (8,)),
        student=ModelConfig("resnet8", 8, width=0.25, embedding_dim=12, head="arcface"),
        train=TrainConfig(epochs=2, batch_size=32, verbose=0),
        output_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        augment="none",
    )
    return DistillConfig(**{**base, **kw})


def test_lr_augment_is_part_of_the_student_stage_resume_key(faces, tmp_path):
    from lrface_tf.experiment import _resume_key

    plain = _config(faces, tmp_path, teacher="t.keras", method="kd")
    aug = dataclasses.replace(plain, lr_augment=LRAugment(erase=0.5))
    assert "lr_augment" not in _resume_key(plain, "student")  # older backups still resume
    assert _resume_key(aug, "student") != _resume_key(plain, "student")
    assert _resume_key(aug, "assistant") == _resume_key(plain, "assistant")  # no LR view there


def test_teacher_input_lr_is_refused_where_it_cannot_be_cached(faces, tmp_path):
    from lrface_tf.experiment import _resume_key

    kw = dict(teacher="t.keras", method="feature", teacher_input="lr")
    with pytest.raises(ValueError, match="--teacher_input=lr needs --teacher_cache"):
        _config(faces, tmp_path, **kw)
    random_size = DegradationSpec("area", (4, 8), output_size=8)
    with pytest.raises(ValueError, match="needs one LR size"):
        _config(faces, tmp_path, teacher_cache=True, spec=random_size, **kw)
    mix = dict(kw, teacher_input="mix")
    with pytest.raises(ValueError, match="--teacher_input=mix needs --teacher_cache"):
        _config(faces, tmp_path, **mix)
    with pytest.raises(ValueError, match=r"--teacher_mix=1.0 is outside \(0, 1\)"):
        _config(faces, tmp_path, teacher_cache=True, teacher_mix=1.0, **mix)
    with pytest.raises(ValueError, match="--teacher_mix only applies to --teacher_input=mix"):
        _config(faces, tmp_path, teacher="t.keras", method="feature", teacher_mix=0.3)
    mixed = _config(faces, tmp_path, teacher_cache=True, teacher_mix=0.3, **mix)
    lr_only = _config(faces, tmp_path, teacher_cache=True, **kw)
    assert "teacher_mix" not in _resume_key(lr_only, "student")  # only where it is used
    assert _resume_key(mixed, "student")["teacher_mix"] == 0.3
    with pytest.raises(ValueError, match="unknown teacher_input 'mid'"):
        _config(faces, tmp_path, teacher="t.keras", method="feature", teacher_input="mid")
    # A TFDS stream reads the HR outputs stored with it, and its views are made on the fly:
    # both options are refused before anything is loaded, not silently ignored.
    stream = DataConfig("tfds", ("built_dataset",), image_size=16)
    with pytest.raises(ValueError, match="--teacher_input=lr work on in-memory data"):
        _config(faces, tmp_path, teacher_cache=True, data=stream, **kw)
    with pytest.raises(ValueError, match="--lr_noise / --lr_erase work on in-memory data"):
        _config(faces, tmp_path, data=stream, lr_augment=LRAugment(noise=0.1))
    _config(faces, tmp_path, data=stream, lr_augment=LRAugment())  # nothing on: nothing refused


def test_a_view_mean_target_needs_cached_views_and_is_in_the_resume_key(faces, tmp_path):
    from lrface_tf.experiment import _resume_key

    kw = dict(teacher="t.keras", method="feature")
    with pytest.raises(ValueError, match="--teacher_view_mean=0.5 averages the cached teacher"):
        _config(faces, tmp_path, teacher_view_mean=0.5, **kw)
    with pytest.raises(ValueError, match="--teacher_view_mean=0.5 averages the cached teacher"):
        _config(faces, tmp_path, teacher_cache=True, teacher_view_mean=0.5, **kw)  # one view
    with pytest.raises(ValueError, match=r"--teacher_view_mean=-0.1 is outside \[0, 1\]"):
        _config(faces, tmp_path, teacher_view_mean=-0.1, **kw)
    views = dict(kw, teacher_cache=True, views=ViewSpec(count=2))
    plain = _config(faces, tmp_path, **views)
    mean = _config(faces, tmp_path, teacher_view_mean=0.5, **views)
    assert "teacher_view_mean" not in _resume_key(plain, "student")  # older backups resume
    assert _resume_key(mean, "student")["teacher_view_mean"] == 0.5
    stream = DataConfig("tfds", ("built_dataset",), image_size=16)
    with pytest.raises(ValueError, match="--teacher_view_mean work on in-memory data"):
        _config(faces, tmp_path, data=stream, teacher_view_mean=0.5, **views)


def test_a_second_model_reads_the_lr_views_of_a_blended_target(faces, tmp_path):
    import keras

    from lrface_tf.data.teacher_cache import load_or_build
    from lrface_tf.eval.pairs import evaluate_pairs, load_pair_images
    from lrface_tf.experiment import distill, embedding_network, load_teacher

    hr_reader = _tiny_teacher(tmp_path / "t.keras")
    lr_reader = _tiny_teacher(tmp_path / "t_lr.keras", seed=2)
    kw = dict(teacher=hr_reader, method="feature", teacher_cache=True)
    with pytest.raises(ValueError, match="--lr_teacher=.* only applies to a run with --teacher"):
        _config(faces, tmp_path, lr_teacher=lr_reader, **kw)
    views = ViewSpec(count=2, shift=0.05)
    val = dict(val_pairs=faces["pairs"], val_image_root=faces["root"])
    with pytest.raises(ValueError, match="--val_gallery=.* only applies to validation pairs"):
        _config(faces, tmp_path, val_gallery=lr_reader, **kw)
    cfg = _config(
        faces,
        tmp_path,
        teacher_input="mix",
        lr_teacher=lr_reader,
        views=views,
        val_gallery=lr_reader,
        **val,
        **kw,
    )
    result = distill(cfg, log=lambda s: None)
    hr, lr = result["teacher_cache"]
    assert lr["model"] == lr_reader and "model" not in hr
    assert cfg.to_dict()["lr_teacher"] == lr_reader
    # --val_gallery embeds the cross-model protocol's HR gallery in place of the teacher.
    assert result["val"]["gallery"] == lr_reader
    (cross,) = [r for r in result["val"]["rows"] if r["side"] == "cross"]
    student = embedding_network(keras.models.load_model(tmp_path / "run" / "student.keras"))
    pairs = load_pair_images(faces["pairs"], faces["root"], cfg.data.image_size)
    by = {
        path: evaluate_pairs(
            student,
            pairs,
            8,
            "cross",
            cfg.spec.kernel,
            cfg.spec.upsample_kernel,
            gallery_model=embedding_network(load_teacher(path)),
        )["auc"]
        for path in (lr_reader, hr_reader)
    }
    assert by[lr_reader] == pytest.approx(cross["auc"]) and by[hr_reader] != by[lr_reader]
    # The run built the second model's LR cache and the teacher's HR one, not the
    # teacher's LR one.
    data = load_training_data(cfg.data)
    for path, lr_input, status in ((lr_reader, cfg.spec, "loaded"), (hr_reader, None, "loaded")):
        _, got, _ = load_or_build(
            cfg.cache_dir, load_teacher(path), data.images, views, lr_input=lr_input
        )
        assert got == status
    _, got, _ = load_or_build(
        cfg.cache_dir, load_teacher(hr_reader), data.images, views, lr_input=cfg.spec
    )
    assert got == "built"
    # A reader in another embedding space is refused before any cache is built.
    wide = _tiny_teacher(tmp_path / "t_wide.keras", seed=3, dim=16)
    other = dataclasses.replace(cfg, lr_teacher=wide, cache_dir=str(tmp_path / "cache2"))
    with pytest.raises(ValueError, match="embeds in 16 dimensions but --teacher=.* in 12"):
        distill(other, log=lambda s: None)
    # So is a validation gallery in another space than the student's.
    other = dataclasses.replace(cfg, val_gallery=wide, cache_dir=str(tmp_path / "cache2"))
    with pytest.raises(ValueError, match="--val_gallery=.* 16 dimensions but the student in 12"):
        distill(other, log=lambda s: None)
    assert not os.path.exists(tmp_path / "cache2")


def test_embedding_only_teacher_with_class_mean_head_views_and_cache(faces, tmp_path):
    from lrface_tf.experiment import distill

    teacher = _tiny_teacher(tmp_path / "t.keras")
    cfg = _config(
        faces,
        tmp_path,
        teacher=teacher,
        teacher_head="class_mean",
        method="kd",
        views=ViewSpec(count=3, shift=0.05, colour=0.1),
        lr_augment=LRAugment(noise=0.05, erase=0.5),
        teacher_cache=True,
        val_pairs=faces["pairs"],
        val_image_root=faces["root"],
    )
    lines = []
    result = distill(cfg, log=lines.append)
    assert cfg.to_dict()["lr_augment"] == {"noise": 0.05, "erase": 0.5}
    assert result["teacher_head"] == {"kind": "class_mean", "scale": 16.0, "classes": PEOPLE}
    assert result["teacher_cache"]["status"] == "built" and result["teacher_cache"]["views"] == 3
    assert set(result["history"]) >= {"kd", "task", "loss"}
    assert [(r["side"], r["probe_size"]) for r in result["val"]["rows"]] == [
        ("probe", 8),
        ("both", 8),
        ("probe", 16),
        ("cross", 8),  # the teacher's HR gallery against the student's LR probe
    ]
    assert os.path.exists(tmp_path / "run" / "student.keras")
    again = distill(dataclasses.replace(cfg, output_dir=str(tmp_path / "run2")), log=lines.append)
    assert again["teacher_cache"]["status"] == "loaded"


def test_label_free_student_on_unlabelled_images(faces, tmp_path):
    from lrface_tf.experiment import distill

    teacher = _tiny_teacher(tmp_path / "t.keras")
    cfg = _config(
        faces,
        tmp_path,
        data=_data(faces, unlabelled_dirs=(faces["flat"],)),
        teacher=teacher,
        method="feature",
        hyperparameters={"task_weight": 0.0},
        student=ModelConfig("resnet8", 8, width=0.25, embedding_dim=12, head="none"),
        views=ViewSpec(count=2),
        teacher_cache=True,
        teacher_view_mean=1.0,
    )
    result = distill(cfg, log=lambda s: None)
    assert set(result["history"]) == {"loss", "feature_l2", "epoch_seconds"}
    assert result["teacher_cache"]["view_mean"] == 1.0
    assert result["data"]["unlabelled"] == 24
    import keras

    student = keras.saving.load_model(tmp_path / "run" / "student.keras", compile=False)
    assert set(student.output) == {"embedding"} and result["params"] == student.count_params()


def test_a_student_alone_trains_on_the_labelled_examples_only(faces, tmp_path):
    from lrface_tf.experiment import distill

    cfg = _config(faces, tmp_path, data=_data(faces, unlabelled_dirs=(faces["flat"],)))
    result = distill(cfg, log=lambda s: None)
    assert result["data"]["unlabelled_dropped_no_teacher"] == 24
    with pytest.raises(ValueError, match="make no full batch of 512; lower --batch_size"):
        distill(dataclasses.replace(cfg, train=TrainConfig(epochs=1, batch_size=512)))


def test_two_stage_run_is_resumed_and_a_finished_stage_skipped(faces, tmp_path):
    from lrface_tf.experiment import distill

    teacher = _tiny_teacher(tmp_path / "t.keras", with_logits=True)
    assistant = ModelConfig("resnet8", 16, width=0.25, embedding_dim=12, head="arcface")
    cfg = _config(
        faces,
        tmp_path,
        teacher=teacher,
        method="horkd",
        teacher_cache=True,
        stages=StageConfig("two_stage", assistant, assistant_epochs=1, init_from="assistant"),
    )
    lines = []
    first = distill(cfg, log=lines.append)
    assert first["stage1"]["input_size"] == 16 and "reused" not in first["stage1"]
    assert first["init_from"]["source"] == "assistant" and first["init_from"]["layers"] > 10
    stage = tmp_path / "run" / "stage1_assistant"
    assert (stage / "assistant.keras").exists() and (stage / "metrics.json").exists()
    assert len(first["stage1"]["history"]["loss"]) == 1
    second = distill(cfg, log=lines.append)
    assert second["stage1"]["reused"].endswith("assistant.keras")
    assert any("already done" in line for line in lines)
    record = json.loads((stage / "metrics.json").read_text())
    assert record["history"] == first["stage1"]["history"]


def test_bad_configurations_stop_before_anything_runs(faces, tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        _config(faces, tmp_path, method="kd")
    with pytest.raises(ValueError, match="needs --init_from=teacher"):
        _config(faces, tmp_path, student=ModelConfig("teacher", 8), teacher="t.keras")
    with pytest.raises(ValueError, match="the student takes 16 px"):
        _config(faces, tmp_path, student=ModelConfig("resnet8", 16))
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        _config(faces, tmp_path, hyperparameters={"kd_wieght": 1.0})
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        TrainConfig(learning_rate=-0.1)
    with pytest.raises(ValueError, match="max_train_examples must be >= 0"):
        DataConfig(max_examples=-1)
    with pytest.raises(ValueError, match="teacher_cache needs --views or --augment=none/flip"):
        _config(
            faces, tmp_path, teacher="t.keras", method="kd", teacher_cache=True, augment="flip_crop"
        )
