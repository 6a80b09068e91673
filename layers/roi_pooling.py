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

Bad RoIs, with and without XLA. Without XLA, NaN or Inf coordinates raise
`InvalidArgumentError("RoIPooling: rois contain NaN or Inf coordinates")`, and features and RoIs
of different batch sizes raise ("must have the same batch size"), also when the sizes are known
only at run time. XLA drops both checks (`CheckNumerics` and `Assert` do not compile), so:
  - a non-finite RoI is harmless instead: it pools zeros (every bin empty, as for a RoI outside
    the map) and gets no gradient, never values of the map; `DetectionPostprocess` gives it no
    detection (a design choice: XLA has no way to raise);
  - batch sizes that differ still fail, when XLA compiles the call, with the
    `InvalidArgumentError` of a reshape of the RoIs to the features' batch (the element counts
    differ), instead of broadcasting one RoI set to every image or one image to every RoI set.
    The one case that passes is N = 0, where there is nothing to pool.

Each bin's maximum is read from a table of block maxima built once per call, so the work
follows the number of bins rather than their area, one gather serves every RoI, and all of it
compiles under XLA. Two tables:
  - the exact-extent table: entry `(d, e)` at `(y, x)` is the maximum of the `d x e` block
    there, for every extent that a bin of a RoI inside the image can have, at most
    `ceil(H / ph) + 1` rows by `ceil(W / pw) + 1` columns (7 x 9 for a 38 x 50 map pooled to
    7 x 7). One entry answers a bin.
  - the power-of-two table: level `(i, j)` is the maximum of every `2**i x 2**j` block, and a
    bin is the maximum of the four (overlapping) blocks at its corners. It covers any bin.
Forward: under XLA, the power-of-two table with the levels those bins need (3 x 4 above): XLA
fuses the four gathers and their maximum into the one pass that writes the output, and the
table is a fifth of the exact one. Elsewhere nothing fuses, so the exact table, built a slice
of channels at a time to stay in cache, is read with one gather per slice. A RoI reaching far
beyond the image (larger bins), or a map whose size is only known at run time, takes the
power-of-two table with every level, forward and backward; `tf.cond` decides per call.

Gradient: each bin's upstream gradient goes to its arg-max cell, the first in row-major order
on ties, as in Caffe and torchvision. Through the exact table, each bin's upstream row is added
to its entry's gradient (a scatter of rows, not of single values), which is then pushed back
through the table's construction: blocks grow by one column, then by one row, keeping the
smaller block unless the new column or row is strictly greater, so walking those steps back
sends each entry to the cell that Caffe's scan picks. Walking from the largest blocks down hands
each level's gradient on once, and a loop over slices of channels keeps every buffer small.
Through the power-of-two table, each entry also records its arg-max cell (blocks are widened
before they are heightened, so it is the first in row-major order), the four corners are
compared by value and then by that cell, and the gradient is scattered cell by cell.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers import resample
from layers.compat import in_xla_context

MAX_FEATURE_COORDINATE = 2.0**20
METHODS = ("max", "crop_and_resize")
# A slice of channels of the exact-extent table (and of its gradient) stays below this size,
# so that it is built, read and reversed in cache.
EXACT_TABLE_BYTES = 16 * 2**20


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


# --------------------------------------------------------------------------- power-of-two table


def _levels(size):
    """Number of power-of-two block sizes `1, 2, ..., 2**(L-1) <= size` (at least 1)."""
    if isinstance(size, int):
        return max(size, 1).bit_length()
    return tf.reduce_sum(tf.cast(tf.bitwise.right_shift(tf.maximum(size, 1), tf.range(31)) > 0, tf.int32))


def _level_of(extent, max_levels):
    """floor(log2(extent)) for `extent >= 1`, by integer comparisons (no float log)."""
    powers = tf.bitwise.left_shift(1, tf.range(1, max_levels, dtype=tf.int32))
    return tf.reduce_sum(tf.cast(extent[..., None] >= powers, tf.int32), axis=-1)


