"""Xception (keras.applications) and DeepLab's aligned Xception-65.

Papers: Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017,
https://arxiv.org/abs/1610.02357. The aligned Xception-65: Chen et al., "Encoder-Decoder with
Atrous Separable Convolution for Semantic Image Segmentation" (DeepLab-v3+), ECCV 2018,
https://arxiv.org/abs/1802.02611, after MSRA's deeper Xception for COCO 2017.

Shapes: B images, H x W pixels. `features(config, images)` returns `C1` (stride 2) ... `C5`
(stride 32, or `output_stride` when that is 8 or 16).

Two architectures share this file (`XceptionConfig.architecture`):

- "keras": keras.applications' Xception, with its layer names (`block1_conv1`, ...,
  `block14_sepconv2_act`), so the model computes keras.applications' function (a test copies
  weights and compares). keras.applications leaves the residual 1x1 projections unnamed
  (`conv2d`, `batch_normalization_3`, names that depend on the session); here they are
  `block{k}_residual_conv` and `block{k}_residual_bn` (k = 2, 3, 4, 13). The stem's two 3x3
  convolutions are unpadded, so the maps are a little smaller than `ceil(H / stride)`.
  `output_stride` 8/16 turns the 3x3/2 max pools (and residual projections) from the switch
  on into stride 1 and dilates the separable convolutions after them: max pooling cannot be
  dilated, so this is close to, not equal to, the strided function sampled densely.
- "aligned": DeepLab's Xception-65 (research/deeplab/core/xception.py): the entry flow
  (conv 3x3/2 32, conv 3x3 64, three units of 128, 256, 728 filters with stride 2), the middle
  flow (`middle_flow_units` = 16 units of 728, identity shortcut) and the exit flow (a unit of
  728, 1024, 1024 with stride 2, then 1536, 1536, 2048 without shortcut). Every max pool is a
  separable convolution with stride 2 (zero-padded on both sides, slim's `fixed_padding`), and
  each separable convolution is a depthwise convolution with batch norm, then a 1x1 with batch
  norm; units apply ReLU before each separable convolution, the last unit after each of its
  depthwise and 1x1 convolutions instead. Layer names mirror the slim scopes:
  `entry_flow_block2_unit1_sepconv2_depthwise(_bn)` is
  `entry_flow/block2/unit_1/xception_module/separable_conv2_depthwise(/BatchNorm)`.
  `output_stride` follows slim's `stack_blocks_dense` (a strided unit past `output_stride` runs
  with stride 1 at the current rate; the rate is multiplied for the units after it), and
  `multi_grid` multiplies the rates of the last unit's three separable convolutions.

The feature contract follows DeepLab's decoder end points: `C2` =
`entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise` (its batch-norm output,
256 channels at stride 4; keras: `block3_sepconv2_bn`, the analogous tensor before block 3's
pool), `C3` = `entry_flow/block3/unit_1/.../separable_conv2_pointwise` (keras:
`block4_sepconv2_bn`), `C4` = `exit_flow/block1/unit_1/.../separable_conv2_pointwise` (keras:
`block13_sepconv2_bn`), `C1` the stem's output and `C5` the last map.
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
    resolve_input_shape,
)
from zoo.registry import register

PAPER = "Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR 2017 (arXiv:1610.02357)"
ALIGNED_PAPER = (
    "Chen et al., Encoder-Decoder with Atrous Separable Convolution for Semantic Image "
    "Segmentation (DeepLab-v3+, aligned Xception-65), ECCV 2018 (arXiv:1802.02611)"
)
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class XceptionConfig:
    """Configuration of an Xception.

    Attributes:
      architecture: "keras" (keras.applications' Xception) or "aligned" (DeepLab's Xception-65).
      middle_flow_units: units of the middle flow (keras: 8, Xception-65: 16).
      output_stride: 8, 16 or 32, the stride of the last feature map.
      multi_grid: rate multipliers of the last unit's three separable convolutions ("aligned"
        only; DeepLab uses (1, 2, 4) for some models).
      batch_norm_epsilon, batch_norm_momentum: of every BatchNormalization layer
        (keras.applications: 1e-3, 0.99; DeepLab: 1e-3, 0.9997).
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications.
      preprocessing: the in-graph normalisation of raw pixels ("tf" scales to [-1, 1]).
    """

    architecture: Literal["keras", "aligned"] = "keras"
    middle_flow_units: int = 8
    output_stride: int = 32
    multi_grid: tuple[int, ...] = (1, 1, 1)
    batch_norm_epsilon: float = 1e-3
    batch_norm_momentum: float = 0.99
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "tf"

    def __post_init__(self):
        check_choice(self.architecture, ("keras", "aligned"), argument="architecture")
        check_choice(self.output_stride, (8, 16, 32), argument="output_stride")
        if self.middle_flow_units < 1:
            raise ValueError(f"middle_flow_units must be a positive integer, got {self.middle_flow_units}")
        if len(self.multi_grid) != 3 or any(rate < 1 for rate in self.multi_grid):
            raise ValueError(f"multi_grid must be three positive rates, got {self.multi_grid}")
        if self.architecture == "keras" and self.multi_grid != (1, 1, 1):
            raise ValueError("multi_grid applies to architecture='aligned' only; keep (1, 1, 1)")
        check_batch_norm(self)
        check_classifier(self)


def _batch_norm(x, config, *, name):
    return BatchNormalization(
        axis=-1, epsilon=config.batch_norm_epsilon, momentum=config.batch_norm_momentum, name=name
    )(x)


def _relu(x, name):
    return keras.layers.Activation("relu", name=name)(x)


class _StridePlan:
    """slim's `stack_blocks_dense` bookkeeping: the running stride and the atrous rate."""

    def __init__(self, output_stride: int, start: int = 2):
        self.output_stride, self.current, self.rate = output_stride, start, 1

    def next(self, nominal: int) -> tuple[int, int, int]:
        """`(stride, rate, input stride)` of the next unit whose nominal stride is `nominal`."""
        input_stride = self.current
        if self.current == self.output_stride:
            rate = self.rate
            self.rate *= nominal
            return 1, rate, input_stride
        self.current *= nominal
        return nominal, 1, input_stride


