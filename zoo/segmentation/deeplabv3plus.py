"""DeepLab-v3+: an atrous encoder (any registered backbone), ASPP and a stride-4 decoder.

Paper: Chen, Zhu, Papandreou, Schroff, Adam, "Encoder-Decoder with Atrous Separable Convolution
for Semantic Image Segmentation", ECCV 2018, https://arxiv.org/abs/1802.02611. The numbers
(ASPP rates, 48-channel projection, two 3x3 convolutions of 256, batch norm 0.9997 / 1e-5,
align-corners resizes, concatenation orders) follow the reference implementation,
tensorflow/models `research/deeplab/model.py`.

Shapes: B images of H x W pixels, K object classes (`num_classes`: 20 for PASCAL VOC) and the
background, class 0, which the model adds (K + 1 logits: 21 for VOC), OS the encoder's output
stride (8 or 16).

    images [B, H, W, 3] raw pixels
      └─ backbone (dilated to OS) ─┬─ C2 [B, H/4, W/4, c2] ─ feature_projection0: 1x1, 48, BN, ReLU ───────────┐
                                   └─ last map [B, H/OS, W/OS, C] ─ aspp (layers.ASPP) ─ decoder_upsample ──────┴─ concat
         ─ decoder_conv0, decoder_conv1: 3x3, 256, BN, ReLU (separable: depthwise + pointwise)
         ─ logits_semantic: 1x1, K + 1, with bias ─ upsample_logits ─ logits [B, H, W, K + 1] (float32)

Sizes are rounded up at each stride (`ceil(H / 4)`), so any H, W of at least 32 pixels works,
and the logits are resized to exactly H x W. Every resize is `layers.resize_bilinear(...,
align_corners=True)`, DeepLab's; with the 4k + 1 sizes DeepLab crops to (513), its corner
pixels map onto each other at every stride. With `decoder_output_stride=None` the model is
DeepLab-v3 (logits from the ASPP output).

Layer names follow DeepLab's slim scopes (`aspp0`, `decoder_conv0_depthwise`,
`feature_projection0`, `logits_semantic` for `logits/semantic`; `<scope>_bn` for
`<scope>/BatchNorm`); `zoo.slim.head_slim_scopes` gives the exact correspondence that the
checkpoint import (`zoo.slim`) uses.

Batch norm: DeepLab's head uses decay 0.9997 and epsilon 1e-5 (`batch_norm_momentum`,
`batch_norm_epsilon`); its ResNet backbones decay 0.95 and epsilon 1e-5, Xception-65 0.9997
and 1e-3 (`backbone_batch_norm_*`). MobileNet-v2 gets slim's mobilenet `training_scope` decay,
0.997 (epsilon 1e-3): DeepLab's feature extractor passes no other decay for it, so 0.9997 is
Xception-65's alone (the README's DeepLab-v3+ table lists each backbone's).

Backbones: `slim_backbone=True` (every registered variant) builds the backbone as DeepLab's
TF-slim checkpoints were trained (`slim_backbone_options`), so they import by name (`zoo.slim`):
ResNets in slim's stride placement without conv biases and with multi-grid (1, 2, 4), C2 = `block1/unit_2/bottleneck_v1/conv3`; MobileNet-v2 without its
last 1x1 convolution, C2 = `layer_4/depthwise_output`; Xception-65, C2 =
`entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise`. DeepLab's published
MobileNet-v2 model has no atrous ASPP branches and no decoder; the variant here has both (the
issue's DeepLab-v3+ for every backbone), so only that checkpoint's backbone, image pooling,
`aspp0` and logits import into it. `fine_tune_batch_norm=False` builds
every batch norm frozen (`trainable=False`: moving statistics and fixed scale and offset), as
DeepLab runs them in inference mode for small batches. A training run's `batch_norm` option
(`training.TrainConfig.batch_norm`, `zoo train --batch-norm`) sets the same switch for the run.
"""

from __future__ import annotations

import dataclasses

import keras

