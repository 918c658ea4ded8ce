import os

import numpy as np
import pytest

from lrface_tf.eval import (
    auc,
    best_threshold,
    cmc_curve,
    cosine_scores,
    equal_error_rate,
    kfold_accuracy,
    rank_k,
    roc_curve,
    stratified_folds,
    tar_at_far,
    top_k_accuracy,
    verification_report,
)
from lrface_tf.eval.plots import plot_accuracy_vs_size, plot_roc, plot_similarity_histograms

RNG = np.random.RandomState(0)


def test_separable_scores_are_perfect():
    same = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores = np.where(same, 0.8, 0.1) + RNG.uniform(-0.05, 0.05, 600)
    folds = np.tile(np.arange(10), 60)
    r = verification_report(scores, same, folds)
    assert r["accuracy"] == 1.0 and r["accuracy_std"] == 0.0
    assert r["eer"] == 0.0 and r["auc"] == 1.0
    assert r["tar_at_far_1e-3"] == 1.0
    assert r["histogram_intersection"] == 0.0


def test_random_scores_are_about_chance():
    same = RNG.rand(6000) < 0.5
    scores = RNG.uniform(-1, 1, 6000)
    r = verification_report(scores, same, np.arange(6000) % 10)
    assert 0.47 < r["accuracy"] < 0.53
    assert 0.47 < r["auc"] < 0.53
    assert 0.45 < r["eer"] < 0.55


def test_hand_computed_two_folds():
    # fold 0: same (0.9, 0.4), diff (0.5, 0.1); fold 1: same (0.7, 0.6), diff (0.65, 0.2)
    scores = np.array([0.9, 0.4, 0.5, 0.1, 0.7, 0.6, 0.65, 0.2])
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = kfold_accuracy(scores, same, folds)
    # Fold 0's threshold comes from fold 1 alone: candidates are midpoints of fold 1's
    # sorted scores (0.2, 0.6, 0.65, 0.7); 0.4 and 0.675 both get 3/4 and the lowest
    # of tied thresholds is kept -> 0.4. Fold 0 then: 0.9 yes, 0.4 yes, 0.5 yes (wrong),
    # 0.1 no -> 3/4.
    assert r["fold_thresholds"][0] == pytest.approx(0.4)
    assert r["fold_accuracies"][0] == 0.75
    # Fold 1's threshold from fold 0 (0.1, 0.4, 0.5, 0.9): 0.25 and 0.7 tie at 3/4 -> 0.25.
    # Fold 1 then: 0.7 yes, 0.6 yes, 0.65 yes (wrong), 0.2 no -> 3/4.
    assert r["fold_thresholds"][1] == pytest.approx(0.25)
    assert r["fold_accuracies"][1] == 0.75
    assert r["accuracy"] == 0.75


def test_fold_threshold_never_sees_its_fold():
    same = RNG.rand(400) < 0.5
    scores = RNG.randn(400) + same
    folds = np.arange(400) % 4
    base = kfold_accuracy(scores, same, folds)["fold_thresholds"]
    wrecked = scores.copy()
    wrecked[folds == 2] = RNG.randn(100) * 100  # change only fold 2's scores
    again = kfold_accuracy(wrecked, same, folds)["fold_thresholds"]
    assert again[2] == base[2]
    assert again[0] != base[0]


def test_roc_tar_eer_by_hand():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    fpr, tpr, _ = roc_curve(scores, same)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert auc(fpr, tpr) == pytest.approx(8 / 9)
    assert tar_at_far(scores, same, 0.0) == pytest.approx(2 / 3)
    assert equal_error_rate(scores, same) == pytest.approx(1 / 3)
    t, acc = best_threshold(scores, same)
    assert acc == pytest.approx(5 / 6)


def test_stratified_folds_are_balanced():
    same = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    folds = stratified_folds(same)
    for k in range(10):
        assert same[folds == k].sum() == 50 and (~same[folds == k]).sum() == 50


def test_cosine_scores():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[3.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_scores(a, b), [1.0, 0.0, 0.0])


