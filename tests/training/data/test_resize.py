"""Aspect-preserving ("letterbox") and stretching resizes: the content size, the padding, and the
boxes and masks that `make_dataset` moves with the pixels (`layers.image_resize`)."""

import numpy as np
import pytest
import tensorflow as tf

from layers.image_resize import original_scale, resize_image, resize_mask, resized_size
from training.data import DatasetSource, Example, make_dataset

# A 40 x 80 image (H x W) with one object: rows 10..30, columns 20..60.
BOX = [10.0, 20.0, 30.0, 60.0]


def _wide_example():
    image = np.full((40, 80, 3), 40, np.uint8)
    image[10:30, 20:60] = 220
    mask = np.zeros((40, 80), np.uint8)
    mask[10:30, 20:60] = 1
    mask[:2] = 255  # ignored rows stay ignored (the first content row samples row 1)
    return Example(image=image, boxes=[BOX], classes=[1], mask=mask, source="wide")


def _source(*examples):
    return DatasetSource(list(examples), class_names=("thing",), task_kinds=("detection", "segmentation"),
                         class_source="--classes")


def _reference_size(size, output_size):
    """The letterbox's content size by the definition: one factor, round half up, at least 1."""
    (height, width), (out_height, out_width) = size, output_size
    factor = min(out_height / height, out_width / width)
    return [min(out_height, max(1, int(np.floor(height * factor + 0.5)))),
            min(out_width, max(1, int(np.floor(width * factor + 0.5))))]


def test_the_content_fits_inside_with_the_aspect_ratio_kept():
    assert resized_size((40, 80), (32, 32), resize="letterbox").numpy().tolist() == [16, 32]  # factor 0.4
    assert resized_size((80, 40), (32, 32), resize="letterbox").numpy().tolist() == [32, 16]
    assert resized_size((40, 80), (32, 64), resize="letterbox").numpy().tolist() == [32, 64]  # same aspect: no padding
    assert resized_size((4, 3), (2, 2), resize="letterbox").numpy().tolist() == [2, 2]  # 1.5 rounds up
    assert resized_size((3, 1000), (32, 32), resize="letterbox").numpy().tolist() == [1, 32]  # never 0 rows
    assert resized_size((40, 80), (32, 32), resize="stretch").numpy().tolist() == [32, 32]
    rng = np.random.default_rng(0)
    for _ in range(200):
        size, output = rng.integers(1, 700, 2).tolist(), rng.integers(1, 100, 2).tolist()
        assert resized_size(size, output, resize="letterbox").numpy().tolist() == _reference_size(size, output), (
            size, output)
    np.testing.assert_array_equal(original_scale((40, 80), (32, 32), resize="letterbox"), [2.5] * 4)
    np.testing.assert_array_equal(original_scale((40, 80), (32, 32), resize="stretch"), [1.25, 2.5, 1.25, 2.5])
    with pytest.raises(ValueError, match="resize must be one of .'stretch', 'letterbox'., got 'fit'"):
        resized_size((40, 80), (32, 32), resize="fit")


def test_a_letterboxed_image_is_scaled_once_and_padded_at_the_bottom():
    flat = np.full((40, 80, 3), 200, np.uint8)
    image, content = resize_image(flat, (32, 32), resize="letterbox")
    assert image.shape == (32, 32, 3) and content.numpy().tolist() == [16, 32]
    np.testing.assert_allclose(image.numpy()[:16], 200.0, atol=1e-3)  # a flat colour stays flat
    np.testing.assert_array_equal(image.numpy()[16:], 0.0)  # 16 rows of padding, black
    mask = np.zeros((40, 80), np.uint8)
    mask[10:30, 20:60] = 1
    resized = resize_mask(mask, (32, 32), resize="letterbox").numpy()
    assert resized.dtype == np.uint8 and resized.shape == (32, 32)
    np.testing.assert_array_equal(resized[16:], 255)  # the padding is ignored, never background
    # Nearest neighbour with half-pixel centres: content row i samples row floor((i + 0.5) * 2.5).
    rows, columns = np.floor((np.arange(16) + 0.5) * 2.5).astype(int), np.floor((np.arange(32) + 0.5) * 2.5).astype(int)
    np.testing.assert_array_equal(resized[:16], mask[rows][:, columns])


