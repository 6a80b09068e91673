"""Faster R-CNN training: RPN anchor targets on hand-built boxes (the empty and degenerate cases
included), anchor sampling, the RPN loss by hand, joint training steps, and `zoo train` /
`zoo evaluate` of faster_rcnn_resnet50."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training import get_task
from training.detection import FasterRCNNTrainer, match_anchors, rpn_loss, sample_anchors
from zoo.cli import main

IMAGE = (32, 48)  # height, width
GT = [0.0, 0.0, 16.0, 16.0]
ANCHORS = np.array([
    [0, 0, 16, 16],     # 0: IoU 1 -> positive
    [0, 4, 16, 20],     # 1: IoU 192 / 320 = 0.6 -> ignored
    [0, 8, 16, 24],     # 2: IoU 128 / 384 = 0.33 -> ignored
    [0, 12, 16, 28],    # 3: IoU 64 / 448 = 0.14 -> negative
    [-2, 0, 14, 16],    # 4: IoU 224 / 288 = 0.78, but crosses the top border -> ignored
    [16, 32, 32, 48],   # 5: no overlap -> negative
    [16, 16, 32, 32],   # 6: IoU 0.5625 with the second box, its best anchor -> positive
], np.float32)
SECOND = [18.0, 18.0, 30.0, 30.0]  # 12 x 12 inside anchor 6


def _match(boxes, classes, **options):
    result = match_anchors(ANCHORS, np.array([boxes], np.float32).reshape(1, -1, 4), np.array([classes], np.int32),
                           IMAGE, **options)
    return {key: np.asarray(value)[0] for key, value in result.items()}


def test_match_anchors_by_hand():
    result = _match([GT, SECOND], [1, 2])
    np.testing.assert_array_equal(result["labels"], [1, -1, -1, 0, -1, 0, 1])
    np.testing.assert_allclose(result["max_iou"], [1, 0.6, 1 / 3, 1 / 7, 0.0, 0.0, 0.5625], atol=1e-6)
    np.testing.assert_allclose(result["box_targets"][0], 0.0, atol=1e-6)  # the anchor is the box
    np.testing.assert_allclose(result["box_targets"][6], [0, 0, math.log(12 / 16), math.log(12 / 16)], atol=1e-6)
    assert np.all(result["box_targets"][[1, 2, 3, 4, 5]] == 0)


def test_match_anchors_border_rule_and_thresholds_are_options():
    # Without the border rule the anchor crossing the top edge is a positive (IoU 0.78).
    result = _match([GT, SECOND], [1, 2], allowed_border=None)
    np.testing.assert_array_equal(result["labels"], [1, -1, -1, 0, 1, 0, 1])
    # A 2-pixel allowance also takes it in.
    assert _match([GT, SECOND], [1, 2], allowed_border=2.0)["labels"][4] == 1
    # negative_iou 0.35 makes anchor 2 (IoU 0.33) a negative.
    assert _match([GT, SECOND], [1, 2], negative_iou=0.35)["labels"][2] == 0
    with pytest.raises(ValueError, match="negative_iou"):
        _match([GT], [1], positive_iou=0.3, negative_iou=0.7)


def test_match_anchors_without_objects_and_with_degenerate_ground_truth():
    # No ground truth at all (M = 0): every anchor inside the image is negative.
    empty = match_anchors(ANCHORS, np.zeros((1, 0, 4), np.float32), np.zeros((1, 0), np.int32), IMAGE)
    np.testing.assert_array_equal(np.asarray(empty["labels"])[0], [0, 0, 0, 0, -1, 0, 0])
    assert np.all(np.asarray(empty["box_targets"]) == 0)
    # Zero-area boxes and padding rows are as if absent, and give no NaN.
    degenerate = _match([[5, 5, 5, 20], [0, 0, 0, 0], GT, SECOND], [1, 0, 1, 2])
    np.testing.assert_array_equal(degenerate["labels"], [1, -1, -1, 0, -1, 0, 1])
    only_degenerate = _match([[5, 5, 5, 20], [8, 8, 8, 8]], [1, 3])
    np.testing.assert_array_equal(only_degenerate["labels"], [0, 0, 0, 0, -1, 0, 0])
    assert np.all(np.isfinite(only_degenerate["box_targets"]))


def test_every_ground_truth_box_gets_its_best_anchors_even_on_ties():
    # A 16 x 16 box straddling anchors 0 and 1 equally (IoU 8 * 16 / 384 = 1/3 each) makes both positive.
    box = [0.0, 8.0, 16.0, 24.0]
    anchors = np.array([[0, 0, 16, 16], [0, 16, 16, 32], [16, 0, 32, 16]], np.float32)
    labels = match_anchors(anchors, np.array([[box]], np.float32), np.array([[1]]), (32, 32))["labels"]
    np.testing.assert_array_equal(np.asarray(labels)[0], [1, 1, 0])


def test_sample_anchors_caps_positives_at_half_and_fills_with_negatives():
    labels = np.full((2, 1000), -1, np.int32)
    labels[0, :10], labels[0, 10:400] = 1, 0  # few positives: all 10, then 246 negatives
    labels[1, :300], labels[1, 300:350] = 1, 0  # many positives: 128, then the 50 negatives
    sampled = np.asarray(sample_anchors(labels, seed=[0, 1], anchors_per_image=256, positive_fraction=0.5))
    assert (np.sum(sampled[0] == 1), np.sum(sampled[0] == 0)) == (10, 246)
    assert (np.sum(sampled[1] == 1), np.sum(sampled[1] == 0)) == (128, 50)
    assert np.all((sampled == -1) | (sampled == labels))  # a sample never changes a label
    np.testing.assert_array_equal(sample_anchors(labels, seed=[0, 1]), sampled)  # seeded
    assert not np.array_equal(sample_anchors(labels, seed=[0, 2]), sampled)
    nothing = np.asarray(sample_anchors(np.full((1, 50), -1), seed=[0, 0]))
    assert np.all(nothing == -1)


def test_rpn_loss_by_hand_and_without_sampled_anchors():
    objectness = np.array([[0.0, 2.0, 5.0]], np.float32)
    deltas = np.array([[[0.1, 0, 0, 0], [1, 1, 1, 1], [7, 7, 7, 7]]], np.float32)
    targets = np.array([[[0, 0, 0, 0], [0, 0, 0, 0], [np.nan] * 4]], np.float32)  # the ignored row is NaN
    losses = rpn_loss(objectness, deltas, np.array([[1, 0, -1]]), targets)
    # BCE(1, 0) = log 2, BCE(0, 2) = log(1 + e^2); smooth L1 (beta 1/9) of 0.1 = 0.5 * 0.01 * 9.
    np.testing.assert_allclose(float(losses["rpn_classification"]), (math.log(2) + math.log1p(math.e ** 2)) / 2,
                               rtol=1e-6)
    np.testing.assert_allclose(float(losses["rpn_box"]), 0.045 / 2, rtol=1e-5)
    none = rpn_loss(objectness, deltas, np.array([[-1, -1, -1]]), targets)
    assert float(none["rpn_classification"]) == 0.0 and float(none["rpn_box"]) == 0.0


# --------------------------------------------------------------------------- the trainer

SIZE = 64
TINY = dict(num_classes=2, pool_size=2, input_shape=(SIZE, SIZE, 3), anchor_scales=(16.0, 32.0), rpn_min_size=1.0,
            train_post_nms_top_n=50, test_post_nms_top_n=20, max_detections=5)


def _batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    images[0, 8:40, 8:40] = [250, 20, 20]
    images[1, 20:60, 30:62] = [20, 20, 250]
    targets = {
        "boxes": np.array([[[8, 8, 40, 40], [0, 0, 0, 0]], [[20, 30, 60, 62], [0, 0, 0, 0]]], np.float32),
        "classes": np.array([[1, 0], [2, 0]], np.int32),
    }
    return images, targets


@pytest.mark.slow
def test_a_few_joint_training_steps_reduce_the_loss():
    model = zoo.build("faster_rcnn_resnet50", **TINY)
    trainer = FasterRCNNTrainer(model, rois_per_image=8, anchors_per_image=32, seed=0)
    assert len(trainer.trainable_variables) == len(model.trainable_variables)  # one set of weights
    # Eagerly, as for Fast R-CNN: tracing ResNet-50's training step costs more than three steps.
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4), run_eagerly=True)
    images, targets = _batch()
    seed = tf.constant([0, 0], tf.int64)

    def fixed_loss():
        total, parts = trainer.losses_of(tf.constant(images), targets, seed, training=True)
        return float(total), {name: float(value) for name, value in parts.items()}

    before, before_parts = fixed_loss()
    assert set(before_parts) == {"rpn_classification", "rpn_box", "classification", "box"}
    np.testing.assert_allclose(before, sum(before_parts.values()), rtol=1e-6)  # one loss, the sum of four
    logs = [trainer.train_on_batch(images, targets, return_dict=True) for _ in range(3)]
    after, after_parts = fixed_loss()
    assert after < 0.8 * before, (before, after, logs)
    assert after_parts["rpn_classification"] < before_parts["rpn_classification"]
    assert set(logs[-1]) == {"loss", "rpn_classification", "rpn_box", "classification", "box"}
    assert all(np.isfinite(list(log.values())).all() for log in logs)
    detections = trainer.predict_on_batch(images)
    assert detections["boxes"].shape == (2, 5, 4) and detections["proposals"].shape == (2, 20, 4)


def test_images_without_objects_train_with_finite_losses():
    model = zoo.build("faster_rcnn_resnet50", **TINY)
    trainer = FasterRCNNTrainer(model, rois_per_image=8, anchors_per_image=32)
    images, _ = _batch()
    empty = {"boxes": np.zeros((2, 1, 4), np.float32), "classes": np.zeros((2, 1), np.int32)}
    with tf.GradientTape() as tape:
        total, parts = trainer.losses_of(tf.constant(images), empty, tf.constant([0, 0], tf.int64), training=True)
    gradients = tape.gradient(total, trainer.trainable_variables)
    assert parts["rpn_box"] == 0.0 and parts["box"] == 0.0 and float(parts["rpn_classification"]) > 0
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in gradients)


def test_the_detection_task_wraps_a_faster_rcnn_with_its_trainer():
    task = get_task("detection")
    model = zoo.build("faster_rcnn_resnet50", **TINY)
    assert isinstance(task.wrap(model), FasterRCNNTrainer)
    with pytest.raises(ValueError, match="own proposals"):
        task.wrap(model, proposals=lambda images: None)
    with pytest.raises(ValueError, match="not a Faster R-CNN"):
        FasterRCNNTrainer(zoo.build("fast_rcnn_resnet50", num_classes=1, input_shape=(32, 32, 3), pool_size=2))


@pytest.mark.slow
def test_zoo_train_and_evaluate_faster_rcnn(tmp_path, capsys):
    # The VGG16 trunk with a narrow fc6/fc7 (as the Fast R-CNN CLI test): the CLI and the task's
    # hooks are those of the ResNet-50 model (trained above), whose training step takes minutes
    # to trace on two busy cores.
    out = tmp_path / "run"
    common = ["--dataset", "synthetic:4", "--image-size", "64", "64", "--batch-size", "2", "--quiet",
              "--proposal-scales", "16", "32"]
    small = ["--set", "backbone=vgg16", "--set", "fc_units=16", "--set", "pool_size=2", "--set",
             "train_post_nms_top_n=32", "--set", "test_post_nms_top_n=16"]
    assert main(["train", "faster_rcnn_resnet50", *common, "--epochs", "1", "--optimizer", "adam", "--lr", "1e-4",
                 "--rois-per-image", "8", *small, "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert {"loss", "rpn_classification", "rpn_box", "classification", "box"} <= set(history)
    assert all(np.isfinite(values).all() for values in history.values())
    saved = keras.saving.load_model(out / "model.keras")
    assert saved.name == "faster_rcnn_resnet50" and set(saved.input) == {"images"}
    assert saved.get_layer("rpn_anchors").scales == (16.0, 32.0)  # from --proposal-scales
    capsys.readouterr()
    assert main(["evaluate", "faster_rcnn_resnet50", "--weights", str(out / "model.keras"), "--split", "val",
                 *common]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(metrics)[0] == "mAP@0.5" and 0.0 <= metrics["mAP@0.5"] <= 1.0
