"""How an image of any size becomes a model's fixed `(height, width)` input, and back.

Shapes: one image `[H, W, C]` of any size, the model's input `[h, w, C]` (`output_size`), the
resized content `[ch, cw]` inside it.

Two modes (`RESIZE_MODES`):
- "stretch": the image is resized to `h x w` whatever its aspect ratio (`ch, cw = h, w`): what
  keras.applications' classifiers expect (a 224 x 224 input, aspect ignored).
- "letterbox": the image is scaled by one factor `s = min(h / H, w / W)` so that it fits inside
  `h x w` with its aspect ratio kept (the longer side, relative to the box, meets it), and the
  rest is padded at the bottom and on the right: the image with `pad_value` (0, black, as the
  augmentation's crops pad), a mask with 255 (ignore). Detectors (torchvision's and detectron2's
  `GeneralizedRCNNTransform`/`ResizeShortestEdge`, the Fast R-CNN paper) and DeepLab (which pads
  to its crop size) keep the aspect ratio; the zoo's models have a fixed input size, so the
  image is fitted inside it rather than its shorter side set.

The content size is `round(H * s) x round(W * s)` (at least 1), computed in integers (rounding
half up) so that the training pipeline, evaluation and prediction agree to the pixel. Box
coordinates move by the content's exact per-axis ratios `ch / H` and `cw / W` (torchvision's
`resize_boxes`), which is how the pixels move, and within a pixel of `s` on both axes; since the
padding is at the bottom and on the right there is no offset, so mapping back to the original
image is a division by the same ratios (`original_scale`).

    >>> content = resized_size((40, 80), (32, 32), resize="letterbox")   # [16, 32]
    >>> image = resize_image(image, (32, 32), resize="letterbox")        # rows 16..31 padding
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

RESIZE_MODES = ("stretch", "letterbox")
# The letterbox padding of an image: black, as `training.data.augment`'s crops pad by default,
# so that what training pads and what evaluation and prediction pad look the same.
IMAGE_PAD_VALUE = 0.0
# The letterbox padding of a segmentation mask: "ignore" (training.data.IGNORE_LABEL), never a class.
MASK_PAD_VALUE = 255


def check_resize(resize, *, argument="resize") -> str:
    """`resize` if it is one of `RESIZE_MODES`; else a ValueError naming `argument`."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"{argument} must be one of {RESIZE_MODES}, got {resize!r}")
    return resize


