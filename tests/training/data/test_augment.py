"""Augmentation: boxes stay the tight boxes of the augmented mask; seeds make it reproducible."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from training.data.augment import augment, color_jitter, random_crop_with_padding, random_horizontal_flip, random_scale


def tight_box(pixels):
    rows = np.flatnonzero(pixels.any(axis=1))
    columns = np.flatnonzero(pixels.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([rows[0], columns[0], rows[-1] + 1, columns[-1] + 1], np.float32)


@st.composite
def scenes(draw):
    """An image with 1..3 disjoint rectangles (class ids 1, 2, 3), one per horizontal band."""
    height = draw(st.integers(3, 18))
    width = draw(st.integers(2, 18))
    count = draw(st.integers(1, min(3, height)))
    band = height // count
    mask = np.zeros((height, width), np.uint8)
    boxes = []
    for index in range(count):
        top = draw(st.integers(index * band, (index + 1) * band - 1))
        bottom = draw(st.integers(top + 1, (index + 1) * band))
        left = draw(st.integers(0, width - 1))
        right = draw(st.integers(left + 1, width))
        mask[top:bottom, left:right] = index + 1
        boxes.append([top, left, bottom, right])
    image = np.stack([mask * 50, mask * 20 + 5, np.full_like(mask, 200)], axis=-1).astype(np.uint8)
    seed = draw(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)))
    return image, np.array(boxes, np.float32), mask, np.array(seed, np.int64)


def _check_exact(boxes, mask, keep=None):
    for index, box in enumerate(np.asarray(boxes)):
        found = tight_box(np.asarray(mask) == index + 1)
        if keep is not None and not keep[index]:
            assert found is None, f"box {index} dropped but its pixels remain at {found}"
            np.testing.assert_array_equal(box, 0)
        else:
            assert found is not None, f"box {index} kept as {box} but its pixels are gone"
            np.testing.assert_array_equal(box, found)


def test_flip_by_hand():
    image = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    mask = np.array([[0, 1, 1, 0, 0], [0, 1, 1, 0, 255]], np.uint8)
    boxes = [[0.0, 1.0, 2.0, 3.0], [0.5, 0.0, 1.0, 1.5]]
    flipped, flipped_boxes, flipped_mask = random_horizontal_flip(image, boxes, mask, seed=[1, 2], probability=1.0)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, [[0, 0, 1, 1, 0], [255, 0, 1, 1, 0]])
    np.testing.assert_allclose(flipped_boxes, [[0.0, 2.0, 2.0, 4.0], [0.5, 3.5, 1.0, 5.0]])
    assert flipped.dtype == tf.uint8 and flipped_mask.dtype == tf.uint8
    same, same_boxes, same_mask = random_horizontal_flip(image, boxes, mask, seed=[1, 2], probability=0.0)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(same_boxes, boxes)
    np.testing.assert_array_equal(same_mask, mask)


def test_flip_happens_about_half_the_time_and_follows_the_seed():
    image = np.zeros((2, 3, 3), np.uint8)
    flipped = tf.function(lambda seed: random_horizontal_flip(image, [[0.0, 0.0, 1.0, 1.0]], seed=seed)[1][0, 1] == 2.0)
    flips = [bool(flipped(tf.constant([s, 0]))) for s in range(200)]
    assert 70 < sum(flips) < 130
    assert flips == [bool(flipped(tf.constant([s, 0]))) for s in range(200)]


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(scene=scenes())
def test_flip_keeps_boxes_tight_on_the_mask(scene):
    image, boxes, mask, seed = scene
    _, boxes, mask = random_horizontal_flip(image, boxes, mask, seed=seed)
    _check_exact(boxes, mask)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(scene=scenes(), output_size=st.tuples(st.integers(1, 24), st.integers(1, 24)))
def test_crop_with_padding_keeps_boxes_tight_and_drops_exactly_the_vanished(scene, output_size):
    image, boxes, mask, seed = scene
    cropped, boxes, cropped_mask, keep = random_crop_with_padding(
        image, boxes, mask, seed=seed, output_size=output_size
    )
    assert tuple(cropped.shape) == output_size + (3,) and tuple(cropped_mask.shape) == output_size
    _check_exact(boxes, cropped_mask, keep.numpy())
    # Padding is 0 in the image and 255 in the mask; the image's own pixels are never 0 in
    # channel 2, so the two must mark the same pixels.
    np.testing.assert_array_equal(cropped.numpy()[..., 2] == 0, cropped_mask.numpy() == 255)
    assert np.all(cropped.numpy()[cropped_mask.numpy() == 255] == 0)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(scene=scenes())
def test_scale_keeps_boxes_within_half_a_pixel_of_the_mask(scene):
    image, boxes, mask, seed = scene
    scaled, scaled_boxes, scaled_mask = random_scale(image, boxes, mask, seed=seed, scale_range=(0.5, 2.0))
    assert scaled.shape[:2] == scaled_mask.shape
    ratio = np.array(tuple(scaled_mask.shape) * 2, np.float32) / np.array(mask.shape * 2, np.float32)
    np.testing.assert_allclose(scaled_boxes, boxes * ratio, rtol=1e-6)
    for index, box in enumerate(scaled_boxes.numpy()):
        found = tight_box(scaled_mask.numpy() == index + 1)
        if found is None:  # a one-pixel object shrunk below a pixel between the sample points
            assert min(box[2] - box[0], box[3] - box[1]) < 1.0
        else:
            np.testing.assert_allclose(box, found, atol=0.5 + 1e-4)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(scene=scenes(), output_size=st.tuples(st.integers(4, 20), st.integers(4, 20)))
def test_augment_keeps_boxes_on_the_mask(scene, output_size):
    image, boxes, mask, seed = scene
    out, out_boxes, out_mask, keep = augment(
        image, boxes, mask, seed=seed, output_size=output_size, scale_range=(0.5, 2.0)
    )
    assert out.dtype == tf.float32 and tuple(out.shape) == output_size + (3,)
    out_mask, keep = out_mask.numpy(), keep.numpy()
    for index, box in enumerate(out_boxes.numpy()):
        found = tight_box(out_mask == index + 1)
        if keep[index] and found is not None:
            np.testing.assert_allclose(box, found, atol=0.5 + 1e-4)
        elif keep[index]:
            assert min(box[2] - box[0], box[3] - box[1]) < 1.0
        else:
            np.testing.assert_array_equal(box, 0)
            if found is not None:  # a sliver under min_box_size, at most one pixel thick
                assert min(found[2] - found[0], found[3] - found[1]) <= 1.0


def test_augment_is_a_function_of_the_seed_in_eager_and_graph_mode():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (20, 24), dtype=np.uint8)
    boxes = np.array([[2, 3, 10, 12], [5, 5, 19, 23]], np.float32)
    eager = augment(image, boxes, mask, seed=[3, 4], output_size=(16, 16))
    graph = tf.function(lambda seed: augment(image, boxes, mask, seed=seed, output_size=(16, 16)))(tf.constant([3, 4]))
    again = augment(image, boxes, mask, seed=[3, 4], output_size=(16, 16))
    other = augment(image, boxes, mask, seed=[3, 5], output_size=(16, 16))
    for a, b, c in zip(eager, graph, again):
        np.testing.assert_allclose(a, b, atol=1e-3)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(eager[0], other[0])


def test_color_jitter_range_seed_and_off_switch():
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    jittered = color_jitter(image, seed=[0, 1]).numpy()
    assert jittered.dtype == np.float32 and jittered.min() >= 0 and jittered.max() <= 255
    np.testing.assert_array_equal(jittered, color_jitter(image, seed=[0, 1]))
    assert not np.allclose(jittered, color_jitter(image, seed=[0, 2]))
    assert not np.allclose(jittered, image)
    off = color_jitter(image, seed=[0, 1], brightness=0, contrast=0, saturation=0, hue=0)
    np.testing.assert_allclose(off, image, atol=1e-3)


def test_crop_places_a_small_image_anywhere_in_the_window():
    image = np.full((2, 2, 3), 9, np.uint8)
    corners = set()
    for s in range(60):
        cropped, boxes, _, keep = random_crop_with_padding(
            image, [[0.0, 0.0, 2.0, 2.0]], seed=[s, 1], output_size=(4, 5)
        )
        assert keep.numpy().all()
        y, x = np.argwhere(cropped.numpy()[..., 0] == 9)[0]
        np.testing.assert_array_equal(boxes, [[y, x, y + 2, x + 2]])
        corners.add((y, x))
    assert corners == {(y, x) for y in range(3) for x in range(4)}


def test_bad_seed_and_scale_range():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="seed must be a \\[2\\] int"):
        random_horizontal_flip(image, None, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="scale_range"):
        random_scale(image, None, seed=[1, 2], scale_range=(2.0, 1.0))


def test_augment_defaults_keep_the_input_size_and_pass_none_through():
    image = np.random.default_rng(2).integers(0, 256, (12, 18, 3), dtype=np.uint8)
    out, boxes, mask, keep = augment(image, None, None, seed=[0, 0])
    assert out.shape == (12, 18, 3) and boxes is None and mask is None and keep.shape == (0,)


def test_deeplab_augmentation_pads_the_image_with_the_mean_and_the_mask_with_ignore():
    from training.segmentation import DEEPLAB_AUGMENTATION

    image = np.full((16, 16, 3), 10, np.uint8)
    mask = np.ones((16, 16), np.uint8)
    # Scale 0.5 of a 16 px image cropped to 32 px: most of the window is padding.
    options = {**DEEPLAB_AUGMENTATION, "scale_range": (0.5, 0.5)}
    out_image, _, out_mask, _ = augment(image, None, mask, seed=[3, 4], output_size=(32, 32), **options)
    out_image, out_mask = np.asarray(out_image), np.asarray(out_mask)
    padded = out_mask == 255
    assert padded.sum() == 32 * 32 - 8 * 8
    np.testing.assert_array_equal(out_image[padded], 127.5)
    np.testing.assert_array_equal(out_image[~padded], 10.0)  # no colour jitter in DeepLab's recipe
    assert (out_mask[~padded] == 1).all()
