"""VGG-16 and VGG-19.

Paper: Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, https://arxiv.org/abs/1409.1556.

Shapes: B images, H x W pixels. Block k (1-based) convolves at stride 2**(k-1) and pools to
2**k, so the feature contract is `C1` = block2's last convolution (stride 2), `C2` = block3's
(4), `C3` = block4's (8), `C4` = `block5_conv3` (stride 16, the map Fast R-CNN pools from) and
`C5` = `block5_pool` (32).

Layer names are keras.applications' (`block1_conv1`, ..., `fc1`, `fc2`, `predictions`), so the
published ImageNet `.h5` files load by name; `fc1`/`fc2` are also what Fast R-CNN's fc6/fc7
are initialised from.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from zoo.backbones._common import (
    build_classifier,
    check_classifier,
    feature_map,
    normalise,
)
from zoo.registry import register

PAPER = "Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015 (arXiv:1409.1556)"
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class VGGConfig:
    """Configuration of a VGG network.

    Attributes:
      depths: 3x3 convolutions in each of the five blocks.
      filters: filters of each block's convolutions.
      fc_units: units of the dense layers between the flattened features and the classifier.
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications; with the top, `input_shape` must be fixed (Flatten).
      preprocessing: the in-graph normalisation of raw pixels, or None.
    """

    depths: tuple[int, ...] = (2, 2, 3, 3, 3)
    filters: tuple[int, ...] = (64, 128, 256, 512, 512)
    fc_units: tuple[int, ...] = (4096, 4096)
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "caffe"

    def __post_init__(self):
        if len(self.depths) != 5 or any(depth < 1 for depth in self.depths):
            raise ValueError(f"depths must be five positive convolution counts, got {self.depths}")
        if len(self.filters) != 5 or any(count < 1 for count in self.filters):
            raise ValueError(f"filters must be five positive filter counts, got {self.filters}")
        if any(units < 1 for units in self.fc_units):
            raise ValueError(f"fc_units must be positive, got {self.fc_units}")
        check_classifier(self)


def conv_block(x, filters, depth, *, name):
    """`depth` 3x3 ReLU convolutions `{name}_conv1` ...; returns the last one's output."""
    for index in range(1, depth + 1):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"{name}_conv{index}"
        )(x)
    return x


def vgg_features(config: VGGConfig, images) -> dict:
    """The feature contract of a VGG: `C1` ... `C5` from raw-pixel `images`."""
    x = normalise(images, config.preprocessing)
    features = {}
    for index, (filters, depth) in enumerate(zip(config.filters, config.depths), start=1):
        x = conv_block(x, filters, depth, name=f"block{index}")
        if index > 1:
            features[f"C{index - 1}"] = feature_map(x, 2 ** (index - 1))
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{index}_pool")(x)
    features["C5"] = feature_map(x, 32)
    return features


def build_vgg(config: VGGConfig, *, name: str = "vgg") -> keras.Model:
    """A VGG classifier (or feature extractor without the top) from its config."""
    return build_classifier(config, vgg_features, name=name, min_size=MIN_INPUT_SIZE,
                            needs_fixed_size=config.include_top, flatten_fc=config.fc_units)


def _register(name):
    return register(name, task="classification", builder=build_vgg, paper=PAPER, features=vgg_features)


@_register("vgg16")
def vgg16() -> VGGConfig:
    """VGG-16 (configuration D), keras.applications-compatible."""
    return VGGConfig(depths=(2, 2, 3, 3, 3))


@_register("vgg19")
def vgg19() -> VGGConfig:
    """VGG-19 (configuration E), keras.applications-compatible."""
    return VGGConfig(depths=(2, 2, 4, 4, 4))
