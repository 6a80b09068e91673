"""Fast R-CNN training: RoI targets and sampling, the multi-task loss, the trainer, VOC evaluation.

Paper: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083, section 2.3
("Mini-batch sampling", "Multi-task loss"), and py-faster-rcnn's `roi_data_layer` and
`fast_rcnn/config.py` (FG_THRESH 0.5, BG_THRESH_LO 0.1, BG_THRESH_HI 0.5, FG_FRACTION 0.25).

Shapes: B images, N proposals per image, M ground-truth rows per image (padding rows have class
0), C = N + M (+ padding) candidate RoIs, R sampled RoIs per image, K object classes. Boxes are
`[ymin, xmin, ymax, xmax]` in pixels of the (resized) input image, as everywhere in the zoo.

Names: `class_targets` are 1-based object classes for foreground RoIs, 0 for background and -1
for RoIs that take no part in the loss; `box_targets` are the deltas `layers.boxes.encode`
gives with weights (10, 10, 5, 5) from a RoI to its matched ground-truth box; `valid` marks
the sampled rows that are real RoIs (not padding).

Decisions (where the paper is silent or the data is degenerate):
- A box is real when it has positive area. Ground-truth rows of class 0 (padding) or of zero
  area never match anything; candidate RoIs of zero area (padding rows, degenerate boxes)
  are never sampled. So a zero-area ground-truth box is as if it were absent, never a NaN.
- Background is IoU in [0.1, 0.5) (the paper's; torchvision and detectron2 use [0, 0.5)).
  RoIs below 0.1 are ignored (-1), as the paper's heuristic for hard negatives. An image with
  no real ground truth would then give no RoI at all (every IoU is 0), and never teach the
  background class; here every real RoI of such an image is background instead.
- Sampling (per image, `sample_rois`): up to `round(foreground_fraction * R)` foreground RoIs
  drawn uniformly without replacement, then background RoIs to fill R; when there are too few
  of both, the rest are padding rows (all zeros, `valid` False) that weigh nothing in the loss.
  Ground-truth boxes are candidates (the paper adds them), and the trainer adds jittered copies
  of them, so every object has foreground RoIs whatever the proposals.
- The loss is the mean cross-entropy over the valid sampled RoIs of the batch plus the smooth
  L1 (beta = 1) of the target class's four deltas summed over the foreground RoIs and divided
  by the same count of valid RoIs (the paper's lambda [u >= 1] averaged over the mini-batch,
  detectron2's normalisation); with no valid RoI both parts are 0.
- Data: `training.data.make_dataset(task="detection")` resizes every image to `image_size`,
  either stretched (`resize="stretch"`, each axis by its own ratio) or keeping its aspect ratio
  (`resize="letterbox"`: one factor, the image fitted inside `image_size`, padded at the bottom
  and on the right; `layers.image_resize`); boxes are scaled by the same ratios as the pixels,
  so they stay exact. Its training augmentation flips horizontally (boxes mirrored with the
  pixels), scales by one factor for both axes and crops with padding. The paper keeps the aspect
  ratio (shorter side 600); stretched to a fixed square, a VOC detector sees distorted objects,
  the same in training and evaluation, which letterboxing avoids. Evaluation
  (`detect_source`) maps each detection back to its original image's pixels by undoing the
  resize of the run, and scores it there against the ground truth as annotated.
"""

from __future__ import annotations

import numbers
import sys

import keras
import numpy as np
import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution

from layers import boxes as box_ops
from layers.image_resize import original_scale
from training.data import load_image, make_dataset
from training.detection_eval import coco_evaluate, evaluate_detections, split_batch
from training.tasks import Task, register_task

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = (0.1, 0.5)
ROIS_PER_IMAGE = 64
FOREGROUND_FRACTION = 0.25
# Smooth L1's beta: Fast R-CNN's 1 (torchvision 1/9, detectron2 0, pure L1).
SMOOTH_L1_BETA = 1.0
# The smallest probability the cross-entropy takes the log of (the detector ends in a softmax,
# so there are no logits to use); keras.losses clips at the same epsilon.
PROBABILITY_EPSILON = 1e-7


# --------------------------------------------------------------------------- helpers


