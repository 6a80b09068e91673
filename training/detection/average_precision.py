"""Average precision of detections: PASCAL VOC's, and COCO's through pycocotools.

References: Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010,
section 4.2, and the VOC devkit (`VOCevaldet.m`, `VOCap.m`); py-faster-rcnn's `voc_eval.py`;
Lin et al., "Microsoft COCO", ECCV 2014, and pycocotools' `cocoeval.py`.

Pure NumPy (no TensorFlow); arrays from TensorFlow are accepted wherever `np.asarray` reads them.

Shapes: N detections and M ground-truth boxes of one image, K object classes (ids 1..K).

Inputs, one entry per image, in the same order for detections and ground truths:
  detections[i] = {"boxes": [N, 4], "scores": [N], "classes": [N]}, optionally with
    "num_detections" (only the first that many rows count), so a row of `layers.boxes.
    batched_nms` output (see `split_batch`) can be passed as it is;
  ground_truths[i] = {"boxes": [M, 4], "classes": [M]}, optionally "difficult": [M] bool,
    "crowd": [M] bool (COCO's iscrowd; ignored like difficult boxes) and "area": [M] (COCO's
    object areas for its small/medium/large ranges; default the boxes' areas).
Boxes are `[ymin, xmin, ymax, xmax]` in pixels on the zoo's continuous axis (`layers.boxes`).
Class ids are 1-based; rows of class 0 (background, padding) are skipped in both.

VOC decisions, where implementations of the devkit differ:
- IoU is continuous, `(ymax - ymin) * (xmax - xmin)` areas with no "+ 1". The devkit adds 1 to
  every side because it counts inclusive 1-based pixels; `layers.boxes.voc_to_yxyx` converts
  such boxes to the continuous axis, on which the continuous IoU equals the devkit's, so VOC
  annotations read through it give the devkit's numbers.
- A detection matches when IoU >= the threshold, as in the MATLAB devkit (`ovmax >= minoverlap`)
  and pycocotools; py-faster-rcnn's `voc_eval.py` uses `>`. They differ only at exactly 0.5.
- Each detection goes, in descending score over all images of its class, to the ground truth
  it overlaps most (argmax, difficult and already-matched boxes included). Matched to a
  difficult box it counts neither as a true nor as a false positive; matched to a box that an
  earlier detection took (a duplicate) it is a false positive, even if another box would have
  fitted (pycocotools would try the next-best unmatched box instead).
- Equal scores keep image order, then the order within the image (a stable sort; the devkit's
  sort is not stable).
- The VOC2007 11-point thresholds are exactly k / 10, so a recall of exactly 3/10 reaches the
  0.3 threshold; py-faster-rcnn's `np.arange(0, 1.1, 0.1)` makes it 0.30000000000000004.
- A class with no non-difficult ground truth has no recall: its AP is NaN and it is left out of
  the mean (VOC 2007 test has every class; a small split may not).
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from layers.detection_contract import DETECTION_OUTPUTS

_EPSILON = np.finfo(np.float64).eps


# --------------------------------------------------------------------------- inputs


def _array(value, *, name, function):
    try:
        return np.asarray(value)
    except Exception as error:  # noqa: BLE001 (any failure to read is the caller's input)
        raise TypeError(f"{function}: {name} must be array-like, got {type(value).__name__}") from error


def _boxes(value, *, name, function):
    boxes = _array(value, name=name, function=function)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{function}: {name} must be [n, 4] (ymin, xmin, ymax, xmax), got shape {boxes.shape}")
    if not (np.issubdtype(boxes.dtype, np.number) and np.all(np.isfinite(boxes))):
        raise ValueError(f"{function}: {name} must be finite pixel coordinates")
    return boxes.astype(np.float64)


def _vector(value, count, *, name, function):
    vector = _array(value, name=name, function=function)
    if vector.size == 0 and count == 0:
        return vector.reshape(0)
    if vector.shape != (count,):
        raise ValueError(f"{function}: {name} must have shape ({count},) like the boxes, got {vector.shape}")
    return vector


def _classes(value, count, num_classes, *, name, function):
    classes = _vector(value, count, name=name, function=function)
    if classes.dtype == bool or not np.issubdtype(classes.dtype, np.number):
        raise TypeError(f"{function}: {name} must be integer class ids, got {classes.dtype}")
    as_int = classes.astype(np.int64)
    if not np.array_equal(as_int, classes):
        raise ValueError(f"{function}: {name} must be whole class ids, got {classes[as_int != classes][:3]}")
    if count and (as_int.min() < 0 or as_int.max() > num_classes):
        raise ValueError(
            f"{function}: {name} must be in 0..{num_classes} (1-based classes, 0 = background), "
            f"got {as_int.min()}..{as_int.max()}"
        )
    return as_int


def _get(entry, key, *, name, function, required=True):
    if not isinstance(entry, Mapping):
        raise TypeError(f"{function}: {name} must be a dict with boxes, classes, ..., got {type(entry).__name__}")
    if key not in entry:
        if required:
            raise ValueError(f"{function}: {name} has no {key!r}; keys are {sorted(entry)}")
        return None
    return entry[key]


def _parse_detections(entry, index, num_classes, function):
    name = f"detections[{index}]"
    boxes = _boxes(_get(entry, "boxes", name=name, function=function), name=f"{name}['boxes']", function=function)
    count = _get(entry, "num_detections", name=name, function=function, required=False)
    if count is not None:
        count = int(np.asarray(count))
        if not 0 <= count <= len(boxes):
            raise ValueError(f"{function}: {name}['num_detections'] must be in 0..{len(boxes)}, got {count}")
        boxes = boxes[:count]
    rows = len(boxes)
    scores = _array(_get(entry, "scores", name=name, function=function), name=f"{name}['scores']", function=function)
    classes = _array(_get(entry, "classes", name=name, function=function), name=f"{name}['classes']", function=function)
    if count is not None:
        scores, classes = scores[:count], classes[:count]
    scores = _vector(scores, rows, name=f"{name}['scores']", function=function)
    if not (np.issubdtype(scores.dtype, np.number) and np.all(np.isfinite(scores))):
        raise ValueError(f"{function}: {name}['scores'] must be finite numbers")
    classes = _classes(classes, rows, num_classes, name=f"{name}['classes']", function=function)
    return boxes, scores.astype(np.float64), classes


def _parse_ground_truths(entry, index, num_classes, function):
    name = f"ground_truths[{index}]"
    boxes = _boxes(_get(entry, "boxes", name=name, function=function), name=f"{name}['boxes']", function=function)
    classes = _classes(
        _get(entry, "classes", name=name, function=function), len(boxes), num_classes,
        name=f"{name}['classes']", function=function,
    )
    ignored = np.zeros(len(boxes), bool)
    for key in ("difficult", "crowd"):
        flags = _get(entry, key, name=name, function=function, required=False)
        if flags is not None:
            ignored |= _vector(flags, len(boxes), name=f"{name}[{key!r}]", function=function).astype(bool)
    area = _get(entry, "area", name=name, function=function, required=False)
    if area is None:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    else:
        area = _vector(area, len(boxes), name=f"{name}['area']", function=function).astype(np.float64)
    return boxes, classes, ignored, area


def _parse(detections, ground_truths, num_classes, class_names, function):
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"{function}: num_classes must be a positive integer (object classes), got {num_classes!r}")
    for value, name in ((detections, "detections"), (ground_truths, "ground_truths")):
        if isinstance(value, Mapping) or not isinstance(value, Sequence):
            raise TypeError(f"{function}: {name} must be a list with one dict per image, got {type(value).__name__}")
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"{function}: detections and ground_truths must list the same images, "
            f"got {len(detections)} and {len(ground_truths)}"
        )
    if class_names is None:
        class_names = [f"class_{k}" for k in range(1, num_classes + 1)]
    else:
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes or len(set(class_names)) != num_classes:
            raise ValueError(
                f"{function}: class_names must be {num_classes} distinct names for classes 1..{num_classes} "
                f"(no background), got {len(class_names)}"
            )
    parsed_detections = [_parse_detections(d, i, num_classes, function) for i, d in enumerate(detections)]
    parsed_truths = [_parse_ground_truths(g, i, num_classes, function) for i, g in enumerate(ground_truths)]
    return parsed_detections, parsed_truths, class_names


def split_batch(outputs):
    """Per-image detection dicts from batched outputs (`layers.boxes.batched_nms`, a model's).

    Args:
      outputs: a dict of `[B, ...]` arrays, "boxes" `[B, D, 4]`, "scores" `[B, D]`,
        "classes" `[B, D]`, optionally "num_detections" `[B]` (other keys are ignored).

    Returns:
      A list of B dicts with "boxes", "scores", "classes" (and "num_detections") NumPy arrays.
    """
    keys = [key for key in DETECTION_OUTPUTS if key in outputs]
    arrays = {key: np.asarray(outputs[key]) for key in keys}
    batch = len(arrays["boxes"])
    return [{key: arrays[key][b] for key in keys} for b in range(batch)]


# --------------------------------------------------------------------------- VOC


def iou_matrix(boxes1, boxes2):
    """`[N, M]` continuous IoU of `[N, 4]` and `[M, 4]` yxyx boxes (NumPy `layers.boxes.iou`)."""
    boxes1, boxes2 = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    top = np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
    left = np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
    bottom = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
    right = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
    intersection = np.maximum(bottom - top, 0) * np.maximum(right - left, 0)
    area1 = np.maximum(boxes1[:, 2] - boxes1[:, 0], 0) * np.maximum(boxes1[:, 3] - boxes1[:, 1], 0)
    area2 = np.maximum(boxes2[:, 2] - boxes2[:, 0], 0) * np.maximum(boxes2[:, 3] - boxes2[:, 1], 0)
    union = area1[:, None] + area2[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def voc_ap(recall, precision, *, use_07_metric=False):
    """Average precision of one class from its precision/recall curve (the devkit's VOCap).

    VOC2010 and later: the area under the precision envelope (precision made monotonically
    decreasing), summed wherever recall changes ("all-point" interpolation). VOC2007: the mean
    over the 11 recall thresholds 0, 0.1, ..., 1 (exactly k / 10) of the best precision at a
    recall at least the threshold, 0 where none reaches it.

    Args:
      recall: `[D]` recall after each detection, in descending score order (non-decreasing).
      precision: `[D]` precision after each detection.
      use_07_metric: the VOC2007 11-point metric instead of the all-point one.

    Returns:
      AP as a Python float in [0, 1]; 0 for an empty curve.

    Example:
      >>> voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3])  # 0.5 * 1 + 0.5 * 2/3
      0.8333333333333333
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if recall.ndim != 1 or recall.shape != precision.shape:
        raise ValueError(
            f"voc_ap: recall and precision must be 1-D and the same length, got {recall.shape} and {precision.shape}"
        )
    if not (np.all(np.isfinite(recall)) and np.all(np.isfinite(precision))):
        raise ValueError("voc_ap: recall and precision must be finite")
    if use_07_metric:
        total = 0.0
        for threshold in np.arange(11) / 10.0:
            reached = precision[recall >= threshold]
            total += reached.max() if reached.size else 0.0
        return float(total / 11.0)
    points = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(points[1:] != points[:-1])
    return float(np.sum((points[steps + 1] - points[steps]) * envelope[steps + 1]))


