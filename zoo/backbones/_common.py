"""What the backbone families share: the feature contract, input checks, the classifier top.

The feature contract: every backbone family exposes `features(config, images)` returning a
dict of `FeatureMap`s keyed `"C{k}"`, the map at stride `2**k` of the input (`C2` at 4 ...
`C5` at 32). With `output_stride` below 32 the deeper keys keep their names and report their
real stride (ResNet at output stride 16: `C5.stride == 16`). Heads use nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from layers import PRESETS, PixelNormalization, compat

PREPROCESSING_CHOICES = tuple(sorted(PRESETS))


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """One entry of a backbone's feature contract.

    Attributes:
      tensor: symbolic `[B, H / stride, W / stride, channels]` (rounded up).
      stride: the map's stride relative to the input image, in pixels.
      channels: the number of channels.
      layer: the name of the layer whose output it is.
    """

    tensor: Any
    stride: int
    channels: int
    layer: str


def feature_map(tensor, stride: int) -> FeatureMap:
    """A `FeatureMap` for the output of a layer, reading its channels and layer name."""
    layer, _, _ = compat.producer(tensor)
    return FeatureMap(tensor=tensor, stride=stride, channels=int(tensor.shape[-1]), layer=layer.name)


def check_choice(value, choices, *, argument: str) -> None:
    if value not in choices:
        raise ValueError(f"{argument} must be one of {list(choices)}, got {value!r}")


def check_batch_norm(config) -> None:
    """`batch_norm_epsilon` in (0, 1) and, where the config has one, `batch_norm_momentum` in [0, 1)."""
    if not 0.0 < config.batch_norm_epsilon < 1.0:
        raise ValueError(f"batch_norm_epsilon must be in (0, 1), got {config.batch_norm_epsilon}")
    momentum = getattr(config, "batch_norm_momentum", 0.0)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"batch_norm_momentum must be in [0, 1), got {momentum}")


def check_classifier(config) -> None:
    """Validation shared by every classification config (keras.applications' arguments)."""
    if config.classes < 1:
        raise ValueError(f"classes must be a positive integer, got {config.classes}")
    check_choice(config.pooling, (None, "avg", "max"), argument="pooling")
    if config.classifier_activation is not None:
        try:
            keras.activations.get(config.classifier_activation)
        except ValueError as error:
            raise ValueError(
                f"classifier_activation must be None or a Keras activation name such as "
                f"'softmax', got {config.classifier_activation!r}"
            ) from error
    check_choice(config.preprocessing, (None,) + PREPROCESSING_CHOICES, argument="preprocessing")


def resolve_input_shape(config, *, min_size: int, needs_fixed_size: bool) -> tuple:
    """The `(H, W, C)` input shape of a config, defaulting as keras.applications does.

    Raises:
      ValueError: a shape that is not (H, W, C), a spatial size below `min_size`, a channel
        count the preprocessing cannot take, or an unknown size where the top needs one.
    """
    shape = config.input_shape
    if shape is None:
        shape = (224, 224, 3) if config.include_top else (None, None, 3)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {shape}")
    height, width, channels = shape
    for value, argument in ((height, "height"), (width, "width")):
        if value is not None and value < min_size:
            raise ValueError(
                f"input_shape {shape}: {argument} {value} is too small; this model needs at "
                f"least {min_size} pixels ({config.__class__.__name__} with output_stride="
                f"{getattr(config, 'output_stride', 32)})"
            )
    if channels is None or channels < 1:
        raise ValueError(f"input_shape {shape}: channels must be a positive integer")
    if config.preprocessing is not None and channels != 3:
        raise ValueError(
            f"input_shape {shape}: preprocessing={config.preprocessing!r} normalises RGB "
            f"images and needs 3 channels; pass preprocessing=None for other inputs"
        )
    if needs_fixed_size and (height is None or width is None):
        raise ValueError(
            f"input_shape {shape}: include_top=True flattens the last feature map, so height "
            f"and width must be fixed integers"
        )
    return tuple(shape)


def image_input(shape) -> keras.KerasTensor:
    """The model input: raw pixels named `images`."""
    return keras.Input(shape=shape, name="images")


def normalise(images, preprocessing: str | None):
    """Apply the named in-graph normalisation (or none) to raw pixels."""
    if preprocessing is None:
        return images
    return PixelNormalization.from_preset(preprocessing, name="preprocessing")(images)


def classifier_head(x, config, *, flatten_fc: tuple[int, ...] = ()):
    """The top of a classification model, as keras.applications builds it.

    With `include_top`, either global average pooling (`flatten_fc=()`, ResNet) or a flatten
    followed by dense ReLU layers `fc1`, `fc2`, ... (VGG), then `predictions`. Without it,
    optional global `pooling` of the last feature map.
    """
    if config.include_top:
        if flatten_fc:
            x = keras.layers.Flatten(name="flatten")(x)
            for index, units in enumerate(flatten_fc, start=1):
                x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        else:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return keras.layers.Dense(
            config.classes, activation=config.classifier_activation, name="predictions"
        )(x)
    if config.pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if config.pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def build_classifier(config, features_fn, *, name: str, min_size: int, needs_fixed_size: bool = False,
                     shape=None, flatten_fc: tuple[int, ...] = ()) -> keras.Model:
    """The generic classifier of a family: raw pixels -> `features_fn` -> `classifier_head` on C5.

    `shape` replaces the input shape `resolve_input_shape` would give (a family whose default
    size differs, such as Xception's 299).
    """
    shape = shape or resolve_input_shape(config, min_size=min_size, needs_fixed_size=needs_fixed_size)
    images = image_input(shape)
    features = features_fn(config, images)
    outputs = classifier_head(features["C5"].tensor, config, flatten_fc=flatten_fc)
    return keras.Model(images, outputs, name=name)