def _check_thresholds(foreground_iou, background_iou, *, function):
    try:
        low, high = (float(value) for value in background_iou)
    except (TypeError, ValueError):
        raise ValueError(f"{function}: background_iou must be (low, high), got {background_iou!r}") from None
    if not 0.0 <= low <= high <= float(foreground_iou) <= 1.0:
        raise ValueError(
            f"{function}: need 0 <= background_iou[0] <= background_iou[1] <= foreground_iou <= 1, "
            f"got background_iou={background_iou!r}, foreground_iou={foreground_iou!r}"
        )
    return float(foreground_iou), (low, high)


def _boxes(value, *, name, function):
    boxes = tf.convert_to_tensor(value, dtype_hint=tf.float32)
    if boxes.shape.rank not in (None, 3) or boxes.shape[-1] not in (None, 4):
        raise ValueError(
            f"{function}: {name} must be [B, n, 4] (ymin, xmin, ymax, xmax), got shape {tuple(boxes.shape)}"
        )
    return tf.cast(boxes, tf.float32)


def _classes(value, *, name, function):
    classes = tf.convert_to_tensor(value, dtype_hint=tf.int32)
    if classes.shape.rank not in (None, 2):
        raise ValueError(f"{function}: {name} must be [B, M] class ids, got shape {tuple(classes.shape)}")
    if not classes.dtype.is_integer:
        raise TypeError(f"{function}: {name} must be integer class ids, got {classes.dtype.name}")
    return tf.cast(classes, tf.int32)


