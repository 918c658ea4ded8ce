"""Backbones: name -> builder. `build_backbone("resnet18", (16, 16, 3))`."""

import keras

from lrface_tf.backbones.mobilefacenet import (
    MOBILEFACENET_SPECS,
    mobilefacenet,
    mobilefacenet_from_spec,
)
from lrface_tf.backbones.resnet import RESNET_SPECS, resnet, resnet_from_spec
from lrface_tf.backbones.thin_resnet import SPHERE_SPECS, sphere_from_spec, sphere_resnet

BACKBONES = {
    **{
        name: (lambda shape, _n=name, **kw: resnet_from_spec(_n, shape, **kw))
        for name in (*RESNET_SPECS, *(f"{n}_gdc" for n in RESNET_SPECS))
    },
    **{
        name: (lambda shape, _n=name, **kw: sphere_from_spec(_n, shape, **kw))
        for name in SPHERE_SPECS
    },
    **{
        name: (lambda shape, _n=name, **kw: mobilefacenet_from_spec(_n, shape, **kw))
        for name in MOBILEFACENET_SPECS
    },
}


def build_backbone(name, input_shape, **kwargs):
    """Build a registered backbone; raises a ValueError listing the names on a typo."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: use one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](tuple(input_shape), **kwargs)


def named_features(model, names):
    """A model returning `{name: tensor}` for the named layers of a functional backbone."""
    missing = [n for n in names if n not in {layer.name for layer in model.layers}]
    if missing:
        raise ValueError(f"{model.name} has no layer(s) {missing}")
    return keras.Model(model.input, {n: model.get_layer(n).output for n in names})


__all__ = [
    "BACKBONES",
    "build_backbone",
    "mobilefacenet",
    "named_features",
    "resnet",
    "sphere_resnet",
]
