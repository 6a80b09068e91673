"""Segmentation training: the 255-ignoring cross-entropy, mean IoU on hand-computed confusion
matrices, multi-scale inference, a few training steps and the task's evaluation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import random_pixels
from training import data
from training.fit import evaluate
from training.regularization import apply_weight_decay, set_batch_norm
from training.segmentation import (
    MeanIoU,
    SegmentationCrossEntropy,
    confusion_matrix,
    iou_from_confusion,
    predict_multiscale,
    segmentation_cross_entropy,
)
from training.tasks import get_task
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus

TINY = dict(backbone="resnet18", aspp_filters=8, decoder_projection_filters=4, decoder_filters=8, preprocessing="torch")


def numpy_cross_entropy(labels, logits):
    logits = logits.astype(np.float64)
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    keep = labels != 255
    picked = np.take_along_axis(log_softmax, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    return -picked[keep].mean()


# --------------------------------------------------------------------------- loss


def test_cross_entropy_is_the_mean_over_labelled_pixels(rng):
    logits = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(2, 5, 4))
    labels[0, :2] = 255
    loss = float(segmentation_cross_entropy(labels, logits))
    np.testing.assert_allclose(loss, numpy_cross_entropy(labels, logits), rtol=1e-5)
    # The logits of ignored pixels change nothing.
    changed = logits.copy()
    changed[0, :2] = rng.normal(scale=10, size=changed[0, :2].shape)
    np.testing.assert_allclose(float(segmentation_cross_entropy(labels, changed)), loss, rtol=1e-6)
    # The Keras loss (and a [B, H, W, 1] label) agree.
    np.testing.assert_allclose(float(SegmentationCrossEntropy()(labels[..., None], logits)), loss, rtol=1e-6)


def test_an_all_ignored_batch_gives_zero_and_a_zero_gradient(rng):
    logits = tf.Variable(rng.normal(size=(1, 3, 3, 2)).astype("float32"))
    labels = np.full((1, 3, 3), 255)
    with tf.GradientTape() as tape:
        loss = segmentation_cross_entropy(labels, logits)
    gradient = tape.gradient(loss, logits)
    assert float(loss) == 0.0 and np.all(np.asarray(gradient) == 0)


def test_loss_round_trips_through_its_config():
    loss = SegmentationCrossEntropy(ignore_label=7)
    assert SegmentationCrossEntropy.from_config(loss.get_config()).ignore_label == 7


# --------------------------------------------------------------------------- mean IoU


def test_iou_on_a_hand_computed_confusion_matrix():
    labels = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    predictions = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])  # the last two are ignored
    matrix = confusion_matrix(labels, predictions, 3).numpy()
    # rows labels, columns predictions
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    mean, per_class = iou_from_confusion(matrix)
    # class 0: TP 1, FP 1 (a 2 predicted 0), FN 1 -> 1/3; class 1: 2 / 3; class 2: 1 / 2.
    np.testing.assert_allclose(per_class, [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(mean, (1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_a_class_absent_from_labels_and_predictions_is_left_out_of_the_mean():
    mean, per_class = iou_from_confusion([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert np.isnan(per_class[2])
    np.testing.assert_allclose(mean, (3 / 4 + 2 / 3) / 2)
    # Predicted but never labelled: IoU 0, and it counts.
    mean, per_class = iou_from_confusion([[3, 1], [0, 0]])
    np.testing.assert_allclose(per_class, [3 / 4, 0.0])
    np.testing.assert_allclose(mean, 3 / 8)
    assert iou_from_confusion(np.zeros((2, 2)))[0] == 0.0


def test_metric_accumulates_over_batches_and_ignores_255(rng):
    metric = MeanIoU(3)
    all_labels, all_predictions = [], []
    for _ in range(3):
        labels = rng.integers(0, 3, size=(2, 4, 5))
        labels[:, 0] = 255
        logits = rng.normal(size=(2, 4, 5, 3)).astype("float32")
        metric.update_state(labels, logits)
        all_labels.append(labels)
        all_predictions.append(logits.argmax(-1))
    keep = np.concatenate(all_labels) != 255
    truth, predicted = np.concatenate(all_labels)[keep], np.concatenate(all_predictions)[keep]
    expected = []
    for k in range(3):
        intersection = np.sum((truth == k) & (predicted == k))
        union = np.sum((truth == k) | (predicted == k))
        expected.append(intersection / union)
    np.testing.assert_allclose(metric.per_class_iou(), expected)
    np.testing.assert_allclose(float(metric.result()), np.mean(expected), rtol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    assert MeanIoU.from_config(metric.get_config()).num_classes == 3
    with pytest.raises(ValueError, match="num_classes"):
        MeanIoU(0)


# --------------------------------------------------------------------------- inference


class FlipAwareModel(keras.Model):
    """Logits that depend on the column, so that flips and scales change them."""

    def call(self, images, training=False):
        width = tf.shape(images)[2]
        columns = tf.cast(tf.range(width), tf.float32) / tf.cast(width, tf.float32)
        first = images[..., :1] / 255.0 + columns[None, None, :, None]
        return tf.concat([first, -first, images[..., 1:2] / 100.0], axis=-1)


def test_one_scale_without_flips_is_the_plain_softmax(rng):
    model = build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY, num_classes=3), name="tiny")
    images = random_pixels(rng, (2, 40, 44, 3))
    expected = tf.nn.softmax(model(images, training=False)).numpy()
    np.testing.assert_allclose(predict_multiscale(model, images).numpy(), expected, atol=1e-6)


def test_flips_and_scales_are_averaged_as_probabilities(rng):
    model = FlipAwareModel()
    images = random_pixels(rng, (1, 9, 13, 3))
    softmax = lambda x: tf.nn.softmax(model(x)).numpy()  # noqa: E731
    flipped = softmax(images[:, :, ::-1])[:, :, ::-1]
    np.testing.assert_allclose(
        predict_multiscale(model, images, add_flipped_images=True).numpy(), (softmax(images) + flipped) / 2, atol=1e-6
    )
    # A scale of 2 runs the model on the align-corners upsampled image and resizes back.
    up = tf.compat.v1.image.resize_bilinear(images, (18, 26), align_corners=True)
    back = tf.compat.v1.image.resize_bilinear(softmax(up), (9, 13), align_corners=True).numpy()
    np.testing.assert_allclose(
        predict_multiscale(model, images, eval_scales=(1.0, 2.0)).numpy(), (softmax(images) + back) / 2, atol=1e-6
    )
    with pytest.raises(ValueError, match="eval_scales"):
        predict_multiscale(model, images, eval_scales=(0.0,))


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    source = data.synthetic(4, image_size=32, num_classes=2, seed=3)
    images = np.stack([example.image for example in source.examples]).astype("float32")
    masks = np.stack([example.mask for example in source.examples]).astype("int32")
    masks[:, :, :4] = 255  # a strip of ignore, as crop padding leaves
    model = build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY, num_classes=2, dropout=0.0), name="tiny")
    loss = SegmentationCrossEntropy()
    optimizer = keras.optimizers.Adam(1e-2)
    # Eager steps (no graph to trace: faster than fit for a handful). The loss is the
    # training-mode one (batch statistics), the objective the steps descend; no dropout.
    losses = []
    for _ in range(8):
        with tf.GradientTape() as tape:
            value = loss(masks, model(images, training=True))
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        losses.append(float(value))
    after = float(loss(masks, model(images, training=True)))
    assert np.isclose(losses[0], np.log(3), atol=0.05)  # small logits at initialisation
    assert after < 0.85 * losses[0], losses + [after]


def test_task_evaluate_reports_miou_and_per_class_iou():
    source = data.synthetic(4, image_size=32, num_classes=2, seed=1)
    model = build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY, num_classes=2), name="tiny")
    task = get_task("segmentation")
    assert task.monitor == "val_mIoU" and task.summary == "mIoU"
    metrics = evaluate(model, source, task="segmentation", batch_size=4, image_size=(32, 32), verbose=0,
                       task_options={"add_flipped_images": True})
    assert set(metrics) == {"mIoU", "IoU/background", f"IoU/{source.class_names[0]}", f"IoU/{source.class_names[1]}"}
    assert 0.0 <= metrics["mIoU"] <= 1.0
    wrong = build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY, num_classes=5), name="tiny")
    with pytest.raises(ValueError, match="5 object classes \\+ background, the data 2"):
        evaluate(wrong, source, task="segmentation", batch_size=4, image_size=(32, 32), verbose=0)


def test_weight_decay_and_frozen_batch_norm_reach_the_aspp_sublayers():
    model = build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY, num_classes=3, aspp_separable=False), name="tiny")
    count = apply_weight_decay(model, 1e-4)
    aspp = model.get_layer("aspp")
    assert all(layer.kernel.regularizer is not None for layer in aspp.sublayers if hasattr(layer, "kernel"))
    kernels = [v for v in model.trainable_weights if v.path.endswith("kernel")]
    assert count == len(kernels)
    expected = sum(0.5e-4 * float(np.sum(np.square(v.numpy()))) for v in kernels)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-4)
    set_batch_norm(model, "frozen")
    assert not any(layer.trainable for layer in aspp.sublayers if isinstance(layer, keras.layers.BatchNormalization))
