"""The gather formulation of crop_and_resize against tf.image.crop_and_resize itself."""

import numpy as np
import pytest
import tensorflow as tf

from layers.resample import crop_and_resize, crop_and_resize_gather


@pytest.fixture
def case(rng):
    image = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    boxes = rng.uniform(-0.4, 1.4, size=(12, 4)).astype(np.float32)  # outside, inverted included
    boxes[0] = [0, 0, 1, 1]
    boxes[1] = [0.9, 0.8, 0.1, 0.2]
    indices = rng.integers(0, 2, 12).astype(np.int32)
    return image, boxes, indices


@pytest.mark.parametrize("crop_size", [(4, 5), (1, 1), (1, 3)])
@pytest.mark.parametrize("extrapolation_value", [0.0, -2.5])
def test_gather_formulation_equals_the_tensorflow_op(case, crop_size, extrapolation_value):
    image, boxes, indices = case
    expected = tf.image.crop_and_resize(image, boxes, indices, crop_size, extrapolation_value=extrapolation_value)
    actual = crop_and_resize_gather(image, boxes, indices, crop_size, extrapolation_value=extrapolation_value)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-5)


def test_under_xla_it_compiles_and_matches_with_the_same_image_gradient(case):
    image, boxes, indices = case

    def crops_and_gradient(image_tensor):
        with tf.GradientTape() as tape:
            tape.watch(image_tensor)
            crops = crop_and_resize(image_tensor, boxes, indices, (4, 5))
            loss = tf.reduce_sum(crops * tf.range(1.0, 4.0))
        return crops, tape.gradient(loss, image_tensor)

    eager_crops, eager_grad = crops_and_gradient(tf.constant(image))
    xla_crops, xla_grad = tf.function(crops_and_gradient, jit_compile=True)(tf.constant(image))
    np.testing.assert_allclose(np.asarray(xla_crops), np.asarray(eager_crops), atol=1e-5)
    np.testing.assert_allclose(np.asarray(xla_grad), np.asarray(eager_grad), atol=1e-4)
