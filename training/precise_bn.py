"""Precise batch norm: moving statistics re-estimated as exact averages over training batches.

Batch-norm decays of 0.997 to 0.9997 (DeepLab, TF-slim's MobileNet-v2) were set for runs of
30k+ steps. After a few hundred steps the moving statistics are still near their initial
values (mean 0, variance 1), so a model whose training metrics look fine is wrong in inference
mode: a DeepLab-v3+ trained for minutes predicts background everywhere. Lowering the momentum in
each caller hides the problem in one place and leaves it everywhere else. The mechanism is
mended here instead, as detectron2's `PreciseBN` hook and `torch.optim.swa_utils.update_bn` do
(Wu and Johnson, "Rethinking 'Batch' in BatchNorm", https://arxiv.org/abs/2105.07576, section 3).

For every BatchNormalization layer that trains its statistics (trainable, in training mode),
over N training batches `i`:

    moving_mean     = mean_i(batch_mean_i)
    moving_variance = mean_i(batch_variance_i)

where `batch_mean_i` and `batch_variance_i` are what the layer computes on batch `i` in
training mode (Keras's moments: the biased variance over the batch and spatial axes), with the
model's weights untouched. Each layer sees the inputs it sees in training (the layers before
it also normalise with batch statistics), which is what inference with the new statistics
approximates. Layers that are frozen (`trainable=False`, `batch_norm="frozen"`) run in
inference mode and keep their statistics. Under a `tf.distribute` strategy the batches are run
as global batches in cross-replica context, so every replica's copy gets the same statistics.

    >>> estimate_batch_norm_statistics(model, dataset, num_batches=16)   # a notebook, after fit
    >>> trainer.fit(..., callbacks=[PreciseBatchNorm(lambda epoch: dataset, num_batches=16)])

`training.train` (and so `zoo train`) does this by default (`TrainConfig.precise_bn`): before
each epoch's validation, so that the validation metrics, the best checkpoint and the saved
model all use statistics that match the weights.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from training.regularization import all_layers


def trainable_batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of `model` that update their statistics in training mode.

    Descends into nested models and composite layers (ASPP's convolutions); a layer shared by
    two sub-models (a trainer's head and its detector) is listed once.
    """
    found, seen = [], set()
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and id(layer) not in seen:
            if getattr(layer, "renorm", False):
                continue  # batch renormalisation keeps its own statistics
            seen.add(id(layer))
            found.append(layer)
    return found


def _images(data):
    """The inputs of a `(inputs, targets)` batch, or the batch itself."""
    return data[0] if isinstance(data, (tuple, list)) else data


def _default_forward(model):
    """`data -> None`: the forward pass that training runs, without the loss.

    A trainer wrapper (`training.detection.FastRCNNTrainer`, ...) that feeds its model other
    inputs in training (sampled RoIs) says how with `batch_norm_forward(data)`.
    """
    forward = getattr(model, "batch_norm_forward", None)
    if forward is not None:
        return forward
    return lambda data: model(_images(data), training=True)


