import keras
import numpy as np
import pytest
import tensorflow as tf

from lrface_tf.losses import MaskedCrossEntropy
from lrface_tf.models import Distiller
from lrface_tf.training import (
    NaNGuard,
    check_batch_divides,
    learning_rate_schedule,
    make_optimizer,
    make_strategy,
)
from tests.test_case import tiny_model


def test_nan_in_a_loss_term_stops_the_run_and_names_it():
    x = np.random.RandomState(0).rand(32, 4, 4, 1).astype(np.float32)
    x[20] = np.nan  # batch 2 (of 8 per batch) carries a NaN image
    y = np.zeros(32, np.int32)
    d = Distiller(tiny_model(4), None, task_loss=MaskedCrossEntropy())
    d.compile(optimizer=keras.optimizers.SGD(0.01))
    ds = tf.data.Dataset.from_tensor_slices(({"hr": x, "lr": x}, y)).batch(8)
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 2, step 3: .*task=nan"):
        d.fit(ds, epochs=1, verbose=0, callbacks=[NaNGuard()])


def test_steps_schedule_matches_the_crrcd_recipe():
    lr = learning_rate_schedule(0.05, "steps", steps_per_epoch=10, boundaries_epochs=[21, 28, 32])
    np.testing.assert_allclose(
        [float(lr(s)) for s in (0, 209, 211, 281, 321)],
        [0.05, 0.05, 0.005, 0.0005, 0.00005],
        rtol=1e-5,
    )
    assert learning_rate_schedule(0.1, "constant") == 0.1
    with pytest.raises(ValueError, match="unknown lr schedule"):
        learning_rate_schedule(0.1, "linear")
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lamb", 0.1)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_shrinks_kernels_but_not_norm_scales_biases_or_slopes(name):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, bias_initializer="ones", name="dense")(inputs)
    x = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), name="act")(x)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    before = {v.path: np.array(v) for v in model.trainable_variables}
    opt = make_optimizer(name, 0.1, weight_decay=0.5)
    opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v in model.trainable_variables:  # zero gradients: only the decay moves a weight
        if v.path.endswith("kernel"):
            np.testing.assert_allclose(np.array(v), before[v.path] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:  # bias, PReLU alpha, gamma, beta
            np.testing.assert_array_equal(np.array(v), before[v.path])


def test_batch_must_divide_across_replicas(mirrored):
    check_batch_divides(8, mirrored)
    with pytest.raises(ValueError, match="batch_size 7 does not divide across 2 replicas"):
        check_batch_divides(7, mirrored)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        import os

        os.environ.pop("TF_CONFIG", None)
        make_strategy("multi_worker")
