"""Keras layers shared by the zoo's heads. Imports neither `zoo` nor `training`."""

from layers.preprocessing import PRESETS, PixelNormalization
from layers.roi_pooling import RoIPooling

__all__ = ["PRESETS", "PixelNormalization", "RoIPooling"]
