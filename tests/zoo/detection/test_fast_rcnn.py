"""Fast R-CNN: structure, ImageNet weights by name (checked against keras.applications), the
empty and padding cases, configuration errors."""

import keras
import numpy as np
import pytest

import zoo
from tests.helpers import random_pixels, randomize_batch_norm


def _copy_by_name(source, target):
    """Copies every weight of `source` into the layer of `target` with the same name."""
    copied = 0
    names = {layer.name for layer in target.layers}
    for layer in source.layers:
        if layer.weights and layer.name in names:
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    return copied


@pytest.mark.slow
def test_vgg16_fc6_fc7_take_imagenet_fc1_fc2_by_name(rng):
    # At 224 x 224, conv5_3 is 14 x 14; the RoI [0, 0, 208, 208] rounds to cells 0 ... 13, whose
    # 7 x 7 bins are exactly VGG16's 2 x 2 block5_pool. So the detector's fc7 on that RoI must
    # be keras.applications' fc2 on the image, once the weights are copied by name.
    reference = keras.applications.VGG16(weights=None)
    detector = zoo.build("fast_rcnn_vgg16", num_classes=3)
    assert _copy_by_name(reference, detector) == 13 + 2  # 13 convolutions, fc1, fc2
    pixels = random_pixels(rng, (1, 224, 224, 3))
    fc7 = keras.Model(detector.inputs, detector.get_layer("fc2").output)
    ours = np.asarray(fc7({"images": pixels, "rois": np.array([[[0, 0, 208, 208]]], "float32")}))[:, 0]
    theirs = np.asarray(keras.Model(reference.input, reference.get_layer("fc2").output)(
        keras.applications.vgg16.preprocess_input(pixels.copy())))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_resnet50_c4_head_runs_keras_applications_conv5_on_each_roi(rng):
    # At 224 x 224, C4 is 14 x 14 and the RoI [0, 0, 208, 208] pools it 1:1 to 14 x 14, so conv5
    # and the average pool on it are keras.applications ResNet50's avg_pool output.
    reference = keras.applications.ResNet50(weights=None)
    randomize_batch_norm(reference, rng)
    detector = zoo.build("fast_rcnn_resnet50", num_classes=3)
    copied = _copy_by_name(reference, detector)
    assert copied == sum(1 for layer in reference.layers if layer.weights) - 1  # all but predictions
    pixels = random_pixels(rng, (1, 224, 224, 3))
    pooled = keras.Model(detector.inputs, detector.get_layer("unflatten_rois").output)
    rois = np.array([[[0, 0, 208, 208], [0, 0, 0, 0]]], "float32")
    ours = np.asarray(pooled({"images": pixels, "rois": rois}))[:, 0]
    theirs = np.asarray(keras.Model(reference.input, reference.get_layer("avg_pool").output)(
        keras.applications.resnet50.preprocess_input(pixels.copy())))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["fast_rcnn_vgg16", "fast_rcnn_resnet50"])
def test_outputs_padding_and_empty_rois(name, rng):
    model = zoo.build(name, num_classes=3, max_detections=10, score_threshold=0.0)
    pixels = random_pixels(rng, (2, 64, 96, 3))
    rois = np.zeros((2, 4, 4), "float32")
    rois[0, :2] = [[0, 0, 32, 48], [8, 16, 60, 90]]  # image 1 has only padding rows
    out = model({"images": pixels, "rois": rois})
    assert out["class_probs"].shape == (2, 4, 4) and out["box_deltas"].shape == (2, 4, 3, 4)
    np.testing.assert_allclose(np.asarray(out["class_probs"]).sum(-1), 1.0, atol=1e-5)
    assert out["boxes"].shape == (2, 10, 4) and out["classes"].dtype == "int32"
    count = np.asarray(out["num_detections"])
    assert count[1] == 0 and 0 < count[0] <= 2 * 3  # two real RoIs, three classes each
    boxes, classes = np.asarray(out["boxes"]), np.asarray(out["classes"])
    assert np.all((boxes[0, : count[0]] >= 0) & (boxes[0, : count[0]] <= [64, 96, 64, 96]))
    assert set(classes[0, : count[0]]) <= {1, 2, 3} and np.all(classes[0, count[0]:] == 0)
    # No RoIs at all is a valid call too.
    empty = model({"images": pixels, "rois": np.zeros((2, 0, 4), "float32")})
    assert empty["class_probs"].shape == (2, 0, 4) and np.all(np.asarray(empty["num_detections"]) == 0)


def test_configuration_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"backbone must be one of \['vgg16', 'resnet50', 'mobilenetv2'\], got 'alexnet'"):
        zoo.build("fast_rcnn_vgg16", backbone="alexnet")
    with pytest.raises(ValueError, match="pool_size must be even"):
        zoo.build("fast_rcnn_resnet50", pool_size=7)
    with pytest.raises(ValueError, match="num_classes"):
        zoo.build("fast_rcnn_vgg16", num_classes=0)
    with pytest.raises(TypeError, match="accepted"):
        zoo.build("fast_rcnn_vgg16", classes=3)


@pytest.mark.slow
def test_a_non_finite_roi_under_xla_gives_no_detection(rng):
    # XLA drops CheckNumerics, so under jit_compile a NaN or Inf RoI cannot raise: RoIPooling pools
    # zeros for it and DetectionPostprocess treats it as padding (documented; eager raises).
    import tensorflow as tf

    model = zoo.build("fast_rcnn_vgg16", num_classes=2, pool_size=2, fc_units=16, max_detections=20,
                      score_threshold=0.0)
    pixels = random_pixels(rng, (1, 64, 64, 3))
    rois = np.array([[[0, 0, 32, 32], [0, 0, 32, np.nan], [np.inf, 0, 40, 40], [-np.inf] * 4]], "float32")
    out = tf.function(lambda p, r: model({"images": p, "rois": r}, training=False), jit_compile=True)(pixels, rois)
    count = int(out["num_detections"][0])
    assert 0 < count <= 2  # only the finite RoI's two classes
    assert np.all(np.isfinite(np.asarray(out["boxes"]))) and np.all(np.isfinite(np.asarray(out["scores"])))
    alone = model({"images": pixels, "rois": rois[:, :1]}, training=False)
    np.testing.assert_allclose(np.asarray(out["scores"][0, :count]), np.asarray(alone["scores"][0, :count]), rtol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rois contain NaN or Inf"):
        model({"images": pixels, "rois": rois}, training=False)
