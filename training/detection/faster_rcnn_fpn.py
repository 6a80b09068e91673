"""Training a detector that resizes its images inside the graph (torchvision's Faster R-CNN FPN).

`zoo.build("faster_rcnn_resnet50_fpn")` resizes its input (shorter side 800, longer at most
1333, `layers.detection_transform`) before its anchors, proposals and RoI head, as torchvision's
`GeneralizedRCNNTransform` does; its RPN and head work in the resized image's pixels. The data's
ground-truth boxes are in the input image's pixels, so `FPNFasterRCNNTrainer` maps them by the
same rule (`layers.detection_transform.resized_size`) and trains as `FasterRCNNTrainer` does.

Defaults are torchvision's where the zoo's trainer has the knob: RoIs per image 512 (25%
foreground), anchors of the whole padded image take part (no border rule, `allowed_border=None`).
"""

from __future__ import annotations

import tensorflow as tf

from layers.detection_transform import GeneralizedRCNNTransform, resized_size
from training.detection.faster_rcnn import FasterRCNNTrainer

TRANSFORM = "transform"


def resizes_inside(model) -> bool:
    """Whether `model` resizes its images in the graph (a `GeneralizedRCNNTransform` named "transform")."""
    try:
        return isinstance(model.get_layer(TRANSFORM), GeneralizedRCNNTransform)
    except ValueError:
        return False


class FPNFasterRCNNTrainer(FasterRCNNTrainer):
    """`FasterRCNNTrainer` for a detector with an in-graph resize: ground truth scaled to it.

    Args: as `FasterRCNNTrainer`, with torchvision's `rois_per_image=512` and
    `allowed_border=None` by default.
    """

    def __init__(self, model, *, rois_per_image=512, allowed_border=None, **kwargs):
        if not resizes_inside(model):
            raise ValueError(f"FPNFasterRCNNTrainer: {model.name} has no '{TRANSFORM}' layer "
                             "(GeneralizedRCNNTransform); train it with FasterRCNNTrainer")
        super().__init__(model, rois_per_image=rois_per_image, allowed_border=allowed_border, **kwargs)
        self.transform = model.get_layer(TRANSFORM)

    def losses_of(self, images, targets, seed, *, training):
        shape = tf.shape(images)
        height, width = resized_size(shape[1], shape[2], min_size=self.transform.min_size,
                                     max_size=self.transform.max_size)
        scale_y = tf.cast(height, tf.float32) / tf.cast(shape[1], tf.float32)
        scale_x = tf.cast(width, tf.float32) / tf.cast(shape[2], tf.float32)
        boxes = tf.cast(targets["boxes"], tf.float32) * tf.stack([scale_y, scale_x, scale_y, scale_x])
        return super().losses_of(images, {**targets, "boxes": boxes}, seed, training=training)


__all__ = ["FPNFasterRCNNTrainer", "resizes_inside"]
