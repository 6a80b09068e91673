"""RoIPooling against an independent NumPy implementation of Caffe's roi_pooling_layer.

The reference below is a direct transcription of the Caffe kernel's loops in float32 NumPy
(per RoI, per bin, per cell), sharing nothing with the vectorised table implementations.
RoIs inside the image take the exact-extent table, RoIs reaching far beyond it the
power-of-two table; the tests cover both, in every execution mode.
"""

import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf

from layers import RoIPooling, roi_pooling
from layers.roi_pooling import MAX_FEATURE_COORDINATE, roi_bins, roi_crop_and_resize, roi_pool_max


def c_round(value):
    """C's round(): half away from zero, computed exactly on the float."""
    magnitude = abs(float(value))
    whole = math.floor(magnitude)
    rounded = whole + (1 if magnitude - whole >= 0.5 else 0)
    return int(-rounded if value < 0 else rounded)


def reference_roi_pool(features, rois, pool_size, spatial_scale):
    """Caffe's forward pass; returns (output, argmax) with argmax = (y, x) or (-1, -1)."""
    batch, height, width, channels = features.shape
    pool_h, pool_w = pool_size
    num_rois = rois.shape[1]
    out = np.zeros((batch, num_rois, pool_h, pool_w, channels), features.dtype)
    argmax = -np.ones((batch, num_rois, pool_h, pool_w, channels, 2), np.int64)
    scale = np.float32(spatial_scale)
    for b in range(batch):
        for n in range(num_rois):
            coords = [
                c_round(np.clip(np.float32(v) * scale, -MAX_FEATURE_COORDINATE, MAX_FEATURE_COORDINATE))
                for v in rois[b, n]
            ]
            start_h, start_w, end_h, end_w = coords
            roi_h = max(end_h - start_h + 1, 1)
            roi_w = max(end_w - start_w + 1, 1)
            bin_h = np.float32(roi_h) / np.float32(pool_h)
            bin_w = np.float32(roi_w) / np.float32(pool_w)
            for ph in range(pool_h):
                hstart = int(np.floor(np.float32(ph) * bin_h))
                hend = int(np.ceil(np.float32(ph + 1) * bin_h))
                hstart = min(max(hstart + start_h, 0), height)
                hend = min(max(hend + start_h, 0), height)
                for pw in range(pool_w):
                    wstart = int(np.floor(np.float32(pw) * bin_w))
                    wend = int(np.ceil(np.float32(pw + 1) * bin_w))
                    wstart = min(max(wstart + start_w, 0), width)
                    wend = min(max(wend + start_w, 0), width)
                    if hend <= hstart or wend <= wstart:
                        continue
                    for c in range(channels):
                        best, where = -np.inf, (-1, -1)
                        for y in range(hstart, hend):
                            for x in range(wstart, wend):
                                if features[b, y, x, c] > best:
                                    best, where = features[b, y, x, c], (y, x)
                        out[b, n, ph, pw, c] = best
                        argmax[b, n, ph, pw, c] = where
    return out, argmax


def reference_gradient(features_shape, argmax, upstream):
    grad = np.zeros(features_shape, np.float64)
    batch, num_rois, pool_h, pool_w, channels, _ = argmax.shape
    for b, n, ph, pw, c in np.ndindex(batch, num_rois, pool_h, pool_w, channels):
        y, x = argmax[b, n, ph, pw, c]
        if y >= 0:
            grad[b, y, x, c] += upstream[b, n, ph, pw, c]
    return grad


def awkward_rois(rng, height, width, stride, count):
    """Random boxes plus every case the issue lists, in image pixels."""
    image_h, image_w = height * stride, width * stride
    y1 = rng.uniform(-0.3, 1.1, count) * image_h
    x1 = rng.uniform(-0.3, 1.1, count) * image_w
    boxes = np.stack([y1, x1, y1 + rng.uniform(0, 0.8, count) * image_h,
                      x1 + rng.uniform(0, 0.8, count) * image_w], -1)
    special = np.array([
        [0, 0, image_h - 1, image_w - 1],                      # the whole image
        [0, 0, 0, 0],                                          # a padding row
        [-50, -60, image_h + 40, image_w + 70],                # larger than the image
        [-200, -200, -100, -120],                              # wholly outside, before
        [image_h + 30, image_w + 30, image_h + 90, image_w + 99],  # wholly outside, after
        [20, 30, 20, 30],                                      # zero area
        [60, 70, 10, 20],                                      # inverted
        [33.2, 41.7, 36.9, 44.1],                              # smaller than one cell
        [4.0, 12.0, 20.0, 44.0],                               # ties: 0.5, 1.5, 2.5, 5.5 cells
        [0.0, 8.0, 56 * stride, 8.0 + 56 * stride],          # 57 cells: float32 bin edge
        [1e6, -1e6, 2e6, 3e6],                                 # huge, finite
    ], np.float32)
    return np.concatenate([boxes.astype(np.float32), special]).astype(np.float32)


