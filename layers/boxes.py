"""Box operations: IoU, the Fast R-CNN box parameterisation, clipping, formats and NMS.

Papers: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083 (section 2.3,
the box parameterisation); Ren et al., "Faster R-CNN", NeurIPS 2015,
https://arxiv.org/abs/1506.01497 (equation 2).

Shapes: B images, N and M boxes, K object classes (no background column), D detections kept
per image. `...` is any number of leading dimensions; where two arguments meet they broadcast.

Boxes are `[ymin, xmin, ymax, xmax]` in input-image pixels on a continuous axis: the pixel in
row `i` (0-based) covers `[i, i + 1)`, an image of height H spans `[0, H]`, and a box is
`ymax - ymin` pixels tall, with no "+ 1". The original Caffe code (and the VOC devkit) count
inclusive 1-based pixels and add 1 to every size; that convention is converted once, in
`voc_to_yxyx` / `yxyx_to_voc`, and nowhere else.

Every function is pure TensorFlow, vectorised over all boxes, and runs eagerly and inside
`tf.function`, and compiles with `jit_compile=True`: under XLA, NMS (`padded_nms`,
`batched_nms`) is built from plain ops with static shapes, because TensorFlow's NMS kernels
(CombinedNonMaxSuppression, NonMaxSuppressionV*) have no XLA kernel, and Keras turns XLA on for
`train_step` on a GPU; elsewhere it runs TensorFlow's kernel, the same selection, some fifteen
times faster than the plain ops on a CPU. Shapes are checked when the
function is traced, from static shapes. Lists and NumPy arrays become float32 tensors (float64
NumPy arrays included); tensors keep their floating dtype, and integer ones are cast to float32,
so that IoU and box deltas are never computed in integer arithmetic. float16 and bfloat16 are
computed in float32 (a float16 area overflows past 256 x 256 pixels) and cast back.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

from layers.compat import in_xla_context

DEFAULT_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# detectron2 and torchvision clamp dh and dw (after dividing by the weights) at log(1000 / 16)
# before exp(): a box may grow at most 62.5 times its anchor, so a wild delta early in training
# cannot overflow. Only the upper side is clamped, as there.
MAX_LOG_SCALE = math.log(1000.0 / 16.0)
# encode and decode take sizes below this many pixels as this size, so zero-size (padding) and
# inverted boxes and anchors give finite deltas instead of log(0) and x / 0. It is far below any
# real box, so it never changes one.
SIZE_EPSILON = 1e-8
# iou clamps coordinates to +-2**60 pixels: an area is then at most 2**122 and the sum of two
# at most 2**123, finite in float32, so any finite box (1e30 included) gives a number, never
# inf / inf = NaN. No image comes near that bound, so no real IoU changes.
MAX_COORDINATE = 2.0**60


# --------------------------------------------------------------------------- validation


def _as_boxes(value, *, name, function, layout="[..., 4]", axis="(ymin, xmin, ymax, xmax)", min_rank=1):
    """`value` as a floating tensor whose static shape fits `layout`, or a clear error."""
    tensor = tf.convert_to_tensor(value, dtype_hint=tf.float32)
    if tensor.dtype.is_integer:
        tensor = tf.cast(tensor, tf.float32)
    elif not tensor.dtype.is_floating:
        raise TypeError(f"{function}: {name} must hold pixel coordinates (float or int), got {tensor.dtype.name}")
    shape = tensor.shape
    if shape.rank is not None and (shape.rank < min_rank or shape[-1] not in (None, 4)):
        raise ValueError(f"{function}: {name} must be {layout} {axis}, got shape {tuple(shape)}")
    return tensor


def _same_dtype(first, second, *, names, function):
    if first.dtype != second.dtype:
        raise TypeError(
            f"{function}: {names[0]} and {names[1]} must have the same dtype, "
            f"got {first.dtype.name} and {second.dtype.name}"
        )


def _broadcastable(first, second, *, names, function, what):
    """Raise unless static shapes `first` and `second` broadcast (unknown dims always do)."""
    try:
        tf.broadcast_static_shape(first, second)
    except ValueError:
        raise ValueError(
            f"{function}: {names[0]} and {names[1]} must have broadcastable {what}, "
            f"got {tuple(first)} and {tuple(second)}"
        ) from None


def _box_pair(first, second, *, names, function, broadcast="shapes", **box_options):
    """Two box-like arguments as tensors of one dtype whose shapes broadcast.

    `broadcast="shapes"` checks the whole shapes; "leading dimensions" all but the last two
    (IoU's `[..., N, 4]` against `[..., M, 4]`). `box_options` go to `_as_boxes`, per argument
    as a pair where they differ.
    """
    tensors = []
    for index, (value, name) in enumerate(zip((first, second), names)):
        options = {key: (option[index] if isinstance(option, tuple) else option) for key, option in box_options.items()}
        tensors.append(_as_boxes(value, name=name, function=function, **options))
    first, second = tensors
    _same_dtype(first, second, names=names, function=function)
    if broadcast == "shapes":
        _broadcastable(first.shape, second.shape, names=names, function=function, what="shapes")
    else:
        _broadcastable(first.shape[:-2], second.shape[:-2], names=names, function=function, what=broadcast)
    return first, second


def _check_weights(weights, *, function):
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(w) and w > 0 for w in values):
        raise ValueError(f"{function}: weights must be four positive numbers (wy, wx, wh, ww), got {weights!r}")
    return values


def _compute_dtype(dtype):
    # Half precision cannot hold areas or pixel products of real images; compute in float32.
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _coordinates(boxes):
    """`ymin, xmin, ymax, xmax`, each `[...]`, from `[..., 4]` (any static last dimension)."""
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


# --------------------------------------------------------------------------- IoU


def iou(boxes1, boxes2):
    """Intersection over union of every box in `boxes1` with every box in `boxes2`.

    Areas are continuous, `(ymax - ymin) * (xmax - xmin)`. A zero-area or inverted
    (`ymax < ymin` or `xmax < xmin`) box has area 0 and IoU 0 with everything, itself included,
    never NaN.

    Args:
      boxes1: `[..., N, 4]` boxes `[ymin, xmin, ymax, xmax]` in pixels.
      boxes2: `[..., M, 4]`, same dtype; the leading dimensions broadcast with `boxes1`'s.

    Returns:
      `[..., N, M]` IoU in [0, 1], in the boxes' dtype.

    Example:
      >>> iou([[0.0, 0.0, 10.0, 10.0]], [[0.0, 5.0, 10.0, 15.0]])  # [[1/3]]
    """
    boxes1, boxes2 = _box_pair(
        boxes1, boxes2, names=("boxes1", "boxes2"), function="iou", broadcast="leading dimensions",
        layout=("[..., N, 4]", "[..., M, 4]"), min_rank=2,
    )
    dtype = boxes1.dtype
    compute = _compute_dtype(dtype)
    boxes1 = tf.clip_by_value(tf.cast(boxes1, compute), -MAX_COORDINATE, MAX_COORDINATE)
    boxes2 = tf.clip_by_value(tf.cast(boxes2, compute), -MAX_COORDINATE, MAX_COORDINATE)
    ymin1, xmin1, ymax1, xmax1 = _coordinates(boxes1[..., :, None, :])  # [..., N, 1]
    ymin2, xmin2, ymax2, xmax2 = _coordinates(boxes2[..., None, :, :])  # [..., 1, M]
    area1 = tf.nn.relu(ymax1 - ymin1) * tf.nn.relu(xmax1 - xmin1)
    area2 = tf.nn.relu(ymax2 - ymin2) * tf.nn.relu(xmax2 - xmin2)
    # An inverted box has a negative extent, and so does its overlap with anything: relu -> 0.
    overlap_h = tf.nn.relu(tf.minimum(ymax1, ymax2) - tf.maximum(ymin1, ymin2))
    overlap_w = tf.nn.relu(tf.minimum(xmax1, xmax2) - tf.maximum(xmin1, xmin2))
    intersection = overlap_h * overlap_w
    union = area1 + area2 - intersection
    # The union is 0 only when both boxes are empty; the safe denominator keeps the gradient of
    # the unused branch finite as well.
    nonempty = union > 0
    ratio = tf.where(nonempty, intersection / tf.where(nonempty, union, tf.ones_like(union)), tf.zeros_like(union))
    # Rounding can put the ratio an ulp above 1 for near-identical boxes.
    return tf.cast(tf.minimum(ratio, 1.0), dtype)


# --------------------------------------------------------------------------- box deltas


def _centres_and_sizes(boxes):
    """`cy, cx, h, w`, each `[...]`; sizes floored at SIZE_EPSILON (see there)."""
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    height, width = ymax - ymin, xmax - xmin
    centre_y, centre_x = ymin + 0.5 * height, xmin + 0.5 * width
    return centre_y, centre_x, tf.maximum(height, SIZE_EPSILON), tf.maximum(width, SIZE_EPSILON)


def encode(boxes, anchors, *, weights=DEFAULT_WEIGHTS):
    """Box deltas `(dy, dx, dh, dw)` that take `anchors` to `boxes` (Fast R-CNN, eq. 2).

    With centres `(y, x)`, sizes `(h, w)` of a box and `(ya, xa)`, `(ha, wa)` of its anchor:
    `dy = wy * (y - ya) / ha`, `dx = wx * (x - xa) / wa`, `dh = wh * log(h / ha)`,
    `dw = ww * log(w / wa)`. Sizes below SIZE_EPSILON pixels count as SIZE_EPSILON, so zero-size
    and inverted boxes or anchors give finite deltas. `decode(encode(b, a), a) == b` up to
    rounding for every box at most 62.5 times its anchor's size (decode's clamp).

    Args:
      boxes: `[..., 4]` target boxes `[ymin, xmin, ymax, xmax]` in pixels.
      anchors: `[..., 4]` anchors or proposals, same dtype; broadcasts with `boxes` (for
        class-specific targets, pass `boxes [B, N, K, 4]` and `anchors [B, N, 1, 4]`).
      weights: `(wy, wx, wh, ww)`; (10, 10, 5, 5) is the Fast R-CNN head's (torchvision,
        detectron2); RPNs use (1, 1, 1, 1).

    Returns:
      `[..., 4]` deltas in the boxes' dtype.

    Example:
      >>> encode([[0.0, 0.0, 20.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]])  # [[5, 0, 5 log 2, 0]]
    """
    weights = _check_weights(weights, function="encode")
    boxes, anchors = _box_pair(boxes, anchors, names=("boxes", "anchors"), function="encode")
    dtype = boxes.dtype
    compute = _compute_dtype(dtype)
    weight_y, weight_x, weight_h, weight_w = weights
    centre_y, centre_x, height, width = _centres_and_sizes(tf.cast(boxes, compute))
    anchor_y, anchor_x, anchor_h, anchor_w = _centres_and_sizes(tf.cast(anchors, compute))
    deltas = tf.stack(
        [
            weight_y * (centre_y - anchor_y) / anchor_h,
            weight_x * (centre_x - anchor_x) / anchor_w,
            weight_h * tf.math.log(height / anchor_h),
            weight_w * tf.math.log(width / anchor_w),
        ],
        axis=-1,
    )
    return tf.cast(deltas, dtype)


def decode(deltas, anchors, *, weights=DEFAULT_WEIGHTS):
    """Boxes from deltas `(dy, dx, dh, dw)` relative to `anchors`; the inverse of `encode`.

    `y = ya + ha * dy / wy`, `h = ha * exp(min(dh / wh, log(1000 / 16)))`, and the same for x
    and w. The clamp is detectron2's and torchvision's `scale_clamp` / `bbox_xform_clip`: it
    keeps exp() finite for any delta a young network produces. Anchor sizes below SIZE_EPSILON
    count as SIZE_EPSILON, as in `encode`, so a zero-size (padding) anchor decodes to a box of
    at most 62.5 * SIZE_EPSILON pixels around its centre, not NaN. The boxes are not clipped to
    the image; see `clip_boxes`.

    Args:
      deltas: `[..., 4]` deltas `(dy, dx, dh, dw)`.
      anchors: `[..., 4]` anchors or proposals in pixels, same dtype; broadcasts with `deltas`
        (class-specific deltas: `[B, N, K, 4]` with anchors `[B, N, 1, 4]`).
      weights: `(wy, wx, wh, ww)`, the ones given to `encode`.

    Returns:
      `[..., 4]` boxes `[ymin, xmin, ymax, xmax]` in pixels, in the deltas' dtype.

    Example:
      >>> decode([[5.0, 0.0, 3.4657359, 0.0]], [[0.0, 0.0, 10.0, 10.0]])  # [[0, 0, 20, 10]]
    """
    weights = _check_weights(weights, function="decode")
    deltas, anchors = _box_pair(
        deltas, anchors, names=("deltas", "anchors"), function="decode",
        axis=("(dy, dx, dh, dw)", "(ymin, xmin, ymax, xmax)"),
    )
    dtype = deltas.dtype
    compute = _compute_dtype(dtype)
    weight_y, weight_x, weight_h, weight_w = weights
    delta_y, delta_x, delta_h, delta_w = _coordinates(tf.cast(deltas, compute))
    anchor_y, anchor_x, anchor_h, anchor_w = _centres_and_sizes(tf.cast(anchors, compute))
    centre_y = anchor_y + (delta_y / weight_y) * anchor_h
    centre_x = anchor_x + (delta_x / weight_x) * anchor_w
    half_h = 0.5 * anchor_h * tf.exp(tf.minimum(delta_h / weight_h, MAX_LOG_SCALE))
    half_w = 0.5 * anchor_w * tf.exp(tf.minimum(delta_w / weight_w, MAX_LOG_SCALE))
    boxes = tf.stack([centre_y - half_h, centre_x - half_w, centre_y + half_h, centre_x + half_w], axis=-1)
    return tf.cast(boxes, dtype)


# --------------------------------------------------------------------------- clipping


def _image_limits(image_shape, boxes, *, function):
    """`[h, w, h, w]` shaped to broadcast with `boxes` (`[B, 1, ..., 1, 4]` for per-image shapes)."""
    if isinstance(image_shape, (tuple, list)) and len(image_shape) != 2:
        raise ValueError(f"{function}: image_shape must be (height, width) or [B, 2], got {image_shape!r}")
    sizes = tf.convert_to_tensor(image_shape)
    if not (sizes.dtype.is_integer or sizes.dtype.is_floating):
        raise TypeError(f"{function}: image_shape must be numbers (height, width), got {sizes.dtype.name}")
    rank = sizes.shape.rank
    if rank not in (1, 2) or sizes.shape[-1] not in (None, 2):
        raise ValueError(f"{function}: image_shape must be (height, width) or [B, 2], got shape {tuple(sizes.shape)}")
    sizes = tf.cast(sizes, boxes.dtype)
    limits = tf.concat([sizes, sizes], axis=-1)
    if rank == 1:
        return limits
    if boxes.shape.rank is None or boxes.shape.rank < 2:
        raise ValueError(
            f"{function}: a per-image image_shape [B, 2] needs boxes [B, ..., 4], got shape {tuple(boxes.shape)}"
        )
    if not boxes.shape[:1].is_compatible_with(sizes.shape[:1]):
        raise ValueError(
            f"{function}: image_shape {tuple(sizes.shape)} and boxes {tuple(boxes.shape)} "
            "must have the same batch size"
        )
    return tf.reshape(limits, [-1] + [1] * (boxes.shape.rank - 2) + [4])


def _clip(boxes, image_shape, *, function):
    limits = _image_limits(image_shape, boxes, function=function)
    return tf.minimum(tf.maximum(boxes, tf.zeros_like(boxes)), limits)


def clip_boxes(boxes, image_shape):
    """Boxes clipped to the image, `[0, height] x [0, width]` (continuous pixel edges).

    Args:
      boxes: `[..., 4]` boxes `[ymin, xmin, ymax, xmax]` in pixels.
      image_shape: `(height, width)` as Python numbers or a `[2]` tensor, or per image a
        `[B, 2]` tensor for boxes `[B, ..., 4]`.

    Returns:
      `[..., 4]` clipped boxes, same dtype. A box wholly outside becomes a zero-area box on the
      border.

    Example:
      >>> clip_boxes([[-5.0, 2.0, 40.0, 70.0]], (32, 64))  # [[0, 2, 32, 64]]
    """
    boxes = _as_boxes(boxes, name="boxes", function="clip_boxes")
    return _clip(boxes, image_shape, function="clip_boxes")


# --------------------------------------------------------------------------- formats


def yxyx_to_xyxy(boxes):
    """`[..., 4]` `[ymin, xmin, ymax, xmax]` -> `[xmin, ymin, xmax, ymax]` (torchvision's order)."""
    boxes = _as_boxes(boxes, name="boxes", function="yxyx_to_xyxy")
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return tf.stack([xmin, ymin, xmax, ymax], axis=-1)


def xyxy_to_yxyx(boxes):
    """`[..., 4]` `[xmin, ymin, xmax, ymax]` -> `[ymin, xmin, ymax, xmax]`."""
    boxes = _as_boxes(boxes, name="boxes", function="xyxy_to_yxyx", axis="(xmin, ymin, xmax, ymax)")
    xmin, ymin, xmax, ymax = _coordinates(boxes)
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def yxyx_to_xywh(boxes):
    """`[..., 4]` `[ymin, xmin, ymax, xmax]` -> COCO's `[x, y, width, height]` (top-left corner)."""
    boxes = _as_boxes(boxes, name="boxes", function="yxyx_to_xywh")
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return tf.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=-1)


