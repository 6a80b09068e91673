"""faster_rcnn_resnet50_fpn: torchvision's fasterrcnn_resnet50_fpn, its parameter count and state-dict
names, its pieces against torchvision's rules (anchors, resize, levels, per-level NMS), and training."""

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from layers.detection_contract import DETECTION_OUTPUTS, FASTER_RCNN, PROPOSALS, detector_kind
from layers.detection_transform import resized_size
from layers.frozen_batch_norm import buffer_count
from zoo.detection.faster_rcnn_fpn import cell_anchors, fpn_proposals, pyramid_anchors, torchvision_keys
from zoo.detection.sizing import has_rpn

NAME = "faster_rcnn_resnet50_fpn"
KEYS = Path(__file__).parent / "data" / "torchvision_fasterrcnn_resnet50_fpn_keys.json"
SMALL = dict(num_classes=3, min_size=128, max_size=160, train_pre_nms_top_n=100, train_post_nms_top_n=64,
             test_pre_nms_top_n=50, test_post_nms_top_n=20)


@pytest.fixture(scope="module")
def default_model():
    return zoo.build(NAME)


@pytest.fixture(scope="module")
def small_model():
    return zoo.build(NAME, **SMALL)


def test_parameters_equal_torchvisions_at_91_classes(default_model):
    # torchvision counts parameters, not buffers (FrozenBatchNorm2d's four vectors): 41,755,286
    # in its weights metadata; conv1 and layer1 frozen (trainable_backbone_layers=3) leave 41,532,886.
    assert default_model.count_params() - buffer_count(default_model) == 41_755_286
    assert sum(math.prod(w.shape) for w in default_model.trainable_weights) == 41_532_886
    assert zoo.describe(NAME).defaults["num_classes"] == 90  # + background = torchvision's 91


def test_layer_names_map_to_torchvisions_state_dict(default_model):
    # The layer names are torchvision's module paths: every state-dict key (and its shape, in
    # torchvision's layout) is one weight of the model, and nothing else is.
    expected = {key: tuple(shape) for key, shape in json.loads(KEYS.read_text()).items()}
    got = {key: shape for key, (_, _, shape) in torchvision_keys(default_model).items()}
    assert got == expected


def test_registered_as_a_faster_rcnn_with_the_detector_contract(small_model, rng):
    assert zoo.describe(NAME).task == "detection" and has_rpn(NAME)
    assert detector_kind(small_model) == FASTER_RCNN
    pixels = rng.uniform(0, 255, (2, 100, 130, 3)).astype(np.float32)
    outputs = small_model({"images": pixels}, training=False)
    assert set(DETECTION_OUTPUTS) <= set(outputs)
    assert outputs["class_probs"].shape == (2, 20, 4) and outputs["box_deltas"].shape == (2, 20, 3, 4)
    assert outputs["boxes"].shape == (2, 100, 4) and outputs["proposals"].shape == (2, 20, 4)
    boxes = outputs["boxes"].numpy()
    # Detections are in the input image's pixels (100 x 130), proposals in the resized (128 x 166 -> 160 max).
    assert boxes[..., [0, 2]].max() <= 100 + 1e-3 and boxes[..., [1, 3]].max() <= 130 + 1e-3
    height, width = (int(v) for v in resized_size(100, 130, min_size=128, max_size=160))
    assert (height, width) == (123, 160)
    proposals = outputs["proposals"].numpy()
    assert proposals[..., [0, 2]].max() <= height and proposals[..., [1, 3]].max() <= width


def test_pyramid_shapes_follow_the_padded_image(small_model, rng):
    layers = [f"backbone.fpn.layer_blocks.{i}.0" for i in range(4)] + ["backbone.fpn.extra_blocks"]
    pyramid = keras.Model(small_model.input, [small_model.get_layer(n).output for n in layers])
    shapes = [tuple(p.shape) for p in pyramid({"images": rng.uniform(0, 255, (1, 96, 120, 3)).astype("float32")})]
    # 96 x 120 -> 128 x 160 (already a multiple of 32): strides 4 ... 32, P6 a 1x1 max pool of stride 2.
    assert shapes == [(1, 32, 40, 256), (1, 16, 20, 256), (1, 8, 10, 256), (1, 4, 5, 256), (1, 2, 3, 256)]


