"""Box ops against hand-computed values and independent NumPy references written here.

The references are plain per-pair / per-box loops in float64 NumPy (IoU, the Fast R-CNN
deltas, the VOC devkit's "+ 1" IoU, greedy per-class NMS) and share nothing with the
vectorised TensorFlow code under test.
"""

import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from layers import boxes as box_ops

# --------------------------------------------------------------------------- references


def reference_pair_iou(a, b):
    """IoU of two yxyx boxes, continuous areas, empty boxes give 0."""
    def area(box):
        return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)

    overlap_h = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    overlap_w = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    intersection = overlap_h * overlap_w
    union = area(a) + area(b) - intersection
    return intersection / union if union > 0 else 0.0


def reference_iou(boxes1, boxes2):
    boxes1, boxes2 = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    return np.array([[reference_pair_iou(a, b) for b in boxes2] for a in boxes1]).reshape(len(boxes1), len(boxes2))


def reference_encode(box, anchor, weights):
    wy, wx, wh, ww = weights
    h, w = box[2] - box[0], box[3] - box[1]
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    y, x = box[0] + h / 2, box[1] + w / 2
    ya, xa = anchor[0] + ha / 2, anchor[1] + wa / 2
    return [wy * (y - ya) / ha, wx * (x - xa) / wa, wh * math.log(h / ha), ww * math.log(w / wa)]


