"""layers.BatchNormalization (the fused kernel) against Keras's own batch norm: outputs,
gradients and moving statistics in training and inference, float32 and mixed bfloat16, under
tf.function and XLA, and the fallbacks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.batch_norm import BatchNormalization


def pair(shape, **kwargs):
    """A Keras batch norm and the fused one with the same (non-trivial) weights."""
    reference, fused = keras.layers.BatchNormalization(**kwargs), BatchNormalization(**kwargs)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(1)
    for a, b in zip(reference.weights, fused.weights):
        value = rng.uniform(0.5, 1.5, a.shape) if "variance" in a.path or "gamma" in a.path else rng.normal(size=a.shape)
        a.assign(value.astype(np.float32))
        b.assign(value.astype(np.float32))
    return reference, fused


def step(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2 * tf.range(1.0, y.shape[-1] + 1.0))
    return y, tape.gradient(loss, [x, *layer.trainable_weights])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("compile", ["eager", "tf.function", "xla"])
def test_fused_equals_keras_in_value_gradient_and_moving_statistics(rng, training, compile):
    x = tf.constant(rng.normal(2.0, 3.0, (3, 5, 4, 6)).astype(np.float32))
    reference, fused = pair(x.shape, momentum=0.9, epsilon=1e-3, center=True, scale=True)
    run = {"eager": lambda f: f, "tf.function": tf.function, "xla": lambda f: tf.function(f, jit_compile=True)}[compile]
    want, want_grads = run(lambda: step(reference, x, training))()
    got, got_grads = run(lambda: step(fused, x, training))()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-6, atol=1e-6)
    # What Keras keeps, by hand: the batch's uncorrected variance goes into the moving one.
    if training:
        initial = pair(x.shape)[0]  # the same seeded starting values
        batch = x.numpy().reshape(-1, 6)
        np.testing.assert_allclose(fused.moving_variance,
                                   0.9 * initial.moving_variance.numpy() + 0.1 * batch.var(axis=0), rtol=1e-5)


def test_without_center_or_scale_and_a_batch_of_one_pixel(rng):
    x = tf.constant(rng.normal(size=(1, 1, 1, 3)).astype(np.float32))
    reference, fused = pair(x.shape, center=False, scale=False)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, atol=1e-6)
    assert np.all(np.isfinite(fused.moving_variance.numpy()))


def test_mixed_bfloat16_computes_in_float32_and_returns_bfloat16(rng):
    x = tf.constant(rng.normal(size=(2, 4, 4, 5)).astype(np.float32))
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        reference, fused = pair(x.shape)
        want, got = reference(x, training=True), fused(x, training=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert got.dtype == tf.bfloat16 and fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(got, tf.float32), tf.cast(want, tf.float32), atol=1e-2)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-5)


def test_what_the_kernel_does_not_cover_falls_back_to_keras(rng):
    x2 = tf.constant(rng.normal(size=(8, 5)).astype(np.float32))
    reference, fused = pair(x2.shape)
    np.testing.assert_allclose(fused(x2, training=True), reference(x2, training=True), atol=1e-6)
    x = tf.constant(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    reference, fused = pair(x.shape, axis=1)  # channels first
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-6)
    mask = tf.constant(rng.random((2, 3, 3)) > 0.3)
    reference, fused = pair(x.shape)
    np.testing.assert_allclose(fused(x, training=True, mask=mask), reference(x, training=True, mask=mask), atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, atol=1e-6)


def test_is_a_keras_batch_norm_and_round_trips(tmp_path, rng):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, BatchNormalization(momentum=0.5, name="bn")(inputs))
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    model(x, training=True)
    assert isinstance(model.get_layer("bn"), keras.layers.BatchNormalization)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded.get_layer("bn")) is BatchNormalization
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    # Keras's own layer loads the same weights: a checkpoint serves either.
    plain = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.5, name="bn")(inputs))
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(plain(x), model(x), atol=1e-5)


def test_the_fused_kernel_is_what_runs(rng):
    x = tf.constant(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    for training in (True, False):
        reference, fused = pair(x.shape)
        ops = lambda layer: {op.type for op in tf.function(lambda: layer(x, training=training))  # noqa: E731
                             .get_concrete_function().graph.get_operations()}
        assert "FusedBatchNormV3" in ops(fused) and "FusedBatchNormV3" not in ops(reference)
        assert "Mean" not in ops(fused) and "Rsqrt" not in ops(fused)