def _match_image(boxes, scores, truth_boxes, truth_difficult, iou_threshold):
    """VOC matching of one image's detections of one class.

    Returns `[n]` int8 outcomes in the given order: 1 true positive, 0 false positive, -1
    ignored (matched to a difficult box). Matching within an image depends only on the order
    of that image's detections, so images can be matched one at a time.
    """
    outcome = np.zeros(len(boxes), np.int8)
    if len(truth_boxes) == 0 or len(boxes) == 0:
        return outcome
    overlaps = iou_matrix(boxes, truth_boxes)
    taken = np.zeros(len(truth_boxes), bool)
    for index in np.argsort(-scores, kind="stable"):
        best = int(np.argmax(overlaps[index]))
        if overlaps[index, best] < iou_threshold:
            continue
        if truth_difficult[best]:
            outcome[index] = -1
        elif not taken[best]:
            taken[best] = True
            outcome[index] = 1
    return outcome


def _class_curves(detections, ground_truths, num_classes, iou_threshold):
    """Per class 1..K: scores, recall and precision in descending score order, and positives.

    One pass over the images, matching each class that has detections there; a class's
    outcomes are gathered in image order, so the stable sort below breaks score ties by image,
    then by the order within the image.
    """
    scores = [[] for _ in range(num_classes + 1)]
    outcomes = [[] for _ in range(num_classes + 1)]
    positives = np.zeros(num_classes + 1, np.int64)
    for (boxes, det_scores, det_classes), (truth_boxes, truth_classes, difficult, _) in zip(detections, ground_truths):
        positives += np.bincount(truth_classes[~difficult], minlength=num_classes + 1)
        for class_id in np.unique(det_classes):
            if class_id == 0:
                continue
            mine = det_classes == class_id
            truth = truth_classes == class_id
            outcomes[class_id].append(
                _match_image(boxes[mine], det_scores[mine], truth_boxes[truth], difficult[truth], iou_threshold)
            )
            scores[class_id].append(det_scores[mine])
    curves = []
    for class_id in range(1, num_classes + 1):
        class_scores = np.concatenate(scores[class_id]) if scores[class_id] else np.zeros(0)
        class_outcomes = np.concatenate(outcomes[class_id]) if outcomes[class_id] else np.zeros(0, np.int8)
        order = np.argsort(-class_scores, kind="stable")
        class_scores, class_outcomes = class_scores[order], class_outcomes[order]
        counted = class_outcomes >= 0
        class_scores, class_outcomes = class_scores[counted], class_outcomes[counted]
        true_positives = np.cumsum(class_outcomes == 1).astype(np.float64)
        false_positives = np.cumsum(class_outcomes == 0).astype(np.float64)
        found = int(positives[class_id])
        recall = true_positives / found if found else np.full(len(class_scores), np.nan)
        precision = true_positives / np.maximum(true_positives + false_positives, _EPSILON)
        curves.append((class_scores, recall, precision, found))
    return curves


