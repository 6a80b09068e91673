"""The parity bench's matching helpers (bench/faster_rcnn_fpn_parity.py), without torch."""

import numpy as np

from bench.faster_rcnn_fpn_parity import head_candidates, match_detections, match_proposals


def test_match_proposals_finds_swapped_ranks_and_misses():
    reference = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]], np.float32)
    zoo = np.array([[5, 5, 20, 20.001], [0, 0, 10, 10], [7, 7, 9, 9]], np.float32)
    np.testing.assert_array_equal(match_proposals(zoo, reference), [1, 0, -1])
    assert match_proposals(zoo[:0], reference).shape == (0,)
    np.testing.assert_array_equal(match_proposals(zoo, reference[:0]), [-1, -1, -1])


def test_match_detections_one_to_one_within_tolerances():
    ref_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    ref_scores, ref_classes = np.array([0.9, 0.8, 0.5]), np.array([1, 1, 2])
    boxes = ref_boxes[[1, 0, 2]] + np.array([[0.1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0.7, 0]], np.float32)
    scores, classes = np.array([0.8, 0.9, 0.5]) + np.array([0, 5e-5, 0]), np.array([1, 1, 2])
    result = match_detections(boxes, scores, classes, ref_boxes, ref_scores, ref_classes)
    assert result["matched"] == 2  # the third box is 0.7 px away
    np.testing.assert_allclose(result["max_box_diff_px"], 0.7, atol=1e-5)
    np.testing.assert_allclose(result["max_score_diff"], 5e-5, atol=1e-9)
    empty = match_detections(boxes[:0], scores[:0], classes[:0], ref_boxes, ref_scores, ref_classes)
    assert empty["matched"] == 0 and np.isnan(empty["max_box_diff_px"])


def test_head_candidates_threshold_and_small_boxes():
    probs = np.array([[0.5, 0.04, 0.46], [0.2, 0.4, 0.4]])
    boxes = np.array([[[0, 0, 5, 5], [0, 0, 5, 5]], [[0, 0, 5, 0.005], [1, 1, 2, 2]]], np.float32)
    np.testing.assert_array_equal(head_candidates(probs, boxes), [[False, True], [False, True]])
