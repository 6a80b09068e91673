"""Proposals: selective search through OpenCV, sliding windows and the anchor grid.

The anchor references are written directly in NumPy from the module's stated convention
(centres at (i + 0.5) * stride, height s * sqrt(r), width s / sqrt(r), ratio-major order), and
one small case is spelled out by hand.
"""

import itertools

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from layers import boxes as box_ops
from zoo.detection import (
    SlidingWindowProposals,
    proposals,
    anchor_grid,
    selective_search,
    selective_search_batch,
    sliding_windows,
)

RECTANGLES = np.array([[20, 30, 60, 90], [70, 100, 110, 150]], np.float32)  # yxyx, continuous pixels


def two_rectangles():
    """A plain grey 120 x 160 image with a red and a green flat rectangle (RGB)."""
    image = np.full((120, 160, 3), 200, np.uint8)
    image[20:60, 30:90] = (255, 0, 0)
    image[70:110, 100:150] = (0, 128, 0)
    return image


def textured(rng, height=96, width=128):
    """Smoothed noise: many segments, so that selective search returns many boxes."""
    noise = rng.normal(size=(height, width, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 3)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return noise.astype(np.uint8)


def opencv_boxes(image_rgb, mode, seed):
    """OpenCV's own output for the same image, converted by hand: (x, y, w, h) -> yxyx."""
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    search.switchToSelectiveSearchFast() if mode == "fast" else search.switchToSelectiveSearchQuality()
    proposals._srand(seed)
    rects = search.process()
    return np.array([[y, x, y + h, x + w] for x, y, w, h in rects], np.float32)


# --------------------------------------------------------------------------- selective search


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_selective_search_finds_both_rectangles(mode):
    found = selective_search(two_rectangles(), mode=mode, seed=0)
    best = box_ops.iou(RECTANGLES, found).numpy().max(axis=1)
    assert np.all(best > 0.9), best


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_selective_search_returns_float32_yxyx_inside_the_image_without_duplicates(mode, rng):
    image = textured(rng)
    found = selective_search(image, mode=mode, seed=1, min_size=3)
    assert found.dtype == np.float32 and found.ndim == 2 and found.shape[1] == 4 and len(found) > 20
    assert np.all(found[:, :2] >= 0) and np.all(found[:, 2] <= 96) and np.all(found[:, 3] <= 128)
    assert np.all(found[:, 2] - found[:, 0] >= 3) and np.all(found[:, 3] - found[:, 1] >= 3)
    assert len(np.unique(found, axis=0)) == len(found)
    assert np.all(found == np.round(found))  # whole pixels, as OpenCV gives them


def test_selective_search_keeps_opencv_ranking_and_converts_xywh_with_the_continuous_convention(rng):
    image = textured(rng)
    expected = opencv_boxes(image, "fast", seed=5)
    found = selective_search(image, seed=5, max_boxes=None, min_size=0)
    np.testing.assert_array_equal(found, expected)
    # The whole image is one of the regions: (0, 0, W, H) covers columns 0..W-1, i.e. [0, W].
    assert [0, 0, 96, 128] in found.tolist()
    # Given RGB as if it were BGR, OpenCV segments other colours: the conversion matters.
    assert not np.array_equal(opencv_boxes(image[..., ::-1].copy(), "fast", seed=5), expected)


def test_min_size_drops_small_boxes_and_keeps_the_rest_in_order(rng):
    image = textured(rng)
    every = selective_search(image, seed=2, max_boxes=None, min_size=0)
    sides = np.minimum(every[:, 2] - every[:, 0], every[:, 3] - every[:, 1])
    np.testing.assert_array_equal(selective_search(image, seed=2, max_boxes=None, min_size=10), every[sides >= 10])


def test_max_boxes_is_the_top_of_the_ranking_and_seed_makes_it_reproducible(rng):
    image = textured(rng)
    every = selective_search(image, seed=3, max_boxes=None)
    top = selective_search(image, seed=3, max_boxes=7)
    np.testing.assert_array_equal(top, every[:7])
    np.testing.assert_array_equal(selective_search(image, seed=3), selective_search(image, seed=3))
    # The ranking is random, the set of boxes is not.
    other = selective_search(image, seed=4, max_boxes=None)
    assert not np.array_equal(other, every)
    assert {tuple(b) for b in other} == {tuple(b) for b in every}


def test_selective_search_leaves_opencv_threads_alone():
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        selective_search(two_rectangles(), seed=0)
        selective_search_batch([two_rectangles()] * 2, max_boxes=5)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((8, 8), np.uint8), ValueError, r"\[H, W, 3\].*\(8, 8\)"),
        (np.zeros((1, 8, 8, 3), np.uint8), ValueError, r"\[H, W, 3\]"),
        (np.zeros((8, 8, 4), np.uint8), ValueError, r"RGB.*\(8, 8, 4\)"),
        (np.zeros((8, 8, 3), np.float32), TypeError, r"uint8.*float32"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
        (np.zeros((8, 0, 3), np.uint8), ValueError, "empty"),
    ],
)
def test_bad_images_are_clear_errors(image, error, message):
    with pytest.raises(error, match=message):
        selective_search(image)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "slow"}, "mode"),
        ({"max_boxes": 0}, "max_boxes"),
        ({"max_boxes": 2.5}, "max_boxes"),
        ({"min_size": -1}, "min_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        selective_search(two_rectangles(), **options)


def test_tiny_images_work():
    found = selective_search(np.zeros((1, 1, 3), np.uint8), min_size=0)
    np.testing.assert_array_equal(found, [[0, 0, 1, 1]])


def test_batch_pads_with_zero_rows_and_matches_single_images(rng):
    images = [two_rectangles(), textured(rng, 64, 80)]
    rois = selective_search_batch(images, max_boxes=300, seed=10)
    assert rois.shape == (2, 300, 4) and rois.dtype == np.float32
    for index, image in enumerate(images):
        single = selective_search(image, max_boxes=300, seed=10 + index)
        np.testing.assert_array_equal(rois[index, : len(single)], single)
        np.testing.assert_array_equal(rois[index, len(single):], 0)
        assert np.any(rois[index] != 0, axis=-1).sum() == len(single)


def test_batch_in_threads_finds_the_same_boxes_as_one_by_one(rng):
    images = np.stack([textured(rng, 64, 64) for _ in range(3)])
    threaded = selective_search_batch(images, max_boxes=None, num_workers=3)
    for index in range(3):
        real = threaded[index][np.any(threaded[index] != 0, axis=-1)]
        single = selective_search(images[index], max_boxes=None)
        assert {tuple(b) for b in real} == {tuple(b) for b in single}
    # max_boxes=None pads to the longest image.
    assert threaded.shape[1] == max(len(selective_search(image, max_boxes=None)) for image in images)


def test_batch_errors_name_the_image():
    with pytest.raises(TypeError, match=r"images\[1\].*uint8"):
        selective_search_batch([two_rectangles(), two_rectangles().astype(np.float32)])
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        selective_search_batch(two_rectangles())
    with pytest.raises(ValueError, match="num_workers"):
        selective_search_batch([two_rectangles()], num_workers=0)


# --------------------------------------------------------------------------- anchors and windows


def reference_anchors(feature_height, feature_width, stride, scales, aspect_ratios):
    rows = []
    for i, j in itertools.product(range(feature_height), range(feature_width)):
        centre_y, centre_x = (i + 0.5) * stride, (j + 0.5) * stride
        for ratio, scale in itertools.product(aspect_ratios, scales):
            height, width = scale * np.sqrt(ratio), scale / np.sqrt(ratio)
            rows.append([centre_y - height / 2, centre_x - width / 2, centre_y + height / 2, centre_x + width / 2])
    return np.array(rows, np.float64).reshape(-1, 4)


def test_sliding_windows_of_a_small_image_by_hand():
    # 32 x 48 image, stride 16: centres y in {8, 24}, x in {8, 24, 40}. Scale 32 with ratios
    # 1/4, 1, 4 gives windows of 16 x 64, 32 x 32 and 64 x 16 (height x width), then clipped.
    windows = sliding_windows(32, 48, stride=16, scales=(32,), aspect_ratios=(0.25, 1.0, 4.0))
    expected = [
        [0, 0, 16, 40], [0, 0, 24, 24], [0, 0, 32, 16],      # cell (0, 0), centre (8, 8)
        [0, 0, 16, 48], [0, 8, 24, 40], [0, 16, 32, 32],     # cell (0, 1), centre (8, 24)
        [0, 8, 16, 48], [0, 24, 24, 48], [0, 32, 32, 48],    # cell (0, 2), centre (8, 40)
        [16, 0, 32, 40], [8, 0, 32, 24], [0, 0, 32, 16],     # cell (1, 0), centre (24, 8)
        [16, 0, 32, 48], [8, 8, 32, 40], [0, 16, 32, 32],    # cell (1, 1), centre (24, 24)
        [16, 8, 32, 48], [8, 24, 32, 48], [0, 32, 32, 48],   # cell (1, 2), centre (24, 40)
    ]
    assert windows.dtype == tf.float32
    np.testing.assert_array_equal(windows.numpy(), expected)


@pytest.mark.parametrize("height, width, stride", [(32, 48, 16), (37, 50, 16), (100, 64, 32), (5, 7, 8)])
def test_sliding_windows_equal_the_numpy_reference(height, width, stride):
    scales, ratios = (24, 64, 128), (0.5, 1.0, 2.0)
    cells_y, cells_x = -(-height // stride), -(-width // stride)
    expected = np.clip(reference_anchors(cells_y, cells_x, stride, scales, ratios), 0, [height, width] * 2)
    windows = sliding_windows(height, width, stride=stride, scales=scales, aspect_ratios=ratios).numpy()
    assert windows.shape == (cells_y * cells_x * 9, 4)
    np.testing.assert_allclose(windows, expected, rtol=0, atol=1e-4)


def test_anchor_grid_is_unclipped_and_matches_caffe_centres():
    anchors = anchor_grid(3, 4, stride=16, scales=(128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0)).numpy()
    np.testing.assert_allclose(anchors, reference_anchors(3, 4, 16, (128, 256, 512), (0.5, 1, 2)), atol=1e-4)
    assert anchors.min() < 0
    # Caffe's inclusive-pixel centre i * stride + (stride - 1) / 2 is the middle of pixel
    # (i * stride + 7.5), i.e. 0.5 further on the continuous axis.
    centres_y = (anchors[:, 0] + anchors[:, 2]) / 2
    np.testing.assert_allclose(np.unique(np.round(centres_y, 3)), np.arange(3) * 16 + (16 - 1) / 2 + 0.5)
    areas = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    np.testing.assert_allclose(areas[:9], np.tile([128.0**2, 256.0**2, 512.0**2], 3), rtol=1e-5)


def test_windows_follow_dynamic_sizes_inside_tf_function():
    spec = tf.TensorSpec([], tf.int32)
    windows = tf.function(lambda h, w: sliding_windows(h, w, stride=16), input_signature=[spec, spec])
    anchors = tf.function(lambda h, w: anchor_grid(h, w, stride=16), input_signature=[spec, spec])
    for height, width in [(32, 48), (33, 17), (600, 800)]:
        np.testing.assert_array_equal(windows(height, width).numpy(), sliding_windows(height, width).numpy())
    np.testing.assert_array_equal(anchors(2, 3).numpy(), anchor_grid(2, 3, stride=16).numpy())
    assert anchor_grid(0, 3, stride=16).shape == (0, 4)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stride": 0}, "stride"),
        ({"stride": 2.5}, "stride"),
        ({"scales": ()}, "scales"),
        ({"aspect_ratios": (1.0, -2.0)}, "aspect_ratios"),
    ],
)
def test_bad_window_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        sliding_windows(32, 32, **options)
    with pytest.raises(ValueError, match=message):
        SlidingWindowProposals(**options)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="image_height"):
        sliding_windows(32.0, 32)
    with pytest.raises(ValueError, match="feature_width"):
        anchor_grid(2, -1, stride=16)


