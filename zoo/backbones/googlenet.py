"""GoogLeNet (Inception v1).

Paper: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015,
https://arxiv.org/abs/1409.4842 (Table 1 gives the filter counts; Section 5 the auxiliary
classifiers).

Shapes: B images, H x W pixels (224 x 224 by default); K classes.

Each Inception module has the paper's four branches, concatenated in this order:
1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max pool (stride 1) -> 1x1 projection. The
5x5 branch really is 5x5 (torchvision's GoogLeNet uses a 3x3 there, a known deviation kept for
its weights). Table 1's "params" column counts kernel weights without biases in units of 1024
(conv2: 64 + 64 * 9 * 192 = 114,688 = 112K). Its rows conv2, 3a, 3b and the classifier agree
(within 1K) with the table's own filter numbers; conv1 (2.7K for a 7x7x3x64 kernel of 9.2K)
and 4a ... 5b (4c: 463K where its filters give 497.5K) do not, and the filter numbers are
what is built. Without the auxiliary classifiers the model has 6,998,552 parameters at
1000 classes: 6,990,272 kernel weights (6,826K; the params column sums to 6,798K, the paper's
"about 6.8M") and 8,280 biases; with them, 13,378,280.

Departures from the paper, all shared with TF-slim's and torchvision's Inception v1: no local
response normalisation (after pool1 and conv2 in the paper), "same" padding of the strided max
poolings (TF-slim's), global average pooling in place of the 7x7 average pool (equal at 224).
`batch_norm=True` adds batch normalisation after every convolution (as torchvision and the
later BN-Inception do); the paper has none. Convolutions use Keras' Glorot-uniform
initialisation, Caffe's "xavier" with which the paper's reference model was trained.

The auxiliary classifiers (`aux_logits=True`) sit on inception_4a and inception_4d: 5x5/3
average pooling, 1x1 convolution of 128, dense 1024 ReLU, dropout 0.7, dense K. The model then
has three outputs, `[predictions, aux1_predictions, aux2_predictions]`; the paper weights the
auxiliary losses by 0.3 in training and discards them at inference. They flatten a 4 x 4 map at
224, so they need a fixed input size of at least 65 pixels.

Raw pixels are normalised in the graph by Caffe's mean subtraction (`preprocessing="caffe"`),
as the reference BVLC model was trained. Layer names follow that model
(`conv1_7x7_s2`, `inception_3a_1x1`, `inception_3a_3x3_reduce`, ..., `inception_3a_output`).
The feature contract: `C1` conv1 (stride 2), `C2` conv2 (4), `C3` inception_3b (8), `C4`
inception_4e (16), `C5` inception_5b (32).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras

from layers.batch_norm import BatchNormalization
from zoo.backbones._common import (
    check_batch_norm,
    check_classifier,
    feature_map,
    image_input,
    normalise,
    resolve_input_shape,
)
from zoo.registry import register

PAPER = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (arXiv:1409.4842)"
MIN_INPUT_SIZE = 32
MIN_AUX_INPUT_SIZE = 65  # inception_4a at stride 16 must be at least 5 x 5 for the 5x5/3 pool

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_FILTERS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


@dataclasses.dataclass(frozen=True)
class GoogLeNetConfig:
    """Configuration of GoogLeNet.

    Attributes:
      aux_logits: add the two auxiliary classifiers (three outputs; needs the top and a
        fixed input of at least 65 pixels).
      batch_norm: batch normalisation after every convolution (not in the paper).
      batch_norm_epsilon: of those layers (torchvision's 1e-3).
      dropout: before the classifier (the paper's 40%).
      aux_dropout: in the auxiliary classifiers (the paper's 70%).
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications; `input_shape` defaults to (224, 224, 3) with the top.
      preprocessing: the in-graph normalisation of raw pixels, or None.
    """

    aux_logits: bool = False
    batch_norm: bool = False
    batch_norm_epsilon: float = 1e-3
    dropout: float = 0.4
    aux_dropout: float = 0.7
    include_top: bool = True
    classes: int = 1000
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: str | None = "caffe"

    def __post_init__(self):
        for argument in ("dropout", "aux_dropout"):
            if not 0.0 <= getattr(self, argument) < 1.0:
                raise ValueError(f"{argument} must be in [0, 1), got {getattr(self, argument)}")
        check_batch_norm(self)
        if self.aux_logits and not self.include_top:
            raise ValueError("aux_logits=True adds classifiers, so it needs include_top=True")
        check_classifier(self)


def conv(x, filters, kernel_size, config, *, strides=1, name):
    """A ReLU convolution `name` ("same" padding), with batch norm `{name}_bn` if configured."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=not config.batch_norm,
        activation=None if config.batch_norm else "relu",
        name=name,
    )(x)
    if config.batch_norm:
        x = BatchNormalization(epsilon=config.batch_norm_epsilon, name=f"{name}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def inception_module(x, filters, config, *, name):
    """The four branches of Table 1's row `filters`, concatenated as `{name}_output`."""
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = filters
    branch1 = conv(x, n1x1, 1, config, name=f"{name}_1x1")
    branch2 = conv(x, n3x3_reduce, 1, config, name=f"{name}_3x3_reduce")
    branch2 = conv(branch2, n3x3, 3, config, name=f"{name}_3x3")
    branch3 = conv(x, n5x5_reduce, 1, config, name=f"{name}_5x5_reduce")
    branch3 = conv(branch3, n5x5, 5, config, name=f"{name}_5x5")
    branch4 = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch4 = conv(branch4, pool_proj, 1, config, name=f"{name}_pool_proj")
    return keras.layers.Concatenate(axis=-1, name=f"{name}_output")([branch1, branch2, branch3, branch4])


def auxiliary_classifier(x, config, *, name):
    """Section 5's side classifier: 5x5/3 average pool, 1x1 conv 128, fc 1024, dropout, fc K."""
    x = keras.layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = conv(x, 128, 1, config, name=f"{name}_conv")
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = keras.layers.Dropout(config.aux_dropout, name=f"{name}_dropout")(x)
    return keras.layers.Dense(config.classes, activation=config.classifier_activation, name=f"{name}_predictions")(x)


def _max_pool(x, *, name):
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)


def _trunk(config: GoogLeNetConfig, images):
    """Everything up to inception_5b; returns (features, auxiliary taps)."""
    x = normalise(images, config.preprocessing)
    x = conv(x, 64, 7, config, strides=2, name="conv1_7x7_s2")
    features = {"C1": feature_map(x, 2)}
    x = _max_pool(x, name="pool1_3x3_s2")
    x = conv(x, 64, 1, config, name="conv2_3x3_reduce")
    x = conv(x, 192, 3, config, name="conv2_3x3")
    features["C2"] = feature_map(x, 4)
    x = _max_pool(x, name="pool2_3x3_s2")
    taps = {}
    for module in INCEPTION_FILTERS:
        if module in ("4a", "5a"):
            stage = int(module[0])
            features[f"C{stage}"] = feature_map(x, 2 ** stage)
            x = _max_pool(x, name=f"pool{stage}_3x3_s2")
        x = inception_module(x, INCEPTION_FILTERS[module], config, name=f"inception_{module}")
        if module in ("4a", "4d"):
            taps[module] = x
    features["C5"] = feature_map(x, 32)
    return features, taps


def googlenet_features(config: GoogLeNetConfig, images) -> dict:
    """The feature contract of GoogLeNet: `C1` ... `C5` from raw-pixel `images`."""
    return _trunk(config, images)[0]


def build_googlenet(config: GoogLeNetConfig, *, name: str = "googlenet") -> keras.Model:
    """GoogLeNet from its config; with `aux_logits` the model has three outputs."""
    shape = resolve_input_shape(config, min_size=MIN_INPUT_SIZE, needs_fixed_size=config.aux_logits)
    if config.aux_logits and min(shape[:2]) < MIN_AUX_INPUT_SIZE:
        raise ValueError(
            f"input_shape {shape}: aux_logits=True pools inception_4a's stride-16 map with a 5x5 "
            f"window, so height and width must be at least {MIN_AUX_INPUT_SIZE}"
        )
    images = image_input(shape)
    features, taps = _trunk(config, images)
    x = features["C5"].tensor
    if not config.include_top:
        if config.pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif config.pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        return keras.Model(images, x, name=name)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(config.classes, activation=config.classifier_activation, name="predictions")(x)
    if config.aux_logits:
        outputs = [
            outputs,
            auxiliary_classifier(taps["4a"], config, name="aux1"),
            auxiliary_classifier(taps["4d"], config, name="aux2"),
        ]
    return keras.Model(images, outputs, name=name)


@register("googlenet", task="classification", builder=build_googlenet, paper=PAPER, features=googlenet_features)
def googlenet() -> GoogLeNetConfig:
    """GoogLeNet (Inception v1) with the paper's 5x5 branches; auxiliary classifiers optional."""
    return GoogLeNetConfig()
