"""Augmentation: boxes stay the tight boxes of the augmented mask; seeds make it reproducible."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from training.data.augment import (
    DRAWS,
    augment,
    augment_batch,
    color_jitter,
    random_crop_with_padding,
    random_horizontal_flip,
    random_scale,
)


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


def reference_batch(images, draws, output_size, pad=0.0, brightness=0.125, contrast=0.25, saturation=0.25, hue=0.03,
                    flip_probability=0.5, scale_range=(0.75, 1.25)):
    """`augment_batch` image by image from TensorFlow's own image ops, the parameters read from
    the draws as its docstring says: each factor uniform over its range, the crop's start uniform
    over random_crop_with_padding's range."""
    out = []
    for image, u in zip(images, draws.astype(np.float64)):
        x = tf.constant(image, tf.float32) / 255.0
        x = tf.image.adjust_brightness(x, -brightness + 2 * brightness * u[0])
        x = tf.image.adjust_contrast(x, 1 - contrast + 2 * contrast * u[1])
        x = tf.image.adjust_saturation(tf.clip_by_value(x, 0.0, 1.0), 1 - saturation + 2 * saturation * u[2])
        x = tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 1.0), -hue + 2 * hue * u[3])
        x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
        if u[4] < flip_probability:
            x = tf.reverse(x, [1])
        low, high = scale_range
        scale = np.float32(low + (high - low) * np.float32(u[5]))
        size = np.array(image.shape[:2])
        new = np.maximum(np.round(size.astype(np.float32) * scale).astype(int), 1)
        x = tf.image.resize(x, new, method="bilinear").numpy()
        starts = []
        for side, target, draw in zip(new, output_size, u[6:]):
            slack = side - target
            starts.append(min(0, slack) + min(int(draw * (abs(slack) + 1)), abs(slack)))
        window = np.full((*output_size, 3), pad, np.float32)
        for i in range(output_size[0]):
            for j in range(output_size[1]):
                y, x_ = i + starts[0], j + starts[1]
                if 0 <= y < new[0] and 0 <= x_ < new[1]:
                    window[i, j] = x[y, x_]
        out.append(window)
    return np.stack(out)


@pytest.mark.parametrize("output_size", [(20, 24), (14, 30)])
def test_augment_batch_is_tensorflows_image_ops_with_its_draws(output_size):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 20, 24, 3)).astype(np.uint8)
    draws = rng.random((12, DRAWS)).astype(np.float32)
    draws[0], draws[1] = 0.0, np.float32(1 - 2**-24)  # both ends of every range
    got = augment_batch(images, draws, output_size=output_size, image_pad_value=7.0).numpy()
    expected = reference_batch(images, draws, output_size, pad=7.0)
    assert got.shape == (12, *output_size, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert np.any(got == 7.0) and not np.all(got == 7.0)  # some images shrank and were padded
    flips = draws[:, 4] < 0.5
    assert flips.any() and (~flips).any()


def test_augment_batch_options_off_keep_the_images_and_graph_mode_agrees():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 9, 11, 3)).astype(np.uint8)
    draws = rng.random((5, DRAWS)).astype(np.float32)
    still = augment_batch(images, draws, flip_probability=0, scale_range=None, color=False, crop=False)
    np.testing.assert_array_equal(still.numpy(), images.astype(np.float32))
    flipped = augment_batch(images, draws, flip_probability=1.0, scale_range=None, color=False)
    np.testing.assert_array_equal(flipped.numpy(), images[:, :, ::-1].astype(np.float32))
    eager = augment_batch(images, draws, output_size=(8, 8), color={"hue": 0.1})
    graph = tf.function(lambda x, u: augment_batch(x, u, output_size=(8, 8), color={"hue": 0.1}))(images, draws)
    np.testing.assert_allclose(eager.numpy(), graph.numpy(), atol=1e-3)  # float rounding of fused ops


def test_augment_batch_bad_arguments():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"draws must be \[B, 8\] uniforms, got shape \(2, 2\)"):
        augment_batch(images, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"images must be \[B, H, W, 3\], got shape \(8, 8, 3\)"):
        augment_batch(images[0], np.zeros((2, DRAWS), np.float32))
    with pytest.raises(ValueError, match="crop=False needs scale_range=None"):
        augment_batch(images, np.zeros((2, DRAWS), np.float32), crop=False)
