"""Backups, atomic saves and the NaN guard, on a tiny model."""

import json
import os

import keras
import numpy as np
import pytest

from training.callbacks import Backup, BestCheckpoint, EarlyStopping, StopOnNaN, save_model_atomically


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def _data(rows=8):
    rng = np.random.default_rng(1)
    return rng.normal(size=(rows, 3)).astype("float32"), rng.normal(size=(rows, 2)).astype("float32")


def test_backup_restores_weights_optimizer_and_callback_state(tmp_path):
    model = _model()
    early = EarlyStopping("loss", patience=3)
    backup = Backup(tmp_path / "backup", stateful=[early])
    model.fit(*_data(), epochs=2, batch_size=4, callbacks=[early, backup], verbose=0)
    latest = Backup.latest(tmp_path / "backup")
    assert latest.name == "epoch-0002"
    assert json.loads((latest / "state.json").read_text())["epoch"] == 2

    fresh = _model()
    fresh_early = EarlyStopping("loss", patience=3)
    restorer = Backup(tmp_path / "backup", stateful=[fresh_early])
    restorer.set_model(fresh)
    assert restorer.restore(latest) == 2
    for ours, theirs in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert int(fresh.optimizer.iterations.numpy()) == 4
    for ours, theirs in zip(fresh.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert fresh_early.get_state() == early.get_state()
    assert len(restorer.history["loss"]) == 2


def test_latest_ignores_unfinished_backups_and_old_ones_are_pruned(tmp_path):
    model = _model()
    backup = Backup(tmp_path, keep=2)
    model.fit(*_data(), epochs=4, batch_size=8, callbacks=[backup], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003", "epoch-0004"]
    # A kill during a backup leaves a temporary directory, or one without its state file.
    (tmp_path / "epoch-0005.tmp-abc").mkdir()
    (tmp_path / "epoch-0006").mkdir()
    assert Backup.latest(tmp_path).name == "epoch-0004"
    assert Backup.latest(tmp_path / "missing") is None


def test_atomic_save_keeps_the_previous_file_when_saving_fails(tmp_path, monkeypatch):
    model = _model()
    target = tmp_path / "model.keras"
    save_model_atomically(model, target)
    good = target.read_bytes()

    def broken_save(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model_atomically(model, target)
    assert target.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.keras"]


def test_nan_loss_stops_and_nothing_is_saved_afterwards(tmp_path):
    model = _model()
    x, y = _data(16)
    y[9] = np.nan  # in the third batch of four rows
    guard = StopOnNaN()
    best = BestCheckpoint(tmp_path / "best.keras", "loss", nan_guard=guard)
    backup = Backup(tmp_path / "backup", nan_guard=guard)
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, callbacks=[guard, best, backup], verbose=0)
    assert guard.diverged == {"epoch": 0, "batch": 2, "loss": pytest.approx(float("nan"), nan_ok=True)}
    assert len(history.history["loss"]) == 1
    assert Backup.latest(tmp_path / "backup") is None
    assert not (tmp_path / "best.keras").exists()


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model = _model()
    model.compile(keras.optimizers.SGD(0.0), "mse")  # nothing changes, so nothing improves
    early = EarlyStopping("loss", patience=2)
    history = model.fit(*_data(), epochs=10, batch_size=8, callbacks=[early], verbose=0)
    assert len(history.history["loss"]) == 3
    assert early.stopped_epoch == 2
    with pytest.raises(KeyError, match="val_top1"):
        model.fit(*_data(), epochs=1, callbacks=[EarlyStopping("val_top1")], verbose=0)


def test_atomic_save_removes_stale_temporaries_of_killed_saves_and_follows_the_umask(tmp_path):
    # A save killed by SIGKILL before its rename leaves `.NAME.<random>.keras`: the next save
    # removes those untouched for an hour, and nothing else.
    stale, fresh = tmp_path / ".best.k3j4h5g6.keras", tmp_path / ".best.a1b2c3d4.keras"
    other, unrelated = tmp_path / "best.backup.keras", tmp_path / ".model.k3j4h5g6.h5"
    for path in (stale, fresh, other, unrelated):
        path.write_bytes(b"half a file")
    hours_ago = os.stat(fresh).st_mtime - 2 * 3600
    for path in (stale, other, unrelated):
        os.utime(path, (hours_ago, hours_ago))
    mask = os.umask(0o022)
    try:
        save_model_atomically(_model(), tmp_path / "model.keras")
    finally:
        os.umask(mask)
    assert sorted(os.listdir(tmp_path)) == [".best.a1b2c3d4.keras", ".model.k3j4h5g6.h5", "best.backup.keras",
                                            "model.keras"]
    assert os.stat(tmp_path / "model.keras").st_mode & 0o777 == 0o644  # not mkstemp's 0600
