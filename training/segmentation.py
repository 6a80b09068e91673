"""Semantic segmentation training: the cross-entropy that ignores 255, mean IoU, multi-scale
inference and the "segmentation" task.

Shapes: B images of H x W pixels, K classes (the background included: a source with K - 1
object classes has masks 0 ... K - 1, 0 the background, 255 ignore).

Names: `labels` are `[B, H, W]` int class ids (255 ignore); `logits` `[B, H, W, K]`, the
model's output before the softmax.

DeepLab's recipe (tensorflow/models `research/deeplab/train.py` and its documented runs), and
where the zoo's trainer takes each part from:
- SGD with momentum 0.9 and a poly schedule, base 0.007, power 0.9: `TrainConfig(optimizer="sgd",
  momentum=0.9, learning_rate=0.007, schedule="poly")` (`training.optimizers.WarmupSchedule`'s
  poly has power 0.9); `DEEPLAB_RECIPE` holds these values.
- Weight decay per backbone: `training.regularization.default_weight_decay` (1e-4 ResNet, 4e-5
  MobileNet-v2 and Xception), L2 on the kernels, which `TrainConfig(weight_decay=None)` takes.
- Random scale 0.5 to 2.0, a crop padded with the mean pixel (label 255) and horizontal flips:
  `DEEPLAB_AUGMENTATION`, the `training.data.augment` arguments that `zoo train` uses for
  segmenters (`TrainConfig(augment=DEEPLAB_AUGMENTATION)`; `augment`'s own defaults scale by
  0.75 to 1.25 and pad with 0). No colour jitter, as DeepLab. The padded pixels carry label
  255 and take no part in the loss.
- Cross-entropy ignoring 255: `segmentation_cross_entropy` (the mean over the labelled pixels
  of the batch, as DeepLab's `add_softmax_cross_entropy_loss_for_each_scale` without
  hard-example mining).

Mean IoU: `IoU_k = TP_k / (TP_k + FP_k + FN_k)` from a confusion matrix accumulated over the
whole evaluation set (never averaged per batch), 255 ignored. A class that appears neither in
the labels nor in the predictions (`TP + FP + FN == 0`) has an undefined IoU: it is NaN in the
per-class list and left out of the mean, as `tf.compat.v1.metrics.mean_iou` (DeepLab's eval)
does. With no labelled pixel at all, the mean is 0.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
import tensorflow as tf

from layers.resample import resize_bilinear
from training.data import IGNORE_LABEL, make_dataset
from training.tasks import Task, register_task

DEEPLAB_RECIPE = dict(optimizer="sgd", momentum=0.9, learning_rate=0.007, schedule="poly")
# DeepLab's input_preprocess: scale 0.5 to 2.0, pad with the mean pixel (127.5), flip, no colour.
DEEPLAB_AUGMENTATION = {"scale_range": (0.5, 2.0), "image_pad_value": 127.5, "color": False, "flip_probability": 0.5}


# --------------------------------------------------------------------------- loss


def segmentation_cross_entropy(labels, logits, *, ignore_label=IGNORE_LABEL):
    """Softmax cross-entropy averaged over the pixels whose label is not `ignore_label`.

    Args:
      labels: `[B, H, W]` int class ids in `[0, K)` or `ignore_label`.
      logits: `[B, H, W, K]`.

    Returns:
      A float32 scalar: the mean over the labelled pixels of the batch; 0 when every pixel is
      ignored (never NaN).
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    if labels.shape.rank == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    labelled = tf.not_equal(labels, ignore_label)
    safe_labels = tf.where(labelled, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(labelled, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weights), tf.reduce_sum(weights))


