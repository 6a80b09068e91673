"""LeNet-5.

Paper: LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proceedings of the IEEE 86(11), 1998, Section II.B.

Shapes: B images of 32 x 32 x 1 (the paper pads 28 x 28 MNIST digits to 32 x 32) by default.

The layers, as the paper names them: C1 (six 5x5 convolutions) -> S2 (2x2 subsampling) -> C3
(sixteen 5x5 convolutions) -> S4 (2x2 subsampling) -> C5 (120 5x5 convolutions, 1 x 1 at a 32
pixel input) -> F6 (84 units) -> output.

What is built, by default (`lenet5`), is the paper's network up to F6:
- C3 follows the paper's connection table (Table I): each of the 16 maps sees 3, 4 or 6 of
  S2's 6 maps, 60 connections in all, 1,516 parameters (`c3_connections="table"`);
- S2 and S4 are the paper's trainable subsampling: the sum of a 2x2 window times a trainable
  coefficient, plus a trainable bias, then the squashing function (2 parameters per map);
- so C1..F6 hold the paper's 156 + 12 + 1,516 + 32 + 48,120 + 10,164 = 60,000 parameters.

Where it departs from the paper (as every modern reimplementation does):
- the squashing function is `tanh` instead of the paper's `1.7159 tanh(2a/3)`;
- the output layer is a dense softmax of `classes` units (84 x 10 + 10 = 850 parameters at
  ten classes) instead of the paper's Euclidean RBF units with fixed bitmap centres;
- raw pixels are scaled to [-1, 1] in the graph (`preprocessing="tf"`); the paper maps the
  background to -0.1 and the ink to 1.175.

The "common" LeNet-5 of textbooks and tutorials (dense C3, average pooling without
parameters, dense softmax output) is `zoo.build("lenet5", c3_connections="dense",
trainable_subsampling=False)`: 61,706 parameters at ten classes.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras
import numpy as np
from keras import ops

from zoo.backbones._common import check_choice, check_classifier
from layers import PixelNormalization
from zoo.registry import register

PAPER = "LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998"
MIN_INPUT_SIZE = 32

# Table I of the paper: the S2 maps (columns of the paper's table are C3 maps) that each of
# C3's 16 maps is connected to.
C3_CONNECTION_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5),
)


@keras.saving.register_keras_serializable(package="zoo")
class ConnectionTableConv2D(keras.layers.Layer):
    """A "valid" 2D convolution where output map `j` sees only the input maps `table[j]`.

    Only the connected kernel slices are weights, so the parameter count is the paper's:
    `kernel_size**2 * sum(len(row) for row in table) + len(table)` (1,516 for LeNet's C3).

    Args:
      table: one tuple of input-channel indices per output channel.
      kernel_size: int or (height, width).
      activation: a Keras activation name, or None.

    Input: `[B, H, W, C]` with `C > max(index in table)`.
    Output: `[B, H - kh + 1, W - kw + 1, len(table)]`.

    Example:
      >>> c3 = ConnectionTableConv2D(table=C3_CONNECTION_TABLE, kernel_size=5, name="c3")
    """

    def __init__(self, *, table, kernel_size, activation=None, **kwargs):
        super().__init__(**kwargs)
        table = tuple(tuple(int(index) for index in row) for row in table)
        if not table or any(not row for row in table):
            raise ValueError(f"table must list at least one input channel for each output, got {table}")
        if any(index < 0 for row in table for index in row) or any(len(set(row)) != len(row) for row in table):
            raise ValueError(f"table rows must hold distinct non-negative channel indices, got {table}")
        self.table = table
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(self.kernel_size) != 2 or min(self.kernel_size) < 1:
            raise ValueError(f"kernel_size must be a positive int or (height, width), got {kernel_size!r}")
        self.activation = keras.activations.get(activation)
        self._activation_name = activation

    @property
    def filters(self) -> int:
        return len(self.table)

    def build(self, input_shape):
        channels = input_shape[-1]
        needed = 1 + max(index for row in self.table for index in row)
        if channels is None or channels < needed:
            raise ValueError(
                f"{self.name}: the connection table uses input channel {needed - 1}, so the input "
                f"needs at least {needed} channels, got input shape {tuple(input_shape)}"
            )
        connections = sum(len(row) for row in self.table)
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, connections), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        # gather[i, j]: which connected slice is the kernel from input i to output j; the
        # extra index `connections` points at a zero slice (no connection).
        gather = np.full((channels, self.filters), connections, dtype="int32")
        position = 0
        for output, row in enumerate(self.table):
            for index in row:
                gather[index, output] = position
                position += 1
        self._gather = gather

    def dense_kernel(self):
        """The `[kh, kw, C, filters]` kernel with zeros where the table has no connection."""
        padded = ops.concatenate([self.kernel, ops.zeros((*self.kernel_size, 1), self.kernel.dtype)], axis=-1)
        return ops.take(padded, ops.convert_to_tensor(self._gather), axis=-1)

    def call(self, inputs):
        kernel = ops.cast(self.dense_kernel(), self.compute_dtype)
        outputs = ops.conv(ops.cast(inputs, self.compute_dtype), kernel, strides=1, padding="valid")
        outputs = outputs + ops.cast(self.bias, self.compute_dtype)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        kh, kw = self.kernel_size
        return (
            input_shape[0],
            None if height is None else height - kh + 1,
            None if width is None else width - kw + 1,
            self.filters,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            table=[list(row) for row in self.table],
            kernel_size=list(self.kernel_size),
            activation=self._activation_name,
        )
        return config


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
    """Configuration of LeNet-5.

    Attributes:
      c3_connections: "table" (the paper's Table I, 1,516 parameters) or "dense" (every C3
        map sees every S2 map, 2,416 parameters).
      trainable_subsampling: S2/S4 as the paper's 2x2 average times a trainable coefficient
        plus a bias and the squashing function; False: plain 2x2 average pooling.
      activation: the squashing function of C1 ... F6.
      include_top, classes, input_shape, pooling, classifier_activation: as in
        keras.applications; `input_shape` defaults to (32, 32, 1) and must be fixed with the
        top (F6 is dense on the flattened C5).
      preprocessing: "tf" scales raw pixels (0..255, any number of channels) to [-1, 1];
        None takes inputs as they come.
    """

    c3_connections: Literal["table", "dense"] = "table"
    trainable_subsampling: bool = True
    activation: str = "tanh"
    include_top: bool = True
    classes: int = 10
    input_shape: tuple[int | None, ...] | None = None
    pooling: Literal["avg", "max"] | None = None
    classifier_activation: str | None = "softmax"
    preprocessing: Literal["tf"] | None = "tf"

    def __post_init__(self):
        check_choice(self.c3_connections, ("table", "dense"), argument="c3_connections")
        check_choice(self.preprocessing, (None, "tf"), argument="preprocessing")
        try:
            keras.activations.get(self.activation)
        except ValueError as error:
            raise ValueError(f"activation must be a Keras activation name, got {self.activation!r}") from error
        check_classifier(self)


def _input_shape(config: LeNetConfig) -> tuple:
    shape = config.input_shape if config.input_shape is not None else (32, 32, 1)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {shape}")
    height, width, channels = shape
    for value, argument in ((height, "height"), (width, "width")):
        if value is not None and value < MIN_INPUT_SIZE:
            raise ValueError(f"input_shape {shape}: {argument} {value} is below LeNet-5's {MIN_INPUT_SIZE} pixels")
    if channels is None or channels < 1:
        raise ValueError(f"input_shape {shape}: channels must be a positive integer")
    if config.include_top and (height is None or width is None):
        raise ValueError(
            f"input_shape {shape}: include_top=True flattens C5, so height and width must be fixed integers"
        )
    return tuple(shape)


def subsampling(x, config, *, name):
    """S2/S4: 2x2 average pooling, and with `trainable_subsampling` a per-map scale, bias and squash."""
    x = keras.layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
    if config.trainable_subsampling:
        # A 1x1 depthwise convolution is exactly one coefficient and one bias per map.
        x = keras.layers.DepthwiseConv2D(1, name=f"{name}_scale")(x)
        x = keras.layers.Activation(config.activation, name=f"{name}_{config.activation}")(x)
    return x


def lenet_trunk(config: LeNetConfig, images):
    """C1 ... C5 from raw-pixel `images`; returns C5's `[B, H/4 - 7, W/4 - 7, 120]` output."""
    x = images
    if config.preprocessing == "tf":
        channels = images.shape[-1]
        x = PixelNormalization(mean=(127.5,) * channels, std=(127.5,) * channels, name="preprocessing")(x)
    x = keras.layers.Conv2D(6, 5, activation=config.activation, name="c1")(x)
    x = subsampling(x, config, name="s2")
    if config.c3_connections == "table":
        x = ConnectionTableConv2D(table=C3_CONNECTION_TABLE, kernel_size=5, activation=config.activation, name="c3")(x)
    else:
        x = keras.layers.Conv2D(16, 5, activation=config.activation, name="c3")(x)
    x = subsampling(x, config, name="s4")
    return keras.layers.Conv2D(120, 5, activation=config.activation, name="c5")(x)


def build_lenet(config: LeNetConfig, *, name: str = "lenet5") -> keras.Model:
    """LeNet-5 from its config (see the module docstring for what is the paper's)."""
    images = keras.Input(shape=_input_shape(config), name="images")
    x = lenet_trunk(config, images)
    if config.include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(84, activation=config.activation, name="f6")(x)
        x = keras.layers.Dense(config.classes, activation=config.classifier_activation, name="predictions")(x)
    elif config.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif config.pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(images, x, name=name)


@register("lenet5", task="classification", builder=build_lenet, paper=PAPER, image_size=(32, 32))
def lenet5() -> LeNetConfig:
    """LeNet-5 with the paper's C3 connection table and trainable subsampling, 32x32x1 inputs."""
    return LeNetConfig()
