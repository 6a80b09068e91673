"""Keras layers and pure ops shared by the zoo's heads. Imports neither `zoo` nor `training`.

- `ASPP`: DeepLab-v3's atrous spatial pyramid pooling (separable branches as an option).
- `BatchNormalization`: Keras's batch norm on TensorFlow's fused kernel (every backbone's).
- `PixelNormalization`: raw pixels -> the normalisation a set of weights expects.
- `RoIPooling`: Fast R-CNN RoI max pooling (exact) and the crop_and_resize fallback.
- `ResizeBilinear`, `resample.resize_bilinear`, `resample.crop_and_resize`: the one bilinear
  resampling primitive, XLA-capable, with DeepLab's align_corners.
- `boxes`: IoU, box encoding, clipping, conversions and per-class NMS.
- `image_resize`: an image of any size -> a model's fixed input ("stretch" or aspect-keeping
  "letterbox"), with its mask, and the scale that maps boxes back to the original pixels.
- `files.write_atomically`: a file or folder written into a hidden temporary sibling and renamed
  into place, for `training`'s checkpoints and records and `zoo`'s exports alike.
- `detection_contract`: what a detector is (Fast or Faster R-CNN, its inputs, outputs and layer
  names), answered from the built model, for `zoo` and `training` alike.
"""

from layers import boxes, detection_contract, files, image_resize, resample
from layers.aspp import ASPP, atrous_rates_for
from layers.batch_norm import BatchNormalization
from layers.preprocessing import PRESETS, PixelNormalization
from layers.resample import ResizeBilinear, crop_and_resize, resize_bilinear
from layers.roi_pooling import RoIPooling

__all__ = [
    "ASPP",
    "BatchNormalization",
    "PRESETS",
    "PixelNormalization",
    "ResizeBilinear",
    "RoIPooling",
    "atrous_rates_for",
    "boxes",
    "crop_and_resize",
    "detection_contract",
    "files",
    "image_resize",
    "resample",
    "resize_bilinear",
]
