"""Fast R-CNN training: `FastRCNNTrainer`, sampled RoIs of caller-given proposals and the multi-task loss.

Paper: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083, section 2.3.
Targets are `training.detection.targets`' (`sample_rois`, `jitter_boxes`), the loss
`training.detection.losses.fast_rcnn_loss`, the steps `training.detection.trainer`'s.

Data: `training.data.make_dataset(task="detection")` resizes every image to `image_size`,
either stretched (`resize="stretch"`, each axis by its own ratio) or keeping its aspect ratio
(`resize="letterbox"`: one factor, the image fitted inside `image_size`, padded at the bottom
and on the right; `layers.image_resize`); boxes are scaled by the same ratios as the pixels, so
they stay exact. Its training augmentation flips horizontally (boxes mirrored with the pixels),
scales by one factor for both axes and crops with padding. The paper keeps the aspect ratio
(shorter side 600); stretched to a fixed square, a VOC detector sees distorted objects, the same
in training and evaluation, which letterboxing avoids. Evaluation
(`training.detection.evaluation.detect_source`) maps each detection back to its original
image's pixels by undoing the resize of the run, and scores it there against the ground truth
as annotated.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

from layers import boxes as box_ops
from layers.detection_contract import (
    BOX_DELTAS,
    CLASS_PROBS,
    DETECTIONS,
    FAST_RCNN,
    HEAD_LAYERS,
    IMAGES,
    ROIS,
    detector_kind,
    layer_names,
    missing_layers,
)
from training.detection.losses import fast_rcnn_loss
from training.detection.targets import (
    BACKGROUND_IOU,
    FOREGROUND_FRACTION,
    FOREGROUND_IOU,
    ROIS_PER_IMAGE,
    batched_proposals,
    check_thresholds,
    jitter_boxes,
    sample_rois,
)
from training.detection.trainer import DetectorTrainer


class FastRCNNTrainer(DetectorTrainer):
    """Wraps a Fast R-CNN detector so that `fit` trains it with sampled RoIs and the multi-task loss.

    The detector takes `{"images", "rois"}` and has layers named "class_probs" (`[B, N, K + 1]`)
    and "box_deltas" (`[B, N, K, 4]`), like `zoo.build("fast_rcnn_resnet50")`
    (`layers.detection_contract.detector_kind` is "fast_rcnn"). The trainer runs the head model
    that ends there (the same layers and weights, so no NMS in training). Each step: proposals
    from `proposals(images)`, plus the ground truth and `jitter_copies` jittered copies of it,
    are sampled by `sample_rois` (seeded by `seed` and the optimizer's step, so a run is
    reproducible), the head runs on the `R` sampled RoIs per image and `fast_rcnn_loss` plus the
    detector's regularization losses is minimised. Logged: "loss" (the total, weight decay
    included), "classification" and "box"; validation logs the same with a fixed seed. Save
    `trainer.model`, never the trainer; `trainer(images)` and `trainer({"images", "rois"})` are
    the detector's outputs.

    Data: `(images [B, H, W, 3] raw pixels, {"boxes": [B, M, 4], "classes": [B, M]})`, what
    `training.data.make_dataset(task="detection")` gives.

    Args:
      model: the detector.
      proposals: `images [B, H, W, 3] -> [N, 4] or [B, N, 4]` pixel boxes, a TensorFlow
        function (e.g. `zoo.detection.proposals.sliding_windows` over the image size).
      rois_per_image, foreground_fraction, foreground_iou, background_iou: `sample_rois`'s.
      jitter_copies, jitter: `jitter_boxes`'s, the extra ground-truth candidates.
      box_loss_weight: the loss's lambda.
      seed: the sampling seed.

    Example:
      >>> trainer = FastRCNNTrainer(detector, proposals=lambda images: sliding_windows(128, 128, stride=8))
      >>> trainer.compile(optimizer="adam")
      >>> trainer.fit(make_dataset(source, task="detection", batch_size=8, image_size=128, training=True))
      >>> detector = trainer.model
    """

    PARTS = ("classification", "box")

    def __init__(self, model, *, proposals, rois_per_image=ROIS_PER_IMAGE, foreground_fraction=FOREGROUND_FRACTION,
                 foreground_iou=FOREGROUND_IOU, background_iou=BACKGROUND_IOU, jitter_copies=2, jitter=0.1,
                 box_loss_weight=1.0, seed=0, **kwargs):
        super().__init__(model, **kwargs)
        if not callable(proposals):
            raise TypeError(f"FastRCNNTrainer: proposals must be a function images -> boxes, got {proposals!r}")
        if detector_kind(model) != FAST_RCNN:
            missing = missing_layers(model, HEAD_LAYERS)
            raise ValueError(
                f"FastRCNNTrainer: model must be a Fast R-CNN detector with inputs {{'{IMAGES}', '{ROIS}'}} and "
                f"layers {' and '.join(repr(name) for name in HEAD_LAYERS)}; {model.name} lacks "
                f"{missing or 'the inputs'}"
            )
        self.foreground_iou, self.background_iou = check_thresholds(
            foreground_iou, background_iou, function="FastRCNNTrainer"
        )
        if isinstance(jitter_copies, bool) or not isinstance(jitter_copies, numbers.Integral) or jitter_copies < 0:
            raise ValueError(f"FastRCNNTrainer: jitter_copies must be an integer >= 0, got {jitter_copies!r}")
        self.model = model
        self.head = keras.Model(
            model.input, [model.get_layer(CLASS_PROBS).output, model.get_layer(BOX_DELTAS).output],
            name=f"{model.name}_head",
        )
        # The detections' box parameterisation is the targets' (a head without one: the default).
        self.box_weights = (tuple(model.get_layer(DETECTIONS).box_weights) if DETECTIONS in layer_names(model)
                            else box_ops.DEFAULT_WEIGHTS)
        self.proposals = proposals
        self.rois_per_image, self.foreground_fraction = int(rois_per_image), float(foreground_fraction)
        self.jitter_copies, self.jitter = int(jitter_copies), float(jitter)
        self.box_loss_weight, self.seed = float(box_loss_weight), int(seed)
        # Every layer is the detector's, already built; `fit` need not trace the wrapper to build it.
        self.built = True

    def call(self, inputs, training=False):
        if not isinstance(inputs, dict):
            images = tf.convert_to_tensor(inputs, tf.float32)
            inputs = {IMAGES: images, ROIS: batched_proposals(self.proposals(images), images)}
        return self.model(inputs, training=training)

    def sample(self, images, targets, seed):
        """`sample_rois` on `proposals(images)` plus jittered ground truth (see the class)."""
        gt_boxes = tf.cast(targets["boxes"], tf.float32)
        gt_classes = tf.cast(targets["classes"], tf.int32)
        proposals = batched_proposals(self.proposals(images), images)
        jitter_seed, sample_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        jittered = jitter_boxes(
            gt_boxes, gt_classes, seed=jitter_seed, copies=self.jitter_copies, jitter=self.jitter,
            image_size=tf.shape(images)[1:3],
        )
        return sample_rois(
            tf.concat([proposals, jittered], axis=1), gt_boxes, gt_classes, seed=sample_seed,
            rois_per_image=self.rois_per_image, foreground_fraction=self.foreground_fraction,
            foreground_iou=self.foreground_iou, background_iou=self.background_iou, box_weights=self.box_weights,
        )

    def _detection_losses(self, images, sample, training):
        class_probs, box_deltas = self.head({IMAGES: images, ROIS: sample["rois"]}, training=training)
        losses = fast_rcnn_loss(
            class_probs, box_deltas, sample["class_targets"], sample["box_targets"], sample["valid"],
            box_loss_weight=self.box_loss_weight,
        )
        return self.with_regularization(losses["total"]), losses

    def losses_of(self, images, targets, seed, *, training):
        """`(total, {"classification", "box"})` on RoIs sampled with `seed` (see the class)."""
        total, losses = self._detection_losses(images, self.sample(images, targets, seed), training)
        return total, {name: losses[name] for name in self.PARTS}


__all__ = ["FastRCNNTrainer"]
