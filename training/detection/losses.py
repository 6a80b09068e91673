"""Detection losses: smooth L1, Fast R-CNN's multi-task loss and the RPN's loss.

Papers: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083, section 2.3
("Multi-task loss"); Ren et al., "Faster R-CNN", NeurIPS 2015,
https://arxiv.org/abs/1506.01497, section 3.1.2 ("Loss Function"), with py-faster-rcnn's
values.

Shapes: B images, R sampled RoIs per image, K object classes (`fast_rcnn_loss`); P anchors per
image (`rpn_loss`). Targets are those of `training.detection.targets`. Every loss is computed in
float32 and comes back as a dict of named scalar parts.

Decisions:
- Fast R-CNN (`fast_rcnn_loss`): the mean cross-entropy over the valid sampled RoIs of the batch
  plus the smooth L1 (beta = 1) of the target class's four deltas summed over the foreground
  RoIs and divided by the same count of valid RoIs (the paper's lambda [u >= 1] averaged over
  the mini-batch, detectron2's normalisation); with no valid RoI both parts are 0.
- RPN (`rpn_loss`): the objectness is a sigmoid per anchor (torchvision's and detectron2's form
  of the paper's two-class softmax), so the classification term is binary cross-entropy
  averaged over the sampled anchors of the batch; the box term is smooth L1 with beta = 1/9
  (py-faster-rcnn's RPN, sigma = 3; the head keeps Fast R-CNN's beta = 1) on the positives'
  four deltas, summed and divided by the same count of sampled anchors (py-faster-rcnn's and
  torchvision's normalisation, which the paper's lambda = 10 with N_reg ~ 2400 approximates).
"""

from __future__ import annotations

import tensorflow as tf

# Smooth L1's beta: Fast R-CNN's 1 (torchvision 1/9, detectron2 0, pure L1).
SMOOTH_L1_BETA = 1.0
# The smallest probability the cross-entropy takes the log of (the detector ends in a softmax,
# so there are no logits to use); keras.losses clips at the same epsilon.
PROBABILITY_EPSILON = 1e-7
# The RPN's: py-faster-rcnn's sigma = 3.
RPN_SMOOTH_L1_BETA = 1.0 / 9.0


def smooth_l1(difference, *, beta=SMOOTH_L1_BETA):
    """Elementwise smooth L1: `0.5 x ** 2 / beta` below `beta`, `|x| - 0.5 beta` above."""
    absolute = tf.abs(difference)
    if beta == 0:
        return absolute
    return tf.where(absolute < beta, 0.5 * tf.square(absolute) / beta, absolute - 0.5 * beta)


