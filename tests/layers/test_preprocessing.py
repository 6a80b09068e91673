"""PixelNormalization against keras.applications' own preprocess_input."""

import keras
import numpy as np
import pytest

from layers import PRESETS, PixelNormalization
from tests.helpers import random_pixels

MODES = {"caffe": "caffe", "torch": "torch", "tf": "tf"}


@pytest.mark.parametrize("preset", sorted(MODES))
def test_presets_equal_keras_applications_preprocess_input(preset, rng):
    pixels = random_pixels(rng, (2, 5, 7, 3))
    expected = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode=MODES[preset])
    actual = PixelNormalization.from_preset(preset)(pixels)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-5, rtol=1e-6)


def test_deeplab_resnet_subtracts_the_rgb_mean(rng):
    pixels = random_pixels(rng, (1, 4, 4, 3))
    actual = PixelNormalization.from_preset("deeplab_resnet")(pixels)
    np.testing.assert_allclose(np.asarray(actual), pixels - np.array([123.15, 115.90, 103.06]), atol=1e-4)


def test_uint8_pixels_are_accepted_and_cast():
    pixels = np.full((1, 2, 2, 3), 255, dtype="uint8")
    out = PixelNormalization.from_preset("tf")(pixels)
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.asarray(out), 1.0)


def test_config_round_trip_and_keras_file(tmp_path, rng):
    layer = PixelNormalization.from_preset("caffe", name="norm")
    restored = PixelNormalization.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layer(inputs))
    pixels = random_pixels(rng, (1, 8, 8, 3))
    model.save(tmp_path / "norm.keras")
    loaded = keras.saving.load_model(tmp_path / "norm.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(pixels)), np.asarray(model(pixels)))
    assert model.compute_output_shape((None, 8, 8, 3)) == (None, 8, 8, 3)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="preset must be one of"):
        PixelNormalization.from_preset("imagenet")
    with pytest.raises(ValueError, match="channel_order must be"):
        PixelNormalization(channel_order="grb")
    with pytest.raises(ValueError, match="std must be positive"):
        PixelNormalization(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="must have 3 channels"):
        PixelNormalization.from_preset("caffe")(np.zeros((1, 2, 2, 4), "float32"))
    assert set(PRESETS) == {"caffe", "torch", "tf", "deeplab_resnet"}