# ----------------------------------------------------------------------------------------
# keras.applications' Xception


def keras_entry_block(x, filters, config, *, index, stride, rate, pre_activation=True):
    """Blocks 2, 3, 4 and 13: [ReLU] sep, BN, ReLU, sep, BN, 3x3 max pool; 1x1 projection.

    Returns `(output, tap)`, the tap being the second separable convolution's batch norm.
    """
    name = f"block{index}"
    first, second = filters if isinstance(filters, tuple) else (filters, filters)
    residual = keras.layers.Conv2D(
        second, 1, strides=stride, padding="same", use_bias=False, name=f"{name}_residual_conv"
    )(x)
    residual = _batch_norm(residual, config, name=f"{name}_residual_bn")
    if pre_activation:
        x = _relu(x, f"{name}_sepconv1_act")
    x = keras.layers.SeparableConv2D(
        first, 3, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_sepconv1"
    )(x)
    x = _batch_norm(x, config, name=f"{name}_sepconv1_bn")
    x = _relu(x, f"{name}_sepconv2_act")
    x = keras.layers.SeparableConv2D(
        second, 3, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_sepconv2"
    )(x)
    tap = _batch_norm(x, config, name=f"{name}_sepconv2_bn")
    x = keras.layers.MaxPooling2D(3, strides=stride, padding="same", name=f"{name}_pool")(tap)
    return keras.layers.Add(name=f"{name}_add")([x, residual]), tap


