"""Helpers shared by the tests."""

import keras
import numpy as np


def random_pixels(rng, shape):
    """A float32 batch of raw pixel values in [0, 255]."""
    return rng.uniform(0.0, 255.0, size=shape).astype("float32")


def randomize_batch_norm(model, rng):
    """Give every BatchNormalization layer random statistics, so parity tests see them used."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, channels).astype("float32"),
                rng.normal(0.0, 0.1, channels).astype("float32"),
                rng.normal(0.0, 0.1, channels).astype("float32"),
                rng.uniform(0.5, 1.5, channels).astype("float32"),
            ])
