"""RoI pooling: exact Fast R-CNN max pooling and the `crop_and_resize` fallback.

Paper: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083 (section 2.1).

Shapes: B images, N RoIs per image, H x W feature cells with C channels, pooled to ph x pw.
RoIs are `[ymin, xmin, ymax, xmax]` in input-image pixels; padding rows are all zeros.

`roi_pool_max` follows Caffe's `roi_pooling_layer` (which `torchvision.ops.roi_pool` also
follows) bit for bit:
  1. each coordinate is scaled by `spatial_scale` and rounded half away from zero (C's
     `round`; `tf.round` rounds half to even, which would move some boxes by a cell);
  2. the RoI spans `max(end - start + 1, 1)` cells in each direction (the end cell is
     included, as in Caffe's inclusive pixel boxes);
  3. bin `p` of `P` covers `floor(p * bin) ... ceil((p + 1) * bin)` with
     `bin = float32(size) / P`, so neighbouring bins overlap by a cell where the division is
     not exact; edges are shifted by the RoI start and clipped to the map;
  4. each bin is the maximum of its cells; an empty bin (clipped away) is 0.
Caffe computes `bin` and `p * bin` in float32, and those roundings decide some edges (a RoI 57
cells tall pooled to 7 gets a last bin ending at 58, not 57). TensorFlow's graph optimiser and
XLA may rewrite a float32 `x / 7` as `x * (1 / 7)`, which changes exactly those edges; here the
two products are formed in float64, where they are exact (or, for the division, within 2**-52
of exact, far from any float32 rounding boundary), and rounded to float32 by a cast, so the
edges are Caffe's under eager execution, `tf.function` and `jit_compile=True` alike.

Coordinates are clamped to +-2**20 feature cells before rounding, so that any finite box
(1e30 included) gives integer arithmetic that cannot overflow; no image comes near that.

The maximum over a bin is read from a two-dimensional sparse table: level `(i, j)` holds the
maximum of every `2**i x 2**j` block of the map, so any bin is the maximum of four (possibly
overlapping) table entries. The work is then proportional to the output, not to the area of
the RoIs, it vectorises over all RoIs with one gather, and it compiles under XLA. The gradient
goes to the arg-max cell of each bin, found by rebuilding the table with each block's arg-max
cell beside its maximum (on ties, the earlier block; Caffe picks the first cell in row-major
order, which is the same cell unless the tie spans two blocks).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers import resample

MAX_FEATURE_COORDINATE = 2.0**20
METHODS = ("max", "crop_and_resize")


# --------------------------------------------------------------------------- bin edges


def round_half_away_from_zero(values):
    """C's `round` for float32 `values`, exact for every float (no `x + 0.5` rounding slip)."""
    magnitude = tf.abs(values)
    whole = tf.floor(magnitude)
    # `magnitude - whole` is exact (Sterbenz), so the tie test is too.
    rounded = whole + tf.cast(magnitude - whole >= 0.5, values.dtype)
    return tf.where(values < 0, -rounded, rounded)


def _bin_edges(start, end, pool, limit):
    """Caffe's bin edges along one axis.

    Args:
      start, end: `[B, N]` int32, the rounded RoI start and end cells.
      pool: python int, the number of bins.
      limit: scalar int32, the map's size along the axis.

    Returns:
      `lower, upper`: `[B, N, pool]` int32, bin `p` covers cells `lower[p] <= i < upper[p]`.
    """
    size = tf.maximum(end - start + 1, 1)
    # float32(size) / pool, correctly rounded: the float64 quotient is within 2**-52 of the
    # exact one, and a quotient of integers with pool < 2**10 never lies that close to a
    # float32 rounding boundary, so the cast gives Caffe's float32 division.
    bin_size = tf.cast(tf.cast(size, tf.float64) / float(pool), tf.float32)
    steps = tf.range(pool + 1, dtype=tf.float64)
    # p * bin in float32: the float64 product is exact (24 + 10 bits), the cast rounds once.
    edges = tf.cast(steps * tf.cast(bin_size, tf.float64)[..., None], tf.float32)
    lower = tf.cast(tf.floor(edges[..., :-1]), tf.int32) + start[..., None]
    upper = tf.cast(tf.math.ceil(edges[..., 1:]), tf.int32) + start[..., None]
    return tf.clip_by_value(lower, 0, limit), tf.clip_by_value(upper, 0, limit)


