"""What each task plugs into the trainer: its loss, metrics and the metric to monitor.

The detection and segmentation heads register their own `Task` next to their losses; the
trainer (`training.fit`) knows nothing task-specific beyond this record.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras


@dataclasses.dataclass(frozen=True)
class Task:
    """A training task.

    Attributes:
      name: "classification", "detection" or "segmentation" (the `task` of `make_dataset`).
      loss: `(model) -> keras loss`, or None when the model adds its own losses (`add_loss`).
      metrics: `(num_classes) -> list of keras metrics`.
      monitor: the validation metric that early stopping and the best checkpoint follow.
      summary: the metric `zoo evaluate` reports first.
      wrap: None, or `(model, **options) -> trainee`: a `keras.Model` that `fit` trains in the
        model's place (its own `train_step`, e.g. `training.detection.FastRCNNTrainer`); the
        trainer still saves the plain model, never the trainee. `options` are `train`'s
        `task_options`.
      evaluate: None (Keras's `evaluate` with `loss` and `metrics`), or `(model, source, *,
        batch_size, image_size, resize, verbose, **options) -> {metric: value}` (e.g. detection's
        VOC AP); `resize` is "stretch" or "letterbox" (`layers.image_resize`); `options` are
        `training.fit.evaluate`'s `task_options`.
    """

    name: str
    loss: Callable[[keras.Model], keras.losses.Loss] | None
    metrics: Callable[[int], list]
    monitor: str
    summary: str
    wrap: Callable[..., keras.Model] | None = None
    evaluate: Callable[..., dict] | None = None


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


@keras.saving.register_keras_serializable(package="training")
class TopKAccuracy(keras.metrics.SparseTopKCategoricalAccuracy):
    """Keras's sparse top-k accuracy on float32 scores: TensorFlow's `in_top_k` takes float32
    only, and a classifier under `mixed_bfloat16` returns bfloat16 probabilities."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, keras.ops.cast(y_pred, "float32"), sample_weight)


def _classification_metrics(num_classes: int) -> list:
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1")]
    if num_classes > 5:
        metrics.append(TopKAccuracy(k=5, name="top5"))
    return metrics


def _classification_loss(model: keras.Model) -> keras.losses.Loss:
    # A model built with classifier_activation=None returns logits.
    activation = getattr(model.layers[-1], "activation", None)
    from_logits = activation is not keras.activations.softmax
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


register_task(
    Task(
        name="classification",
        loss=_classification_loss,
        metrics=_classification_metrics,
        monitor="val_top1",
        summary="top1",
    )
)
