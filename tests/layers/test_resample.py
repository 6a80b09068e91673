"""crop_and_resize and resize_bilinear against TensorFlow's own kernels, eagerly and under XLA,
and the ResizeBilinear layer's shapes, config and `.keras` round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.resample import (
    ResizeBilinear,
    crop_and_resize,
    crop_and_resize_gather,
    in_xla_context,
    resize_bilinear,
    resize_bilinear_gather,
)

# (input H, W) -> (output h, w): up and down, odd and even, DeepLab's 4k+1 -> k+1 (513 -> 129
# in miniature: 33 -> 9), one row or column out, and 4 -> 22 rows, where TensorFlow's
# CropAndResize with the whole-image box loses its last row.
RESIZES = [
    ((4, 5), (22, 9)),
    ((9, 9), (17, 17)),
    ((33, 17), (9, 5)),
    ((7, 6), (13, 4)),
    ((6, 8), (3, 8)),
    ((5, 7), (1, 1)),
    ((1, 6), (4, 1)),
    ((513, 513), (129, 129)),
    ((129, 129), (513, 513)),
]


def tf1_resize(images, size, align_corners):
    if align_corners:
        return tf.compat.v1.image.resize_bilinear(images, size, align_corners=True).numpy()
    return tf.image.resize(images, size, method="bilinear").numpy()


@pytest.fixture
def crop_case(rng):
    image = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    boxes = rng.uniform(-0.4, 1.4, size=(16, 4)).astype(np.float32)  # partly outside, inverted
    boxes[0] = [0, 0, 1, 1]
    boxes[1] = [0.9, 0.8, 0.1, 0.2]  # inverted: a flipped crop
    boxes[2] = [1.1, 1.2, 1.5, 1.9]  # wholly outside
    boxes[3] = [-0.5, 0.3, -0.1, 0.6]  # wholly above
    indices = rng.integers(0, 2, 16).astype(np.int32)
    return image, boxes, indices


# --------------------------------------------------------------------------- crop_and_resize


@pytest.mark.parametrize("crop_size", [(4, 5), (1, 1), (1, 3), (6, 1)])
@pytest.mark.parametrize("extrapolation_value", [0.0, -2.5])
def test_gather_formulation_equals_tensorflows_crop_and_resize(crop_case, crop_size, extrapolation_value):
    image, boxes, indices = crop_case
    args = (image, boxes, indices, crop_size)
    expected = tf.image.crop_and_resize(*args, extrapolation_value=extrapolation_value).numpy()
    actual = crop_and_resize_gather(*args, extrapolation_value=extrapolation_value)
    assert actual.dtype == tf.float32 and actual.shape == expected.shape
    np.testing.assert_allclose(actual.numpy(), expected, atol=1e-5)
    # Outside XLA crop_and_resize is TensorFlow's kernel itself.
    kernel = crop_and_resize(*args, extrapolation_value=extrapolation_value)
    np.testing.assert_array_equal(kernel.numpy(), expected)


def test_gather_formulation_takes_integer_images_and_no_boxes(rng):
    image = rng.integers(0, 256, size=(1, 6, 5, 2)).astype(np.uint8)
    boxes = np.array([[0.1, -0.2, 0.8, 0.9]], np.float32)
    expected = tf.image.crop_and_resize(image, boxes, [0], (3, 4))
    actual = crop_and_resize_gather(image, boxes, [0], (3, 4))
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-4)
    empty = crop_and_resize_gather(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), (3, 4))
    assert empty.shape == (0, 3, 4, 2)


def test_whole_image_box_loses_the_last_row_in_tensorflows_kernel_but_not_in_resize_bilinear():
    # The reason resize_bilinear does not call CropAndResize: in float32,
    # 21 * (3 / 21) > 3, so the last sample counts as outside the image.
    image = np.arange(12, dtype=np.float32).reshape(1, 4, 3, 1)
    crops = tf.image.crop_and_resize(image, [[0, 0, 1, 1]], [0], (22, 3), extrapolation_value=-1.0).numpy()
    assert (crops[0, -1] == -1).all()
    resized = resize_bilinear(image, (22, 3)).numpy()
    np.testing.assert_array_equal(resized[0, -1], image[0, -1])
    np.testing.assert_allclose(resized, tf1_resize(image, (22, 3), True), atol=1e-6)


# --------------------------------------------------------------------------- resize_bilinear


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("in_size,out_size", RESIZES)
def test_resize_bilinear_equals_tensorflow_1(rng, in_size, out_size, align_corners):
    images = rng.normal(size=(2, *in_size, 3)).astype(np.float32)
    expected = tf1_resize(images, out_size, align_corners)
    for resize in (resize_bilinear, resize_bilinear_gather):
        actual = resize(images, out_size, align_corners=align_corners)
        assert actual.dtype == tf.float32 and actual.shape == expected.shape
        np.testing.assert_allclose(actual.numpy(), expected, atol=1e-5, err_msg=resize.__name__)


def test_resize_bilinear_to_a_size_known_only_at_run_time(rng):
    images = rng.normal(size=(2, 9, 7, 3)).astype(np.float32)
    reference = np.zeros((2, 17, 4, 1), np.float32)
    unknown = tf.TensorSpec([None, None, None, None], tf.float32)

    @tf.function(input_signature=[unknown, unknown])
    def resize_like(images, reference):
        size = tf.shape(reference)[1:3]
        return resize_bilinear(images, size), resize_bilinear(images, tf.unstack(size))  # [2] or two scalars

    expected = tf1_resize(images, (17, 4), True)
    for actual in resize_like(images, reference):
        np.testing.assert_allclose(actual.numpy(), expected, atol=1e-5)


# --------------------------------------------------------------------------- XLA


def test_under_xla_both_compile_and_match_eager_values_and_image_gradients(crop_case, rng):
    image, boxes, indices = crop_case
    weights = tf.constant(rng.normal(size=(3,)).astype(np.float32))

    def outputs_and_gradients(image):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(image)
            crops = crop_and_resize(image, boxes, indices, (4, 5), extrapolation_value=0.5)
            aligned = resize_bilinear(image, (22, 17))  # 7 -> 22 rows: CropAndResize would lose the last
            half_pixel = resize_bilinear(image, (13, 4), align_corners=False)
            like = resize_bilinear(image, tf.shape(tf.zeros([1, 3, 5]))[1:3])
            losses = [tf.reduce_sum(t * weights) for t in (crops, aligned, half_pixel, like)]
        gradients = [tape.gradient(loss, image) for loss in losses]
        return [crops, aligned, half_pixel, like], gradients, in_xla_context()

    eager_outputs, eager_gradients, eager_in_xla = outputs_and_gradients(tf.constant(image))
    compiled = tf.function(outputs_and_gradients, jit_compile=True)
    xla_outputs, xla_gradients, xla_in_xla = compiled(tf.constant(image))
    assert not eager_in_xla and xla_in_xla
    assert [o.shape for o in xla_outputs] == [(16, 4, 5, 3), (2, 22, 17, 3), (2, 13, 4, 3), (2, 3, 5, 3)]
    for xla, eager in zip(xla_outputs, eager_outputs):
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), atol=1e-5)
    for xla, eager in zip(xla_gradients, eager_gradients):
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), atol=1e-4)


def test_in_xla_context_is_decided_when_a_function_is_traced():
    def make_inner():
        return tf.function(lambda: tf.constant(in_xla_context()))

    assert not make_inner()().numpy()
    assert not tf.function(make_inner(), jit_compile=False)().numpy()
    # A tf.function first traced inside a jit_compile=True one sees the XLA context...
    traced_inside = make_inner()
    assert tf.function(lambda: traced_inside(), jit_compile=True)().numpy()
    # ...but a trace made outside is reused as it is inside one: TensorFlow's trace cache does
    # not key on the XLA context (a nested function holding CropAndResize then fails to compile).
    traced_outside = make_inner()
    assert not traced_outside().numpy()
    assert not tf.function(lambda: traced_outside(), jit_compile=True)().numpy()


def test_xlas_own_resize_bilinear_is_why_the_gather_path_exists(rng):
    # If this starts failing, TensorFlow fixed its XLA lowering of ResizeBilinear and
    # resize_bilinear's gather path under XLA could give way to it.
    images = tf.constant(rng.uniform(size=(1, 4, 5, 2)).astype(np.float32))
    resize = lambda x: tf.compat.v1.image.resize_bilinear(x, (22, 9), align_corners=True)  # noqa: E731
    error = np.abs(tf.function(resize, jit_compile=True)(images).numpy() - resize(images).numpy()).max()
    assert error > 0.01


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype,atol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_16_bit_images_keep_their_dtype_and_match_float32(crop_case, dtype, atol):
    image, boxes, indices = crop_case
    low = tf.cast(image, dtype)
    reference_image = tf.cast(low, tf.float32)  # the same rounded pixels, in float32

    def outputs(image):
        return [
            crop_and_resize(image, boxes, indices, (4, 5)),
            resize_bilinear(image, (13, 17)),
            resize_bilinear(image, (5, 4), align_corners=False),
        ]

    expected = outputs(reference_image)
    for actual_outputs in (outputs(low), tf.function(outputs, jit_compile=True)(low)):
        for actual, reference in zip(actual_outputs, expected):
            assert actual.dtype == dtype
            actual = tf.cast(actual, tf.float32).numpy()
            np.testing.assert_allclose(actual, reference.numpy(), atol=atol, rtol=atol)


# --------------------------------------------------------------------------- layer


def test_layer_to_a_fixed_size(rng):
    images = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
    layer = ResizeBilinear(17)
    assert layer.size == (17, 17)
    np.testing.assert_allclose(layer(images).numpy(), tf1_resize(images, (17, 17), True), atol=1e-5)
    assert layer.compute_output_shape((None, 9, 9, 3)) == (None, 17, 17, 3)
    inputs = keras.Input((None, None, 3))
    assert ResizeBilinear((5, 4), align_corners=False)(inputs).shape == (None, 5, 4, 3)


def test_layer_to_a_references_size_in_a_functional_model(rng, tmp_path):
    images_input, reference_input = keras.Input((None, None, 3)), keras.Input((None, None, 8))
    resized = ResizeBilinear(name="resize_like")([images_input, reference_input])
    assert resized.shape == (None, None, None, 3)
    model = keras.Model([images_input, reference_input], resized)
    images = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    reference = np.zeros((2, 17, 11, 8), np.float32)
    out = model([images, reference])
    np.testing.assert_allclose(np.asarray(out), tf1_resize(images, (17, 11), True), atol=1e-5)
    assert model.layers[-1].compute_output_shape([(None, 5, 5, 3), (None, 17, None, 8)]) == (None, 17, None, 3)

    model.save(tmp_path / "resize.keras")
    loaded = keras.saving.load_model(tmp_path / "resize.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded([images, reference])), np.asarray(out))


def test_config_round_trip_and_mixed_precision():
    for layer in (ResizeBilinear((3, 4), align_corners=False, name="r"), ResizeBilinear()):
        restored = ResizeBilinear.from_config(layer.get_config())
        assert restored.get_config() == layer.get_config()
        assert (restored.size, restored.align_corners) == (layer.size, layer.align_corners)
    out = ResizeBilinear((3, 3), dtype="mixed_float16")(np.zeros((1, 5, 5, 2), np.float32))
    assert out.dtype == "float16"


def test_bad_arguments_raise_clear_errors():
    images = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="size must be two positive integers"):
        ResizeBilinear((3, 0))
    with pytest.raises(ValueError, match="align_corners must be True or False"):
        ResizeBilinear((3, 3), align_corners="yes")
    with pytest.raises(ValueError, match="without a size, call it on"):
        ResizeBilinear()(images)
    with pytest.raises(ValueError, match="call it on images alone"):
        ResizeBilinear((3, 3))([images, images])
    with pytest.raises(ValueError, match="size must be two positive integers"):
        resize_bilinear(images, (0, 3))
    with pytest.raises(ValueError, match=r"images must be a \[batch, height, width, channels\]"):
        resize_bilinear(images[0], (3, 3))
    with pytest.raises(ValueError, match="crop_size must be two positive integers"):
        crop_and_resize(images, [[0, 0, 1, 1]], [0], (3, 4, 5))
