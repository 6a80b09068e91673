"""Callbacks that make a run fault tolerant: backups to resume from, NaN stop, best checkpoint,
early stopping whose state survives a restart.

Every file is written under a temporary name and renamed into place (`os.replace`, atomic on
POSIX), so a run killed at any moment leaves either the previous good file or the new one,
never a torn one. A backup is one directory `backup/epoch-NNNN/` (weights with the optimizer's
state, plus `state.json` with the epoch, the history and every stateful callback's state),
written as `epoch-NNNN.tmp-*` and renamed when complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import keras

from layers.files import write_atomically

BACKUP_PATTERN = re.compile(r"^epoch-(\d{4,})$")


def save_model_atomically(model: keras.Model, path: str | os.PathLike) -> Path:
    """`model.save(path)` through `write_atomically` (a temporary file and a rename)."""
    return write_atomically(path, model.save)


def _improved(value, best, mode) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def _monitor_mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first batch whose loss is NaN or Inf, and remembers where.

    Later callbacks check `diverged` so that no backup or checkpoint is written from the
    diverged weights; the trainer then raises with the message in `message`.
    """

    def __init__(self):
        super().__init__()
        self.diverged = None
        self._epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.diverged is None:
            self.diverged = {"epoch": self._epoch, "batch": int(batch), "loss": float(loss)}
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


class EarlyStopping(keras.callbacks.Callback):
    """Stops when `monitor` has not improved for `patience` epochs; its counters are part of
    the backup, so a resumed run stops where an uninterrupted one would."""

    stateful = True

    def __init__(self, monitor="val_loss", patience=5):
        super().__init__()
        self.monitor, self.patience, self.mode = monitor, patience, _monitor_mode(monitor)
        self.best, self.wait, self.stopped_epoch = None, 0, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"early stopping monitors {self.monitor!r}, which is not among the logged metrics {sorted(logs or {})}"
            )
        if _improved(float(value), self.best, self.mode):
            self.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def get_state(self):
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def set_state(self, state):
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state["stopped_epoch"]


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model to `path` (a `.keras` file) whenever `monitor` improves."""

    stateful = True

    def __init__(self, path, monitor="val_loss", *, nan_guard: StopOnNaN | None = None, export_model=None):
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, _monitor_mode(monitor)
        self.best, self.best_epoch = None, None
        self.nan_guard, self.export_model = nan_guard, export_model

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.diverged:
            return
        value = (logs or {}).get(self.monitor)
        if value is not None and _improved(float(value), self.best, self.mode):
            self.best, self.best_epoch = float(value), epoch
            save_model_atomically(self.export_model or self.model, self.path)

    def get_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class Backup(keras.callbacks.Callback):
    """Backs the run up at the end of every `every` epochs (and of the last), for `--resume`.

    Args:
      directory: where the `epoch-NNNN` backups live; only the newest `keep` are kept.
      stateful: callbacks with `get_state` / `set_state` whose state goes into the backup.
      nan_guard: a `StopOnNaN`; nothing is backed up once the loss has diverged.
    """

    def __init__(self, directory, *, every=1, keep=2, stateful=(), nan_guard=None, enabled=True):
        super().__init__()
        self.directory = Path(directory)
        self.every, self.keep = every, keep
        self.stateful, self.nan_guard, self.enabled = list(stateful), nan_guard, enabled
        self.history: dict[str, list] = {}

    # ----------------------------------------------------------------- reading
    @staticmethod
    def latest(directory) -> Path | None:
        """The newest complete backup in `directory`, or None."""
        directory = Path(directory)
        if not directory.is_dir():
            return None
        found = sorted(
            (int(match.group(1)), path)
            for path in directory.iterdir()
            if (match := BACKUP_PATTERN.match(path.name)) and (path / "state.json").is_file()
        )
        return found[-1][1] if found else None

    def restore(self, path: Path) -> int:
        """Loads weights, optimizer state and callback states; returns the epoch to start at."""
        state = json.loads((path / "state.json").read_text())
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path / "state.weights.h5")
        for callback, callback_state in zip(self.stateful, state["callbacks"]):
            callback.set_state(callback_state)
        self.history = state["history"]
        return int(state["epoch"])

    # ----------------------------------------------------------------- writing
    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if not self.enabled or (self.nan_guard is not None and self.nan_guard.diverged):
            return
        last = epoch + 1 == self.params.get("epochs") or self.model.stop_training
        if (epoch + 1) % self.every and not last:
            return
        self.save(epoch + 1)

    def save(self, next_epoch: int) -> Path:
        def fill(folder: Path):
            self.model.save_weights(folder / "state.weights.h5")
            state = {
                "epoch": next_epoch,
                "history": self.history,
                "callbacks": [callback.get_state() for callback in self.stateful],
            }
            (folder / "state.json").write_text(json.dumps(state))

        # The one atomic writer: a hidden temporary folder renamed into place, the old backup of
        # the same epoch kept until then, leftovers of killed writes removed by age.
        final = write_atomically(self.directory / f"epoch-{next_epoch:04d}", fill, directory=True, suffix=".partial")
        self._prune()
        return final

    def _prune(self):
        backups = sorted(p for p in self.directory.iterdir() if BACKUP_PATTERN.match(p.name))
        for old in backups[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in self.directory.glob("epoch-*.tmp-*"):  # temporaries of the zoo before layers.files
            shutil.rmtree(leftover, ignore_errors=True)


class StalledValidation(keras.callbacks.Callback):
    """Warns once when the validation metric stays put for `patience` epochs while its training
    counterpart moves: the model behaves differently in inference mode than in training.

    The usual cause is batch-norm moving statistics that lag the weights (a decay of 0.997+
    over a few hundred steps, with precise batch norm off); others are a validation set from
    another distribution, or a model collapsed to one class. The message names them.

    Args:
      monitor: the validation metric (`val_mIoU`); its training counterpart is the name without
        `val_`.
      patience: epochs without movement before warning.
      tolerance: the largest change that counts as "not moving".
      hint: a sentence appended to the message (the trainer says whether precise BN is on).
      stream: where to print (default: `sys.stderr`).
    """

    def __init__(self, monitor, *, patience=3, tolerance=1e-3, hint="", stream=None):
        super().__init__()
        self.monitor, self.training_metric = monitor, monitor.removeprefix("val_")
        self.patience, self.tolerance, self.hint, self.stream = patience, tolerance, hint, stream
        self.values, self.training_values, self.warning = [], [], None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.warning is not None or self.monitor not in logs or self.training_metric not in logs:
            return
        self.values.append(float(logs[self.monitor]))
        self.training_values.append(float(logs[self.training_metric]))
        window = self.values[-(self.patience + 1):]
        if len(window) <= self.patience:
            return
        spread = max(window) - min(window)
        first, last = self.training_values[-(self.patience + 1)], self.training_values[-1]
        if spread > self.tolerance or not abs(last - first) > 10 * max(spread, self.tolerance):
            return
        self.warning = (
            f"warning: {self.monitor} has stayed at {window[-1]:.4f} for {self.patience + 1} epochs while "
            f"{self.training_metric} went from {first:.4f} to {last:.4f}: the model behaves differently in "
            "inference mode than in training. Likely causes: batch-norm moving statistics that lag the weights "
            "(a decay of 0.997 or more over a short run), a validation set unlike the training set, or a model "
            f"that predicts one class. {self.hint}".rstrip()
        )
        print(self.warning, file=self.stream or sys.stderr, flush=True)
