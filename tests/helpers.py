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


def run_zoo(*arguments, cwd=None, env=None, timeout=600):
    """`python -m zoo ARGUMENTS` in a subprocess, as a user runs it; returns the CompletedProcess
    (text stdout and stderr). `env` adds to (or, with None values, removes from) this environment."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = str(value)
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, arguments)], cwd=cwd or root, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def bright_object_detector(image_size, *, num_classes=1, fixed_box=None):
    """A hand-made detector with the zoo's detection outputs and no weights: one detection per
    image, class 1 with score 1, the box around the pixels brighter than 127.5 (mean of RGB),
    in the input's pixels. On an image whose only bright region is its object it is perfect,
    so where it lands after a resize tests the resize. `fixed_box` `[ymin, xmin, ymax, xmax]`:
    that box for every image instead, whatever its pixels."""
    import tensorflow as tf

    class BrightObjectBox(keras.layers.Layer):
        def call(self, images):
            bright = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1) > 127.5  # [B, H, W]

            def span(present):  # [B, n] -> first index and one past the last
                present = tf.cast(present, tf.int32)
                first = tf.argmax(present, axis=1, output_type=tf.int32)
                last = tf.shape(present)[1] - tf.argmax(tf.reverse(present, [1]), axis=1, output_type=tf.int32)
                return tf.cast(first, tf.float32), tf.cast(last, tf.float32)

            (ymin, ymax), (xmin, xmax) = span(tf.reduce_any(bright, 2)), span(tf.reduce_any(bright, 1))
            batch = tf.shape(images)[0]
            boxes = tf.stack([ymin, xmin, ymax, xmax], axis=-1)[:, None, :]
            if fixed_box is not None:
                boxes = tf.zeros_like(boxes) + tf.constant(fixed_box, tf.float32)
            return {
                "boxes": boxes,
                "scores": tf.ones([batch, 1]),
                "classes": tf.ones([batch, 1], tf.int32),
                "num_detections": tf.ones([batch], tf.int32),
                "class_probs": tf.fill([batch, 1, num_classes + 1], 1.0 / (num_classes + 1)),
            }

    images = keras.Input((*image_size, 3), name="images")
    return keras.Model({"images": images}, BrightObjectBox(name="bright_object_box")(images), name="bright_object")
