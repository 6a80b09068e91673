"""Detection training targets: Fast R-CNN's RoI targets and sampling, the RPN's anchor targets.

Papers: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083, section 2.3
("Mini-batch sampling"), and py-faster-rcnn's `roi_data_layer` and `fast_rcnn/config.py`
(FG_THRESH 0.5, BG_THRESH_LO 0.1, BG_THRESH_HI 0.5, FG_FRACTION 0.25); Ren et al., "Faster
R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497, section 3.1.2 ("Training RPNs"), with
py-faster-rcnn's `rpn/anchor_target_layer.py`.

Shapes: B images, N proposals per image, M ground-truth rows per image (padding rows have class
0), Q = N + M (+ padding) candidate RoIs, R sampled RoIs per image, P anchors per image. Boxes
are `[ymin, xmin, ymax, xmax]` in pixels of the (resized) input image, as everywhere in the zoo.

Names: `class_targets` are 1-based object classes for foreground RoIs, 0 for background and -1
for RoIs that take no part in the loss; `box_targets` are the deltas `layers.boxes.encode`
gives with weights (10, 10, 5, 5) from a RoI to its matched ground-truth box; `valid` marks
the sampled rows that are real RoIs (not padding). For anchors, `labels` are 1 (object), 0
(background) and -1 (no part in the loss), and their `box_targets` are
`layers.boxes.encode(matched_gt, anchor, weights=(1, 1, 1, 1))`.

RoI decisions (where the paper is silent or the data is degenerate):
- A box is real when it has positive area. Ground-truth rows of class 0 (padding) or of zero
  area never match anything; candidate RoIs of zero area (padding rows, degenerate boxes)
  are never sampled. So a zero-area ground-truth box is as if it were absent, never a NaN.
- Background is IoU in [0.1, 0.5) (the paper's; torchvision and detectron2 use [0, 0.5)).
  RoIs below 0.1 are ignored (-1), as the paper's heuristic for hard negatives. An image with
  no real ground truth would then give no RoI at all (every IoU is 0), and never teach the
  background class; here every real RoI of such an image is background instead. Faster R-CNN's
  head uses [0, 0.5) (`FASTER_BACKGROUND_IOU`, py-faster-rcnn's end-to-end BG_THRESH_LO = 0:
  with learned proposals, low-overlap boxes are the background to learn).
- Sampling (per image, `sample_rois`): up to `round(foreground_fraction * R)` foreground RoIs
  drawn uniformly without replacement, then background RoIs to fill R; when there are too few
  of both, the rest are padding rows (all zeros, `valid` False) that weigh nothing in the loss.
  Ground-truth boxes are candidates (the paper adds them), and `FastRCNNTrainer` adds jittered
  copies of them (`jitter_boxes`), so every object has foreground RoIs whatever the proposals.

Anchor decisions:
- Assignment (`match_anchors`), the paper's: an anchor is positive when its IoU with some real
  ground-truth box is at least 0.7, or when it is (one of, on ties) the anchor with the highest
  IoU of a ground-truth box (that IoU must be above 0); negative when its IoU with every real
  box is below 0.3; otherwise ignored. Positives win over negatives. Its box target is the
  ground-truth box it overlaps most.
- Anchors that cross the image border by more than `allowed_border` pixels (0, the paper's
  "we ignore all cross-boundary anchors") are ignored in training: they are neither positive
  nor negative and no ground truth's best anchor. `allowed_border=None` keeps them all
  (torchvision, detectron2). At test time the RPN scores every anchor and clips the boxes.
- No real ground truth (no rows, class 0, zero-area boxes): every inside anchor is negative;
  zero-area ground truth never matches anything, so it cannot give a NaN.
- Sampling (`sample_anchors`): per image, up to `round(positive_fraction * S)` positives (S =
  256, fraction 0.5) drawn uniformly, then negatives to fill S; the others become -1.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from layers import boxes as box_ops

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = (0.1, 0.5)
# py-faster-rcnn's end-to-end BG_THRESH_LO is 0 (the Fast R-CNN default is 0.1).
FASTER_BACKGROUND_IOU = (0.0, 0.5)
ROIS_PER_IMAGE = 64
FOREGROUND_FRACTION = 0.25
POSITIVE_IOU = 0.7
NEGATIVE_IOU = 0.3
ANCHORS_PER_IMAGE = 256
POSITIVE_FRACTION = 0.5
ALLOWED_BORDER = 0.0
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


# --------------------------------------------------------------------------- helpers


def check_thresholds(foreground_iou, background_iou, *, function):
    """`(foreground_iou, (low, high))` as floats, checked: `0 <= low <= high <= foreground_iou <= 1`."""
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


def _anchors(value, *, function):
    anchors = tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float32), tf.float32)
    if anchors.shape.rank == 2:
        anchors = anchors[None]
    if anchors.shape.rank not in (None, 3) or anchors.shape[-1] not in (None, 4):
        raise ValueError(f"{function}: anchors must be [K, 4] or [B, P, 4], got shape {tuple(anchors.shape)}")
    return anchors


def batched_proposals(proposals, images):
    """`[N, 4]` (the same windows for every image) or `[B, N, 4]` -> `[B, N, 4]` float32."""
    proposals = tf.cast(tf.convert_to_tensor(proposals), tf.float32)
    if proposals.shape.rank == 2:
        proposals = tf.tile(proposals[None], [tf.shape(images)[0], 1, 1])
    if proposals.shape.rank != 3 or proposals.shape[-1] not in (None, 4):
        raise ValueError(f"proposals(images) must return [N, 4] or [B, N, 4] boxes, got shape {tuple(proposals.shape)}")
    return proposals



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
    foreground_iou, (low, high) = check_thresholds(foreground_iou, background_iou, function=function)
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
    keys = tf.random.stateless_uniform(tf.shape(targets), seed)  # [B, Q] in [0, 1)
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


# --------------------------------------------------------------------------- anchor targets


def match_anchors(anchors, gt_boxes, gt_classes, image_shape, *, positive_iou=POSITIVE_IOU,
                  negative_iou=NEGATIVE_IOU, allowed_border=ALLOWED_BORDER, box_weights=RPN_BOX_WEIGHTS):
    """Each anchor's RPN label and box target (the paper's assignment; see the module).

    Args:
      anchors: `[P, 4]` (the same for every image) or `[B, P, 4]` pixels.
      gt_boxes: `[B, M, 4]` pixels (M may be 0); gt_classes: `[B, M]` int, 0 for padding.
      image_shape: `(height, width)` of the batch, for the border rule.
      positive_iou, negative_iou: 0.7 and 0.3.
      allowed_border: pixels an anchor may reach past the image and still count; None for no
        border rule.
      box_weights: the deltas' weights, (1, 1, 1, 1).

    Returns:
      A dict of
        "labels": `[B, P]` int32, 1 positive, 0 negative, -1 ignored;
        "box_targets": `[B, P, 4]` float32, zeros except for positives;
        "max_iou": `[B, P]` float32, the IoU with the best real ground-truth box (0 if none).

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
    overlaps = box_ops.iou(anchors, gt_boxes)  # [B, P, M + 1]
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
      labels: `[B, P]` int, 1 / 0 / -1 (`match_anchors`'s).
      seed: a `[2]` int stateless seed.
      anchors_per_image: S, 256.
      positive_fraction: 0.5.

    Returns:
      `[B, P]` int32 labels, at most S per image not -1.
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


__all__ = [
    "ALLOWED_BORDER",
    "ANCHORS_PER_IMAGE",
    "BACKGROUND_IOU",
    "FASTER_BACKGROUND_IOU",
    "FOREGROUND_FRACTION",
    "FOREGROUND_IOU",
    "NEGATIVE_IOU",
    "POSITIVE_FRACTION",
    "POSITIVE_IOU",
    "ROIS_PER_IMAGE",
    "RPN_BOX_WEIGHTS",
    "batched_proposals",
    "check_thresholds",
    "has_area",
    "jitter_boxes",
    "match_anchors",
    "match_rois",
    "sample_anchors",
    "sample_rois",
]
