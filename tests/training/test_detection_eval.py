"""VOC AP on hand-computed cases, and agreement with pycocotools where the definitions meet.

The pycocotools comparison is of the matching, not of the AP definitions: VOC2010 all-point AP
and COCO's 101-point AP interpolate the same precision/recall curve differently, so the test
computes COCO's 101-point AP from our curves (by the formula of pycocotools' `accumulate`) and
compares it with pycocotools' per-class AP@0.5. The random cases keep the ground-truth boxes of
a class disjoint, where VOC's argmax matching and COCO's best-unmatched matching coincide, have
no difficult boxes, no equal scores, and at most 100 detections per image and class.
"""

import sys

import numpy as np
import pytest

from layers import boxes as box_ops
from training.detection.average_precision import coco_evaluate, evaluate_detections, iou_matrix, split_batch, voc_ap


def detection(boxes, scores, classes):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float32),
            "classes": np.array(classes, np.int32)}


def truth(boxes, classes, difficult=None):
    entry = {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "classes": np.array(classes, np.int32)}
    if difficult is not None:
        entry["difficult"] = np.array(difficult, bool)
    return entry


A, B, C, D = [0, 0, 10, 10], [0, 20, 10, 30], [20, 0, 30, 10], [20, 20, 30, 30]  # disjoint boxes
MISS = [50, 50, 60, 60]


# --------------------------------------------------------------------------- voc_ap


def test_voc_ap_all_point_and_11_point_by_hand():
    # TP, FP, TP, FP, TP with 4 positives: recall 1/4, 1/4, 1/2, 1/2, 3/4.
    recall = [0.25, 0.25, 0.5, 0.5, 0.75]
    precision = [1.0, 0.5, 2 / 3, 0.5, 0.6]
    # Envelope 1 on (0, 1/4], 2/3 on (1/4, 1/2], 0.6 on (1/2, 3/4]: 1/4 + 1/6 + 3/20 = 17/30.
    assert voc_ap(recall, precision) == pytest.approx(17 / 30, abs=1e-15)
    # Thresholds 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> 0.6; .8, .9, 1 -> 0: 6.2 / 11.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(31 / 55, abs=1e-15)


def test_voc_ap_11_point_thresholds_are_exactly_tenths():
    # 3 of 10 positives found, no false positive: recall reaches 0.3 exactly, which counts for
    # the 0.3 threshold (np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 and would miss it).
    recall = np.arange(1, 4) / 10
    assert voc_ap(recall, np.ones(3), use_07_metric=True) == pytest.approx(4 / 11, abs=1e-15)


def test_voc_ap_of_an_empty_curve_is_zero_and_bad_input_is_an_error():
    assert voc_ap([], []) == 0.0 and voc_ap([], [], use_07_metric=True) == 0.0
    with pytest.raises(ValueError, match="same length"):
        voc_ap([0.5], [1.0, 0.5])


# --------------------------------------------------------------------------- evaluate_detections


@pytest.mark.parametrize("use_07_metric", [False, True])
def test_perfect_detections_give_ap_one(use_07_metric):
    detections = [detection([A, B], [0.9, 0.8], [1, 2]), detection([C], [0.7], [1])]
    truths = [truth([A, B], [1, 2]), truth([C], [1])]
    result = evaluate_detections(detections, truths, num_classes=2, use_07_metric=use_07_metric)
    assert result["mAP@0.5"] == 1.0 and result["AP"] == {"class_1": 1.0, "class_2": 1.0}
    assert result["num_ground_truths"] == {"class_1": 2, "class_2": 1}