def evaluate_detections(detections, ground_truths, *, num_classes, iou_threshold=0.5, use_07_metric=False,
                        class_names=None):
    """PASCAL VOC average precision per class and its mean (see the module docstring for the rules).

    Args:
      detections: one dict per image, "boxes" `[N, 4]` yxyx pixels, "scores" `[N]`, "classes"
        `[N]` 1-based (optionally "num_detections"; class-0 rows are skipped).
      ground_truths: one dict per image, "boxes" `[M, 4]`, "classes" `[M]` 1-based, optionally
        "difficult" `[M]` bool (default: none).
      num_classes: K, the number of object classes (background not counted).
      iou_threshold: the IoU a detection needs to match (>=); VOC's is 0.5.
      use_07_metric: the VOC2007 11-point AP instead of VOC2010+ all-point AP.
      class_names: K names for classes 1..K (e.g. VOC's "aeroplane", ...), or None for
        "class_1", ... "class_K".

    Returns:
      A dict:
        f"mAP@{iou_threshold:g}" ("mAP@0.5"): the mean AP over the classes that have
          non-difficult ground truth (NaN if none has);
        "AP": {name: AP}, NaN for classes without non-difficult ground truth;
        "num_ground_truths": {name: non-difficult ground-truth boxes};
        "curves": {name: {"scores", "recall", "precision"}} arrays in descending score order,
          detections matched to difficult boxes left out;
        "iou_threshold", "metric" ("VOC2007 11-point" or "VOC2010 all-point").

    Example:
      >>> result = evaluate_detections(
      ...     [{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "classes": [1]}],
      ...     [{"boxes": [[0, 0, 10, 10]], "classes": [1]}], num_classes=1)
      >>> result["mAP@0.5"]
      1.0
    """
    function = "evaluate_detections"
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real) or not 0 < iou_threshold <= 1:
        raise ValueError(f"{function}: iou_threshold must be in (0, 1], got {iou_threshold!r}")
    detections, ground_truths, class_names = _parse(detections, ground_truths, num_classes, class_names, function)
    average_precisions, positives_per_class, curves = {}, {}, {}
    per_class = _class_curves(detections, ground_truths, len(class_names), iou_threshold)
    for name, (scores, recall, precision, positives) in zip(class_names, per_class):
        positives_per_class[name] = positives
        curves[name] = {"scores": scores, "recall": recall, "precision": precision}
        average_precisions[name] = (
            voc_ap(recall, precision, use_07_metric=use_07_metric) if positives else math.nan
        )
    evaluated = [ap for name, ap in average_precisions.items() if positives_per_class[name]]
    return {
        f"mAP@{iou_threshold:g}": float(np.mean(evaluated)) if evaluated else math.nan,
        "AP": average_precisions,
        "num_ground_truths": positives_per_class,
        "curves": curves,
        "iou_threshold": float(iou_threshold),
        "metric": "VOC2007 11-point" if use_07_metric else "VOC2010 all-point",
    }