def voc_devkit_iou(a, b):
    """VOCdevkit's VOCevaldet overlap on 1-based inclusive (xmin, ymin, xmax, ymax) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
    return iw * ih / union


def reference_batched_nms(boxes, scores, *, per_class, total, iou_threshold, score_threshold):
    """Greedy NMS per image and class; returns a list of (score, class_id, box) per image."""
    results = []
    for b in range(scores.shape[0]):
        kept_all = []
        for k in range(scores.shape[2]):
            column = 0 if boxes.shape[2] == 1 else k
            order = sorted(
                (i for i in range(scores.shape[1]) if scores[b, i, k] > score_threshold),
                key=lambda i: -scores[b, i, k],
            )
            kept = []
            for i in order:
                if len(kept) == per_class:
                    break
                if all(reference_pair_iou(boxes[b, i, column], boxes[b, j, column]) <= iou_threshold for j in kept):
                    kept.append(i)
            kept_all += [(float(scores[b, i, k]), k + 1, boxes[b, i, column]) for i in kept]
        results.append(sorted(kept_all, key=lambda item: -item[0])[:total])
    return results


def random_boxes(rng, shape, *, extent=60.0, min_size=2.0, max_size=30.0):
    """Proper yxyx boxes crowded into a small image, so that many of them overlap."""
    corner = rng.uniform(0.0, extent, size=shape + (2,))
    size = rng.uniform(min_size, max_size, size=shape + (2,))
    return np.concatenate([corner, corner + size], axis=-1).astype("float32")


# --------------------------------------------------------------------------- IoU

HAND_CASES = [
    # (box1, box2, iou)
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # sharing an edge only
    ([0, 0, 10, 10], [2, 2, 4, 4], 4.0 / 100.0),  # nested
    ([0, 0, 10, 10], [0, 5, 10, 15], 50.0 / 150.0),  # half overlap
    ([0, 0, 10, 10], [5, 5, 15, 15], 25.0 / 175.0),  # corner overlap
    ([0, 0, 10, 10], [5, 5, 5, 5], 0.0),  # zero-area point inside
    ([0, 0, 10, 10], [2, 2, 2, 8], 0.0),  # zero-area segment inside
    ([3, 3, 3, 3], [3, 3, 3, 3], 0.0),  # two identical empty boxes: 0, not NaN
    ([0, 0, 10, 10], [8, 8, 2, 2], 0.0),  # inverted box inside
    ([8, 8, 2, 2], [8, 8, 2, 2], 0.0),  # inverted with itself
    ([0, 0, 10, 10], [-5, -5, 5, 5], 25.0 / 175.0),  # negative coordinates
]


def test_iou_hand_cases():
    boxes1 = np.array([case[0] for case in HAND_CASES], "float32")
    boxes2 = np.array([case[1] for case in HAND_CASES], "float32")
    expected = np.array([case[2] for case in HAND_CASES])
    actual = box_ops.iou(boxes1, boxes2).numpy()
    assert actual.shape == (len(HAND_CASES), len(HAND_CASES))
    np.testing.assert_allclose(np.diag(actual), expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose([reference_pair_iou(a, b) for a, b, _ in HAND_CASES], expected)
    np.testing.assert_allclose(actual, reference_iou(boxes1, boxes2), atol=1e-6)


def test_iou_matrix_equals_reference_with_broadcast_batches(rng):
    boxes1 = random_boxes(rng, (2, 7))
    boxes2 = random_boxes(rng, (2, 5))
    actual = box_ops.iou(boxes1, boxes2).numpy()
    assert actual.shape == (2, 7, 5) and actual.dtype == np.float32
    for b in range(2):
        np.testing.assert_allclose(actual[b], reference_iou(boxes1[b], boxes2[b]), atol=1e-6)
    # One set of anchors against a batch of ground truth broadcasts over the batch.
    shared = box_ops.iou(boxes1[0], boxes2).numpy()
    assert shared.shape == (2, 7, 5)
    np.testing.assert_allclose(shared[1], reference_iou(boxes1[0], boxes2[1]), atol=1e-6)


def test_iou_empty_sets():
    assert box_ops.iou(np.zeros((0, 4), "float32"), np.zeros((3, 4), "float32")).shape == (0, 3)
    assert box_ops.iou(np.zeros((2, 5, 4), "float32"), np.zeros((2, 0, 4), "float32")).shape == (2, 5, 0)


def test_iou_integer_and_half_precision_inputs():
    boxes1, boxes2 = [[0, 0, 10, 10]], [[0, 5, 10, 15]]
    np.testing.assert_allclose(box_ops.iou(np.array(boxes1), np.array(boxes2)).numpy(), [[1 / 3]], rtol=1e-6)
    # 1000 x 1000 pixels overflows a float16 area; the computation is float32 inside.
    big = tf.constant([[0.0, 0.0, 1000.0, 1000.0]], tf.float16)
    half = box_ops.iou(big, tf.constant([[0.0, 0.0, 1000.0, 500.0]], tf.float16))
    assert half.dtype == tf.float16
    np.testing.assert_allclose(half.numpy().astype("float32"), [[0.5]])


finite_boxes = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6).map(lambda shape: (shape[0], 4)),
    elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(boxes1=finite_boxes, boxes2=finite_boxes)
def test_iou_is_symmetric_bounded_and_finite_for_any_finite_boxes(boxes1, boxes2):
    forward = box_ops.iou(boxes1, boxes2).numpy()
    backward = box_ops.iou(boxes2, boxes1).numpy()
    assert np.all(np.isfinite(forward))
    assert np.all((forward >= 0.0) & (forward <= 1.0))
    np.testing.assert_array_equal(forward, backward.T)
    # Where the coordinates are of image size the value is the reference's too.
    if np.all(np.abs(boxes1) < 1e4) and np.all(np.abs(boxes2) < 1e4):
        np.testing.assert_allclose(forward, reference_iou(boxes1, boxes2), atol=1e-5)


# --------------------------------------------------------------------------- encode / decode


def test_encode_hand_computed_deltas():
    anchor = [0.0, 0.0, 10.0, 10.0]
    boxes = np.array([[0.0, 0.0, 20.0, 10.0], [2.0, 4.0, 12.0, 24.0]], "float32")
    deltas = box_ops.encode(boxes, np.array([anchor, anchor], "float32")).numpy()
    # Box 1: centre (10, 5) vs (5, 5), twice as tall: dy = 10 * 5 / 10, dh = 5 log 2.
    # Box 2: centre (7, 14), 10 x 20: dy = 10 * 2 / 10, dx = 10 * 9 / 10, dw = 5 log 2.
    expected = [[5.0, 0.0, 5.0 * math.log(2.0), 0.0], [2.0, 9.0, 0.0, 5.0 * math.log(2.0)]]
    np.testing.assert_allclose(deltas, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(box_ops.decode(deltas, np.array([anchor, anchor], "float32")).numpy(), boxes, atol=1e-5)


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), (2.0, 3.0, 4.0, 0.5)])
def test_encode_equals_reference_and_decode_inverts_it(rng, weights):
    anchors = random_boxes(rng, (3, 20), min_size=4.0, max_size=100.0)
    boxes = random_boxes(rng, (3, 20), min_size=4.0, max_size=100.0)  # at most 25x an anchor
    deltas = box_ops.encode(boxes, anchors, weights=weights).numpy()
    assert deltas.shape == (3, 20, 4) and deltas.dtype == np.float32
    expected = [[reference_encode(b, a, weights) for b, a in zip(bs, As)] for bs, As in zip(
        boxes.astype(np.float64), anchors.astype(np.float64))]
    np.testing.assert_allclose(deltas, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(box_ops.decode(deltas, anchors, weights=weights).numpy(), boxes, atol=2e-4)


def test_class_specific_deltas_broadcast_over_shared_anchors(rng):
    anchors = random_boxes(rng, (2, 6, 1))
    boxes = random_boxes(rng, (2, 6, 3))
    deltas = box_ops.encode(boxes, anchors)
    assert deltas.shape == (2, 6, 3, 4)
    np.testing.assert_allclose(box_ops.decode(deltas, anchors).numpy(), boxes, atol=2e-4)


def test_decode_clamps_the_log_scale_like_detectron2():
    anchor = np.array([[10.0, 10.0, 20.0, 30.0]], "float32")  # 10 x 20 around (15, 20)
    boxes = box_ops.decode(np.array([[0.0, 0.0, 1e4, -1e4]], "float32"), anchor).numpy()
    assert np.all(np.isfinite(boxes))
    # Height grows by exactly 1000 / 16, width shrinks to nothing (the lower side is not clamped).
    np.testing.assert_allclose(boxes, [[15.0 - 312.5, 20.0, 15.0 + 312.5, 20.0]], rtol=1e-6)
    assert box_ops.MAX_LOG_SCALE == pytest.approx(math.log(1000.0 / 16.0))


def test_zero_size_boxes_and_anchors_stay_finite():
    zero = np.zeros((3, 4), "float32")
    proper = np.array([[0, 0, 10, 10], [5, 5, 5, 5], [8, 8, 2, 2]], "float32")  # proper, empty, inverted
    for boxes, anchors in [(zero, zero), (proper, zero), (zero, proper), (proper, proper[::-1])]:
        deltas = box_ops.encode(boxes, anchors).numpy()
        assert np.all(np.isfinite(deltas)), (boxes, anchors)
        assert np.all(np.isfinite(box_ops.decode(deltas, anchors).numpy()))
    # Padding RoIs (all zeros) decode to (almost) zero boxes whatever the deltas.
    padding = box_ops.decode(np.array([[3.0, -2.0, 50.0, 50.0]], "float32"), np.zeros((1, 4), "float32")).numpy()
    np.testing.assert_allclose(padding, np.zeros((1, 4)), atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_iou_encode_decode_inside_tf_function_and_xla(rng, jit_compile):
    boxes1 = random_boxes(rng, (2, 9))
    boxes2 = random_boxes(rng, (2, 4))
    anchors = random_boxes(rng, (2, 9))

    @tf.function(jit_compile=jit_compile)
    def compiled(boxes1, boxes2, anchors):
        deltas = box_ops.encode(boxes1, anchors)
        return box_ops.iou(boxes1, boxes2), deltas, box_ops.decode(deltas, anchors)

    graph = compiled(boxes1, boxes2, anchors)
    eager_deltas = box_ops.encode(boxes1, anchors)
    eager = (box_ops.iou(boxes1, boxes2), eager_deltas, box_ops.decode(eager_deltas, anchors))
    for actual, expected in zip(graph, eager):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-6, atol=1e-5)


def test_clip_and_conversions_compile_with_xla(rng):
    boxes = random_boxes(rng, (2, 5), extent=100.0)
    sizes = np.array([[64, 48], [80, 100]], "int32")

    @tf.function(jit_compile=True)
    def compiled(boxes, sizes):
        clipped = box_ops.clip_boxes(boxes, sizes)
        return clipped, box_ops.xywh_to_yxyx(box_ops.yxyx_to_xywh(clipped)), box_ops.yxyx_to_voc(clipped)

    clipped, round_trip, voc = compiled(boxes, sizes)
    np.testing.assert_allclose(clipped.numpy(), box_ops.clip_boxes(boxes, sizes).numpy())
    np.testing.assert_allclose(round_trip.numpy(), clipped.numpy(), atol=1e-5)
    np.testing.assert_allclose(voc.numpy(), box_ops.yxyx_to_voc(clipped).numpy())


# --------------------------------------------------------------------------- clipping


def test_clip_boxes_with_a_shared_or_per_image_shape():
    boxes = np.array([[[-5.0, 2.0, 40.0, 70.0], [50.0, 70.0, 60.0, 80.0]]] * 2, "float32")  # [2, 2, 4]
    shared = box_ops.clip_boxes(boxes, (32, 64)).numpy()
    np.testing.assert_array_equal(shared[0], [[0, 2, 32, 64], [32, 64, 32, 64]])
    np.testing.assert_array_equal(box_ops.clip_boxes(boxes, tf.constant([32, 64])).numpy(), shared)
    per_image = box_ops.clip_boxes(boxes, tf.constant([[32, 64], [100, 75]])).numpy()
    np.testing.assert_array_equal(per_image[0], shared[0])
    np.testing.assert_array_equal(per_image[1], [[0, 2, 40, 70], [50, 70, 60, 75]])
    # Class-specific boxes [B, N, K, 4] with a per-image shape.
    per_class = box_ops.clip_boxes(np.repeat(boxes[:, :, None], 3, axis=2), np.array([[32, 64], [100, 75]]))
    assert per_class.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(per_class.numpy()[:, :, 2], per_image)


# --------------------------------------------------------------------------- formats


def test_format_conversions_hand_case_and_round_trips(rng):
    yxyx = np.array([[10.0, 20.0, 30.0, 60.0]], "float32")
    np.testing.assert_array_equal(box_ops.yxyx_to_xyxy(yxyx).numpy(), [[20, 10, 60, 30]])
    np.testing.assert_array_equal(box_ops.yxyx_to_xywh(yxyx).numpy(), [[20, 10, 40, 20]])
    np.testing.assert_array_equal(box_ops.xywh_to_yxyx([[20.0, 10.0, 40.0, 20.0]]).numpy(), yxyx)
    np.testing.assert_array_equal(box_ops.xyxy_to_yxyx([[20.0, 10.0, 60.0, 30.0]]).numpy(), yxyx)
    boxes = random_boxes(rng, (2, 3, 5))
    np.testing.assert_array_equal(box_ops.xyxy_to_yxyx(box_ops.yxyx_to_xyxy(boxes)).numpy(), boxes)
    np.testing.assert_allclose(box_ops.xywh_to_yxyx(box_ops.yxyx_to_xywh(boxes)).numpy(), boxes, atol=1e-5)
    np.testing.assert_allclose(box_ops.voc_to_yxyx(box_ops.yxyx_to_voc(boxes)).numpy(), boxes, atol=1e-5)


def test_voc_boxes_are_one_based_and_inclusive():
    # VOC (xmin, ymin, xmax, ymax) = (1, 1, 10, 10): the top-left 10 x 10 pixels.
    converted = box_ops.voc_to_yxyx(np.array([[1, 1, 10, 10], [48, 240, 195, 371]])).numpy()
    assert converted.dtype == np.float32
    np.testing.assert_array_equal(converted, [[0, 0, 10, 10], [239, 47, 371, 195]])
    np.testing.assert_array_equal(box_ops.yxyx_to_voc(converted).numpy(), [[1, 1, 10, 10], [48, 240, 195, 371]])
    np.testing.assert_array_equal(box_ops.yxyx_to_xywh(converted).numpy()[0], [0, 0, 10, 10])


def test_continuous_iou_of_converted_voc_boxes_equals_the_devkit_iou(rng):
    corner = rng.integers(1, 40, size=(12, 2))
    voc = np.concatenate([corner, corner + rng.integers(0, 25, size=(12, 2))], axis=1)  # 1-pixel boxes too
    actual = box_ops.iou(box_ops.voc_to_yxyx(voc), box_ops.voc_to_yxyx(voc[::-1])).numpy()
    expected = [[voc_devkit_iou(a, b) for b in voc[::-1]] for a in voc]
    np.testing.assert_allclose(actual, expected, atol=1e-6)


# --------------------------------------------------------------------------- NMS


def assert_detections_equal(detections, expected, total):
    num = detections["num_detections"].numpy()
    assert detections["boxes"].shape[1:] == (total, 4)
    assert detections["classes"].dtype == tf.int32 and detections["num_detections"].dtype == tf.int32
    for b, kept in enumerate(expected):
        assert num[b] == len(kept)
        scores = detections["scores"].numpy()[b]
        classes = detections["classes"].numpy()[b]
        boxes = detections["boxes"].numpy()[b]
        np.testing.assert_allclose(scores[: len(kept)], [item[0] for item in kept], rtol=1e-6)
        np.testing.assert_array_equal(classes[: len(kept)], [item[1] for item in kept])
        np.testing.assert_allclose(boxes[: len(kept)], np.array([item[2] for item in kept]).reshape(-1, 4), atol=1e-5)
        # Padding rows: class 0 (background), score 0, zero box.
        assert np.all(classes[len(kept):] == 0) and np.all(scores[len(kept):] == 0)
        assert np.all(boxes[len(kept):] == 0)
        assert np.all(classes[: len(kept)] >= 1)


@pytest.mark.parametrize("shared_boxes", [False, True])
@pytest.mark.parametrize("per_class, total", [(4, 10), (20, 100)])
def test_batched_nms_equals_greedy_reference(rng, shared_boxes, per_class, total):
    batch, num_boxes, classes = 2, 30, 3
    boxes = random_boxes(rng, (batch, num_boxes, 1 if shared_boxes else classes))
    scores = rng.uniform(0.0, 1.0, size=(batch, num_boxes, classes)).astype("float32")
    detections = box_ops.batched_nms(
        boxes, scores, max_output_size_per_class=per_class, max_total_size=total, iou_threshold=0.4, score_threshold=0.2
    )
    expected = reference_batched_nms(
        boxes, scores, per_class=per_class, total=total, iou_threshold=0.4, score_threshold=0.2
    )
    assert 0 < min(len(kept) for kept in expected)
    assert_detections_equal(detections, expected, total)
    # The last class's detections carry id K, not K - 1.
    assert classes in detections["classes"].numpy()


def test_batched_nms_inside_tf_function_with_dynamic_sizes(rng):
    boxes = random_boxes(rng, (1, 12, 2))
    scores = rng.uniform(0.0, 1.0, size=(1, 12, 2)).astype("float32")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([None, None, None])])
    def serve(boxes, scores):
        return box_ops.batched_nms(boxes, scores, max_output_size_per_class=5, max_total_size=6)

    assert serve.get_concrete_function().structured_outputs["boxes"].shape.as_list() == [None, 6, 4]
    eager = box_ops.batched_nms(boxes, scores, max_output_size_per_class=5, max_total_size=6)
    for key, value in serve(boxes, scores).items():
        np.testing.assert_array_equal(value.numpy(), eager[key].numpy())


def test_batched_nms_empty_cases(rng):
    # No boxes at all.
    detections = box_ops.batched_nms(
        np.zeros((2, 0, 3, 4), "float32"), np.zeros((2, 0, 3), "float32"), max_output_size_per_class=5, max_total_size=7
    )
    assert_detections_equal(detections, [[], []], 7)
    # Every score at or below the threshold (the threshold is strict).
    scores = np.full((1, 8, 2), 0.05, "float32")
    scores[0, :4] = rng.uniform(0.0, 0.04, size=(4, 2))
    detections = box_ops.batched_nms(
        random_boxes(rng, (1, 8, 2)), scores, max_output_size_per_class=5, max_total_size=7, score_threshold=0.05
    )
    assert_detections_equal(detections, [[]], 7)


def test_batched_nms_clips_in_pixels_before_suppression():
    # Two boxes that overlap little, but almost entirely once clipped to the 10 x 10 image.
    boxes = np.array([[[[0, 0, 10, 10]], [[0, 0, 10, 100]]]], "float32")
    scores = np.array([[[0.9], [0.8]]], "float32")
    unclipped = box_ops.batched_nms(boxes, scores, max_output_size_per_class=5, max_total_size=3)
    assert unclipped["num_detections"].numpy()[0] == 2
    np.testing.assert_array_equal(unclipped["boxes"].numpy()[0, 1], [0, 0, 10, 100])  # pixels, not [0, 1]
    clipped = box_ops.batched_nms(
        boxes, scores, max_output_size_per_class=5, max_total_size=3, clip_boxes=True, image_shape=(10, 10)
    )
    assert clipped["num_detections"].numpy()[0] == 1
    np.testing.assert_array_equal(clipped["boxes"].numpy()[0], [[0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(clipped["classes"].numpy()[0], [1, 0, 0])


def reference_greedy_nms(boxes, scores, *, max_output_size, iou_threshold, score_threshold):
    """Greedy NMS of one row: the kept indices by descending score (float64, per pair)."""
    order = sorted((i for i in range(len(scores)) if scores[i] > score_threshold), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if len(kept) == max_output_size:
            break
        if all(reference_pair_iou(boxes[i], boxes[j]) <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def tensorflow_nms(boxes, scores, *, max_output_size, iou_threshold, score_threshold):
    """What the zoo used before padded_nms: TensorFlow's CombinedNonMaxSuppression, one class."""
    nmsed_boxes, nmsed_scores, _, num = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[..., None], max_output_size_per_class=max_output_size,
        max_total_size=max_output_size, iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_per_class=False, clip_boxes=False,
    )
    return nmsed_boxes.numpy(), nmsed_scores.numpy(), num.numpy()