def xywh_to_yxyx(boxes):
    """`[..., 4]` COCO's `[x, y, width, height]` (top-left corner) -> `[ymin, xmin, ymax, xmax]`."""
    boxes = _as_boxes(boxes, name="boxes", function="xywh_to_yxyx", axis="(x, y, width, height)")
    x, y, width, height = _coordinates(boxes)
    return tf.stack([y, x, y + height, x + width], axis=-1)


def voc_to_yxyx(boxes_xyxy_1based):
    """PASCAL VOC boxes -> continuous `[ymin, xmin, ymax, xmax]` pixels.

    VOC annotations count pixels from 1 and include both end pixels: `(xmin, ymin, xmax, ymax)
    = (1, 1, 10, 10)` is the top-left 10 x 10 pixels. Pixel `i` (1-based) covers the continuous
    interval `[i - 1, i]`, so the box covers `[xmin - 1, xmax]`: `[ymin - 1, xmin - 1, ymax, xmax]`.
    Its continuous size `xmax - (xmin - 1)` is the devkit's `xmax - xmin + 1`, so the IoU of
    converted boxes equals the VOC devkit's IoU of the original ones, and no other code needs a
    "+ 1" (this pair of functions is the only place that knows the convention).

    Args:
      boxes_xyxy_1based: `[..., 4]` VOC `(xmin, ymin, xmax, ymax)`, 1-based and inclusive
        (integers from the XML are cast to float32).

    Returns:
      `[..., 4]` boxes `[ymin, xmin, ymax, xmax]` in continuous pixels.

    Example:
      >>> voc_to_yxyx([[48, 240, 195, 371]])  # [[239, 47, 371, 195]]
    """
    boxes = _as_boxes(
        boxes_xyxy_1based, name="boxes_xyxy_1based", function="voc_to_yxyx", axis="(xmin, ymin, xmax, ymax), 1-based"
    )
    xmin, ymin, xmax, ymax = _coordinates(boxes)
    return tf.stack([ymin - 1.0, xmin - 1.0, ymax, xmax], axis=-1)


