"""Precise batch norm: exact averages of the batches' statistics (a NumPy reference), frozen
layers untouched, a DeepLab-v3+ that predicts only background until its statistics are
re-estimated, validation metrics that equal `evaluate`'s, and the stalled-validation warning."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from training import TrainConfig, data, evaluate_segmenter, train
from training.callbacks import StalledValidation
from training.fit import evaluate
from training.precise_bn import PreciseBatchNorm, estimate_batch_norm_statistics, trainable_batch_norms

ROOT = Path(__file__).resolve().parents[2]
EPSILON = 1e-3


def _two_bn_model(seed=0):
    """1x1 convolutions, so that the NumPy reference is a matrix product."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 6, 3))
    x = keras.layers.Conv2D(4, 1, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, epsilon=EPSILON, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 1, name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.999, epsilon=EPSILON, name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    for name in ("bn1", "bn2"):  # non-trivial scales and offsets, so bn1's output matters to bn2
        layer = model.get_layer(name)
        layer.gamma.assign(np.random.default_rng(1).uniform(0.5, 2.0, layer.gamma.shape))
        layer.beta.assign(np.random.default_rng(2).normal(size=layer.beta.shape))
    return model


def _reference_statistics(model, batches):
    """NumPy: each BN's per-batch mean and biased variance in training mode, averaged over batches."""
    def weights(name):
        return [np.asarray(w, np.float64) for w in model.get_layer(name).get_weights()]

    (k1, b1), (k2, b2) = weights("conv1"), weights("conv2")
    g1, beta1 = weights("bn1")[:2]
    stats = {"bn1": [], "bn2": []}
    for batch in batches:
        x = np.asarray(batch, np.float64)
        h = x @ k1[0, 0] + b1
        mean, variance = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
        stats["bn1"].append((mean, variance))
        h = np.maximum(g1 * (h - mean) / np.sqrt(variance + EPSILON) + beta1, 0.0)
        h = h @ k2[0, 0] + b2
        stats["bn2"].append((h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))))
    return {name: tuple(np.mean([s[i] for s in per_batch], axis=0) for i in (0, 1)) for name, per_batch in stats.items()}


def test_statistics_equal_numpy_averages_over_the_batches():
    model = _two_bn_model()
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (4, 5, 6, 3)).astype("float32") for _ in range(5)]
    weights_before = [w.copy() for w in model.get_weights()]
    updated = estimate_batch_norm_statistics(model, iter(batches), num_batches=3)
    assert updated == 2
    reference = _reference_statistics(model, batches[:3])  # only the first num_batches count
    for name in ("bn1", "bn2"):
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), reference[name][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), reference[name][1], rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.999  # restored
    # Nothing but the moving statistics changed.
    bn_statistics = {id(v) for name in ("bn1", "bn2")
                     for v in (model.get_layer(name).moving_mean, model.get_layer(name).moving_variance)}
    for variable, before in zip(model.weights, weights_before):
        if id(variable) not in bn_statistics:
            np.testing.assert_array_equal(variable.numpy(), before)


def test_frozen_layers_keep_their_statistics_and_labels_are_ignored():
    model = _two_bn_model()
    model.get_layer("bn1").trainable = False
    before = model.get_layer("bn1").moving_mean.numpy().copy()
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(4, 5, 6, 3)).astype("float32"), np.zeros(4, "int32")) for _ in range(2)]
    assert [layer.name for layer in trainable_batch_norms(model)] == ["bn2"]
    assert estimate_batch_norm_statistics(model, batches, num_batches=2) == 1
    np.testing.assert_array_equal(model.get_layer("bn1").moving_mean.numpy(), before)
    assert not np.allclose(model.get_layer("bn2").moving_mean.numpy(), 0.0)


def test_bad_arguments_and_empty_data_leave_statistics_unchanged():
    model = _two_bn_model()
    before = model.get_layer("bn2").moving_variance.numpy().copy()
    with pytest.raises(ValueError, match="num_batches"):
        estimate_batch_norm_statistics(model, [], num_batches=0)
    with pytest.raises(ValueError, match="no batch"):
        estimate_batch_norm_statistics(model, [], num_batches=4)
    np.testing.assert_array_equal(model.get_layer("bn2").moving_variance.numpy(), before)
    assert model.get_layer("bn2").momentum == 0.999
    with pytest.raises(ValueError, match="num_batches"):
        PreciseBatchNorm(lambda epoch: [], num_batches=0)


@pytest.mark.slow
def test_deeplab_predicts_only_background_until_precise_bn(tmp_path):
    """DeepLab-v3+ MobileNet-v2 with its own decays (0.997 backbone, 0.9997 head), 30 steps."""
    size = 64
    source = data.synthetic(240, image_size=size, num_classes=1, seed=0)
    held_out = data.synthetic(48, image_size=size, num_classes=1, seed=99)
    config = TrainConfig(epochs=1, batch_size=8, image_size=(size, size), optimizer="adam", learning_rate=2e-3,
                         validation_fraction=0, precise_bn=0, augment=False)
    result = train(lambda k: zoo.build("deeplabv3plus_mobilenetv2", num_classes=k, input_shape=(size, size, 3)),
                   source, out_dir=tmp_path / "run", task="segmentation", config=config, verbose=0)
    before = evaluate_segmenter(result.model, held_out, image_size=(size, size))
    assert before["IoU/circle"] < 0.02, before  # inference mode: background (almost) everywhere
    batches = data.make_dataset(source, task="segmentation", batch_size=8, image_size=(size, size), training=True,
                                seed=1, augment=False, num_classes=2)
    assert estimate_batch_norm_statistics(result.model, batches, num_batches=16) > 50
    after = evaluate_segmenter(result.model, held_out, image_size=(size, size))
    assert after["IoU/circle"] > 0.3 and after["mIoU"] > before["mIoU"] + 0.2, (before, after)