def _shift(values, offset, axis):
    """`values[i + offset]` along `axis`; the last `offset` entries are filler no block reads."""
    if isinstance(offset, int):
        # Slice and pad rather than roll: XLA fuses them into the maximum that follows.
        begin, paddings = [0] * values.shape.rank, [[0, 0]] * values.shape.rank
        begin[axis], paddings[axis] = offset, [0, offset]
        return tf.pad(tf.slice(values, begin, [-1] * values.shape.rank), paddings)
    return tf.roll(values, shift=-offset, axis=axis)


def _block_max(pair, offset, axis):
    """max(values[i], values[i + offset]) along `axis`, and the arg-max cell of each block
    (the earlier block on ties, as Caffe's scan keeps its first maximum)."""
    values, indices = pair
    shifted = _shift(values, offset, axis)
    if indices is None:
        return tf.maximum(values, shifted), None
    later = shifted > values
    return tf.where(later, shifted, values), tf.where(later, _shift(indices, offset, axis), indices)


def sparse_table(features, levels_y, levels_x, *, with_indices=False):
    """`[levels_y * levels_x, B, H, W, C]`: entry `i * levels_x + j` at `(b, y, x)` is the max
    of `features[b, y : y + 2**i, x : x + 2**j]` (valid where the block fits in the map).

    With `with_indices`, also the table of the flat cell index `(b * H + y) * W + x` where each
    block's maximum lies, for the gradient. Blocks are widened before they are heightened, so
    that on ties the recorded cell is the first in row-major order, Caffe's. Returns
    `(values, indices or None)`.
    """
    indices = None
    if with_indices:
        shape = tf.shape(features)
        cells = tf.reshape(tf.range(shape[0] * shape[1] * shape[2]), [shape[0], shape[1], shape[2], 1])
        indices = tf.broadcast_to(cells, shape)
    if isinstance(levels_y, int) and isinstance(levels_x, int):
        table, columns = [None] * (levels_y * levels_x), (features, indices)
        for j in range(levels_x):
            if j:
                columns = _block_max(columns, 2 ** (j - 1), axis=2)
            block = columns
            for i in range(levels_y):
                if i:
                    block = _block_max(block, 2 ** (i - 1), axis=1)
                table[i * levels_x + j] = block
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

    def column_level(j, columns, values_out, indices_out):
        columns = tf.cond(j > 0, lambda: shift(columns, tf.bitwise.left_shift(1, j - 1), 2), lambda: columns)

        def row_level(i, block, values_out, indices_out):
            block = tf.cond(i > 0, lambda: shift(block, tf.bitwise.left_shift(1, i - 1), 1), lambda: block)
            values_out = values_out.write(i * levels_x + j, block[0])
            if with_indices:
                indices_out = indices_out.write(i * levels_x + j, block[1])
            return i + 1, block, values_out, indices_out

        _, _, values_out, indices_out = tf.while_loop(
            lambda i, *_: i < levels_y, row_level, (0, columns, values_out, indices_out)
        )
        return j + 1, columns, values_out, indices_out

    start = (features, indices if with_indices else no_index)
    _, _, value_array, index_array = tf.while_loop(
        lambda j, *_: j < levels_x, column_level, (0, start, value_array, index_array)
    )
    return value_array.stack(), (index_array.stack() if with_indices else None)


def _sparse_corners(bins, batch, height, width, levels_y, levels_x):
    """`[B, N, ph, pw, 4]` flat rows of the power-of-two table: the blocks at a bin's start and
    the blocks ending at its end, which together cover the bin exactly (they may overlap)."""
    y_lower, y_upper, x_lower, x_upper = bins
    level_y = _level_of(tf.maximum(y_upper - y_lower, 1), levels_y if isinstance(levels_y, int) else 31)
    level_x = _level_of(tf.maximum(x_upper - x_lower, 1), levels_x if isinstance(levels_x, int) else 31)
    rows = tf.stack([y_lower, tf.maximum(y_upper - tf.bitwise.left_shift(1, level_y), y_lower)], -1)
    cols = tf.stack([x_lower, tf.maximum(x_upper - tf.bitwise.left_shift(1, level_x), x_lower)], -1)
    rows = tf.minimum(rows, height - 1)
    cols = tf.minimum(cols, width - 1)
    image = tf.range(batch)[:, None, None, None, None, None]
    level = level_y[:, :, :, None, None, None] * levels_x + level_x[:, :, None, :, None, None]
    flat = ((level * batch + image) * height + rows[:, :, :, None, :, None]) * width + cols[:, :, None, :, None, :]
    return tf.reshape(flat, tf.concat([tf.shape(flat)[:4], [4]], 0))


