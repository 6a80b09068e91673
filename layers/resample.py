"""The zoo's one resampling primitive: bilinear sampling that also runs under XLA.

RoI pooling's `crop_and_resize` method (Fast R-CNN in the TensorFlow Object Detection API's
style) and DeepLab-v3+'s align-corners resize both sample a feature map bilinearly at a grid of
points. Outside XLA they use TensorFlow's own kernels. Inside a `jit_compile=True` function
they share one gather formulation (`_sample_bilinear`), because there TensorFlow has no kernel
for CropAndResize at all, and XLA's lowering of ResizeBilinear gives wrong values for many
upsampling sizes (TF 2.21 on the CPU: 4 -> 22 rows is off by up to 0.9 on values in [0, 1]).

The gather formulation computes the sample coordinates and the interpolation in the same
float32 operations and order as TensorFlow's CPU kernels, so both paths agree to float32
rounding (~1e-6), and their gradients with respect to the image agree too.

Shape shorthand: an image batch `[B, H, W, C]`; K boxes `[K, 4]`, normalised
`[y1, x1, y2, x2]` where `y` maps to row `y * (H - 1)`; crops or resized images `[K, h, w, C]`.

Dtypes: float16 and bfloat16 inputs are computed in float32 and cast back, so they keep their
dtype; every other input (float32, float64, integers) gives float32, as TensorFlow's ops do.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers.compat import in_xla_context

_KEEP_DTYPES = (tf.float16, tf.bfloat16)


def _output_dtype(dtype: tf.DType) -> tf.DType:
    return dtype if dtype in _KEEP_DTYPES else tf.float32


def _check_image(image, argument):
    if image.shape.rank is not None and image.shape.rank != 4:
        raise ValueError(
            f"{argument} must be a [batch, height, width, channels] tensor, got shape {image.shape}"
        )


def _sample_bilinear(image, box_indices, ys, xs):
    """Bilinear samples of `image` on a per-box grid, from four gathers.

    Args:
      image: `[B, H, W, C]`, any real dtype.
      box_indices: `[K]` int32, the image each grid samples.
      ys: `[K, h]` float32 row coordinates in pixels (row `i` is at `i`).
      xs: `[K, w]` float32 column coordinates in pixels.

    Returns:
      `[K, h, w, C]` float32. Neighbours outside the image are clamped to its edge, as
      TensorFlow's resize kernels do; callers that want another value outside mask it.
    """
    shape = tf.shape(image)
    height, width = shape[1], shape[2]
    channels = image.shape[3] if image.shape[3] is not None else shape[3]
    top, left = tf.floor(ys), tf.floor(xs)
    # in - floor(in), not in - clamped index: TensorFlow's kernels take the fraction before
    # clamping, so a sample a rounding error past the last row still reads the last row.
    y_lerp = (ys - top)[:, :, None, None]
    x_lerp = (xs - left)[:, None, :, None]
    top_rows = tf.clip_by_value(tf.cast(top, tf.int32), 0, height - 1)
    bottom_rows = tf.clip_by_value(tf.cast(tf.math.ceil(ys), tf.int32), 0, height - 1)
    left_cols = tf.clip_by_value(tf.cast(left, tf.int32), 0, width - 1)
    right_cols = tf.clip_by_value(tf.cast(tf.math.ceil(xs), tf.int32), 0, width - 1)

    # One flat gather per neighbour; gathering before the float32 cast keeps a 16-bit image
    # from being copied whole in float32 (the cast is exact either way).
    pixels = tf.reshape(image, [-1, channels])
    first_pixel = tf.cast(box_indices, tf.int32)[:, None, None] * (height * width)

    def gather(rows, cols):
        index = first_pixel + rows[:, :, None] * width + cols[:, None, :]
        return tf.cast(tf.gather(pixels, index), tf.float32)  # [K, h, w, C]

    top_left, top_right = gather(top_rows, left_cols), gather(top_rows, right_cols)
    bottom_left, bottom_right = gather(bottom_rows, left_cols), gather(bottom_rows, right_cols)
    # TensorFlow's interpolation order (rows blended last): the float32 results then agree.
    top_blend = top_left + (top_right - top_left) * x_lerp
    bottom_blend = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top_blend + (bottom_blend - top_blend) * y_lerp


# --------------------------------------------------------------------------- crop_and_resize


def _crop_coordinates(start, end, in_size, out_size):
    """CropAndResize's sample positions along one axis, `[K, out_size]` in pixels: `out_size`
    evenly spaced points from `start * (in_size - 1)` to `end * (in_size - 1)`, or their
    midpoint when `out_size` is 1. Same float32 operations, in the same order, as the kernel."""
    scale = tf.cast(in_size - 1, tf.float32)
    out_size = tf.convert_to_tensor(out_size, tf.int32)
    # max(., 1) only avoids a division by zero; out_size == 1 takes the midpoint below.
    step = (end - start) * scale / tf.cast(tf.maximum(out_size - 1, 1), tf.float32)
    grid = start[:, None] * scale + tf.range(out_size, dtype=tf.float32)[None, :] * step[:, None]
    midpoint = (0.5 * (start + end) * scale)[:, None]
    return tf.where(out_size > 1, grid, midpoint)


def _check_crop_size(crop_size):
    if isinstance(crop_size, (tuple, list)) and all(isinstance(s, int) for s in crop_size):
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be two positive integers (height, width), got {crop_size}")
        return tuple(crop_size)
    crop_size = tf.convert_to_tensor(crop_size, tf.int32)
    if crop_size.shape.rank is not None and crop_size.shape.as_list() != [2]:
        raise ValueError(f"crop_size must be two integers (height, width), got shape {crop_size.shape}")
    return crop_size


def crop_and_resize_gather(image, boxes, box_indices, crop_size, *, extrapolation_value=0.0):
    """`tf.image.crop_and_resize` (bilinear) built from gathers, so that XLA can compile it.

    Same arguments and results as `crop_and_resize`; use that instead, which picks this
    formulation only under XLA. Public so that tests can hold it against TensorFlow's kernel.

    The gradient flows to `image`. `boxes` are treated as constants (their gradient is
    stopped): the zoo's boxes come from proposals or targets, never from a trained input.
    Under XLA, `crop_size` must be known when the function is compiled.
    """
    image = tf.convert_to_tensor(image)
    _check_image(image, "image")
    crop_size = _check_crop_size(crop_size)
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    shape = tf.shape(image)
    height, width = shape[1], shape[2]
    ys = _crop_coordinates(boxes[:, 0], boxes[:, 2], height, crop_size[0])  # [K, h]
    xs = _crop_coordinates(boxes[:, 1], boxes[:, 3], width, crop_size[1])  # [K, w]
    crops = _sample_bilinear(image, box_indices, ys, xs)
    # The kernel's test, exactly: a sample even a rounding error outside gets the value.
    inside_y = (ys >= 0) & (ys <= tf.cast(height - 1, tf.float32))
    inside_x = (xs >= 0) & (xs <= tf.cast(width - 1, tf.float32))
    inside = inside_y[:, :, None, None] & inside_x[:, None, :, None]
    crops = tf.where(inside, crops, tf.cast(extrapolation_value, tf.float32))
    return tf.cast(crops, _output_dtype(image.dtype))


def crop_and_resize(image, boxes, box_indices, crop_size, *, extrapolation_value=0.0):
    """Bilinear crops of boxes of an image batch, resized to one size: the semantics of
    `tf.image.crop_and_resize(..., method="bilinear")`, also under XLA.

    Args:
      image: `[B, H, W, C]`, any real dtype.
      boxes: `[K, 4]` normalised `[y1, x1, y2, x2]`; `y` maps to row `y * (H - 1)`, so 0 and
        1 are the centres of the first and last rows. Boxes may be inverted (`y2 < y1`: the
        crop is flipped) or reach outside [0, 1].
      box_indices: `[K]` int32, the image in `[0, B)` each box crops.
      crop_size: `(h, w)`, python ints (or an int32 `[2]` tensor outside XLA).
      extrapolation_value: the value of samples outside the image.

    Returns:
      `[K, h, w, C]`: float16 and bfloat16 images keep their dtype (computed in float32),
      everything else gives float32. Sample `(i, j)` of box `k` is at row
      `y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (h - 1)` (the box's centre row when `h == 1`),
      column likewise.

    Outside an XLA compilation this is TensorFlow's kernel (its gradient reaches `image` and
    `boxes`); inside one, where TensorFlow has no CropAndResize kernel, it is
    `crop_and_resize_gather` (gradient to `image` only).

    Example:
      >>> crops = crop_and_resize(features, boxes, box_indices, (14, 14))
    """
    if in_xla_context():
        return crop_and_resize_gather(
            image, boxes, box_indices, crop_size, extrapolation_value=extrapolation_value
        )
    image = tf.convert_to_tensor(image)
    _check_image(image, "image")
    crop_size = _check_crop_size(crop_size)
    # TensorFlow's kernel has no bfloat16 version; float32 also gives float16 its gradient.
    pixels = tf.cast(image, tf.float32) if image.dtype in _KEEP_DTYPES else image
    crops = tf.image.crop_and_resize(
        pixels, boxes, box_indices, crop_size, method="bilinear", extrapolation_value=extrapolation_value
    )
    return tf.cast(crops, _output_dtype(image.dtype))


# --------------------------------------------------------------------------- resize


def _check_size(size):
    """`(h, w)` python ints, or an int32 `[2]` tensor for a size known only at run time."""
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        if min(size) < 1:
            raise ValueError(f"size must be two positive integers (height, width), got {tuple(size)}")
        return tuple(size)
    if isinstance(size, (tuple, list)):
        size = tf.stack([tf.cast(s, tf.int32) for s in size]) if len(size) == 2 else size
    size = tf.cast(tf.convert_to_tensor(size), tf.int32)
    if size.shape.rank is not None and size.shape.as_list() != [2]:
        raise ValueError(f"size must be two integers (height, width), got {size!r}")
    static = tf.get_static_value(size)
    return tuple(int(s) for s in static) if static is not None else size


def _resize_coordinates(in_size, out_size, align_corners):
    """TensorFlow's ResizeBilinear sample positions along one axis, `[out_size]` in pixels.

    align_corners: `i * (in - 1) / (out - 1)`, first and last samples on the corner pixels
    (TensorFlow's legacy scaler, which for `out == 1` samples pixel 0). Otherwise half-pixel
    centres: `(i + 0.5) * in / out - 0.5`. The same float32 operations as the kernel.
    """
    in_size = tf.cast(in_size, tf.float32)
    out_size = tf.convert_to_tensor(out_size, tf.int32)
    steps = tf.range(out_size, dtype=tf.float32)
    out_float = tf.cast(out_size, tf.float32)
    if align_corners:
        scale = tf.where(out_size > 1, (in_size - 1) / tf.maximum(out_float - 1, 1), in_size / out_float)
        return steps * scale
    return (steps + 0.5) * (in_size / out_float) - 0.5


def resize_bilinear_gather(images, size, *, align_corners=True):
    """`resize_bilinear` built from gathers, so that XLA can compile it.

    Same arguments and results as `resize_bilinear`; use that instead, which picks this
    formulation only under XLA. Public so that tests can hold it against TensorFlow's kernel.
    """
    images = tf.convert_to_tensor(images)
    _check_image(images, "images")
    size = _check_size(size)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    ys = _resize_coordinates(height, size[0], align_corners)
    xs = _resize_coordinates(width, size[1], align_corners)
    # Every image shares the grid; _sample_bilinear takes one grid per image.
    ys = tf.tile(ys[None, :], [batch, 1])
    xs = tf.tile(xs[None, :], [batch, 1])
    resized = _sample_bilinear(images, tf.range(batch), ys, xs)
    return tf.cast(resized, _output_dtype(images.dtype))


def resize_bilinear(images, size, *, align_corners=True):
    """Bilinear resize of an image batch, with TensorFlow 1's `align_corners=True` available.

    TF2's `tf.image.resize` only has half-pixel centres, and the DeepLab checkpoints were
    trained with `tf.compat.v1.image.resize_bilinear(..., align_corners=True)`, which is why
    DeepLab's crops are 513 = 32k + 1 pixels: corners map onto corners at every stride.

    Args:
      images: `[B, H, W, C]`, any real dtype.
      size: `(h, w)`: python ints, or int tensors (scalars or a `[2]` tensor, e.g. part of
        another tensor's `tf.shape`) for a size known only at run time. Under XLA the size
        must be known when the function is compiled.
      align_corners: True samples row `i` at `i * (H - 1) / (h - 1)`, so the corner pixels of
        input and output coincide (`tf.compat.v1.image.resize_bilinear(...,
        align_corners=True)`, including its `h == 1` case: row 0). False uses half-pixel
        centres, `tf.image.resize(..., method="bilinear")`.

    Returns:
      `[B, h, w, C]`: float16 and bfloat16 images keep their dtype (computed in float32),
      everything else gives float32.

    Outside an XLA compilation this runs TensorFlow's ResizeBilinear kernel (TF1's op itself).
    Under XLA it runs `resize_bilinear_gather`, the gather formulation shared with
    `crop_and_resize`, because XLA's own ResizeBilinear lowering is wrong for many upsampling
    sizes. Why not `crop_and_resize` with the box `[0, 0, 1, 1]`, whose samples are the
    align-corners grid: TensorFlow's CropAndResize kernel computes the last sample as
    `(h - 1) * ((H - 1) / (h - 1))` in float32, which for some sizes (4 -> 22 or 7 -> 22 rows)
    lands a rounding error past `H - 1`, and it then writes the extrapolation value over the
    whole last row. ResizeBilinear clamps instead, and so does the gather formulation here.

    Example:
      >>> logits = resize_bilinear(logits, tf.shape(images)[1:3])  # to the input's size
    """
    if in_xla_context():
        return resize_bilinear_gather(images, size, align_corners=align_corners)
    images = tf.convert_to_tensor(images)
    _check_image(images, "images")
    size = _check_size(size)
    pixels = tf.cast(images, tf.float32) if images.dtype in _KEEP_DTYPES else images
    if align_corners:
        resized = tf.raw_ops.ResizeBilinear(
            images=pixels, size=size, align_corners=True, half_pixel_centers=False
        )
    else:
        resized = tf.image.resize(pixels, size, method="bilinear")
    return tf.cast(resized, _output_dtype(images.dtype))


# --------------------------------------------------------------------------- layer


@keras.saving.register_keras_serializable(package="zoo")
class ResizeBilinear(keras.layers.Layer):
    """Bilinear resize to a fixed size or to another tensor's spatial size (`resize_bilinear`).

    Args:
      size: `(h, w)` or an int for a square output; None when the layer is called on
        `[images, reference]`.
      align_corners: True (DeepLab's TF1 resize, the default) or False (half-pixel centres).

    Call arguments:
      inputs: images `[B, H, W, C]` when `size` is set; otherwise `[images, reference]`,
        reference `[B, h, w, ...]` of any dtype, whose run-time height and width the images
        are resized to (both may be unknown when the model is built).

    Returns:
      `[B, h, w, C]` in the layer's compute dtype.

    Example:
      >>> aspp = ResizeBilinear(name="upsample_aspp")([aspp, low_level_features])
      >>> logits = ResizeBilinear((513, 513))(logits)
    """

    def __init__(self, size=None, *, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, int):
            size = (size, size)
        if size is not None:
            size = tuple(size)
            if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
                raise ValueError(
                    f"ResizeBilinear: size must be two positive integers or None, got {size}"
                )
        if not isinstance(align_corners, bool):
            raise ValueError(f"ResizeBilinear: align_corners must be True or False, got {align_corners!r}")
        self.size, self.align_corners = size, align_corners

    def _split(self, inputs, *, is_pair):
        """(images, reference or None), checked against how the layer was configured."""
        if is_pair:
            if len(inputs) != 2:
                raise ValueError(
                    f"{self.name}: call it on images or on [images, reference], got {len(inputs)} inputs"
                )
            if self.size is not None:
                raise ValueError(
                    f"{self.name}: size={self.size} is set; call it on images alone, not [images, reference]"
                )
            return inputs[0], inputs[1]
        if self.size is None:
            raise ValueError(f"{self.name}: without a size, call it on [images, reference]")
        return inputs, None

    def call(self, inputs):
        images, reference = self._split(inputs, is_pair=isinstance(inputs, (list, tuple)))
        size = self.size if reference is None else tf.shape(reference)[1:3]
        images = tf.cast(images, self.compute_dtype)
        resized = resize_bilinear(images, size, align_corners=self.align_corners)
        return tf.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        # One shape is a tuple of dimensions; [images, reference] is a list of two of them.
        is_pair = isinstance(input_shape[0], (list, tuple))
        images_shape, reference_shape = self._split(input_shape, is_pair=is_pair)
        height, width = self.size if reference_shape is None else tuple(reference_shape[1:3])
        return (images_shape[0], height, width, images_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(size=None if self.size is None else list(self.size), align_corners=self.align_corners)
        return config
