"""Faster R-CNN: the anchor layer on a hand-computed grid, the proposal layer against NumPy,
the model's outputs at sizes known only at run time, its `.keras` round trip, config errors."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from tests.helpers import random_pixels
from zoo.detection.rpn import AnchorGrid, RPNProposals, generate_proposals

TINY = dict(num_classes=2, pool_size=2, anchor_scales=(16.0, 32.0), rpn_min_size=1.0, train_post_nms_top_n=12,
            test_post_nms_top_n=6, max_detections=5)


# --------------------------------------------------------------------------- anchors


def test_anchor_grid_by_hand():
    layer = AnchorGrid(stride=16, scales=(16.0, 32.0), aspect_ratios=(1.0,))
    anchors = np.asarray(layer(np.zeros((2, 2, 3, 8), "float32")))
    assert anchors.shape == (2, 2 * 3 * 2, 4) and layer.compute_output_shape((2, 2, 3, 8)) == (2, 12, 4)
    np.testing.assert_array_equal(anchors[0], anchors[1])
    # Cell (i, j) is centred on (16 i + 8, 16 j + 8); per cell the 16 then the 32 pixel anchor.
    expected = []
    for i in range(2):
        for j in range(3):
            cy, cx = 16 * i + 8, 16 * j + 8
            expected += [[cy - 8, cx - 8, cy + 8, cx + 8], [cy - 16, cx - 16, cy + 16, cx + 16]]
    np.testing.assert_allclose(anchors[0], expected)
    # Aspect ratio r = height / width keeps the area: 16 * sqrt(2) tall, 16 / sqrt(2) wide.
    tall = np.asarray(AnchorGrid(stride=16, scales=(16.0,), aspect_ratios=(2.0,))(np.zeros((1, 1, 1, 1))))
    half_h, half_w = 8 * math.sqrt(2), 8 / math.sqrt(2)
    np.testing.assert_allclose(tall[0], [[8 - half_h, 8 - half_w, 8 + half_h, 8 + half_w]], rtol=1e-6)


def test_anchor_grid_follows_a_run_time_size_and_round_trips():
    layer = AnchorGrid(stride=16, scales=(32.0,), aspect_ratios=(0.5, 1.0, 2.0))
    run = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 4))])
    assert run(tf.zeros((1, 5, 7, 4))).shape == (1, 5 * 7 * 3, 4)
    again = AnchorGrid.from_config(layer.get_config())
    np.testing.assert_array_equal(again(np.zeros((1, 2, 2, 1))), layer(np.zeros((1, 2, 2, 1))))
    with pytest.raises(ValueError, match="scales"):
        AnchorGrid(scales=(0.0,))


# --------------------------------------------------------------------------- proposals


def _numpy_proposals(objectness, deltas, anchors, height, width, *, pre, post, iou_threshold, min_size):
    """Decode (weights 1), clip, drop small, sort, top `pre`, greedy NMS, first `post`; zero rows after."""
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ya, xa = anchors[:, 0] + ha / 2, anchors[:, 1] + wa / 2
    clamp = math.log(1000 / 16)
    y, x = ya + deltas[:, 0] * ha, xa + deltas[:, 1] * wa
    h, w = ha * np.exp(np.minimum(deltas[:, 2], clamp)), wa * np.exp(np.minimum(deltas[:, 3], clamp))
    boxes = np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], -1)
    boxes = np.clip(boxes, 0, [height, width, height, width])
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], -1)
    keep = np.flatnonzero((sides.min(-1) >= min_size) & (sides.min(-1) > 0))
    order = keep[np.argsort(-objectness[keep], kind="stable")][:pre]
    kept = []
    for index in order:
        box = boxes[index]
        ious = []
        for other in kept:
            o = boxes[other]
            ih = max(0.0, min(box[2], o[2]) - max(box[0], o[0]))
            iw = max(0.0, min(box[3], o[3]) - max(box[1], o[1]))
            union = np.prod(box[2:] - box[:2]) + np.prod(o[2:] - o[:2]) - ih * iw
            ious.append(ih * iw / union)
        if all(value <= iou_threshold for value in ious):
            kept.append(index)
    out = np.zeros((post, 4))
    chosen = boxes[kept[:post]]
    out[: len(chosen)] = chosen
    return out


def test_proposals_match_a_numpy_reference(rng):
    height, width, count = 48, 64, 60
    centres = rng.uniform([0, 0], [height, width], (count, 2))
    sides = rng.uniform(4, 30, (count, 2))
    anchors = np.concatenate([centres - sides / 2, centres + sides / 2], -1).astype("float32")
    objectness = rng.normal(0, 2, (2, count)).astype("float32")
    deltas = rng.normal(0, 0.3, (2, count, 4)).astype("float32")
    deltas[1, :5, 2:] = -4.0  # five boxes shrink below min_size
    options = dict(pre=25, post=10, iou_threshold=0.7, min_size=3.0)
    result = generate_proposals(
        objectness, deltas, anchors, (height, width), pre_nms_top_n=25, post_nms_top_n=10, iou_threshold=0.7,
        min_size=3.0,
    )
    for image in range(2):
        expected = _numpy_proposals(objectness[image], deltas[image], anchors, height, width, **options)
        np.testing.assert_allclose(np.asarray(result["boxes"][image]), expected, atol=1e-4)
        assert int(result["num_proposals"][image]) == int(np.sum(np.any(expected != 0, -1)))
    # Few boxes survive: the rest of the N rows are zero padding.
    sparse = generate_proposals(objectness[:, :3], deltas[:, :3], anchors[:3], (height, width), pre_nms_top_n=25,
                                post_nms_top_n=10, iou_threshold=0.7, min_size=0.0)
    assert sparse["boxes"].shape == (2, 10, 4) and np.all(np.asarray(sparse["boxes"])[:, 3:] == 0)


def test_proposal_layer_uses_the_training_counts_when_training_and_round_trips(rng):
    layer = RPNProposals(train_pre_nms_top_n=30, train_post_nms_top_n=8, test_pre_nms_top_n=20,
                         test_post_nms_top_n=4, min_size=0.0)
    anchors = AnchorGrid(stride=16, scales=(16.0,), aspect_ratios=(1.0,))(np.zeros((1, 4, 4, 1)))
    inputs = [rng.normal(size=(1, 16)).astype("float32"), np.zeros((1, 16, 4), "float32"), anchors,
              np.zeros((1, 64, 64, 3), "float32")]
    assert layer(inputs).shape == (1, 4, 4) and layer(inputs, training=True).shape == (1, 8, 4)
    again = RPNProposals.from_config(layer.get_config())
    np.testing.assert_array_equal(again(inputs), layer(inputs))
    with pytest.raises(ValueError, match="test_post_nms_top_n"):
        RPNProposals(test_post_nms_top_n=0)


# --------------------------------------------------------------------------- the model


@pytest.mark.slow
def test_outputs_at_sizes_known_only_at_run_time(rng):
    model = zoo.build("faster_rcnn_resnet50", **TINY)
    assert set(model.input) == {"images"} and model.input["images"].shape == (None, None, None, 3)
    assert {"rpn_objectness", "rpn_box_deltas", "proposals", "class_probs", "box_deltas", "boxes", "scores",
            "classes", "num_detections"} == set(model.output)
    for height, width in ((64, 96), (80, 48)):
        out = model({"images": random_pixels(rng, (2, height, width, 3))})
        anchors = math.ceil(height / 16) * math.ceil(width / 16) * 6  # 2 scales x 3 ratios
        assert out["rpn_objectness"].shape == (2, anchors) and out["rpn_box_deltas"].shape == (2, anchors, 4)
        assert out["proposals"].shape == (2, 6, 4) and out["class_probs"].shape == (2, 6, 3)
        assert out["box_deltas"].shape == (2, 6, 2, 4) and out["boxes"].shape == (2, 5, 4)
        proposals = np.asarray(out["proposals"])
        assert np.all((proposals >= 0) & (proposals <= [height, width, height, width]))
    # Training mode keeps the training count of proposals.
    assert model({"images": random_pixels(rng, (1, 64, 64, 3))}, training=True)["proposals"].shape == (1, 12, 4)


def test_the_head_shares_the_trunk_and_the_rpn_sits_on_c4():
    model = zoo.build("faster_rcnn_resnet50", **TINY)
    names = [layer.name for layer in model.layers]
    assert names.count("conv4_block6_out") == 1 and "conv5_block3_out" in names  # conv5 runs per RoI
    c4 = model.get_layer("conv4_block6_out").output
    assert model.get_layer("rpn_conv").input is c4 and model.get_layer("roi_pooling").input[0] is c4
    assert model.get_layer("rpn_objectness_logits").filters == 6 and model.get_layer("rpn_box_regression").filters == 24


@pytest.mark.slow
def test_keras_round_trip_gives_the_same_outputs(rng, tmp_path):
    model = zoo.build("faster_rcnn_resnet50", **TINY)
    pixels = {"images": random_pixels(rng, (1, 64, 64, 3))}
    expected = model(pixels)
    model.save(tmp_path / "faster.keras")
    loaded = keras.saving.load_model(tmp_path / "faster.keras", safe_mode=True)
    got = loaded(pixels)
    for key in ("rpn_objectness", "proposals", "class_probs", "boxes", "num_detections"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5, err_msg=key)
    assert loaded.get_layer("proposals").get_config() == model.get_layer("proposals").get_config()


def test_defaults_are_the_papers_and_errors_name_the_argument():
    defaults = zoo.describe("faster_rcnn_resnet50").defaults
    assert defaults["anchor_scales"] == [128.0, 256.0, 512.0] and defaults["anchor_aspect_ratios"] == [0.5, 1.0, 2.0]
    assert (defaults["rpn_nms_iou_threshold"], defaults["train_post_nms_top_n"], defaults["test_post_nms_top_n"]) \
        == (0.7, 2000, 300)
    assert (defaults["pool_size"], defaults["nms_iou_threshold"], defaults["max_detections"]) == (14, 0.3, 100)
    with pytest.raises(ValueError, match="anchor_scales"):
        zoo.build("faster_rcnn_resnet50", anchor_scales=(-1.0,))
    with pytest.raises(ValueError, match="rpn_nms_iou_threshold"):
        zoo.build("faster_rcnn_resnet50", rpn_nms_iou_threshold=1.5)
    with pytest.raises(ValueError, match="test_post_nms_top_n"):
        zoo.build("faster_rcnn_resnet50", test_post_nms_top_n=0)
    with pytest.raises(TypeError, match="accepted"):
        zoo.build("faster_rcnn_resnet50", rois=3)


@pytest.mark.slow
def test_predict_detect_runs_a_faster_rcnn_on_an_image_alone(rng):
    from zoo.predict import detect

    model = zoo.build("faster_rcnn_resnet50", **TINY, score_threshold=0.0)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    result = detect(model, image, image_size=(64, 64))  # no proposals: the RPN makes them
    assert result["boxes"].shape[1] == 4 and len(result["boxes"]) == len(result["scores"]) <= 5
    assert np.all((result["boxes"] >= 0) & (result["boxes"] <= [48, 80, 48, 80]))
