"""ResNet v1: ResNet-18/34 (basic blocks), ResNet-50/101/152 (bottleneck blocks) and DeepLab's
"beta" variants with a 3x3 stem.

Paper: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385. The beta stem: Chen et al., "Encoder-Decoder with Atrous
Separable Convolution for Semantic Image Segmentation" (DeepLab-v3+), ECCV 2018.

Shapes: B images, H x W pixels. `features(config, images)` returns `C1` (stride 2) ... `C5`
(stride 32, or `output_stride` when that is 8 or 16).

Layer names are keras.applications' (`conv1_conv`, `conv2_block1_1_conv`, ..., `predictions`)
and the bottleneck puts its stride in the first 1x1 convolution as keras.applications does,
so the published ImageNet `.h5` files load by name and compute the same function. The basic
block follows torchvision's ResNet-18/34 (no conv biases, 1x1 projection only where the shape
changes), so those models count torchvision's published parameters.

`output_stride` 16 or 8 switches the last one or two stages from stride 2 to dilation 2 (4):
the same weights then compute the same function sampled densely, as DeepLab and the R50-C4
detector need. Every 3x3 convolution of a dilated stage gets the stage's new rate, because in
the keras.applications placement the stride sits before the 3x3 convolution.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from zoo.backbones._common import (
    check_choice,
    check_classifier,
    classifier_head,
    feature_map,
    image_input,
    normalise,
    resolve_input_shape,
)
from zoo.registry import register

PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv:1512.03385)"
BETA_PAPER = (
    "He et al., CVPR 2016 (arXiv:1512.03385), with the 3x3 'beta' stem of Chen et al., "
    "DeepLab-v3+, ECCV 2018 (arXiv:1802.02611)"
)
STAGE_FILTERS = (64, 128, 256, 512)
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Configuration of a ResNet v1.

    Attributes:
      block: "basic" (two 3x3 convolutions) or "bottleneck" (1x1, 3x3, 1x1 with 4x expansion).
      depths: blocks in each of the four stages conv2 ... conv5.
      stem: "standard" (7x7 stride 2 convolution) or "beta" (three 3x3 convolutions of 64,
        64 and 128 filters, DeepLab's resnet_v1_beta).
      use_bias: biases in the convolutions (keras.applications has them, torchvision not).
      output_stride: 8, 16 or 32, the stride of the last feature map.
      batch_norm_epsilon, batch_norm_momentum: of every BatchNormalization layer.
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications. `input_shape` defaults to (224, 224, 3) with the top and
        (None, None, 3) without it.
      preprocessing: the in-graph normalisation of raw pixels ("caffe", "torch", "tf",
        "deeplab_resnet") or None for inputs that are already normalised.
    """

    block: Literal["basic", "bottleneck"] = "bottleneck"
    depths: tuple[int, ...] = (3, 4, 6, 3)
    stem: Literal["standard", "beta"] = "standard"
    use_bias: bool = True
    output_stride: int = 32
    batch_norm_epsilon: float = 1.001e-5
    batch_norm_momentum: float = 0.99
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "caffe"

    def __post_init__(self):
        check_choice(self.block, ("basic", "bottleneck"), argument="block")
        check_choice(self.stem, ("standard", "beta"), argument="stem")
        check_choice(self.output_stride, (8, 16, 32), argument="output_stride")
        if len(self.depths) != 4 or any(depth < 1 for depth in self.depths):
            raise ValueError(f"depths must be four positive block counts, got {self.depths}")
        if not 0.0 < self.batch_norm_epsilon < 1.0:
            raise ValueError(f"batch_norm_epsilon must be in (0, 1), got {self.batch_norm_epsilon}")
        if not 0.0 <= self.batch_norm_momentum < 1.0:
            raise ValueError(f"batch_norm_momentum must be in [0, 1), got {self.batch_norm_momentum}")
        check_classifier(self)


def _conv(x, filters, kernel_size, config, *, name, strides=1, dilation=1, padding="same"):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation,
        padding=padding,
        use_bias=config.use_bias,
        name=name,
    )(x)