# --------------------------------------------------------------------------- layer


def test_layer_gives_every_image_the_same_windows():
    layer = SlidingWindowProposals(stride=16, scales=(32,), aspect_ratios=(0.25, 1.0, 4.0))
    rois = layer(np.zeros((2, 32, 48, 3), np.uint8))
    expected = sliding_windows(32, 48, stride=16, scales=(32,), aspect_ratios=(0.25, 1.0, 4.0))
    assert rois.shape == (2, 18, 4) and rois.dtype == tf.float32
    np.testing.assert_array_equal(rois[0], expected)
    np.testing.assert_array_equal(rois[1], expected)
    assert layer.compute_output_shape((2, 32, 48, 3)) == (2, 18, 4)


def test_max_proposals_spreads_over_the_grid_or_pads_with_zeros():
    windows = sliding_windows(64, 64, stride=16, scales=(32,), aspect_ratios=(1.0,)).numpy()  # 16 windows
    spread = SlidingWindowProposals(stride=16, scales=(32,), aspect_ratios=(1.0,), max_proposals=4)
    np.testing.assert_array_equal(spread(np.zeros((1, 64, 64, 3)))[0], windows[[0, 4, 8, 12]])
    padded = SlidingWindowProposals(stride=16, scales=(32,), aspect_ratios=(1.0,), max_proposals=20)
    rois = padded(np.zeros((3, 64, 64, 3))).numpy()
    assert rois.shape == (3, 20, 4)
    np.testing.assert_array_equal(rois[:, :16], np.broadcast_to(windows, (3, 16, 4)))
    np.testing.assert_array_equal(rois[:, 16:], 0)
    with pytest.raises(ValueError, match="max_proposals"):
        SlidingWindowProposals(max_proposals=0)