def yxyx_to_voc(boxes):
    """Continuous `[ymin, xmin, ymax, xmax]` pixels -> VOC `(xmin, ymin, xmax, ymax)`, 1-based.

    The exact inverse of `voc_to_yxyx` (see there): `(xmin + 1, ymin + 1, xmax, ymax)`. The
    result is not rounded; VOC files and the devkit's detection files hold what the writer makes
    of it, and the devkit's IoU on these values equals the continuous IoU.

    Args:
      boxes: `[..., 4]` boxes `[ymin, xmin, ymax, xmax]` in pixels.

    Returns:
      `[..., 4]` VOC `(xmin, ymin, xmax, ymax)`, 1-based and inclusive.
    """
    boxes = _as_boxes(boxes, name="boxes", function="yxyx_to_voc")
    ymin, xmin, ymax, xmax = _coordinates(boxes)
    return tf.stack([xmin + 1.0, ymin + 1.0, xmax, ymax], axis=-1)


# --------------------------------------------------------------------------- NMS


def _positive_int(value, *, name, function):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{function}: {name} must be a positive integer, got {value!r}")
    return int(value)


# Boxes per block of `padded_nms`: its IoU matrices are `[B, T, T]`, so memory stays bounded for
# any N (the RPN's 12000 candidates). 512 is `tf.image.non_max_suppression_padded`'s tile.
NMS_TILE_SIZE = 512


