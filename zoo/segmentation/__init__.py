"""Segmentation: DeepLab-v3+ (`deeplab_v3_plus`) and mask drawing.

- `deeplab_v3_plus`: the config, builder and registered `deeplabv3plus_*` variants.
- `visualize`: the PASCAL VOC palette and masks blended over images.

DeepLab's TF-slim checkpoints import through `zoo.slim` (`zoo.slim.load_slim_checkpoint`).
"""

from zoo.segmentation import deeplab_v3_plus
from zoo.segmentation.deeplab_v3_plus import DeepLabV3PlusConfig, build_deeplab_v3_plus

__all__ = ["DeepLabV3PlusConfig", "build_deeplab_v3_plus", "deeplab_v3_plus"]
