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

`stride_placement="slim"` builds TF-slim's resnet_v1 (and DeepLab's resnet_v1_beta) instead,
the placement the DeepLab checkpoints were trained with (see `slim_variable_names` in
`zoo.slim.names`): each stage ("block" in slim) strides in the 3x3 convolution of its
*last* unit, zero-padded by one pixel on each side (slim's `conv2d_same`); the shortcut of that
unit is a 1x1 max-pool subsample (`x[:, ::s, ::s]`) when the depth is unchanged and a strided
1x1 projection otherwise; the stem's 3x3/2 max pool uses TensorFlow's SAME padding; conv5
("block4") does not stride. The layer names and the variables are the same in both placements,
only the strides move. The dilation switch follows slim's `stack_blocks_dense`: the unit that
would exceed `output_stride` runs with stride 1 at the current rate, and the rate is multiplied
by its stride for the units after it. `multi_grid` (DeepLab's (1, 2, 4)) multiplies the rate of
each conv5 unit in either placement.

The feature contract in slim placement follows DeepLab's decoder end points:
`C2` (stride 4) is `block1/unit_{n-1}/bottleneck_v1/conv3`, i.e. the output of
`conv2_block{n-1}_3_bn` (conv3 and its batch norm, before the residual add and the ReLU) of
the unit before the strided one; `C3` and `C4` are the same tap in conv3 and conv4
(`block2/unit_{n-1}`, `block3/unit_{n-1}`); `C5` is the output of the last unit.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from layers.batch_norm import BatchNormalization
from zoo.backbones._common import (
    build_classifier,
    check_batch_norm,
    check_choice,
    check_classifier,
    feature_map,
    normalise,
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
      stride_placement: "keras" (stride in the first unit's 1x1 convolution, as
        keras.applications) or "slim" (stride in the last unit's 3x3 convolution, as TF-slim
        resnet_v1 and DeepLab; bottleneck blocks only, see the module docstring). The DeepLab
        checkpoints also expect `use_bias=False`, `batch_norm_epsilon=1e-5` and
        `preprocessing="deeplab_resnet"` (resnet_v1_*) or "tf" (*_beta).
      multi_grid: () or one rate multiplier per conv5 unit (DeepLab's (1, 2, 4)).
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
    stride_placement: Literal["keras", "slim"] = "keras"
    multi_grid: tuple[int, ...] = ()

    def __post_init__(self):
        check_choice(self.block, ("basic", "bottleneck"), argument="block")
        check_choice(self.stem, ("standard", "beta"), argument="stem")
        check_choice(self.output_stride, (8, 16, 32), argument="output_stride")
        if len(self.depths) != 4 or any(depth < 1 for depth in self.depths):
            raise ValueError(f"depths must be four positive block counts, got {self.depths}")
        check_batch_norm(self)
        check_choice(self.stride_placement, ("keras", "slim"), argument="stride_placement")
        if self.stride_placement == "slim":
            if self.block != "bottleneck":
                raise ValueError(
                    "stride_placement='slim' builds TF-slim's bottleneck_v1 units; it needs "
                    f"block='bottleneck', got block={self.block!r}"
                )
            if min(self.depths[:3]) < 2:
                raise ValueError(
                    "stride_placement='slim' taps the unit before each strided last unit, so "
                    f"the first three depths must be at least 2, got depths={self.depths}"
                )
        if self.multi_grid and (
            len(self.multi_grid) != self.depths[3] or any(rate < 1 for rate in self.multi_grid)
        ):
            raise ValueError(
                f"multi_grid must be () or {self.depths[3]} positive rates, one per conv5 unit "
                f"(depths[3]), got {self.multi_grid}"
            )
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
    return BatchNormalization(
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
    """7x7/2 convolution and 3x3/2 max pooling, padded as keras.applications (and torchvision).

    In slim placement the pooling uses TensorFlow's SAME padding (slim's `pool1`), which for
    even sizes pads only at the end: a different sampling grid from the symmetric padding.
    """
    x = keras.layers.ZeroPadding2D(padding=3, name="conv1_pad")(x)
    x = _conv_bn(x, 64, 7, config, name="conv1", strides=2, padding="valid")
    stem = x
    if config.stride_placement == "slim":
        return stem, keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
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


def slim_bottleneck_block(x, filters, config, *, stride=1, dilation=1, name):
    """TF-slim's `bottleneck_v1`: 1x1, 3x3 (stride, dilation), 1x1 (4 x filters), shortcut.

    The shortcut is a strided 1x1 projection when the depth changes, else a 1x1 max-pool
    subsample (`{name}_0_subsample`) when the unit strides, else the identity. The strided
    3x3 convolution is zero-padded by `dilation` on each side (slim's `conv2d_same`).

    Returns:
      `(output, conv3)`: the unit's output and the conv3 batch-norm output before the add,
      which DeepLab takes as its decoder end point.
    """
    if x.shape[-1] != 4 * filters:
        shortcut = _conv_bn(x, 4 * filters, 1, config, name=f"{name}_0", relu=False, strides=stride)
    elif stride > 1:
        shortcut = keras.layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_subsample")(x)
    else:
        shortcut = x
    residual = _conv_bn(x, filters, 1, config, name=f"{name}_1")
    if stride > 1:
        residual = keras.layers.ZeroPadding2D(padding=dilation, name=f"{name}_2_pad")(residual)
        residual = _conv_bn(
            residual, filters, 3, config, name=f"{name}_2", strides=stride, dilation=dilation,
            padding="valid",
        )
    else:
        residual = _conv_bn(residual, filters, 3, config, name=f"{name}_2", dilation=dilation)
    conv3 = _conv_bn(residual, 4 * filters, 1, config, name=f"{name}_3", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, conv3])
    return keras.layers.Activation("relu", name=f"{name}_out")(x), conv3


def stage(x, filters, depth, config, *, stride, dilation, name):
    """`depth` blocks named `{name}_block1` ...; the first may stride and project."""
    units = [(stride, dilation)] + [(1, dilation)] * (depth - 1)
    return stage_units(x, filters, units, config, name=name)[0]


def stage_units(x, filters, units, config, *, name):
    """The blocks `{name}_block1` ... of one stage, one per `(stride, dilation)` in `units`.

    Returns:
      `(output, taps)`: the stage's output and, per block, the tensor DeepLab would tap there
      (slim placement: the conv3 batch-norm output; keras placement: the block's output).
    """
    expansion = 1 if config.block == "basic" else 4
    taps = []
    for index, (stride, dilation) in enumerate(units, start=1):
        block_name = f"{name}_block{index}"
        if config.stride_placement == "slim":
            x, tap = slim_bottleneck_block(x, filters, config, stride=stride, dilation=dilation, name=block_name)
        else:
            block_fn = basic_block if config.block == "basic" else bottleneck_block
            in_channels = x.shape[-1]
            x = block_fn(
                x,
                filters,
                config,
                stride=stride,
                dilation=dilation,
                conv_shortcut=index == 1 and (stride != 1 or in_channels != expansion * filters),
                name=block_name,
            )
            tap = x
        taps.append(tap)
    return x, taps


def unit_plan(config: ResNetConfig) -> list[list[tuple[int, int, int]]]:
    """Per stage, per unit: `(stride, dilation of its 3x3, stride of its input)`.

    Nominal strides: keras placement strides the first unit of conv3, conv4 and conv5; slim
    placement the last unit of conv2, conv3 and conv4 (slim's block1 ... block3). Once the
    running stride reaches `output_stride`, a strided unit runs with stride 1 and multiplies
    the rate; in slim placement the 3x3 that carried the stride keeps the old rate, in keras
    placement it comes after the (former) stride and takes the new one (slim's
    `stack_blocks_dense` and DeepLab's resnet_v1_beta). `multi_grid` scales conv5's rates.
    """
    plan, current, rate = [], 4, 1
    for index, depth in enumerate(config.depths):
        units = []
        for unit in range(depth):
            if config.stride_placement == "slim":
                nominal = 2 if index < 3 and unit == depth - 1 else 1
            else:
                nominal = 2 if index > 0 and unit == 0 else 1
            input_stride = current
            if current == config.output_stride:
                old_rate, rate = rate, rate * nominal
                stride, dilation = 1, (old_rate if config.stride_placement == "slim" else rate)
            else:
                stride, dilation = nominal, rate
                current *= nominal
            if index == 3 and config.multi_grid:
                dilation *= config.multi_grid[unit]
            units.append((stride, dilation, input_stride))
        plan.append(units)
    return plan


def resnet_features(config: ResNetConfig, images, *, last_level: int = 5) -> dict:
    """The feature contract of a ResNet: `C1` ... `C{last_level}` from raw-pixel `images`.

    `last_level=4` builds the trunk up to conv4 only, for heads that run conv5 themselves
    (Fast R-CNN's R50-C4 runs it on each pooled RoI). In slim placement `C2` ... `C4` are
    DeepLab's decoder taps (see the module docstring).
    """
    x = normalise(images, config.preprocessing)
    stem_fn = beta_stem if config.stem == "beta" else standard_stem
    stem, x = stem_fn(x, config)
    features = {"C1": feature_map(stem, 2)}
    for index, (filters, units) in enumerate(zip(STAGE_FILTERS, unit_plan(config))):
        level = index + 2
        if level > last_level:
            break
        x, taps = stage_units(x, filters, [u[:2] for u in units], config, name=f"conv{level}")
        if config.stride_placement == "slim" and level < 5:
            # the unit before the strided last one, still at the stage's input stride
            features[f"C{level}"] = feature_map(taps[-2], units[-1][2])
        else:
            last_stride, _, last_input = units[-1]
            features[f"C{level}"] = feature_map(x, last_input * last_stride)
    return features


def build_resnet(config: ResNetConfig, *, name: str = "resnet") -> keras.Model:
    """A ResNet v1 classifier (or feature extractor without the top) from its config."""
    return build_classifier(config, resnet_features, name=name, min_size=MIN_INPUT_SIZE)


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
