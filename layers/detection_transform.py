"""torchvision's detection transform in the graph: raw pixels -> normalised, resized, padded.

torchvision's `GeneralizedRCNNTransform` (`torchvision/models/detection/transform.py`), which
its Faster / Mask R-CNN models run on their inputs: pixels scaled to [0, 1], normalised by the
ImageNet mean and std, resized so that the shorter side is `min_size` unless the longer would
pass `max_size` (`resized_size`, computed in float64 as torchvision's Python floats), bilinear
with half-pixel centres and no antialiasing (`F.interpolate(..., align_corners=False)`), and
zero-padded at the bottom and right to a multiple of 32.

Shapes: B images of H x W pixels, resized to h x w, padded to Hp x Wp. A batch is one tensor, so
its images share one size (torchvision resizes each image of a list).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers.resample import resize_bilinear

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE_DIVISIBLE = 32


def resized_size(height, width, *, min_size, max_size):
    """torchvision's resize: `floor(side * min(min_size / short, max_size / long))` in float64
    (Python floats there), for int tensors or numbers."""
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    scale = tf.minimum(float(min_size) / tf.minimum(height, width), float(max_size) / tf.maximum(height, width))
    return tf.cast(tf.floor(height * scale), tf.int32), tf.cast(tf.floor(width * scale), tf.int32)


@keras.saving.register_keras_serializable(package="zoo")
class GeneralizedRCNNTransform(keras.layers.Layer):
    """Raw pixels -> torchvision's detector input: `/ 255`, ImageNet mean and std, bilinear resize
    (half-pixel centres, no antialiasing: `F.interpolate(..., align_corners=False)`) to the
    `min_size` / `max_size` rule, zero padding at the bottom and right to a multiple of 32.

    Returns `[images [B, Hp, Wp, 3] float32, image_info [B, 4] float32 (h, w, H, W)]`: the resized
    size (boxes are clipped to it) and the input size (detections are mapped back to it).
    """

    def __init__(self, *, min_size=800, max_size=1333, size_divisible=SIZE_DIVISIBLE, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.min_size, self.max_size, self.size_divisible = int(min_size), int(max_size), int(size_divisible)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def call(self, images):
        images = tf.cast(images, tf.float32) / 255.0
        images = (images - tf.constant(self.mean)) / tf.constant(self.std)
        shape = tf.shape(images)
        height, width = resized_size(shape[1], shape[2], min_size=self.min_size, max_size=self.max_size)
        images = resize_bilinear(images, tf.stack([height, width]), align_corners=False)
        divisor = self.size_divisible
        padded_h = (height + divisor - 1) // divisor * divisor
        padded_w = (width + divisor - 1) // divisor * divisor
        images = tf.pad(images, [[0, 0], [0, padded_h - height], [0, padded_w - width], [0, 0]])
        sizes = tf.cast(tf.stack([height, width, shape[1], shape[2]]), tf.float32)
        return [images, tf.tile(sizes[None], [shape[0], 1])]

    def compute_output_spec(self, images):
        batch = images.shape[0]
        return [keras.KerasTensor((batch, None, None, 3), dtype="float32"),
                keras.KerasTensor((batch, 4), dtype="float32")]

    def get_config(self):
        return {**super().get_config(), "min_size": self.min_size, "max_size": self.max_size,
                "size_divisible": self.size_divisible, "mean": list(self.mean), "std": list(self.std)}


__all__ = ["GeneralizedRCNNTransform", "IMAGENET_MEAN", "IMAGENET_STD", "SIZE_DIVISIBLE", "resized_size"]
