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
`tf.function`; all but `batched_nms` (TensorFlow has no XLA kernel for
CombinedNonMaxSuppression) also compile with `jit_compile=True`. Shapes are checked when the
function is traced, from static shapes. Lists and NumPy arrays become float32 tensors (float64
NumPy arrays included); tensors keep their floating dtype, and integer ones are cast to float32,
so that IoU and box deltas are never computed in integer arithmetic. float16 and bfloat16 are
computed in float32 (a float16 area overflows past 256 x 256 pixels) and cast back.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

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

    A thin wrapper of `tf.image.combined_non_max_suppression` that speaks the zoo's conventions:
    pixel boxes in and out, 1-based class ids, padding rows of class 0. Within each class, a box
    is kept if its score is above `score_threshold` (strictly) and its IoU with every
    higher-scoring kept box of the class is at most `iou_threshold`; at most
    `max_output_size_per_class` boxes per class, then the best `max_total_size` over all classes,
    sorted by score. TensorFlow's own `clip_boxes` clips to [0, 1] (normalised coordinates), so
    it is always off here; `clip_boxes=True` clips to `image_shape` in pixels before the
    suppression, as torchvision and detectron2 do. There is no XLA kernel for the op, so this
    function does not compile under `jit_compile=True`.

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
    # The op takes float32 only; boxes come back float32 like its outputs.
    nmsed_boxes, nmsed_scores, nmsed_classes, num_detections = tf.image.combined_non_max_suppression(
        tf.cast(boxes, tf.float32),
        tf.cast(scores, tf.float32),
        max_output_size_per_class=per_class,
        max_total_size=total,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    # The op pads with class 0, which is also its first object class: tell them apart by row.
    valid = tf.range(total)[None, :] < num_detections[:, None]
    classes = tf.where(valid, tf.cast(nmsed_classes, tf.int32) + 1, tf.zeros_like(valid, tf.int32))
    return {
        "boxes": tf.where(valid[..., None], nmsed_boxes, tf.zeros_like(nmsed_boxes)),
        "scores": tf.where(valid, nmsed_scores, tf.zeros_like(nmsed_scores)),
        "classes": classes,
        "num_detections": num_detections,
    }