def estimate_batch_norm_statistics(
    model: keras.Model,
    batches: Iterable,
    *,
    num_batches: int,
    forward: Callable | None = None,
) -> int:
    """Sets each trainable BatchNormalization layer's moving statistics to exact averages.

    Args:
      model: the model (or a trainer wrapper with `batch_norm_forward`) whose layers to update.
      batches: training batches: a `tf.data.Dataset` or any iterable of `(inputs, targets)` or
        of inputs; the first `num_batches` are used.
      num_batches: how many batches to average over (>= 1).
      forward: `data -> anything`, the training-mode forward pass (default: the model's
        `batch_norm_forward`, else `model(inputs, training=True)`). A `tf.function` is used as
        it is (so that a caller estimating every epoch traces once), anything else is wrapped.

    Returns:
      The number of layers updated (0 when the model has no trainable batch norm; the data is
      then not read).

    Raises:
      ValueError: `num_batches` < 1, or `batches` yields nothing (the statistics are unchanged).

    Example:
      >>> estimate_batch_norm_statistics(model, make_dataset(source, task="segmentation",
      ...     batch_size=16, image_size=(129, 129), training=True), num_batches=16)
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    layers = trainable_batch_norms(model)
    if not layers:
        return 0
    forward = forward or _default_forward(model)
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(v.shape, np.float64) for v in (layer.moving_mean, layer.moving_variance)] for layer in layers]
    before = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    count = 0
    try:
        # Momentum 0 makes each training-mode call leave exactly its batch's statistics in the
        # moving variables; Keras reads the momentum when it traces, so it is 0 for this trace.
        for layer in layers:
            layer.momentum = 0.0
        step = forward if isinstance(forward, tf.types.experimental.PolymorphicFunction) else tf.function(
            forward, reduce_retracing=True)
        for data in itertools.islice(batches, num_batches):
            step(data)
            for layer, (mean_sum, variance_sum) in zip(layers, sums):
                mean_sum += layer.moving_mean.numpy()
                variance_sum += layer.moving_variance.numpy()
            count += 1
    except BaseException:
        _assign(layers, before)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if count == 0:
        _assign(layers, before)
        raise ValueError("estimate_batch_norm_statistics: batches yielded no batch; the statistics are unchanged")
    _assign(layers, [(mean / count, variance / count) for mean, variance in sums])
    return len(layers)


def _assign(layers, values):
    for layer, (mean, variance) in zip(layers, values):
        layer.moving_mean.assign(np.asarray(mean, np.float32))
        layer.moving_variance.assign(np.asarray(variance, np.float32))


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimates the batch-norm statistics at the end of each epoch, before its validation.

    Keras runs validation right after an epoch's last training batch, before `on_epoch_end`,
    so the estimate runs in `on_train_batch_end` of that batch. Earlier epochs use
    `max(1, min(num_batches, steps // 5))` batches (a fifth of an epoch's batches at most, so
    that the estimate costs a few per cent of the epoch); the last epoch, and a run that stops
    early, use `num_batches`, which is what the saved model carries.

    Args:
      batches: `epoch -> iterable of training batches` (a function of the epoch, so that a
        resumed run sees the same batches).
      num_batches: the batches of the final estimate.
      nan_guard: a `training.callbacks.StopOnNaN`; nothing is estimated once the loss diverged.
      verbose: print one line per estimate.
    """

    def __init__(self, batches: Callable[[int], Iterable], *, num_batches: int, nan_guard=None, verbose=0):
        super().__init__()
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"PreciseBatchNorm: num_batches must be a positive integer, got {num_batches!r}")
        self.batches, self.num_batches, self.nan_guard, self.verbose = batches, num_batches, nan_guard, verbose
        self._epoch, self._last_full, self._forward = 0, True, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _diverged(self):
        return self.nan_guard is not None and self.nan_guard.diverged

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        if not steps or batch + 1 != steps or self._diverged() or self.model.stop_training:
            return
        last = self._epoch + 1 == self.params.get("epochs")
        count = self.num_batches if last else max(1, min(self.num_batches, math.ceil(steps / 5)))
        self._estimate(count)

    def on_train_end(self, logs=None):
        # Early stopping (or a resumed run with nothing left) ends before the last epoch.
        if not self._last_full and not self._diverged():
            self._estimate(self.num_batches)

    def _estimate(self, count):
        if self._forward is None:
            # Traced once, while the momenta are 0 (see estimate_batch_norm_statistics), and
            # reused by every later estimate.
            self._forward = tf.function(_default_forward(self.model), reduce_retracing=True)
        updated = estimate_batch_norm_statistics(
            self.model, self.batches(self._epoch), num_batches=count, forward=self._forward
        )
        self._last_full = count >= self.num_batches
        if self.verbose and updated:
            print(f"\nprecise batch norm: {updated} layers re-estimated from {count} training batches", flush=True)
