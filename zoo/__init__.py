"""A Keras 3 / TensorFlow model zoo for vision.

    >>> import zoo
    >>> zoo.list_models("resnet*")
    ['resnet101', 'resnet101_beta', 'resnet152', 'resnet18', 'resnet34', 'resnet50', 'resnet50_beta']
    >>> model = zoo.build("resnet50", include_top=False, pooling="avg")
"""

from zoo.registry import build, describe, list_models, register
from zoo import backbones  # noqa: E402,F401  (registers the backbone families)
from zoo.detection import fast_rcnn  # noqa: E402,F401  (registers the detectors)
from zoo import inspect  # noqa: E402,F401  (receptive fields and feature maps)
from zoo.detection import faster_rcnn  # noqa: E402,F401

from zoo.export import export  # noqa: E402  (the function; `zoo.export` the module stays importable by name)
from zoo.export_formats import export_onnx, export_tflite  # noqa: E402  (ONNX and TFLite files)
from zoo.segmentation import deeplab_v3_plus  # noqa: E402,F401  (registers the segmenters)

# A `model.keras` written by `zoo train` names `training`'s objects too (the warm-up schedule,
# the segmentation loss and mean IoU): registering them here means any process that imported
# `zoo` loads it, compiled, with plain `keras.saving.load_model`.
import training  # noqa: E402,F401

__version__ = "0.1.0"
__all__ = ["build", "describe", "export", "export_onnx", "export_tflite", "list_models", "register", "backbones", "inspect"]
