"""Faster R-CNN training: the RPN's anchor targets and loss, and the joint trainer.

Paper: Ren et al., "Faster R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497, sections
3.1.2 ("Loss Function"), 3.1.3 ("Training RPNs") and 3.2 (approximate joint training); the
values are py-faster-rcnn's (`rpn/anchor_target_layer.py`, `experiments/cfgs/
faster_rcnn_end2end.yml`).

Shapes: B images, K anchors per image, M ground-truth rows per image (padding rows class 0), N
proposals, R sampled RoIs per image. Boxes are `[ymin, xmin, ymax, xmax]` pixels.

Names: `anchor_labels` are 1 (object), 0 (background) and -1 (no part in the loss) per anchor;
`anchor_box_targets` are `layers.boxes.encode(matched_gt, anchor, weights=(1, 1, 1, 1))`.

Decisions:
- Anchor assignment (`match_anchors`), the paper's: an anchor is positive when its IoU with
  some real ground-truth box is at least 0.7, or when it is (one of, on ties) the anchor with
  the highest IoU of a ground-truth box (that IoU must be above 0); negative when its IoU with
  every real box is below 0.3; otherwise ignored. Positives win over negatives. Its box target
  is the ground-truth box it overlaps most.
- Anchors that cross the image border by more than `allowed_border` pixels (0, the paper's
  "we ignore all cross-boundary anchors") are ignored in training: they are neither positive
  nor negative and no ground truth's best anchor. `allowed_border=None` keeps them all
  (torchvision, detectron2). At test time the RPN scores every anchor and clips the boxes.
- No real ground truth (no rows, class 0, zero-area boxes): every inside anchor is negative;
  zero-area ground truth never matches anything, so it cannot give a NaN.
- Sampling (`sample_anchors`): per image, up to `round(positive_fraction * S)` positives (S =
  256, fraction 0.5) drawn uniformly, then negatives to fill S; the others become -1.
- RPN loss (`rpn_loss`): the objectness is a sigmoid per anchor (torchvision's and
  detectron2's form of the paper's two-class softmax), so the classification term is binary
  cross-entropy averaged over the sampled anchors of the batch; the box term is smooth L1
  with beta = 1/9 (py-faster-rcnn's RPN, sigma = 3; the head keeps Fast R-CNN's beta = 1) on
  the positives' four deltas, summed and divided by the same count of sampled anchors
  (py-faster-rcnn's and torchvision's normalisation, which the paper's lambda = 10 with
  N_reg ~ 2400 approximates).
- The head (`FasterRCNNTrainer`) trains on RoIs sampled by `training.detection.sample_rois`
  from the RPN's training proposals (2000 per image by default) plus the ground truth, 25%
  foreground, background IoU in [0, 0.5) (py-faster-rcnn's end-to-end BG_THRESH_LO = 0: with
  learned proposals, low-overlap boxes are the background to learn). The proposals' coordinates
  are constants for the head's loss (`tf.stop_gradient`): the paper's approximate joint
  training, where the RPN learns only from its own loss.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution

from layers import boxes as box_ops
from training.detection import (
    FOREGROUND_FRACTION,
    FOREGROUND_IOU,
    ROIS_PER_IMAGE,
    FastRCNNTrainer,
    _boxes,
    _check_thresholds,
    _classes,
    _seed,
    fast_rcnn_loss,
    has_area,
    jitter_boxes,
    sample_rois,
    smooth_l1,
)

POSITIVE_IOU = 0.7
NEGATIVE_IOU = 0.3
ANCHORS_PER_IMAGE = 256
POSITIVE_FRACTION = 0.5
ALLOWED_BORDER = 0.0
RPN_SMOOTH_L1_BETA = 1.0 / 9.0
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# py-faster-rcnn's end-to-end BG_THRESH_LO is 0 (the Fast R-CNN default is 0.1).
FASTER_BACKGROUND_IOU = (0.0, 0.5)


# --------------------------------------------------------------------------- anchor targets


def _anchors(value, *, function):
    anchors = tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float32), tf.float32)
    if anchors.shape.rank == 2:
        anchors = anchors[None]
    if anchors.shape.rank not in (None, 3) or anchors.shape[-1] not in (None, 4):
        raise ValueError(f"{function}: anchors must be [K, 4] or [B, K, 4], got shape {tuple(anchors.shape)}")
    return anchors


def match_anchors(anchors, gt_boxes, gt_classes, image_shape, *, positive_iou=POSITIVE_IOU,
                  negative_iou=NEGATIVE_IOU, allowed_border=ALLOWED_BORDER, box_weights=RPN_BOX_WEIGHTS):
    """Each anchor's RPN label and box target (the paper's assignment; see the module).

    Args:
      anchors: `[K, 4]` (the same for every image) or `[B, K, 4]` pixels.
      gt_boxes: `[B, M, 4]` pixels (M may be 0); gt_classes: `[B, M]` int, 0 for padding.
      image_shape: `(height, width)` of the batch, for the border rule.
      positive_iou, negative_iou: 0.7 and 0.3.
      allowed_border: pixels an anchor may reach past the image and still count; None for no
        border rule.
      box_weights: the deltas' weights, (1, 1, 1, 1).

    Returns:
      A dict of
        "labels": `[B, K]` int32, 1 positive, 0 negative, -1 ignored;
        "box_targets": `[B, K, 4]` float32, zeros except for positives;
        "max_iou": `[B, K]` float32, the IoU with the best real ground-truth box (0 if none).

    Example:
      >>> match_anchors([[0, 0, 16, 16], [0, 16, 16, 32]], [[[0, 0, 16, 16]]], [[1]], (16, 32))["labels"]
      [[1, 0]]
    """
    function = "match_anchors"
    if not 0.0 <= float(negative_iou) <= float(positive_iou) <= 1.0:
        raise ValueError(
            f"{function}: need 0 <= negative_iou <= positive_iou <= 1, got {negative_iou!r}, {positive_iou!r}"
        )
    anchors = _anchors(anchors, function=function)
    gt_boxes = _boxes(gt_boxes, name="gt_boxes", function=function)
    gt_classes = _classes(gt_classes, name="gt_classes", function=function)
    batch = tf.shape(gt_boxes)[0]
    anchors = tf.broadcast_to(anchors, tf.stack([batch, tf.shape(anchors)[1], 4]))
    # One padding column more, so that the reductions over M have a column when M is 0.
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
    gt_classes = tf.pad(gt_classes, [[0, 0], [0, 1]])
    gt_real = (gt_classes > 0) & has_area(gt_boxes)  # [B, M + 1]
    if allowed_border is None:
        inside = tf.ones(tf.shape(anchors)[:2], tf.bool)
    else:
        size = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)
        border = float(allowed_border)
        inside = ((anchors[..., 0] >= -border) & (anchors[..., 1] >= -border)
                  & (anchors[..., 2] <= size[0] + border) & (anchors[..., 3] <= size[1] + border))
    inside = inside & has_area(anchors)
    overlaps = box_ops.iou(anchors, gt_boxes)  # [B, K, M + 1]
    counted = inside[:, :, None] & gt_real[:, None, :]
    overlaps = tf.where(counted, overlaps, -1.0)
    max_iou = tf.maximum(tf.reduce_max(overlaps, axis=2), 0.0)
    matched = tf.gather(gt_boxes, tf.argmax(overlaps, axis=2, output_type=tf.int32), batch_dims=1)
    gt_best = tf.reduce_max(overlaps, axis=1, keepdims=True)  # [B, 1, M + 1]
    is_best = tf.reduce_any(counted & (gt_best > 0.0) & tf.equal(overlaps, gt_best), axis=2)
    positive = inside & ((max_iou >= float(positive_iou)) | is_best)
    negative = inside & ~positive & (max_iou < float(negative_iou))
    labels = tf.where(positive, 1, tf.where(negative, 0, -1))
    deltas = box_ops.encode(matched, anchors, weights=box_weights)
    box_targets = tf.where(positive[..., None], deltas, 0.0)
    return {"labels": labels, "box_targets": box_targets, "max_iou": max_iou}


def sample_anchors(labels, *, seed, anchors_per_image=ANCHORS_PER_IMAGE, positive_fraction=POSITIVE_FRACTION):
    """The RPN's mini-batch: `labels` with all but the sampled anchors set to -1.

    Per image, `min(#positive, round(positive_fraction * S))` positives drawn uniformly
    without replacement, then `min(#negative, S - positives taken)` negatives (S =
    `anchors_per_image`). The draw is a function of `seed` alone.

    Args:
      labels: `[B, K]` int, 1 / 0 / -1 (`match_anchors`'s).
      seed: a `[2]` int stateless seed.
      anchors_per_image: S, 256.
      positive_fraction: 0.5.

    Returns:
      `[B, K]` int32 labels, at most S per image not -1.
    """
    function = "sample_anchors"
    if isinstance(anchors_per_image, bool) or not isinstance(anchors_per_image, numbers.Integral) \
            or anchors_per_image < 1:
        raise ValueError(f"{function}: anchors_per_image must be a positive integer, got {anchors_per_image!r}")
    if not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"{function}: positive_fraction must be in [0, 1], got {positive_fraction!r}")
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    keys = tf.random.stateless_uniform(tf.shape(labels), _seed(seed, function=function))  # [0, 1)
    count = int(anchors_per_image)

    def draw(eligible, take):
        """The `take` [B] eligible anchors with the largest keys."""
        masked = tf.where(eligible, keys, -1.0)
        k = tf.minimum(count, tf.shape(labels)[1])
        top = tf.math.top_k(masked, k=k, sorted=True).values  # [B, k]
        take = tf.minimum(take, k)
        threshold = tf.gather(top, tf.maximum(take - 1, 0), batch_dims=1)[:, None]
        return eligible & (masked >= threshold) & (take > 0)[:, None]

    positive, negative = tf.equal(labels, 1), tf.equal(labels, 0)
    most_positive = int(round(float(positive_fraction) * count))
    positives = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), most_positive)
    chosen_positive = draw(positive, positives)
    negatives = count - tf.reduce_sum(tf.cast(chosen_positive, tf.int32), axis=1)
    chosen_negative = draw(negative, negatives)
    return tf.where(chosen_positive, 1, tf.where(chosen_negative, 0, -1))


def rpn_loss(objectness, box_deltas, labels, box_targets, *, beta=RPN_SMOOTH_L1_BETA):
    """The RPN's loss on sampled anchors: `{"rpn_classification", "rpn_box"}` float32 scalars.

    `rpn_classification` is the binary cross-entropy of the objectness logits averaged over
    the sampled anchors of the batch (labels 0 or 1); `rpn_box` is the smooth L1 (`beta`) of
    the positives' deltas, summed and divided by the same count. Both are 0 with no sampled
    anchor.

    Args:
      objectness: `[B, K]` logits.
      box_deltas: `[B, K, 4]`.
      labels: `[B, K]` int, 1 / 0 sampled, -1 not.
      box_targets: `[B, K, 4]` (used where the label is 1).
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


# --------------------------------------------------------------------------- the trainer


def has_rpn(model) -> bool:
    """True for a detector that makes its own proposals (`faster_rcnn_*`: no `rois` input)."""
    names = {layer.name for layer in model.layers}
    return {"rpn_anchors", "proposals", "rpn_objectness", "rpn_box_deltas"} <= names and not (
        isinstance(model.input, dict) and "rois" in model.input
    )


class FasterRCNNTrainer(keras.Model):
    """Wraps a Faster R-CNN detector so that `fit` trains the RPN and the head jointly.

    The detector is `zoo.build("faster_rcnn_resnet50", ...)` (layers `rpn_anchors`,
    `rpn_objectness`, `rpn_box_deltas`, `proposals`, `class_probs`, `box_deltas`). Each step runs
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

    def __init__(self, model, *, rois_per_image=ROIS_PER_IMAGE, foreground_fraction=FOREGROUND_FRACTION,
                 foreground_iou=FOREGROUND_IOU, background_iou=FASTER_BACKGROUND_IOU, jitter_copies=0, jitter=0.1,
                 anchors_per_image=ANCHORS_PER_IMAGE, positive_fraction=POSITIVE_FRACTION, positive_iou=POSITIVE_IOU,
                 negative_iou=NEGATIVE_IOU, allowed_border=ALLOWED_BORDER, rpn_beta=RPN_SMOOTH_L1_BETA, seed=0,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_trainer"), **kwargs)
        if not has_rpn(model):
            raise ValueError(
                f"FasterRCNNTrainer: {model.name} is not a Faster R-CNN detector (layers rpn_anchors, "
                "rpn_objectness, rpn_box_deltas, proposals, and no 'rois' input); train Fast R-CNN "
                "detectors with FastRCNNTrainer"
            )
        self.foreground_iou, self.background_iou = _check_thresholds(
            foreground_iou, background_iou, function="FasterRCNNTrainer"
        )
        if not 0.0 <= float(negative_iou) <= float(positive_iou) <= 1.0:
            raise ValueError(f"FasterRCNNTrainer: need 0 <= negative_iou <= positive_iou <= 1, got "
                             f"{negative_iou!r}, {positive_iou!r}")
        if isinstance(jitter_copies, bool) or not isinstance(jitter_copies, numbers.Integral) or jitter_copies < 0:
            raise ValueError(f"FasterRCNNTrainer: jitter_copies must be an integer >= 0, got {jitter_copies!r}")
        self.model = model
        features = model.get_layer("rpn_anchors").input
        proposals = model.get_layer("proposals").output
        self.rpn = keras.Model(
            model.input,
            [features, model.get_layer("rpn_objectness").output, model.get_layer("rpn_box_deltas").output,
             model.get_layer("rpn_anchors").output, proposals],
            name=f"{model.name}_rpn",
        )
        # The RoI head from the shared C4 map and any RoIs: the same layers as the detector's.
        self.head = keras.Model(
            [features, proposals], [model.get_layer("class_probs").output, model.get_layer("box_deltas").output],
            name=f"{model.name}_head",
        )
        self.box_weights = tuple(model.get_layer("detections").box_weights)
        self.rpn_box_weights = tuple(model.get_layer("proposals").box_weights)
        self.rois_per_image, self.foreground_fraction = int(rois_per_image), float(foreground_fraction)
        self.jitter_copies, self.jitter = int(jitter_copies), float(jitter)
        self.anchors_per_image, self.positive_fraction = int(anchors_per_image), float(positive_fraction)
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.allowed_border = None if allowed_border is None else float(allowed_border)
        self.rpn_beta, self.seed = float(rpn_beta), int(seed)
        self.part_trackers = {
            name: keras.metrics.Mean(name=name) for name in ("rpn_classification", "rpn_box", "classification", "box")
        }
        self.built = True

    def call(self, inputs, training=False):
        if not isinstance(inputs, dict):
            inputs = {"images": inputs}
        return self.model(inputs, training=training)

    _unpack = staticmethod(FastRCNNTrainer._unpack)
    _step_seed = FastRCNNTrainer._step_seed

    def losses_of(self, images, targets, seed, *, training):
        """`(total, parts)`: the joint loss of a batch and its four named parts (see the class)."""
        gt_boxes = tf.cast(targets["boxes"], tf.float32)
        gt_classes = tf.cast(targets["classes"], tf.int32)
        anchor_seed, jitter_seed, roi_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        features, objectness, deltas, anchors, proposals = self.rpn({"images": images}, training=training)
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
        total = tf.add_n(list(parts.values()))
        regularization = self.model.losses
        if regularization:
            total += tf.add_n([tf.cast(loss, tf.float32) for loss in regularization])
        return total, parts

    def _log(self, total, parts, images):
        batch = tf.shape(images)[0]
        self._loss_tracker.update_state(total, sample_weight=batch)
        for name, value in parts.items():
            self.part_trackers[name].update_state(value, sample_weight=batch)
        return self.get_metrics_result()

    def train_step(self, data):
        images, targets = self._unpack(data)
        with tf.GradientTape() as tape:
            total, parts = self.losses_of(images, targets, self._step_seed(0), training=True)
            # As Keras's own train_step: replicas' gradients are summed (see FastRCNNTrainer).
            scaled = self.optimizer.scale_loss(scale_loss_for_distribution(total))
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._log(total, parts, images)

    def test_step(self, data):
        images, targets = self._unpack(data)
        total, parts = self.losses_of(images, targets, self._step_seed(1), training=False)
        return self._log(total, parts, images)

    def batch_norm_forward(self, data):
        """The training-mode forward pass of the RPN and the head, for `training.precise_bn`."""
        images, targets = self._unpack(data)
        return self.losses_of(images, targets, self._step_seed(1), training=True)[0]


__all__ = [
    "ANCHORS_PER_IMAGE",
    "FasterRCNNTrainer",
    "has_rpn",
    "match_anchors",
    "rpn_loss",
    "sample_anchors",
]
