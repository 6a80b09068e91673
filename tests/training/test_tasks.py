"""`training.tasks`: the task record, its registry, and the classification task's loss and
metrics, checked against NumPy on a hand-made batch."""

import dataclasses

import keras
import numpy as np
import pytest

import training  # registers the detection and segmentation tasks beside classification
from training import tasks


def _classifier(activation):
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation=activation)], name=f"classifier_{activation}"
    )


# Six classes, so that top-5 is reported; each row's true class at a known rank.
LOGITS = np.array([
    [4.0, 3.0, 2.0, 1.0, 0.0, -1.0],   # label 0: rank 1
    [4.0, 3.0, 2.0, 1.0, 0.0, -1.0],   # label 4: rank 5
    [4.0, 3.0, 2.0, 1.0, 0.0, -1.0],   # label 5: rank 6
    [0.0, 0.5, 3.0, 1.0, 2.0, -2.0],   # label 1: rank 4
], "float32")
LABELS = np.array([0, 4, 5, 1])


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _numpy_cross_entropy(probs, labels):
    return -np.mean(np.log(probs[np.arange(len(labels)), labels]))


def _numpy_top_k(scores, labels, k):
    ranks = (scores > scores[np.arange(len(labels)), labels][:, None]).sum(axis=1)  # 0-based rank
    return np.mean(ranks < k)


def test_training_registers_its_three_tasks_each_monitoring_a_validation_metric():
    assert sorted(training.TASKS) == ["classification", "detection", "segmentation"]
    for name, task in training.TASKS.items():
        assert task.name == name and training.get_task(name) is task
        assert task.monitor.startswith("val_") and task.monitor.removeprefix("val_")
    classification = tasks.get_task("classification")
    assert (classification.monitor, classification.summary) == ("val_top1", "top1")
    assert classification.wrap is None and classification.evaluate is None


def test_an_unknown_task_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"task must be one of \['classification', 'detection', 'segmentation'\], "
                                         r"got 'clasification'"):
        tasks.get_task("clasification")


def test_a_registered_task_is_found_and_a_second_registration_raises(monkeypatch):
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    counting = tasks.Task(name="counting", loss=None, metrics=lambda num_classes: [], monitor="val_loss",
                          summary="loss")
    assert tasks.register_task(counting) is counting
    assert tasks.get_task("counting") is counting
    with pytest.raises(ValueError, match="task 'counting' is already registered"):
        tasks.register_task(dataclasses.replace(counting, summary="other"))
    assert tasks.get_task("counting") is counting
    with pytest.raises(ValueError, match="task 'classification' is already registered"):
        tasks.register_task(dataclasses.replace(counting, name="classification"))


def test_a_task_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        tasks.get_task("classification").monitor = "val_loss"


def test_the_classification_loss_reads_logits_or_probabilities_from_the_last_layer():
    task = tasks.get_task("classification")
    probs = _softmax(LOGITS.astype(np.float64))
    expected = _numpy_cross_entropy(probs, LABELS)

    on_logits = task.loss(_classifier(None))
    np.testing.assert_allclose(float(on_logits(LABELS, LOGITS)), expected, rtol=1e-5)

    on_probabilities = task.loss(_classifier("softmax"))
    np.testing.assert_allclose(float(on_probabilities(LABELS, probs.astype("float32"))), expected, rtol=1e-5)
    # Which one the task picks matters: probabilities read as logits give another loss.
    assert not np.isclose(float(on_logits(LABELS, probs.astype("float32"))), expected, rtol=1e-2)


@pytest.mark.parametrize("num_classes, names", [(2, ["top1"]), (5, ["top1"]), (6, ["top1", "top5"]),
                                                (1000, ["top1", "top5"])])
def test_top5_is_reported_only_with_more_than_five_classes(num_classes, names):
    assert [metric.name for metric in tasks.get_task("classification").metrics(num_classes)] == names


def test_the_classification_metrics_equal_numpy_top_k():
    metrics = tasks.get_task("classification").metrics(6)
    for metric in metrics:
        metric.update_state(LABELS[:2], LOGITS[:2])  # accumulated over two batches
        metric.update_state(LABELS[2:], LOGITS[2:])
    values = {metric.name: float(metric.result()) for metric in metrics}
    assert values == pytest.approx({"top1": _numpy_top_k(LOGITS, LABELS, 1), "top5": _numpy_top_k(LOGITS, LABELS, 5)})
    assert values == pytest.approx({"top1": 0.25, "top5": 0.75})  # by hand: ranks 1, 5, 6, 4
