"""The "detection" task of `training.fit.train` and `training.fit.evaluate`.

Which trainer a detector gets is the detector's own answer (`layers.detection_contract`): one
with a `rois` input (Fast R-CNN) trains with `FastRCNNTrainer` on the caller's proposals
(`task_options={"proposals": images -> boxes}`; `zoo train` gives sliding windows), any other
with `FasterRCNNTrainer`, which refuses anything but a Faster R-CNN. Evaluation is
`evaluate_detector`'s VOC (and COCO) AP, with the same proposals.
"""

from __future__ import annotations

from layers.detection_contract import takes_rois
from training.detection.evaluation import evaluate_detector
from training.detection.fast_rcnn import FastRCNNTrainer
from training.detection.faster_rcnn import FasterRCNNTrainer
from training.detection.faster_rcnn_fpn import FPNFasterRCNNTrainer, resizes_inside
from training.tasks import Task, register_task


def _evaluate(model, source, *, batch_size, image_size, resize="stretch", verbose=0, proposals=None, **options):
    if proposals is None and takes_rois(model):
        raise ValueError("detection evaluation needs proposals=images -> boxes (zoo evaluate builds sliding windows)")
    return evaluate_detector(
        model, source, proposals=proposals, image_size=image_size, batch_size=batch_size, verbose=verbose,
        resize=resize, **options
    )


def _wrap(model, *, proposals=None, **options):
    """FastRCNNTrainer for a detector with a `rois` input, FasterRCNNTrainer for one with an RPN
    (FPNFasterRCNNTrainer where the detector resizes its images in the graph)."""
    if not takes_rois(model):
        if proposals is not None:
            raise ValueError(f"{model.name} makes its own proposals (an RPN): detection training takes no proposals")
        trainer = FPNFasterRCNNTrainer if resizes_inside(model) else FasterRCNNTrainer
        return trainer(model, **options)
    if proposals is None:
        raise ValueError("detection training needs proposals=images -> boxes (zoo train builds sliding windows)")
    return FastRCNNTrainer(model, proposals=proposals, **options)


register_task(
    Task(
        name="detection",
        loss=None,
        metrics=lambda num_classes: [],
        monitor="val_loss",
        summary="mAP@0.5",
        wrap=_wrap,
        evaluate=_evaluate,
    )
)
