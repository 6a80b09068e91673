"""A Keras 3 / TensorFlow model zoo for vision.

    >>> import zoo
    >>> zoo.list_models("resnet*")
    ['resnet101', 'resnet101_beta', 'resnet152', 'resnet18', 'resnet34', 'resnet50', 'resnet50_beta']
    >>> model = zoo.build("resnet50", include_top=False, pooling="avg")

`import zoo` imports the model families (registering them), TensorFlow and `training`, so that
a `model.keras` from `zoo train` loads with plain `keras.saving.load_model` afterwards. The one
exception is the `zoo` command's own process (the console script or `python -m zoo`): there
they are imported by `load_models()` on the first use of the API (`zoo.build`, a registry
lookup, ...), which lets `zoo --help`, `zoo list` and `zoo describe` answer from
`zoo.catalogue` without importing TensorFlow.
"""

import os
import sys

__version__ = "0.1.0"
__all__ = ["build", "describe", "export", "export_onnx", "export_tflite", "list_models", "register", "backbones", "inspect"]

from zoo import registry  # noqa: E402  (no TensorFlow: the families come with `load_models`)

_loaded = False


def load_models() -> None:
    """Import the model families (which registers them), the exporters, `inspect` and `training`;
    idempotent."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # first, so that a family that looks the registry up while importing does not recurse
    try:
        from zoo import backbones  # noqa: F401  (registers the backbone families)
        from zoo.detection import fast_rcnn  # noqa: F401  (registers the detectors)
        from zoo import inspection  # receptive fields and feature maps: `zoo.inspect`
        from zoo.detection import faster_rcnn  # noqa: F401
        from zoo.detection import faster_rcnn_fpn  # noqa: F401
        from zoo.segmentation import deeplabv3plus  # noqa: F401  (registers the segmenters)
        from zoo import slim  # noqa: F401  (the importer of DeepLab's TF-slim checkpoint archives)
        from zoo.saved_model import export  # a SavedModel
        from zoo.export_formats import export_onnx, export_tflite  # ONNX and TFLite files

        # A `model.keras` written by `zoo train` names `training`'s objects too (the warm-up
        # schedule, the segmentation loss and mean IoU): registering them here means any process
        # that used `zoo` loads it, compiled, with plain `keras.saving.load_model`.
        import training  # noqa: F401
    except BaseException:
        _loaded = False
        raise
    globals().update(
        build=registry.build, describe=registry.describe, list_models=registry.list_models,
        register=registry.register, export=export, export_onnx=export_onnx, export_tflite=export_tflite,
        inspect=inspection,
    )


registry.populate_with(load_models)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    if name == "backbones":  # a submodule: `from zoo import backbones` asks here first
        import importlib

        importlib.import_module("zoo.backbones")
    load_models()
    return globals()[name]


def _in_the_zoo_command() -> bool:
    """True in the process of the `zoo` console script or of `python -m zoo`."""
    if os.path.basename(sys.argv[0] if sys.argv else "") in ("zoo", "zoo.exe", "zoo-script.py"):
        return True
    argv = list(getattr(sys, "orig_argv", []))
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "zoo"


if not _in_the_zoo_command():
    load_models()
