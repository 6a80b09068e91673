"""Layers that carry RoIs through a detection head and turn its outputs into detections.

Shapes: B images, N RoIs per image (padding rows all zeros), K object classes, D detections.
Keras 3 cannot apply raw `tf.*` ops to symbolic tensors of a functional model, so each step of
the head that is not a stock Keras layer is a small registered layer here (no `Lambda`), and
non-maximum suppression sits in a layer's `call`, so that a SavedModel contains it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers import boxes as box_ops


@keras.saving.register_keras_serializable(package="zoo")
class FlattenRoIs(keras.layers.Layer):
    """`[B, N, ...]` -> `[max(B * N, 1), ...]`, so that per-RoI convolutions (ResNet's conv5 in
    the R50-C4 head) run on every pooled RoI as on a batch of images.

    With no RoIs at all one zero row is added (and dropped again by `UnflattenRoIs`): oneDNN's
    convolution fails on an empty batch (an AddV2 shape error), which a call with no
    proposals must not hit.
    """

    def call(self, inputs):
        shape = tf.shape(inputs)
        count = shape[0] * shape[1]
        flat = tf.reshape(inputs, tf.concat([[count], shape[2:]], 0))
        padding = tf.concat([[[0, tf.maximum(1 - count, 0)]], tf.zeros([tf.rank(inputs) - 2, 2], tf.int32)], 0)
        return tf.pad(flat, padding)

    def compute_output_shape(self, input_shape):
        batch, rois = input_shape[0], input_shape[1]
        merged = None if batch is None or rois is None else batch * rois
        return (merged, *input_shape[2:])


@keras.saving.register_keras_serializable(package="zoo")
class UnflattenRoIs(keras.layers.Layer):
    """`([max(B * N, 1), ...], rois [B, N, 4])` -> `[B, N, ...]`, undoing `FlattenRoIs`."""

    def call(self, inputs):
        values, rois = inputs
        shape = tf.shape(rois)
        values = values[: shape[0] * shape[1]]
        return tf.reshape(values, tf.concat([shape[:2], tf.shape(values)[1:]], 0))

    def compute_output_shape(self, input_shape):
        values_shape, rois_shape = input_shape
        return (rois_shape[0], rois_shape[1], *values_shape[1:])


@keras.saving.register_keras_serializable(package="zoo")
class ClassBoxDeltas(keras.layers.Layer):
    """`[B, N, 4 K]` -> `[B, N, K, 4]`: the class-specific box regression of each RoI."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, inputs):
        shape = tf.shape(inputs)
        return tf.reshape(inputs, [shape[0], shape[1], self.num_classes, 4])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.num_classes, 4)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="zoo")
class DetectionPostprocess(keras.layers.Layer):
    """Class scores and box deltas of each RoI -> the final detections, in the graph.

    Each RoI's class-specific deltas are decoded against it (weights (10, 10, 5, 5), Fast
    R-CNN's), clipped to the image, and per-class NMS keeps the boxes whose score is above
    `score_threshold`, at most `max_detections` per image. Padding RoIs (all zeros) and RoIs with
    a NaN or Inf coordinate give no detection.

    Call arguments:
      inputs: `[class_probs [B, N, K + 1], box_deltas [B, N, K, 4], rois [B, N, 4], images
        [B, H, W, C]]` (the images only give the size to clip to).

    Returns:
      `{"boxes": [B, D, 4] pixels, "scores": [B, D], "classes": [B, D] int32 1-based (0 in
      padding rows), "num_detections": [B] int32}`.
    """

    def __init__(self, *, max_detections=100, iou_threshold=0.3, score_threshold=0.05,
                 box_weights=box_ops.DEFAULT_WEIGHTS, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.max_detections = int(max_detections)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)
        self.box_weights = tuple(float(w) for w in box_weights)

    def call(self, inputs):
        class_probs, box_deltas, rois, images = inputs
        class_probs = tf.cast(class_probs, tf.float32)
        rois = tf.cast(rois, tf.float32)
        # A non-finite RoI (which RoIPooling lets through, as zeros, only under XLA) is treated as
        # padding: it decodes from a zero box and scores 0, so it never becomes a detection.
        finite = tf.reduce_all(tf.math.is_finite(rois), axis=-1)
        rois = tf.where(finite[..., None], rois, tf.zeros_like(rois))
        boxes = box_ops.decode(tf.cast(box_deltas, tf.float32), rois[:, :, None, :], weights=self.box_weights)
        image_shape = tf.cast(tf.shape(images)[1:3], tf.float32)
        real = tf.reduce_any(tf.not_equal(rois, 0.0), axis=-1) & finite
        scores = tf.where(real[..., None], class_probs[..., 1:], tf.zeros_like(class_probs[..., 1:]))
        detections = box_ops.batched_nms(
            boxes, scores, max_output_size_per_class=self.max_detections, max_total_size=self.max_detections,
            iou_threshold=self.iou_threshold, score_threshold=self.score_threshold,
            clip_boxes=True, image_shape=image_shape,
        )
        return detections

    def compute_output_spec(self, inputs):
        batch = inputs[0].shape[0]
        count = self.max_detections
        return {
            "boxes": keras.KerasTensor((batch, count, 4), dtype="float32"),
            "scores": keras.KerasTensor((batch, count), dtype="float32"),
            "classes": keras.KerasTensor((batch, count), dtype="int32"),
            "num_detections": keras.KerasTensor((batch,), dtype="int32"),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "max_detections": self.max_detections,
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "box_weights": list(self.box_weights),
        }
