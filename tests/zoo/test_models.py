"""Tests that every registered model gets for free, parametrized over `zoo.list_models()`.

Each model is built at a small size (`SMALL` per task), run, rebuilt from its config, and saved
to and loaded from `.keras` with `safe_mode=True` (so no Lambda layer can hide in a model).
"""

import keras
import numpy as np
import pytest

import zoo
from zoo.detection.sizing import has_rpn
from tests.helpers import random_pixels

SMALL = {
    "classification": dict(input_shape=(64, 64, 3), classes=5, classifier_activation="softmax"),
    "detection": dict(num_classes=4, max_detections=7),
    "segmentation": dict(num_classes=4, input_shape=(64, 64, 3)),  # like a detector: 4 + background
}

# Detectors with an RPN: anchors that fit a 64-pixel image, and 3 proposals (as the 3 RoIs above).
SMALL_RPN = dict(anchor_scales=(16.0, 32.0), rpn_min_size=1.0, test_post_nms_top_n=3)
# torchvision's FPN detector resizes in the graph (shorter side 800): kept at 64 pixels here.
SMALL_BY_NAME = {"faster_rcnn_resnet50_fpn": dict(min_size=64, max_size=64, test_post_nms_top_n=3)}


# Models whose test below takes about 4 seconds or more: left out of `make test-fast`, which
# keeps the smaller classifiers (tests/zoo/detection and tests/zoo/segmentation build the heads
# at tiny sizes there).
SLOW_TO_BUILD = {
    "alexnet", "densenet121", "densenet169", "densenet201", "resnet101", "resnet101_beta", "resnet152",
    "resnet50_beta", "xception", "xception65", "fast_rcnn_resnet50", "fast_rcnn_vgg16", "faster_rcnn_resnet50",
    "faster_rcnn_resnet50_fpn",
    "deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50", "deeplabv3plus_resnet50_beta", "deeplabv3plus_resnet101",
    "deeplabv3plus_resnet101_beta", "deeplabv3plus_xception65",
}


def by_cost(names):
    """`names` for parametrize, the ones in SLOW_TO_BUILD marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TO_BUILD else name for name in names]


def small_model(name):
    task = zoo.describe(name).task
    rpn = SMALL_BY_NAME.get(name, SMALL_RPN) if has_rpn(name) else {}
    return zoo.build(name, **SMALL[task], **rpn)


def small_inputs(name, rng):
    pixels = random_pixels(rng, (2, 64, 64, 3))
    if zoo.describe(name).task == "detection":
        if has_rpn(name):
            return {"images": pixels}
        rois = np.array([[[0, 0, 40, 40], [10, 20, 60, 64], [0, 0, 0, 0]]] * 2, "float32")
        return {"images": pixels, "rois": rois}
    return pixels


def probabilities(name, outputs):
    """The model's class probabilities, checked for shape; detections checked on the side."""
    if zoo.describe(name).task == "detection":
        assert outputs["boxes"].shape == (2, 7, 4) and outputs["num_detections"].shape == (2,)
        probs = np.asarray(outputs["class_probs"])
        assert probs.shape == (2, 3, 5)
        return probs
    if zoo.describe(name).task == "segmentation":
        logits = np.asarray(outputs, np.float64)
        assert logits.shape == (2, 64, 64, 5)
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)
    probs = np.asarray(outputs)
    assert probs.shape == (2, 5)
    return probs


@pytest.mark.parametrize("name", by_cost(zoo.list_models()))
def test_builds_runs_and_round_trips(name, rng, tmp_path):
    model = small_model(name)
    inputs = small_inputs(name, rng)
    outputs = probabilities(name, model(inputs, training=False))
    assert np.all(np.isfinite(outputs))
    np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, atol=1e-5)

    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(probabilities(name, rebuilt(inputs, training=False)), outputs, atol=1e-6)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(probabilities(name, loaded(inputs, training=False)), outputs, atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


@pytest.mark.parametrize("name", by_cost(zoo.list_models(task="classification")))
def test_classifier_top_options_behave_like_keras_applications(name):
    features = zoo.build(name, include_top=False, input_shape=(64, 64, 3))
    assert len(features.output.shape) == 4 and features.output.shape[-1] > 3
    pooled = zoo.build(name, include_top=False, pooling="max", input_shape=(64, 64, 3))
    assert pooled.output.shape == (None, features.output.shape[-1])
    assert features.input.name == "images"
