"""Classification backbones, one family per file, and the feature contract heads build on.

Every backbone registered with a `features` function can feed any head:

    >>> images = keras.Input((None, None, 3))
    >>> features = zoo.backbones.backbone_features("resnet50", images, output_stride=16)
    >>> features["C4"].stride, features["C4"].channels
    (16, 1024)
"""

from __future__ import annotations

import keras

from zoo.backbones import (  # noqa: F401  (registers the families)
    alexnet, densenet, googlenet, lenet, mobilenet_v2, resnet, vgg, xception,
)
from zoo.backbones._common import FeatureMap
from zoo.config import apply_overrides
from zoo.registry import get_spec


def backbone_features(name: str, images, **overrides) -> dict[str, FeatureMap]:
    """The feature maps of backbone `name` applied to the raw-pixel tensor `images`.

    Args:
      name: a registered backbone (`zoo.describe(name).is_backbone`).
      images: symbolic `[B, H, W, 3]` raw pixels (a `keras.Input`).
      **overrides: config overrides, e.g. `output_stride=16`; the classifier top is unused.

    Returns:
      `{"C1": FeatureMap, ..., "C5": FeatureMap}`, see `zoo.backbones._common`.
    """
    spec = get_spec(name)
    if spec.features is None:
        raise ValueError(f"{name!r} is a {spec.task} model, not a backbone with feature maps")
    config = apply_overrides(spec.config, {"include_top": False, **overrides}, model_name=name)
    return spec.features(config, images)


def feature_extractor(name: str, *, input_shape=(None, None, 3), **overrides) -> keras.Model:
    """A model from raw pixels to the dict of backbone `name`'s feature maps (`C1` ... `C5`)."""
    images = keras.Input(shape=tuple(input_shape), name="images")
    features = backbone_features(name, images, **overrides)
    return keras.Model(images, {key: value.tensor for key, value in features.items()}, name=f"{name}_features")


__all__ = ["FeatureMap", "backbone_features", "feature_extractor"]