@pytest.mark.parametrize("jit_compile", [None, True])
@pytest.mark.parametrize(
    "num_boxes, max_output_size, score_threshold, tile_size",
    [
        (40, 10, float("-inf"), 512),  # one block
        (40, 25, 0.3, 8),  # five blocks: suppression across blocks, and a score threshold
        (6, 10, 0.0, 512),  # fewer candidates than the output count
        (30, 30, 0.9, 4),  # few candidates, most blocks hold none
        (0, 5, 0.0, 512),  # no boxes at all
    ],
)
def test_padded_nms_equals_greedy_reference_and_tensorflow_nms(
    rng, jit_compile, num_boxes, max_output_size, score_threshold, tile_size
):
    batch = 3
    boxes = random_boxes(rng, (batch, num_boxes))
    scores = rng.uniform(0.0, 1.0, size=(batch, num_boxes)).astype("float32")  # no ties
    if num_boxes:
        boxes[1, ::3] = boxes[1, ::3, ::-1][..., [1, 0, 3, 2]]  # corners in the other order: same boxes
        boxes[2], scores[2] = 0.0, 0.0  # an all-padding row
    options = dict(max_output_size=max_output_size, iou_threshold=0.4, score_threshold=score_threshold)

    @tf.function(jit_compile=jit_compile)
    def nms(boxes, scores):
        return box_ops.padded_nms(boxes, scores, tile_size=tile_size, **options)

    kept = {key: value.numpy() for key, value in nms(boxes, scores).items()}
    assert kept["boxes"].shape == (batch, max_output_size, 4) and kept["indices"].dtype == np.int32
    canonical = np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])],
                               axis=-1)
    for b in range(batch):
        expected = reference_greedy_nms(canonical[b], scores[b], **options)
        count = len(expected)
        assert kept["num_valid"][b] == count
        np.testing.assert_array_equal(kept["indices"][b], expected + [-1] * (max_output_size - count))
        np.testing.assert_array_equal(kept["boxes"][b, :count], boxes[b, expected].reshape(-1, 4))
        np.testing.assert_array_equal(kept["scores"][b, :count], scores[b, expected])
        assert not kept["boxes"][b, count:].any() and not kept["scores"][b, count:].any()
    if num_boxes:
        # Padding rows score 0: none kept above a threshold >= 0, all kept (no area) below it.
        assert kept["num_valid"][0] > 0 and kept["num_valid"][2] == (0 if score_threshold >= 0 else max_output_size)
        # TensorFlow's kernel keeps the same boxes (it takes either corner order too).
        tf_boxes, tf_scores, tf_num = tensorflow_nms(boxes, scores, **options)
        np.testing.assert_array_equal(kept["num_valid"], tf_num)
        np.testing.assert_array_equal(kept["scores"], tf_scores)
        np.testing.assert_array_equal(kept["boxes"], tf_boxes)


