"""SphereFace-style residual networks of the Fujitsu KD_im paper (Tables 1-2).

Each stage is one 3x3 stride-2 convolution followed by residual units of two
3x3 convolutions with an identity shortcut; PReLU activations; the last map is
flattened into a fully connected 512-D embedding. BatchNorm is added after
every convolution (SphereFace trained without it; with BN it trains from
scratch at our batch sizes).

- ResNet-64 teacher: widths 64/128/256/512, units 3/8/16/3.
- thin ResNet-36 student: widths 18/36/72/144, units 2/4/8/2.
"""

from __future__ import annotations

import keras
from keras import layers

from lrface_tf.backbones.resnet import _activate, _conv_bn, embedding_head

SPHERE_SPECS = {
    "resnet64_sphere": ((3, 8, 16, 3), (64, 128, 256, 512)),
    "thin_resnet36": ((2, 4, 8, 2), (18, 36, 72, 144)),
}


def _unit(x, filters, name):
    y = _conv_bn(x, filters, 3, 1, f"{name}_a", "prelu")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", None)
    y = layers.Add(name=f"{name}_add")([x, y])
    return _activate(y, "prelu", f"{name}_out")


def sphere_resnet(
    input_shape,
    *,
    depths,
    widths,
    width_multiplier=1.0,
    embedding_dim=512,
    dropout=0.0,
    pooling="flatten",
    name="sphere_resnet",
):
    """SphereFace-style ResNet; see the module docstring. Stage outputs are named."""
    widths = [max(4, int(round(w * width_multiplier))) for w in widths]
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    size = min(input_shape[0], input_shape[1])
    for s, (depth, width) in enumerate(zip(depths, widths)):
        stride = 2 if size >= 8 else 1
        size = -(-size // stride)
        x = _conv_bn(x, width, 3, stride, f"s{s + 1}_down", "prelu")
        for u in range(depth):
            x = _unit(x, width, f"s{s + 1}u{u + 1}")
        x = layers.Identity(name=f"stage{s + 1}")(x)
    emb = embedding_head(x, embedding_dim, dropout, pooling=pooling)
    return keras.Model(inputs, emb, name=name)


def sphere_from_spec(spec_name, input_shape, **kwargs):
    depths, widths = SPHERE_SPECS[spec_name]
    return sphere_resnet(input_shape, depths=depths, widths=widths, name=spec_name, **kwargs)
