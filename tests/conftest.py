"""Test setup: two logical CPU devices (for MirroredStrategy equivalence tests),
configured once before TensorFlow initialises its devices."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
LFW_ROOT = os.path.join(SHARED, "data", "lfw")


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def mirrored():
    """ONE two-replica MirroredStrategy for the whole session: two strategies in one
    process reuse collective instance keys and abort each other's all-reduces."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