def keras_middle_block(x, config, *, index, rate):
    """Blocks 5 ... : three (ReLU, separable 728, BN) and the identity shortcut."""
    name = f"block{index}"
    residual = x
    for conv in (1, 2, 3):
        x = _relu(x, f"{name}_sepconv{conv}_act")
        x = keras.layers.SeparableConv2D(
            728, 3, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_sepconv{conv}"
        )(x)
        x = _batch_norm(x, config, name=f"{name}_sepconv{conv}_bn")
    return keras.layers.Add(name=f"{name}_add")([x, residual])


def keras_xception_features(config: XceptionConfig, x) -> dict:
    x = keras.layers.Conv2D(32, 3, strides=2, use_bias=False, name="block1_conv1")(x)
    x = _relu(_batch_norm(x, config, name="block1_conv1_bn"), "block1_conv1_act")
    x = keras.layers.Conv2D(64, 3, use_bias=False, name="block1_conv2")(x)
    x = _relu(_batch_norm(x, config, name="block1_conv2_bn"), "block1_conv2_act")
    features = {"C1": feature_map(x, 2)}
    plan = _StridePlan(config.output_stride)
    # The pool of block k strides; the separable convolutions before it run at the old rate.
    for index, level in ((2, None), (3, "C2"), (4, "C3")):
        stride, rate, input_stride = plan.next(2)
        x, tap = keras_entry_block(
            x, 128 if index == 2 else 256 if index == 3 else 728, config, index=index,
            stride=stride, rate=rate, pre_activation=index > 2,
        )
        if level:
            features[level] = feature_map(tap, input_stride)
    for index in range(5, 5 + config.middle_flow_units):
        x = keras_middle_block(x, config, index=index, rate=plan.rate)
    exit_index = 5 + config.middle_flow_units
    stride, rate, input_stride = plan.next(2)
    x, tap = keras_entry_block(x, (728, 1024), config, index=exit_index, stride=stride, rate=rate)
    features["C4"] = feature_map(tap, input_stride)
    for conv, filters in ((1, 1536), (2, 2048)):
        name = f"block{exit_index + 1}_sepconv{conv}"
        x = keras.layers.SeparableConv2D(
            filters, 3, padding="same", dilation_rate=plan.rate, use_bias=False, name=name
        )(x)
        x = _relu(_batch_norm(x, config, name=f"{name}_bn"), f"{name}_act")
    features["C5"] = feature_map(x, plan.current)
    return features


# ----------------------------------------------------------------------------------------
# DeepLab's aligned Xception


def aligned_separable_conv(x, filters, config, *, stride, rate, activation, name):
    """Depthwise 3x3 (stride, rate) + BN [+ ReLU], 1x1 + BN [+ ReLU], slim's split
    `separable_conv2d_same`: a strided one is zero-padded by `rate` on each side, then VALID."""
    if stride > 1:
        x = keras.layers.ZeroPadding2D(padding=rate, name=f"{name}_pad")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, dilation_rate=rate, padding="valid" if stride > 1 else "same",
        use_bias=False, name=f"{name}_depthwise",
    )(x)
    x = _batch_norm(x, config, name=f"{name}_depthwise_bn")
    if activation:
        x = _relu(x, f"{name}_depthwise_relu")
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)
    x = _batch_norm(x, config, name=f"{name}_pointwise_bn")
    if activation:
        x = _relu(x, f"{name}_pointwise_relu")
    return x


def xception_module(x, depths, config, *, shortcut, stride, rate, unit_rates=(1, 1, 1),
                    activation_in_separable=False, name):
    """DeepLab's `xception_module`: three separable convolutions, the last with the stride.

    Args:
      shortcut: "conv" (strided 1x1 + BN), "sum" (identity) or "none".

    Returns:
      `(output, tap)`, the tap being the second separable convolution's 1x1 batch norm.
    """
    residual = x
    taps = []
    for index, (filters, unit_rate) in enumerate(zip(depths, unit_rates), start=1):
        if not activation_in_separable:
            residual = _relu(residual, f"{name}_sepconv{index}_preact")
        residual = aligned_separable_conv(
            residual, filters, config, stride=stride if index == 3 else 1, rate=rate * unit_rate,
            activation=activation_in_separable, name=f"{name}_sepconv{index}",
        )
        taps.append(residual)
    if shortcut == "conv":
        projection = keras.layers.Conv2D(
            depths[-1], 1, strides=stride, use_bias=False, name=f"{name}_shortcut"
        )(x)
        projection = _batch_norm(projection, config, name=f"{name}_shortcut_bn")
        residual = keras.layers.Add(name=f"{name}_add")([residual, projection])
    elif shortcut == "sum":
        residual = keras.layers.Add(name=f"{name}_add")([residual, x])
    return residual, taps[1]