def has_area(boxes):
    """`[...]` bool: the box `[..., 4]` has positive height and width (padding rows do not)."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def _seed(seed, *, function):
    seed = tf.convert_to_tensor(seed, dtype_hint=tf.int64)
    if not seed.dtype.is_integer or seed.shape.rank not in (None, 1) or seed.shape[0] not in (None, 2):
        raise ValueError(f"{function}: seed must be a [2] integer tensor (a stateless seed), got {seed!r}")
    return tf.cast(seed, tf.int64)


# --------------------------------------------------------------------------- targets


def match_rois(rois, gt_boxes, gt_classes, *, foreground_iou=FOREGROUND_IOU, background_iou=BACKGROUND_IOU):
    """Each RoI's class target, matched ground-truth box and best IoU (Fast R-CNN's rule).

    A RoI is matched to the real ground-truth box it overlaps most (the first on ties). It is
    foreground, with that box's class, when the IoU is at least `foreground_iou`; background
    (0) when the IoU is in `[background_iou[0], background_iou[1])`; otherwise ignored (-1).
    Padding and zero-area RoIs are ignored. In an image with no real ground truth (all rows
    class 0 or zero-area), every real RoI is background (see the module docstring).

    Args:
      rois: `[B, N, 4]` RoIs in pixels, padding rows all zeros.
      gt_boxes: `[B, M, 4]` ground-truth boxes in pixels (M may be 0).
      gt_classes: `[B, M]` int 1-based classes, 0 in padding rows.
      foreground_iou: the IoU from which a RoI is foreground (0.5).
      background_iou: `(low, high)`, the background IoU range, high excluded ((0.1, 0.5)).

    Returns:
      A dict of
        "class_targets": `[B, N]` int32, the class (1..K), 0 background, -1 ignored;
        "matched_boxes": `[B, N, 4]` float32, the best-overlapping ground-truth box, zeros when
          the RoI overlaps none;
        "max_iou": `[B, N]` float32, the IoU with it (0 when there is none).

    Example:
      >>> match_rois([[[0, 0, 10, 10], [0, 6, 10, 16]]], [[[0, 0, 10, 10]]], [[3]])["class_targets"]
      [[3, 0]]  # IoU 1 and 0.25
    """
    function = "match_rois"
    foreground_iou, (low, high) = _check_thresholds(foreground_iou, background_iou, function=function)
    rois = _boxes(rois, name="rois", function=function)
    gt_boxes = _boxes(gt_boxes, name="gt_boxes", function=function)
    gt_classes = _classes(gt_classes, name="gt_classes", function=function)
    # One padding column more, so that argmax has a column to return when M is 0.
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
    gt_classes = tf.pad(gt_classes, [[0, 0], [0, 1]])
    gt_real = (gt_classes > 0) & has_area(gt_boxes)  # [B, M + 1]
    overlaps = box_ops.iou(rois, gt_boxes)  # [B, N, M + 1]
    overlaps = tf.where(gt_real[:, None, :], overlaps, -tf.ones_like(overlaps))
    best = tf.argmax(overlaps, axis=-1, output_type=tf.int32)
    max_iou = tf.maximum(tf.reduce_max(overlaps, axis=-1), 0.0)
    overlapping = max_iou > 0.0
    matched_boxes = tf.where(overlapping[..., None], tf.gather(gt_boxes, best, batch_dims=1), 0.0)
    matched_classes = tf.gather(gt_classes, best, batch_dims=1)
    roi_real = has_area(rois)
    no_ground_truth = ~tf.reduce_any(gt_real, axis=-1, keepdims=True)  # [B, 1]
    foreground = roi_real & (max_iou >= foreground_iou) & ~no_ground_truth
    background = roi_real & ~foreground & (((max_iou >= low) & (max_iou < high)) | no_ground_truth)
    class_targets = tf.where(foreground, matched_classes, tf.where(background, 0, -1))
    return {"class_targets": class_targets, "matched_boxes": matched_boxes, "max_iou": max_iou}


def sample_rois(
    proposals,
    gt_boxes,
    gt_classes,
    *,
    seed,
    rois_per_image=ROIS_PER_IMAGE,
    foreground_fraction=FOREGROUND_FRACTION,
    foreground_iou=FOREGROUND_IOU,
    background_iou=BACKGROUND_IOU,
    box_weights=box_ops.DEFAULT_WEIGHTS,
):
    """The RoIs of one training mini-batch, with their targets (Fast R-CNN, section 2.3).

    Candidates are the proposals and the ground-truth boxes. Each is matched by `match_rois`;
    per image, `round(foreground_fraction * R)` foreground candidates at most are drawn
    uniformly without replacement, then background ones fill the R rows; rows left over are
    padding (zeros, `valid` False). Sampled foreground rows come first, then background ones.
    The draw is a function of `seed` alone (`tf.random.stateless_uniform`).

    Args:
      proposals: `[B, N, 4]` pixels, padding rows all zeros (N may be 0).
      gt_boxes: `[B, M, 4]` pixels; gt_classes: `[B, M]` int, 1-based, 0 padding.
      seed: a `[2]` int stateless seed.
      rois_per_image: R.
      foreground_fraction: the largest share of foreground rows (0.25).
      foreground_iou, background_iou: as in `match_rois`.
      box_weights: `(wy, wx, wh, ww)` of the box targets, Fast R-CNN's (10, 10, 5, 5).

    Returns:
      A dict of
        "rois": `[B, R, 4]` float32 sampled RoIs, zero rows for padding;
        "class_targets": `[B, R]` int32, 1..K foreground, 0 background (and padding);
        "box_targets": `[B, R, 4]` float32, `encode(matched_box, roi, weights=box_weights)`
          for foreground rows, zeros elsewhere;
        "valid": `[B, R]` bool, False for padding rows.

    Example:
      >>> sample = sample_rois(proposals, targets["boxes"], targets["classes"], seed=[0, step])
    """
    function = "sample_rois"
    if isinstance(rois_per_image, bool) or not isinstance(rois_per_image, numbers.Integral) or rois_per_image < 1:
        raise ValueError(f"{function}: rois_per_image must be a positive integer, got {rois_per_image!r}")
    if not 0.0 <= float(foreground_fraction) <= 1.0:
        raise ValueError(f"{function}: foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
    seed = _seed(seed, function=function)
    proposals = _boxes(proposals, name="proposals", function=function)
    gt_boxes = _boxes(gt_boxes, name="gt_boxes", function=function)
    gt_classes = _classes(gt_classes, name="gt_classes", function=function)
    count = int(rois_per_image)
    most_foreground = int(round(float(foreground_fraction) * count))
    batch = tf.shape(proposals)[0]
    # R padding rows more, so that top_k always has R candidates to choose from.
    candidates = tf.concat([proposals, gt_boxes, tf.zeros([batch, count, 4])], axis=1)
    match = match_rois(candidates, gt_boxes, gt_classes, foreground_iou=foreground_iou, background_iou=background_iou)
    targets = match["class_targets"]
    keys = tf.random.stateless_uniform(tf.shape(targets), seed)  # [B, C] in [0, 1)
    foreground, background = targets > 0, tf.equal(targets, 0)

    def draw(eligible, k):
        """The eligible candidates in random order (first k), and how many there are."""
        _, order = tf.math.top_k(tf.where(eligible, keys, -1.0), k=k, sorted=True)
        return order, tf.reduce_sum(tf.cast(eligible, tf.int32), axis=-1)

    slot = tf.range(count)[None, :]  # [1, R]
    background_order, background_count = draw(background, count)
    if most_foreground:
        foreground_order, foreground_count = draw(foreground, most_foreground)
        taken = tf.minimum(foreground_count, most_foreground)[:, None]  # [B, 1]
        from_foreground = slot < taken
        foreground_pick = tf.gather(foreground_order, tf.minimum(slot, most_foreground - 1)[0], axis=1)
    else:
        taken = tf.zeros([batch, 1], tf.int32)
        from_foreground = tf.zeros_like(slot, tf.bool) & tf.ones([batch, 1], tf.bool)
        foreground_pick = tf.zeros([batch, count], tf.int32)
    background_slot = tf.maximum(slot - taken, 0)  # [B, R]
    background_pick = tf.gather(background_order, background_slot, batch_dims=1)
    valid = from_foreground | (slot - taken < tf.minimum(background_count, count)[:, None])
    index = tf.where(from_foreground, foreground_pick, background_pick)
    rois = tf.where(valid[..., None], tf.gather(candidates, index, batch_dims=1), 0.0)
    class_targets = tf.where(valid, tf.gather(targets, index, batch_dims=1), 0)
    matched = tf.gather(match["matched_boxes"], index, batch_dims=1)
    is_foreground = valid & (class_targets > 0)
    deltas = box_ops.encode(matched, rois, weights=box_weights)
    box_targets = tf.where(is_foreground[..., None], deltas, 0.0)
    return {"rois": rois, "class_targets": class_targets, "box_targets": box_targets, "valid": valid}


def jitter_boxes(gt_boxes, gt_classes, *, seed, copies=2, jitter=0.1, image_size=None):
    """Random copies of the real ground-truth boxes: extra foreground candidates for sampling.

    Each edge moves by a uniform amount in `[-jitter, jitter]` times the box's height (y edges)
    or width (x edges), then the box is clipped to the image. Padding and zero-area rows give
    zero rows (never candidates).

    Args:
      gt_boxes: `[B, M, 4]` pixels; gt_classes: `[B, M]`, 0 for padding.
      seed: a `[2]` int stateless seed.
      copies: how many copies of each box.
      jitter: the largest move of an edge, as a fraction of the box's side.
      image_size: `(height, width)` to clip to, or None for no clipping.

    Returns:
      `[B, copies * M, 4]` float32 boxes.
    """
    function = "jitter_boxes"
    gt_boxes = _boxes(gt_boxes, name="gt_boxes", function=function)
    gt_classes = _classes(gt_classes, name="gt_classes", function=function)
    if not copies:
        return tf.zeros([tf.shape(gt_boxes)[0], 0, 4])
    real = ((gt_classes > 0) & has_area(gt_boxes))[:, None, :, None]  # [B, 1, M, 1]
    sizes = tf.stack(
        [gt_boxes[..., 2] - gt_boxes[..., 0], gt_boxes[..., 3] - gt_boxes[..., 1]] * 2, axis=-1
    )[:, None]  # [B, 1, M, 4] as (h, w, h, w)
    shape = tf.concat([tf.shape(gt_boxes)[:1], [copies], tf.shape(gt_boxes)[1:]], axis=0)
    moves = tf.random.stateless_uniform(shape, _seed(seed, function=function), -jitter, jitter)
    boxes = gt_boxes[:, None] + moves * sizes
    if image_size is not None:
        boxes = box_ops.clip_boxes(boxes, image_size)
    boxes = tf.where(real & has_area(boxes)[..., None], boxes, 0.0)
    return tf.reshape(boxes, [tf.shape(gt_boxes)[0], -1, 4])


# --------------------------------------------------------------------------- loss


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


# --------------------------------------------------------------------------- the trainer


def _batched_proposals(proposals, images):
    """`[N, 4]` (the same windows for every image) or `[B, N, 4]` -> `[B, N, 4]` float32."""
    proposals = tf.cast(tf.convert_to_tensor(proposals), tf.float32)
    if proposals.shape.rank == 2:
        proposals = tf.tile(proposals[None], [tf.shape(images)[0], 1, 1])
    if proposals.shape.rank != 3 or proposals.shape[-1] not in (None, 4):
        raise ValueError(f"proposals(images) must return [N, 4] or [B, N, 4] boxes, got shape {tuple(proposals.shape)}")
    return proposals


class FastRCNNTrainer(keras.Model):
    """Wraps a Fast R-CNN detector so that `fit` trains it with sampled RoIs and the multi-task loss.

    The detector takes `{"images", "rois"}` and has layers named "class_probs" (`[B, N, K + 1]`)
    and "box_deltas" (`[B, N, K, 4]`), like `zoo.build("fast_rcnn_resnet50")`. The trainer
    runs the head model that ends there (the same layers and weights, so no NMS in training).
    Each step: proposals from `proposals(images)`, plus the ground truth and `jitter_copies`
    jittered copies of it, are sampled by `sample_rois` (seeded by `seed` and the optimizer's
    step, so a run is reproducible), the head runs on the `R` sampled RoIs per image and
    `fast_rcnn_loss` plus the detector's regularization losses is minimised. Logged: "loss"
    (the total, weight decay included), "classification" and "box"; validation logs the same
    with a fixed seed. Save `trainer.model`, never the trainer; `trainer(images)` and
    `trainer({"images", "rois"})` are the detector's outputs.

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

    def __init__(self, model, *, proposals, rois_per_image=ROIS_PER_IMAGE, foreground_fraction=FOREGROUND_FRACTION,
                 foreground_iou=FOREGROUND_IOU, background_iou=BACKGROUND_IOU, jitter_copies=2, jitter=0.1,
                 box_loss_weight=1.0, seed=0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_trainer"), **kwargs)
        if not callable(proposals):
            raise TypeError(f"FastRCNNTrainer: proposals must be a function images -> boxes, got {proposals!r}")
        names = {layer.name for layer in model.layers}
        missing = [name for name in ("class_probs", "box_deltas") if name not in names]
        if missing or not isinstance(model.input, dict) or set(model.input) != {"images", "rois"}:
            raise ValueError(
                "FastRCNNTrainer: model must be a Fast R-CNN detector with inputs {'images', 'rois'} and layers "
                f"'class_probs' and 'box_deltas'; {model.name} lacks {missing or 'the inputs'}"
            )
        self.foreground_iou, self.background_iou = _check_thresholds(
            foreground_iou, background_iou, function="FastRCNNTrainer"
        )
        if isinstance(jitter_copies, bool) or not isinstance(jitter_copies, numbers.Integral) or jitter_copies < 0:
            raise ValueError(f"FastRCNNTrainer: jitter_copies must be an integer >= 0, got {jitter_copies!r}")
        self.model = model
        self.head = keras.Model(
            model.input, [model.get_layer("class_probs").output, model.get_layer("box_deltas").output],
            name=f"{model.name}_head",
        )
        postprocess = next((layer for layer in model.layers if hasattr(layer, "box_weights")), None)
        self.box_weights = tuple(postprocess.box_weights) if postprocess is not None else box_ops.DEFAULT_WEIGHTS
        self.proposals = proposals
        self.rois_per_image, self.foreground_fraction = int(rois_per_image), float(foreground_fraction)
        self.jitter_copies, self.jitter = int(jitter_copies), float(jitter)
        self.box_loss_weight, self.seed = float(box_loss_weight), int(seed)
        self.classification_tracker = keras.metrics.Mean(name="classification")
        self.box_tracker = keras.metrics.Mean(name="box")
        # Every layer is the detector's, already built; `fit` need not trace the wrapper to build it.
        self.built = True

    def call(self, inputs, training=False):
        if not isinstance(inputs, dict):
            images = tf.convert_to_tensor(inputs, tf.float32)
            inputs = {"images": images, "rois": _batched_proposals(self.proposals(images), images)}
        return self.model(inputs, training=training)

    @staticmethod
    def _unpack(data):
        # NumPy arrays reach the step as they are under run_eagerly.
        images, targets = data[0], data[1]
        return tf.convert_to_tensor(images, tf.float32), {key: tf.convert_to_tensor(targets[key])
                                                          for key in ("boxes", "classes")}

    def _step_seed(self, salt):
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        step = self.optimizer.iterations if salt == 0 else tf.constant(0, tf.int64)
        # Each replica samples its own RoIs; the step decides the rest.
        return tf.stack([
            tf.constant(self.seed, tf.int64) * 1000 + 100 * salt + tf.cast(replica, tf.int64), tf.cast(step, tf.int64)
        ])

    def sample(self, images, targets, seed):
        """`sample_rois` on `proposals(images)` plus jittered ground truth (see the class)."""
        gt_boxes = tf.cast(targets["boxes"], tf.float32)
        gt_classes = tf.cast(targets["classes"], tf.int32)
        proposals = _batched_proposals(self.proposals(images), images)
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
        class_probs, box_deltas = self.head({"images": images, "rois": sample["rois"]}, training=training)
        losses = fast_rcnn_loss(
            class_probs, box_deltas, sample["class_targets"], sample["box_targets"], sample["valid"],
            box_loss_weight=self.box_loss_weight,
        )
        regularization = self.model.losses
        total = losses["total"] + (tf.add_n([tf.cast(loss, tf.float32) for loss in regularization])
                                   if regularization else 0.0)
        return total, losses

    def _log(self, total, losses, images):
        batch = tf.shape(images)[0]
        self._loss_tracker.update_state(total, sample_weight=batch)
        self.classification_tracker.update_state(losses["classification"], sample_weight=batch)
        self.box_tracker.update_state(losses["box"], sample_weight=batch)
        return self.get_metrics_result()

    def train_step(self, data):
        images, targets = self._unpack(data)
        sample = self.sample(images, targets, self._step_seed(0))
        with tf.GradientTape() as tape:
            total, losses = self._detection_losses(images, sample, training=True)
            # As Keras's own train_step: replicas' gradients are summed, so each replica's loss
            # is divided by their number (weight decay included); mixed precision scales it.
            scaled = self.optimizer.scale_loss(scale_loss_for_distribution(total))
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._log(total, losses, images)

    def test_step(self, data):
        images, targets = self._unpack(data)
        sample = self.sample(images, targets, self._step_seed(1))
        total, losses = self._detection_losses(images, sample, training=False)
        return self._log(total, losses, images)

    def batch_norm_forward(self, data):
        """The training-mode forward pass on sampled RoIs, for `training.precise_bn` (no loss)."""
        images, targets = self._unpack(data)
        sample = self.sample(images, targets, self._step_seed(1))
        return self.head({"images": images, "rois": sample["rois"]}, training=True)


# --------------------------------------------------------------------------- evaluation


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
      `training.detection_eval` takes them.
    """
    num_classes = len(source.class_names)
    outputs = getattr(model, "output", None)
    if not isinstance(outputs, dict) or not {"class_probs", "boxes", "scores", "classes"} <= set(outputs):
        raise ValueError(f"evaluate_detector: {model.name} is not a detector (outputs class_probs, boxes, ...)")
    model_classes = outputs["class_probs"].shape[-1] - 1
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
        inputs = {"images": images}
        if proposals is not None:
            inputs["rois"] = _batched_proposals(proposals(images), images)
        result = model(inputs, training=False)
        return {key: result[key] for key in ("boxes", "scores", "classes", "num_detections")}

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


def takes_rois(model):
    """Whether `model` is a Fast R-CNN detector that takes caller-given `rois` beside its `images`."""
    return isinstance(getattr(model, "input", None), dict) and "rois" in model.input


def _evaluate(model, source, *, batch_size, image_size, resize="stretch", verbose=0, proposals=None, **options):
    if proposals is None and takes_rois(model):
        raise ValueError("detection evaluation needs proposals=images -> boxes (zoo evaluate builds sliding windows)")
    return evaluate_detector(
        model, source, proposals=proposals, image_size=image_size, batch_size=batch_size, verbose=verbose,
        resize=resize, **options
    )


def _wrap(model, *, proposals=None, **options):
    """FastRCNNTrainer for a detector with a `rois` input, FasterRCNNTrainer for one with an RPN."""
    if not takes_rois(model):
        from training.faster_rcnn import FasterRCNNTrainer

        if proposals is not None:
            raise ValueError(f"{model.name} makes its own proposals (an RPN): detection training takes no proposals")
        return FasterRCNNTrainer(model, **options)
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

__all__ = [
    "BACKGROUND_IOU",
    "FOREGROUND_FRACTION",
    "FOREGROUND_IOU",
    "COCO_METRICS",
    "FastRCNNTrainer",
    "ROIS_PER_IMAGE",
    "detect_source",
    "detection_metrics",
    "evaluate_detector",
    "fast_rcnn_loss",
    "has_area",
    "jitter_boxes",
    "match_rois",
    "sample_rois",
    "smooth_l1",
]
