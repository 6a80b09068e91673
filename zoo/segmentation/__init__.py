"""Segmentation: DeepLab-v3+ (`deeplab_v3_plus`), its TF-slim checkpoint import and mask drawing.

- `deeplab_v3_plus`: the config, builder and registered `deeplabv3plus_*` variants.
- `slim_import.load_slim_checkpoint`: DeepLab's TF1 checkpoints into the Keras model, with a report.
- `visualize`: the PASCAL VOC palette and masks blended over images.
"""

from zoo.segmentation import deeplab_v3_plus
from zoo.segmentation.deeplab_v3_plus import DeepLabV3PlusConfig, build_deeplab_v3_plus
from zoo.segmentation.slim_import import SlimLoadReport, load_slim_checkpoint

__all__ = ["DeepLabV3PlusConfig", "SlimLoadReport", "build_deeplab_v3_plus", "deeplab_v3_plus", "load_slim_checkpoint"]
