"""`training.adversarial.AdversarialModel` against a NumPy FGSM on a linear softmax classifier.

For logits `z = x W + b`, probabilities `p = softmax(z)` and the mean cross-entropy over n
images, `d loss / d x = (p - onehot(y)) W^T / n` and `d loss / d W = x^T (p - onehot(y)) / n`:
everything the wrapper computes has a closed form here, so each step is checked in float64.
"""

import keras
import numpy as np
import pytest

from training.adversarial import AdversarialModel

SHAPE = (2, 2, 3)  # 12 pixels per image
CLASSES = 3


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _linear_classifier(rng):
    model = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(CLASSES, activation="softmax")], name="linear"
    )
    # Small weights keep the logits of raw 0..255 pixels near 1, where the softmax is not saturated.
    kernel = rng.normal(0.0, 2e-3, (int(np.prod(SHAPE)), CLASSES)).astype("float32")
    bias = rng.normal(0.0, 0.1, CLASSES).astype("float32")
    model.set_weights([kernel, bias])
    return model


def _batch(rng):
    images = rng.uniform(0.0, 255.0, (4, *SHAPE)).astype("float32")
    # Pixels at and near both ends of the range, so that the clip to [0, 255] is exercised.
    images[0, 0, 0, :] = [0.0, 255.0, 3.0]
    images[1, 1, 1, :] = [252.0, 1.0, 128.0]
    labels = np.array([0, 1, 2, 1])
    return images, labels


def _reference(model, images, labels):
    """Per-image-flattened inputs, probabilities, the input gradient and the loss, in float64."""
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_weights())
    flat = images.reshape(len(images), -1).astype(np.float64)
    probs = _softmax(flat @ kernel + bias)
    onehot = np.eye(CLASSES)[labels]
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    input_gradient = (probs - onehot) @ kernel.T / len(labels)
    return flat, probs, onehot, input_gradient, loss


def _fgsm(model, images, labels, epsilon):
    _, _, _, gradient, _ = _reference(model, images, labels)
    # The sign must not hang on float32 rounding (about 1e-11 on terms of about 1e-4 here): every
    # component is well away from zero.
    assert np.abs(gradient).min() > 1e-9
    return np.clip(images + epsilon * np.sign(gradient).reshape(images.shape), 0.0, 255.0)


def _wrapped(model, *, epsilon, ratio, learning_rate=1e-4):
    wrapper = AdversarialModel(model, epsilon=epsilon, ratio=ratio)
    wrapper.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy())
    return wrapper


def test_adversarial_examples_are_the_numpy_fgsm_step_clipped_to_pixels(rng):
    model = _linear_classifier(rng)
    images, labels = _batch(rng)
    wrapper = _wrapped(model, epsilon=8.0, ratio=0.5)

    adversarial = np.asarray(wrapper.adversarial_examples(images, labels))

    expected = _fgsm(model, images, labels, 8.0)
    np.testing.assert_allclose(adversarial, expected, atol=1e-4)
    assert adversarial.min() >= 0.0 and adversarial.max() <= 255.0
    assert adversarial[0, 0, 0, 1] in (247.0, 255.0) and adversarial[1, 1, 1, 1] in (0.0, 9.0)
    moved = np.abs(adversarial - images)
    inside = (expected > 0.0) & (expected < 255.0)
    np.testing.assert_allclose(moved[inside], 8.0, atol=1e-4)


@pytest.mark.parametrize("ratio", [0.25, 1.0])
def test_one_step_follows_the_gradient_of_the_mixed_loss(ratio, rng):
    model = _linear_classifier(rng)
    images, labels = _batch(rng)
    epsilon, learning_rate = 8.0, 1e-4
    adversarial = _fgsm(model, images, labels, epsilon)
    clean_flat, clean_probs, onehot, _, clean_loss = _reference(model, images, labels)
    adversarial_flat, adversarial_probs, _, _, adversarial_loss = _reference(model, adversarial, labels)
    count = len(labels)
    kernel_gradient = ((1 - ratio) * clean_flat.T @ (clean_probs - onehot)
                       + ratio * adversarial_flat.T @ (adversarial_probs - onehot)) / count
    bias_gradient = ((1 - ratio) * (clean_probs - onehot).sum(0) + ratio * (adversarial_probs - onehot).sum(0)) / count
    kernel, bias = model.get_weights()

    wrapper = _wrapped(model, epsilon=epsilon, ratio=ratio, learning_rate=learning_rate)
    history = wrapper.fit(images, labels, batch_size=count, epochs=1, shuffle=False, verbose=0)

    new_kernel, new_bias = model.get_weights()  # the wrapped model is the one trained
    np.testing.assert_allclose(new_kernel, kernel - learning_rate * kernel_gradient, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(new_bias, bias - learning_rate * bias_gradient, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(history.history["loss"][0], (1 - ratio) * clean_loss + ratio * adversarial_loss,
                               rtol=1e-5)


def test_inference_is_the_wrapped_models(rng):
    model = _linear_classifier(rng)
    images, labels = _batch(rng)
    wrapper = _wrapped(model, epsilon=8.0, ratio=0.5)
    _, probs, _, _, loss = _reference(model, images, labels)

    np.testing.assert_allclose(wrapper.predict(images, verbose=0), probs, atol=1e-6)
    np.testing.assert_allclose(np.asarray(wrapper(images)), probs, atol=1e-6)
    # evaluate scores the clean images only: no FGSM step outside training.
    np.testing.assert_allclose(wrapper.evaluate(images, labels, verbose=0), loss, rtol=1e-5)
    assert wrapper.name == "linear_adversarial"


@pytest.mark.parametrize("options, message", [
    (dict(epsilon=0.0), "epsilon must be positive"),
    (dict(epsilon=-8.0), "epsilon must be positive"),
    (dict(ratio=0.0), r"ratio must be in \(0, 1\]"),
    (dict(ratio=1.5), r"ratio must be in \(0, 1\]"),
])
def test_bad_options_are_named(options, message, rng):
    with pytest.raises(ValueError, match=message):
        AdversarialModel(_linear_classifier(rng), **options)
