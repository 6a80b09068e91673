"""DeepLab-v3+: output sizes at both output strides and odd sizes, decoder shapes, the config,
frozen batch norm and a `.keras` round trip of a tiny model."""

import dataclasses
import math

import keras
import numpy as np
import pytest

import zoo
from layers import compat
from tests.helpers import random_pixels
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus

# A small segmenter for fast tests: ResNet-18 and narrow head layers.
TINY = dict(backbone="resnet18", num_classes=2, aspp_filters=8, decoder_projection_filters=4, decoder_filters=8,
            preprocessing="torch")


def tiny(**overrides):
    return build_deeplab_v3_plus(DeepLabV3PlusConfig(**{**TINY, **overrides}), name="tiny_deeplab")


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("size", [(64, 64), (65, 65), (33, 47)])
def test_logits_have_the_input_size_at_both_output_strides(output_stride, size, rng):
    model = tiny(output_stride=output_stride)
    logits = model(random_pixels(rng, (2, *size, 3)), training=False)
    assert logits.shape == (2, *size, 3) and logits.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))


def test_aspp_and_decoder_shapes(rng):
    model = tiny(output_stride=16)
    height, width = 65, 49
    probe = keras.Model(model.input, {
        name: model.get_layer(name).output
        for name in ("aspp", "feature_projection0_relu", "decoder_upsample", "decoder_conv1_pointwise_relu",
                     "logits_semantic")
    })
    shapes = {name: tensor.shape for name, tensor in probe(random_pixels(rng, (1, height, width, 3))).items()}
    stride4 = (math.ceil(height / 4), math.ceil(width / 4))
    stride16 = (math.ceil(height / 16), math.ceil(width / 16))
    assert shapes["aspp"] == (1, *stride16, 8)
    assert shapes["feature_projection0_relu"] == (1, *stride4, 4)
    assert shapes["decoder_upsample"] == (1, *stride4, 8)
    assert shapes["decoder_conv1_pointwise_relu"] == (1, *stride4, 8)
    assert shapes["logits_semantic"] == (1, *stride4, 3)
    # ASPP rates follow the output stride unless given.
    assert model.get_layer("aspp").atrous_rates == (6, 12, 18)
    assert tiny(output_stride=8).get_layer("aspp").atrous_rates == (12, 24, 36)
    assert tiny(atrous_rates=(2, 4)).get_layer("aspp").atrous_rates == (2, 4)


def test_without_decoder_it_is_deeplab_v3(rng):
    model = tiny(decoder_output_stride=None)
    assert not any(layer.name.startswith(("decoder", "feature_projection")) for layer in model.layers)
    assert model(random_pixels(rng, (1, 40, 36, 3))).shape == (1, 40, 36, 3)


def test_non_separable_decoder_uses_slim_repeat_names():
    model = tiny(decoder_separable=False, aspp_separable=False)
    assert model.get_layer("decoder_conv0_1").kernel.shape == (3, 3, 8 + 4, 8)
    assert model.get_layer("aspp").get_config()["separable"] is False
    assert model.get_layer("decoder_conv0_2").kernel.shape == (3, 3, 8, 8)