@pytest.fixture
def case(rng):
    height, width, channels, stride = 9, 11, 3, 8
    features = rng.normal(size=(2, height, width, channels)).astype(np.float32)
    rois = np.stack([awkward_rois(rng, height, width, stride, 30) for _ in range(2)])
    return features, rois, 1.0 / stride


@pytest.mark.parametrize("pool_size", [(7, 7), (2, 3), (1, 1)])
def test_max_equals_the_caffe_reference_exactly(case, pool_size):
    features, rois, scale = case
    expected, _ = reference_roi_pool(features, rois, pool_size, scale)
    actual = roi_pool_max(features, rois, pool_size=pool_size, spatial_scale=scale)
    np.testing.assert_array_equal(np.asarray(actual), expected)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_max_is_exact_inside_tf_function_and_xla(case, jit_compile):
    features, rois, scale = case
    expected, _ = reference_roi_pool(features, rois, (7, 7), scale)
    pool = tf.function(
        lambda f, r: roi_pool_max(f, r, pool_size=(7, 7), spatial_scale=scale), jit_compile=jit_compile
    )
    np.testing.assert_array_equal(np.asarray(pool(features, rois)), expected)


def test_bins_follow_caffe_float32_arithmetic_where_it_differs_from_exact_division():
    # A RoI 57 cells tall pooled to 7: float32(57 / 7) * 7 > 57, so Caffe's last bin ends at
    # cell 58 (it reads row 57), where exact integer arithmetic would stop at 57 (row 56).
    features = np.arange(64, dtype=np.float32).reshape(1, 64, 1, 1)
    rois = np.array([[[0, 0, 56, 0]]], np.float32)
    expected, _ = reference_roi_pool(features, rois, (7, 1), 1.0)
    assert expected[0, 0, -1, 0, 0] == 57.0
    actual = tf.function(lambda f, r: roi_pool_max(f, r, pool_size=(7, 1), spatial_scale=1.0), jit_compile=True)
    np.testing.assert_array_equal(np.asarray(actual(features, rois)), expected)


def test_dynamic_map_size_and_roi_count(case):
    features, rois, scale = case
    expected, _ = reference_roi_pool(features, rois, (7, 7), scale)
    pool = tf.function(
        lambda f, r: roi_pool_max(f, r, pool_size=(7, 7), spatial_scale=scale),
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, 4])],
    )
    np.testing.assert_array_equal(np.asarray(pool(features, rois)), expected)


@pytest.mark.slow
def test_gradient_routes_to_the_argmax_cell(case, rng):
    features, rois, scale = case
    _, argmax = reference_roi_pool(features, rois, (3, 3), scale)
    upstream = rng.normal(size=argmax.shape[:-1]).astype(np.float32)
    expected = reference_gradient(features.shape, argmax, upstream)
    for jit_compile in (False, True):
        @tf.function(jit_compile=jit_compile)
        def gradient(f, r):
            with tf.GradientTape() as tape:
                tape.watch(f)
                out = roi_pool_max(f, r, pool_size=(3, 3), spatial_scale=scale)
                loss = tf.reduce_sum(out * upstream)
            return tape.gradient(loss, f)

        np.testing.assert_allclose(np.asarray(gradient(tf.constant(features), rois)), expected, atol=1e-5)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, 4])])
    def dynamic_gradient(f, r):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = tf.reduce_sum(roi_pool_max(f, r, pool_size=(3, 3), spatial_scale=scale) * upstream)
        return tape.gradient(loss, f)

    np.testing.assert_allclose(np.asarray(dynamic_gradient(tf.constant(features), rois)), expected, atol=1e-5)


def inside_rois(rng, height, width, stride, count):
    """Boxes inside the image (clipped, as proposals are): every bin fits the exact table."""
    boxes = awkward_rois(rng, height, width, stride, count)[:-3]  # drop those reaching far out
    limit = np.array([height, width, height, width], np.float32) * stride - 1
    return np.clip(boxes, 0, limit).astype(np.float32)