@pytest.mark.slow
def test_validation_during_training_equals_evaluate_on_the_same_split(tmp_path):
    size = 48
    source = data.synthetic(64, image_size=size, num_classes=2, seed=0)
    validation = data.synthetic(24, image_size=size, num_classes=2, seed=5)
    config = TrainConfig(epochs=2, batch_size=8, image_size=(size, size), optimizer="adam", learning_rate=1e-3,
                         precise_bn=4, augment=False)
    result = train(lambda k: zoo.build("deeplabv3plus_mobilenetv2", num_classes=k, input_shape=(size, size, 3)),
                   source, validation, out_dir=tmp_path / "run", task="segmentation", config=config, verbose=0)
    metrics = evaluate(result.model, validation, task="segmentation", batch_size=8, verbose=0)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["val_mIoU"][-1] == pytest.approx(metrics["mIoU"], abs=1e-5)
    assert len(history["val_mIoU"]) == 2


def test_stalled_validation_warns_once_naming_the_cause():
    stream = io.StringIO()
    callback = StalledValidation("val_mIoU", patience=3, hint="Precise batch norm is off.", stream=stream)
    for epoch, training_value in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]):
        callback.on_epoch_end(epoch, {"mIoU": training_value, "val_mIoU": 0.224})
    text = stream.getvalue()
    assert text.count("warning:") == 1
    assert "val_mIoU has stayed at 0.2240 for 4 epochs" in text and "batch-norm" in text and "off" in text


def test_stalled_validation_is_quiet_when_validation_moves_or_training_does_not():
    stream = io.StringIO()
    moving = StalledValidation("val_top1", patience=2, stream=stream)
    for epoch, value in enumerate([0.1, 0.2, 0.3, 0.4]):
        moving.on_epoch_end(epoch, {"top1": value, "val_top1": value - 0.05})
    flat = StalledValidation("val_top1", patience=2, stream=stream)
    for epoch in range(5):
        flat.on_epoch_end(epoch, {"top1": 0.5, "val_top1": 0.5})
    assert stream.getvalue() == ""


STRATEGY_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {root!r})
from tests.training.test_precise_bn import _two_bn_model
from training.precise_bn import estimate_batch_norm_statistics
batches = [np.random.default_rng(i).normal(1.0, 3.0, (4, 5, 6, 3)).astype("float32") for i in range(3)]
out = {{}}
for name, strategy in (("one", tf.distribute.get_strategy()), ("mirrored", tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]))):
    with strategy.scope():
        model = _two_bn_model()
        estimate_batch_norm_statistics(model, batches, num_batches=3)
    out[name] = [v.numpy().tolist() for v in model.non_trainable_weights]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_strategy_gives_the_one_device_statistics():
    process = subprocess.run(
        [sys.executable, "-c", STRATEGY_SCRIPT.format(root=str(ROOT))], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(process.stdout.strip().splitlines()[-1])
    assert len(out["one"]) == 4
    for ours, theirs in zip(out["mirrored"], out["one"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out["one"][0], 0.0)


def test_the_callback_estimates_before_each_validation_and_traces_once():
    model = _two_bn_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    images = rng.normal(2.0, 1.5, (24, 5, 6, 3)).astype("float32")
    labels = rng.integers(0, 2, 24).astype("int32")
    epoch_batches = {}

    def batches(epoch):  # a function of the epoch, like the trainer's
        epoch_batches[epoch] = [np.roll(images, epoch, axis=0)[i:i + 4] for i in range(0, 24, 4)]
        return iter(epoch_batches[epoch])

    seen = []

    class Probe(keras.callbacks.Callback):  # what the validation of each epoch sees
        def on_test_begin(self, logs=None):
            seen.append(model.get_layer("bn2").moving_mean.numpy().copy())

    callback = PreciseBatchNorm(batches, num_batches=5)
    model.fit(images, labels, batch_size=4, epochs=3, validation_data=(images, labels), verbose=0,
              callbacks=[callback, Probe()])
    assert callback._forward.experimental_get_tracing_count() == 1
    assert len(seen) == 3 and not np.allclose(seen[0], seen[1])
    # Epochs before the last use ceil(6 steps / 5) = 2 batches, the last one all 5.
    reference = _reference_statistics(model, epoch_batches[2][:5])
    np.testing.assert_allclose(seen[2], reference["bn2"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.get_layer("bn1").moving_variance.numpy(), reference["bn1"][1], rtol=1e-4,
                               atol=1e-5)
