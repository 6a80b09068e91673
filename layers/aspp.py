"""Atrous Spatial Pyramid Pooling (ASPP), DeepLab-v3's context module, as one Keras layer.

Papers: Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation"
(DeepLab-v3), https://arxiv.org/abs/1706.05587, section 3.3; the separable branches are
DeepLab-v3+'s (Chen et al., ECCV 2018, https://arxiv.org/abs/1802.02611, section 3.2).

Shapes: B images; a backbone feature map `[B, h, w, C]` at the encoder's output stride
(16: atrous rates (6, 12, 18); 8: (12, 24, 36)); F = `filters` (256).

    features [B, h, w, C] ─┬─ image_pooling: global mean -> 1x1 conv -> BN -> ReLU -> resize ─┐
                           ├─ aspp0: 1x1 conv -> BN -> ReLU ───────────────────────────────────┤
                           ├─ aspp1: 3x3 conv, rate r1 -> BN -> ReLU (or separable) ───────────┼─ concat [B, h, w, 5F]
                           ├─ aspp2: rate r2 ... ───────────────────────────────────────────────┤   -> concat_projection:
                           └─ aspp3: rate r3 ... ───────────────────────────────────────────────┘      1x1 conv -> BN -> ReLU
                                                                                                        -> dropout -> [B, h, w, F]

The branches are concatenated in that order (image pooling first), as DeepLab's
`model._extract_features` does, so that a TF-slim `concat_projection/weights` imports as is.
The sublayers are named after DeepLab's slim scopes (`image_pooling`, `aspp0`,
`aspp1_depthwise`, `aspp1_pointwise` or `aspp1`, `concat_projection`; a convolution's batch
norm is `<scope>_bn`, slim's `<scope>/BatchNorm`), so a variable's path inside the layer
(`aspp/aspp1_depthwise_bn/gamma`) names its slim variable mechanically
(`zoo.slim.aspp_slim_names`). Convolutions have no bias (batch norm follows each), as in DeepLab.

A separable branch is DeepLab's `_split_separable_conv2d`: a depthwise 3x3 convolution at the
branch's rate, batch norm and ReLU, then a pointwise 1x1 convolution, batch norm and ReLU (a
ReLU between the two, unlike `keras.layers.SeparableConv2D`).

The image-level branch pools the whole map (DeepLab pools a window the size of the training
crop's feature map, which is the whole map for crop-size inputs) and is resized back to
`h x w` with `resize_bilinear(..., align_corners=True)`, a broadcast of its one pixel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers.batch_norm import BatchNormalization
from layers.resample import resize_bilinear

# Initialisers of DeepLab's `_split_separable_conv2d` (truncated normal standard deviations).
DEPTHWISE_STDDEV = 0.33
POINTWISE_STDDEV = 0.06


def atrous_rates_for(output_stride: int) -> tuple[int, int, int]:
    """DeepLab's ASPP rates: (6, 12, 18) at output stride 16, doubled at 8."""
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16 for DeepLab's atrous rates, got {output_stride!r}")
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


