"""Truncated SVD of a detector's fc layers."""

import keras
import numpy as np
import pytest

import zoo
from zoo.detection.svd import LowRankDense, factorize, truncate_dense_layers


def test_factorize_is_the_best_low_rank_approximation():
    kernel = np.random.default_rng(0).normal(size=(40, 24)).astype(np.float32)
    first, second = factorize(kernel, 24)
    np.testing.assert_allclose(first @ second, kernel, atol=1e-5)
    singular = np.linalg.svd(kernel.astype(np.float64), compute_uv=False)
    first, second = factorize(kernel, 6)
    assert first.shape == (40, 6) and second.shape == (6, 24)
    # Eckart-Young: the Frobenius error of the best rank-6 approximation is the norm of the rest.
    np.testing.assert_allclose(np.linalg.norm(kernel - first @ second), np.sqrt(np.sum(singular[6:] ** 2)), rtol=1e-4)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 24\]"):
        factorize(kernel, 25)


@pytest.fixture(scope="module")
def detector():
    model = zoo.build("fast_rcnn_vgg16", num_classes=3, input_shape=(64, 64, 3), pool_size=2, fc_units=48)
    inputs = {
        "images": np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32),
        "rois": np.array([[[0, 0, 32, 32], [8, 8, 60, 50], [0, 0, 0, 0]]] * 2, np.float32),
    }
    return model, inputs


def test_full_rank_keeps_the_function_and_low_rank_saves_parameters(detector, tmp_path):
    model, inputs = detector
    reference = model(inputs, training=False)
    # fc1 is 2*2*512 -> 48, fc2 48 -> 48: rank 48 loses nothing.
    same = truncate_dense_layers(model, {"fc1": 48, "fc2": 48})
    np.testing.assert_allclose(same(inputs, training=False)["class_probs"], reference["class_probs"], atol=1e-5)
    np.testing.assert_allclose(same(inputs, training=False)["box_deltas"], reference["box_deltas"], atol=1e-5)

    small = truncate_dense_layers(model, {"fc1": 8, "fc2": 4})
    assert isinstance(small.get_layer("fc1"), LowRankDense)
    saved = (2048 * 48 - 8 * (2048 + 48)) + (48 * 48 - 4 * (48 + 48))
    assert model.count_params() - small.count_params() == saved
    # fc1 of the copy computes relu(x @ first @ second + bias) with the SVD factors.
    first, second = factorize(model.get_layer("fc1").kernel.numpy(), 8)
    np.testing.assert_allclose(small.get_layer("fc1").first.numpy(), first)
    np.testing.assert_allclose(small.get_layer("fc1").bias.numpy(), model.get_layer("fc1").bias.numpy())
    # The rest of the network keeps its weights.
    np.testing.assert_array_equal(small.get_layer("block1_conv1").kernel.numpy(), model.get_layer("block1_conv1").kernel.numpy())

    path = tmp_path / "small.keras"
    small.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded(inputs, training=False)["class_probs"], small(inputs, training=False)["class_probs"],
                               atol=1e-6)


def test_unknown_layer_names_are_refused(detector):
    model, _ = detector
    with pytest.raises(ValueError, match=r"ranks name no Dense layer .*\['fc6'\]"):
        truncate_dense_layers(model, {"fc6": 8})
