"""Tests that every registered model gets for free, parametrized over `zoo.list_models()`.

Each model is built at a small size (`SMALL` per task), run, rebuilt from its config, and saved
to and loaded from `.keras` with `safe_mode=True` (so no Lambda layer can hide in a model).
"""

import keras
import numpy as np
import pytest

import zoo
from tests.helpers import random_pixels

SMALL = {
    "classification": dict(input_shape=(64, 64, 3), classes=5, classifier_activation="softmax"),
}


def small_model(name):
    task = zoo.describe(name).task
    return zoo.build(name, **SMALL[task])


@pytest.mark.parametrize("name", zoo.list_models())
def test_builds_runs_and_round_trips(name, rng, tmp_path):
    model = small_model(name)
    pixels = random_pixels(rng, (2, 64, 64, 3))
    outputs = np.asarray(model(pixels, training=False))
    assert outputs.shape == (2, 5)
    assert np.all(np.isfinite(outputs))
    np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, atol=1e-5)

    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(rebuilt(pixels, training=False)), outputs, atol=1e-6)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(pixels, training=False)), outputs, atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


@pytest.mark.parametrize("name", zoo.list_models(task="classification"))
def test_classifier_top_options_behave_like_keras_applications(name):
    features = zoo.build(name, include_top=False, input_shape=(64, 64, 3))
    assert len(features.output.shape) == 4 and features.output.shape[-1] > 3
    pooled = zoo.build(name, include_top=False, pooling="max", input_shape=(64, 64, 3))
    assert pooled.output.shape == (None, features.output.shape[-1])
    assert features.input.name == "images"
