"""`training.faster_rcnn`, the path the README names: Faster R-CNN training is in `training.detection`.

`FasterRCNNTrainer` lives in `training.detection.faster_rcnn`, the anchor targets in
`training.detection.targets`, the RPN's loss in `training.detection.losses`, and whether a model
has an RPN is `layers.detection_contract.has_rpn`. New code imports them from there.
"""

from layers.detection_contract import has_rpn
from training.detection.faster_rcnn import FasterRCNNTrainer
from training.detection.losses import rpn_loss
from training.detection.targets import ANCHORS_PER_IMAGE, match_anchors, sample_anchors

__all__ = [
    "ANCHORS_PER_IMAGE",
    "FasterRCNNTrainer",
    "has_rpn",
    "match_anchors",
    "rpn_loss",
    "sample_anchors",
]