def _pool_sparse(features, corners, empty, levels_y, levels_x, channels):
    """`[B, N, ph, pw, C]`: each bin the maximum of its four power-of-two blocks."""
    table, _ = sparse_table(features, levels_y, levels_x)
    gathered = tf.gather(tf.reshape(table, [-1, channels]), corners)  # [B, N, ph, pw, 4, C]
    return tf.where(empty[..., None], tf.zeros([], features.dtype), tf.reduce_max(gathered, axis=4))


def _gradient_sparse(features, upstream, corners, empty, levels_y, levels_x, channels):
    """Routes `upstream` to each bin's arg-max cell through the power-of-two table, cell by cell."""
    table, cells = sparse_table(features, levels_y, levels_x, with_indices=True)
    values = tf.gather(tf.reshape(table, [-1, channels]), corners)
    where = tf.gather(tf.reshape(cells, [-1, channels]), corners)
    best_value, best_cell = values[:, :, :, :, 0], where[:, :, :, :, 0]
    for corner in range(1, 4):
        value, cell = values[:, :, :, :, corner], where[:, :, :, :, corner]
        # Caffe's arg-max is the first maximal cell in row-major order; the blocks overlap, so
        # on a tie the earlier cell wins whichever block holds it.
        better = (value > best_value) | ((value == best_value) & (cell < best_cell))
        best_value = tf.where(better, value, best_value)
        best_cell = tf.where(better, cell, best_cell)
    upstream = tf.where(empty[..., None], tf.zeros([], upstream.dtype), upstream)
    segment = best_cell * channels + tf.range(channels)
    shape = tf.shape(features)
    grad = tf.math.unsorted_segment_sum(
        tf.reshape(tf.cast(upstream, tf.float32), [-1]), tf.reshape(segment, [-1]), tf.reduce_prod(shape)
    )
    return tf.cast(tf.reshape(grad, shape), features.dtype)


# --------------------------------------------------------------------------- exact-extent table


