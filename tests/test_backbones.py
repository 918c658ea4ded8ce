import keras
import numpy as np
import pytest

from lrface_tf.backbones import BACKBONES, build_backbone, named_features
from lrface_tf.backbones.resnet import embedding_head
from lrface_tf.layers import CosineHead
from lrface_tf.models import build_recognizer


@pytest.mark.parametrize("size,final", [(7, 7), (8, 4), (16, 4), (28, 7), (32, 8), (112, 14)])
def test_stem_and_stages_fit_the_input(size, final):
    m = build_backbone("resnet8", (size, size, 3), embedding_dim=12, width_multiplier=0.25)
    assert m.output_shape == (None, 12)
    feats = named_features(m, ["stage1", "stage3", "embedding"])
    out = feats(np.zeros((2, size, size, 3), np.float32))
    assert out["stage3"].shape[1] == final
    assert out["embedding"].shape == (2, 12)


def test_specs_and_width_multiplier():
    assert {"resnet18", "resnet34", "resnet50", "thin_resnet36", "resnet64_sphere"} <= set(
        BACKBONES
    )
    r18 = build_backbone("resnet18", (16, 16, 3), width_multiplier=0.125, embedding_dim=16)
    r18_2 = build_backbone("resnet18", (16, 16, 3), width_multiplier=0.25, embedding_dim=16)
    # Convolutions dominate: doubling widths roughly quadruples parameters.
    assert 3.0 < r18_2.count_params() / r18.count_params() < 4.2
    r50 = build_backbone("resnet50", (16, 16, 3), width_multiplier=0.125, embedding_dim=16)
    assert r50.get_layer("stage4").output.shape[-1] == 4 * 64  # bottleneck expansion 4


@pytest.mark.parametrize("pooling,invariant", [("avg", True), ("gdc", False)])
def test_gdc_head_reads_where_features_fire(pooling, invariant):
    # Global average pooling forgets the layout of the last map (a face with its eyes
    # and mouth swapped embeds alike); the GDC head's per-position filter does not.
    keras.utils.set_random_seed(0)
    fmap = keras.Input((4, 4, 8))
    head = keras.Model(fmap, embedding_head(fmap, 6, pooling=pooling))
    x = np.random.RandomState(0).rand(2, 4, 4, 8).astype(np.float32)
    flipped = x[:, ::-1]  # the same features, upside down
    same = np.allclose(head(x), head(flipped), atol=1e-5)
    assert same == invariant
    if pooling == "gdc":
        avg = keras.Model(fmap, embedding_head(fmap, 6, pooling="avg"))
        assert head.count_params() - avg.count_params() == 4 * 4 * 8


def test_wide_last_stage_fits_the_compact_budget():
    # Issue 17's compact budget is 966,707 parameters (1/10 of SFace); resnet18 x0.25 has
    # 720,112 and x0.29 959,398; the wide-last-stage form puts the extra in stage 4.
    m = build_backbone("resnet18_wide4", (16, 16, 3), width_multiplier=0.25, embedding_dim=128)
    assert m.count_params() == 850_288
    assert [m.get_layer(f"stage{i}").output.shape[-1] for i in (1, 2, 3, 4)] == [16, 32, 64, 144]
    assert m.get_layer("stage4").output.shape[1:3] == (4, 4)  # no stride below 8x8


def test_gdc_backbones_are_registered():
    plain = build_backbone("resnet18", (16, 16, 3), width_multiplier=0.25, embedding_dim=128)
    gdc = build_backbone("resnet18_gdc", (16, 16, 3), width_multiplier=0.25, embedding_dim=128)
    assert gdc.name == "resnet18_gdc"
    # The compact 16 px face student: a 4x4x128 last map, so 2,048 GDC weights.
    assert gdc.count_params() - plain.count_params() == 4 * 4 * 128
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        embedding_head(keras.Input((4, 4, 8)), 6, pooling="max")


def test_fujitsu_thin_resnet36_and_resnet64():
    s = build_backbone("thin_resnet36", (112, 96, 3))
    assert s.output_shape == (None, 512)
    assert s.get_layer("stage4").output.shape[1:] == (7, 6, 144)
    # 36 layers: 4 downsampling convs + 2 per unit x (2+4+8+2) units + FC = 37 weight
    # layers counted the paper's way (conv layers + FC, the FC counted once).
    convs = [layer for layer in s.layers if layer.name.endswith("_conv")]
    assert len(convs) == 4 + 2 * (2 + 4 + 8 + 2)
    t = build_backbone("resnet64_sphere", (112, 96, 3), width_multiplier=0.25)
    convs = [layer for layer in t.layers if layer.name.endswith("_conv")]
    assert len(convs) == 4 + 2 * (3 + 8 + 16 + 3)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*resnet18"):
        build_backbone("resnet19", (16, 16, 3))
    with pytest.raises(ValueError, match="at least 7x7"):
        build_backbone("resnet8", (6, 6, 3))


@pytest.mark.parametrize("head", ["softmax", "arcface"])
def test_recognizer_keras_round_trip(head, tmp_path):
    m = build_recognizer(
        "resnet8", 8, 5, channels=1, head=head, embedding_dim=8, width_multiplier=0.25
    )
    x = np.random.RandomState(0).rand(3, 8, 8, 1).astype(np.float32)
    path = str(tmp_path / "m.keras")
    m.save(path)
    again = keras.saving.load_model(path)
    for k in ("embedding", "logits"):
        np.testing.assert_allclose(again(x)[k], m(x)[k], rtol=1e-5, atol=1e-6)
    if head == "arcface":
        assert isinstance(again.get_layer("logits"), CosineHead)
        assert float(np.abs(m(x)["logits"]).max()) <= 32.0 + 1e-4


def test_mobilefacenet16_keeps_a_4x4_map_and_fits_the_compact_budget():
    m = build_backbone("mobilefacenet16", (16, 16, 3))
    assert m.output_shape == (None, 128)
    # Two downsamplings only: the final map (read whole by the GDC) is 4x4.
    assert m.get_layer("stage5").output.shape[1:3] == (4, 4)
    assert m.get_layer("gdc").kernel_size == (4, 4)
    assert m.count_params() <= 966_707  # 1/10 of the SFace teacher
    big = build_backbone("mobilefacenet", (112, 112, 3))
    assert big.get_layer("stage5").output.shape[1:3] == (7, 7) and big.output_shape == (None, 128)
    out = m(np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32), training=False)
    assert np.all(np.isfinite(out.numpy()))
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert again.count_params() == m.count_params()