from layers import ASPP, ResizeBilinear, atrous_rates_for, compat
from layers.batch_norm import BatchNormalization
from zoo.backbones import backbone_features
from zoo.backbones._common import PREPROCESSING_CHOICES, check_choice, image_input
from zoo.config import apply_overrides
from zoo.registry import get_spec, register

PAPER = "Chen et al., Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation (DeepLab-v3+), ECCV 2018, https://arxiv.org/abs/1802.02611"
MIN_INPUT_SIZE = 32
# DeepLab's initialisers (truncated normal standard deviations).
LOGITS_STDDEV = 0.01
DEPTHWISE_STDDEV = 0.33
POINTWISE_STDDEV = 0.06


@dataclasses.dataclass(frozen=True)
class DeepLabV3PlusConfig:
    """Configuration of a DeepLab-v3+ segmenter.

    Attributes:
      backbone: a registered backbone with a feature contract (`zoo.describe(name).is_backbone`)
        and an `output_stride` option; the decoder taps its `C2`, the ASPP its deepest map.
      num_classes: K, the object classes, as a detector counts them; the logits have K + 1
        channels, class 0 the background (20 for PASCAL VOC: 21 logits).
      output_stride: 16 or 8, the encoder's stride (the backbone's dilation switch).
      atrous_rates: the ASPP's 3x3 rates; None derives DeepLab's from `output_stride`
        ((6, 12, 18) at 16, (12, 24, 36) at 8).
      decoder_output_stride: 4 (DeepLab-v3+) or None (no decoder: DeepLab-v3).
      aspp_separable, decoder_separable: DeepLab's `aspp_with_separable_conv` and
        `decoder_use_separable_conv` (both True by default in DeepLab's flags).
      image_pooling: the ASPP's image-level branch.
      aspp_filters, decoder_projection_filters, decoder_filters: 256, 48, 256 in DeepLab.
      dropout: after the ASPP projection in training (DeepLab's keep_prob 0.9).
      batch_norm_momentum, batch_norm_epsilon: of the head's batch norms (0.9997, 1e-5).
      backbone_batch_norm_momentum, backbone_batch_norm_epsilon: given to the backbone when
        set (DeepLab: ResNet 0.95 and 1e-5); None keeps the backbone's own.
      fine_tune_batch_norm: False freezes every batch norm (see the module docstring).
      input_shape: `(H, W, 3)`; H and W may be None (any size of at least 32 pixels).
      preprocessing: the in-graph normalisation of raw pixels for the backbone's weights:
        "caffe" (keras.applications ResNet), "tf" ([-1, 1]: `*_beta`, Xception, MobileNet-v2),
        "deeplab_resnet" (DeepLab's resnet_v1 checkpoints), or None.
      slim_backbone: build the backbone as DeepLab's TF-slim checkpoints expect it
        (`slim_backbone_options`): a bottleneck ResNet in slim's stride placement without conv
        biases, with `multi_grid`; MobileNet-v2 without its last 1x1 convolution; Xception-65
        as it is. Other backbones (ResNet-18, keras.applications' Xception) have no slim twin:
        set it False for them.
      multi_grid: the rate multipliers of the last ResNet / Xception-65 unit(s) under
        `slim_backbone` (DeepLab-v3's best, (1, 2, 4)); () keeps the backbone's own.
    """

    backbone: str = "resnet50"
    num_classes: int = 20
    output_stride: int = 16
    atrous_rates: tuple[int, ...] | None = None
    decoder_output_stride: int | None = 4
    aspp_separable: bool = True
    decoder_separable: bool = True
    image_pooling: bool = True
    aspp_filters: int = 256
    decoder_projection_filters: int = 48
    decoder_filters: int = 256
    dropout: float = 0.1
    batch_norm_momentum: float = 0.9997
    batch_norm_epsilon: float = 1e-5
    backbone_batch_norm_momentum: float | None = None
    backbone_batch_norm_epsilon: float | None = None
    fine_tune_batch_norm: bool = True
    input_shape: tuple[int | None, ...] = (None, None, 3)
    preprocessing: str | None = "caffe"
    slim_backbone: bool = False
    multi_grid: tuple[int, ...] = ()

    def __post_init__(self):
        check_choice(self.output_stride, (8, 16), argument="output_stride")
        check_choice(self.decoder_output_stride, (4, None), argument="decoder_output_stride")
        check_choice(self.preprocessing, (None,) + PREPROCESSING_CHOICES, argument="preprocessing")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.atrous_rates is not None and any(rate < 1 for rate in self.atrous_rates):
            raise ValueError(f"atrous_rates must be positive integers or None, got {self.atrous_rates}")
        for name in ("aspp_filters", "decoder_projection_filters", "decoder_filters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("batch_norm_momentum", "backbone_batch_norm_momentum"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        for name in ("batch_norm_epsilon", "backbone_batch_norm_epsilon"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if len(self.input_shape) != 3 or self.input_shape[2] != 3:
            raise ValueError(f"input_shape must be (height, width, 3), got {self.input_shape}")
        for size in self.input_shape[:2]:
            if size is not None and size < MIN_INPUT_SIZE:
                raise ValueError(f"input_shape {self.input_shape}: sides must be at least {MIN_INPUT_SIZE} pixels")
        spec = get_spec(self.backbone)
        if spec.features is None or not hasattr(spec.config, "output_stride"):
            raise ValueError(
                f"backbone must be a registered backbone with feature maps and an output_stride option, "
                f"got {self.backbone!r} ({spec.task})"
            )
        # Validates the backbone options (a slim layout the backbone cannot take is named here).
        apply_overrides(spec.config, {"include_top": False, **backbone_overrides(self)}, model_name=self.backbone)

    @property
    def rates(self) -> tuple[int, ...]:
        """The ASPP rates in use: `atrous_rates`, or DeepLab's for `output_stride`."""
        return tuple(self.atrous_rates) if self.atrous_rates is not None else atrous_rates_for(self.output_stride)


# --------------------------------------------------------------------------- blocks


def _batch_norm(x, config, *, name):
    return BatchNormalization(
        momentum=config.batch_norm_momentum, epsilon=config.batch_norm_epsilon, name=name
    )(x)


def conv_bn_relu(x, filters, kernel_size, config, *, name, initializer="glorot_uniform"):
    """Convolution `name` (no bias), batch norm `{name}_bn`, ReLU: slim's conv2d in DeepLab's arg scope."""
    x = keras.layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, kernel_initializer=initializer, name=name
    )(x)
    x = _batch_norm(x, config, name=f"{name}_bn")
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def split_separable_conv_bn_relu(x, filters, config, *, name, rate=1):
    """DeepLab's `_split_separable_conv2d`: `{name}_depthwise` 3x3 (rate), BN, ReLU, then
    `{name}_pointwise` 1x1, BN, ReLU."""
    x = keras.layers.DepthwiseConv2D(
        3, dilation_rate=rate, padding="same", use_bias=False,
        depthwise_initializer=keras.initializers.TruncatedNormal(stddev=DEPTHWISE_STDDEV), name=f"{name}_depthwise",
    )(x)
    x = _batch_norm(x, config, name=f"{name}_depthwise_bn")
    x = keras.layers.Activation("relu", name=f"{name}_depthwise_relu")(x)
    return conv_bn_relu(
        x, filters, 1, config, name=f"{name}_pointwise",
        initializer=keras.initializers.TruncatedNormal(stddev=POINTWISE_STDDEV),
    )


