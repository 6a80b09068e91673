"""The trainer end to end: `zoo train` / `zoo evaluate` on synthetic data, kill-and-resume,
NaN, and the refusal to overwrite a run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from training import TrainConfig, TrainingDiverged, data, train
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tiny(num_classes):
    inputs = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x), name="tiny")


@pytest.mark.slow
def test_zoo_train_then_evaluate_resnet18_on_synthetic_shapes(tmp_path, capsys):
    # Four shapes in random colours on textured backgrounds, from scratch: about 1.5 minutes
    # on two cores (oneDNN on, as `make test` sets it); held-out top-1 about 0.6. Chance is 0.25.
    out = tmp_path / "run"
    common = ["--dataset", "synthetic:1000", "--image-size", "48", "48", "--batch-size", "32", "--quiet"]
    assert main(["train", "resnet18", *common, "--epochs", "7", "--optimizer", "adam", "--lr", "0.001",
                 "--out", str(out)]) == 0
    assert (out / "model.keras").is_file() and (out / "best.keras").is_file()
    history = json.loads((out / "history.json").read_text())
    assert len(history["val_top1"]) == 7
    assert history["val_top1"][-1] >= 0.45, history
    assert history["loss"][-1] < history["loss"][0]
    run = json.loads((out / "run.json").read_text())
    assert run["class_names"] == list(data.synthetic(4).class_names)
    capsys.readouterr()

    # Images the run never saw: synthetic splits other than "train" draw other images.
    assert main(["evaluate", "resnet18", "--weights", str(out / "model.keras"), "--dataset", "synthetic:300",
                 "--split", "val", "--quiet"]) == 0  # the run's image size, from run.json
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last_line)
    assert set(metrics) >= {"loss", "top1"}
    assert metrics["top1"] >= 0.45, metrics


KILL_AT_SECOND_EPOCH = """
import os, signal, sys
from training import callbacks
original = callbacks.StopOnNaN.on_train_batch_end
def on_train_batch_end(self, batch, logs=None):
    if self._epoch == 1 and batch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, batch, logs)
callbacks.StopOnNaN.on_train_batch_end = on_train_batch_end
from zoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _zoo_train(out, *extra, script=None):
    arguments = ["train", "resnet18", "--dataset", "synthetic:60", "--image-size", "32", "32", "--batch-size", "8",
                 "--epochs", "3", "--lr", "0.02", "--out", str(out), "--quiet", *extra]
    command = [sys.executable, "-c", script, *arguments] if script else [sys.executable, "-m", "zoo", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    killed = _zoo_train(tmp_path / "killed", script=KILL_AT_SECOND_EPOCH)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # Killed in the middle of the second epoch: the first epoch's backup is there, no model.
    assert [p.name for p in (tmp_path / "killed" / "backup").iterdir()] == ["epoch-0001"]
    assert not (tmp_path / "killed" / "model.keras").exists()

    refused = _zoo_train(tmp_path / "killed")
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = _zoo_train(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing at epoch 2 of 3" in resumed.stderr
    straight = _zoo_train(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]

    histories = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("killed", "straight")]
    assert len(histories[0]["loss"]) == len(histories[1]["loss"]) == 3
    np.testing.assert_allclose(histories[0]["val_loss"], histories[1]["val_loss"], rtol=1e-3)
    models = [keras.saving.load_model(tmp_path / run / "model.keras") for run in ("killed", "straight")]
    for ours, theirs in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5)


def test_a_nan_loss_stops_with_a_clear_message_and_no_model(tmp_path):
    source = data.synthetic(32, image_size=(32, 32), num_classes=3)
    config = TrainConfig(epochs=3, batch_size=8, image_size=(32, 32), learning_rate=1e12, schedule="constant",
                         momentum=0.0, augment=False, validation_fraction=0.25)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1, batch \d+.*lower the learning rate"):
        train(_tiny, source, out_dir=tmp_path, config=config, verbose=0)
    assert not (tmp_path / "model.keras").exists()
    assert not (tmp_path / "backup").exists() or not any((tmp_path / "backup").iterdir())


def test_adversarial_training_runs_and_keeps_the_plain_model(tmp_path):
    source = data.synthetic(32, image_size=(32, 32), num_classes=3)
    config = TrainConfig(epochs=1, batch_size=8, image_size=(32, 32), learning_rate=0.01,
                         adversarial_epsilon=8.0, augment=False, validation_fraction=0.25)
    result = train(_tiny, source, out_dir=tmp_path, config=config, verbose=0)
    assert result.model.name == "tiny"
    assert np.isfinite(result.history["loss"][0])
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.name == "tiny"


def test_mixed_precision_trains_and_restores_the_policy(tmp_path):
    source = data.synthetic(32, image_size=(32, 32), num_classes=3)
    config = TrainConfig(epochs=1, batch_size=8, image_size=(32, 32), mixed_precision="mixed_float16",
                         augment=False, validation_fraction=0.25)
    result = train(_tiny, source, out_dir=tmp_path, config=config, verbose=0)
    assert result.model.get_layer("conv").compute_dtype == "float16"
    assert result.model.get_layer("conv").kernel.dtype == "float32"
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(result.history["loss"][0])
    assert keras.config.dtype_policy().name == "float32"


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="TrainConfig.batch_norm"):
        TrainConfig(batch_norm="sync")
    with pytest.raises(ValueError, match="TrainConfig.mixed_precision"):
        TrainConfig(mixed_precision="float16")
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(_tiny, data.synthetic(8, image_size=(32, 32)), out_dir="unused", config=TrainConfig(batch_size=16, validation_fraction=0.25), verbose=0)