def resized_size(size, output_size, *, resize):
    """The `(ch, cw)` int32 `[2]` tensor an image of `size` `(H, W)` is resized to in `output_size`.

    "stretch" gives `output_size`; "letterbox" the aspect-preserving fit described in the module
    docstring. `size` may be a tensor (`tf.shape(image)[:2]`) or Python ints.
    """
    check_resize(resize)
    output = tf.cast(tf.convert_to_tensor(output_size), tf.int64)
    if resize == "stretch":
        return tf.cast(output, tf.int32)
    size = tf.cast(tf.convert_to_tensor(size), tf.int64)
    height, width, out_height, out_width = size[0], size[1], output[0], output[1]
    height_limits = out_height * width <= out_width * height  # h / H <= w / W
    # round(W * h / H) and round(H * w / W), half up, in integers: no float rounding can make two
    # callers disagree by a pixel.
    fitted_width = tf.clip_by_value((2 * width * out_height + height) // (2 * height), 1, out_width)
    fitted_height = tf.clip_by_value((2 * height * out_width + width) // (2 * width), 1, out_height)
    content = tf.stack([
        tf.where(height_limits, out_height, fitted_height), tf.where(height_limits, fitted_width, out_width)
    ])
    return tf.cast(content, tf.int32)


def original_scale(size, output_size, *, resize) -> np.ndarray:
    """float64 `[4]`: what boxes `[ymin, xmin, ymax, xmax]` in the model's input pixels are
    multiplied by to be in the pixels of the original image of `size` `(H, W)` (eager)."""
    content = np.asarray(resized_size(size, output_size, resize=resize), np.float64)
    scale = np.asarray(size, np.float64)[:2] / content
    return np.concatenate([scale, scale])


def resize_image(image, output_size, *, resize, pad_value=IMAGE_PAD_VALUE):
    """`image` `[H, W, C]` as the model's `output_size` `(h, w)` input.

    Bilinear with antialiasing (no aliasing when shrinking), values clipped to 0..255; with
    "letterbox" the content is padded with `pad_value` at the bottom and on the right.

    Args:
      image: `[H, W, C]` uint8 or float pixels.
      output_size: `(h, w)` Python ints.
      resize: "stretch" or "letterbox".
      pad_value: the letterbox padding's pixel value.

    Returns:
      `(image float32 [h, w, C], content int32 [2])`: the content `(ch, cw)` is where the image
      is, from the top-left corner.
    """
    check_resize(resize)
    height, width = (int(side) for side in output_size)
    if resize == "stretch":
        # Static sizes: exactly the resize the pipeline has always done.
        resized = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
        return tf.clip_by_value(resized, 0.0, 255.0), tf.constant([height, width], tf.int32)
    content = resized_size(tf.shape(image)[:2], (height, width), resize=resize)
    resized = tf.clip_by_value(tf.image.resize(image, content, method="bilinear", antialias=True), 0.0, 255.0)
    padded = tf.pad(resized, [[0, height - content[0]], [0, width - content[1]], [0, 0]],
                    constant_values=float(pad_value))
    return tf.ensure_shape(padded, [height, width, image.shape[-1]]), content


def resize_batch(images, output_size, *, resize, pad_value=IMAGE_PAD_VALUE):
    """A batch `[N, H, W, C]` of one size as `resize_image` resizes each image (the serving
    graph's resize: images of any size, one size per batch).

    A batch already of the content's size is passed through, not resampled: what a client sends
    at the model's size costs nothing.

    Returns:
      `(images float32 [N, h, w, C], content int32 [2])`, as `resize_image`.
    """
    check_resize(resize)
    height, width = (int(side) for side in output_size)
    images = tf.cast(images, tf.float32)
    content = resized_size(tf.shape(images)[1:3], (height, width), resize=resize)
    resized = tf.cond(
        tf.reduce_all(tf.equal(tf.shape(images)[1:3], content)),
        lambda: images,
        lambda: tf.clip_by_value(tf.image.resize(images, content, method="bilinear", antialias=True), 0.0, 255.0),
    )
    padded = tf.pad(resized, [[0, 0], [0, height - content[0]], [0, width - content[1]], [0, 0]],
                    constant_values=float(pad_value))
    return tf.ensure_shape(padded, [None, height, width, images.shape[-1]]), content


def resize_mask(mask, output_size, *, resize, pad_value=MASK_PAD_VALUE):
    """A class-id mask `[H, W]` resized as `resize_image` resizes its image: nearest neighbour
    (class ids are never blended), letterbox padding `pad_value` (255, ignore). Keeps the dtype."""
    check_resize(resize)
    height, width = (int(side) for side in output_size)
    mask = tf.convert_to_tensor(mask)
    content = resized_size(tf.shape(mask)[:2], (height, width), resize=resize)
    if resize == "stretch":
        return tf.image.resize(mask[..., None], (height, width), method="nearest")[..., 0]
    resized = tf.image.resize(mask[..., None], content, method="nearest")[..., 0]
    padded = tf.pad(resized, [[0, height - content[0]], [0, width - content[1]]],
                    constant_values=tf.cast(pad_value, mask.dtype))
    return tf.ensure_shape(padded, [height, width])


__all__ = [
    "IMAGE_PAD_VALUE",
    "MASK_PAD_VALUE",
    "RESIZE_MODES",
    "check_resize",
    "original_scale",
    "resize_batch",
    "resize_image",
    "resize_mask",
    "resized_size",
]
