"""Weight decay on kernels only, frozen batch norm, frozen stages."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.regularization import apply_weight_decay, default_weight_decay, freeze_stages, set_batch_norm


def _small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_weight_decay_is_half_decay_times_squared_kernels():
    model = _small_model()
    assert apply_weight_decay(model, 1e-3) == 3
    kernels = [model.get_layer("conv").kernel, model.get_layer("depthwise").kernel, model.get_layer("dense").kernel]
    expected = sum(1e-3 / 2 * np.sum(k.numpy() ** 2) for k in kernels)
    model(np.zeros((1, 8, 8, 3), "float32"))
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    # Its gradient is decay * w on kernels and nothing on biases or batch-norm parameters.
    with tf.GradientTape() as tape:
        model(np.zeros((1, 8, 8, 3), "float32"))
        loss = tf.add_n(model.losses)
    gradients = tape.gradient(loss, model.trainable_variables)
    for variable, gradient in zip(model.trainable_variables, gradients):
        if variable.path.endswith("kernel"):
            np.testing.assert_allclose(gradient.numpy(), 1e-3 * variable.numpy(), rtol=1e-5, atol=1e-12)
        else:
            assert gradient is None


def test_weight_decay_is_saved_with_the_model(tmp_path):
    model = _small_model()
    apply_weight_decay(model, 4e-5)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    restored(np.zeros((1, 8, 8, 3), "float32"))
    model(np.zeros((1, 8, 8, 3), "float32"))
    assert float(sum(restored.losses)) == pytest.approx(float(sum(model.losses)), rel=1e-6)
    assert restored.get_layer("conv").kernel_regularizer.get_config()["l2"] == pytest.approx(2e-5)


def test_default_decay_follows_deeplab_per_backbone():
    assert default_weight_decay("resnet50") == 1e-4
    assert default_weight_decay("deeplabv3plus_resnet101_beta") == 1e-4
    assert default_weight_decay("deeplabv3plus_mobilenet_v2") == 4e-5
    assert default_weight_decay("deeplabv3plus_xception65") == 4e-5
    assert default_weight_decay("fast_rcnn_vgg16") == 5e-4


def test_frozen_batch_norm_keeps_its_statistics_during_fit():
    model = _small_model()
    assert set_batch_norm(model, "frozen") == 1
    bn = model.get_layer("bn")
    mean_before = bn.moving_mean.numpy().copy()
    gamma_before = bn.gamma.numpy().copy()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 8, 8, 3)).astype("float32") * 5 + 3, np.ones((8, 2)), verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean_before)
    np.testing.assert_array_equal(bn.gamma.numpy(), gamma_before)
    # The conv kernel still trains.
    assert model.get_layer("conv").trainable


def test_fine_tuned_batch_norm_updates_its_statistics():
    model = _small_model()
    set_batch_norm(model, "fine_tune")
    bn = model.get_layer("bn")
    mean_before = bn.moving_mean.numpy().copy()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(np.full((8, 8, 8, 3), 3.0, "float32"), np.ones((8, 2)), verbose=0)
    assert not np.allclose(bn.moving_mean.numpy(), mean_before)
    with pytest.raises(ValueError, match="batch_norm"):
        set_batch_norm(model, "sync")


def test_freeze_stages_counts_from_the_stem():
    model = zoo.build("resnet18", input_shape=(32, 32, 3), classes=3)
    frozen = freeze_stages(model, 2)
    assert "conv1_conv" in frozen and "conv2_block2_2_conv" in frozen
    assert not model.get_layer("conv1_conv").trainable
    assert model.get_layer("conv3_block1_1_conv").trainable
    assert not any(name.startswith(("conv3", "conv4", "conv5", "predictions")) for name in frozen)
    vgg = zoo.build("vgg16", input_shape=(32, 32, 3), include_top=False)
    assert {name.split("_")[0] for name in freeze_stages(vgg, 3)} == {"block1", "block2", "block3"}
    with pytest.raises(ValueError, match="stages"):
        freeze_stages(zoo.build("resnet18", input_shape=(32, 32, 3), classes=3), 6)
    with pytest.raises(ValueError, match="no known stages"):
        freeze_stages(_small_model(), 1)
