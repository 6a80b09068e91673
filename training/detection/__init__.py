"""Detection training and evaluation: Fast R-CNN and Faster R-CNN.

Modules, each importing only those above it (and `layers`):
- `targets`: Fast R-CNN's RoI targets and sampling (`match_rois`, `sample_rois`,
  `jitter_boxes`), the RPN's anchor targets and sampling (`match_anchors`, `sample_anchors`).
- `losses`: `smooth_l1`, Fast R-CNN's multi-task `fast_rcnn_loss`, the RPN's `rpn_loss`.
- `trainer`: `DetectorTrainer`, the `fit` steps that both trainers share.
- `fast_rcnn`: `FastRCNNTrainer`, a detector with a `rois` input on caller-given proposals.
- `faster_rcnn`: `FasterRCNNTrainer`, the RPN and the RoI head jointly.
- `average_precision`: PASCAL VOC's AP and COCO's (pure NumPy, pycocotools).
- `evaluation`: `evaluate_detector`, `detect_source`, `detection_metrics` over a dataset source.
- `task`: registers the "detection" task of `training.fit` (which trainer a detector gets).

What a detector is (its kind, inputs, outputs and layer names) is `layers.detection_contract`'s
answer, which `zoo` shares.

    >>> trainer = FastRCNNTrainer(zoo.build("fast_rcnn_vgg16", num_classes=3), proposals=windows)
"""

from training.detection import task  # noqa: F401  (registers the "detection" task)
from training.detection.evaluation import COCO_METRICS, detect_source, detection_metrics, evaluate_detector
from training.detection.fast_rcnn import FastRCNNTrainer
from training.detection.faster_rcnn import FasterRCNNTrainer
from training.detection.losses import fast_rcnn_loss, rpn_loss, smooth_l1
from training.detection.targets import (
    ANCHORS_PER_IMAGE,
    BACKGROUND_IOU,
    FOREGROUND_FRACTION,
    FOREGROUND_IOU,
    ROIS_PER_IMAGE,
    has_area,
    jitter_boxes,
    match_anchors,
    match_rois,
    sample_anchors,
    sample_rois,
)
from training.detection.trainer import DetectorTrainer

__all__ = [
    "ANCHORS_PER_IMAGE",
    "BACKGROUND_IOU",
    "COCO_METRICS",
    "DetectorTrainer",
    "FOREGROUND_FRACTION",
    "FOREGROUND_IOU",
    "FastRCNNTrainer",
    "FasterRCNNTrainer",
    "ROIS_PER_IMAGE",
    "detect_source",
    "detection_metrics",
    "evaluate_detector",
    "fast_rcnn_loss",
    "has_area",
    "jitter_boxes",
    "match_anchors",
    "match_rois",
    "rpn_loss",
    "sample_anchors",
    "sample_rois",
    "smooth_l1",
]