@pytest.mark.parametrize("jit_compile", [None, True])
def test_padded_nms_threshold_is_strict_and_empty_boxes_suppress_nothing(jit_compile):
    # IoU exactly 0.5 is kept at iou_threshold 0.5 (suppressed only above it), as TensorFlow's.
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10], [3, 3, 3, 3], [3, 3, 3, 3]]], "float32")
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], "float32")
    kept = tf.function(lambda b, s: box_ops.padded_nms(b, s, max_output_size=5, iou_threshold=0.5),
                       jit_compile=jit_compile)(boxes, scores)
    np.testing.assert_array_equal(kept["indices"].numpy(), [[0, 1, 3, 4, -1]])
    np.testing.assert_array_equal(kept["num_valid"].numpy(), [4])
    np.testing.assert_array_equal(tensorflow_nms(boxes, scores, max_output_size=5, iou_threshold=0.5,
                                                 score_threshold=float("-inf"))[2], [4])


def graph_op_types(function, *args):
    """Every op type in `function`'s graph for `args`, the bodies of its loops included."""
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    return {node.op for node in graph.node} | {
        node.op for library in graph.library.function for node in library.node_def
    }


def test_padded_nms_takes_tensorflows_kernel_outside_xla_and_plain_ops_inside(rng):
    boxes = random_boxes(rng, (2, 50))
    scores = rng.uniform(0.0, 1.0, size=(2, 50)).astype("float32")
    nms = lambda b, s: box_ops.padded_nms(b, s, max_output_size=10, iou_threshold=0.5)  # noqa: E731
    plain, compiled = tf.function(nms), tf.function(nms, jit_compile=True)
    assert "NonMaxSuppressionV5" in graph_op_types(plain, boxes, scores)
    assert "NonMaxSuppressionV5" not in graph_op_types(compiled, boxes, scores)
    assert "NonMaxSuppressionV5" not in graph_op_types(plain, boxes.astype("float64"), scores.astype("float64"))
    for key, value in plain(boxes, scores).items():
        np.testing.assert_array_equal(value.numpy(), compiled(boxes, scores)[key].numpy())


