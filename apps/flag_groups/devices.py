"""Where training runs: strategy, logical CPU devices, determinism, fault injection."""

from __future__ import annotations

from absl import flags

from lrface_tf.training import STRATEGIES

FLAGS = flags.FLAGS

flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into N logical devices (mirrored on CPU).")
flags.DEFINE_bool(
    "deterministic", False, "TF op determinism: reproducible runs (slower); resume tests use it."
)
flags.DEFINE_integer(
    "worker_timeout",
    600,
    "multi_worker: seconds to wait for every worker of TF_CONFIG to join before giving up.",
)
flags.DEFINE_integer(
    "debug_sigkill_at_step", 0, "Fault injection (tests): SIGKILL this process after step N."
)


def configure():
    """Logical CPU devices and op determinism: must run before TensorFlow initialises."""
    import tensorflow as tf

    if FLAGS.cpu_devices < 0:
        raise ValueError(f"--cpu_devices must be >= 0, got {FLAGS.cpu_devices}")
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    if FLAGS.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        )


def strategy(batch_size):
    """The strategy of --strategy, checked against the global batch."""
    from lrface_tf.training import check_batch_divides, make_strategy

    devices = None
    if FLAGS.strategy == "mirrored" and FLAGS.cpu_devices > 1:
        devices = [f"/cpu:{i}" for i in range(FLAGS.cpu_devices)]
    if FLAGS.worker_timeout < 1:
        raise ValueError(f"--worker_timeout must be >= 1 second, got {FLAGS.worker_timeout}")
    s = make_strategy(FLAGS.strategy, devices, worker_timeout=FLAGS.worker_timeout)
    check_batch_divides(batch_size, s)
    return s


def fault_injection():
    """Callbacks for the resume tests: SIGKILL after --debug_sigkill_at_step."""
    if not FLAGS.debug_sigkill_at_step:
        return []
    import os
    import signal

    import keras

    class SigkillAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= FLAGS.debug_sigkill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)

    return [SigkillAt()]
