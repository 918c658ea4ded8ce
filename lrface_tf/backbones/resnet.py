"""ResNet backbones for small inputs (7x7 to 112x112), as functional Keras models.

The stem adapts to the input: inputs of 64 px and more get a stride-2 stem;
smaller ones keep full resolution. A stage downsamples (stride 2) only while
its input is at least 8 px, so a 7x7 image is never reduced to nothing.

Every backbone returns the embedding; the stage outputs are named layers
("stage1" ... "stageN", "embedding"), so `named_features()` gives one model
that returns all of them from one forward pass.
"""

from __future__ import annotations

import keras
from keras import layers

POOLINGS = ("avg", "gdc", "flatten")

# name -> (block, depths, widths); each is also registered as "<name>_gdc" (GDC head)
RESNET_SPECS = {
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
    # ResNet-18 with a wider last stage: at 16x16 input that stage works on 4x4 maps, so
    # its width buys parameters for little LiteRT time (x0.25: 850k parameters, about
    # 1.2x resnet18 x0.25's float32 time on one thread; resnet18 x0.29, 959k, about 1.7x).
    "resnet18_wide4": ("basic", (2, 2, 2, 2), (64, 128, 256, 576)),
    # Tiny members for small data and fast tests / the Fashion-MNIST demo.
    "resnet8": ("basic", (1, 1, 1), (16, 32, 64)),
    "resnet14": ("basic", (2, 2, 2), (16, 32, 64)),
}


def _conv_bn(x, filters, kernel, stride, name, activation="relu"):
    if stride > 1:
        # Symmetric explicit padding so stride-2 layers sample the same grid on
        # every backend and in TFLite ("same" pads asymmetrically).
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    if activation:
        x = _activate(x, activation, f"{name}_{activation}")
    return x


def _residual(x, y, out, stride, name, activation):
    """y + shortcut(x), the shortcut projected (and pooled) when the shape changes."""
    shortcut = x
    if stride > 1 or x.shape[-1] != out:
        shortcut = _conv_bn(x, out, 1, 1, f"{name}_proj", activation=None)
        if stride > 1:
            pool = layers.AveragePooling2D(stride, padding="same", name=f"{name}_pool")
            shortcut = pool(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return _activate(y, activation, f"{name}_out")


def basic_block(x, filters, stride, name, activation="relu"):
    """Two 3x3 conv-BN layers with a projection shortcut when the shape changes."""
    y = _conv_bn(x, filters, 3, stride, f"{name}_a", activation)
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", activation=None)
    return _residual(x, y, filters, stride, name, activation)


def bottleneck_block(x, filters, stride, name, activation="relu", expansion=4):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50 style)."""
    out = filters * expansion
    y = _conv_bn(x, filters, 1, 1, f"{name}_a", activation)
    y = _conv_bn(y, filters, 3, stride, f"{name}_b", activation)
    y = _conv_bn(y, out, 1, 1, f"{name}_c", activation=None)
    return _residual(x, y, out, stride, name, activation)


def _activate(x, activation, name):
    if activation == "prelu":
        return layers.PReLU(shared_axes=[1, 2], name=name)(x)
    return layers.Activation(activation, name=name)(x)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def embedding_head(x, embedding_dim, dropout=0.0, pooling="avg", name="embedding"):
    """BN -> dropout -> dense(D) -> BN, after pooling the last feature map.

    `pooling`: "avg" (global average: every position weighed alike), "gdc" (a
    global depthwise convolution, MobileFaceNet's head: one learned kxk filter per
    channel over the whole map, so where a feature fires counts; kxk extra weights
    per channel) or "flatten" (every position, every channel into the dense layer).
    The last BN (the embedding) computes in float32 whatever the global dtype
    policy, so under mixed precision the embedding, and every loss on it, is
    float32 (Keras' advice for a model's outputs).
    """
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "gdc":
        k = (x.shape[1], x.shape[2])
        x = layers.DepthwiseConv2D(k, padding="valid", use_bias=False, name="gdc")(x)
        x = layers.Flatten(name="pool")(x)
    elif pooling == "flatten":
        x = layers.Flatten(name="pool")(x)
    else:
        raise ValueError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="head_bn")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(embedding_dim, name="head_dense")(x)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, dtype="float32")(x)


def resnet(
    input_shape,
    *,
    depths,
    widths,
    block="basic",
    width_multiplier=1.0,
    embedding_dim=128,
    dropout=0.0,
    activation="relu",
    pooling="avg",
    name="resnet",
):
    """A ResNet that maps `(B, H, W, C)` float images in [0, 1] to `(B, D)` embeddings.

    Args:
      input_shape: `(H, W, C)`, H and W from 7 to 224.
      depths, widths: blocks and base filters per stage.
      block: "basic" or "bottleneck".
      width_multiplier: scales every width (rounded, at least 4 filters).
      embedding_dim: D, size of the embedding.
      dropout: dropout rate in the embedding head.
      activation: "relu" or "prelu".
      pooling: how the last map becomes a vector: "avg", "gdc" or "flatten"
        (see `embedding_head`).

    Returns:
      functional `keras.Model`; layers "stage1".."stageN" and "embedding" are named.

    Example:
      >>> m = resnet((7, 7, 1), depths=(1, 1), widths=(8, 16), embedding_dim=32)
      >>> m.output_shape
      (None, 32)
    """
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}: use one of {', '.join(BLOCKS)}")
    if len(depths) != len(widths):
        raise ValueError(f"depths {depths} and widths {widths} must have the same length")
    h = min(input_shape[0], input_shape[1])
    if h < 7:
        raise ValueError(f"input size must be at least 7x7, got {input_shape[:2]}")
    widths = [max(4, int(round(w * width_multiplier))) for w in widths]
    inputs = keras.Input(input_shape, name="image")
    stem_stride = 2 if h >= 64 else 1
    x = _conv_bn(inputs, widths[0], 3, stem_stride, "stem", activation)
    size = -(-h // stem_stride)
    for s, (depth, width) in enumerate(zip(depths, widths)):
        for b in range(depth):
            stride = 2 if (b == 0 and s > 0 and size >= 8) else 1
            if stride == 2:
                size = -(-size // 2)
            x = BLOCKS[block](x, width, stride, f"s{s + 1}b{b + 1}", activation)
        x = layers.Identity(name=f"stage{s + 1}")(x)
    emb = embedding_head(x, embedding_dim, dropout, pooling)
    return keras.Model(inputs, emb, name=name)


def resnet_from_spec(spec_name, input_shape, **kwargs):
    """One of `RESNET_SPECS` ("resnet18", "resnet50", ...) with `resnet()` options.

    "<spec>_gdc" is the same network with `pooling="gdc"`.
    """
    base = spec_name.removesuffix("_gdc")
    if base not in RESNET_SPECS:
        raise ValueError(f"unknown ResNet spec {spec_name!r}: use one of {', '.join(RESNET_SPECS)}")
    if base != spec_name:
        kwargs = {**kwargs, "pooling": "gdc"}
    block, depths, widths = RESNET_SPECS[base]
    return resnet(input_shape, depths=depths, widths=widths, block=block, name=spec_name, **kwargs)