def roi_bins(rois, *, pool_size, spatial_scale, height, width):
    """The feature cells that each bin of each RoI covers (Caffe / torchvision semantics).

    Args:
      rois: `[B, N, 4]` float32 `[ymin, xmin, ymax, xmax]` in image pixels.
      pool_size: `(ph, pw)` python ints.
      spatial_scale: feature cells per image pixel (1/16 for a stride-16 map).
      height, width: the feature map's size (ints or scalar int32 tensors).

    Returns:
      `(y_lower, y_upper, x_lower, x_upper)`: `[B, N, ph]` and `[B, N, pw]` int32; bin
      `(i, j)` covers rows `y_lower[i] <= y < y_upper[i]` and columns
      `x_lower[j] <= x < x_upper[j]`, and is empty when either range is.
    """
    scaled = tf.clip_by_value(
        tf.cast(rois, tf.float32) * tf.constant(spatial_scale, tf.float32),
        -MAX_FEATURE_COORDINATE,
        MAX_FEATURE_COORDINATE,
    )
    cells = tf.cast(round_half_away_from_zero(scaled), tf.int32)
    y_lower, y_upper = _bin_edges(cells[..., 0], cells[..., 2], pool_size[0], height)
    x_lower, x_upper = _bin_edges(cells[..., 1], cells[..., 3], pool_size[1], width)
    return y_lower, y_upper, x_lower, x_upper


# --------------------------------------------------------------------------- sparse table


def _levels(size):
    """Number of power-of-two block sizes `1, 2, ..., 2**(L-1) <= size` (at least 1)."""
    if isinstance(size, int):
        return max(size, 1).bit_length()
    return tf.reduce_sum(tf.cast(tf.bitwise.right_shift(tf.maximum(size, 1), tf.range(31)) > 0, tf.int32))


def _level_of(extent, max_levels):
    """floor(log2(extent)) for `extent >= 1`, by integer comparisons (no float log)."""
    powers = tf.bitwise.left_shift(1, tf.range(1, max_levels, dtype=tf.int32))
    return tf.reduce_sum(tf.cast(extent[..., None] >= powers, tf.int32), axis=-1)


def _block_max(pair, offset, axis):
    """max(values[i], values[i + offset]) along `axis`, and the arg-max cell of each block
    (the earlier block on ties, as Caffe's row-major scan); wrapped positions are never read."""
    values, indices = pair
    shifted = tf.roll(values, shift=-offset, axis=axis)
    if indices is None:
        return tf.maximum(values, shifted), None
    later = shifted > values
    return tf.where(later, shifted, values), tf.where(later, tf.roll(indices, shift=-offset, axis=axis), indices)


