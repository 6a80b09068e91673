"""`training.detection_eval`, the path the README names: the AP code is `training.detection.average_precision`.

New code imports from there.
"""

from training.detection.average_precision import coco_evaluate, evaluate_detections, iou_matrix, split_batch, voc_ap

__all__ = ["coco_evaluate", "evaluate_detections", "iou_matrix", "split_batch", "voc_ap"]
