"""DenseNet-121, -169 and -201.

Paper: Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017, https://arxiv.org/abs/1608.06993 (DenseNet-BC: bottleneck 1x1 convolutions of
4k filters, growth rate k = 32, compression 0.5 at the transitions).

Shapes: B images, H x W pixels. The 7x7/2 stem and 3x3/2 max pooling bring the first dense
block to stride 4; each transition halves the size with a 2x2 average pooling.

Layer names, padding, batch-norm epsilon (1.001e-5) and the pre-activation order (BN, ReLU,
convolution) are keras.applications', so its ImageNet `.h5` files load by name and compute
the same function; a parity test copies keras.applications' weights by name and compares
outputs. Raw pixels are normalised in the graph as keras.applications' `densenet
.preprocess_input` does (torch mode: [0, 1], then ImageNet mean and std).

The feature contract: `C1` = conv1_relu (stride 2), `C2` ... `C4` = the last concatenation
of dense blocks conv2 ... conv4 (4, 8, 16) and `C5` = the final BN-ReLU `relu` (32).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from layers.batch_norm import BatchNormalization
from zoo.backbones._common import (
    build_classifier,
    check_batch_norm,
    check_classifier,
    feature_map,
    normalise,
)
from zoo.registry import register

PAPER = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (arXiv:1608.06993)"
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class DenseNetConfig:
    """Configuration of a DenseNet-BC.

    Attributes:
      blocks: dense layers in each of the four dense blocks.
      growth_rate: channels each dense layer adds (k).
      reduction: compression of the transitions (their 1x1 convolution keeps this fraction).
      batch_norm_epsilon: of every BatchNormalization layer.
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications.
      preprocessing: the in-graph normalisation of raw pixels, or None.
    """

    blocks: tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    reduction: float = 0.5
    batch_norm_epsilon: float = 1.001e-5
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "torch"

    def __post_init__(self):
        if len(self.blocks) != 4 or any(count < 1 for count in self.blocks):
            raise ValueError(f"blocks must be four positive layer counts, got {self.blocks}")
        if self.growth_rate < 1:
            raise ValueError(f"growth_rate must be a positive integer, got {self.growth_rate}")
        if not 0.0 < self.reduction <= 1.0:
            raise ValueError(f"reduction must be in (0, 1], got {self.reduction}")
        check_batch_norm(self)
        check_classifier(self)


def _bn_relu(x, config, *, name):
    x = BatchNormalization(axis=-1, epsilon=config.batch_norm_epsilon, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def dense_layer(x, config, *, name):
    """BN-ReLU-1x1 (4k), BN-ReLU-3x3 (k), concatenated to the input as `{name}_concat`."""
    y = _bn_relu(x, config, name=f"{name}_0")
    y = keras.layers.Conv2D(4 * config.growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = _bn_relu(y, config, name=f"{name}_1")
    y = keras.layers.Conv2D(config.growth_rate, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([x, y])


def dense_block(x, count, config, *, name):
    """`count` dense layers `{name}_block1` ..."""
    for index in range(1, count + 1):
        x = dense_layer(x, config, name=f"{name}_block{index}")
    return x


def transition(x, config, *, name):
    """BN-ReLU, 1x1 convolution to `reduction` of the channels, 2x2/2 average pooling."""
    x = _bn_relu(x, config, name=name)
    filters = int(x.shape[-1] * config.reduction)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    return keras.layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def densenet_features(config: DenseNetConfig, images) -> dict:
    """The feature contract of a DenseNet: `C1` ... `C5` from raw-pixel `images`."""
    x = normalise(images, config.preprocessing)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = _bn_relu(x, config, name="conv1")
    features = {"C1": feature_map(x, 2)}
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for index, count in enumerate(config.blocks, start=2):
        x = dense_block(x, count, config, name=f"conv{index}")
        if index < 5:
            features[f"C{index}"] = feature_map(x, 2**index)
            x = transition(x, config, name=f"pool{index}")
    x = BatchNormalization(axis=-1, epsilon=config.batch_norm_epsilon, name="bn")(x)
    x = keras.layers.Activation("relu", name="relu")(x)
    features["C5"] = feature_map(x, 32)
    return features


def build_densenet(config: DenseNetConfig, *, name: str = "densenet") -> keras.Model:
    """A DenseNet classifier (or feature extractor without the top) from its config."""
    return build_classifier(config, densenet_features, name=name, min_size=MIN_INPUT_SIZE)


def _register(name):
    return register(name, task="classification", builder=build_densenet, paper=PAPER, features=densenet_features)


@_register("densenet121")
def densenet121() -> DenseNetConfig:
    """DenseNet-121 (BC, k = 32): blocks (6, 12, 24, 16), keras.applications-compatible."""
    return DenseNetConfig(blocks=(6, 12, 24, 16))


@_register("densenet169")
def densenet169() -> DenseNetConfig:
    """DenseNet-169 (BC, k = 32): blocks (6, 12, 32, 32), keras.applications-compatible."""
    return DenseNetConfig(blocks=(6, 12, 32, 32))


@_register("densenet201")
def densenet201() -> DenseNetConfig:
    """DenseNet-201 (BC, k = 32): blocks (6, 12, 48, 32), keras.applications-compatible."""
    return DenseNetConfig(blocks=(6, 12, 48, 32))
