"""Numerical parity with keras.applications for every family that has a twin there.

The keras.applications model is built with `weights=None`, given random batch-norm statistics,
and its weights are copied into the zoo model *by layer name*. The zoo model takes raw pixels
and normalises in the graph; keras.applications takes `preprocess_input(pixels)`.
"""

import keras
import numpy as np
import pytest

import zoo
from tests.helpers import random_pixels, randomize_batch_norm

TWINS = {
    "vgg16": (keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
    "vgg19": (keras.applications.VGG19, keras.applications.vgg19.preprocess_input),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet.preprocess_input),
    "resnet101": (keras.applications.ResNet101, keras.applications.resnet.preprocess_input),
    "resnet152": (keras.applications.ResNet152, keras.applications.resnet.preprocess_input),
    "mobilenetv2": (keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input),
}


def copy_weights_by_name(source, target, renames=None):
    """Copy every weighted layer of `source` into the layer of `target` with the same name
    (or the name `renames` gives it)."""
    renames = renames or {}
    source_names = {renames.get(layer.name, layer.name) for layer in source.layers if layer.weights}
    target_names = {layer.name for layer in target.layers if layer.weights}
    assert source_names == target_names, (
        f"layer names differ: only in keras.applications {sorted(source_names - target_names)[:5]}, "
        f"only in the zoo {sorted(target_names - source_names)[:5]}"
    )
    for layer in source.layers:
        if layer.weights:
            target.get_layer(renames.get(layer.name, layer.name)).set_weights(layer.get_weights())


# The deep ResNets take 6 to 11 seconds each (two builds and a weight copy); VGG and
# MobileNet-v2 keep the comparison in `make test-fast`.
DEEP = {"resnet50", "resnet101", "resnet152"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in DEEP else name
                                  for name in sorted(TWINS)])
@pytest.mark.parametrize("include_top", [True, False])
def test_same_outputs_as_keras_applications(name, include_top, rng):
    keras_builder, preprocess_input = TWINS[name]
    shape = (64, 64, 3)
    options = dict(include_top=include_top, input_shape=shape, classes=10)
    options.update(classifier_activation=None) if include_top else options.update(pooling="avg")
    reference = keras_builder(weights=None, **options)
    randomize_batch_norm(reference, rng)
    model = zoo.build(name, **options)
    copy_weights_by_name(reference, model)

    pixels = random_pixels(rng, (2,) + shape)
    expected = reference(preprocess_input(pixels.copy()), training=False)
    actual = model(pixels, training=False)
    assert actual.shape == expected.shape
    # Relative as well: the zoo's batch norm is TensorFlow's fused kernel, Keras's its own ops, and
    # their rounding differences grow over ResNet-152's 155 batch norms to outputs in the hundreds.
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-4, rtol=2e-4)
    assert np.abs(np.asarray(expected)).max() > 1e-2, "outputs too small to make the comparison meaningful"


def xception_residual_renames(reference):
    """keras.applications' Xception leaves its four residual projections unnamed (`conv2d_7`,
    `batch_normalization_3`: session-dependent); the zoo names them by block, in that order."""
    blocks = (2, 3, 4, 13)
    convs = [l.name for l in reference.layers if isinstance(l, keras.layers.Conv2D)
             and not isinstance(l, keras.layers.SeparableConv2D) and l.kernel_size == (1, 1)]
    norms = [l.name for l in reference.layers if isinstance(l, keras.layers.BatchNormalization)
             and not l.name.startswith("block")]
    assert len(convs) == len(norms) == len(blocks)
    renames = {name: f"block{b}_residual_conv" for name, b in zip(convs, blocks)}
    renames.update({name: f"block{b}_residual_bn" for name, b in zip(norms, blocks)})
    return renames


@pytest.mark.slow
@pytest.mark.parametrize("include_top", [True, False])
def test_xception_same_outputs_as_keras_applications(include_top, rng):
    shape = (80, 80, 3)  # keras.applications' Xception needs at least 71 pixels
    options = dict(include_top=include_top, input_shape=shape, classes=10)
    options.update(classifier_activation=None) if include_top else options.update(pooling="avg")
    reference = keras.applications.Xception(weights=None, **options)
    randomize_batch_norm(reference, rng)
    model = zoo.build("xception", **options)
    copy_weights_by_name(reference, model, xception_residual_renames(reference))

    pixels = random_pixels(rng, (2,) + shape)
    expected = reference(keras.applications.xception.preprocess_input(pixels.copy()), training=False)
    actual = model(pixels, training=False)
    assert actual.shape == expected.shape
    # Relative as well: the zoo's batch norm is TensorFlow's fused kernel, Keras's its own ops, and
    # their rounding differences grow over ResNet-152's 155 batch norms to outputs in the hundreds.
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-4, rtol=2e-4)
    assert np.abs(np.asarray(expected)).max() > 1e-2, "outputs too small to make the comparison meaningful"


@pytest.mark.parametrize("alpha", [0.35, 1.3])
def test_mobilenet_v2_width_multiplier_matches_keras_applications(alpha, rng):
    shape = (64, 64, 3)
    reference = keras.applications.MobileNetV2(weights=None, alpha=alpha, include_top=False, input_shape=shape)
    randomize_batch_norm(reference, rng)
    model = zoo.build("mobilenetv2", alpha=alpha, include_top=False, input_shape=shape)
    assert model.count_params() == reference.count_params()
    copy_weights_by_name(reference, model)
    pixels = random_pixels(rng, (2,) + shape)
    expected = np.asarray(reference(keras.applications.mobilenet_v2.preprocess_input(pixels.copy()), training=False))
    actual = np.asarray(model(pixels, training=False))
    np.testing.assert_allclose(actual, expected, atol=1e-4 * max(1.0, np.abs(expected).max()), rtol=0)
