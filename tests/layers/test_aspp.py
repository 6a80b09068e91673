"""The ASPP layer: shapes, a NumPy reference of every branch, config and `.keras` (its slim names:
tests/zoo/slim/test_names.py)."""

import keras
import numpy as np
import pytest

from layers import ASPP, atrous_rates_for


def randomize(layer, rng):
    """Random kernels and batch-norm statistics, so the reference sees every parameter used."""
    for sublayer in layer.sublayers:
        if isinstance(sublayer, keras.layers.BatchNormalization):
            channels = sublayer.gamma.shape[0]
            sublayer.set_weights([
                rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.2, channels),
                rng.normal(0, 0.2, channels), rng.uniform(0.5, 1.5, channels),
            ])
        else:
            sublayer.set_weights([rng.normal(0, 0.3, w.shape) for w in sublayer.get_weights()])


def numpy_batch_norm(x, bn):
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
    return (x - mean) / np.sqrt(variance + bn.epsilon) * gamma + beta


def numpy_dilated(x, kernel, rate, depthwise=False):
    """SAME, stride 1, dilated 3x3 convolution of `[B, H, W, C]` (depthwise: kernel [3, 3, C, 1])."""
    padded = np.pad(x, [(0, 0), (rate, rate), (rate, rate), (0, 0)])
    height, width = x.shape[1:3]
    out = 0.0
    for i in range(3):
        for j in range(3):
            window = padded[:, i * rate:i * rate + height, j * rate:j * rate + width, :]
            out = out + (window * kernel[i, j, :, 0] if depthwise else window @ kernel[i, j])
    return out


def numpy_aspp(layer, x):
    """The module docstring's graph in float64 NumPy, from the layer's own weights."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    get = {sub.name: sub for sub in layer.sublayers}
    weight = lambda name: np.asarray(get[name].get_weights()[0], np.float64)  # noqa: E731
    conv_bn = lambda v, name: relu(numpy_batch_norm(v @ weight(name)[0, 0], get[f"{name}_bn"]))  # noqa: E731
    branches = []
    if layer.image_pooling:
        pooled = conv_bn(x.mean(axis=(1, 2), keepdims=True), "image_pooling")
        branches.append(np.broadcast_to(pooled, x.shape[:3] + (layer.filters,)))
    branches.append(conv_bn(x, "aspp0"))
    for index, rate in enumerate(layer.atrous_rates, start=1):
        if layer.separable:
            depthwise = numpy_dilated(x, weight(f"aspp{index}_depthwise"), rate, depthwise=True)
            depthwise = relu(numpy_batch_norm(depthwise, get[f"aspp{index}_depthwise_bn"]))
            branches.append(conv_bn(depthwise, f"aspp{index}_pointwise"))
        else:
            branches.append(relu(numpy_batch_norm(numpy_dilated(x, weight(f"aspp{index}"), rate), get[f"aspp{index}_bn"])))
    return conv_bn(np.concatenate(branches, axis=-1), "concat_projection")


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("image_pooling", [False, True])
def test_matches_a_numpy_reference_of_every_branch(separable, image_pooling, rng):
    layer = ASPP(6, atrous_rates=(1, 2, 3), separable=separable, image_pooling=image_pooling, name="aspp")
    x = rng.normal(size=(2, 7, 5, 4)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    out = np.asarray(layer(x, training=False))
    assert out.shape == (2, 7, 5, 6)
    np.testing.assert_allclose(out, numpy_aspp(layer, x.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_shapes_with_unknown_sizes_and_the_branch_count():
    features = keras.Input((None, None, 12))
    layer = ASPP(8, atrous_rates=atrous_rates_for(8), separable=True, name="aspp")
    assert layer(features).shape == (None, None, None, 8)
    # image pooling + 1x1 + three separable (depthwise, pointwise) + projection, each with a BN.
    names = [sub.name for sub in layer.sublayers]
    assert names[:4] == ["image_pooling", "image_pooling_bn", "aspp0", "aspp0_bn"]
    assert "aspp3_depthwise" in names and "aspp3_pointwise_bn" in names and names[-1] == "concat_projection_bn"
    # The projection sees the concatenation of five branches.
    assert layer.sublayers[-2].kernel.shape == (1, 1, 5 * 8, 8)
    assert layer.compute_output_shape((2, 9, 9, 12)) == (2, 9, 9, 8)
    assert atrous_rates_for(16) == (6, 12, 18) and atrous_rates_for(8) == (12, 24, 36)


def test_dropout_only_in_training(rng):
    layer = ASPP(4, atrous_rates=(), dropout=0.5, name="aspp")
    x = rng.normal(size=(1, 6, 6, 3)).astype("float32")
    first, second = np.asarray(layer(x, training=False)), np.asarray(layer(x, training=False))
    np.testing.assert_array_equal(first, second)
    # In training the batch norm uses batch statistics too; dropout zeroes about half.
    trained = np.asarray(layer(x, training=True))
    assert 0.2 < np.mean(trained == 0) < 0.95


def test_config_round_trip_and_keras_file(rng, tmp_path):
    features = keras.Input((None, None, 5))
    layer = ASPP(6, atrous_rates=(2, 3), separable=True, dropout=0.2, batch_norm_momentum=0.9, name="aspp")
    model = keras.Model(features, layer(features))
    randomize(layer, rng)
    x = rng.normal(size=(2, 9, 7, 5)).astype("float32")
    expected = np.asarray(model(x, training=False))

    clone = ASPP.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    model.save(tmp_path / "aspp.keras")
    loaded = keras.saving.load_model(tmp_path / "aspp.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(filters=0), "filters"),
        (dict(atrous_rates=(6, 0)), "atrous_rates"),
        (dict(dropout=1.0), "dropout"),
        (dict(batch_norm_epsilon=0.0), "batch_norm"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        ASPP(**arguments)


def test_features_without_known_channels_are_a_clear_error():
    with pytest.raises(ValueError, match=r"\[B, h, w, C\]"):
        ASPP(4).build((None, None, None, None))
