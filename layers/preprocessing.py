"""In-graph pixel normalisation, so that every zoo model takes raw pixels (0..255).

A SavedModel client then sends pixels and nothing else, and the normalisation a set of
weights expects travels with the model instead of living in a notebook cell.
"""

from __future__ import annotations

import keras
from keras import ops

# Named normalisations: (mean, std) in pixel units of the channel order given, after the
# optional RGB -> BGR flip. "caffe", "torch" and "tf" are keras.applications' modes.
PRESETS = {
    # keras.applications ResNet/VGG: RGB -> BGR, subtract the ImageNet BGR mean.
    "caffe": dict(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channel_order="bgr"),
    # torchvision: scale to [0, 1], then the ImageNet mean and std.
    "torch": dict(
        mean=(0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0),
        std=(0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0),
        channel_order="rgb",
    ),
    # Inception, MobileNet, Xception and DeepLab's *_beta: scale to [-1, 1].
    "tf": dict(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), channel_order="rgb"),
    # DeepLab's resnet_v1_* checkpoints: subtract the RGB mean, no scaling.
    "deeplab_resnet": dict(mean=(123.15, 115.90, 103.06), std=(1.0, 1.0, 1.0), channel_order="rgb"),
}


@keras.saving.register_keras_serializable(package="zoo")
class PixelNormalization(keras.layers.Layer):
    """`(pixels[..., order] - mean) / std` for NHWC images of raw pixel values.

    Args:
      mean: per-channel mean in pixel units, in the output channel order.
      std: per-channel standard deviation in pixel units, in the output channel order.
      channel_order: "rgb" keeps the channels, "bgr" reverses them first (Caffe weights).

    Input: `[B, H, W, C]` pixels, any real or integer dtype (uint8 from a server is fine).
    Output: `[B, H, W, C]` in the layer's compute dtype.

    Example:
      >>> normalise = PixelNormalization.from_preset("caffe")
    """

    def __init__(self, *, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="rgb", **kwargs):
        super().__init__(**kwargs)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have one value per channel, got {mean} and {std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        self.mean, self.std, self.channel_order = mean, std, channel_order

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "PixelNormalization":
        """The layer for one of `PRESETS` ("caffe", "torch", "tf", "deeplab_resnet")."""
        if preset not in PRESETS:
            raise ValueError(f"preprocessing preset must be one of {sorted(PRESETS)}, got {preset!r}")
        return cls(**PRESETS[preset], **kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels != len(self.mean):
            raise ValueError(
                f"{self.name}: images must have {len(self.mean)} channels for this "
                f"normalisation, got input shape {tuple(input_shape)}"
            )

    def call(self, pixels):
        x = ops.cast(pixels, self.compute_dtype)
        if self.channel_order == "bgr":
            x = ops.flip(x, axis=-1)
        x = x - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        if any(s != 1.0 for s in self.std):
            x = x / ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), channel_order=self.channel_order)
        return config
