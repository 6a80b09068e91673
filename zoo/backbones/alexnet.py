"""AlexNet, in the single-GPU layout that torchvision (and most reimplementations) use.

Paper: Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012. The single-tower filter counts (64, 192, 384, 256, 256) follow
Krizhevsky, "One weird trick for parallelizing convolutional neural networks",
arXiv:1404.5997, which is what torchvision's `alexnet` builds.

Shapes: B images, H x W pixels (224 x 224 by default). `conv1` (11x11, stride 4, padded by 2)
gives 55 x 55 at 224; the 3x3/2 max poolings give 27, 13 and 6. Before the classifier an
adaptive average pooling to 6 x 6 (identity at 224) lets any input from 63 pixels up reach
the 9,216-wide `fc6`, as torchvision does.

What is the paper's and what is not:
- the paper's two GPU towers (48 + 48, 128 + 128, ... filters with grouped connections) and
  its local response normalisation after conv1 and conv2 are not built: the single-tower
  layout has 61,100,840 parameters at 1000 classes, torchvision's documented count;
- dropout 0.5 before `fc6` and `fc7` (the paper's "first two fully-connected layers");
- the paper's initialisation: weights from N(0, 0.01), biases 1 in conv2, conv4, conv5 and
  the hidden dense layers (so their ReLUs start active), 0 elsewhere;
- raw pixels are normalised in the graph with torchvision's ImageNet mean and std
  (`preprocessing="torch"`); the paper subtracts the mean image.

Layer names: `conv1` ... `conv5`, `pool1`, `pool2`, `pool5`, `fc6`, `fc7`, `predictions`.
The feature contract: `C2` = conv1 (stride 4), `C3` = conv2 (8), `C4` = conv5 (16) and
`C5` = pool5 (32); there is no stride-2 map (conv1 already strides by 4).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from zoo.backbones._common import check_classifier, feature_map, image_input, normalise
from zoo.registry import register

PAPER = (
    "Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks, "
    "NeurIPS 2012; single-tower layout of arXiv:1404.5997"
)
# The smallest input whose pool5 is still 1 x 1: conv1 (63 + 4 - 11) / 4 + 1 = 15 -> 7 -> 3 -> 1.
MIN_INPUT_SIZE = 63
POOLED_SIZE = 6


@dataclasses.dataclass(frozen=True)
class AlexNetConfig:
    """Configuration of AlexNet.

    Attributes:
      filters: filters of conv1 ... conv5.
      fc_units: units of the hidden dense layers fc6, fc7.
      dropout: rate of the dropout before fc6 and before fc7.
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications; `input_shape` defaults to (224, 224, 3) with the top.
      preprocessing: the in-graph normalisation of raw pixels, or None.
    """

    filters: tuple[int, ...] = (64, 192, 384, 256, 256)
    fc_units: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "torch"

    def __post_init__(self):
        if len(self.filters) != 5 or any(count < 1 for count in self.filters):
            raise ValueError(f"filters must be five positive filter counts, got {self.filters}")
        if any(units < 1 for units in self.fc_units):
            raise ValueError(f"fc_units must be positive, got {self.fc_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_classifier(self)


def _weights():
    return keras.initializers.RandomNormal(stddev=0.01)


def _conv(x, filters, kernel_size, *, strides=1, bias=0.0, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        activation="relu",
        kernel_initializer=_weights(),
        bias_initializer=keras.initializers.Constant(bias),
        name=name,
    )(x)


def _max_pool(x, *, name):
    return keras.layers.MaxPooling2D(3, strides=2, name=name)(x)


def alexnet_features(config: AlexNetConfig, images) -> dict:
    """The feature contract of AlexNet: `C2` ... `C5` from raw-pixel `images`."""
    x = normalise(images, config.preprocessing)
    # torchvision pads conv1 by 2 on every side; "same" would pad asymmetrically.
    x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(x)
    x = _conv(x, config.filters[0], 11, strides=4, name="conv1")
    features = {"C2": feature_map(x, 4)}
    x = _max_pool(x, name="pool1")
    x = _conv(x, config.filters[1], 5, bias=1.0, name="conv2")
    features["C3"] = feature_map(x, 8)
    x = _max_pool(x, name="pool2")
    x = _conv(x, config.filters[2], 3, name="conv3")
    x = _conv(x, config.filters[3], 3, bias=1.0, name="conv4")
    x = _conv(x, config.filters[4], 3, bias=1.0, name="conv5")
    features["C4"] = feature_map(x, 16)
    x = _max_pool(x, name="pool5")
    features["C5"] = feature_map(x, 32)
    return features


def _input_shape(config: AlexNetConfig) -> tuple:
    shape = config.input_shape
    if shape is None:
        shape = (224, 224, 3) if config.include_top else (None, None, 3)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {shape}")
    for value, argument in zip(shape[:2], ("height", "width")):
        if value is not None and value < MIN_INPUT_SIZE:
            raise ValueError(f"input_shape {shape}: {argument} {value} is below AlexNet's {MIN_INPUT_SIZE} pixels")
    if shape[2] is None or shape[2] < 1:
        raise ValueError(f"input_shape {shape}: channels must be a positive integer")
    if config.preprocessing is not None and shape[2] != 3:
        raise ValueError(
            f"input_shape {shape}: preprocessing={config.preprocessing!r} needs 3 channels; "
            f"pass preprocessing=None for other inputs"
        )
    return tuple(shape)


def build_alexnet(config: AlexNetConfig, *, name: str = "alexnet") -> keras.Model:
    """AlexNet (single tower) from its config."""
    images = image_input(_input_shape(config))
    x = alexnet_features(config, images)["C5"].tensor
    if config.include_top:
        x = keras.layers.AdaptiveAveragePooling2D(POOLED_SIZE, name="avg_pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        for index, units in enumerate(config.fc_units, start=6):
            x = keras.layers.Dropout(config.dropout, name=f"fc{index}_dropout")(x)
            x = keras.layers.Dense(
                units,
                activation="relu",
                kernel_initializer=_weights(),
                bias_initializer=keras.initializers.Constant(1.0),
                name=f"fc{index}",
            )(x)
        x = keras.layers.Dense(
            config.classes,
            activation=config.classifier_activation,
            kernel_initializer=_weights(),
            name="predictions",
        )(x)
    elif config.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif config.pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(images, x, name=name)


@register("alexnet", task="classification", builder=build_alexnet, paper=PAPER, features=alexnet_features)
def alexnet() -> AlexNetConfig:
    """AlexNet, single-tower (torchvision) layout, dropout 0.5, the paper's initialisation."""
    return AlexNetConfig()
