"""Weight decay per backbone, batch-norm modes and frozen stages.

Weight decay here is DeepLab's and Caffe's: an L2 loss on the convolution and dense kernels
only (never biases or batch-norm scales and offsets), `decay / 2 * sum(w ** 2)` as TF-slim's
`l2_regularizer` writes it, so its gradient is `decay * w`, what SGD's "weight decay" means.
DeepLab sets it per backbone (`train.py --weight_decay`): 1e-4 for ResNet, 4e-5 for
MobileNet-v2 and Xception; Fast R-CNN's VGG16 used 5e-4.

Batch norm: "fine_tune" updates the statistics and the scale/offset (large batches);
"frozen" runs every BatchNormalization layer in inference mode with fixed parameters, which is
what DeepLab's `fine_tune_batch_norm=False` does for batches too small for good statistics (in
Keras 3, `trainable=False` on a BatchNormalization layer also makes it use its moving
statistics).
"""

from __future__ import annotations

import re

import keras

from layers import compat

# Matched against the model's name, most specific first.
WEIGHT_DECAY = (
    ("mobilenet", 4e-5),
    ("xception", 4e-5),
    ("resnet", 1e-4),
    ("vgg", 5e-4),
)
DEFAULT_WEIGHT_DECAY = 1e-4
BATCH_NORM_MODES = ("fine_tune", "frozen")

# A stage is a run of layers whose names start with one of these patterns; stage 1 is the stem.
STAGE_PATTERNS = {
    "resnet": [r"conv1(_|$)|pool1_"] + [rf"conv{k}_" for k in range(2, 6)],
    "vgg": [rf"block{k}_" for k in range(1, 6)],
}

# (variable attribute, the regularizer attribute that the layer's config saves)
_KERNEL_ATTRIBUTES = (
    ("kernel", "kernel_regularizer"),
    ("depthwise_kernel", "depthwise_regularizer"),
    ("pointwise_kernel", "pointwise_regularizer"),
)


def default_weight_decay(model_name: str) -> float:
    """The decay DeepLab / the original recipe uses for `model_name`'s backbone."""
    lowered = model_name.lower()
    for fragment, decay in WEIGHT_DECAY:
        if fragment in lowered:
            return decay
    return DEFAULT_WEIGHT_DECAY


def apply_weight_decay(model: keras.Model, decay: float) -> int:
    """Adds `decay / 2 * sum(w ** 2)` for every kernel of `model` to its losses.

    The regularizer is set on the layer (so it is saved in `model.keras`) and on the variable
    (so the built model uses it at once). Calling it again replaces the previous decay.

    Returns:
      The number of kernels regularized.
    """
    if decay < 0:
        raise ValueError(f"weight decay must be >= 0, got {decay}")
    regularizer = keras.regularizers.L2(decay / 2) if decay else None
    count = 0
    for layer in all_layers(model):
        for attribute, saved_as in _KERNEL_ATTRIBUTES:
            variable = getattr(layer, attribute, None)
            if not isinstance(variable, keras.Variable):
                continue
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                saved_as = "depthwise_regularizer"  # its kernel is `kernel`, its config says depthwise
            setattr(layer, saved_as, regularizer)
            variable.regularizer = regularizer
            count += 1
    return count


def set_batch_norm(model: keras.Model, mode: str) -> int:
    """"fine_tune" (train statistics and parameters) or "frozen" (inference mode, fixed).

    Returns:
      The number of BatchNormalization layers set.
    """
    if mode not in BATCH_NORM_MODES:
        raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {mode!r}")
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.trainable = mode == "fine_tune"
    return len(layers)


def freeze_stages(model: keras.Model, stages: int) -> list[str]:
    """Makes the stem and the first `stages - 1` stages after it untrainable (torchvision's
    `trainable_backbone_layers`, counted from the input): stage 1 is the stem (`conv1`), stage
    2 is `conv2_*` in a ResNet, `block2_*` in a VGG.

    Returns:
      The names of the layers frozen.

    Raises:
      ValueError: a family without known stages, or more stages than it has.
    """
    if stages == 0:
        return []
    names = [layer.name for layer in all_layers(model)]
    family = next(
        (family for family, patterns in STAGE_PATTERNS.items() if any(re.match(patterns[-1], n) for n in names)),
        None,
    )
    if family is None:
        raise ValueError(
            f"freeze_stages: {model.name!r} has no known stages (families: {sorted(STAGE_PATTERNS)})"
        )
    patterns = STAGE_PATTERNS[family]
    if not 0 <= stages <= len(patterns):
        raise ValueError(f"stages must be in [0, {len(patterns)}] for a {family}, got {stages}")
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns[:stages]))
    frozen = []
    for layer in all_layers(model):
        if pattern.match(layer.name):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def all_layers(model):
    """Every layer, descending into nested models (a backbone inside a detector) and into the
    sublayers of composite layers (the convolutions and batch norms inside `layers.ASPP`); a
    layer shared by two nested models (a trainer's head and its detector) comes once per model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield from compat.flatten_layers(layer, include_self=True, recursive=True)
