"""What the zoo's own `train_step`s (`AdversarialModel`, the detectors' `DetectorTrainer`) share
with Keras's: the update from a loss taken under a gradient tape, and the logged "loss".

Each step still computes its own loss, and scales it under the tape as Keras's own step does
(`optimizer.scale_loss`, for mixed precision, must be recorded by the tape).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers import compat


def apply_gradients(model: keras.Model, tape: tf.GradientTape, scaled_loss) -> None:
    """`model.optimizer` steps `model.trainable_variables` along the gradients of `scaled_loss`
    (the loss after `model.optimizer.scale_loss`, computed under `tape`)."""
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    model.optimizer.apply_gradients(zip(gradients, variables))


def track_loss(model: keras.Model, loss, images) -> None:
    """Updates the compiled model's "loss" metric, the one Keras's own steps update (so that
    Keras's `test_step` and the logged "loss" stay one metric), weighted by the batch size."""
    compat.loss_tracker(model).update_state(loss, sample_weight=tf.shape(images)[0])


__all__ = ["apply_gradients", "track_loss"]