def sparse_table(features, levels_y, levels_x, *, with_indices=False):
    """`[levels_y * levels_x, B, H, W, C]`: entry `i * levels_x + j` at `(b, y, x)` is the max
    of `features[b, y : y + 2**i, x : x + 2**j]` (valid where the block fits in the map).

    With `with_indices`, also the table of the flat cell index `(b * H + y) * W + x` where each
    block's maximum lies, for the gradient. Returns `(values, indices or None)`.
    """
    indices = None
    if with_indices:
        shape = tf.shape(features)
        cells = tf.reshape(tf.range(shape[0] * shape[1] * shape[2]), [shape[0], shape[1], shape[2], 1])
        indices = tf.broadcast_to(cells, shape)
    if isinstance(levels_y, int) and isinstance(levels_x, int):
        table, rows = [], (features, indices)
        for i in range(levels_y):
            if i:
                rows = _block_max(rows, 2 ** (i - 1), axis=1)
            block = rows
            for j in range(levels_x):
                if j:
                    block = _block_max(block, 2 ** (j - 1), axis=2)
                table.append(block)
        values = tf.stack([entry[0] for entry in table])
        return values, (tf.stack([entry[1] for entry in table]) if with_indices else None)

    # Unknown map size (a functional model with H, W = None): the same table in a loop.
    size = levels_y * levels_x
    value_array = tf.TensorArray(features.dtype, size=size, element_shape=features.shape)
    index_array = tf.TensorArray(tf.int32, size=size if with_indices else 0, element_shape=features.shape)
    no_index = tf.zeros([0], tf.int32)

    def shift(pair, offset, axis):
        values, indices = _block_max((pair[0], pair[1] if with_indices else None), offset, axis)
        return values, (indices if with_indices else no_index)

    def row_level(i, rows, values_out, indices_out):
        rows = tf.cond(i > 0, lambda: shift(rows, tf.bitwise.left_shift(1, i - 1), 1), lambda: rows)

        def column_level(j, block, values_out, indices_out):
            block = tf.cond(j > 0, lambda: shift(block, tf.bitwise.left_shift(1, j - 1), 2), lambda: block)
            values_out = values_out.write(i * levels_x + j, block[0])
            if with_indices:
                indices_out = indices_out.write(i * levels_x + j, block[1])
            return j + 1, block, values_out, indices_out

        _, _, values_out, indices_out = tf.while_loop(
            lambda j, *_: j < levels_x, column_level, (0, rows, values_out, indices_out)
        )
        return i + 1, rows, values_out, indices_out

    start = (features, indices if with_indices else no_index)
    _, _, value_array, index_array = tf.while_loop(
        lambda i, *_: i < levels_y, row_level, (0, start, value_array, index_array)
    )
    return value_array.stack(), (index_array.stack() if with_indices else None)


# --------------------------------------------------------------------------- pooling


def _check_inputs(features, rois):
    if features.shape.rank != 4:
        raise ValueError(f"RoIPooling: features must be [B, H, W, C], got shape {features.shape}")
    if rois.shape.rank != 3 or rois.shape[-1] != 4:
        raise ValueError(
            f"RoIPooling: rois must be [B, N, 4] as [ymin, xmin, ymax, xmax], got shape {rois.shape}"
        )
    if not features.dtype.is_floating:
        raise TypeError(f"RoIPooling: features must be float16, bfloat16 or float32, got {features.dtype.name}")
    if not rois.dtype.is_floating:
        raise TypeError(f"RoIPooling: rois must be floating point pixel coordinates, got {rois.dtype.name}")
    batch_features, batch_rois = features.shape[0], rois.shape[0]
    if batch_features is not None and batch_rois is not None and batch_features != batch_rois:
        raise ValueError(
            f"RoIPooling: features and rois must have the same batch size, got {batch_features} and {batch_rois}"
        )
    # TensorFlow's CropAndResize gradient crashes on NaN boxes; fail here with a clear message.
    return tf.debugging.assert_all_finite(
        tf.cast(rois, tf.float32), "RoIPooling: rois contain NaN or Inf coordinates"
    )