def test_cell_anchors_are_torchvisions():
    # torchvision's AnchorGenerator(((32,), ...), ((0.5, 1.0, 2.0),) * 5).cell_anchors, x1 y1 x2 y2.
    torchvision = {
        32: [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]],
        64: [[-45, -23, 45, 23], [-32, -32, 32, 32], [-23, -45, 23, 45]],
        128: [[-91, -45, 91, 45], [-64, -64, 64, 64], [-45, -91, 45, 91]],
        256: [[-181, -91, 181, 91], [-128, -128, 128, 128], [-91, -181, 91, 181]],
        512: [[-362, -181, 362, 181], [-256, -256, 256, 256], [-181, -362, 181, 362]],
    }
    for size, xyxy in torchvision.items():
        np.testing.assert_array_equal(cell_anchors(size, (0.5, 1.0, 2.0)), np.array(xyxy)[:, [1, 0, 3, 2]])


def test_pyramid_anchors_use_torchvisions_integer_strides():
    # An 800 x 1216 padded batch: P6 is 13 x 19, so its strides are 800 // 13 = 61 and 64.
    sizes = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    anchors = pyramid_anchors(sizes, (800, 1216), sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)).numpy()
    assert anchors.shape == (3 * sum(h * w for h, w in sizes), 4) == (242991, 4)
    # torchvision's last anchors (x1, y1, x2, y2): [971, 370, 1333, 1094] and, a row above, [971, 309, 1333, 1033].
    np.testing.assert_array_equal(anchors[-1], [370, 971, 1094, 1333])
    np.testing.assert_array_equal(anchors[-3 * 19 - 1], [309, 971, 1033, 1333])
    np.testing.assert_array_equal(anchors[:3], cell_anchors(32, (0.5, 1, 2)))


@pytest.mark.parametrize("size", [(480, 640), (600, 600), (375, 500), (1000, 200), (333, 1999), (128, 160)])
def test_resize_rule_is_torchvisions(size):
    height, width = size
    scale = min(800 / min(size), 1333 / max(size))  # Python floats, as torchvision's
    assert tuple(int(v) for v in resized_size(height, width, min_size=800, max_size=1333)) == (
        math.floor(height * scale), math.floor(width * scale))


def test_proposals_suppress_within_a_level_only():
    # Two equal boxes on two levels both survive (torchvision's batched_nms by level); a third,
    # overlapping the first on its own level, does not.
    anchors = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 10], [0, 1, 10, 11], [50, 50, 60, 60]]], tf.float32)
    deltas = tf.zeros([1, 4, 4])
    objectness = tf.constant([[3.0, 2.0, 1.0, 0.5]])
    info = tf.constant([[64.0, 64.0, 64.0, 64.0]])
    kept = fpn_proposals(objectness, deltas, anchors, info, [1, 3], pre_nms_top_n=3, post_nms_top_n=4).numpy()
    np.testing.assert_array_equal(kept, [[[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 0, 0]]])


def test_proposals_decode_with_their_box_weights_and_the_trainer_encodes_with_the_same(small_model):
    # One anchor, deltas (0, 0, log 2, log 2): with weights 1 the box doubles about its centre; with
    # weights 2 the log-sizes are halved, so it grows by sqrt(2) instead.
    from training.tasks import TASKS
    from zoo.detection.faster_rcnn_fpn import FPNProposals

    anchors = tf.constant([[[20.0, 20.0, 40.0, 40.0]]])
    deltas = tf.constant([[[0.0, 0.0, math.log(2.0), math.log(2.0)]]])
    info = tf.constant([[64.0, 64.0, 64.0, 64.0]])
    ones = fpn_proposals(tf.ones([1, 1]), deltas, anchors, info, [1], pre_nms_top_n=1, post_nms_top_n=1)
    twos = fpn_proposals(tf.ones([1, 1]), deltas, anchors, info, [1], pre_nms_top_n=1, post_nms_top_n=1,
                         box_weights=(2.0, 2.0, 2.0, 2.0))
    half = 10.0 * math.sqrt(2.0)
    np.testing.assert_allclose(ones.numpy()[0, 0], [10, 10, 50, 50], atol=1e-4)
    np.testing.assert_allclose(twos.numpy()[0, 0], [30 - half, 30 - half, 30 + half, 30 + half], atol=1e-4)
    layer = small_model.get_layer(PROPOSALS)
    assert FPNProposals.from_config(layer.get_config()).box_weights == layer.box_weights == (1.0, 1.0, 1.0, 1.0)
    assert TASKS["detection"].wrap(small_model, rois_per_image=8).rpn_box_weights == layer.box_weights