def pool_and_gradient(mode, dtype, pool_size, scale, upstream):
    def run(features, rois):
        with tf.GradientTape() as tape:
            tape.watch(features)
            out = roi_pool_max(features, rois, pool_size=pool_size, spatial_scale=scale)
        return out, tape.gradient(out, features, output_gradients=tf.cast(upstream, dtype))

    if mode == "eager":
        return run
    if mode == "dynamic":
        signature = [tf.TensorSpec([None, None, None, upstream.shape[-1]], dtype), tf.TensorSpec([None, None, 4])]
        return tf.function(run, input_signature=signature)
    return tf.function(run, jit_compile=mode == "xla")


def test_rois_inside_the_image_fit_the_exact_table(rng):
    height, width, stride = 38, 50, 16
    rois = inside_rois(rng, height, width, stride, 500)[None]
    for pool_size in [(7, 7), (2, 3), (1, 1), (14, 14)]:
        y_lower, y_upper, x_lower, x_upper = roi_bins(
            rois, pool_size=pool_size, spatial_scale=1 / stride, height=height, width=width
        )
        extent_y, extent_x = roi_pooling._exact_extents(height, width, pool_size)
        assert np.max(y_upper - y_lower) <= extent_y and np.max(x_upper - x_lower) <= extent_x


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "graph", "xla", "dynamic"])
@pytest.mark.parametrize("inside", [True, False], ids=["exact table", "power-of-two table"])
def test_gradient_ties_go_to_the_first_cell_in_row_major_order(rng, mode, inside):
    # Small integers tie often, within a bin and across the blocks the tables split it into;
    # integer upstream values keep every sum exact, so the comparison is exact too.
    height, width, channels, stride = 9, 11, 3, 8
    features = rng.integers(-2, 3, size=(2, height, width, channels)).astype(np.float32)
    make = inside_rois if inside else awkward_rois
    rois = np.stack([make(rng, height, width, stride, 30) for _ in range(2)])
    # XLA compiles each case for seconds: fewer of them there.
    pool_sizes = [(7, 7)] if mode == "xla" else [(7, 7), (3, 2)]
    dtypes = ("float32", "bfloat16") if mode == "xla" else ("float32", "bfloat16", "float16")
    for pool_size in pool_sizes:
        expected, argmax = reference_roi_pool(features, rois, pool_size, 1 / stride)
        upstream = rng.integers(-3, 4, size=argmax.shape[:-1]).astype(np.float32)
        expected_gradient = reference_gradient(features.shape, argmax, upstream)
        for dtype in dtypes:
            run = pool_and_gradient(mode, dtype, pool_size, 1 / stride, upstream)
            out, gradient = run(tf.cast(features, dtype), tf.constant(rois))
            assert out.dtype == dtype and gradient.dtype == dtype
            np.testing.assert_array_equal(np.asarray(tf.cast(out, tf.float32)), expected)
            np.testing.assert_array_equal(np.asarray(tf.cast(gradient, tf.float32)), expected_gradient)


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_exact_table_in_several_channel_slices(rng, monkeypatch, jit_compile):
    height, width, channels, stride = 9, 11, 12, 8
    extent_y, extent_x = roi_pooling._exact_extents(height, width, (7, 7))
    # Room for 4 channels per slice: 3 slices, each through the loop of the gradient.
    monkeypatch.setattr(roi_pooling, "EXACT_TABLE_BYTES", 4 * extent_y * extent_x * height * width * 4)
    assert roi_pooling._channel_slice(channels, extent_y * extent_x, height, width) == 4
    features = rng.normal(size=(2, height, width, channels)).astype(np.float32)
    rois = np.stack([inside_rois(rng, height, width, stride, 30) for _ in range(2)])
    expected, argmax = reference_roi_pool(features, rois, (7, 7), 1 / stride)
    upstream = rng.normal(size=argmax.shape[:-1]).astype(np.float32)
    run = pool_and_gradient("xla" if jit_compile else "graph", "float32", (7, 7), 1 / stride, upstream)
    out, gradient = run(tf.constant(features), tf.constant(rois))
    np.testing.assert_array_equal(np.asarray(out), expected)
    np.testing.assert_allclose(np.asarray(gradient), reference_gradient(features.shape, argmax, upstream), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_features_keep_their_dtype(case, dtype):
    features, rois, scale = case
    low = tf.cast(features, dtype)
    expected, _ = reference_roi_pool(np.asarray(tf.cast(low, tf.float32)), rois, (7, 7), scale)
    for method in ("max", "crop_and_resize"):
        out = RoIPooling((7, 7), spatial_scale=scale, method=method)([low, rois])
        assert out.dtype == dtype
    out = RoIPooling((7, 7), spatial_scale=scale)([low, rois])
    np.testing.assert_array_equal(np.asarray(tf.cast(out, tf.float32)), expected)


def test_crop_and_resize_equals_bilinear_crop_then_two_by_two_max(rng):
    # Hand-built: a linear ramp is reproduced exactly by bilinear sampling, so the expected
    # output follows from the sample positions alone.
    height, width = 6, 8
    ramp = (np.arange(height)[:, None] * 10 + np.arange(width)[None, :]).astype(np.float32)
    features = ramp[None, :, :, None]
    rois = np.array([[[8.0, 16.0, 40.0, 56.0]]], np.float32)  # cells [1, 2] .. [5, 7] at 1/8
    out = np.asarray(roi_crop_and_resize(features, rois, pool_size=(2, 2), spatial_scale=1 / 8))
    ys = np.linspace(1.0, 5.0, 4)
    xs = np.linspace(2.0, 7.0, 4)
    samples = ys[:, None] * 10 + xs[None, :]
    expected = samples.reshape(2, 2, 2, 2).max(axis=(1, 3))
    np.testing.assert_allclose(out[0, 0, :, :, 0], expected, rtol=1e-6)


def test_crop_and_resize_under_xla_matches_eager(case):
    features, rois, scale = case
    rois = np.clip(rois, -1000, 1000)
    eager = roi_crop_and_resize(features, rois, pool_size=(7, 7), spatial_scale=scale)
    compiled = tf.function(
        lambda f, r: roi_crop_and_resize(f, r, pool_size=(7, 7), spatial_scale=scale), jit_compile=True
    )
    np.testing.assert_allclose(np.asarray(compiled(features, rois)), np.asarray(eager), atol=1e-5)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    boxes=hnp.arrays(np.float32, (5, 4), elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
    permutation=st.permutations(range(5)),
)
def test_any_finite_boxes_give_finite_outputs_and_permute_with_the_rois(boxes, permutation):
    features = np.random.default_rng(1).normal(size=(1, 6, 7, 2)).astype(np.float32)
    rois = boxes[None]
    out = np.asarray(roi_pool_max(features, rois, pool_size=(2, 2), spatial_scale=0.25))
    assert out.shape == (1, 5, 2, 2, 2)
    assert np.all(np.isfinite(out))
    permuted = np.asarray(roi_pool_max(features, rois[:, list(permutation)], pool_size=(2, 2), spatial_scale=0.25))
    np.testing.assert_array_equal(permuted, out[:, list(permutation)])
    expected, _ = reference_roi_pool(features, rois, (2, 2), 0.25)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["max", "crop_and_resize"])
