"""Masks as pictures: the PASCAL VOC palette and class masks blended over images.

The VOC palette is the colour map of VOC's SegmentationClass PNGs: class `c`'s colour spreads
the bits of `c` over the high bits of R, G and B (bit 0 -> R's bit 7, bit 1 -> G's bit 7,
bit 2 -> B's bit 7, bit 3 -> R's bit 6, ...); 255 (ignore, the object borders) is drawn
cream (224, 224, 192), as in VOC's images.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """`[num_colors, 3]` uint8 RGB: VOC's colour of each class id (0 black, 1 (128, 0, 0), ...)."""
    palette = np.zeros((num_colors, 3), np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def colorize(mask) -> np.ndarray:
    """`[H, W]` class ids (0..255) -> `[H, W, 3]` uint8 RGB in the VOC palette."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"colorize: mask must be [H, W] class ids, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"colorize: class ids must be in 0..255, got {mask.min()}..{mask.max()}")
    palette = voc_palette()
    palette[IGNORE_LABEL] = (224, 224, 192)
    return palette[mask.astype(np.uint8)]


def blend(image, mask, *, alpha: float = 0.5) -> np.ndarray:
    """The coloured mask over the image: `(1 - alpha) * image + alpha * colour` where the mask
    is not background (0), the image itself elsewhere.

    Args:
      image: `[H, W, 3]` RGB, uint8 or float in 0..255.
      mask: `[H, W]` class ids.
      alpha: the colour's weight, in [0, 1].

    Returns:
      `[H, W, 3]` uint8 RGB.
    """
    image = np.asarray(image, np.float32)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"blend: image must be [H, W, 3] and mask [H, W] of the same size, got {image.shape} and {mask.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"blend: alpha must be in [0, 1], got {alpha}")
    colours = colorize(mask).astype(np.float32)
    mixed = np.where((mask != 0)[..., None], (1 - alpha) * image + alpha * colours, image)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


__all__ = ["blend", "colorize", "voc_palette"]
