"""Augmentation that keeps boxes and masks consistent with the image, with stateless seeds.

Shapes: H x W images, n boxes. Every function takes an image `[H, W, 3]` (uint8, or float in
0..255), boxes `[n, 4]` `[ymin, xmin, ymax, xmax]` in pixels (or None) and a mask `[H, W]` of
class ids (or None), and a `seed`: a `[2]` int tensor (or pair of ints) for the
`tf.random.stateless_*` ops, so the same seed gives the same result in eager code, in
`tf.function` and in `tf.data`, whatever the global seed. Geometry is exact: a flip or crop
moves the boxes by exactly what it moves the pixels (the pixel in column j covers [j, j + 1)),
so a rectangle's box stays the tight box of its mask pixels; a scale moves each box edge by at
most half an output pixel from the mask's edge (nearest-neighbour resampling of the mask).

A box cut by a crop is clipped to the crop, not shrunk to the visible part of a non-rectangular
object (as in torchvision and the TF Object Detection API, which have no instance masks either).

Flip and crop keep the image's dtype; scale, colour jitter and `augment` return float32.
"""

from __future__ import annotations

import tensorflow as tf

from training.data.examples import IGNORE_LABEL


def _seed(seed, function):
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64) or (seed.shape.rank is not None and seed.shape != [2]):
        raise ValueError(
            f"{function}: seed must be a [2] int32/int64 tensor, got {seed.dtype.name} {tuple(seed.shape)}"
        )
    return seed


def _image(image, function):
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (None, 3) or image.shape[-1] not in (None, 3):
        raise ValueError(f"{function}: image must be [H, W, 3], got shape {tuple(image.shape)}")
    return image


def _boxes(boxes):
    if boxes is None:
        return tf.zeros([0, 4], tf.float32)
    return tf.reshape(tf.cast(tf.convert_to_tensor(boxes, dtype_hint=tf.float32), tf.float32), [-1, 4])


def _size(output_size, function):
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        if all(isinstance(side, int) for side in output_size) and min(output_size) < 1:
            raise ValueError(f"{function}: output_size must be positive (height, width), got {output_size!r}")
        return output_size[0], output_size[1]
    output_size = tf.convert_to_tensor(output_size)
    return output_size[0], output_size[1]


def random_horizontal_flip(image, boxes, mask=None, *, seed, probability=0.5):
    """Mirror left-right with `probability`: column j goes to `W - 1 - j`, a box's x to `W - x`.

    Args:
      image: `[H, W, 3]`.
      boxes: `[n, 4]` pixels, or None.
      mask: `[H, W]`, or None.
      seed: `[2]` int.
      probability: of flipping.

    Returns:
      `(image, boxes, mask)`, the same shapes and dtypes (None stays None).

    Example:
      >>> random_horizontal_flip(image, [[0.0, 1.0, 2.0, 3.0]], seed=[0, 1], probability=1.0)
      ... # boxes of a width-10 image: [[0, 7, 2, 9]]
    """
    seed = _seed(seed, "random_horizontal_flip")
    image = _image(image, "random_horizontal_flip")
    given = boxes is not None
    boxes = _boxes(boxes)
    flip = tf.random.stateless_uniform([], seed) < probability
    width = tf.cast(tf.shape(image)[1], tf.float32)
    mirrored = tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2], width - boxes[:, 1]], axis=-1)
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    boxes = tf.where(flip, mirrored, boxes)
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    return image, (boxes if given else None), mask


