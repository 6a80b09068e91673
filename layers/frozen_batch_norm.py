"""`FrozenBatchNormalization`: batch norm with fixed statistics and affine, torchvision's
`torchvision.ops.FrozenBatchNorm2d`.

torchvision's detection backbones (Faster R-CNN FPN and the others) replace every batch norm
with this: the four per-channel vectors are buffers (loaded, never trained, not counted in the
model's parameters), and the layer computes `x * scale + shift` with
`scale = weight * rsqrt(running_var + eps)` and `shift = bias - running_mean * scale`, eps 1e-5,
in that order (so that the float32 results agree with torchvision's to rounding).

The variables carry torchvision's names (`weight`, `bias`, `running_mean`, `running_var`), all
non-trainable, so a state-dict key `<module path>.<name>` maps to the layer named
`<module path>` and its variable `<name>`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

BUFFER_NAMES = ("weight", "bias", "running_mean", "running_var")


@keras.saving.register_keras_serializable(package="zoo")
class FrozenBatchNormalization(keras.layers.Layer):
    """`x * scale + shift` per channel (last axis), from fixed batch-norm statistics.

    Args:
      epsilon: added to the variance, torchvision's 1e-5.

    Call arguments:
      inputs: `[..., C]`.

    Returns:
      `[..., C]`, in the layer's compute dtype.
    """

    def __init__(self, *, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.trainable = False

    def build(self, input_shape):
        channels = int(input_shape[-1])
        initial = {"weight": "ones", "bias": "zeros", "running_mean": "zeros", "running_var": "ones"}
        for name in BUFFER_NAMES:
            setattr(self, name, self.add_weight(shape=(channels,), initializer=initial[name], trainable=False,
                                                name=name))

    def call(self, inputs):
        scale = self.weight * tf.math.rsqrt(self.running_var + self.epsilon)
        shift = self.bias - self.running_mean * scale
        return inputs * tf.cast(scale, inputs.dtype) + tf.cast(shift, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def buffer_count(model) -> int:
    """The elements of every `FrozenBatchNormalization` buffer in `model` (nested models included):
    what `model.count_params()` counts beyond torchvision's `sum(p.numel() for p in
    model.parameters())`, which leaves buffers out."""
    from layers.compat import flatten_layers

    return sum(math.prod(weight.shape) for layer in flatten_layers(model)
               if isinstance(layer, FrozenBatchNormalization) for weight in layer.weights)


__all__ = ["BUFFER_NAMES", "FrozenBatchNormalization", "buffer_count"]