def test_identification_rank_and_cmc():
    gallery = np.eye(4)[[0, 1, 2, 3, 3]]
    gal_ids = np.array([10, 11, 12, 13, 13])
    probes = np.array([[1, 0.1, 0, 0], [0.2, 1, 0, 0], [0.9, 0, 0.5, 0]])
    probe_ids = np.array([10, 11, 12])
    cmc = cmc_curve(gallery, gal_ids, probes, probe_ids)
    np.testing.assert_allclose(cmc, [2 / 3, 1, 1, 1])
    assert rank_k(gallery, gal_ids, probes, probe_ids) == {"rank1": 2 / 3, "rank5": 1.0}
    with pytest.raises(ValueError, match="no gallery image"):
        cmc_curve(gallery, gal_ids, probes, np.array([10, 11, 99]))


def test_top_k():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert top_k_accuracy(logits, [2, 0], 1) == 0.5
    assert top_k_accuracy(logits, [2, 0], 2) == 1.0


def test_plots_write_pngs(tmp_path):
    same = RNG.rand(200) < 0.5
    scores = np.clip(RNG.randn(200) * 0.2 + 0.4 * same, -1, 1)
    fpr, tpr, _ = roc_curve(scores, same)
    for path in (
        plot_roc({"a": (fpr, tpr)}, tmp_path / "roc.png"),
        plot_similarity_histograms(scores, same, tmp_path / "hist.png"),
        plot_accuracy_vs_size({"a": [(8, 70.0), (16, 90.0)]}, tmp_path / "size.png"),
    ):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 1000