def random_scale(image, boxes, mask=None, *, seed, scale_range=(0.5, 2.0)):
    """Resize by one random factor in `scale_range` (both axes): bilinear image, nearest mask.

    The new size is `round(H * s) x round(W * s)` (at least 1), and boxes are scaled by the
    exact ratios `new_H / H` and `new_W / W`, so they stay on the resized pixels.

    Returns:
      `(image float32, boxes, mask)`.
    """
    seed = _seed(seed, "random_scale")
    low, high = (float(value) for value in scale_range)
    if not 0 < low <= high:
        raise ValueError(f"random_scale: scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}")
    image = tf.cast(_image(image, "random_scale"), tf.float32)
    given = boxes is not None
    boxes = _boxes(boxes)
    scale = tf.random.stateless_uniform([], seed, minval=low, maxval=high)
    size = tf.shape(image)[:2]
    new_size = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
    ratio = tf.cast(new_size, tf.float32) / tf.cast(size, tf.float32)
    image = tf.image.resize(image, new_size, method="bilinear")
    boxes = boxes * tf.concat([ratio, ratio], axis=0)
    if mask is not None:
        mask = tf.image.resize(tf.convert_to_tensor(mask)[..., None], new_size, method="nearest")[..., 0]
    return image, (boxes if given else None), mask


def random_crop_with_padding(
    image,
    boxes,
    mask=None,
    *,
    seed,
    output_size,
    image_pad_value=0,
    mask_pad_value=IGNORE_LABEL,
    min_box_size=1.0,
):
    """A random `output_size` window of the image, padding where the image is smaller.

    The window's top-left corner is a uniform integer in `[min(0, H - h), max(0, H - h)]`
    (likewise for x): inside the image where it is larger than the window, and placing the whole
    image at a random position in the window where it is smaller. Padding is `image_pad_value`
    for the image and `mask_pad_value` (255, ignore) for the mask.

    Boxes move with the window and are clipped to it. A box is dropped (`keep` False, its row
    zeroed) when the crop leaves it less than `min_box_size` pixels of height or width, or less
    than its own height or width where that is smaller: a box wholly inside is always kept.

    Args:
      image: `[H, W, 3]`.
      boxes: `[n, 4]` pixels, or None.
      mask: `[H, W]`, or None.
      seed: `[2]` int.
      output_size: `(h, w)` or one int.

    Returns:
      `(image [h, w, 3], boxes [n, 4], mask [h, w], keep bool [n])`; apply `keep` to the
      boxes' classes with `tf.boolean_mask`.
    """
    seed = _seed(seed, "random_crop_with_padding")
    image = _image(image, "random_crop_with_padding")
    given = boxes is not None
    boxes = _boxes(boxes)
    target_h, target_w = _size(output_size, "random_crop_with_padding")
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

    def corner(seed, size, target):
        slack = size - target
        return tf.random.stateless_uniform(
            [], seed, minval=tf.minimum(0, slack), maxval=tf.maximum(0, slack) + 1, dtype=tf.int32
        )

    top, left = corner(seed_y, height, target_h), corner(seed_x, width, target_w)
    pad_top, pad_left = tf.maximum(0, -top), tf.maximum(0, -left)
    pad_bottom, pad_right = tf.maximum(0, top + target_h - height), tf.maximum(0, left + target_w - width)
    paddings = [[pad_top, pad_bottom], [pad_left, pad_right]]
    image = tf.pad(image, paddings + [[0, 0]], constant_values=tf.cast(image_pad_value, image.dtype))
    image = tf.slice(image, [top + pad_top, left + pad_left, 0], [target_h, target_w, -1])
    if isinstance(target_h, int) and isinstance(target_w, int):
        image = tf.ensure_shape(image, [target_h, target_w, image.shape[-1]])
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        mask = tf.pad(mask, paddings, constant_values=tf.cast(mask_pad_value, mask.dtype))
        mask = tf.slice(mask, [top + pad_top, left + pad_left], [target_h, target_w])
        if isinstance(target_h, int) and isinstance(target_w, int):
            mask = tf.ensure_shape(mask, [target_h, target_w])
    offset = tf.cast(tf.stack([top, left, top, left]), tf.float32)
    limits = tf.cast(tf.stack([target_h, target_w, target_h, target_w]), tf.float32)
    clipped = tf.clip_by_value(boxes - offset, 0.0, limits)
    extent = clipped[:, 2:] - clipped[:, :2]
    needed = tf.minimum(float(min_box_size), boxes[:, 2:] - boxes[:, :2])
    keep = tf.reduce_all((extent >= needed) & (extent > 0), axis=-1)
    boxes = tf.where(keep[:, None], clipped, tf.zeros_like(clipped))
    return image, (boxes if given else None), mask, keep