def aligned_xception_features(config: XceptionConfig, x) -> dict:
    x = keras.layers.ZeroPadding2D(padding=1, name="entry_flow_conv1_1_pad")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, use_bias=False, name="entry_flow_conv1_1")(x)
    x = _relu(_batch_norm(x, config, name="entry_flow_conv1_1_bn"), "entry_flow_conv1_1_relu")
    x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False, name="entry_flow_conv1_2")(x)
    x = _relu(_batch_norm(x, config, name="entry_flow_conv1_2_bn"), "entry_flow_conv1_2_relu")
    features = {"C1": feature_map(x, 2)}
    plan = _StridePlan(config.output_stride)
    # (flow, block, depths, shortcut, nominal stride, units, feature level of the unit's tap)
    blocks = (
        ("entry_flow", 1, (128, 128, 128), "conv", 2, 1, None),
        ("entry_flow", 2, (256, 256, 256), "conv", 2, 1, "C2"),
        ("entry_flow", 3, (728, 728, 728), "conv", 2, 1, "C3"),
        ("middle_flow", 1, (728, 728, 728), "sum", 1, config.middle_flow_units, None),
        ("exit_flow", 1, (728, 1024, 1024), "conv", 2, 1, "C4"),
        ("exit_flow", 2, (1536, 1536, 2048), "none", 1, 1, None),
    )
    for flow, block, depths, shortcut, nominal, units, level in blocks:
        last = flow == "exit_flow" and block == 2
        for unit in range(1, units + 1):
            stride, rate, input_stride = plan.next(nominal)
            x, tap = xception_module(
                x, depths, config, shortcut=shortcut, stride=stride, rate=rate,
                unit_rates=config.multi_grid if last else (1, 1, 1), activation_in_separable=last,
                name=f"{flow}_block{block}_unit{unit}",
            )
            if level:
                features[level] = feature_map(tap, input_stride)
    features["C5"] = feature_map(x, plan.current)
    return features


def xception_features(config: XceptionConfig, images) -> dict:
    """The feature contract of an Xception: `C1` ... `C5` from raw-pixel `images`."""
    x = normalise(images, config.preprocessing)
    if config.architecture == "aligned":
        return aligned_xception_features(config, x)
    return keras_xception_features(config, x)


def build_xception(config: XceptionConfig, *, name: str = "xception") -> keras.Model:
    """An Xception classifier (or feature extractor without the top) from its config."""
    shape = resolve_input_shape(config, min_size=MIN_INPUT_SIZE, needs_fixed_size=False)
    if config.include_top and config.input_shape is None and config.architecture == "keras":
        shape = (299, 299, 3)
    return build_classifier(config, xception_features, name=name, min_size=MIN_INPUT_SIZE, shape=shape)


@register("xception", task="classification", builder=build_xception, paper=PAPER, features=xception_features,
          image_size=(299, 299))
def xception() -> XceptionConfig:
    """Xception, keras.applications-compatible, [-1, 1] inputs (299 x 299 with the top)."""
    return XceptionConfig()


@register(
    "xception65", task="classification", builder=build_xception, paper=ALIGNED_PAPER,
    features=xception_features, image_size=(299, 299),
)
def xception65() -> XceptionConfig:
    """DeepLab's aligned Xception-65: strided separable convolutions, BN after each depthwise."""
    return XceptionConfig(
        architecture="aligned", middle_flow_units=16, batch_norm_momentum=0.9997,
    )