def decoder(context, low_level, config: DeepLabV3PlusConfig):
    """DeepLab-v3+'s decoder: `[B, H/4, W/4, decoder_filters]` from the ASPP output and C2.

    The ASPP output is resized to C2's size and concatenated before the 48-channel projection
    of C2 (DeepLab's order, so slim's `decoder_conv0` weights import as they are).
    """
    projected = conv_bn_relu(low_level, config.decoder_projection_filters, 1, config, name="feature_projection0")
    context = ResizeBilinear(name="decoder_upsample")([context, projected])
    x = keras.layers.Concatenate(name="decoder_concat")([context, projected])
    for index in range(2):
        if config.decoder_separable:
            x = split_separable_conv_bn_relu(x, config.decoder_filters, config, name=f"decoder_conv{index}")
        else:
            # slim.repeat(..., scope="decoder_conv0") names its convolutions decoder_conv0_1, _2.
            x = conv_bn_relu(x, config.decoder_filters, 3, config, name=f"decoder_conv0_{index + 1}")
    return x


# --------------------------------------------------------------------------- builder


def slim_backbone_options(config: DeepLabV3PlusConfig) -> dict:
    """The backbone options that make `config.backbone` DeepLab's slim network (`slim_backbone`).

    - bottleneck ResNets (resnet_v1_* and *_beta): slim's stride placement (the decoder tap C2
      is then `block1/unit_2/bottleneck_v1/conv3`), no conv biases, and `multi_grid`;
    - MobileNet-v2: no `Conv_1` (DeepLab stops at slim's `layer_18`);
    - Xception-65 (aligned): `multi_grid`.

    Raises:
      ValueError: a backbone without a slim twin (basic-block ResNets, keras.applications'
        Xception, the classic networks).
    """
    spec = get_spec(config.backbone)
    backbone = spec.config
    family = type(backbone).__name__
    if family == "ResNetConfig" and backbone.block == "bottleneck":
        options = {"stride_placement": "slim", "use_bias": False}
        return {**options, "multi_grid": config.multi_grid} if config.multi_grid else options
    if family == "MobileNetV2Config":
        return {"last_conv": False}
    if family == "XceptionConfig" and backbone.architecture == "aligned":
        return {"multi_grid": config.multi_grid} if config.multi_grid else {}
    raise ValueError(
        f"slim_backbone=True: backbone {config.backbone!r} has no TF-slim twin in DeepLab (bottleneck "
        f"ResNets, mobilenetv2 and xception65 do); pass slim_backbone=False"
    )