def test_frozen_batch_norm_reaches_the_aspp_sublayers():
    model = tiny(fine_tune_batch_norm=False)
    norms = [layer for layer in compat.flatten_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    assert any(layer.name == "aspp0_bn" for layer in norms)
    assert model.get_layer("logits_semantic").trainable


def test_registered_variants_and_their_configs():
    names = zoo.list_models("deeplabv3plus_*")
    assert {"deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_resnet50_beta",
            "deeplabv3plus_resnet101_beta"} <= set(names)
    for name in names:
        assert zoo.describe(name).task == "segmentation"
    beta = zoo.registry.resolve_config("deeplabv3plus_resnet101_beta")
    assert beta.preprocessing == "tf" and beta.backbone_batch_norm_momentum == 0.95
    assert beta.num_classes == 20 and beta.output_stride == 16 and beta.rates == (6, 12, 18)
    assert dataclasses.replace(beta, output_stride=8).rates == (12, 24, 36)


def test_variants_build_deeplabs_slim_backbones():
    """The variants' backbones are DeepLab's: slim placement, taps, biases, preprocessing, batch norm."""
    resnet = zoo.build("deeplabv3plus_resnet50", num_classes=3, input_shape=(64, 64, 3))
    # slim placement: conv2's last unit strides in its 3x3, conv3's first unit does not stride.
    assert resnet.get_layer("conv2_block3_2_conv").strides == (2, 2)
    assert resnet.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert not resnet.get_layer("conv1_conv").use_bias
    assert resnet.get_layer("conv1_bn").epsilon == 1e-5 and resnet.get_layer("conv1_bn").momentum == 0.95
    # The decoder taps block1/unit_2/bottleneck_v1/conv3 (before the add), multi-grid (1, 2, 4) at OS 16.
    tap = resnet.get_layer("feature_projection0").input
    assert compat.producer(tap)[0].name == "conv2_block2_3_bn"
    assert [resnet.get_layer(f"conv5_block{u}_2_conv").dilation_rate for u in (1, 2, 3)] == [(2, 2), (4, 4), (8, 8)]
    assert resnet.get_layer("preprocessing").get_config()["mean"] == pytest.approx([123.15, 115.90, 103.06])
    beta = zoo.registry.resolve_config("deeplabv3plus_resnet50_beta")
    assert beta.preprocessing == "tf" and beta.slim_backbone and beta.multi_grid == (1, 2, 4)

    mobilenet = zoo.build("deeplabv3plus_mobilenetv2", num_classes=3, input_shape=(64, 64, 3))
    assert "Conv_1" not in [layer.name for layer in mobilenet.layers]  # DeepLab stops at layer_18
    tap = mobilenet.get_layer("feature_projection0").input
    assert compat.producer(tap)[0].name == "block_2_depthwise_relu"  # layer_4/depthwise_output
    assert mobilenet.get_layer("bn_Conv1").momentum == 0.997 and mobilenet.get_layer("bn_Conv1").epsilon == 1e-3

    config = zoo.registry.resolve_config("deeplabv3plus_xception65")
    assert config.aspp_separable and config.decoder_separable and config.decoder_output_stride == 4
    assert (config.backbone_batch_norm_momentum, config.backbone_batch_norm_epsilon) == (0.9997, 1e-3)
    assert config.preprocessing == "tf"


def test_a_backbone_without_a_slim_twin_is_named():
    with pytest.raises(ValueError, match="'resnet18' has no TF-slim twin.*slim_backbone=False"):
        zoo.build("deeplabv3plus_resnet50", backbone="resnet18")
    with pytest.raises(ValueError, match="multi_grid"):
        zoo.build("deeplabv3plus_resnet50", multi_grid=(1, 2))


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(output_stride=32), ValueError, "output_stride"),
        (dict(decoder_output_stride=8), ValueError, "decoder_output_stride"),
        (dict(backbone="fast_rcnn_vgg16"), ValueError, "backbone"),
        (dict(backbone="resnet5"), ValueError, "resnet50"),
        (dict(input_shape=(16, 16, 3)), ValueError, "at least 32"),
        (dict(dropout=1.5), ValueError, "dropout"),
        (dict(decoder_filter=3), TypeError, "accepted overrides"),
    ],
)
def test_bad_configs_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        zoo.build("deeplabv3plus_resnet50", **overrides)


def test_config_rebuild_and_keras_round_trip(rng, tmp_path):
    model = tiny(output_stride=8, input_shape=(None, None, 3))
    pixels = random_pixels(rng, (1, 41, 45, 3))
    expected = np.asarray(model(pixels, training=False))
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(rebuilt(pixels, training=False)), expected, atol=1e-5)
    model.save(tmp_path / "deeplab.keras")
    loaded = keras.saving.load_model(tmp_path / "deeplab.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(pixels, training=False)), expected, atol=1e-5)


def test_mixed_precision_logits_stay_float32(rng):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny()
        logits = model(random_pixels(rng, (1, 48, 48, 3)), training=False)
    finally:
        keras.config.set_dtype_policy(previous)
    assert logits.dtype == "float32" and np.all(np.isfinite(np.asarray(logits)))