def test_non_finite_boxes_are_a_clear_error(bad, method):
    features = np.zeros((1, 4, 4, 1), np.float32)
    rois = np.array([[[0, 0, 8, bad]]], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rois contain NaN or Inf"):
        RoIPooling(2, method=method)([features, rois])


def test_bad_shapes_and_dtypes_are_clear_errors():
    layer = RoIPooling(2)
    with pytest.raises(ValueError, match=r"features must be \[B, H, W, C\]"):
        layer([np.zeros((4, 4, 1), np.float32), np.zeros((1, 1, 4), np.float32)])
    with pytest.raises(ValueError, match=r"rois must be \[B, N, 4\]"):
        layer([np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 1, 5), np.float32)])
    with pytest.raises(ValueError, match=r"rois must be \[B, N, 4\]"):
        layer([np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 4), np.float32)])
    with pytest.raises(TypeError, match="features must be float16, bfloat16 or float32, got int32"):
        layer([np.zeros((1, 4, 4, 1), np.int32), np.zeros((1, 1, 4), np.float32)])
    with pytest.raises(ValueError, match="same batch size"):
        layer([np.zeros((2, 4, 4, 1), np.float32), np.zeros((1, 1, 4), np.float32)])
    with pytest.raises(ValueError, match="method must be one of"):
        RoIPooling(2, method="average")
    with pytest.raises(ValueError, match="pool_size must be two integers"):
        RoIPooling((0, 7))
    with pytest.raises(ValueError, match="spatial_scale must be a number in"):
        RoIPooling(7, spatial_scale=0)


