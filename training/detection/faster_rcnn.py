"""Faster R-CNN training: `FasterRCNNTrainer`, the RPN and the RoI head trained jointly.

Paper: Ren et al., "Faster R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497, sections
3.1.3 ("Training RPNs") and 3.2 (approximate joint training); the values are py-faster-rcnn's
(`experiments/cfgs/faster_rcnn_end2end.yml`). Anchor targets are `training.detection.targets`'
(`match_anchors`, `sample_anchors`), the losses `training.detection.losses`' (`rpn_loss`,
`fast_rcnn_loss`), the steps `training.detection.trainer`'s.

Shapes: B images, P anchors per image, M ground-truth rows per image (padding rows class 0), N
proposals, R sampled RoIs per image. Boxes are `[ymin, xmin, ymax, xmax]` pixels.

Decisions:
- The head trains on RoIs sampled by `training.detection.targets.sample_rois` from the RPN's
  training proposals (2000 per image by default) plus the ground truth, 25% foreground,
  background IoU in [0, 0.5) (py-faster-rcnn's end-to-end BG_THRESH_LO = 0: with learned
  proposals, low-overlap boxes are the background to learn). The proposals' coordinates are
  constants for the head's loss (`tf.stop_gradient`): the paper's approximate joint training,
  where the RPN learns only from its own loss.
- The RPN's and the head's losses are summed with weight 1 each, as py-faster-rcnn's.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

from layers.detection_contract import (
    BOX_DELTAS,
    CLASS_PROBS,
    DETECTIONS,
    FASTER_RCNN,
    HEAD_LAYERS,
    IMAGES,
    PROPOSALS,
    ROIS,
    RPN_ANCHORS,
    RPN_BOX_DELTAS,
    RPN_LAYERS,
    RPN_OBJECTNESS,
    detector_kind,
)
from training.detection.losses import RPN_SMOOTH_L1_BETA, fast_rcnn_loss, rpn_loss
from training.detection.targets import (
    ALLOWED_BORDER,
    ANCHORS_PER_IMAGE,
    FASTER_BACKGROUND_IOU,
    FOREGROUND_FRACTION,
    FOREGROUND_IOU,
    NEGATIVE_IOU,
    POSITIVE_FRACTION,
    POSITIVE_IOU,
    ROIS_PER_IMAGE,
    check_thresholds,
    jitter_boxes,
    match_anchors,
    sample_anchors,
    sample_rois,
)
from training.detection.trainer import DetectorTrainer


class FasterRCNNTrainer(DetectorTrainer):
    """Wraps a Faster R-CNN detector so that `fit` trains the RPN and the head jointly.

    The detector is `zoo.build("faster_rcnn_resnet50", ...)` (layers `rpn_anchors`,
    `rpn_objectness`, `rpn_box_deltas`, `proposals`, `class_probs`, `box_deltas`, `detections`;
    `layers.detection_contract.detector_kind` is "faster_rcnn"). Each step runs
    the trunk and the RPN once (training mode: the training proposal counts), assigns and
    samples anchor targets (`match_anchors`, `sample_anchors`), samples RoIs from the
    proposals (gradient stopped) plus the ground truth (`sample_rois`), runs the RoI head on
    the sampled RoIs of the same C4 map, and minimises `rpn_classification + rpn_box +
    classification + box` plus the detector's regularization losses. Logged: "loss" (the
    total, weight decay included) and the four parts under those names. Save `trainer.model`.

    Data: `(images [B, H, W, 3] raw pixels, {"boxes": [B, M, 4], "classes": [B, M]})`.

    Args:
      model: the detector.
      rois_per_image, foreground_fraction, foreground_iou, background_iou: the head's
        `sample_rois` (64, 0.25, 0.5, (0, 0.5)).
      jitter_copies, jitter: jittered ground-truth copies added to the head's candidates
        (0: the paper adds only the ground truth).
      anchors_per_image, positive_fraction: the RPN's mini-batch (256, 0.5).
      positive_iou, negative_iou, allowed_border: `match_anchors`'s (0.7, 0.3, 0).
      rpn_beta: the RPN's smooth L1 beta (1/9).
      seed: the sampling seed.

    Example:
      >>> trainer = FasterRCNNTrainer(zoo.build("faster_rcnn_resnet50", num_classes=3))
      >>> trainer.compile(optimizer="adam")
      >>> trainer.fit(make_dataset(source, task="detection", batch_size=2, image_size=600, training=True))
    """

    PARTS = ("rpn_classification", "rpn_box", "classification", "box")

    def __init__(self, model, *, rois_per_image=ROIS_PER_IMAGE, foreground_fraction=FOREGROUND_FRACTION,
                 foreground_iou=FOREGROUND_IOU, background_iou=FASTER_BACKGROUND_IOU, jitter_copies=0, jitter=0.1,
                 anchors_per_image=ANCHORS_PER_IMAGE, positive_fraction=POSITIVE_FRACTION, positive_iou=POSITIVE_IOU,
                 negative_iou=NEGATIVE_IOU, allowed_border=ALLOWED_BORDER, rpn_beta=RPN_SMOOTH_L1_BETA, seed=0,
                 **kwargs):
        super().__init__(model, **kwargs)
        if detector_kind(model) != FASTER_RCNN:
            raise ValueError(
                f"FasterRCNNTrainer: {model.name} is not a Faster R-CNN detector (layers "
                f"{', '.join(RPN_LAYERS + HEAD_LAYERS)}, and no '{ROIS}' input); train Fast R-CNN "
                "detectors with FastRCNNTrainer"
            )
        self.foreground_iou, self.background_iou = check_thresholds(
            foreground_iou, background_iou, function="FasterRCNNTrainer"
        )
        if not 0.0 <= float(negative_iou) <= float(positive_iou) <= 1.0:
            raise ValueError(f"FasterRCNNTrainer: need 0 <= negative_iou <= positive_iou <= 1, got "
                             f"{negative_iou!r}, {positive_iou!r}")
        if isinstance(jitter_copies, bool) or not isinstance(jitter_copies, numbers.Integral) or jitter_copies < 0:
            raise ValueError(f"FasterRCNNTrainer: jitter_copies must be an integer >= 0, got {jitter_copies!r}")
        self.model = model
        # The anchors' input is the feature map that the RPN and the RoI head share.
        features = model.get_layer(RPN_ANCHORS).input
        proposals = model.get_layer(PROPOSALS).output
        self.rpn = keras.Model(
            model.input,
            [features, model.get_layer(RPN_OBJECTNESS).output, model.get_layer(RPN_BOX_DELTAS).output,
             model.get_layer(RPN_ANCHORS).output, proposals],
            name=f"{model.name}_rpn",
        )
        # The RoI head from the shared C4 map and any RoIs: the same layers as the detector's.
        self.head = keras.Model(
            [features, proposals], [model.get_layer(CLASS_PROBS).output, model.get_layer(BOX_DELTAS).output],
            name=f"{model.name}_head",
        )
        self.box_weights = tuple(model.get_layer(DETECTIONS).box_weights)
        self.rpn_box_weights = tuple(model.get_layer(PROPOSALS).box_weights)
        self.rois_per_image, self.foreground_fraction = int(rois_per_image), float(foreground_fraction)
        self.jitter_copies, self.jitter = int(jitter_copies), float(jitter)
        self.anchors_per_image, self.positive_fraction = int(anchors_per_image), float(positive_fraction)
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.allowed_border = None if allowed_border is None else float(allowed_border)
        self.rpn_beta, self.seed = float(rpn_beta), int(seed)
        self.built = True

    def call(self, inputs, training=False):
        if not isinstance(inputs, dict):
            inputs = {IMAGES: inputs}
        return self.model(inputs, training=training)

    def losses_of(self, images, targets, seed, *, training):
        """`(total, parts)`: the joint loss of a batch and its four named parts (see the class)."""
        gt_boxes = tf.cast(targets["boxes"], tf.float32)
        gt_classes = tf.cast(targets["classes"], tf.int32)
        anchor_seed, jitter_seed, roi_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        features, objectness, deltas, anchors, proposals = self.rpn({IMAGES: images}, training=training)
        image_shape = tf.shape(images)[1:3]
        match = match_anchors(
            anchors[:1], gt_boxes, gt_classes, image_shape, positive_iou=self.positive_iou,
            negative_iou=self.negative_iou, allowed_border=self.allowed_border, box_weights=self.rpn_box_weights,
        )
        labels = sample_anchors(match["labels"], seed=anchor_seed, anchors_per_image=self.anchors_per_image,
                                positive_fraction=self.positive_fraction)
        parts = rpn_loss(objectness, deltas, labels, match["box_targets"], beta=self.rpn_beta)
        candidates = tf.stop_gradient(proposals)
        if self.jitter_copies:
            jittered = jitter_boxes(gt_boxes, gt_classes, seed=jitter_seed, copies=self.jitter_copies,
                                    jitter=self.jitter, image_size=image_shape)
            candidates = tf.concat([candidates, jittered], axis=1)
        sample = sample_rois(
            candidates, gt_boxes, gt_classes, seed=roi_seed, rois_per_image=self.rois_per_image,
            foreground_fraction=self.foreground_fraction, foreground_iou=self.foreground_iou,
            background_iou=self.background_iou, box_weights=self.box_weights,
        )
        class_probs, box_deltas = self.head([features, sample["rois"]], training=training)
        head = fast_rcnn_loss(class_probs, box_deltas, sample["class_targets"], sample["box_targets"],
                              sample["valid"])
        parts.update(classification=head["classification"], box=head["box"])
        return self.with_regularization(tf.add_n(list(parts.values()))), parts


__all__ = ["FasterRCNNTrainer"]