@keras.saving.register_keras_serializable(package="zoo")
class SegmentationCrossEntropy(keras.losses.Loss):
    """`segmentation_cross_entropy` as a Keras loss: `(labels [B, H, W], logits [B, H, W, K])`.

    The value is already the mean over the batch's labelled pixels (one scalar per batch).
    """

    def __init__(self, *, ignore_label=IGNORE_LABEL, name="segmentation_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_label = int(ignore_label)

    def call(self, y_true, y_pred):
        return segmentation_cross_entropy(y_true, y_pred, ignore_label=self.ignore_label)

    def get_config(self):
        config = super().get_config()
        config.update(ignore_label=self.ignore_label)
        return config


# --------------------------------------------------------------------------- metric


def confusion_matrix(labels, predictions, num_classes, *, ignore_label=IGNORE_LABEL):
    """`[K, K]` float64 counts: row = label, column = prediction, `ignore_label` pixels left out."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    keep = tf.not_equal(labels, ignore_label)
    return tf.math.confusion_matrix(
        tf.boolean_mask(labels, keep), tf.boolean_mask(predictions, keep), num_classes=num_classes, dtype=tf.float64
    )


def iou_from_confusion(matrix) -> tuple[float, np.ndarray]:
    """`(mean IoU, per-class IoU [K])` from a confusion matrix (NumPy); see the module docstring."""
    matrix = np.asarray(matrix, np.float64)
    true_positives = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, true_positives / np.where(union > 0, union, 1), np.nan)
    present = union > 0
    mean = float(per_class[present].mean()) if present.any() else 0.0
    return mean, per_class


@keras.saving.register_keras_serializable(package="zoo")
class MeanIoU(keras.metrics.Metric):
    """Mean intersection-over-union from a confusion matrix accumulated over batches.

    Args:
      num_classes: K, background included.
      ignore_label: labels with this value (255) are left out.

    `update_state(labels [B, H, W], logits [B, H, W, K])` takes the argmax of the logits (or
    probabilities). `result()` is the mean IoU over the classes present in the labels or the
    predictions; `per_class_iou()` gives the `[K]` NumPy array (NaN where a class is absent
    from both).
    """

    def __init__(self, num_classes, *, ignore_label=IGNORE_LABEL, name="mIoU", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"MeanIoU: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes, self.ignore_label = num_classes, int(ignore_label)
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype="float64", name="confusion"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("MeanIoU: sample_weight is not supported; label the pixels to skip 255")
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == 4 and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
        predictions = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        self.confusion.assign_add(
            confusion_matrix(y_true, predictions, self.num_classes, ignore_label=self.ignore_label)
        )

    def result(self):
        matrix = tf.convert_to_tensor(self.confusion)
        true_positives = tf.linalg.diag_part(matrix)
        union = tf.reduce_sum(matrix, 0) + tf.reduce_sum(matrix, 1) - true_positives
        present = union > 0
        iou = tf.math.divide_no_nan(true_positives, union)
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, iou, 0.0)), count)
        return tf.cast(mean, tf.float32)

    def per_class_iou(self) -> np.ndarray:
        return iou_from_confusion(np.asarray(self.confusion))[1]

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, ignore_label=self.ignore_label)
        return config


# --------------------------------------------------------------------------- inference


def predict_multiscale(model, images, *, eval_scales=(1.0,), add_flipped_images=False):
    """Class probabilities averaged over input scales and horizontal flips (DeepLab's eval).

    Each scale `s` resizes the images to `round(s * H) x round(s * W)` (align corners, as every
    resize of the zoo; DeepLab uses `scale_dimension`, `(H - 1) * s + 1` for its 4k + 1 crops),
    runs the model, turns the logits into softmax probabilities and resizes them back to
    `H x W`; with `add_flipped_images` the mirrored image is run too and its probabilities are
    mirrored back. The result is the mean of all of them.

    Args:
      model: images `[B, H, W, 3]` (raw pixels) -> logits `[B, h, w, K]` (any h, w).
      images: `[B, H, W, 3]`.
      eval_scales: the scales, e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) as DeepLab's VOC eval.
      add_flipped_images: also run the horizontally flipped images.

    Returns:
      float32 `[B, H, W, K]` probabilities (each pixel sums to 1).
    """
    scales = tuple(float(scale) for scale in eval_scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"predict_multiscale: eval_scales must be positive numbers, got {eval_scales!r}")
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"predict_multiscale: images must be [B, H, W, 3], got shape {tuple(images.shape)}")
    size = tf.shape(images)[1:3]
    total, count = None, 0
    for scale in scales:
        scaled = images
        if scale != 1.0:
            scaled_size = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
            scaled = resize_bilinear(images, scaled_size, align_corners=True)
        for flip in (False, True) if add_flipped_images else (False,):
            inputs = tf.reverse(scaled, [2]) if flip else scaled
            probabilities = tf.nn.softmax(tf.cast(model(inputs, training=False), tf.float32), axis=-1)
            if flip:
                probabilities = tf.reverse(probabilities, [2])
            probabilities = resize_bilinear(probabilities, size, align_corners=True)
            total = probabilities if total is None else total + probabilities
            count += 1
    return total / count


def evaluate_segmenter(model, source, *, image_size, batch_size=8, eval_scales=(1.0,), add_flipped_images=False,
                       class_names=None, verbose=0, resize="stretch"):
    """Mean and per-class IoU of a segmenter on `source` (images resized to `image_size`).

    The pixels scored are the model's input pixels, as the validation during training scores
    them (`MeanIoU`), so that the two agree: the masks are resized with their images
    (nearest neighbour), and with `resize="letterbox"` the padding is labelled 255 and takes
    no part. `zoo.predict.segment` maps a prediction back to the original image's pixels.

    Args:
      model: raw pixels -> logits `[B, H, W, K]`, K = `len(source.class_names) + 1`.
      source: a `training.data.DatasetSource` with masks.
      image_size: `(height, width)` every image and mask is resized to (`make_dataset`, masks
        nearest-neighbour), unaugmented.
      resize: "stretch" or "letterbox", as the model was trained (`TrainConfig.resize`).
      eval_scales, add_flipped_images: `predict_multiscale`'s.
      class_names: K names for the per-class keys; default "background" + the source's.
      verbose: 1 prints progress to stderr.

    Returns:
      `{"mIoU": float, "IoU/<class>": float, ...}` (NaN for a class absent from both the labels
      and the predictions; the mean leaves those out).
    """
    num_classes = int(model.output.shape[-1])
    names = list(class_names) if class_names is not None else ["background", *source.class_names]
    if num_classes != len(source.class_names) + 1 or len(names) != num_classes:
        raise ValueError(
            f"evaluate_segmenter: the model has {num_classes - 1} object classes + background, the data "
            f"{len(source.class_names)} ({', '.join(source.class_names)})"
        )
    dataset = make_dataset(
        source, task="segmentation", batch_size=batch_size, image_size=image_size, training=False,
        num_classes=len(source.class_names), resize=resize,
    )
    scales, flipped = tuple(eval_scales), bool(add_flipped_images)

    @tf.function(reduce_retracing=True, autograph=False)
    def predict(images):
        probabilities = predict_multiscale(model, images, eval_scales=scales, add_flipped_images=flipped)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)

    matrix = np.zeros((num_classes, num_classes), np.float64)
    done = 0
    for images, masks in dataset:
        matrix += confusion_matrix(masks, predict(images), num_classes).numpy()
        done += int(images.shape[0])
        if verbose:
            print(f"evaluate_segmenter: {done}/{len(source.examples)} images", file=sys.stderr, flush=True)
    mean, per_class = iou_from_confusion(matrix)
    metrics = {"mIoU": mean}
    metrics.update({f"IoU/{name}": float(value) for name, value in zip(names, per_class)})
    return metrics


# --------------------------------------------------------------------------- task


def _evaluate(model, source, *, batch_size, image_size, resize="stretch", verbose=0, **options):
    return evaluate_segmenter(model, source, image_size=image_size, batch_size=batch_size, verbose=verbose,
                              resize=resize, **options)


register_task(
    Task(
        name="segmentation",
        loss=lambda model: SegmentationCrossEntropy(),
        # The trainer counts object classes; the logits add the background.
        metrics=lambda num_classes: [MeanIoU(num_classes + 1)],
        monitor="val_mIoU",
        summary="mIoU",
        evaluate=_evaluate,
    )
)

__all__ = [
    "DEEPLAB_AUGMENTATION",
    "DEEPLAB_RECIPE",
    "MeanIoU",
    "SegmentationCrossEntropy",
    "confusion_matrix",
    "evaluate_segmenter",
    "iou_from_confusion",
    "predict_multiscale",
    "segmentation_cross_entropy",
]