def test_layer_in_a_model_round_trips_through_config_keras_file_and_saved_model(case, tmp_path):
    features, rois, scale = case
    feature_input = keras.Input((None, None, 3))
    roi_input = keras.Input((None, 4))
    outputs = {
        method: RoIPooling((7, 7), spatial_scale=scale, method=method, name=method)([feature_input, roi_input])
        for method in ("max", "crop_and_resize")
    }
    model = keras.Model([feature_input, roi_input], outputs)
    assert model.output["max"].shape == (None, None, 7, 7, 3)
    expected = {key: np.asarray(value) for key, value in model([features, rois]).items()}

    layer = model.get_layer("max")
    assert RoIPooling.from_config(layer.get_config()).get_config() == layer.get_config()

    model.save(tmp_path / "pool.keras")
    loaded = keras.saving.load_model(tmp_path / "pool.keras", safe_mode=True)
    for key, value in loaded([features, rois]).items():
        np.testing.assert_array_equal(np.asarray(value), expected[key])

    export = keras.export.ExportArchive()
    export.track(model)
    export.add_endpoint(
        "serve", lambda f, r: model([f, r]),
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, 4])],
    )
    export.write_out(str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    for key, value in restored.serve(tf.constant(features), tf.constant(rois)).items():
        np.testing.assert_allclose(np.asarray(value), expected[key], atol=1e-6)


def test_empty_roi_set_gives_an_empty_output():
    features = np.ones((2, 5, 5, 4), np.float32)
    rois = np.zeros((2, 0, 4), np.float32)
    for method in ("max", "crop_and_resize"):
        assert RoIPooling(3, method=method)([features, rois]).shape == (2, 0, 3, 3, 4)


@pytest.mark.slow
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["max", "crop_and_resize"])
def test_non_finite_boxes_under_xla_pool_zeros_and_no_values_of_the_map(bad, method):
    # XLA drops CheckNumerics, so under jit_compile a non-finite RoI cannot raise: it pools zeros
    # (as documented) while its neighbours pool as usual; without XLA the same call raises.
    features = np.random.default_rng(0).uniform(1.0, 2.0, (1, 8, 8, 3)).astype(np.float32)  # no zero in the map
    rois = np.array([[[0, 0, 16, 16], [0, 0, 16, bad], [bad, bad, bad, bad], [4, 4, 20, 24]]], np.float32)
    layer = RoIPooling(2, spatial_scale=0.25, method=method)
    pooled = np.asarray(tf.function(lambda f, r: layer([f, r]), jit_compile=True)(features, rois))
    np.testing.assert_array_equal(pooled[0, 1:3], 0.0)
    assert np.all(pooled[0, [0, 3]] >= 1.0)
    finite = np.asarray(layer([features, rois[:, [0, 3]]]))
    np.testing.assert_allclose(pooled[0, [0, 3]], finite[0], rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rois contain NaN or Inf"):
        tf.function(lambda f, r: layer([f, r]))(features, rois)

    def pooled_sum(f, r):
        with tf.GradientTape() as tape:
            tape.watch(f)
            total = tf.reduce_sum(layer([f, r]))
        return tape.gradient(total, f)

    # A non-finite RoI sends no gradient to the map either.
    gradient = tf.function(pooled_sum, jit_compile=True)(features, rois[:, 1:3])
    np.testing.assert_array_equal(np.asarray(gradient), 0.0)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("method", ["max", "crop_and_resize"])
@pytest.mark.parametrize("batches", [(1, 2), (2, 1)])
def test_batch_sizes_known_only_at_run_time_must_agree(jit_compile, method, batches):
    # Shapes unknown when traced: the static check cannot see the mismatch. Without XLA the assert
    # names it; XLA drops asserts, so there the reshape to the features' batch fails to compile.
    layer = RoIPooling(2, spatial_scale=0.25, method=method)
    run = tf.function(
        lambda f, r: layer([f, r]), jit_compile=jit_compile,
        input_signature=[tf.TensorSpec([None, None, None, 1]), tf.TensorSpec([None, None, 4])],
    )
    features = np.ones((batches[0], 8, 8, 1), np.float32)
    rois = np.tile(np.array([[[0, 0, 16, 16], [4, 4, 20, 20]]], np.float32), (batches[1], 1, 1))
    message = "Input to reshape is a tensor with" if jit_compile else "must have the same batch size"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        run(features, rois)
    same = np.tile(rois[:1], (batches[0], 1, 1))
    assert run(features, same).shape == (batches[0], 2, 2, 2, 1)