def roi_pool_max(features, rois, *, pool_size=(7, 7), spatial_scale=1.0 / 16):
    """Exact Fast R-CNN RoI max pooling (Caffe / torchvision.ops.roi_pool semantics).

    Args:
      features: `[B, H, W, C]` float16, bfloat16 or float32.
      rois: `[B, N, 4]` `[ymin, xmin, ymax, xmax]` in image pixels.
      pool_size: `(ph, pw)`.
      spatial_scale: feature cells per image pixel.

    Returns:
      `[B, N, ph, pw, C]` in the features' dtype.
    """
    features, rois = tf.convert_to_tensor(features), tf.convert_to_tensor(rois)
    rois = _check_inputs(features, rois)
    pool_h, pool_w = pool_size
    static = features.shape
    dynamic = tf.shape(features)
    batch = dynamic[0]
    height = static[1] if static[1] is not None else dynamic[1]
    width = static[2] if static[2] is not None else dynamic[2]
    channels = static[3] if static[3] is not None else dynamic[3]
    num_rois = tf.shape(rois)[1]

    y_lower, y_upper, x_lower, x_upper = roi_bins(
        rois, pool_size=pool_size, spatial_scale=spatial_scale, height=height, width=width
    )
    levels_y, levels_x = _levels(height), _levels(width)
    extent_y = tf.maximum(y_upper - y_lower, 1)
    extent_x = tf.maximum(x_upper - x_lower, 1)
    level_y = _level_of(extent_y, levels_y if isinstance(levels_y, int) else 31)
    level_x = _level_of(extent_x, levels_x if isinstance(levels_x, int) else 31)
    # Two row starts and two column starts per bin: the blocks at the bin's start and the
    # blocks ending at its end cover the bin exactly (they may overlap).
    rows = tf.stack([y_lower, tf.maximum(y_upper - tf.bitwise.left_shift(1, level_y), y_lower)], -1)
    cols = tf.stack([x_lower, tf.maximum(x_upper - tf.bitwise.left_shift(1, level_x), x_lower)], -1)
    rows = tf.minimum(rows, height - 1)
    cols = tf.minimum(cols, width - 1)

    image = tf.range(batch)[:, None, None, None, None, None]
    level = level_y[:, :, :, None, None, None] * levels_x + level_x[:, :, None, :, None, None]
    flat = tf.reshape(
        ((level * batch + image) * height + rows[:, :, :, None, :, None]) * width
        + cols[:, :, None, :, None, :],
        [-1],
    )  # [B * N * ph * pw * 4]: the four blocks of every bin
    empty = (y_upper <= y_lower)[:, :, :, None] | (x_upper <= x_lower)[:, :, None, :]
    output_shape = [batch, num_rois, pool_h, pool_w, 4, channels]

    @tf.custom_gradient
    def pool(features):
        table, _ = sparse_table(features, levels_y, levels_x)
        gathered = tf.reshape(tf.gather(tf.reshape(table, [-1, channels]), flat), output_shape)
        pooled = tf.where(empty[..., None], tf.zeros([], features.dtype), tf.reduce_max(gathered, axis=4))

        def gradient(upstream):
            # Autodiff through the gather would build a [bins * 4, C] slice per block; instead
            # rebuild the table with arg-max cells and scatter each bin's gradient to its cell.
            # The four blocks' values are gathered again rather than kept from the forward
            # pass: keeping them would hold four outputs' worth of memory until backward.
            table, cells = sparse_table(features, levels_y, levels_x, with_indices=True)
            values = tf.reshape(tf.gather(tf.reshape(table, [-1, channels]), flat), output_shape)
            where = tf.reshape(tf.gather(tf.reshape(cells, [-1, channels]), flat), output_shape)
            best_value, best_cell = values[:, :, :, :, 0], where[:, :, :, :, 0]
            for corner in range(1, 4):
                better = values[:, :, :, :, corner] > best_value
                best_value = tf.where(better, values[:, :, :, :, corner], best_value)
                best_cell = tf.where(better, where[:, :, :, :, corner], best_cell)
            upstream = tf.where(empty[..., None], tf.zeros([], upstream.dtype), upstream)
            segment = best_cell * channels + tf.range(channels)
            total = batch * height * width * channels
            grad = tf.math.unsorted_segment_sum(
                tf.reshape(tf.cast(upstream, tf.float32), [-1]), tf.reshape(segment, [-1]), total
            )
            return tf.cast(tf.reshape(grad, tf.shape(features)), features.dtype)

        return pooled, gradient

    return pool(features)


