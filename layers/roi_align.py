"""RoI Align over a feature pyramid: torchvision's `MultiScaleRoIAlign` (Faster R-CNN FPN).

Papers: He et al., "Mask R-CNN", ICCV 2017, https://arxiv.org/abs/1703.06870 (RoI Align); Lin
et al., "Feature Pyramid Networks for Object Detection", CVPR 2017,
https://arxiv.org/abs/1612.03144, equation 1 (which level a RoI is pooled from).

Shapes: B images, N RoIs per image (`[ymin, xmin, ymax, xmax]` in pixels of the image the
pyramid was computed on; padding rows all zeros), L levels, `P_l` `[B, H_l, W_l, C]` at stride
`2 ** l`, an `S x S` output grid.

- `fpn_levels`: torchvision's `LevelMapper`: `floor(4 + log2(sqrt(area) / 224) + 1e-6)` clamped
  to `[k_min, k_max]` (the eps is added after the log, as torchvision does). Zero-area RoIs
  (padding) go to `k_min`.
- `roi_align`: torchvision's `roi_align(..., aligned=False)`: a RoI's extent is
  `[y1 * scale, y2 * scale]` with its sides at least one cell; each of the `S x S` bins averages
  `sampling_ratio ** 2` bilinear samples at the centres of a regular sub-grid; a sample more
  than one cell outside the map is 0, one within a cell of it reads the edge (torchvision's
  `bilinear_interpolate`). Built from gathers on a flat table of every level's cells, so one
  call pools every RoI from its own level, runs under XLA, and passes gradients to the maps.
- `MultiLevelRoIAlign`: the layer. Outside XLA it compiles its pooling alone with XLA
  (`compile_pooling`, on by default): TensorFlow runs the gathers and the bilinear weighting
  as some forty separate passes over `[B, N, S, S, C]`, XLA as one loop (1,000 RoIs on P2-P5
  of a 600 x 800 image, 2 CPU cores: 191 ms in a `tf.function`, 25 ms compiled). Each new
  input shape compiles once (about a second).

The levels' scales are `2 ** -k` for `k = k_min ... k_max`: torchvision infers them from the
map and image sizes (`2 ** round(log2(H_l / H))`), which is the same for images padded to a
multiple of the coarsest stride, as its transform pads them (32).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers.compat import in_xla_context

CANONICAL_SCALE = 224
CANONICAL_LEVEL = 4
LEVEL_EPSILON = 1e-6


def fpn_levels(rois, *, min_level=2, max_level=5, canonical_scale=CANONICAL_SCALE,
               canonical_level=CANONICAL_LEVEL, epsilon=LEVEL_EPSILON):
    """`[...]` int32 pyramid level of each RoI `[..., 4]` (pixels): torchvision's `LevelMapper`.

    Example:
      >>> fpn_levels([[0, 0, 224, 224], [0, 0, 32, 32], [0, 0, 0, 0]])  # [4, 2, 2]
    """
    rois = tf.cast(tf.convert_to_tensor(rois), tf.float32)
    area = (rois[..., 2] - rois[..., 0]) * (rois[..., 3] - rois[..., 1])
    size = tf.sqrt(area)
    level = tf.floor(canonical_level + tf.math.log(size / canonical_scale) / tf.math.log(2.0) + epsilon)
    # log2(0) = -inf: padding rows land on min_level; NaN (a negative area) too.
    level = tf.where(tf.math.is_nan(level), float(min_level), level)
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


def roi_align(features, rois, levels, *, output_size=7, sampling_ratio=2, scales=None):
    """RoI Align of each RoI from the map of its level (see the module).

    Args:
      features: a list of L maps `[B, H_l, W_l, C]` (same B and C).
      rois: `[B, N, 4]` pixels.
      levels: `[B, N]` int32 indices into `features` (`fpn_levels(rois) - min_level`).
      output_size: S.
      sampling_ratio: samples per bin side (torchvision's 2 for Faster R-CNN).
      scales: L feature cells per pixel, e.g. (1/4, 1/8, 1/16, 1/32).

    Returns:
      `[B, N, S, S, C]` float32.
    """
    if scales is None or len(scales) != len(features):
        raise ValueError(f"roi_align: give one scale per feature map, got {scales!r} for {len(features)} maps")
    rois = tf.cast(rois, tf.float32)
    batch, count = tf.shape(rois)[0], tf.shape(rois)[1]
    channels = features[0].shape[-1]
    tables, heights, widths, offsets = [], [], [], []
    offset = tf.constant(0, tf.int32)
    for feature in features:
        shape = tf.shape(feature)
        heights.append(shape[1])
        widths.append(shape[2])
        offsets.append(offset)
        offset += shape[0] * shape[1] * shape[2]
        tables.append(tf.reshape(tf.cast(feature, tf.float32), [-1, channels]))
    table = tf.concat(tables, axis=0)
    levels = tf.cast(levels, tf.int32)
    height = tf.gather(tf.stack(heights), levels)  # [B, N]
    width = tf.gather(tf.stack(widths), levels)
    first = tf.gather(tf.stack(offsets), levels) + tf.range(batch)[:, None] * height * width
    scale = tf.gather(tf.constant(scales, tf.float32), levels)
    # Sample k of bin i along a RoI side: start + (i + (k + 0.5) / sampling_ratio) * extent / S,
    # torchvision's start + bin * (extent / S) + (k + 0.5) * (extent / S) / sampling_ratio.
    bins = tf.range(output_size, dtype=tf.float32)  # [S]

    def samples(start, end, size, k):
        start, end = start * scale, end * scale
        bin_size = tf.maximum(end - start, 1.0) / output_size
        points = start[..., None] + (bins + (k + 0.5) / sampling_ratio) * bin_size[..., None]  # [B, N, S]
        size_f = tf.cast(size, tf.float32)[..., None]
        inside = (points >= -1.0) & (points <= size_f)
        points = tf.clip_by_value(points, 0.0, tf.maximum(size_f - 1.0, 0.0))
        low = tf.floor(points)
        high = tf.minimum(low + 1.0, size_f - 1.0)
        return tf.cast(low, tf.int32), tf.cast(high, tf.int32), points - low, tf.cast(inside, tf.float32)

    width_ = width[..., None, None]

    def gather(rows, cols):
        index = first[..., None, None] + rows[..., :, None] * width_ + cols[..., None, :]
        return tf.gather(table, index)  # [B, N, S, S, C]

    # One sub-sample (k_y, k_x) of every bin at a time: four gathers of [B, N, S, S, C] each,
    # instead of the whole [B, N, S * r, S * r, C] grid at once (r**2 times the memory: 1,000
    # RoIs on 16 images of P2-P5 256 channels held 13 GB).
    total = None
    for k_y in range(sampling_ratio):
        y_low, y_high, y_frac, y_in = samples(rois[..., 0], rois[..., 2], height, k_y)
        for k_x in range(sampling_ratio):
            x_low, x_high, x_frac, x_in = samples(rois[..., 1], rois[..., 3], width, k_x)
            inside = y_in[..., :, None, None] * x_in[..., None, :, None]  # a sample off the map reads 0
            wy, wx = y_frac[..., :, None, None], x_frac[..., None, :, None]
            # After the previous sub-sample: TensorFlow's executor would run them all at once.
            with tf.control_dependencies([] if total is None else [total]):
                low = (1.0 - wx) * gather(y_low, x_low) + wx * gather(y_low, x_high)
            with tf.control_dependencies([low]):
                high = (1.0 - wx) * gather(y_high, x_low) + wx * gather(y_high, x_high)
            value = inside * ((1.0 - wy) * low + wy * high)
            total = value if total is None else total + value
    return total / float(sampling_ratio * sampling_ratio)


@tf.function(jit_compile=True)
def _compiled_roi_align(features, rois, levels, output_size, sampling_ratio, scales):
    return roi_align(features, rois, levels, output_size=output_size, sampling_ratio=sampling_ratio, scales=scales)


@keras.saving.register_keras_serializable(package="zoo")
class MultiLevelRoIAlign(keras.layers.Layer):
    """RoI Align over a pyramid, each RoI from the level `fpn_levels` gives it.

    Args:
      output_size: S, 7.
      sampling_ratio: 2.
      min_level, max_level: the pyramid levels given (2 and 5: P2 ... P5 at strides 4 ... 32).
      compile_pooling: pool under XLA when the model around it is not (see the module).

    Call arguments:
      inputs: `[P_min, ..., P_max, rois [B, N, 4]]`.

    Returns:
      `[B, N, S, S, C]` float32.
    """

    def __init__(self, *, output_size=7, sampling_ratio=2, min_level=2, max_level=5, compile_pooling=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.output_size, self.sampling_ratio = int(output_size), int(sampling_ratio)
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.compile_pooling = bool(compile_pooling)
        if not 1 <= self.min_level <= self.max_level:
            raise ValueError(f"MultiLevelRoIAlign: need 1 <= min_level <= max_level, got {min_level}, {max_level}")

    def call(self, inputs):
        *features, rois = inputs
        if len(features) != self.max_level - self.min_level + 1:
            raise ValueError(f"MultiLevelRoIAlign: expected {self.max_level - self.min_level + 1} maps, "
                             f"got {len(features)}")
        levels = fpn_levels(rois, min_level=self.min_level, max_level=self.max_level) - self.min_level
        scales = tuple(2.0 ** -level for level in range(self.min_level, self.max_level + 1))
        if self.compile_pooling and not in_xla_context():
            return _compiled_roi_align(list(features), rois, levels, self.output_size, self.sampling_ratio, scales)
        return roi_align(features, rois, levels, output_size=self.output_size, sampling_ratio=self.sampling_ratio,
                         scales=scales)

    def compute_output_shape(self, input_shape):
        rois = input_shape[-1]
        return (rois[0], rois[1], self.output_size, self.output_size, input_shape[0][-1])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape([x.shape for x in inputs]), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size, "sampling_ratio": self.sampling_ratio,
                "min_level": self.min_level, "max_level": self.max_level, "compile_pooling": self.compile_pooling}


__all__ = ["MultiLevelRoIAlign", "fpn_levels", "roi_align"]
