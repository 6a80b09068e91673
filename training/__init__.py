"""Training for every zoo model: data, augmentation, losses, metrics, schedules and the fit loop.

    >>> import zoo
    >>> from training import TrainConfig, data, train
    >>> source = data.synthetic(512, image_size=(64, 64))
    >>> result = train(
    ...     lambda classes: zoo.build("resnet18", classes=classes, input_shape=(64, 64, 3)),
    ...     source, out_dir="runs/resnet18", config=TrainConfig(epochs=3, image_size=(64, 64)))

`training` imports `layers`, never `zoo`: the model arrives as a builder function, so the same
trainer serves every head. The `zoo train` / `zoo evaluate` commands wrap it.
"""

from training import data
from training.data import split_validation
from training.adversarial import AdversarialModel
from training.callbacks import Backup, BestCheckpoint, EarlyStopping, StopOnNaN, save_model_atomically
from training.detection import FastRCNNTrainer, FasterRCNNTrainer, evaluate_detector, fast_rcnn_loss, match_rois
from training.detection import sample_rois
from training.distribute import STRATEGIES, make_strategy
from training.fit import TrainConfig, TrainingDiverged, TrainResult, WeightsInitializer, evaluate
from training.fit import train
from training.optimizers import WarmupSchedule, make_optimizer
from training.regularization import apply_weight_decay, default_weight_decay, freeze_stages, set_batch_norm
from training.segmentation import MeanIoU, SegmentationCrossEntropy, evaluate_segmenter, predict_multiscale
from training.tasks import TASKS, Task, get_task, register_task

__all__ = [
    "AdversarialModel",
    "Backup",
    "BestCheckpoint",
    "EarlyStopping",
    "FastRCNNTrainer",
    "FasterRCNNTrainer",
    "MeanIoU",
    "STRATEGIES",
    "SegmentationCrossEntropy",
    "StopOnNaN",
    "TASKS",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "WarmupSchedule",
    "WeightsInitializer",
    "apply_weight_decay",
    "data",
    "default_weight_decay",
    "evaluate",
    "evaluate_detector",
    "evaluate_segmenter",
    "fast_rcnn_loss",
    "freeze_stages",
    "get_task",
    "make_optimizer",
    "make_strategy",
    "match_rois",
    "predict_multiscale",
    "register_task",
    "sample_rois",
    "save_model_atomically",
    "set_batch_norm",
    "split_validation",
    "train",
]