def roi_crop_and_resize(features, rois, *, pool_size=(7, 7), spatial_scale=1.0 / 16):
    """RoI pooling as the TensorFlow Object Detection API does it: a bilinear crop of
    `2 * pool_size` samples, then 2 x 2 max pooling.

    How its numbers differ from `roi_pool_max`: coordinates are not rounded to cells; the
    crop samples the RoI's continuous extent `[y * scale, ...]` at `2 * ph` evenly spaced
    points from its first to its last edge (both included), each a bilinear blend of the four
    nearest cells; samples outside the map are 0. So a bin is the max of four interpolated
    values rather than of the cells it covers: smoother in the box coordinates (it has a
    gradient with respect to them) but never exactly equal to the max pooling, except where
    both read the same cell (a sample landing exactly on a cell centre).

    Under XLA (`jit_compile=True`), where TensorFlow has no CropAndResize kernel, the same
    sampling runs through `layers.resample`'s gather formulation.

    Args and returns as `roi_pool_max`.
    """
    features, rois = tf.convert_to_tensor(features), tf.convert_to_tensor(rois)
    rois = _check_inputs(features, rois)
    pool_h, pool_w = pool_size
    shape = tf.shape(features)
    batch, height, width = shape[0], shape[1], shape[2]
    num_rois = tf.shape(rois)[1]
    # crop_and_resize maps normalised y to y * (H - 1); divide by that so samples land on the
    # RoI's feature-grid coordinates.
    scale = tf.stack([height - 1, width - 1, height - 1, width - 1])
    scale = tf.cast(tf.maximum(scale, 1), tf.float32)
    boxes = tf.reshape(tf.cast(rois, tf.float32) * spatial_scale / scale, [-1, 4])
    box_indices = tf.repeat(tf.range(batch), num_rois)
    crops = resample.crop_and_resize(
        features, boxes, box_indices, (2 * pool_h, 2 * pool_w), extrapolation_value=0.0
    )
    crops = tf.nn.max_pool2d(crops, ksize=2, strides=2, padding="VALID")
    crops = tf.cast(crops, features.dtype)
    # Spell out the channels: with no RoIs a -1 in the shape would be ambiguous.
    channels = features.shape[3] if features.shape[3] is not None else shape[3]
    return tf.reshape(crops, [batch, num_rois, pool_h, pool_w, channels])


# --------------------------------------------------------------------------- layer


@keras.saving.register_keras_serializable(package="zoo")
class RoIPooling(keras.layers.Layer):
    """Pools each RoI of a feature map to a fixed `pool_size` grid.

    Args:
      pool_size: `(ph, pw)` or an int for a square grid; Fast R-CNN uses 7 x 7.
      spatial_scale: feature cells per image pixel, 1/16 for VGG16's conv5_3 and ResNet's C4.
      method: "max" (exact Fast R-CNN max pooling, `roi_pool_max`) or "crop_and_resize"
        (the TensorFlow Object Detection API's bilinear crop and 2 x 2 max pool,
        `roi_crop_and_resize`).

    Call arguments:
      inputs: `[features, rois]`: features `[B, H, W, C]` (float16, bfloat16 or float32; H and
        W may be unknown until run time) and rois `[B, N, 4]` `[ymin, xmin, ymax, xmax]` in
        image pixels (N may be unknown; padding rows are all zeros).

    Returns:
      `[B, N, ph, pw, C]` in the features' dtype.

    Example:
      >>> pooled = RoIPooling(pool_size=7, spatial_scale=1 / 16)([conv5_3, rois])
    """

    def __init__(self, pool_size=(7, 7), *, spatial_scale=1.0 / 16, method="max", **kwargs):
        # RoIs stay float32 under a mixed-precision policy: casting pixel coordinates to
        # float16 would move boxes by several pixels on a 1000-pixel image.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(pool_size, int):
            pool_size = (pool_size, pool_size)
        pool_size = tuple(pool_size)
        if len(pool_size) != 2 or not all(isinstance(p, int) and 1 <= p < 1024 for p in pool_size):
            raise ValueError(f"RoIPooling: pool_size must be two integers in [1, 1023], got {pool_size}")
        if not isinstance(spatial_scale, (int, float)) or not 0 < spatial_scale <= 1:
            raise ValueError(f"RoIPooling: spatial_scale must be a number in (0, 1], got {spatial_scale!r}")
        if method not in METHODS:
            raise ValueError(f"RoIPooling: method must be one of {METHODS}, got {method!r}")
        self.pool_size, self.spatial_scale, self.method = pool_size, float(spatial_scale), method

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("RoIPooling must be called on [features, rois]")
        features, rois = inputs
        pool = roi_pool_max if self.method == "max" else roi_crop_and_resize
        return pool(features, rois, pool_size=self.pool_size, spatial_scale=self.spatial_scale)

    def compute_output_shape(self, input_shape):
        features_shape, rois_shape = input_shape
        return (features_shape[0], rois_shape[1], *self.pool_size, features_shape[3])

    def compute_output_spec(self, inputs):
        features, rois = inputs
        shape = self.compute_output_shape((features.shape, rois.shape))
        return keras.KerasTensor(shape, dtype=features.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), spatial_scale=self.spatial_scale, method=self.method)
        return config
