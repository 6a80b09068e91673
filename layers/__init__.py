"""Keras layers shared by the zoo's heads. Imports neither `zoo` nor `training`."""

from layers.preprocessing import PRESETS, PixelNormalization

__all__ = ["PRESETS", "PixelNormalization"]