# --------------------------------------------------------------------------- COCO

_COCO_STATS = (
    "AP@[.5:.95]", "AP@0.5", "AP@0.75", "AP_small", "AP_medium", "AP_large",
    "AR@1", "AR@10", "AR@{max}", "AR_small", "AR_medium", "AR_large",
)


def _import_pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError(
            "coco_evaluate needs pycocotools, which the zoo does not install by default: "
            "pip install zoo[coco] (or pip install pycocotools)"
        ) from error
    return COCO, COCOeval


def _xywh(boxes):
    """yxyx -> COCO's [x, y, width, height] (top-left corner), as Python floats."""
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=-1)


def _coco_dataset(images, categories, annotations):
    # COCO() with no file, then the dataset: loadRes() fails on an empty result list.
    COCO, _ = _import_pycocotools()
    dataset = COCO()
    dataset.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        dataset.createIndex()
    return dataset


def _nan_if_missing(value):
    return math.nan if value < 0 else float(value)


def coco_evaluate(detections, ground_truths, *, num_classes, class_names=None, max_detections=100):
    """COCO box AP and AR through pycocotools, on the same inputs as `evaluate_detections`.

    Boxes become COCO `[x, y, width, height]`; both use continuous areas, so the IoUs are
    those of `evaluate_detections`. COCO has no "difficult": difficult boxes are passed as
    `iscrowd=1` like crowd boxes, its only way to ignore a box, under which a detection is ignored when it
    covers a crowd box by the threshold measured as intersection over the detection's own area
    (not IoU). COCO keeps the `max_detections` best detections per image and class, matches
    each detection to the best still-unmatched box, and interpolates precision at 101 recall
    points, so its AP@0.5 is close to but not the VOC AP of `evaluate_detections`.

    Args:
      detections, ground_truths, num_classes, class_names: as in `evaluate_detections`.
      max_detections: detections per image and class that count (COCO's 100).

    Returns:
      A dict of floats "AP@[.5:.95]", "AP@0.5", "AP@0.75", "AP_small", "AP_medium",
      "AP_large", "AR@1", "AR@10", f"AR@{max_detections}", "AR_small", "AR_medium",
      "AR_large" (NaN where COCO reports -1: no ground truth in that range), and "per_class":
      {name: {"AP@[.5:.95]", "AP@0.5", "AP@0.75"}}.

    Raises:
      ImportError: pycocotools is not installed (`pip install pycocotools`, or the coco extra).
    """
    function = "coco_evaluate"
    _, COCOeval = _import_pycocotools()
    if isinstance(max_detections, bool) or not isinstance(max_detections, numbers.Integral) or max_detections < 1:
        raise ValueError(f"{function}: max_detections must be a positive integer, got {max_detections!r}")
    detections, ground_truths, class_names = _parse(detections, ground_truths, num_classes, class_names, function)
    images = [{"id": index + 1} for index in range(len(detections))]
    categories = [{"id": k, "name": name} for k, name in enumerate(class_names, start=1)]
    truth_annotations, detection_annotations = [], []
    for image_id, ((boxes, scores, classes), (truth_boxes, truth_classes, difficult, areas)) in enumerate(
        zip(detections, ground_truths), start=1
    ):
        for box, class_id, hard, area in zip(_xywh(truth_boxes), truth_classes, difficult, areas):
            if class_id:
                truth_annotations.append({
                    "id": len(truth_annotations) + 1, "image_id": image_id, "category_id": int(class_id),
                    "bbox": [float(v) for v in box], "area": float(area), "iscrowd": int(hard),
                })
        for box, score, class_id in zip(_xywh(boxes), scores, classes):
            if class_id:
                detection_annotations.append({
                    "id": len(detection_annotations) + 1, "image_id": image_id, "category_id": int(class_id),
                    "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "score": float(score),
                })
    truth = _coco_dataset(images, categories, truth_annotations)
    found = _coco_dataset(images, categories, detection_annotations)
    evaluation = COCOeval(truth, found, iouType="bbox")
    evaluation.params.imgIds = [image["id"] for image in images]
    evaluation.params.catIds = [category["id"] for category in categories]
    evaluation.params.maxDets = [1, 10, int(max_detections)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    result = {
        name.format(max=max_detections): _nan_if_missing(value) for name, value in zip(_COCO_STATS, evaluation.stats)
    }
    # precision: [T IoU thresholds, 101 recall points, K, area ranges (all first), max dets].
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    thresholds = evaluation.params.iouThrs
    at_50, at_75 = int(np.argmin(np.abs(thresholds - 0.5))), int(np.argmin(np.abs(thresholds - 0.75)))

    def mean_valid(values):
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else math.nan

    result["per_class"] = {
        name: {
            "AP@[.5:.95]": mean_valid(precision[:, :, k]),
            "AP@0.5": mean_valid(precision[at_50, :, k]),
            "AP@0.75": mean_valid(precision[at_75, :, k]),
        }
        for k, name in enumerate(class_names)
    }
    return result