def color_jitter(image, *, seed, brightness=0.125, contrast=0.25, saturation=0.25, hue=0.03):
    """Random brightness, contrast, saturation and hue, in that order; pixels stay in 0..255.

    Args:
      image: `[H, W, 3]` uint8, or float in 0..255.
      seed: `[2]` int.
      brightness: the largest shift, as a fraction of 255.
      contrast, saturation: factors drawn from `[1 - value, 1 + value]`.
      hue: the largest hue rotation, as a fraction of the colour circle (at most 0.5).
      A value of 0 turns its part off.

    Returns:
      `[H, W, 3]` float32 in 0..255.
    """
    seed = _seed(seed, "color_jitter")
    image = tf.cast(_image(image, "color_jitter"), tf.float32) / 255.0
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    if brightness:
        image = tf.image.stateless_random_brightness(image, brightness, seeds[0])
    if contrast:
        image = tf.image.stateless_random_contrast(image, 1.0 - contrast, 1.0 + contrast, seeds[1])
    if saturation:
        image = tf.clip_by_value(image, 0.0, 1.0)
        image = tf.image.stateless_random_saturation(image, 1.0 - saturation, 1.0 + saturation, seeds[2])
    if hue:
        image = tf.image.stateless_random_hue(tf.clip_by_value(image, 0.0, 1.0), hue, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def augment(
    image,
    boxes,
    mask=None,
    *,
    seed,
    output_size=None,
    flip_probability=0.5,
    scale_range=(0.75, 1.25),
    crop=True,
    color=True,
    min_box_size=1.0,
    image_pad_value=0.0,
):
    """Colour jitter, horizontal flip, random scale, then a random crop (with padding).

    Colour comes first so that the crop's padding stays 0 (image) and 255 (mask).

    Args:
      image: `[H, W, 3]` uint8 or float in 0..255.
      boxes: `[n, 4]` pixels, or None.
      mask: `[H, W]` class ids, or None.
      seed: `[2]` int; each step gets its own seed split from it.
      output_size: the crop's `(h, w)`; None for the input's size.
      flip_probability: 0 for no flips.
      scale_range: `(low, high)` for `random_scale`, or None for no scaling.
      crop: False for no crop (the size then follows the scale).
      color: True for `color_jitter`'s defaults, a dict of its arguments, or False.
      min_box_size: see `random_crop_with_padding`.
      image_pad_value: the pixel value where the crop pads the image (DeepLab pads with the mean
        pixel, 127.5); the mask is padded with 255 (ignore) whatever this is.

    Returns:
      `(image float32, boxes, mask, keep bool [n])`: dropped boxes have `keep` False and a
      zero row.

    Example:
      >>> image, boxes, mask, keep = augment(image, boxes, mask, seed=[7, 0], output_size=(64, 64))
      >>> classes = tf.boolean_mask(classes, keep)
    """
    seed = _seed(seed, "augment")
    image = _image(image, "augment")
    given = boxes is not None
    boxes = _boxes(boxes)
    if output_size is None:
        output_size = tf.shape(image)[:2]
    color_seed, flip_seed, scale_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    if color:
        image = color_jitter(image, seed=color_seed, **(color if isinstance(color, dict) else {}))
    image = tf.cast(image, tf.float32)
    if flip_probability:
        image, boxes, mask = random_horizontal_flip(image, boxes, mask, seed=flip_seed, probability=flip_probability)
    if scale_range is not None:
        image, boxes, mask = random_scale(image, boxes, mask, seed=scale_seed, scale_range=scale_range)
    keep = tf.ones([tf.shape(boxes)[0]], tf.bool)
    if crop:
        image, boxes, mask, keep = random_crop_with_padding(
            image, boxes, mask, seed=crop_seed, output_size=output_size, min_box_size=min_box_size,
            image_pad_value=image_pad_value,
        )
    return image, (boxes if given else None), mask, keep


DRAWS = 8  # the uniforms `augment_batch` reads for each image


def augment_batch(
    images,
    draws,
    *,
    output_size=None,
    flip_probability=0.5,
    scale_range=(0.75, 1.25),
    crop=True,
    color=True,
    min_box_size=1.0,
    image_pad_value=0.0,
):
    """`augment` for a batch of images without boxes or masks, in whole-batch ops.

    Each image goes through what `augment` does to one (colour jitter, flip, scale, crop with
    padding, with the same options and the same pixel arithmetic), its parameters read from its
    row of `draws` instead of drawn from a seed: the ops run once for the batch, not once per
    image, which is what keeps a small classifier from waiting on its input pipeline. The
    scale and crop are one bilinear gather from the colour-jittered image: the pixels
    `tf.image.resize` (half-pixel centres, no antialiasing) gives at the scaled size, cut by the
    crop's window and padded with `image_pad_value` outside the scaled image.

    Args:
      images: `[B, H, W, 3]` uint8 or float in 0..255.
      draws: `[B, DRAWS]` float uniforms in [0, 1), one row an image: brightness, contrast,
        saturation, hue, flip, scale, the crop's top and its left.
      output_size, flip_probability, scale_range, crop, color, image_pad_value: as `augment`;
        `crop=False` needs `scale_range=None` (a batch's images keep one size).
      min_box_size: accepted so one options dict serves both functions; there are no boxes.

    Returns:
      `[B, h, w, 3]` float32.
    """
    del min_box_size
    images = tf.convert_to_tensor(images)
    if images.shape.rank not in (None, 4) or images.shape[-1] not in (None, 3):
        raise ValueError(f"augment_batch: images must be [B, H, W, 3], got shape {tuple(images.shape)}")
    draws = tf.cast(tf.convert_to_tensor(draws), tf.float32)
    if draws.shape.rank not in (None, 2) or draws.shape[-1] not in (None, DRAWS):
        raise ValueError(f"augment_batch: draws must be [B, {DRAWS}] uniforms, got shape {tuple(draws.shape)}")
    if not crop and scale_range is not None:
        raise ValueError("augment_batch: crop=False needs scale_range=None (a batch's images keep one size)")
    u = tf.unstack(draws, DRAWS, axis=1)
    images = tf.cast(images, tf.float32)
    if color:
        images = _color_jitter_batch(images, u[:4], **(color if isinstance(color, dict) else {}))
    if scale_range is None and not flip_probability and (output_size is None or not crop):
        return images  # no geometry: the gathers below would copy the batch as it is
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    if output_size is None or not crop:
        target_h, target_w = height, width
    else:
        target_h, target_w = _size(output_size, "augment_batch")
    flip = u[4] < flip_probability if flip_probability else tf.zeros_like(u[4], tf.bool)
    if scale_range is not None:
        low, high = (float(value) for value in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"augment_batch: scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}")
        scale = low + (high - low) * u[5]
    else:
        scale = tf.ones_like(u[5])

    def axis(size, target, position, mirrored):
        # Per image and output row (column): the two source rows that tf.image.resize's bilinear
        # kernel reads at the scaled size and the second one's weight, and True inside the image.
        new = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
        slack = new - target
        choices = tf.abs(slack) + 1  # starts from min(0, slack) to max(0, slack), as random_crop_with_padding
        start = tf.minimum(0, slack) + tf.minimum(tf.cast(position * tf.cast(choices, tf.float32), tf.int32), choices - 1)
        scaled = start[:, None] + tf.range(target)[None, :]
        ratio = tf.cast(size, tf.float32) / tf.cast(new, tf.float32)
        source = (tf.cast(scaled, tf.float32) + 0.5) * ratio[:, None] - 0.5
        floor = tf.floor(source)
        lower = tf.clip_by_value(tf.cast(floor, tf.int32), 0, size - 1)
        upper = tf.clip_by_value(tf.cast(tf.math.ceil(source), tf.int32), 0, size - 1)
        if mirrored is not None:  # flipped before scaling: source column j is column W - 1 - j
            lower = tf.where(mirrored[:, None], size - 1 - lower, lower)
            upper = tf.where(mirrored[:, None], size - 1 - upper, upper)
        return lower, upper, source - floor, (scaled >= 0) & (scaled < new[:, None])

    top, bottom, y_weight, rows_inside = axis(height, target_h, u[6], None)
    left, right, x_weight, columns_inside = axis(width, target_w, u[7], flip)
    # Gathers over the batch, rows then columns, instead of per-image resizes, flips, pads and
    # slices (under XLA, as the pipeline runs it, one loop).
    upper_rows, lower_rows = (tf.gather(images, index, axis=1, batch_dims=1) for index in (top, bottom))
    rows = upper_rows + (lower_rows - upper_rows) * y_weight[:, :, None, None]
    left_columns, right_columns = (tf.gather(rows, index, axis=2, batch_dims=1) for index in (left, right))
    out = left_columns + (right_columns - left_columns) * x_weight[:, None, :, None]
    inside = rows_inside[:, :, None, None] & columns_inside[:, None, :, None]
    return tf.where(inside, out, tf.cast(image_pad_value, tf.float32))


def _color_jitter_batch(images, draws, *, brightness=0.125, contrast=0.25, saturation=0.25, hue=0.03):
    """`color_jitter` over `[B, H, W, 3]` float 0..255, its four factors from `draws` (four
    `[B]`), in few passes: brightness and contrast as one scale and shift, saturation in RGB (for
    a fixed hue and value each channel is linear in the saturation: c' = V - (V - c) s'/s), only
    the hue through HSV."""

    def between(low, high, draw):
        return (low + (high - low) * draw)[:, None, None, None]

    if brightness or contrast:
        # Brightness adds d, contrast maps x to (x - mean) f + mean with the mean after the shift:
        # together x f + (1 - f) mean(x) + d, one pass.
        shift = between(-brightness, brightness, draws[0]) * 255.0 if brightness else 0.0
        if contrast:
            factor = between(1.0 - contrast, 1.0 + contrast, draws[1])
            shift = shift + (1.0 - factor) * tf.reduce_mean(images, axis=[1, 2], keepdims=True)
            images = images * factor + shift
        else:
            images = images + shift
    if saturation:
        images = tf.clip_by_value(images, 0.0, 255.0)
        red, green, blue = images[..., :1], images[..., 1:2], images[..., 2:]
        value = tf.maximum(tf.maximum(red, green), blue)
        chroma = value - tf.minimum(tf.minimum(red, green), blue)
        wanted = between(1.0 - saturation, 1.0 + saturation, draws[2])
        # the saturation chroma / value times the factor, at most 1: chroma' = min(chroma * factor, value)
        ratio = tf.where(chroma > 0, tf.minimum(wanted, value / tf.maximum(chroma, 1e-12)), 1.0)
        images = value - (value - images) * ratio
    if hue:
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 255.0) / 255.0)
        turned = hsv[..., 0] + between(-hue, hue, draws[3])[..., 0]
        hsv = tf.stack([turned - tf.floor(turned), hsv[..., 1], hsv[..., 2]], axis=-1)
        images = tf.image.hsv_to_rgb(hsv) * 255.0
    return tf.clip_by_value(images, 0.0, 255.0)