@keras.saving.register_keras_serializable(package="zoo")
class ASPP(keras.layers.Layer):
    """Atrous Spatial Pyramid Pooling (see the module docstring for the graph and names).

    Args:
      filters: F, the width of every branch and of the projection (DeepLab: 256).
      atrous_rates: the rates of the 3x3 branches, one branch each (DeepLab: (6, 12, 18) at
        output stride 16, (12, 24, 36) at 8; `atrous_rates_for`). May be empty.
      separable: DeepLab's `aspp_with_separable_conv`: depthwise + pointwise 3x3 branches.
      image_pooling: add the image-level branch (DeepLab's `add_image_level_feature`).
      dropout: the rate after the projection in training (DeepLab: keep_prob 0.9, so 0.1).
      batch_norm_momentum, batch_norm_epsilon: of every batch norm (DeepLab: 0.9997, 1e-5).

    Call arguments:
      features: `[B, h, w, C]`, h and w may be unknown when the model is built.
      training: dropout and batch norm in training mode.

    Returns:
      `[B, h, w, F]` in the layer's compute dtype.

    Example:
      >>> context = ASPP(atrous_rates=(6, 12, 18), separable=True, name="aspp")(c5)
    """

    def __init__(
        self,
        filters=256,
        *,
        atrous_rates=(6, 12, 18),
        separable=False,
        image_pooling=True,
        dropout=0.1,
        batch_norm_momentum=0.9997,
        batch_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"ASPP: filters must be a positive integer, got {filters!r}")
        atrous_rates = tuple(atrous_rates)
        if not all(isinstance(rate, int) and not isinstance(rate, bool) and rate >= 1 for rate in atrous_rates):
            raise ValueError(f"ASPP: atrous_rates must be positive integers, got {atrous_rates!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ASPP: dropout must be in [0, 1), got {dropout!r}")
        if not 0.0 <= batch_norm_momentum < 1.0 or not 0.0 < batch_norm_epsilon < 1.0:
            raise ValueError(
                f"ASPP: batch_norm_momentum must be in [0, 1) and batch_norm_epsilon in (0, 1), got "
                f"{batch_norm_momentum!r} and {batch_norm_epsilon!r}"
            )
        self.filters, self.atrous_rates, self.separable = filters, atrous_rates, bool(separable)
        self.image_pooling, self.dropout = bool(image_pooling), float(dropout)
        self.batch_norm_momentum, self.batch_norm_epsilon = float(batch_norm_momentum), float(batch_norm_epsilon)

        # Each branch: a list of (layer, activation after it?) run in order.
        self._branches: list[list] = []
        if self.image_pooling:
            self._branches.append(self._conv_bn("image_pooling", 1))
        self._branches.append(self._conv_bn("aspp0", 1))
        for index, rate in enumerate(self.atrous_rates, start=1):
            if self.separable:
                self._branches.append(
                    self._depthwise_bn(f"aspp{index}_depthwise", rate) + self._conv_bn(
                        f"aspp{index}_pointwise", 1, stddev=POINTWISE_STDDEV
                    )
                )
            else:
                self._branches.append(self._conv_bn(f"aspp{index}", 3, rate=rate))
        self._projection = self._conv_bn("concat_projection", 1)
        self._dropout = keras.layers.Dropout(self.dropout, name="concat_projection_dropout")

    # ---------------------------------------------------------------- sublayers

    def _batch_norm(self, name):
        return BatchNormalization(
            momentum=self.batch_norm_momentum, epsilon=self.batch_norm_epsilon, name=f"{name}_bn", dtype=self.dtype_policy
        )

    def _conv_bn(self, name, kernel_size, *, rate=1, stddev=None):
        initializer = "glorot_uniform" if stddev is None else keras.initializers.TruncatedNormal(stddev=stddev)
        conv = keras.layers.Conv2D(
            self.filters, kernel_size, dilation_rate=rate, padding="same", use_bias=False,
            kernel_initializer=initializer, name=name, dtype=self.dtype_policy,
        )
        return [conv, self._batch_norm(name)]

    def _depthwise_bn(self, name, rate):
        conv = keras.layers.DepthwiseConv2D(
            3, dilation_rate=rate, padding="same", use_bias=False,
            depthwise_initializer=keras.initializers.TruncatedNormal(stddev=DEPTHWISE_STDDEV),
            name=name, dtype=self.dtype_policy,
        )
        return [conv, self._batch_norm(name)]

    @property
    def sublayers(self) -> list:
        """Every sublayer, in the order of the module docstring's graph."""
        return [layer for branch in self._branches for layer in branch] + self._projection

    # ---------------------------------------------------------------- Keras API

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: features must be [B, h, w, C] with C known, got {tuple(input_shape)}")
        for branch in self._branches:
            shape = tuple(input_shape)
            if branch[0].name == "image_pooling":
                shape = (shape[0], 1, 1, shape[3])
            for layer in branch:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        concat_shape = tuple(input_shape[:3]) + (self.filters * len(self._branches),)
        self._projection[0].build(concat_shape)
        self._projection[1].build(concat_shape[:3] + (self.filters,))

    @staticmethod
    def _run(branch, x, training):
        for layer in branch:
            x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
            if isinstance(layer, keras.layers.BatchNormalization):
                x = tf.nn.relu(x)
        return x

    def call(self, features, training=None):
        features = tf.cast(features, self.compute_dtype)
        size = tf.shape(features)[1:3]
        outputs = []
        for branch in self._branches:
            if branch[0].name == "image_pooling":
                pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
                pooled = self._run(branch, pooled, training)
                outputs.append(tf.cast(resize_bilinear(pooled, size, align_corners=True), self.compute_dtype))
            else:
                outputs.append(self._run(branch, features, training))
        x = self._run(self._projection, tf.concat(outputs, axis=-1), training)
        return self._dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            atrous_rates=list(self.atrous_rates),
            separable=self.separable,
            image_pooling=self.image_pooling,
            dropout=self.dropout,
            batch_norm_momentum=self.batch_norm_momentum,
            batch_norm_epsilon=self.batch_norm_epsilon,
        )
        return config