def fast_rcnn_loss(class_probs, box_deltas, class_targets, box_targets, valid, *, box_loss_weight=1.0):
    """Fast R-CNN's multi-task loss on sampled RoIs (section 2.3, equation 1, lambda = 1).

    `classification` is the cross-entropy `-log p[u]` averaged over the valid RoIs of the whole
    batch (rows with `valid` False or a class target of -1 do not count); `box` is the smooth
    L1 (beta = 1) between the target class's four deltas and the box targets, summed over the
    foreground RoIs and divided by the same number of valid RoIs. Both are 0 when no RoI is
    valid. Computed in float32.

    Args:
      class_probs: `[B, R, K + 1]` softmax probabilities (column 0 background).
      box_deltas: `[B, R, K, 4]` class-specific deltas (the detector's `box_deltas`).
      class_targets: `[B, R]` int, 1..K foreground, 0 background, -1 ignored.
      box_targets: `[B, R, 4]` encoded targets (used where the class target is at least 1).
      valid: `[B, R]` bool, False for padding rows.
      box_loss_weight: lambda, 1 in the paper.

    Returns:
      `{"classification": [], "box": [], "total": []}` float32 scalars, total =
      classification + box_loss_weight * box.

    Example:
      >>> sample = sample_rois(proposals, gt_boxes, gt_classes, seed=[0, 0])
      >>> probs, deltas = head({"images": images, "rois": sample["rois"]})
      >>> fast_rcnn_loss(probs, deltas, sample["class_targets"], sample["box_targets"], sample["valid"])
    """
    class_probs = tf.cast(class_probs, tf.float32)
    box_deltas = tf.cast(box_deltas, tf.float32)
    box_targets = tf.cast(box_targets, tf.float32)
    class_targets = tf.cast(class_targets, tf.int32)
    counted = tf.cast(valid, tf.bool) & (class_targets >= 0)
    weight = tf.cast(counted, tf.float32)
    denominator = tf.maximum(tf.reduce_sum(weight), 1.0)
    num_outputs = tf.shape(class_probs)[-1]
    chosen = tf.reduce_sum(class_probs * tf.one_hot(tf.maximum(class_targets, 0), num_outputs), axis=-1)
    cross_entropy = -tf.math.log(tf.clip_by_value(chosen, PROBABILITY_EPSILON, 1.0))
    classification = tf.reduce_sum(cross_entropy * weight) / denominator
    # one_hot of -1 (background) is a row of zeros: no class's deltas are chosen.
    pick = tf.one_hot(class_targets - 1, tf.shape(box_deltas)[2])[..., None]  # [B, R, K, 1]
    class_deltas = tf.reduce_sum(box_deltas * pick, axis=2)  # [B, R, 4]
    foreground = weight * tf.cast(class_targets > 0, tf.float32)
    # Zero the targets of rows that do not count, so that a stray value there cannot be NaN * 0.
    box_targets = tf.where(foreground[..., None] > 0, box_targets, 0.0)
    per_roi = tf.reduce_sum(smooth_l1(class_deltas - box_targets), axis=-1)
    box = tf.reduce_sum(per_roi * foreground) / denominator
    return {"classification": classification, "box": box, "total": classification + box_loss_weight * box}



def rpn_loss(objectness, box_deltas, labels, box_targets, *, beta=RPN_SMOOTH_L1_BETA):
    """The RPN's loss on sampled anchors: `{"rpn_classification", "rpn_box"}` float32 scalars.

    `rpn_classification` is the binary cross-entropy of the objectness logits averaged over
    the sampled anchors of the batch (labels 0 or 1); `rpn_box` is the smooth L1 (`beta`) of
    the positives' deltas, summed and divided by the same count. Both are 0 with no sampled
    anchor.

    Args:
      objectness: `[B, P]` logits.
      box_deltas: `[B, P, 4]`.
      labels: `[B, P]` int, 1 / 0 sampled, -1 not.
      box_targets: `[B, P, 4]` (used where the label is 1).
      beta: smooth L1's beta, 1/9.
    """
    objectness = tf.cast(objectness, tf.float32)
    box_deltas = tf.cast(box_deltas, tf.float32)
    labels = tf.cast(labels, tf.int32)
    sampled = tf.cast(labels >= 0, tf.float32)
    positive = tf.cast(tf.equal(labels, 1), tf.float32)
    denominator = tf.maximum(tf.reduce_sum(sampled), 1.0)
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=objectness)
    classification = tf.reduce_sum(entropy * sampled) / denominator
    # Zero the targets of rows that do not count, so that a stray value there cannot be NaN * 0.
    targets = tf.where(positive[..., None] > 0, tf.cast(box_targets, tf.float32), 0.0)
    per_anchor = tf.reduce_sum(smooth_l1(box_deltas - targets, beta=beta), axis=-1)
    box = tf.reduce_sum(per_anchor * positive) / denominator
    return {"rpn_classification": classification, "rpn_box": box}


__all__ = [
    "PROBABILITY_EPSILON",
    "RPN_SMOOTH_L1_BETA",
    "SMOOTH_L1_BETA",
    "fast_rcnn_loss",
    "rpn_loss",
    "smooth_l1",
]