def test_false_positive_ranked_above_the_true_positives_by_hand():
    # 3 positives over two images; by score: FP (0.9), TP (0.8), TP (0.7), FP (0.6).
    # Recall 0, 1/3, 2/3, 2/3; precision 0, 1/2, 2/3, 1/2. The envelope is 2/3 up to recall 2/3:
    # all-point AP = 2/3 * 2/3 = 4/9. 11-point: thresholds 0..0.6 (seven) see 2/3: 14/33.
    detections = [detection([MISS, A], [0.9, 0.7], [1, 1]), detection([C, [40, 40, 45, 45]], [0.8, 0.6], [1, 1])]
    truths = [truth([A, B], [1, 1]), truth([C], [1])]
    result = evaluate_detections(detections, truths, num_classes=1)
    assert result["AP"]["class_1"] == pytest.approx(4 / 9, abs=1e-15)
    curve = result["curves"]["class_1"]
    np.testing.assert_allclose(curve["scores"], [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curve["recall"], [0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curve["precision"], [0, 1 / 2, 2 / 3, 1 / 2])
    eleven = evaluate_detections(detections, truths, num_classes=1, use_07_metric=True)
    assert eleven["AP"]["class_1"] == pytest.approx(14 / 33, abs=1e-15)
    assert eleven["metric"] == "VOC2007 11-point"


def test_detections_on_difficult_boxes_count_neither_way():
    # Without the rule the two detections on the difficult box would be FPs above the TP.
    detections = [detection([C, C, A], [0.95, 0.9, 0.8], [1, 1, 1])]
    truths = [truth([A, C], [1, 1], difficult=[False, True])]
    result = evaluate_detections(detections, truths, num_classes=1)
    assert result["AP"]["class_1"] == 1.0 and result["num_ground_truths"]["class_1"] == 1
    np.testing.assert_allclose(result["curves"]["class_1"]["scores"], [0.8])
    # A difficult box that nobody finds costs nothing either.
    missed = evaluate_detections([detection([A], [0.8], [1])], truths, num_classes=1)
    assert missed["AP"]["class_1"] == 1.0


def test_a_duplicate_detection_is_a_false_positive():
    # A (0.9) TP, A again (0.8) FP, B (0.7) TP: recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (1.0 if the duplicate were free).
    detections = [detection([A, [0, 0.5, 10, 10.5], B], [0.9, 0.8, 0.7], [1, 1, 1])]
    result = evaluate_detections(detections, [truth([A, B], [1, 1])], num_classes=1)
    assert result["AP"]["class_1"] == pytest.approx(5 / 6, abs=1e-15)


def test_a_detection_goes_to_its_best_box_even_when_that_one_is_taken():
    # VOC's rule: the second detection overlaps A best (IoU 0.85) and B well enough (0.79), but
    # A is taken, so it is a false positive; pycocotools would give it B.
    first, second = [0, 0, 10, 10], [0, 0.8, 10, 10.8]
    boxes = [[0, 0, 10, 10], [0, 2, 10, 12]]
    result = evaluate_detections([detection([first, second], [0.9, 0.8], [1, 1])], [truth(boxes, [1, 1])],
                                 num_classes=1)
    np.testing.assert_allclose(result["curves"]["class_1"]["precision"], [1.0, 0.5])
    assert result["AP"]["class_1"] == pytest.approx(0.5)


def test_iou_exactly_at_the_threshold_matches():
    # IoU of a half box with the box is 0.5 exactly: a match, as in the MATLAB devkit and COCO.
    result = evaluate_detections([detection([[0, 0, 10, 5]], [0.9], [1])], [truth([A], [1])], num_classes=1)
    assert result["AP"]["class_1"] == 1.0
    strict = evaluate_detections([detection([[0, 0, 10, 5]], [0.9], [1])], [truth([A], [1])], num_classes=1,
                                 iou_threshold=0.51)
    assert strict["AP"]["class_1"] == 0.0 and "mAP@0.51" in strict


def test_no_detections_give_ap_zero():
    truths = [truth([A, B], [1, 2])]
    result = evaluate_detections([detection([], [], [])], truths, num_classes=2)
    assert result["AP"] == {"class_1": 0.0, "class_2": 0.0} and result["mAP@0.5"] == 0.0


def test_a_class_without_ground_truth_is_left_out_of_the_mean():
    # Class 2 has only detections (and a difficult box), class 3 nothing at all.
    detections = [detection([A, B, C], [0.9, 0.8, 0.7], [1, 2, 2])]
    truths = [truth([A, C], [1, 2], difficult=[False, True])]
    result = evaluate_detections(detections, truths, num_classes=3, class_names=["cat", "dog", "cow"])
    assert result["AP"]["cat"] == 1.0 and np.isnan(result["AP"]["dog"]) and np.isnan(result["AP"]["cow"])
    assert result["mAP@0.5"] == 1.0
    none = evaluate_detections([detection([A], [0.9], [1])], [truth([], [])], num_classes=1)
    assert np.isnan(none["mAP@0.5"])


def test_padding_rows_of_batched_outputs_are_skipped():
    # What layers.boxes.batched_nms returns for two images: class-0 zero rows after the real ones.
    outputs = {
        "boxes": np.array([[A, B, [0, 0, 0, 0]], [C, [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
        "scores": np.array([[0.9, 0.8, 0.0], [0.7, 0.0, 0.0]], np.float32),
        "classes": np.array([[1, 1, 0], [2, 0, 0]], np.int32),
        "num_detections": np.array([2, 1], np.int32),
    }
    truths = [truth([A, B], [1, 1]), truth([C, [0, 0, 0, 0]], [2, 0])]
    per_image = split_batch(outputs)
    assert len(per_image) == 2 and int(per_image[1]["num_detections"]) == 1
    assert evaluate_detections(per_image, truths, num_classes=2)["mAP@0.5"] == 1.0
    without_counts = [{key: value for key, value in image.items() if key != "num_detections"} for image in per_image]
    assert evaluate_detections(without_counts, truths, num_classes=2)["mAP@0.5"] == 1.0


def test_numpy_iou_equals_the_layers_iou(rng):
    corners = rng.uniform(0, 100, size=(2, 30, 2, 2))
    boxes1, boxes2 = (np.concatenate([c.min(axis=1), c.max(axis=1)], axis=-1) for c in corners)
    boxes2[:3] = boxes1[:3]  # identical pairs
    boxes2[3] = [5, 5, 5, 9]  # zero area
    # layers.boxes computes in float32 (it casts float64 NumPy input), this module in float64.
    np.testing.assert_allclose(iou_matrix(boxes1, boxes2), box_ops.iou(boxes1, boxes2).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "detections, truths, options, error, message",
    [
        ([detection([A], [0.9], [1])], [], {}, ValueError, "same images"),
        ([detection([A], [0.9], [3])], [truth([A], [1])], {}, ValueError, r"classes.*0\.\.2"),
        ([detection([A], [0.9], [1])], [truth([A], [-1])], {}, ValueError, r"ground_truths\[0\]\['classes'\]"),
        ([{"boxes": [[0, 0, 1]], "scores": [1], "classes": [1]}], [truth([A], [1])], {}, ValueError, r"\[n, 4\]"),
        ([{"boxes": [A], "scores": [0.5, 0.4], "classes": [1]}], [truth([A], [1])], {}, ValueError, "scores"),
        ([{"boxes": [A], "classes": [1]}], [truth([A], [1])], {}, ValueError, "no 'scores'"),
        ([{"boxes": [A], "scores": [0.5], "classes": [1.5]}], [truth([A], [1])], {}, ValueError, "whole"),
        ([detection([A], [0.9], [1])], [truth([A], [1])], {"class_names": ["x"]}, ValueError, "class_names"),
        ([detection([A], [0.9], [1])], [truth([A], [1])], {"iou_threshold": 0}, ValueError, "iou_threshold"),
        (detection([A], [0.9], [1]), [truth([A], [1])], {}, TypeError, "one dict per image"),
    ],
)
def test_bad_inputs_are_clear_errors(detections, truths, options, error, message):
    with pytest.raises(error, match=message):
        evaluate_detections(detections, truths, **{"num_classes": 2, **options})


# --------------------------------------------------------------------------- COCO


def coco_101_point_ap(recall, precision):
    """pycocotools' accumulate(): the precision envelope read at recall 0, 0.01, ..., 1."""
    if len(recall) == 0:
        return 0.0
    envelope = np.maximum.accumulate(np.asarray(precision)[::-1])[::-1]
    picks = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
    return float(np.mean([envelope[i] if i < len(recall) else 0.0 for i in picks]))


def random_case(rng, num_images=8, num_classes=3, size=400, cells=4):
    """Disjoint ground truth per image (one box per grid cell at most), jittered and random detections."""
    detections, truths = [], []
    cell = size / cells
    for _ in range(num_images):
        gt_boxes, gt_classes, det_boxes, det_scores, det_classes = [], [], [], [], []
        for row in range(cells):
            for column in range(cells):
                if rng.random() < 0.5:
                    continue
                top, left = row * cell + rng.uniform(0, cell / 2, 2), column * cell + rng.uniform(0, cell / 2)
                height, width = rng.uniform(10, cell / 2, 2)
                box = np.array([top[0], left, top[0] + height, left + width])
                class_id = int(rng.integers(1, num_classes + 1))
                gt_boxes.append(box)
                gt_classes.append(class_id)
                for _ in range(int(rng.integers(0, 3))):  # misses, hits, duplicates, near misses
                    jitter = rng.normal(0, 0.2, 4) * np.array([height, width, height, width])
                    det_boxes.append(box + jitter)
                    det_classes.append(class_id if rng.random() < 0.85 else int(rng.integers(1, num_classes + 1)))
        for _ in range(int(rng.integers(0, 6))):  # background false positives
            corner = rng.uniform(0, size - 60, 2)
            det_boxes.append(np.concatenate([corner, corner + rng.uniform(5, 60, 2)]))
            det_classes.append(int(rng.integers(1, num_classes + 1)))
        det_boxes = np.array(det_boxes).reshape(-1, 4)
        # Keep the detections proper boxes (ymin < ymax) after the jitter.
        det_boxes = np.concatenate([np.minimum(det_boxes[:, :2], det_boxes[:, 2:] - 1), det_boxes[:, 2:]], axis=1)
        det_scores = rng.uniform(0, 1, len(det_boxes))
        detections.append(detection(det_boxes, det_scores, det_classes))
        truths.append(truth(np.array(gt_boxes).reshape(-1, 4), gt_classes))
    return detections, truths


@pytest.mark.parametrize("seed", range(6))
def test_matching_agrees_with_pycocotools_at_iou_half(seed):
    pytest.importorskip("pycocotools")
    detections, truths = random_case(np.random.default_rng(seed))
    # float32 boxes: both sides see the same numbers (COCO gets them as Python floats).
    ours = evaluate_detections(detections, truths, num_classes=3)
    coco = coco_evaluate(detections, truths, num_classes=3)
    for name, curve in ours["curves"].items():
        expected = coco["per_class"][name]["AP@0.5"]
        if ours["num_ground_truths"][name] == 0:
            assert np.isnan(expected)
            continue
        assert coco_101_point_ap(curve["recall"], curve["precision"]) == pytest.approx(expected, abs=1e-9)
        # The VOC all-point AP of the same curve is close but not equal (different interpolation).
        assert abs(ours["AP"][name] - expected) < 0.05


def test_coco_evaluate_converts_boxes_and_reads_thresholds():
    pytest.importorskip("pycocotools")
    # A 100 x 50 box and a detection 62 x 50 inside it: IoU 0.62, which matches at the COCO
    # thresholds 0.5, 0.55, 0.6 of ten: AP@[.5:.95] = 0.3. With x and y swapped it would not.
    detections = [detection([[10, 20, 72, 70]], [0.9], [1])]
    truths = [truth([[10, 20, 110, 70]], [1])]
    result = coco_evaluate(detections, truths, num_classes=1, class_names=["cat"])
    assert result["AP@0.5"] == pytest.approx(1.0) and result["AP@0.75"] == 0.0
    assert result["AP@[.5:.95]"] == pytest.approx(0.3)
    assert result["per_class"]["cat"]["AP@0.5"] == pytest.approx(1.0)
    assert np.isnan(result["AP_small"]) and set(result) >= {"AR@100", "AR@1", "AP_large"}


def test_coco_evaluate_without_detections_and_with_difficult_boxes():
    pytest.importorskip("pycocotools")
    truths = [truth([A, C], [1, 1], difficult=[False, True])]
    empty = coco_evaluate([detection([], [], [])], truths, num_classes=1)
    assert empty["AP@0.5"] == 0.0
    # The detections on the difficult (crowd) box are ignored, as in VOC.
    on_difficult = coco_evaluate([detection([C, A], [0.9, 0.8], [1, 1])], truths, num_classes=1)
    assert on_difficult["AP@0.5"] == pytest.approx(1.0)


def test_coco_evaluate_without_pycocotools_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        coco_evaluate([detection([A], [0.9], [1])], [truth([A], [1])], num_classes=1)