def backbone_overrides(config: DeepLabV3PlusConfig) -> dict:
    """The overrides the segmenter gives its backbone's config."""
    overrides = {"output_stride": config.output_stride, "preprocessing": config.preprocessing}
    if config.slim_backbone:
        overrides.update(slim_backbone_options(config))
    elif config.multi_grid:
        overrides["multi_grid"] = config.multi_grid
    if config.backbone_batch_norm_momentum is not None:
        overrides["batch_norm_momentum"] = config.backbone_batch_norm_momentum
    if config.backbone_batch_norm_epsilon is not None:
        overrides["batch_norm_epsilon"] = config.backbone_batch_norm_epsilon
    return overrides


def build_deeplab_v3_plus(config: DeepLabV3PlusConfig, *, name: str = "deeplab_v3_plus") -> keras.Model:
    """A DeepLab-v3+ segmenter: raw pixels `[B, H, W, 3]` -> logits `[B, H, W, K + 1]` (float32).

    Example:
      >>> model = zoo.build("deeplabv3plus_resnet50", num_classes=3, input_shape=(65, 65, 3))
      >>> model(images).shape  # (B, 65, 65, 4): three object classes and the background
    """
    images = image_input(config.input_shape)
    features = backbone_features(config.backbone, images, **backbone_overrides(config))
    deepest = features[max(features, key=lambda key: int(key[1:]))]
    if deepest.stride != config.output_stride:
        raise ValueError(
            f"backbone {config.backbone!r}: its deepest map has stride {deepest.stride}, not output_stride "
            f"{config.output_stride}"
        )
    context = ASPP(
        config.aspp_filters, atrous_rates=config.rates, separable=config.aspp_separable,
        image_pooling=config.image_pooling, dropout=config.dropout, batch_norm_momentum=config.batch_norm_momentum,
        batch_norm_epsilon=config.batch_norm_epsilon, name="aspp",
    )(deepest.tensor)
    x = context
    if config.decoder_output_stride is not None:
        low_level = features.get("C2")
        if low_level is None or low_level.stride != config.decoder_output_stride:
            raise ValueError(f"backbone {config.backbone!r} has no stride-4 map C2 for the decoder")
        x = decoder(context, low_level.tensor, config)
    # float32 logits: a float16 softmax over many pixels would lose precision in the loss.
    logits = keras.layers.Conv2D(
        config.num_classes + 1, 1, kernel_initializer=keras.initializers.TruncatedNormal(stddev=LOGITS_STDDEV),
        dtype="float32", name="logits_semantic",
    )(x)
    logits = ResizeBilinear(name="upsample_logits", dtype="float32")([logits, images])
    model = keras.Model(images, logits, name=name)
    if not config.fine_tune_batch_norm:
        for layer in compat.flatten_layers(model, include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


# --------------------------------------------------------------------------- variants


def _register(name):
    return register(name, task="segmentation", builder=build_deeplab_v3_plus, paper=PAPER)


# DeepLab's ResNet backbones: slim's layout, batch norm decay 0.95 and epsilon 1e-5, and the
# multi-grid (1, 2, 4) of DeepLab-v3's best configuration (its paper, table 3; the code's default
# is (1, 1, 1)). Multi-grid changes rates, not variables, so every checkpoint loads either way.
_RESNET = dict(
    slim_backbone=True, multi_grid=(1, 2, 4), backbone_batch_norm_momentum=0.95, backbone_batch_norm_epsilon=1e-5,
)


@_register("deeplabv3plus_resnet50")
def deeplabv3plus_resnet50() -> DeepLabV3PlusConfig:
    """DeepLab-v3+ on DeepLab's resnet_v1_50 (slim layout, mean-subtracted inputs), OS 16, 20 classes + background."""
    return DeepLabV3PlusConfig(backbone="resnet50", preprocessing="deeplab_resnet", **_RESNET)


@_register("deeplabv3plus_resnet101")
def deeplabv3plus_resnet101() -> DeepLabV3PlusConfig:
    """DeepLab-v3+ on DeepLab's resnet_v1_101 (slim layout, mean-subtracted inputs), OS 16, 20 classes + background."""
    return DeepLabV3PlusConfig(backbone="resnet101", preprocessing="deeplab_resnet", **_RESNET)


@_register("deeplabv3plus_resnet50_beta")
def deeplabv3plus_resnet50_beta() -> DeepLabV3PlusConfig:
    """DeepLab-v3+ on DeepLab's resnet_v1_50_beta (3x3 stem, slim layout, [-1, 1] inputs), OS 16, 20 classes + background."""
    return DeepLabV3PlusConfig(backbone="resnet50_beta", preprocessing="tf", **_RESNET)


@_register("deeplabv3plus_resnet101_beta")
def deeplabv3plus_resnet101_beta() -> DeepLabV3PlusConfig:
    """DeepLab-v3+ on DeepLab's resnet_v1_101_beta (3x3 stem, slim layout, [-1, 1] inputs), OS 16, 20 classes + background."""
    return DeepLabV3PlusConfig(backbone="resnet101_beta", preprocessing="tf", **_RESNET)


@_register("deeplabv3plus_mobilenetv2")
def deeplabv3plus_mobilenetv2() -> DeepLabV3PlusConfig:
    """DeepLab-v3+ on MobileNet-v2 (slim layout, decoder on layer_4's depthwise output), OS 16, 20 classes + background."""
    # slim's mobilenet training_scope: batch norm decay 0.997, epsilon 1e-3 (DeepLab passes no
    # other decay for MobileNet-v2, unlike Xception's 0.9997).
    return DeepLabV3PlusConfig(
        backbone="mobilenetv2", preprocessing="tf", slim_backbone=True,
        backbone_batch_norm_momentum=0.997, backbone_batch_norm_epsilon=1e-3,
    )


@_register("deeplabv3plus_xception65")
def deeplabv3plus_xception65() -> DeepLabV3PlusConfig:
    """DeepLab-v3+ on the aligned Xception-65, separable ASPP and decoder, OS 16, 20 classes + background."""
    return DeepLabV3PlusConfig(
        backbone="xception65", preprocessing="tf", slim_backbone=True,
        backbone_batch_norm_momentum=0.9997, backbone_batch_norm_epsilon=1e-3,
    )