def _nms_overlaps(boxes1, boxes2):
    """`[B, N, 4]`, `[B, M, 4]` canonical boxes (ymin <= ymax) -> `[B, N, M]` IoU, as TF's NMS kernels.

    The same float32 arithmetic as TensorFlow's `CombinedNonMaxSuppression` (`IOU` in
    non_max_suppression_op.cc): a box without area overlaps nothing, and the ratio is not
    clamped, so that `iou > iou_threshold` decides every pair as the kernel does.
    """
    ymin1, xmin1, ymax1, xmax1 = _coordinates(boxes1[:, :, None, :])
    ymin2, xmin2, ymax2, xmax2 = _coordinates(boxes2[:, None, :, :])
    area1 = (ymax1 - ymin1) * (xmax1 - xmin1)
    area2 = (ymax2 - ymin2) * (xmax2 - xmin2)
    overlap_h = tf.maximum(tf.minimum(ymax1, ymax2) - tf.maximum(ymin1, ymin2), 0.0)
    overlap_w = tf.maximum(tf.minimum(xmax1, xmax2) - tf.maximum(xmin1, xmin2), 0.0)
    intersection = overlap_h * overlap_w
    nonempty = (area1 > 0) & (area2 > 0)
    union = tf.where(nonempty, area1 + area2 - intersection, tf.ones_like(intersection))
    return tf.where(nonempty, intersection / union, tf.zeros_like(intersection))


