"""Evaluating a detector on a dataset source: its detections, VOC's AP and COCO's AP.

`detect_source` runs a detector (with caller-given proposals for a Fast R-CNN, on the images
alone for a Faster R-CNN: `layers.detection_contract.takes_rois`) over a
`training.data.DatasetSource` and maps its detections back to each original image's pixels;
`detection_metrics` scores them with `training.detection.average_precision`;
`evaluate_detector` does both, and is the "detection" task's evaluation (`zoo evaluate`).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

from layers.detection_contract import (
    CLASS_PROBS,
    DETECTION_OUTPUTS,
    IMAGES,
    ROIS,
    is_detector,
    num_object_classes,
    takes_rois,
)
from layers.image_resize import original_scale
from training.data import load_image, make_dataset
from training.detection.average_precision import coco_evaluate, evaluate_detections, split_batch
from training.detection.targets import batched_proposals


def evaluate_detector(model, source, *, proposals=None, image_size, batch_size=8, iou_threshold=0.5,
                      use_07_metric=False, coco_ap=None, verbose=0, resize="stretch"):
    """PASCAL VOC AP of a detector on `source`, per class and the mean, and COCO's AP on COCO data.

    `detect_source` runs the detector, `detection_metrics` scores its detections; see them.

    Args:
      model: a detector, `{"images", "rois"}` -> "boxes", "scores", "classes" (1-based),
        "num_detections", and "class_probs" `[B, N, K + 1]`.
      source: a `training.data.DatasetSource` with boxes; K = `len(source.class_names)`.
      proposals: `images -> [N, 4] or [B, N, 4]` pixel boxes (as for `FastRCNNTrainer`) for a
        detector with a `rois` input; None for one that makes its own (Faster R-CNN).
      image_size: `(height, width)`.
      batch_size: images per call.
      iou_threshold, use_07_metric: `evaluate_detections`'s.
      resize: "stretch" or "letterbox", as the model was trained (`TrainConfig.resize`).
      coco_ap: add COCO's AP (`coco_evaluate`); None: when `source` was read from COCO JSON.
      verbose: 1 prints progress to stderr.

    Returns:
      `{"mAP@0.5": float, "AP/<class name>": float, ...}` (NaN for a class without
      non-difficult ground truth; `mAP@0.5` averages the others), then with `coco_ap`
      "coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl".

    Example:
      >>> evaluate_detector(detector, data.synthetic(200, image_size=128, seed=1),
      ...                   proposals=windows, image_size=(128, 128))["mAP@0.5"]
    """
    detections = detect_source(model, source, proposals=proposals, image_size=image_size, batch_size=batch_size,
                               verbose=verbose, resize=resize)
    return detection_metrics(detections, source, iou_threshold=iou_threshold, use_07_metric=use_07_metric,
                             coco_ap=coco_ap)


def detect_source(model, source, *, proposals=None, image_size, batch_size=8, verbose=0, resize="stretch"):
    """A detector's detections on every example of `source`, in the original images' pixels.

    Images are resized to `image_size` by `resize` (`make_dataset`, unaugmented, in the
    source's order), the detector runs on `proposals(images)` (on the images alone when it has
    an RPN), and its boxes (NMS in the model) are scaled back to each example's own size
    (`layers.image_resize.original_scale`: the letterbox padding is at the bottom and right, so
    there is no offset) and clipped to it, where its ground truth and COCO's area ranges are.

    Args:
      model, source, proposals, image_size, batch_size, verbose, resize: as in `evaluate_detector`.

    Returns:
      One dict per example, "boxes" `[D, 4]` yxyx pixels of the original image, "scores"
      `[D]`, "classes" `[D]` 1-based, "num_detections" (rows after it are padding), as
      `training.detection.average_precision` takes them.
    """
    num_classes = len(source.class_names)
    if not is_detector(model) or CLASS_PROBS not in model.output:
        raise ValueError(f"evaluate_detector: {model.name} is not a detector (outputs {CLASS_PROBS}, boxes, ...)")
    model_classes = num_object_classes(model)
    if model_classes != num_classes:
        raise ValueError(
            f"evaluate_detector: the model has {model_classes} object classes, the data {num_classes} "
            f"({', '.join(source.class_names)})"
        )
    most_boxes = max([len(example.boxes) for example in source.examples if example.boxes is not None] + [1])
    dataset = make_dataset(
        source, task="detection", batch_size=batch_size, image_size=image_size, training=False, max_boxes=most_boxes,
        resize=resize,
    )

    if takes_rois(model) != (proposals is not None):
        raise ValueError(
            f"evaluate_detector: {model.name} " + ("needs proposals=images -> boxes" if takes_rois(model) else
                                                   "makes its own proposals (an RPN); pass proposals=None")
        )

    # No Python control flow inside: autograph would only warn about the closure.
    @tf.function(reduce_retracing=True, autograph=False)
    def detect(images):
        inputs = {IMAGES: images}
        if proposals is not None:
            inputs[ROIS] = batched_proposals(proposals(images), images)
        result = model(inputs, training=False)
        return {key: result[key] for key in DETECTION_OUTPUTS}

    detections = []
    for images, _ in dataset:
        detections += split_batch({key: value.numpy() for key, value in detect(images).items()})
        if verbose:
            print(f"evaluate_detector: {len(detections)}/{len(source.examples)} images", file=sys.stderr, flush=True)
    for detection, example in zip(detections, source.examples):
        original = tuple(example.size or load_image(example).shape[:2])
        scale = original_scale(original, image_size, resize=resize).astype(np.float32)
        # A letterboxed detector may put a box over the padding: the image ends where the original does.
        limits = np.array(original * 2, np.float32)
        detection["boxes"] = np.clip(detection["boxes"] * scale, 0.0, limits)
    return detections


COCO_METRICS = {"coco/AP": "AP@[.5:.95]", "coco/AP50": "AP@0.5", "coco/AP75": "AP@0.75",
                "coco/APs": "AP_small", "coco/APm": "AP_medium", "coco/APl": "AP_large"}


def detection_metrics(detections, source, *, iou_threshold=0.5, use_07_metric=False, coco_ap=None):
    """VOC AP (and COCO's AP) of `detections` against the ground truth of `source`'s examples.

    Detections and ground truth are in the original images' pixels (`detect_source`). VOC's AP
    (`evaluate_detections`) ignores detections matched to difficult or crowd boxes; COCO's
    (`coco_evaluate`, pycocotools' COCOeval) passes both as `iscrowd`, with COCO's object
    areas where the source has them (`Example.area`).

    Args:
      detections: one dict per example of `source`, in its order.
      source: the `DatasetSource` the detections were made on.
      iou_threshold, use_07_metric, coco_ap: as in `evaluate_detector`.

    Returns:
      The dict `evaluate_detector` returns.
    """
    ground_truths = []
    for example in source.examples:
        truth = {"boxes": example.boxes, "classes": example.classes, "difficult": example.difficult,
                 "crowd": example.crowd}
        if example.area is not None:
            truth["area"] = example.area
        ground_truths.append(truth)
    options = dict(num_classes=len(source.class_names), class_names=source.class_names)
    result = evaluate_detections(detections, ground_truths, iou_threshold=iou_threshold,
                                 use_07_metric=use_07_metric, **options)
    metrics = {f"mAP@{iou_threshold:g}": result[f"mAP@{iou_threshold:g}"]}
    metrics.update({f"AP/{name}": ap for name, ap in result["AP"].items()})
    if coco_ap if coco_ap is not None else source.annotation_format == "coco":
        coco = coco_evaluate(detections, ground_truths, **options)
        metrics.update({name: coco[key] for name, key in COCO_METRICS.items()})
    return {name: float(value) for name, value in metrics.items()}


__all__ = ["COCO_METRICS", "detect_source", "detection_metrics", "evaluate_detector"]
