"""Classification backbones, one family per file, and the feature contract heads build on.

Every backbone registered with a `features` function can feed any head:

    >>> images = keras.Input((None, None, 3))
    >>> features = zoo.backbones.backbone_features("resnet50", images, output_stride=16)
    >>> features["C4"].stride, features["C4"].channels
    (16, 1024)
"""

from __future__ import annotations

import inspect

import keras

from zoo.backbones import (  # noqa: F401  (registers the families)
    alexnet, densenet, googlenet, lenet, mobilenet_v2, resnet, vgg, xception,
)
from zoo.backbones._common import FeatureMap
from zoo.config import apply_overrides
from zoo.registry import get_spec


def backbone_features(name: str, images, *, last_level: int | None = None, **overrides) -> dict[str, FeatureMap]:
    """The feature maps of backbone `name` applied to the raw-pixel tensor `images`.

    Args:
      name: a registered backbone (`zoo.describe(name).is_backbone`).
      images: symbolic `[B, H, W, 3]` raw pixels (a `keras.Input`).
      last_level: build the trunk up to `C{last_level}` only, for a head that runs the rest
        itself (R50-C4 runs conv5 per RoI); families whose features function takes it (ResNet).
      **overrides: config overrides, e.g. `output_stride=16`; the classifier top is unused.

    Returns:
      `{"C1": FeatureMap, ..., "C5": FeatureMap}` (up to `last_level`), see `zoo.backbones._common`.
    """
    spec = get_spec(name)
    if spec.features is None:
        raise ValueError(f"{name!r} is a {spec.task} model, not a backbone with feature maps")
    config = apply_overrides(spec.config, {"include_top": False, **overrides}, model_name=name)
    if last_level is None:
        return spec.features(config, images)
    if "last_level" not in inspect.signature(spec.features).parameters:
        raise ValueError(f"last_level: {name!r}'s trunk always builds every level; only families whose "
                         f"features function takes last_level (ResNet) can stop early")
    return spec.features(config, images, last_level=last_level)


def feature_extractor(name: str, *, input_shape=(None, None, 3), **overrides) -> keras.Model:
    """A model from raw pixels to the dict of backbone `name`'s feature maps (`C1` ... `C5`)."""
    images = keras.Input(shape=tuple(input_shape), name="images")
    features = backbone_features(name, images, **overrides)
    return keras.Model(images, {key: value.tensor for key, value in features.items()}, name=f"{name}_features")


__all__ = ["FeatureMap", "backbone_features", "feature_extractor"]