@pytest.mark.parametrize("shared_boxes", [False, True])
def test_batched_nms_compiles_with_xla_and_equals_tensorflow_nms(rng, shared_boxes):
    batch, num_boxes, classes = 2, 30, 3
    boxes = random_boxes(rng, (batch, num_boxes, 1 if shared_boxes else classes))
    scores = rng.uniform(0.0, 1.0, size=(batch, num_boxes, classes)).astype("float32")
    options = dict(max_output_size_per_class=6, max_total_size=20, iou_threshold=0.4, score_threshold=0.2)
    compiled = tf.function(lambda b, s: box_ops.batched_nms(b, s, **options), jit_compile=True)(boxes, scores)
    boxes_tf, scores_tf, classes_tf, num_tf = tf.image.combined_non_max_suppression(
        boxes, scores, pad_per_class=False, clip_boxes=False, **options
    )
    np.testing.assert_array_equal(compiled["num_detections"].numpy(), num_tf.numpy())
    np.testing.assert_array_equal(compiled["scores"].numpy(), scores_tf.numpy())
    np.testing.assert_array_equal(compiled["boxes"].numpy(), boxes_tf.numpy())
    valid = np.arange(20)[None] < num_tf.numpy()[:, None]
    np.testing.assert_array_equal(compiled["classes"].numpy(), np.where(valid, classes_tf.numpy() + 1, 0))


