"""MobileNet-v2: inverted residual blocks with linear bottlenecks.

Paper: Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018, https://arxiv.org/abs/1801.04381.

Shapes: B images, H x W pixels. `features(config, images)` returns `C1` (stride 2) ... `C5`
(stride 32, or `output_stride` when that is 8 or 16).

Layer names are keras.applications' (`Conv1`, `bn_Conv1`, `expanded_conv_depthwise`,
`block_1_expand`, ..., `Conv_1`, `predictions`), so the published `.h5` files load by name and
the model computes keras.applications' function (a test copies weights by name and compares).
The strided depthwise convolutions use TensorFlow's SAME padding directly, which is what
keras.applications' `block_k_pad` + VALID computes for static sizes, and also what TF-slim's
mobilenet (the DeepLab checkpoints) computes; it stays right for unknown input sizes.

`output_stride` 16 or 8 follows slim's `mobilenet_base` (DeepLab's MobileNet-v2): once the
running stride reaches `output_stride`, a strided block runs with stride 1 and the depthwise
convolutions of the blocks after it are dilated by the product of the skipped strides (the
skipped block itself keeps the old rate; 1x1 convolutions are never dilated).

The feature contract follows DeepLab's decoder end points `layer_k/depthwise_output` (the
depthwise convolution's batch norm and ReLU6, the expanded features inside a block):
`C2` = `layer_4/depthwise_output` = `block_2_depthwise_relu` (144 channels at alpha 1, stride
4), `C3` = `layer_7` = `block_5_depthwise_relu`, `C4` = `layer_14` = `block_12_depthwise_relu`;
`C1` is the first block's output `expanded_conv_project_BN` and `C5` the last map (`out_relu`,
or `block_16_project_BN` = slim's `layer_18` with `last_conv=False`, where DeepLab stops).
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

PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018 (arXiv:1801.04381)"
MIN_INPUT_SIZE = 32
# (expansion, output filters at alpha 1, stride) of blocks 0 ... 16, as in the paper's table 2.
BLOCKS = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)
# The block whose depthwise output is the decoder tap at each stride (DeepLab's layer_k is
# block k - 2): the last block before the next stride.
TAP_BLOCKS = {"C2": 2, "C3": 5, "C4": 12}


@dataclasses.dataclass(frozen=True)
class MobileNetV2Config:
    """Configuration of a MobileNet-v2.

    Attributes:
      alpha: width multiplier; channel counts are rounded to multiples of 8 as keras.applications.
      output_stride: 8, 16 or 32, the stride of the last feature map.
      last_conv: the final 1x1 convolution to 1280 channels (`Conv_1`); DeepLab stops before it.
      batch_norm_epsilon, batch_norm_momentum: of every BatchNormalization layer
        (keras.applications: 1e-3, 0.999; DeepLab: 1e-3, 0.9997).
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications.
      preprocessing: the in-graph normalisation of raw pixels ("tf" scales to [-1, 1]).
    """

    alpha: float = 1.0
    output_stride: int = 32
    last_conv: bool = True
    batch_norm_epsilon: float = 1e-3
    batch_norm_momentum: float = 0.999
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "tf"

    def __post_init__(self):
        if not self.alpha > 0:
            raise ValueError(f"alpha must be a positive width multiplier, got {self.alpha}")
        check_choice(self.output_stride, (8, 16, 32), argument="output_stride")
        check_batch_norm(self)
        check_classifier(self)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor`, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _batch_norm(x, config, *, name):
    return BatchNormalization(
        axis=-1, epsilon=config.batch_norm_epsilon, momentum=config.batch_norm_momentum, name=name
    )(x)


def inverted_residual_block(x, filters, config, *, expansion, stride, dilation, block_id):
    """Expand (1x1), depthwise 3x3 (stride, dilation), project (1x1, linear), add if shapes match.

    Returns:
      `(output, depthwise_output)`: the block's output and the depthwise ReLU6 output (slim's
      `depthwise_output` end point).
    """
    in_channels = x.shape[-1]
    out_channels = make_divisible(int(filters * config.alpha))
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    if block_id:
        x = keras.layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{prefix}expand")(x)
        x = _batch_norm(x, config, name=f"{prefix}expand_BN")
        x = keras.layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False,
        name=f"{prefix}depthwise",
    )(x)
    x = _batch_norm(x, config, name=f"{prefix}depthwise_BN")
    depthwise = keras.layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = keras.layers.Conv2D(out_channels, 1, use_bias=False, name=f"{prefix}project")(depthwise)
    x = _batch_norm(x, config, name=f"{prefix}project_BN")
    if in_channels == out_channels and stride == 1:
        x = keras.layers.Add(name=f"{prefix}add")([inputs, x])
    return x, depthwise


def block_plan(config: MobileNetV2Config) -> list[tuple[int, int, int]]:
    """Per block: `(stride, depthwise dilation, stride of the block's output)`.

    The stem's stride 2 comes first. As slim's `mobilenet_base`, a block that would take the
    running stride past `output_stride` runs with stride 1 at the current rate, and the rate
    is multiplied by its stride for the blocks after it.
    """
    plan, current, rate = [], 2, 1
    for _, _, nominal in BLOCKS:
        if current == config.output_stride:
            stride, dilation = 1, rate
            rate *= nominal
        else:
            stride, dilation = nominal, 1
            current *= nominal
        plan.append((stride, dilation, current))
    return plan


def mobilenet_v2_features(config: MobileNetV2Config, images) -> dict:
    """The feature contract of a MobileNet-v2: `C1` ... `C5` from raw-pixel `images`."""
    x = normalise(images, config.preprocessing)
    x = keras.layers.Conv2D(
        make_divisible(32 * config.alpha), 3, strides=2, padding="same", use_bias=False, name="Conv1"
    )(x)
    x = _batch_norm(x, config, name="bn_Conv1")
    x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
    features = {}
    for block_id, ((expansion, filters, _), (stride, dilation, out_stride)) in enumerate(
        zip(BLOCKS, block_plan(config))
    ):
        x, depthwise = inverted_residual_block(
            x, filters, config, expansion=expansion, stride=stride, dilation=dilation, block_id=block_id
        )
        if block_id == 0:
            features["C1"] = feature_map(x, out_stride)
        for level, tap_block in TAP_BLOCKS.items():
            if block_id == tap_block:
                features[level] = feature_map(depthwise, out_stride)
    if config.last_conv:
        last_filters = make_divisible(1280 * config.alpha) if config.alpha > 1.0 else 1280
        x = keras.layers.Conv2D(last_filters, 1, use_bias=False, name="Conv_1")(x)
        x = _batch_norm(x, config, name="Conv_1_bn")
        x = keras.layers.ReLU(6.0, name="out_relu")(x)
    features["C5"] = feature_map(x, config.output_stride)
    return features


def build_mobilenet_v2(config: MobileNetV2Config, *, name: str = "mobilenetv2") -> keras.Model:
    """A MobileNet-v2 classifier (or feature extractor without the top) from its config."""
    return build_classifier(config, mobilenet_v2_features, name=name, min_size=MIN_INPUT_SIZE)


@register(
    "mobilenetv2", task="classification", builder=build_mobilenet_v2, paper=PAPER,
    features=mobilenet_v2_features,
)
def mobilenetv2() -> MobileNetV2Config:
    """MobileNet-v2 (alpha 1.0), keras.applications-compatible, [-1, 1] inputs."""
    return MobileNetV2Config()