def test_verification_callback_and_embeddings(tmp_path):
    import keras

    from lrface_tf.eval import VerificationCallback, extract_embeddings
    from lrface_tf.losses import MaskedCrossEntropy
    from lrface_tf.models import Distiller
    from tests.test_case import tiny_model

    student = tiny_model(4, embedding_dim=6)
    a = RNG.rand(40, 4, 4, 1).astype(np.float32)
    b = a.copy()
    b[20:] = RNG.rand(20, 4, 4, 1)  # first 20 pairs identical images: same person
    same = np.arange(40) < 20
    emb = extract_embeddings(student, a, batch_size=16, progress=False)
    np.testing.assert_allclose(emb, student(a)["embedding"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no 'feature' output .* embedding, logits"):
        extract_embeddings(student, a, output="feature", progress=False)
    cb = VerificationCallback(a, b, same, log_dir=str(tmp_path / "tb"))
    d = Distiller(student, None, task_loss=MaskedCrossEntropy())
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    ds = [({"hr": a[:8], "lr": a[:8]}, np.zeros(8, np.int32))]
    import tensorflow as tf

    h = d.fit(
        tf.data.Dataset.from_tensors(ds[0][0]).map(lambda x: (x, tf.zeros(8, tf.int32))),
        epochs=1,
        verbose=0,
        callbacks=[cb],
    )
    # Identical images score cosine 1: a threshold below 1 separates them from most
    # random pairs, so accuracy is far above chance.
    assert h.history["val_verification_accuracy"][0] > 0.8
    assert os.listdir(tmp_path / "tb")


def _colour_people(root, people=6, per=3, size=24):
    """root/<person>/<person>_000k.jpg: each person a distinct colour, plus noise."""
    import tensorflow as tf

    rng = np.random.RandomState(1)
    colours = rng.randint(30, 225, (people, 3))
    for p in range(people):
        os.makedirs(root / f"P{p}")
        for k in range(per):
            img = np.clip(colours[p] + rng.randint(-8, 9, (size, size, 3)), 0, 255).astype(np.uint8)
            tf.io.write_file(str(root / f"P{p}" / f"P{p}_{k + 1:04d}.jpg"), tf.io.encode_jpeg(img))
    lines = ["2 4"]
    for fold in range(2):
        for i in range(4):
            p = (fold * 4 + i) % people
            lines.append(f"P{p} 1 {2 + (i % 2)}")
        for i in range(4):
            p, q = (fold + i) % people, (fold + i + 3) % people
            lines.append(f"P{p} 1 P{q} 2")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return str(root / "pairs.txt")


def test_evaluate_pairs_end_to_end(tmp_path):
    import keras

    from lrface_tf.eval import evaluate_pairs, load_pair_images
    from lrface_tf.eval.pairs import prepare

    pairs = _colour_people(tmp_path)
    data = load_pair_images(pairs, str(tmp_path), size=16)
    assert data["images_a"].shape == (16, 16, 16, 3) and data["folds"] is not None
    # An "embedding" of the centred mean colour: identities are colours here.
    image = keras.Input((16, 16, 3))
    emb = keras.layers.GlobalAveragePooling2D()(image)
    emb = keras.layers.Lambda(lambda e: e - 0.5)(emb)
    model = keras.Model(image, {"embedding": emb})
    full = evaluate_pairs(model, data)
    assert full["accuracy"] == 1.0 and full["side"] == "probe" and full["probe_size"] == 16
    # A mean colour survives any downsampling: still perfect at 2 px, both sides.
    low = evaluate_pairs(model, data, probe_size=2, side="both")
    assert low["accuracy"] == 1.0 and low["probe_size"] == 2
    # The probe is degraded then brought back to the input size; the gallery is untouched.
    x = prepare(data["images_b"][:2], 16, 4)
    assert x.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(
        prepare(data["images_a"][:2], 16), data["images_a"][:2] / 255.0, atol=1e-6
    )
    with pytest.raises(ValueError, match="side"):
        evaluate_pairs(model, data, side="gallery")
    # The cross-model protocol with the model as its own gallery is the probe protocol,
    # and the model agrees with itself on full-resolution images.
    for size in (None, 4):
        cross = evaluate_pairs(model, data, size, "cross", gallery_model=model)
        probe = evaluate_pairs(model, data, size, "probe")
        np.testing.assert_allclose(cross["scores"], probe["scores"], atol=1e-6)
    same = evaluate_pairs(model, data, None, "cross", gallery_model=model)
    assert same["teacher_agreement"] == pytest.approx(1.0, abs=1e-5)
    flipped = keras.Model(image, {"embedding": keras.layers.Lambda(lambda e: -e)(emb)})
    away = evaluate_pairs(flipped, data, None, "cross", gallery_model=model)
    assert away["teacher_agreement"] == pytest.approx(-1.0, abs=1e-5)


def test_linear_probe_separates_real_digits_and_not_shuffled_labels():
    from lrface_tf.eval import linear_probe
    from tests.test_case import digits

    x, y = digits()
    e = x.reshape(len(x), -1).astype(np.float32)  # raw pixels as a frozen "embedding"
    tr, te = np.arange(len(y)) % 4 != 0, np.arange(len(y)) % 4 == 0
    real = linear_probe(e[tr], y[tr] + 100, e[te], y[te] + 100, epochs=60)
    # Linear classifiers reach ~95% on 8x8 digits; chance is 10%.
    assert real["top1"] > 0.9 and real["top5"] >= real["top1"]
    shuffled = np.random.default_rng(0).permutation(y[tr])
    noise = linear_probe(e[tr], shuffled, e[te], y[te], epochs=60)
    assert noise["top1"] < 0.25  # labels carry no signal: about chance on the test split
    with pytest.raises(ValueError, match=r"test identities \[7\]"):
        linear_probe(e[tr][y[tr] != 7], y[tr][y[tr] != 7], e[te], y[te])


def test_knn_accuracy_by_hand_and_tsne_map_shape():
    from lrface_tf.eval.embeddings import embedding_map, knn_accuracy

    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.75, 0.65]], np.float32)
    # Nearest neighbours (cosine): 0<->1, 2<->3, 4->1.
    assert knn_accuracy(e, [0, 0, 1, 1, 0], k=1) == 1.0
    assert knn_accuracy(e, [0, 1, 0, 1, 1], k=1) == pytest.approx(1 / 5)  # only 4 -> 1
    # k=3: 0 sees 1, 4, 3 (labels 0, 1, 1) and 1 sees 0, 4, 3: both outvoted; 2 and 3 see
    # each other, 4 and 1; 4 sees 1, 0, 3 (0, 0, 1): outvoted.
    assert knn_accuracy(e, [0, 0, 1, 1, 1], k=3) == pytest.approx(2 / 5)
    pts = embedding_map(np.random.default_rng(0).normal(size=(40, 8)), seed=0)
    assert pts.shape == (40, 2) and np.all(np.isfinite(pts))