def _batch_norm(x, config, *, name):
    return keras.layers.BatchNormalization(
        axis=-1,
        epsilon=config.batch_norm_epsilon,
        momentum=config.batch_norm_momentum,
        name=name,
    )(x)


def _conv_bn(x, filters, kernel_size, config, *, name, relu=True, **conv_options):
    """Convolution `{name}_conv`, batch norm `{name}_bn` and optionally ReLU `{name}_relu`."""
    x = _conv(x, filters, kernel_size, config, name=f"{name}_conv", **conv_options)
    x = _batch_norm(x, config, name=f"{name}_bn")
    if relu:
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def standard_stem(x, config):
    """7x7/2 convolution and 3x3/2 max pooling, padded as keras.applications (and torchvision)."""
    x = keras.layers.ZeroPadding2D(padding=3, name="conv1_pad")(x)
    x = _conv_bn(x, 64, 7, config, name="conv1", strides=2, padding="valid")
    stem = x
    x = keras.layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    return stem, x


def beta_stem(x, config):
    """DeepLab's resnet_v1_beta root block: 3x3/2 (64), 3x3 (64), 3x3 (128), 3x3/2 max pool.

    Padding follows TF-slim: `conv2d_same` pads the strided convolution by one on each side,
    and the pooling uses TensorFlow's SAME padding.
    """
    x = keras.layers.ZeroPadding2D(padding=1, name="conv1_1_pad")(x)
    x = _conv_bn(x, 64, 3, config, name="conv1_1", strides=2, padding="valid")
    x = _conv_bn(x, 64, 3, config, name="conv1_2")
    x = _conv_bn(x, 128, 3, config, name="conv1_3")
    stem = x
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    return stem, x


