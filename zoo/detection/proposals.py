"""Region proposals: selective search for Fast R-CNN, sliding windows and anchor grids.

Papers: Uijlings et al., "Selective Search for Object Recognition", IJCV 2013 (the proposals
of Fast R-CNN); Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083;
Ren et al., "Faster R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497 (anchors, section
3.1.1).

Shapes: B images of H x W pixels, N proposals per image, a feature map of Hf x Wf cells, A =
len(aspect_ratios) * len(scales) anchors per cell.

Boxes are `[ymin, xmin, ymax, xmax]` float32 in image pixels on the continuous axis of
`layers.boxes`: pixel row `i` covers `[i, i + 1)`, so a box covering pixel columns `x .. x + w - 1`
has `xmin = x` and `xmax = x + w`. Batches of proposals are `[B, N, 4]` with padding rows of
zeros (the RoI convention of `layers.RoIPooling`).

- `selective_search`, `selective_search_batch`: OpenCV's implementation (opencv-contrib's
  `ximgproc`), NumPy in and out, run on the CPU outside the graph, as the original Fast R-CNN
  precomputed its proposals.
- `anchor_grid`: the Faster R-CNN anchors of a feature map, unclipped (the RPN's anchors).
- `sliding_windows`, `SlidingWindowProposals`: the same windows over an image, clipped to it,
  in the graph; the proposal-free baseline for a Fast R-CNN head.

Anchor convention: the anchors of feature cell `(i, j)` are centred on
`((i + 0.5) * stride, (j + 0.5) * stride)`, the centre of the `stride x stride` block of pixels
the cell sits over. This is Caffe Faster R-CNN's centre `i * stride + (stride - 1) / 2` written
in continuous coordinates (its pixel `7.5` is the middle of pixels 0..15, which is `8.0` here);
torchvision centres them on `i * stride`, half a stride up and to the left. An anchor of scale
`s` and aspect ratio `r` (height / width, torchvision's and Caffe's definition) is
`s * sqrt(r)` pixels tall and `s / sqrt(r)` wide, so its area is `s ** 2`. Sizes are not rounded
(Caffe and torchvision round them to whole pixels). Per cell, anchors are ordered ratio-major,
scale fastest, and cells row-major, `[Hf, Wf, A]` flattened, as in both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import numbers
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import keras
import numpy as np
import tensorflow as tf

MODES = ("fast", "quality")
# py-faster-rcnn's `filter_small_boxes` threshold for selective-search boxes (pascal_voc config).
DEFAULT_MIN_SIZE = 2

# OpenCV ranks selective-search regions with C's rand() (level * rand() / RAND_MAX), a global
# state in libc that cv2.setRNGSeed does not touch. `seed` re-seeds it through libc's srand;
# the lock keeps two seeded calls of this module from interleaving their rand() sequences.
_LIBC_RAND_LOCK = threading.Lock()
_libc = None


def _srand(seed):
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            raise RuntimeError("selective_search: seed needs the C library's srand(), which was not found")
        _libc = ctypes.CDLL(name)
    _libc.srand(ctypes.c_uint(seed))


# --------------------------------------------------------------------------- validation


def _check_image(image, *, function, name="image"):
    """`image` as a C-contiguous `[H, W, 3]` uint8 NumPy array, or a clear error."""
    if isinstance(image, tf.Tensor):
        image = image.numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{function}: {name} must be one RGB image [H, W, 3], got shape {array.shape}")
    if array.dtype != np.uint8:
        raise TypeError(
            f"{function}: {name} must be uint8 pixels 0..255, got {array.dtype}; "
            "convert with np.clip(image, 0, 255).astype(np.uint8)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{function}: {name} is empty, shape {array.shape}")
    return np.ascontiguousarray(array)


def _check_options(mode, max_boxes, min_size, seed, *, function):
    if mode not in MODES:
        raise ValueError(f"{function}: mode must be one of {MODES}, got {mode!r}")
    if max_boxes is not None and (isinstance(max_boxes, bool) or not isinstance(max_boxes, numbers.Integral)
                                  or max_boxes < 1):
        raise ValueError(f"{function}: max_boxes must be a positive integer or None, got {max_boxes!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Real) or not 0 <= min_size < math.inf:
        raise ValueError(f"{function}: min_size must be a non-negative number of pixels, got {min_size!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or not 0 <= seed < 2**32):
        raise ValueError(f"{function}: seed must be None or an integer in [0, 2**32), got {seed!r}")


def positive_numbers(values, *, name, function):
    """`values` as a tuple of floats, or a ValueError naming `function` and `name` unless all are positive."""
    try:
        numbers_ = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers_ = ()
    if not numbers_ or not all(math.isfinite(v) and v > 0 for v in numbers_):
        raise ValueError(f"{function}: {name} must be a non-empty sequence of positive numbers, got {values!r}")
    return numbers_


def check_stride(stride, *, function):
    """`stride` as a positive int (a whole float is accepted), or a ValueError naming `function`."""
    # An integer, so that ceil(H / stride) is exact integer arithmetic in the graph and in
    # compute_output_shape alike (a float32 division could round across an integer).
    if isinstance(stride, float) and stride.is_integer():
        stride = int(stride)
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"{function}: stride must be a positive integer number of pixels, got {stride!r}")
    return int(stride)


# --------------------------------------------------------------------------- selective search


def _opencv_rects(bgr, mode, seed):
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    # The switch computes the colour spaces from the base image, so it comes after it.
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    if seed is None:
        return search.process()
    with _LIBC_RAND_LOCK:
        _srand(seed)
        return search.process()


def selective_search(image, *, mode="fast", max_boxes=2000, min_size=DEFAULT_MIN_SIZE, seed=None):
    """Selective-search proposals of one image, best-ranked first (OpenCV's ximgproc).

    OpenCV's "fast" mode is the paper's Selective Search Fast (HSV and Lab, k = 150, 300, 450,
    two similarity strategies), the setting of R-CNN and Fast R-CNN; "quality" adds three colour
    spaces, five k and two strategies, and is several times slower. OpenCV's box
    `(x, y, w, h)` covers pixel columns `x .. x + w - 1`, i.e. `[x, x + w)` on the continuous
    axis, and becomes `[y, x, y + h, x + w]`. Boxes smaller than `min_size` pixels on either
    side are dropped (py-faster-rcnn's `filter_small_boxes`), duplicates keep their first,
    best-ranked occurrence, and the first `max_boxes` remain, in OpenCV's ranking order.

    OpenCV ranks regions by hierarchy level times a random number drawn with C's `rand()`,
    ascending. Its level counts up from the initial segments (1) to the whole image, the
    reverse of the paper's, which counts down from the whole image: so OpenCV puts small regions
    first and the paper large ones (OpenCV's source says so), and a `max_boxes` cut tends to
    drop large boxes. The order (and which boxes survive `max_boxes`) changes from call to call
    unless `seed` is given, which re-seeds libc's `srand` just before the search: a process-wide state, shared
    with any other C code that calls `rand()`. The set of boxes before `max_boxes` does not
    depend on the seed. OpenCV's own parallel parts use `cv2.setNumThreads`; nothing here
    changes it.

    Args:
      image: `[H, W, 3]` uint8 RGB pixels (a NumPy array or an eager tensor). OpenCV works on
        BGR; the conversion happens here.
      mode: "fast" or "quality".
      max_boxes: keep at most this many boxes (Fast R-CNN uses about 2000), or None for all.
      min_size: smallest height and width kept, in pixels.
      seed: None, or an integer in [0, 2**32) that makes the ranking reproducible.

    Returns:
      `[N, 4]` float32 boxes `[ymin, xmin, ymax, xmax]` in pixels, inside `[0, H] x [0, W]`,
      N <= max_boxes (possibly 0).

    Example:
      >>> boxes = selective_search(cv2.cvtColor(cv2.imread("cat.jpg"), cv2.COLOR_BGR2RGB), seed=0)
      >>> boxes.shape, boxes.dtype  # N <= 2000 boxes, best-ranked first
      ((N, 4), dtype('float32'))
    """
    function = "selective_search"
    _check_options(mode, max_boxes, min_size, seed, function=function)
    image = _check_image(image, function=function)
    rects = _opencv_rects(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mode, seed)
    rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
    x, y, width, height = rects.T
    boxes = np.stack([y, x, y + height, x + width], axis=-1)
    boxes = boxes[(height >= min_size) & (width >= min_size)]
    # OpenCV already drops repeated rectangles; np.unique's first indices keep the ranking.
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_boxes is not None:
        boxes = boxes[:max_boxes]
    return boxes.astype(np.float32)


def selective_search_batch(images, *, mode="fast", max_boxes=2000, min_size=DEFAULT_MIN_SIZE, seed=None,
                           num_workers=None):
    """Selective search on a batch: `[B, N, 4]` proposals padded with rows of zeros.

    N is `max_boxes` (a fixed N for every call, so a `tf.function` fed with the result traces
    once), or the longest image's count when `max_boxes` is None. A real box is never all zeros
    (its sides are at least `max(min_size, 1)` pixels), so `np.any(rois != 0, axis=-1)` marks the
    real rows.

    Images run in parallel threads (OpenCV releases the GIL), `num_workers` of them, by default
    `cv2.getNumThreads()`, so `cv2.setNumThreads(n)` bounds this function as it bounds OpenCV.
    With a `seed`, images run one after another, image `b` seeded with `seed + b`, so each
    image's ranking is reproducible.

    Args:
      images: `[B, H, W, 3]` uint8 RGB array, or a sequence of `[H_b, W_b, 3]` uint8 images of
        any sizes (each image's boxes are in its own pixels).
      mode, max_boxes, min_size, seed: as in `selective_search`.
      num_workers: threads to use, or None for `cv2.getNumThreads()`.

    Returns:
      `[B, N, 4]` float32 boxes `[ymin, xmin, ymax, xmax]`, zero rows after each image's boxes.

    Example:
      >>> rois = selective_search_batch(batch_of_images, max_boxes=2000)  # [B, 2000, 4]
    """
    function = "selective_search_batch"
    _check_options(mode, max_boxes, min_size, seed, function=function)
    if isinstance(images, tf.Tensor):
        images = images.numpy()
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"{function}: images must be [B, H, W, 3] or a list of [H, W, 3], got shape {images.shape}")
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        raise TypeError(f"{function}: images must be a [B, H, W, 3] array or a list of images, got {type(images).__name__}")
    images = [_check_image(image, function=function, name=f"images[{b}]") for b, image in enumerate(images)]
    if num_workers is None:
        num_workers = max(1, cv2.getNumThreads())
    elif isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 1:
        raise ValueError(f"{function}: num_workers must be a positive integer or None, got {num_workers!r}")

    def search(index):
        image_seed = None if seed is None else (seed + index) % 2**32
        return selective_search(images[index], mode=mode, max_boxes=max_boxes, min_size=min_size, seed=image_seed)

    if seed is not None or num_workers == 1 or len(images) < 2:
        per_image = [search(b) for b in range(len(images))]
    else:
        with ThreadPoolExecutor(min(num_workers, len(images))) as pool:
            per_image = list(pool.map(search, range(len(images))))
    length = max_boxes if max_boxes is not None else max((len(boxes) for boxes in per_image), default=0)
    rois = np.zeros((len(images), length, 4), np.float32)
    for b, boxes in enumerate(per_image):
        rois[b, : len(boxes)] = boxes
    return rois


# --------------------------------------------------------------------------- anchors and windows


def _cell_anchors(scales, aspect_ratios):
    """`[A, 4]` float32 anchors centred on (0, 0), ratio-major, scale fastest."""
    ratios = tf.constant(aspect_ratios, tf.float32)
    sizes = tf.constant(scales, tf.float32)
    root = tf.sqrt(ratios)[:, None]
    half_h = tf.reshape(0.5 * sizes[None, :] * root, [-1])
    half_w = tf.reshape(0.5 * sizes[None, :] / root, [-1])
    return tf.stack([-half_h, -half_w, half_h, half_w], axis=-1)


def _grid_size(value, *, name, function):
    tensor = tf.convert_to_tensor(value)
    if not tensor.dtype.is_integer or tensor.shape.rank not in (None, 0):
        raise ValueError(f"{function}: {name} must be a non-negative integer (a scalar), got {value!r}")
    if isinstance(value, numbers.Integral) and value < 0:
        raise ValueError(f"{function}: {name} must be non-negative, got {value!r}")
    return tf.cast(tensor, tf.int32)


def anchor_grid(feature_height, feature_width, *, stride, scales=(128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0)):
    """The Faster R-CNN anchors of an `Hf x Wf` feature map, in image pixels, not clipped.

    Cell `(i, j)`'s anchors are centred on `((i + 0.5) * stride, (j + 0.5) * stride)`; see the
    module docstring for the convention and how it relates to Caffe's and torchvision's.

    Args:
      feature_height, feature_width: `Hf`, `Wf`, Python ints or int scalar tensors (dynamic
        sizes work inside `tf.function`).
      stride: image pixels per feature cell (an integer), e.g. 16 for VGG16's conv5_3 and
        ResNet's C4.
      scales: anchor sides in pixels (the square root of the area); the paper's are
        (128, 256, 512).
      aspect_ratios: heights / widths; the paper's are (0.5, 1, 2).

    Returns:
      `[Hf * Wf * A, 4]` float32 anchors `[ymin, xmin, ymax, xmax]`, ordered `[Hf, Wf, A]`.

    Example:
      >>> anchor_grid(1, 2, stride=16, scales=(16,), aspect_ratios=(1.0,))
      [[0, 0, 16, 16], [0, 16, 16, 32]]
    """
    function = "anchor_grid"
    stride = check_stride(stride, function=function)
    scales = positive_numbers(scales, name="scales", function=function)
    aspect_ratios = positive_numbers(aspect_ratios, name="aspect_ratios", function=function)
    height = _grid_size(feature_height, name="feature_height", function=function)
    width = _grid_size(feature_width, name="feature_width", function=function)
    centres_y = (tf.cast(tf.range(height), tf.float32) + 0.5) * stride
    centres_x = (tf.cast(tf.range(width), tf.float32) + 0.5) * stride
    grid_y, grid_x = tf.meshgrid(centres_y, centres_x, indexing="ij")
    centres = tf.reshape(tf.stack([grid_y, grid_x, grid_y, grid_x], axis=-1), [-1, 1, 4])
    anchors = centres + _cell_anchors(scales, aspect_ratios)[None]
    return tf.reshape(anchors, [-1, 4])


def _window_grid_size(size, stride):
    # ceil(size / stride) cells: every pixel lies within half a stride of a window centre, and
    # it is the map size of a backbone with "same" padding.
    return (size + stride - 1) // stride


def sliding_windows(image_height, image_width, *, stride=16, scales=(64, 128, 256), aspect_ratios=(0.5, 1.0, 2.0)):
    """Dense sliding windows over an image, clipped to it: proposals without a proposal method.

    The windows are `anchor_grid(ceil(H / stride), ceil(W / stride), ...)` clipped to
    `[0, H] x [0, W]`. Their number depends only on the image size, never on its content, so
    clipped windows are kept even where they coincide. When H or W is not a multiple of the
    stride the last row or column of centres lies up to half a stride past the image; a window
    of side at least `stride` still overlaps the image, a smaller one may clip to zero area.

    Args:
      image_height, image_width: H, W in pixels, Python ints or int scalar tensors.
      stride: pixels between window centres (an integer).
      scales: window sides in pixels (square root of the area).
      aspect_ratios: heights / widths.

    Returns:
      `[ceil(H / stride) * ceil(W / stride) * A, 4]` float32 `[ymin, xmin, ymax, xmax]` tensor.

    Example:
      >>> sliding_windows(32, 48, stride=16, scales=(32,), aspect_ratios=(1.0,))[:2]
      [[0, 0, 24, 24], [0, 8, 24, 40]]
    """
    function = "sliding_windows"
    stride = check_stride(stride, function=function)
    height = _grid_size(image_height, name="image_height", function=function)
    width = _grid_size(image_width, name="image_width", function=function)
    windows = anchor_grid(
        _window_grid_size(height, stride), _window_grid_size(width, stride),
        stride=stride, scales=scales, aspect_ratios=aspect_ratios,
    )
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    return tf.minimum(tf.maximum(windows, 0.0), size)


def _spread_to(windows, max_proposals):
    """Exactly `max_proposals` rows: evenly spaced windows, or zero padding rows."""
    count = tf.shape(windows)[0]
    # Row k takes window floor(k * count / max_proposals): the whole grid, every scale.
    picks = (tf.range(max_proposals, dtype=tf.int64) * tf.cast(count, tf.int64)) // max_proposals
    spread = tf.gather(windows, tf.cast(picks, tf.int32))
    padded = tf.pad(windows, [[0, tf.maximum(max_proposals - count, 0)], [0, 0]])[:max_proposals]
    chosen = tf.cond(count > max_proposals, lambda: spread, lambda: padded)
    return tf.reshape(chosen, [max_proposals, 4])


@keras.saving.register_keras_serializable(package="zoo")
class SlidingWindowProposals(keras.layers.Layer):
    """The same dense sliding windows for every image of a batch, as `[B, N, 4]` RoIs.

    A proposal method that needs no precomputed boxes, for Fast R-CNN heads trained or served
    without selective search. The windows are those of `sliding_windows` for the batch's
    (padded) image size; pixels do not matter, only the shape.

    Args:
      stride: pixels between window centres.
      scales: window sides in pixels.
      aspect_ratios: heights / widths.
      max_proposals: None for every window (`N = ceil(H / stride) * ceil(W / stride) * A`), or
        a fixed N: with more windows than that, N evenly spaced ones (in grid order, so they
        still cover the image); with fewer, zero padding rows after them.

    Call arguments:
      images: `[B, H, W, C]` images (any dtype; H and W may be unknown until run time).

    Returns:
      `[B, N, 4]` float32 boxes `[ymin, xmin, ymax, xmax]` in pixels.

    Example:
      >>> images = keras.Input((None, None, 3))
      >>> rois = SlidingWindowProposals(stride=32, max_proposals=1000)(images)  # [B, 1000, 4]
    """

    def __init__(self, *, stride=16, scales=(64, 128, 256), aspect_ratios=(0.5, 1.0, 2.0), max_proposals=None,
                 **kwargs):
        # Boxes are pixel coordinates: float32 under any dtype policy (see RoIPooling).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        name = type(self).__name__
        self.stride = check_stride(stride, function=name)
        self.scales = positive_numbers(scales, name="scales", function=name)
        self.aspect_ratios = positive_numbers(aspect_ratios, name="aspect_ratios", function=name)
        if max_proposals is not None and (isinstance(max_proposals, bool)
                                          or not isinstance(max_proposals, numbers.Integral) or max_proposals < 1):
            raise ValueError(f"{name}: max_proposals must be a positive integer or None, got {max_proposals!r}")
        self.max_proposals = None if max_proposals is None else int(max_proposals)

    def call(self, images):
        shape = tf.shape(images)
        windows = sliding_windows(
            shape[1], shape[2], stride=self.stride, scales=self.scales, aspect_ratios=self.aspect_ratios
        )
        if self.max_proposals is not None:
            windows = _spread_to(windows, self.max_proposals)
        return tf.tile(windows[None], [shape[0], 1, 1])

    def _num_proposals(self, height, width):
        if self.max_proposals is not None:
            return self.max_proposals
        if height is None or width is None:
            return None
        per_cell = len(self.scales) * len(self.aspect_ratios)
        return -(-height // self.stride) * -(-width // self.stride) * per_cell

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"SlidingWindowProposals: images must be [B, H, W, C], got shape {tuple(input_shape)}")
        return (input_shape[0], self._num_proposals(input_shape[1], input_shape[2]), 4)

    def compute_output_spec(self, images):
        return keras.KerasTensor(self.compute_output_shape(images.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            stride=self.stride, scales=list(self.scales), aspect_ratios=list(self.aspect_ratios),
            max_proposals=self.max_proposals,
        )
        return config
