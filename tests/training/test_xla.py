"""Every task's training step, and a detector's whole inference call, compiled with XLA on the CPU.

On a machine with a GPU, Keras's default `jit_compile="auto"` compiles `train_step` with XLA;
an op without an XLA kernel (TensorFlow's NMS ops) then fails the first step. These tests force
`jit_compile=True` on the CPU, which stands in for the GPU (README, "Training", XLA). Models
are tiny (64-pixel images, narrow heads, the VGG16 trunk for the detectors: ResNet-50's training
step takes minutes to compile on two busy cores); each trains for two steps through `fit`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.detection import FastRCNNTrainer, FasterRCNNTrainer
from training.segmentation import SegmentationCrossEntropy
from training.tasks import get_task
from zoo.detection.proposals import sliding_windows
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus

# Each test compiles a training step or a whole detector with XLA: 5 to 50 seconds apiece.
pytestmark = pytest.mark.slow

SIZE = 64
FASTER_TINY = dict(num_classes=2, pool_size=2, input_shape=(SIZE, SIZE, 3), backbone="vgg16", fc_units=16,
                   rpn_channels=16, anchor_scales=(16.0, 32.0), rpn_min_size=1.0, train_post_nms_top_n=32,
                   test_post_nms_top_n=16, max_detections=5)


def _detection_batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    images[0, 8:40, 8:40] = [250, 20, 20]
    images[1, 20:60, 30:62] = [20, 20, 250]
    targets = {
        "boxes": np.array([[[8, 8, 40, 40], [0, 0, 0, 0]], [[20, 30, 60, 62], [0, 0, 0, 0]]], np.float32),
        "classes": np.array([[1, 0], [2, 0]], np.int32),
    }
    return images, targets


def _fit_two_steps_under_xla(trainee, data, **compile_options):
    """`fit` for two steps with jit_compile=True: the logged losses, and whether every weight moved."""
    trainee.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True, **compile_options)
    assert trainee.jit_compile  # Keras keeps it on: nothing in the model opted out
    before = [variable.numpy() for variable in trainee.trainable_variables]
    history = trainee.fit(tf.data.Dataset.from_tensors(data).repeat(2), epochs=1, verbose=0).history
    after = [variable.numpy() for variable in trainee.trainable_variables]
    assert all(np.isfinite(values).all() for values in history.values()), history
    unchanged = [v.path for v, old, new in zip(trainee.trainable_variables, before, after) if np.array_equal(old, new)]
    return history, unchanged


def test_a_classifier_trains_under_xla():
    model = zoo.build("resnet18", classes=3, input_shape=(32, 32, 3))
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 1], np.int32)
    task = get_task("classification")
    history, unchanged = _fit_two_steps_under_xla(model, (images, labels), loss=task.loss(model))
    assert np.isfinite(history["loss"]).all() and not unchanged


def test_fast_rcnn_trains_under_xla():
    model = zoo.build("fast_rcnn_vgg16", num_classes=2, input_shape=(SIZE, SIZE, 3), pool_size=2, fc_units=16)
    windows = sliding_windows(SIZE, SIZE, stride=16, scales=(16.0, 32.0), aspect_ratios=(1.0,))
    trainer = FastRCNNTrainer(model, proposals=lambda images: windows, rois_per_image=8, seed=0)
    history, unchanged = _fit_two_steps_under_xla(trainer, _detection_batch())
    assert {"loss", "classification", "box"} <= set(history)
    assert not unchanged


def test_faster_rcnn_trains_under_xla():
    # The RPN's proposals go through NMS inside the training step: CombinedNonMaxSuppression
    # failed here ("Detected unsupported operations") before padded_nms.
    model = zoo.build("faster_rcnn_resnet50", **FASTER_TINY)
    trainer = FasterRCNNTrainer(model, rois_per_image=8, anchors_per_image=32, seed=0)
    history, unchanged = _fit_two_steps_under_xla(trainer, _detection_batch())
    assert {"loss", "rpn_classification", "rpn_box", "classification", "box"} <= set(history)
    assert not unchanged


def test_deeplab_v3_plus_trains_under_xla():
    config = DeepLabV3PlusConfig(backbone="resnet18", aspp_filters=8, decoder_projection_filters=4, decoder_filters=8,
                                 preprocessing="torch", num_classes=3, input_shape=(SIZE, SIZE, 3))
    model = build_deeplab_v3_plus(config, name="tiny")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    masks = rng.integers(0, 3, (2, SIZE, SIZE)).astype(np.int32)
    masks[:, :, :4] = 255  # ignored pixels
    history, unchanged = _fit_two_steps_under_xla(model, (images, masks), loss=SegmentationCrossEntropy())
    assert np.isfinite(history["loss"]).all() and not unchanged


@pytest.mark.parametrize("name", ["faster_rcnn_resnet50", "fast_rcnn_vgg16"])
def test_a_whole_detector_call_compiles_with_xla_and_equals_the_plain_graph(name):
    # Proposals (the RPN and its NMS), the head and the detections' NMS in one XLA cluster.
    images, _ = _detection_batch()
    if name == "faster_rcnn_resnet50":
        model = zoo.build(name, **FASTER_TINY)
        inputs = {"images": tf.constant(images)}
    else:
        model = zoo.build(name, num_classes=2, input_shape=(SIZE, SIZE, 3), pool_size=2, fc_units=16,
                          max_detections=5)
        windows = sliding_windows(SIZE, SIZE, stride=16, scales=(16.0, 32.0), aspect_ratios=(1.0,))
        inputs = {"images": tf.constant(images), "rois": tf.tile(windows[None], [2, 1, 1])}
    # Untrained heads score every class near 1/K; a lower threshold gives the NMS work to do.
    model.get_layer("detections").score_threshold = 0.0

    def detect(inputs):
        return model(inputs, training=False)

    plain = tf.function(detect, jit_compile=False)(inputs)
    # jit_compile=True must compile the whole function: an op without an XLA kernel fails it.
    compiled = tf.function(detect, jit_compile=True)(inputs)
    assert int(tf.reduce_sum(compiled["num_detections"])) > 0
    for key in ("num_detections", "classes"):
        np.testing.assert_array_equal(compiled[key].numpy(), plain[key].numpy(), err_msg=key)
    for key in ("boxes", "scores", "class_probs"):
        np.testing.assert_allclose(compiled[key].numpy(), plain[key].numpy(), rtol=1e-4, atol=1e-3, err_msg=key)
    if "proposals" in plain:
        np.testing.assert_allclose(compiled["proposals"].numpy(), plain["proposals"].numpy(), atol=1e-3)


def test_zoo_train_jit_compile_on_trains_faster_rcnn_in_its_own_process(tmp_path):
    """`zoo train --jit-compile on` as a user runs it: what `auto` does on a GPU."""
    import json

    from tests.helpers import run_zoo

    overrides = []
    for key, value in FASTER_TINY.items():
        if key not in ("num_classes", "input_shape"):
            overrides += ["--set", f"{key}={value!r}"]
    out = tmp_path / "run"
    process = run_zoo("train", "faster_rcnn_resnet50", "--dataset", "synthetic:8", "--image-size", SIZE, SIZE,
                      "--epochs", "1", "--batch-size", "4", "--precise-bn", "0", "--jit-compile", "on", "--quiet",
                      "--out", out, *overrides)
    assert process.returncode == 0, process.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["jit_compile"] == "on"
    assert all(np.isfinite(value) for value in json.loads((out / "history.json").read_text())["loss"])
