"""The zoo's one resampling primitive: bilinear `crop_and_resize`, usable under XLA.

RoI pooling's `crop_and_resize` method and DeepLab's align-corners resize both sample a
feature map bilinearly at a grid of points. `tf.image.crop_and_resize` does it, but TensorFlow
has no XLA kernel for CropAndResize, so inside a `jit_compile=True` function the same samples
are computed from four gathers (`crop_and_resize_gather`), with TensorFlow's coordinates and
interpolation order.

Shapes: an image batch `[B, H, W, C]`, K boxes `[K, 4]` normalised `[y1, x1, y2, x2]` where
`y` maps to `y * (H - 1)`, crops `[K, h, w, C]`.
"""

from __future__ import annotations

import tensorflow as tf


def in_xla_context() -> bool:
    """True while tracing a function that XLA will compile (`jit_compile=True`)."""
    try:
        # Private, but the only way to see the XLA context at trace time; stable since TF 2.0.
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):
        return True  # the gather formulation is correct everywhere, only slower


def _sample_coordinates(start, end, size, out_size):
    """TensorFlow's CropAndResize sample positions along one axis: `[K, out_size]`."""
    scale = tf.cast(size - 1, tf.float32)
    if out_size > 1:
        step = (end - start) * scale / (out_size - 1)
        return start[:, None] * scale + tf.range(out_size, dtype=tf.float32)[None, :] * step[:, None]
    return (0.5 * (start + end) * scale)[:, None]


def crop_and_resize_gather(image, boxes, box_indices, crop_size, *, extrapolation_value=0.0):
    """`tf.image.crop_and_resize` (bilinear) from gathers, for XLA; same arguments and result.

    The gradient flows to `image`; `boxes` are treated as constants (stop_gradient).
    """
    image = tf.convert_to_tensor(image)
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    crop_h, crop_w = crop_size
    shape = tf.shape(image)
    height, width, channels = shape[1], shape[2], shape[3]
    ys = _sample_coordinates(boxes[:, 0], boxes[:, 2], height, crop_h)  # [K, h]
    xs = _sample_coordinates(boxes[:, 1], boxes[:, 3], width, crop_w)  # [K, w]
    valid_y = (ys >= 0) & (ys <= tf.cast(height - 1, tf.float32))
    valid_x = (xs >= 0) & (xs <= tf.cast(width - 1, tf.float32))
    top = tf.floor(ys)
    left = tf.floor(xs)
    y_lerp = (ys - top)[:, :, None, None]
    x_lerp = (xs - left)[:, None, :, None]
    top_i = tf.clip_by_value(tf.cast(top, tf.int32), 0, height - 1)
    bottom_i = tf.clip_by_value(tf.cast(tf.math.ceil(ys), tf.int32), 0, height - 1)
    left_i = tf.clip_by_value(tf.cast(left, tf.int32), 0, width - 1)
    right_i = tf.clip_by_value(tf.cast(tf.math.ceil(xs), tf.int32), 0, width - 1)

    flat = tf.reshape(tf.cast(image, tf.float32), [-1, channels])
    base = tf.cast(box_indices, tf.int32)[:, None, None] * height * width

    def gather(rows, cols):
        index = base + rows[:, :, None] * width + cols[:, None, :]
        return tf.gather(flat, index)  # [K, h, w, C]

    top_left, top_right = gather(top_i, left_i), gather(top_i, right_i)
    bottom_left, bottom_right = gather(bottom_i, left_i), gather(bottom_i, right_i)
    # The interpolation order of TensorFlow's CPU kernel, so the float32 results agree.
    upper = top_left + (top_right - top_left) * x_lerp
    lower = bottom_left + (bottom_right - bottom_left) * x_lerp
    crops = upper + (lower - upper) * y_lerp
    valid = valid_y[:, :, None, None] & valid_x[:, None, :, None]
    return tf.where(valid, crops, tf.cast(extrapolation_value, tf.float32))


def crop_and_resize(image, boxes, box_indices, crop_size, *, extrapolation_value=0.0):
    """Bilinear crops `[K, h, w, C]` float32 of `image` `[B, H, W, C]`, as
    `tf.image.crop_and_resize`; under XLA through `crop_and_resize_gather`."""
    if in_xla_context():
        return crop_and_resize_gather(
            image, boxes, box_indices, crop_size, extrapolation_value=extrapolation_value
        )
    return tf.image.crop_and_resize(
        tf.cast(image, tf.float32) if image.dtype != tf.float32 else image,
        boxes, box_indices, crop_size, method="bilinear", extrapolation_value=extrapolation_value,
    )