def test_make_dataset_letterboxes_image_boxes_and_mask_consistently():
    source = _source(_wide_example())
    options = dict(batch_size=1, image_size=(32, 32), training=False, resize="letterbox")
    images, targets = next(iter(make_dataset(source, task="detection", **options)))
    # Scale 0.4 on both axes, no offset: [10, 20, 30, 60] -> [4, 8, 12, 24].
    np.testing.assert_allclose(targets["boxes"].numpy()[0, 0], [4.0, 8.0, 12.0, 24.0], rtol=1e-6)
    images = images.numpy()[0]
    np.testing.assert_array_equal(images[16:], 0.0)
    object_pixels = np.argwhere(images[..., 0] > 130)  # the object's rows 4..11 and columns 8..23
    assert object_pixels.min(0).tolist() == [4, 8] and object_pixels.max(0).tolist() == [11, 23]
    _, masks = next(iter(make_dataset(source, task="segmentation", **options)))
    masks = masks.numpy()[0]
    np.testing.assert_array_equal(masks[16:], 255)
    np.testing.assert_array_equal(masks[0], 255)  # the example's own ignored row
    assert np.argwhere(masks == 1).min(0).tolist() == [4, 8] and np.argwhere(masks == 1).max(0).tolist() == [11, 23]


def test_stretch_is_unchanged_and_letterbox_of_a_square_into_a_square_is_the_same():
    source = _source(_wide_example())
    options = dict(batch_size=1, image_size=(32, 32), training=False)
    images, targets = next(iter(make_dataset(source, task="detection", **options)))
    np.testing.assert_allclose(targets["boxes"].numpy()[0, 0], [8.0, 8.0, 24.0, 24.0], rtol=1e-6)  # 0.8 and 0.4
    expected = tf.clip_by_value(tf.image.resize(source.examples[0].image, (32, 32), antialias=True), 0.0, 255.0)
    np.testing.assert_array_equal(images.numpy()[0], expected.numpy())
    pixels = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    square = Example(image=pixels, boxes=[[4, 6, 30, 40]], classes=[1], mask=np.ones((48, 48), np.uint8))
    for task in ("detection", "segmentation"):
        stretched = next(iter(make_dataset(_source(square), task=task, **options, resize="stretch")))
        letterboxed = next(iter(make_dataset(_source(square), task=task, **options, resize="letterbox")))
        for a, b in zip(tf.nest.flatten(stretched), tf.nest.flatten(letterboxed)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="make_dataset: resize must be one of"):
        make_dataset(source, task="detection", **options, resize="pad")


def test_training_augments_after_the_letterbox():
    source = _source(*[_wide_example() for _ in range(2)])
    dataset = make_dataset(source, task="segmentation", batch_size=2, image_size=(32, 32), training=True, seed=3,
                           epoch=0, resize="letterbox", augment={"color": False, "scale_range": None})
    images, masks = next(iter(dataset))
    assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32)
    # Flips and crops move the padding with the pixels: black pixels are labelled 255 wherever they went.
    padding = np.all(images.numpy() == 0.0, axis=-1)
    assert padding.sum() >= 2 * 16 * 32 and np.all(masks.numpy()[padding] == 255)


def test_resize_batch_is_resize_image_per_image_and_passes_a_batch_of_the_right_size_through():
    from layers.image_resize import resize_batch, resize_image

    rng = np.random.default_rng(0)
    for resize in ("stretch", "letterbox"):
        batch = rng.integers(0, 256, (2, 40, 80, 3)).astype("float32")
        got, content = resize_batch(batch, (32, 32), resize=resize)
        for image, served in zip(batch, np.asarray(got)):
            expected, expected_content = resize_image(image, (32, 32), resize=resize)
            np.testing.assert_allclose(served, np.asarray(expected), atol=1e-3)
            np.testing.assert_array_equal(np.asarray(content), np.asarray(expected_content))
    same = rng.integers(0, 256, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(resize_batch(same, (32, 32), resize="letterbox")[0]), same)
