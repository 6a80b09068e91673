"""Adversarial training with FGSM examples mixed into each batch.

Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015,
https://arxiv.org/abs/1412.6572: `x_adv = x + epsilon * sign(grad_x loss(x, y))`, and the
training loss is `(1 - ratio) * loss(x, y) + ratio * loss(x_adv, y)` (the paper uses 0.5).
Images are raw pixels here, so `epsilon` is in pixel units (8 is a common choice for 0..255)
and `x_adv` is clipped back to [0, 255].
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers import compat
from training.steps import apply_gradients, track_loss


class AdversarialModel(keras.Model):
    """Wraps `model` so that `fit` trains on clean and FGSM examples.

    Only training changes: `call`, `evaluate` and `predict` are the wrapped model's. Save
    `wrapper.model`, not the wrapper.

    Args:
      model: a compiled-to-be Keras model taking raw pixels.
      epsilon: the FGSM step in pixel units.
      ratio: the weight of the adversarial loss (0.5 in the paper).
    """

    def __init__(self, model: keras.Model, *, epsilon: float = 8.0, ratio: float = 0.5, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_adversarial"), **kwargs)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive (pixel units), got {epsilon!r}")
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.model, self.epsilon, self.ratio = model, float(epsilon), float(ratio)

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def adversarial_examples(self, images, labels, sample_weight=None):
        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            predictions = self(images, training=False)
            loss = self.compute_loss(x=images, y=labels, y_pred=predictions, sample_weight=sample_weight)
        gradient = tape.gradient(loss, images)
        perturbed = images + self.epsilon * tf.sign(tf.cast(gradient, images.dtype))
        return tf.stop_gradient(tf.clip_by_value(perturbed, 0.0, 255.0))

    def train_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        adversarial = self.adversarial_examples(images, labels, sample_weight)
        with tf.GradientTape() as tape:
            clean_predictions = self(images, training=True)
            clean_loss = self.compute_loss(
                x=images, y=labels, y_pred=clean_predictions, sample_weight=sample_weight, training=True
            )
            adversarial_predictions = self(adversarial, training=True)
            adversarial_loss = self.compute_loss(
                x=adversarial, y=labels, y_pred=adversarial_predictions, sample_weight=sample_weight, training=True
            )
            loss = (1.0 - self.ratio) * clean_loss + self.ratio * adversarial_loss
            # As Keras's own train_step: the logged loss is the global one, the applied one is
            # scaled for mixed precision. (Keras exposes no public hook for either.)
            track_loss(self, compat.unscale_loss_for_distribution(loss), images)
            scaled = self.optimizer.scale_loss(loss)
        apply_gradients(self, tape, scaled)
        return self.compute_metrics(images, labels, clean_predictions, sample_weight=sample_weight)
