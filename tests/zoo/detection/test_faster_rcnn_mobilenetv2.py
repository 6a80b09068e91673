"""faster_rcnn_mobilenetv2, the light detector: a MobileNet-v2 trunk dilated to stride 16 through the
backbone contract, keras.applications' ImageNet weights loading into it by name, and the
detector trunks as data (`zoo.detection.fast_rcnn.TRUNKS`)."""

import keras
import numpy as np
import pytest

import zoo
from layers.detection_contract import FASTER_RCNN, PROPOSALS, RPN_ANCHORS, detector_kind
from tests.helpers import random_pixels
from zoo.backbones import backbone_features
from zoo.detection.fast_rcnn import TRUNKS, conv5_roi_head, fc_roi_head
from zoo.detection.sizing import detector_overrides, has_rpn
from zoo.registry import get_spec
from zoo.weights import backbone_entry, load_weights_file

NAME = "faster_rcnn_mobilenetv2"
SMALL = dict(num_classes=3, anchor_scales=(16.0, 32.0, 64.0), rpn_min_size=4.0, train_pre_nms_top_n=200,
             train_post_nms_top_n=32, test_pre_nms_top_n=100, test_post_nms_top_n=16, max_detections=10)


@pytest.fixture(scope="module")
def small_model():
    return zoo.build(NAME, **SMALL)


def test_trunks_are_data_over_the_backbone_contract():
    # Each detector trunk names a registered backbone and a feature map of it at stride 16.
    for key, trunk in TRUNKS.items():
        images = keras.Input((64, 96, 3))
        features = backbone_features(trunk.backbone, images, **trunk.overrides)[trunk.level]
        assert features.stride == 16, key
        assert tuple(features.tensor.shape[1:3]) == (4, 6), key
    assert TRUNKS["mobilenetv2"].roi_head is fc_roi_head and TRUNKS["resnet50"].roi_head is conv5_roi_head
    with pytest.raises(ValueError, match="last_level"):
        backbone_features("mobilenetv2", keras.Input((64, 64, 3)), last_level=4)


def test_a_faster_rcnn_on_a_stride_16_mobilenet_v2(small_model, rng):
    assert has_rpn(NAME) and detector_kind(small_model) == FASTER_RCNN
    # The RPN reads the dilated last block (320 channels) at stride 16; no 1280-channel Conv_1.
    features = small_model.get_layer(RPN_ANCHORS).input
    assert features.shape[-1] == 320
    names = {layer.name for layer in small_model.layers}
    assert {"Conv1", "block_16_project", "fc1", "fc2"} <= names and "Conv_1" not in names
    images = random_pixels(rng, (2, 96, 128, 3))
    outputs = small_model.predict_on_batch({"images": images})
    assert outputs[PROPOSALS].shape == (2, 16, 4)
    assert outputs["class_probs"].shape == (2, 16, 4) and outputs["box_deltas"].shape == (2, 16, 3, 4)
    np.testing.assert_allclose(outputs["class_probs"].sum(-1), 1.0, rtol=1e-5)
    assert outputs["boxes"].shape == (2, 10, 4)


def test_keras_applications_imagenet_weights_load_into_the_trunk_by_name(small_model, tmp_path):
    # A file shaped like keras.applications' no-top MobileNetV2 ImageNet file, with random weights.
    keras.utils.set_random_seed(3)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    for variable in reference.weights:
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape).astype("float32"))
    path = tmp_path / "mobilenet_v2_no_top.weights.h5"
    reference.save_weights(path)
    model = zoo.build(NAME, **SMALL)
    report = load_weights_file(model, path)
    # Every trunk layer loads; the head stays as initialised; Conv_1 (the 1280 channels the
    # detector does not use) is reported as unused.
    trunk = {layer.name for layer in reference.layers if layer.weights} - {"Conv_1", "Conv_1_bn"}
    assert trunk <= set(report.loaded)
    assert {"fc1", "fc2", "class_probs", "box_regression"} <= set(report.missing)
    assert set(report.unused) == {"Conv_1", "Conv_1_bn"}
    for name in ("Conv1", "block_5_depthwise", "block_16_project_BN"):
        for mine, theirs in zip(model.get_layer(name).weights, reference.get_layer(name).weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_imagenet_tag_resolves_to_the_backbones_file_and_cli_sizing_applies():
    config = get_spec(NAME).config
    assert backbone_entry(NAME, "imagenet", config)["model"] == "mobilenetv2"
    overrides, notes = detector_overrides(NAME, (192, 256), {})
    assert overrides["anchor_scales"] == (24.0, 48.0, 96.0, 144.0) and overrides["pool_size"] == 4
    assert [note.split(":")[0] for note in notes] == ["rpn", "roi head"]


def test_the_fc_head_fields_count_for_mobilenet_and_not_for_r50_c4():
    assert zoo.build(NAME, **SMALL).get_layer("fc2").units == 512
    assert zoo.build(NAME, **SMALL, fc_units=64).get_layer("fc2").units == 64
    with pytest.raises(ValueError, match="fc_units"):
        zoo.build("faster_rcnn_resnet50", fc_units=64)
