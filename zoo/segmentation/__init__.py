"""Segmentation: DeepLab-v3+ (`deeplabv3plus`) and mask drawing.

- `deeplabv3plus`: the config, builder and registered `deeplabv3plus_*` variants.
- `visualize`: the PASCAL VOC palette and masks blended over images.

DeepLab's TF-slim checkpoints import through `zoo.slim` (`zoo.slim.load_slim_checkpoint`).
"""

from zoo.segmentation import deeplabv3plus
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus

__all__ = ["DeepLabV3PlusConfig", "build_deeplab_v3_plus", "deeplabv3plus"]