def _exact_extents(height, width, pool_size):
    """`(extent_y, extent_x)`: the largest bin of a RoI that lies inside the map, `ceil(size /
    pool) + 1` cells (bins overlap by a cell), or None when the map's size is not static."""
    if not isinstance(height, int) or not isinstance(width, int):
        return None
    return min(height, -(-height // pool_size[0]) + 1), min(width, -(-width // pool_size[1]) + 1)


def _channel_slice(channels, levels, height, width):
    """Channels per slice of the exact table: the largest divisor of `channels` whose table for
    one image fits in EXACT_TABLE_BYTES, or None when one channel does not."""
    per_channel = levels * height * width * 4
    if not isinstance(channels, int) or per_channel > EXACT_TABLE_BYTES:
        return None
    size = min(channels, EXACT_TABLE_BYTES // per_channel)
    while channels % size:
        size -= 1
    return size


def _exact_table(features, extent_y, extent_x):
    """Maxima of every block of up to `extent_y x extent_x` cells of `features` `[B, H, W, K]`.

    Returns `(runs, levels)`: `runs` `[extent_x, B, H + extent_y - 1, W, K]`, entry `e` the max
    of the `e + 1` cells of a row starting at each cell (the rows past H are padding that the
    next step reads); `levels`, `extent_y` tensors `[extent_x, B, H, W, K]`, level `d` entry
    `e` the max of the `(d + 1) x (e + 1)` block at each cell. Blocks that cross the map's end
    read zero padding, and no bin reads those.
    """
    height, width = features.shape[1], features.shape[2]
    padded = tf.pad(features, [[0, 0], [0, extent_y - 1], [0, extent_x - 1], [0, 0]])
    # One column, then one row, at a time: `_exact_table_gradient` retraces these steps.
    runs = [padded[:, :, :width]]
    for e in range(1, extent_x):
        runs.append(tf.maximum(runs[-1], padded[:, :, e : e + width]))
    runs = tf.stack(runs)
    levels = [runs[:, :, :height]]
    for d in range(1, extent_y):
        levels.append(tf.maximum(levels[-1], runs[:, :, d : d + height]))
    return runs, levels


def _exact_table_gradient(features, runs, levels, grad_levels):
    """Sends the gradient of every exact-table entry to the cell its maximum came from.

    Args: `features` and `(runs, levels)` as in `_exact_table`; `grad_levels` float32
    `[extent_y, extent_x, B, H, W, K]`. Returns float32 `[B, H, W, K]`.
    """
    extent_y, extent_x = len(levels), runs.shape[0]
    height, width = features.shape[1], features.shape[2]
    # Block d + 1 rows tall is block d tall extended by row d. Where that row is strictly
    # greater its gradient moves to the row, otherwise it stays with the shorter block: so the
    # first maximal row wins, and within it (by the same walk along the row) the first maximal
    # column, Caffe's row-major arg-max. Walking down from the tallest level hands each level's
    # share on once instead of retracing every block.
    moved, carried = [], grad_levels[extent_y - 1]
    for d in range(extent_y - 1, 0, -1):
        later = runs[:, :, d : d + height] > levels[d - 1]
        moved.append(tf.pad(tf.where(later, carried, 0.0), [[0, 0], [0, 0], [d, extent_y - 1 - d], [0, 0], [0, 0]]))
        carried = grad_levels[d - 1] + tf.where(later, 0.0, carried)
    moved.append(tf.pad(carried, [[0, 0], [0, 0], [0, extent_y - 1], [0, 0], [0, 0]]))
    grad_runs = tf.add_n(moved)[:, :, :height]

    padded = tf.pad(features, [[0, 0], [0, 0], [0, extent_x - 1], [0, 0]])
    moved, carried = [], grad_runs[extent_x - 1]
    for e in range(extent_x - 1, 0, -1):
        later = padded[:, :, e : e + width] > runs[e - 1, :, :height]
        moved.append(tf.pad(tf.where(later, carried, 0.0), [[0, 0], [0, 0], [e, extent_x - 1 - e], [0, 0]]))
        carried = grad_runs[e - 1] + tf.where(later, 0.0, carried)
    moved.append(tf.pad(carried, [[0, 0], [0, 0], [0, extent_x - 1], [0, 0]]))
    return tf.add_n(moved)[:, :, :width]


def _exact_rows(bins, batch, height, width, extent_y, extent_x):
    """`[B, N, ph, pw]`: each bin's row in the flattened exact table, -1 for an empty bin."""
    y_lower, y_upper, x_lower, x_upper = bins
    level = (tf.maximum(y_upper - y_lower, 1) - 1)[:, :, :, None] * extent_x + (
        tf.maximum(x_upper - x_lower, 1) - 1
    )[:, :, None, :]
    image = tf.range(batch)[:, None, None, None]
    cell = (image * height + tf.minimum(y_lower, height - 1)[:, :, :, None]) * width + tf.minimum(
        x_lower, width - 1
    )[:, :, None, :]
    empty = (y_upper <= y_lower)[:, :, :, None] | (x_upper <= x_lower)[:, :, None, :]
    return tf.where(empty, -1, level * (batch * height * width) + cell)


def _pool_exact(features, rows, extent_y, extent_x, channel_slice):
    """`[B * N * ph * pw, C]`: one gather per slice of channels from that slice's exact table."""
    shape = tf.shape(features)
    table_rows = extent_y * extent_x * shape[0] * shape[1] * shape[2]
    rows = tf.reshape(rows, [-1])
    rows = tf.where(rows < 0, table_rows, rows)  # empty bins read an appended row of zeros
    outputs, zeros = [], tf.zeros([1, channel_slice], features.dtype)
    for start in range(0, features.shape[3], channel_slice):
        _, levels = _exact_table(features[..., start : start + channel_slice], extent_y, extent_x)
        table = tf.concat([tf.reshape(level, [-1, channel_slice]) for level in levels] + [zeros], 0)
        outputs.append(tf.gather(table, rows))
    return tf.concat(outputs, -1) if len(outputs) > 1 else outputs[0]


def _gradient_exact(features, upstream, rows, extent_y, extent_x, channel_slice, *, xla):
    """The gradient through the exact table: the upstream rows summed into the table's gradient,
    then `_exact_table_gradient`, one slice of channels per loop step so that every buffer stays
    small (the loop keeps XLA from holding all slices at once)."""
    _, height, width, channels = features.shape
    batch = tf.shape(features)[0]
    table_rows = extent_y * extent_x * batch * height * width
    rows = tf.reshape(rows, [-1])  # empty bins are -1, which the segment sums leave out
    if not xla:
        # TensorFlow's CPU UnsortedSegmentSum spends ~0.5 us on each short row; its sorted sparse
        # segment sum, with the order computed once for all slices, is twice as fast.
        order = tf.argsort(rows, stable=True)
        order = order[tf.reduce_sum(tf.cast(rows < 0, tf.int32)) :]
        sorted_rows = tf.gather(rows, order)
    slices = channels // channel_slice
    # A gather of one slice, not tf.slice: under XLA a slice at a loop-dependent offset pads
    # its whole input first, a copy twice the size of the upstream gradient in every dimension.
    upstream = tf.reshape(tf.cast(upstream, tf.float32), [-1, slices, channel_slice])
    features_by_slice = tf.reshape(features, [-1, height, width, slices, channel_slice])

    def step(index, grads):
        chunk = tf.gather(features_by_slice, index, axis=3)
        runs, levels = _exact_table(chunk, extent_y, extent_x)
        upstream_slice = tf.gather(upstream, index, axis=1)
        if xla:
            grad_table = tf.math.unsorted_segment_sum(upstream_slice, rows, table_rows)
        else:
            grad_table = tf.sparse.segment_sum(upstream_slice, order, sorted_rows, num_segments=table_rows)
        grad_levels = tf.reshape(grad_table, [extent_y, extent_x, batch, height, width, channel_slice])
        return index + 1, grads.write(index, _exact_table_gradient(chunk, runs, levels, grad_levels))

    grads = tf.TensorArray(tf.float32, size=slices, element_shape=[None, height, width, channel_slice])
    _, grads = tf.while_loop(lambda index, _: index < slices, step, (0, grads), parallel_iterations=2)
    grad = tf.transpose(grads.stack(), [1, 2, 3, 0, 4])
    return tf.cast(tf.reshape(grad, [batch, height, width, channels]), features.dtype)


# --------------------------------------------------------------------------- pooling


def _check_inputs(features, rois, spatial_scale):
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
    rois = tf.cast(rois, tf.float32)
    batch = tf.shape(features)[0]
    # Without XLA both checks raise (TensorFlow's CropAndResize gradient crashes on NaN boxes, and
    # a batch of RoIs for another batch of images would broadcast); XLA drops both ops silently.
    checks = [
        tf.debugging.assert_all_finite(rois, "RoIPooling: rois contain NaN or Inf coordinates"),
        tf.debugging.assert_equal(
            tf.shape(rois)[0], batch, message="RoIPooling: features and rois must have the same batch size"
        ),
    ]
    with tf.control_dependencies(checks):
        rois = tf.identity(rois)
    # What XLA still refuses: a reshape to the features' batch. XLA compiles for concrete shapes,
    # so B_rois * N * 4 != B_features * N * 4 fails to compile (InvalidArgumentError naming the
    # reshape) instead of reading image 0 for every RoI set, or one RoI set for every image.
    rois = tf.reshape(rois, tf.stack([batch, tf.shape(rois)[1], 4]))
    # What XLA cannot refuse: a non-finite RoI is moved 2**20 cells above and left of the map, where
    # every bin is empty, so it pools zeros (and sends no gradient) instead of values of the map.
    far = tf.constant(-MAX_FEATURE_COORDINATE / spatial_scale, tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(rois), axis=-1, keepdims=True)
    return tf.where(finite, rois, far)


def roi_pool_max(features, rois, *, pool_size=(7, 7), spatial_scale=1.0 / 16):
    """Exact Fast R-CNN RoI max pooling (Caffe / torchvision.ops.roi_pool semantics).

    Args:
      features: `[B, H, W, C]` float16, bfloat16 or float32.
      rois: `[B, N, 4]` `[ymin, xmin, ymax, xmax]` in image pixels.
      pool_size: `(ph, pw)`.
      spatial_scale: feature cells per image pixel.

    Returns:
      `[B, N, ph, pw, C]` in the features' dtype. Its gradient goes to each bin's arg-max
      cell, the first in row-major order on ties (Caffe's and torchvision's choice).
    """
    features, rois = tf.convert_to_tensor(features), tf.convert_to_tensor(rois)
    rois = _check_inputs(features, rois, spatial_scale)
    pool_h, pool_w = pool_size
    static = features.shape
    dynamic = tf.shape(features)
    batch = dynamic[0]
    height = static[1] if static[1] is not None else dynamic[1]
    width = static[2] if static[2] is not None else dynamic[2]
    channels = static[3] if static[3] is not None else dynamic[3]
    num_rois = tf.shape(rois)[1]
    output_shape = [batch, num_rois, pool_h, pool_w, channels]

    bins = roi_bins(rois, pool_size=pool_size, spatial_scale=spatial_scale, height=height, width=width)
    y_lower, y_upper, x_lower, x_upper = bins
    empty = (y_upper <= y_lower)[:, :, :, None] | (x_upper <= x_lower)[:, :, None, :]
    levels = (_levels(height), _levels(width))
    corners = _sparse_corners(bins, batch, height, width, *levels)

    def pool_sparse(features):
        return _pool_sparse(features, corners, empty, *levels, channels)

    def gradient_sparse(features, upstream):
        return _gradient_sparse(features, upstream, corners, empty, *levels, channels)

    extents = _exact_extents(height, width, pool_size)
    channel_slice = extents and _channel_slice(channels, extents[0] * extents[1], height, width)
    if not channel_slice:  # the map's size is not static, or the exact table would be too large
        @tf.custom_gradient
        def pool(features):
            return pool_sparse(features), lambda upstream: gradient_sparse(features, upstream)

        return pool(features)

    # Bins larger than the exact table's (a RoI reaching far beyond the image) take the
    # power-of-two table with every level; tf.cond compiles both under XLA and runs one.
    extent_y, extent_x = extents
    fits = tf.reduce_all(y_upper - y_lower <= extent_y) & tf.reduce_all(x_upper - x_lower <= extent_x)
    rows = _exact_rows(bins, batch, height, width, extent_y, extent_x)
    xla = in_xla_context()
    if xla:
        # XLA fuses the four gathers and their maximum into the one pass that writes the output,
        # and the table with the levels these bins need is a fraction of the exact table.
        fast_levels = (_levels(extent_y), _levels(extent_x))
        fast_corners = _sparse_corners(bins, batch, height, width, *fast_levels)

        def pool_fast(features):
            return _pool_sparse(features, fast_corners, empty, *fast_levels, channels)

    else:
        # Without fusion every intermediate is written out: one gather per slice of channels
        # from a table that fits in cache writes the output once.
        def pool_fast(features):
            return tf.reshape(_pool_exact(features, rows, extent_y, extent_x, channel_slice), output_shape)

    @tf.custom_gradient
    def pool(features):
        pooled = tf.cond(fits, lambda: pool_fast(features), lambda: pool_sparse(features))

        def gradient(upstream):
            return tf.cond(
                fits,
                lambda: _gradient_exact(features, upstream, rows, extent_y, extent_x, channel_slice, xla=xla),
                lambda: gradient_sparse(features, upstream),
            )

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
    rois = _check_inputs(features, rois, spatial_scale)
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