def padded_nms(boxes, scores, *, max_output_size, iou_threshold=0.5, score_threshold=float("-inf"),
               tile_size=NMS_TILE_SIZE):
    """Greedy non-maximum suppression of each row of a batch, padded to a fixed output size.

    The same selection as `tf.image.non_max_suppression` (and each class of
    `tf.image.combined_non_max_suppression`): boxes scoring above `score_threshold` (strictly)
    are visited by descending score, and one is kept if its IoU with every box kept before it is
    at most `iou_threshold`, until `max_output_size` are kept. Corners may come in either order
    (each box is taken as its canonical `[min, min, max, max]`), and a box without area
    suppresses nothing. Equal scores are visited in index order.

    Outside XLA (eagerly, in a plain `tf.function`, a SavedModel exported without
    `jit_compile`) each row goes through TensorFlow's own kernel (NonMaxSuppressionV5), the same
    selection: 4 rows of 1,024 boxes to 128 take 0.6 ms there against 9.5 ms for the plain ops,
    whose fixed-point loops run as separate small ops (float64 boxes, which the kernel does not
    take, keep the plain ops). Under XLA (`layers.compat.in_xla_context`) it is built from plain
    ops with static shapes, as TensorFlow's NMS ops have no XLA kernel: the sorted boxes are cut
    into blocks of `tile_size`; each block is first
    suppressed by the kept boxes of the blocks before it (`[B, T, T]` IoU each), then by itself,
    iterating `kept = alive & ~any(kept_i & iou_ij > t for i < j)` to its fixed point, which is
    the greedy result (box j is right once every box before it is). The loop stops after the
    last block with a candidate, or once every row has `max_output_size` boxes. Not
    differentiable, like TensorFlow's NMS: gradients stop at its inputs.

    Args:
      boxes: `[B, N, 4]` boxes `[ymin, xmin, ymax, xmax]` (N may be 0).
      scores: `[B, N]` scores; NaN scores are never kept.
      max_output_size: Python int D, boxes kept per row at most.
      iou_threshold: suppress a box whose IoU with a kept one is above this (a float or a
        scalar tensor).
      score_threshold: keep only boxes scoring above this (a float or a scalar tensor).
      tile_size: the block size T (a smaller one is used when N is smaller).

    Returns:
      A dict of
        "indices": `[B, D]` int32 indices into N of the kept boxes by descending score, -1 in
          padding rows;
        "boxes": `[B, D, 4]` the kept boxes as given, in `boxes`' dtype, zeros in padding rows;
        "scores": `[B, D]` their scores, 0 in padding rows;
        "num_valid": `[B]` int32, the number of rows that are not padding.

    Example:
      >>> kept = padded_nms(proposals, objectness, max_output_size=300, iou_threshold=0.7)
    """
    function = "padded_nms"
    count = _positive_int(max_output_size, name="max_output_size", function=function)
    tile = _positive_int(tile_size, name="tile_size", function=function)
    boxes = tf.stop_gradient(_as_boxes(boxes, name="boxes", function=function, layout="[B, N, 4]", min_rank=3))
    scores = tf.stop_gradient(tf.convert_to_tensor(scores, dtype_hint=tf.float32))
    if boxes.shape.rank not in (None, 3):
        raise ValueError(
            f"{function}: boxes must be [B, N, 4] (ymin, xmin, ymax, xmax), got shape {tuple(boxes.shape)}"
        )
    if scores.shape.rank not in (None, 2) or not scores.dtype.is_floating:
        raise ValueError(f"{function}: scores must be [B, N] floats, got {scores.dtype.name} {tuple(scores.shape)}")
    if boxes.shape.rank is not None and not boxes.shape[:2].is_compatible_with(scores.shape):
        raise ValueError(
            f"{function}: boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)} must agree on [B, N]"
        )
    static_n = scores.shape[1] if scores.shape.rank is not None else None
    if static_n is not None:
        # One block when everything fits: no IoU against padding rows (a multiple of 8 for SIMD).
        tile = min(tile, max(8, -(-max(static_n, count) // 8) * 8))
    compute = _compute_dtype(boxes.dtype)
    if compute == tf.float32 and not in_xla_context():
        return _kernel_nms(boxes, scores, count, iou_threshold, score_threshold)
    iou_threshold = tf.cast(iou_threshold, compute)
    compute_scores = tf.cast(scores, compute)
    batch, n = tf.shape(scores)[0], tf.shape(scores)[1]

    candidate = compute_scores > tf.cast(score_threshold, compute)
    neg_inf = tf.constant(float("-inf"), compute)
    # top_k is stable: equal scores keep their index order.
    order = tf.math.top_k(tf.where(candidate, compute_scores, neg_inf), k=n, sorted=True).indices  # [B, N]
    if static_n is not None:  # Python ints keep the static shapes through the loops
        blocks = max(-(-max(static_n, count) // tile), 1)
    else:
        blocks = tf.maximum((tf.maximum(n, count) + tile - 1) // tile, 1)
    padded = blocks * tile
    padding = [[0, 0], [0, padded - n]]
    order = tf.pad(order, padding, constant_values=-1)  # [B, P]
    safe_order = tf.maximum(order, 0)
    real = order >= 0
    # Gathered from the padded rows, so that N = 0 has a row for the padding indices to read.
    sorted_boxes = tf.where(real[..., None], tf.gather(tf.pad(boxes, padding + [[0, 0]]), safe_order, batch_dims=1),
                            tf.zeros([], boxes.dtype))
    alive = real & tf.gather(tf.pad(candidate, padding), safe_order, batch_dims=1)
    compute_boxes = tf.cast(sorted_boxes, compute)
    ymin, xmin, ymax, xmax = _coordinates(compute_boxes)
    canonical = tf.stack([tf.minimum(ymin, ymax), tf.minimum(xmin, xmax), tf.maximum(ymin, ymax),
                          tf.maximum(xmin, xmax)], axis=-1)
    canonical = tf.reshape(canonical, [batch, blocks, tile, 4])
    alive = tf.reshape(alive, [batch, blocks, tile])
    # Candidates sort first, so the blocks past the last candidate hold none.
    last_block = (tf.reduce_max(tf.reduce_sum(tf.cast(alive, tf.int32), axis=[1, 2])) + tile - 1) // tile
    later = tf.range(tile)[:, None] < tf.range(tile)[None, :]  # [T, T]: i visited before j

    def suppress_block(block, kept, taken):
        block_boxes = tf.gather(canonical, block, axis=1)  # [B, T, 4]
        block_alive = tf.gather(alive, block, axis=1)

        def by_earlier_block(earlier, block_alive):
            overlaps = _nms_overlaps(tf.gather(canonical, earlier, axis=1), block_boxes)  # [B, T, T]
            hit = (overlaps > iou_threshold) & tf.gather(kept, earlier, axis=1)[:, :, None]
            return earlier + 1, block_alive & ~tf.reduce_any(hit, axis=1)

        _, block_alive = tf.while_loop(
            lambda earlier, _: earlier < block, by_earlier_block, [tf.constant(0), block_alive],
        )
        suppresses = (_nms_overlaps(block_boxes, block_boxes) > iou_threshold) & later  # [B, T, T]

        def settle(step, block_kept, _):
            update = block_alive & ~tf.reduce_any(suppresses & block_kept[:, :, None], axis=1)
            return step + 1, update, tf.reduce_any(tf.not_equal(update, block_kept))

        _, block_kept, _ = tf.while_loop(
            lambda step, _, changed: changed & (step < tile), settle, [tf.constant(0), block_alive, tf.constant(True)],
        )
        # At most `count` per row: the greedy pass stops there.
        rank = tf.cumsum(tf.cast(block_kept, tf.int32), axis=1)
        block_kept &= taken[:, None] + rank <= count
        taken += tf.reduce_sum(tf.cast(block_kept, tf.int32), axis=1)
        updated = kept | (tf.equal(tf.range(blocks), block)[None, :, None] & block_kept[:, None, :])
        updated.set_shape(kept.shape)
        return block + 1, updated, taken

    _, kept, taken = tf.while_loop(
        lambda block, _, taken: (block < last_block) & tf.reduce_any(taken < count),
        suppress_block,
        [tf.constant(0), tf.zeros([batch, blocks, tile], tf.bool), tf.zeros([batch], tf.int32)],
    )
    # The kept boxes, in visiting order (descending score): the D smallest kept positions.
    position = tf.cast(padded - tf.range(padded), compute)
    first = tf.math.top_k(tf.where(tf.reshape(kept, [batch, padded]), position, 0.0), k=count).indices  # [B, D]
    return _kept_rows(boxes, scores, tf.gather(order, first, batch_dims=1), taken, count)


def _kernel_nms(boxes, scores, count, iou_threshold, score_threshold):
    """`padded_nms` by TensorFlow's NonMaxSuppressionV5, one row at a time (float32)."""
    iou_threshold = tf.cast(iou_threshold, tf.float32)
    score_threshold = tf.cast(score_threshold, tf.float32)

    def row(inputs):
        row_boxes, row_scores = inputs
        indices, _, valid = tf.raw_ops.NonMaxSuppressionV5(
            boxes=row_boxes, scores=row_scores, max_output_size=count, iou_threshold=iou_threshold,
            score_threshold=score_threshold, soft_nms_sigma=tf.constant(0.0), pad_to_max_output_size=True,
        )
        return indices, valid

    indices, taken = tf.map_fn(
        row, (tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)),
        fn_output_signature=(tf.TensorSpec([count], tf.int32), tf.TensorSpec([], tf.int32)),
    )
    return _kept_rows(boxes, scores, indices, taken, count)


def _kept_rows(boxes, scores, indices, taken, count):
    """`padded_nms`'s result from the kept `indices` `[B, D]` into N (the first `taken` of each
    row; whatever follows is padding): the boxes and scores as given, zeros and -1 in padding."""
    valid = tf.range(count)[None, :] < taken[:, None]
    safe = tf.where(valid, indices, 0)
    # Gathered from one padding row more, so that N = 0 has a row for the padding to read.
    padded_boxes, padded_scores = tf.pad(boxes, [[0, 0], [0, 1], [0, 0]]), tf.pad(scores, [[0, 0], [0, 1]])
    return {
        "indices": tf.where(valid, indices, -1),
        "boxes": tf.where(valid[..., None], tf.gather(padded_boxes, safe, batch_dims=1), tf.zeros([], boxes.dtype)),
        "scores": tf.where(valid, tf.gather(padded_scores, safe, batch_dims=1), tf.zeros([], scores.dtype)),
        "num_valid": taken,
    }


def batched_nms(
    boxes,
    scores,
    *,
    max_output_size_per_class,
    max_total_size,
    iou_threshold=0.5,
    score_threshold=0.05,
    clip_boxes=False,
    image_shape=None,
):
    """Per-class non-maximum suppression over a batch, in the graph (SavedModel-exportable).

    The selection of `tf.image.combined_non_max_suppression` (`pad_per_class=False`) in the zoo's
    conventions: pixel boxes in and out, 1-based class ids, padding rows of class 0, built on
    `padded_nms` so that it compiles with XLA (the TensorFlow op has no XLA kernel). Within each class, a box
    is kept if its score is above `score_threshold` (strictly) and its IoU with every
    higher-scoring kept box of the class is at most `iou_threshold`; at most
    `max_output_size_per_class` boxes per class, then the best `max_total_size` over all classes,
    sorted by score. TensorFlow's own `clip_boxes` clips to [0, 1] (normalised coordinates), so
    it is always off here; `clip_boxes=True` clips to `image_shape` in pixels before the
    suppression, as torchvision and detectron2 do. It compiles under `jit_compile=True`; the
    classes run as one batch of `B * K` padded NMS problems.

    Args:
      boxes: `[B, N, K, 4]` class-specific boxes or `[B, N, 1, 4]` boxes shared by all classes,
        `[ymin, xmin, ymax, xmax]` in pixels.
      scores: `[B, N, K]` per-class scores of the object classes (no background column).
      max_output_size_per_class: Python int, boxes kept per class and image at most.
      max_total_size: Python int D, detections per image (the output length).
      iou_threshold: suppress boxes whose IoU with a kept box is above this.
      score_threshold: drop boxes whose score is not above this.
      clip_boxes: clip the boxes to `image_shape` before the suppression.
      image_shape: `(height, width)` or `[B, 2]`, needed when `clip_boxes` is True.

    Returns:
      A dict of
        "boxes": `[B, D, 4]` float32 pixels, zeros in padding rows;
        "scores": `[B, D]` float32, descending, 0 in padding rows;
        "classes": `[B, D]` int32 class ids, 1-based (score column k is class k + 1), 0 in
          padding rows;
        "num_detections": `[B]` int32, the number of rows that are not padding.

    Example:
      >>> detections = batched_nms(boxes, scores, max_output_size_per_class=100, max_total_size=100)
    """
    function = "batched_nms"
    per_class = _positive_int(max_output_size_per_class, name="max_output_size_per_class", function=function)
    total = _positive_int(max_total_size, name="max_total_size", function=function)
    # Tensors pass unchecked, so that a serving signature can take the thresholds as inputs.
    if isinstance(iou_threshold, numbers.Real) and not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"{function}: iou_threshold must be in [0, 1], got {iou_threshold!r}")
    if isinstance(score_threshold, numbers.Real) and math.isnan(score_threshold):
        raise ValueError(f"{function}: score_threshold must be a number, got {score_threshold!r}")
    boxes = _as_boxes(boxes, name="boxes", function=function, layout="[B, N, K or 1, 4]", min_rank=4)
    scores = tf.convert_to_tensor(scores, dtype_hint=tf.float32)
    if not scores.dtype.is_floating:
        raise TypeError(f"{function}: scores must be floating point, got {scores.dtype.name}")
    if boxes.shape.rank not in (None, 4):
        raise ValueError(
            f"{function}: boxes must be [B, N, K or 1, 4] (ymin, xmin, ymax, xmax), got shape {tuple(boxes.shape)}"
        )
    if scores.shape.rank not in (None, 3):
        raise ValueError(f"{function}: scores must be [B, N, K], got shape {tuple(scores.shape)}")
    if boxes.shape.rank is not None and scores.shape.rank is not None:
        if not boxes.shape[:2].is_compatible_with(scores.shape[:2]):
            raise ValueError(
                f"{function}: boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)} must agree on [B, N]"
            )
        box_classes, classes = boxes.shape[2], scores.shape[2]
        if box_classes not in (None, 1) and classes is not None and box_classes != classes:
            raise ValueError(
                f"{function}: boxes must have K = {classes} class columns like scores, or 1 shared, "
                f"got shape {tuple(boxes.shape)}"
            )
    if clip_boxes:
        if image_shape is None:
            raise ValueError(f"{function}: clip_boxes=True needs image_shape, (height, width) or [B, 2]")
        boxes = _clip(boxes, image_shape, function=function)
    # float32 in and out, as TensorFlow's CombinedNonMaxSuppression (the op this replaces).
    boxes, scores = tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)
    shape = tf.shape(scores)
    batch, count, classes = shape[0], shape[1], shape[2]
    # One padded NMS per (image, class): [B, N, K, 4] -> [B * K, N, 4].
    boxes = tf.broadcast_to(boxes, tf.concat([shape, [4]], 0))
    kept = padded_nms(
        tf.reshape(tf.transpose(boxes, [0, 2, 1, 3]), [batch * classes, count, 4]),
        tf.reshape(tf.transpose(scores, [0, 2, 1]), [batch * classes, count]),
        max_output_size=per_class, iou_threshold=iou_threshold, score_threshold=score_threshold,
    )
    # Then the best `total` over the classes, by score: [B, K * P] candidates, padding last.
    kept_valid = tf.reshape(tf.range(per_class)[None, :] < kept["num_valid"][:, None], [batch, classes * per_class])
    kept_scores = tf.reshape(kept["scores"], [batch, classes * per_class])
    kept_boxes = tf.reshape(kept["boxes"], [batch, classes * per_class, 4])
    kept_classes = tf.repeat(tf.range(1, classes + 1), per_class)[None, :]  # 1-based
    extra = tf.maximum(total - classes * per_class, 0)  # top_k needs `total` candidates
    keys = tf.pad(tf.where(kept_valid, kept_scores, float("-inf")), [[0, 0], [0, extra]], constant_values=float("-inf"))
    best = tf.math.top_k(keys, k=total, sorted=True).indices  # [B, D]
    num_detections = tf.minimum(tf.reduce_sum(tf.cast(kept_valid, tf.int32), axis=1), total)
    valid = tf.range(total)[None, :] < num_detections[:, None]
    best = tf.where(valid, best, 0)
    return {
        "boxes": tf.where(valid[..., None], tf.gather(kept_boxes, best, batch_dims=1), 0.0),
        "scores": tf.where(valid, tf.gather(kept_scores, best, batch_dims=1), 0.0),
        "classes": tf.where(valid, tf.gather(tf.broadcast_to(kept_classes, tf.shape(kept_valid)), best, batch_dims=1),
                            0),
        "num_detections": num_detections,
    }