@pytest.mark.slow  # about 35 seconds
def test_trains_with_the_zoo_trainer_and_its_loss_decreases(rng):
    from training.tasks import TASKS

    keras.utils.set_random_seed(0)
    model = zoo.build(NAME, **SMALL)
    trainer = TASKS["detection"].wrap(model, rois_per_image=64)
    assert type(trainer).__name__ == "FPNFasterRCNNTrainer"
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    # 96 x 120 inputs, resized in the graph to 128 x 160: the ground truth is scaled with them.
    images = rng.uniform(0, 60, (2, 96, 120, 3)).astype("float32")
    boxes = np.array([[[15, 20, 60, 75], [0, 0, 0, 0]], [[30, 10, 90, 50], [10, 70, 45, 115]]], "float32")
    classes = np.array([[1, 0], [2, 3]], "int32")
    for b in range(2):
        for (y1, x1, y2, x2), c in zip(boxes[b].astype(int), classes[b]):
            if c:
                images[b, y1:y2, x1:x2] = 80 * c
    history = trainer.fit(images, {"boxes": boxes, "classes": classes}, batch_size=2, epochs=8, verbose=0).history
    losses = history["loss"]
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.slow  # about a minute: XLA compiles the detector and its training step
def test_compiles_with_xla_for_serving_and_training(small_model, rng):
    # On a GPU Keras compiles train_step with XLA; jit_compile=True on the CPU stands in for it.
    from training.tasks import TASKS

    pixels = rng.uniform(0, 255, (2, 96, 120, 3)).astype(np.float32)
    eager = small_model({"images": pixels})
    compiled = tf.function(lambda images: small_model({"images": images}), jit_compile=True)(tf.constant(pixels))
    for key in ("proposals", "boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(compiled[key], eager[key], atol=1e-3)
    trainer = TASKS["detection"].wrap(small_model, rois_per_image=32)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-5), jit_compile=True)
    boxes = np.array([[[15, 20, 60, 75]], [[30, 10, 90, 50]]], "float32")
    history = trainer.fit(pixels, {"boxes": boxes, "classes": np.array([[1], [2]], "int32")}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.slow  # builds the detector twice
def test_every_frozen_batch_norm_folds_and_the_detections_stay():
    # `zoo export --fold-batch-norm` on the FPN model: all 53 frozen batch norms fold into the
    # convolutions before them (torchvision's have no bias), and the outputs do not move.
    from layers.frozen_batch_norm import FrozenBatchNormalization
    from zoo.saved_model import fold_batch_norm

    model = zoo.build("faster_rcnn_resnet50_fpn", num_classes=3, min_size=128, max_size=160)
    rng = np.random.default_rng(0)
    frozen = [layer for layer in model.layers if isinstance(layer, FrozenBatchNormalization)]
    for layer in frozen:  # statistics away from the initial 0 and 1, as trained ones are
        layer.running_var.assign(rng.uniform(0.5, 2.0, layer.running_var.shape).astype("float32"))
        layer.running_mean.assign(rng.uniform(-0.2, 0.2, layer.running_mean.shape).astype("float32"))
    folded = fold_batch_norm(model)
    assert len(frozen) == 53 and folded.folded_batch_norms == sorted(layer.name for layer in frozen)
    images = {"images": rng.uniform(0, 255, (1, 128, 160, 3)).astype("float32")}
    expected, actual = model(images), folded(images)
    # Proposals of near-equal scores may trade places, so each RoI's class probabilities are
    # matched to the nearest row of the unfolded model's, and the detections compared in order.
    rows, reference = np.asarray(actual["class_probs"])[0], np.asarray(expected["class_probs"])[0]
    nearest = np.abs(rows[:, None, :] - reference[None, :, :]).max(-1).min(1)
    assert nearest.max() < 1e-5, nearest.max()
    np.testing.assert_allclose(np.asarray(actual["scores"]), np.asarray(expected["scores"]), atol=1e-5)