def basic_block(x, filters, config, *, stride=1, dilation=1, conv_shortcut=False, name):
    """Two 3x3 convolutions and an identity (or 1x1 projection) shortcut; stride in the first.

    The strided 3x3 is zero-padded by `dilation` on each side as torchvision pads it (TF's
    SAME padding would shift the sampling grid by one pixel for even sizes).
    """
    if conv_shortcut:
        shortcut = _conv_bn(x, filters, 1, config, name=f"{name}_0", relu=False, strides=stride)
    else:
        shortcut = x
    x = keras.layers.ZeroPadding2D(padding=dilation, name=f"{name}_1_pad")(x)
    x = _conv_bn(
        x, filters, 3, config, name=f"{name}_1", strides=stride, dilation=dilation, padding="valid"
    )
    x = _conv_bn(x, filters, 3, config, name=f"{name}_2", relu=False, dilation=dilation)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def bottleneck_block(x, filters, config, *, stride=1, dilation=1, conv_shortcut=True, name):
    """1x1 (stride), 3x3 (dilation), 1x1 (4 x filters) and a shortcut, as keras.applications."""
    if conv_shortcut:
        shortcut = _conv_bn(x, 4 * filters, 1, config, name=f"{name}_0", relu=False, strides=stride)
    else:
        shortcut = x
    x = _conv_bn(x, filters, 1, config, name=f"{name}_1", strides=stride)
    x = _conv_bn(x, filters, 3, config, name=f"{name}_2", dilation=dilation)
    x = _conv_bn(x, 4 * filters, 1, config, name=f"{name}_3", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def stage(x, filters, depth, config, *, stride, dilation, name):
    """`depth` blocks named `{name}_block1` ...; the first may stride and project."""
    block_fn = basic_block if config.block == "basic" else bottleneck_block
    expansion = 1 if config.block == "basic" else 4
    for index in range(1, depth + 1):
        first = index == 1
        in_channels = x.shape[-1]
        x = block_fn(
            x,
            filters,
            config,
            stride=stride if first else 1,
            dilation=dilation,
            conv_shortcut=first and (stride != 1 or in_channels != expansion * filters),
            name=f"{name}_block{index}",
        )
    return x


def resnet_features(config: ResNetConfig, images, *, last_level: int = 5) -> dict:
    """The feature contract of a ResNet: `C1` ... `C{last_level}` from raw-pixel `images`.

    `last_level=4` builds the trunk up to conv4 only, for heads that run conv5 themselves
    (Fast R-CNN's R50-C4 runs it on each pooled RoI).
    """
    x = normalise(images, config.preprocessing)
    stem_fn = beta_stem if config.stem == "beta" else standard_stem
    stem, x = stem_fn(x, config)
    features = {"C1": feature_map(stem, 2)}
    current_stride, dilation = 4, 1
    for index, (filters, depth) in enumerate(zip(STAGE_FILTERS, config.depths)):
        if index + 2 > last_level:
            break
        stride = 1 if index == 0 else 2
        if stride > 1 and current_stride >= config.output_stride:
            dilation, stride = dilation * stride, 1
        current_stride *= stride
        x = stage(x, filters, depth, config, stride=stride, dilation=dilation, name=f"conv{index + 2}")
        features[f"C{index + 2}"] = feature_map(x, current_stride)
    return features


def build_resnet(config: ResNetConfig, *, name: str = "resnet") -> keras.Model:
    """A ResNet v1 classifier (or feature extractor without the top) from its config."""
    shape = resolve_input_shape(config, min_size=MIN_INPUT_SIZE, needs_fixed_size=False)
    images = image_input(shape)
    features = resnet_features(config, images)
    outputs = classifier_head(features["C5"].tensor, config)
    return keras.Model(images, outputs, name=name)


def _register(name, paper=PAPER):
    return register(name, task="classification", builder=build_resnet, paper=paper, features=resnet_features)


@_register("resnet18")
def resnet18() -> ResNetConfig:
    """ResNet-18: basic blocks (2, 2, 2, 2), torchvision's layout and normalisation."""
    return ResNetConfig(
        block="basic", depths=(2, 2, 2, 2), use_bias=False, batch_norm_epsilon=1e-5,
        batch_norm_momentum=0.9, preprocessing="torch",
    )


@_register("resnet34")
def resnet34() -> ResNetConfig:
    """ResNet-34: basic blocks (3, 4, 6, 3), torchvision's layout and normalisation."""
    return ResNetConfig(
        block="basic", depths=(3, 4, 6, 3), use_bias=False, batch_norm_epsilon=1e-5,
        batch_norm_momentum=0.9, preprocessing="torch",
    )


@_register("resnet50")
def resnet50() -> ResNetConfig:
    """ResNet-50 v1: bottleneck blocks (3, 4, 6, 3), keras.applications-compatible."""
    return ResNetConfig(block="bottleneck", depths=(3, 4, 6, 3))


@_register("resnet101")
def resnet101() -> ResNetConfig:
    """ResNet-101 v1: bottleneck blocks (3, 4, 23, 3), keras.applications-compatible."""
    return ResNetConfig(block="bottleneck", depths=(3, 4, 23, 3))


@_register("resnet152")
def resnet152() -> ResNetConfig:
    """ResNet-152 v1: bottleneck blocks (3, 8, 36, 3), keras.applications-compatible."""
    return ResNetConfig(block="bottleneck", depths=(3, 8, 36, 3))


@_register("resnet50_beta", paper=BETA_PAPER)
def resnet50_beta() -> ResNetConfig:
    """ResNet-50 v1 with DeepLab's 3x3 'beta' stem, no conv biases, [-1, 1] inputs."""
    return ResNetConfig(
        block="bottleneck", depths=(3, 4, 6, 3), stem="beta", use_bias=False,
        batch_norm_epsilon=1e-5, batch_norm_momentum=0.95, preprocessing="tf",
    )


@_register("resnet101_beta", paper=BETA_PAPER)
def resnet101_beta() -> ResNetConfig:
    """ResNet-101 v1 with DeepLab's 3x3 'beta' stem, no conv biases, [-1, 1] inputs."""
    return ResNetConfig(
        block="bottleneck", depths=(3, 4, 23, 3), stem="beta", use_bias=False,
        batch_norm_epsilon=1e-5, batch_norm_momentum=0.95, preprocessing="tf",
    )
