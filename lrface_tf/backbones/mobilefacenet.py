"""MobileFaceNet-style backbones (Chen et al., "MobileFaceNets", CCBR 2018), one made for
16x16 faces.

The network: a 3x3 stem, inverted-residual bottlenecks (expand 1x1 -> depthwise
3x3 -> project 1x1, PReLU, a residual when the shape allows), a 1x1 conv to a
wide map, then a global depthwise convolution (GDC: one kxk depthwise filter over
the whole final map, linear) instead of global average pooling, which keeps
where on the face each feature was seen, and a linear 1x1 to the embedding.

"mobilefacenet" is the paper's network for 112x112 inputs (stride-2 stem, four
downsamplings to 7x7). "mobilefacenet16" is laid out for 16x16 faces: a
stride-1 stem and only two downsamplings (16 -> 8 -> 4), so the 4x4 final map
still resolves eyes, nose and mouth, and the GDC reads all 16 positions.
"""

from __future__ import annotations

import keras
from keras import layers

# name -> (stem stride, stem width, stages: (expansion t, channels c, repeats n, stride s),
#          wide width, embedding dim, activation)
_PAPER_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
_STAGES_16 = ((2, 48, 2, 2), (4, 96, 1, 2), (2, 96, 4, 1), (4, 128, 1, 1), (2, 128, 2, 1))
MOBILEFACENET_SPECS = {
    "mobilefacenet": (2, 64, _PAPER_STAGES, 512, 128, "prelu"),
    # ReLU, not the paper's PReLU: LiteRT's XNNPACK has no int8 PReLU, and the int8 model
    # fell back to reference kernels at 4x the float32 time (bench/results/perf.md).
    "mobilefacenet16": (1, 32, _STAGES_16, 512, 128, "relu"),
    "mobilefacenet16_prelu": (1, 32, _STAGES_16, 512, 128, "prelu"),
}


def _bn(x, name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def _act(x, name, activation="prelu"):
    if activation == "prelu":
        return layers.PReLU(shared_axes=[1, 2], name=name)(x)
    return layers.Activation(activation, name=name)(x)


def _conv(x, filters, kernel, stride, name, act=True, activation="prelu"):
    if stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        use_bias=False,
        padding="valid" if stride > 1 else "same",
        name=f"{name}_conv",
    )(x)
    x = _bn(x, f"{name}_bn")
    return _act(x, f"{name}_act", activation) if act else x


def _depthwise(x, kernel, stride, name, act=True, activation="prelu"):
    if stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    x = layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        use_bias=False,
        padding="valid" if stride > 1 else "same",
        name=f"{name}_dw",
    )(x)
    x = _bn(x, f"{name}_bn")
    return _act(x, f"{name}_act", activation) if act else x


def bottleneck(x, expansion, channels, stride, name, activation="prelu"):
    """Inverted residual: 1x1 expand (activation) -> 3x3 depthwise (activation) -> 1x1 project."""
    y = _conv(x, x.shape[-1] * expansion, 1, 1, f"{name}_expand", activation=activation)
    y = _depthwise(y, 3, stride, f"{name}_depthwise", activation=activation)
    y = _conv(y, channels, 1, 1, f"{name}_project", act=False)
    if stride == 1 and x.shape[-1] == channels:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilefacenet(
    input_shape,
    *,
    stem_stride,
    stem_width,
    stages,
    wide,
    embedding_dim=128,
    width_multiplier=1.0,
    activation="prelu",
    name="mobilefacenet",
):
    """A MobileFaceNet mapping `(B, H, W, C)` images in [0, 1] to `(B, D)` embeddings.

    Args:
      input_shape: `(H, W, C)`.
      stem_stride, stem_width: the 3x3 stem.
      stages: `(expansion, channels, repeats, stride)` per stage.
      wide: channels of the 1x1 conv before the GDC.
      embedding_dim: D.
      width_multiplier: scales every channel count (at least 8).
      activation: "prelu" (the paper's) or a Keras activation name ("relu").

    Returns:
      functional `keras.Model`; layers "stage1".."stageN" and "embedding" are named.
    """

    def w(c):
        return max(8, int(round(c * width_multiplier)))

    image = keras.Input(input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(image)
    x = _conv(x, w(stem_width), 3, stem_stride, "stem", activation=activation)
    x = _depthwise(x, 3, 1, "stem_dw", activation=activation)
    for s, (t, c, n, stride) in enumerate(stages):
        for b in range(n):
            x = bottleneck(x, t, w(c), stride if b == 0 else 1, f"s{s + 1}b{b + 1}", activation)
        x = layers.Identity(name=f"stage{s + 1}")(x)
    x = _conv(x, w(wide), 1, 1, "wide", activation=activation)
    k = (x.shape[1], x.shape[2])
    x = layers.DepthwiseConv2D(k, padding="valid", use_bias=False, name="gdc")(x)
    x = _bn(x, "gdc_bn")
    x = layers.Flatten(name="gdc_flat")(x)
    x = layers.Dense(embedding_dim, use_bias=False, name="head_dense")(x)
    # The embedding computes in float32 whatever the global dtype policy.
    emb = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="embedding", dtype="float32")(
        x
    )
    return keras.Model(image, emb, name=name)


def mobilefacenet_from_spec(
    spec_name, input_shape, width_multiplier=1.0, embedding_dim=None, **kwargs
):
    """One of `MOBILEFACENET_SPECS` ("mobilefacenet", "mobilefacenet16", ...)."""
    if spec_name not in MOBILEFACENET_SPECS:
        raise ValueError(
            f"unknown MobileFaceNet spec {spec_name!r}: use one of {', '.join(MOBILEFACENET_SPECS)}"
        )
    stride, stem, stages, wide, dim, activation = MOBILEFACENET_SPECS[spec_name]
    kwargs.setdefault("activation", activation)
    return mobilefacenet(
        input_shape,
        stem_stride=stride,
        stem_width=stem,
        stages=stages,
        wide=wide,
        embedding_dim=embedding_dim or dim,
        width_multiplier=width_multiplier,
        name=spec_name,
        **kwargs,
    )