def test_layer_in_a_functional_model_round_trips_through_config_and_keras_file(tmp_path):
    images = keras.Input((None, None, 3))
    layer = SlidingWindowProposals(stride=32, scales=(48, 96), aspect_ratios=(0.5, 2.0), max_proposals=50)
    model = keras.Model(images, layer(images))
    assert model.output.shape == (None, 50, 4)
    batch = np.zeros((2, 100, 130, 3), np.float32)
    expected = model(batch).numpy()

    config = layer.get_config()
    assert config["stride"] == 32 and config["scales"] == [48.0, 96.0] and config["max_proposals"] == 50
    clone = SlidingWindowProposals.from_config(config)
    np.testing.assert_array_equal(clone(batch), expected)

    model.save(tmp_path / "windows.keras")
    loaded = keras.saving.load_model(tmp_path / "windows.keras", safe_mode=True)
    assert isinstance(loaded.layers[-1], SlidingWindowProposals)
    np.testing.assert_array_equal(loaded(batch), expected)


def test_layer_outputs_float32_under_mixed_precision():
    layer = SlidingWindowProposals(stride=16, scales=(32,), dtype="mixed_float16")
    rois = layer(tf.zeros((1, 32, 32, 3), tf.float16))
    assert rois.dtype == tf.float32