# --------------------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors():
    four = np.zeros((3, 4), "float32")
    with pytest.raises(ValueError, match=r"iou: boxes1 must be \[\.\.\., N, 4\].*got shape \(3, 5\)"):
        box_ops.iou(np.zeros((3, 5), "float32"), four)
    with pytest.raises(ValueError, match=r"iou: boxes2 must be \[\.\.\., M, 4\]"):
        box_ops.iou(four, np.zeros((4,), "float32"))
    with pytest.raises(ValueError, match="broadcastable leading dimensions"):
        box_ops.iou(np.zeros((2, 3, 4), "float32"), np.zeros((3, 3, 4), "float32"))
    with pytest.raises(TypeError, match="same dtype, got float32 and float64"):
        box_ops.iou(tf.constant(four), tf.zeros((3, 4), tf.float64))
    with pytest.raises(TypeError, match="boxes1 must hold pixel coordinates"):
        box_ops.iou(tf.zeros((3, 4), tf.bool), four)
    with pytest.raises(ValueError, match=r"encode: anchors must be \[\.\.\., 4\]"):
        box_ops.encode(four, np.zeros((3, 2), "float32"))
    with pytest.raises(ValueError, match=r"decode: deltas must be \[\.\.\., 4\] \(dy, dx, dh, dw\)"):
        box_ops.decode(np.zeros((3, 8), "float32"), four)
    with pytest.raises(ValueError, match="decode: deltas and anchors must have broadcastable shapes"):
        box_ops.decode(np.zeros((2, 4), "float32"), four)
    with pytest.raises(ValueError, match="encode: weights must be four positive numbers"):
        box_ops.encode(four, four, weights=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"clip_boxes: image_shape must be \(height, width\) or \[B, 2\]"):
        box_ops.clip_boxes(four, (10, 10, 3))
    with pytest.raises(ValueError, match="clip_boxes: image_shape .* must have the same batch size"):
        box_ops.clip_boxes(np.zeros((2, 3, 4), "float32"), np.ones((3, 2), "int32"))
    with pytest.raises(ValueError, match=r"voc_to_yxyx: boxes_xyxy_1based must be \[\.\.\., 4\]"):
        box_ops.voc_to_yxyx(np.zeros((3, 5)))
    boxes, scores = np.zeros((1, 6, 3, 4), "float32"), np.zeros((1, 6, 3), "float32")
    nms = dict(max_output_size_per_class=2, max_total_size=4)
    with pytest.raises(ValueError, match=r"batched_nms: boxes must be \[B, N, K or 1, 4\]"):
        box_ops.batched_nms(boxes[:, :, 0], scores, **nms)
    with pytest.raises(ValueError, match=r"batched_nms: scores must be \[B, N, K\]"):
        box_ops.batched_nms(boxes, scores[..., 0], **nms)
    with pytest.raises(ValueError, match="K = 2 class columns like scores, or 1 shared"):
        box_ops.batched_nms(boxes, scores[..., :2], **nms)
    with pytest.raises(ValueError, match=r"must agree on \[B, N\]"):
        box_ops.batched_nms(boxes, scores[:, :5], **nms)
    with pytest.raises(ValueError, match="max_total_size must be a positive integer"):
        box_ops.batched_nms(boxes, scores, max_output_size_per_class=2, max_total_size=0)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        box_ops.batched_nms(boxes, scores, iou_threshold=1.5, **nms)
    with pytest.raises(ValueError, match="clip_boxes=True needs image_shape"):
        box_ops.batched_nms(boxes, scores, clip_boxes=True, **nms)


def test_shapes_are_checked_when_a_function_is_traced():
    traced = tf.function(box_ops.encode, input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, None])])
    traced.get_concrete_function()  # an unknown last dimension passes and is left to the kernels
    traced = tf.function(box_ops.encode, input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, 3])])
    with pytest.raises(ValueError, match=r"encode: anchors must be \[\.\.\., 4\].*got shape \(None, 3\)"):
        traced.get_concrete_function()
