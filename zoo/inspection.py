"""Looking inside a model: receptive fields and feature maps; `zoo.inspect` is this module.

    >>> import zoo
    >>> model = zoo.build("vgg16", include_top=False)
    >>> zoo.inspect.receptive_field(model, "block5_conv3")
    ReceptiveField(size=(196, 196), stride=(16, 16), start=(7.5, 7.5))
    >>> figure = zoo.inspect.feature_maps(model, image, ["block1_conv2", "block1_pool"])

Coordinates: input pixel `i` (row or column) has its centre at `i`. A receptive field is
described per axis (height, width) by its `size` in pixels, its `stride` (the distance in input
pixels between neighbouring output cells) and `start`, the centre of output cell 0's field; so
output cell `k` sees input pixels `start + k * stride - (size - 1) / 2` ...
`start + k * stride + (size - 1) / 2`. `padding = (size - 1) / 2 - start` is how far cell 0's
field reaches beyond the image's first pixel (the "effective padding" of Araujo et al.,
"Computing Receptive Fields of Convolutional Neural Networks", Distill 2019).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import keras
import numpy as np

from layers import compat

__all__ = ["ReceptiveField", "receptive_field", "feature_maps", "save_figure"]


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of a layer's output cells in input pixels, per axis (height, width).

    Attributes:
      size: pixels one output cell sees (the theoretical field, dilation holes included).
      stride: input pixels between neighbouring output cells.
      start: centre of output cell (0, 0)'s field, in input pixel coordinates.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[float, float]

    @property
    def padding(self) -> tuple[float, float]:
        """How far output cell 0's field reaches before the first input pixel, per axis."""
        return tuple((size - 1) / 2 - start for size, start in zip(self.size, self.start))

    def bounds(self, cell: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
        """`((first_row, last_row), (first_col, last_col))` input pixels seen by output `cell`."""
        return tuple(
            (start + index * stride - (size - 1) / 2, start + index * stride + (size - 1) / 2)
            for index, size, stride, start in zip(cell, self.size, self.stride, self.start)
        )


@dataclasses.dataclass(frozen=True)
class _Field:
    """One axis: `size`, `stride` and `start` as above (floats while walking the graph)."""

    size: float
    stride: float
    start: float

    def then(self, layer: "_Field") -> "_Field":
        """This field followed by a layer whose own field (in its input's cells) is `layer`."""
        return _Field(
            size=self.size + (layer.size - 1) * self.stride,
            stride=self.stride * layer.stride,
            start=self.start + layer.start * self.stride,
        )


_IDENTITY = _Field(1.0, 1.0, 0.0)

# Layers that act on each pixel (or each pixel's channels) alone.
_POINTWISE = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Identity,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
)
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_POOLINGS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_SUPPORTED = (
    "Conv2D, DepthwiseConv2D, SeparableConv2D (any stride, dilation, 'same'/'valid'), "
    "MaxPooling2D, AveragePooling2D, ZeroPadding2D, Cropping2D, merges (Add, Concatenate, ...), "
    "normalisations, activations, dropout, zoo's PixelNormalization and ConnectionTableConv2D, "
    "and nested models of these"
)


def _pointwise(layer) -> bool:
    from layers import PixelNormalization

    return isinstance(layer, _POINTWISE + (PixelNormalization,))


def _same_padding_before(size, kernel, stride) -> int:
    """Pixels TensorFlow's "same" padding adds before the first pixel of one axis.

    With an unknown `size` the input is taken to be a multiple of the stride (exact for
    stride 1, and for the even sizes that strided backbones are fed).
    """
    if size is None:
        total = max(kernel - stride, 0)
    else:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2


def _layer_fields(layer, input_shape) -> tuple[_Field, _Field]:
    """The field of one output cell of `layer` in its input's cells, per axis."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"receptive_field: layer {layer.name!r} is channels_first; only NHWC is supported")
    from zoo.backbones.lenet import ConnectionTableConv2D

    if isinstance(layer, ConnectionTableConv2D):
        return tuple(_Field(float(kernel), 1.0, (kernel - 1) / 2) for kernel in layer.kernel_size)
    if isinstance(layer, _CONVOLUTIONS + _POOLINGS):
        if isinstance(layer, _POOLINGS):
            kernels, strides, dilations = layer.pool_size, layer.strides, (1, 1)
        else:
            kernels, strides, dilations = layer.kernel_size, layer.strides, layer.dilation_rate
        fields = []
        for axis in range(2):
            span = dilations[axis] * (kernels[axis] - 1) + 1
            if layer.padding == "valid":
                before = 0
            elif layer.padding == "same":
                before = _same_padding_before(input_shape[1 + axis], span, strides[axis])
            else:
                raise ValueError(f"receptive_field: layer {layer.name!r} has padding {layer.padding!r}")
            fields.append(_Field(float(span), float(strides[axis]), (span - 1) / 2 - before))
        return tuple(fields)
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return tuple(_Field(1.0, 1.0, -float(pad[0])) for pad in layer.padding)
    if isinstance(layer, keras.layers.Cropping2D):
        return tuple(_Field(1.0, 1.0, float(crop[0])) for crop in layer.cropping)
    if _pointwise(layer):
        return _IDENTITY, _IDENTITY
    raise ValueError(
        f"receptive_field cannot reason about layer {layer.name!r} ({type(layer).__name__}) on the "
        f"way to the requested layer; it knows {_SUPPORTED}"
    )


def _union(fields: list[_Field], layer) -> _Field:
    """The field of a merge: the smallest interval holding every input's field."""
    strides = {field.stride for field in fields}
    if len(strides) != 1:
        raise ValueError(
            f"receptive_field: layer {layer.name!r} merges inputs with different strides {sorted(strides)}"
        )
    first = min(field.start - (field.size - 1) / 2 for field in fields)
    last = max(field.start + (field.size - 1) / 2 for field in fields)
    return _Field(last - first + 1, fields[0].stride, (first + last) / 2)


def _fields_of(tensor, memo) -> tuple[_Field, _Field]:
    """The receptive field (per axis) of `tensor`'s cells in the pixels of the model's input."""
    key = id(tensor)
    if key in memo:
        return memo[key]
    layer, inputs, tensor_index = compat.producer(tensor)
    if isinstance(layer, keras.layers.InputLayer):
        result = (_IDENTITY, _IDENTITY)
    else:
        if not inputs:
            raise ValueError(f"receptive_field: layer {layer.name!r} has no inputs")
        input_fields = [_fields_of(t, memo) for t in inputs]
        if len(inputs) > 1 and not isinstance(layer, _MERGES):
            raise ValueError(
                f"receptive_field cannot reason about layer {layer.name!r} ({type(layer).__name__}) with "
                f"{len(inputs)} inputs; it knows merges (Add, Concatenate, ...)"
            )
        if isinstance(layer, keras.layers.Concatenate) and layer.axis not in (-1, 3):
            raise ValueError(f"receptive_field: layer {layer.name!r} concatenates along axis {layer.axis}, not channels")
        merged = tuple(_union([fields[axis] for fields in input_fields], layer) for axis in range(2))
        if isinstance(layer, keras.Model):
            inner = _fields_of(layer.outputs[tensor_index], {})
        elif isinstance(layer, _MERGES):
            inner = (_IDENTITY, _IDENTITY)
        else:
            inner = _layer_fields(layer, inputs[0].shape)
        result = tuple(merged[axis].then(inner[axis]) for axis in range(2))
    memo[key] = result
    return result


def _layer_output(model, layer):
    if isinstance(layer, str):
        try:
            layer = model.get_layer(layer)
        except ValueError as error:
            names = ", ".join(item.name for item in model.layers[:8])
            raise ValueError(f"layer {layer!r} is not in model {model.name!r} (its layers begin: {names}, ...)") from error
    elif not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"layer must be a layer name or a keras Layer, got {type(layer).__name__}")
    calls = compat.call_count(layer)
    if calls != 1:
        raise ValueError(f"layer {layer.name!r} is called {calls} times; its output is ambiguous")
    output = layer.output
    if isinstance(output, (list, tuple)):
        raise ValueError(f"layer {layer.name!r} has {len(output)} outputs; pick a single-output layer")
    return layer, output


def receptive_field(model: keras.Model, layer) -> ReceptiveField:
    """The receptive field of `layer`'s output cells in `model`'s input pixels.

    Computed from the layer configurations by walking the functional graph from the input to
    `layer`: kernel sizes, strides, dilations and paddings compose; a merge (Add, Concatenate)
    takes the union of its inputs' fields; normalisations and activations pass through.

    Args:
      model: a functional `keras.Model` taking `[B, H, W, C]` images (H and W may be None;
        TensorFlow's "same" padding of strided layers is then computed for sizes that are
        multiples of the stride).
      layer: a layer name or a layer of `model` with one 4D output.

    Returns:
      `ReceptiveField(size, stride, start)`, each a (height, width) pair; `.padding` too.

    Raises:
      ValueError: an unknown layer name, or a layer on the way whose field it cannot compute
        (global pooling, dense, resizing, RoI pooling, ...), named in the message.

    Example:
      >>> receptive_field(zoo.build("vgg16", include_top=False), "block5_conv3").size
      (196, 196)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    layer, output = _layer_output(model, layer)
    if len(output.shape) != 4:
        raise ValueError(
            f"layer {layer.name!r} outputs shape {tuple(output.shape)}, not a [B, H, W, C] map: its cells "
            f"see the whole image"
        )
    fields = _fields_of(output, {})
    return ReceptiveField(
        size=tuple(int(round(field.size)) for field in fields),
        stride=tuple(int(round(field.stride)) for field in fields),
        start=tuple(float(field.start) for field in fields),
    )


def _as_batch(model, image) -> np.ndarray:
    """`image` `[H, W, C]` or `[1, H, W, C]` as a batch of one, resized to a fixed model input."""
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C] (or [1, H, W, C]), got shape {image.shape}")
    if len(model.inputs) != 1:
        raise ValueError(f"feature_maps needs a model with one image input, {model.name!r} has {len(model.inputs)}")
    _, height, width, channels = model.inputs[0].shape
    if channels is not None and image.shape[-1] != channels:
        raise ValueError(f"image has {image.shape[-1]} channels, model {model.name!r} expects {channels}")
    image = image.astype("float32")
    if (height is not None and height != image.shape[0]) or (width is not None and width != image.shape[1]):
        import cv2

        resized = cv2.resize(image, (width or image.shape[1], height or image.shape[0]), interpolation=cv2.INTER_LINEAR)
        image = resized.reshape(resized.shape[:2] + (image.shape[-1],))
    return image[None]


def feature_maps(model: keras.Model, image, layers, *, max_channels: int = 16):
    """The activations of the named layers for one image, as a grid: one row per layer.

    Args:
      model: a functional `keras.Model` with one image input (zoo models take raw pixels).
      image: `[H, W, C]` (or `[1, H, W, C]`) pixels as the model takes them; resized to the
        model's input size when that is fixed.
      layers: layer names (or one name); each must output a `[1, h, w, c]` map. Pick the
        layers before and after a ReLU or a pooling to see what each does.
      max_channels: the first this many channels of each layer are shown, one per column.

    Returns:
      A `matplotlib.figure.Figure` (not attached to pyplot, so notebooks show it once and a
      script can `save_figure` it); `figure.activations` maps each layer name to its
      `[h, w, c]` activation array.

    Example:
      >>> figure = feature_maps(zoo.build("vgg16", include_top=False), image, ["block1_conv1", "block1_pool"])
    """
    from matplotlib.figure import Figure

    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers must name at least one layer")
    if not isinstance(max_channels, int) or max_channels < 1:
        raise ValueError(f"max_channels must be a positive integer, got {max_channels!r}")
    outputs = []
    for name in layers:
        layer, output = _layer_output(model, name)
        if len(output.shape) != 4:
            raise ValueError(f"layer {layer.name!r} outputs shape {tuple(output.shape)}, not a [B, H, W, C] feature map")
        outputs.append(output)
    probe = keras.Model(model.inputs[0], outputs, name=f"{model.name}_feature_maps")
    values = probe(_as_batch(model, image), training=False)
    values = [np.asarray(value)[0] for value in (values if isinstance(values, (list, tuple)) else [values])]

    columns = min(max_channels, max(value.shape[-1] for value in values))
    figure = Figure(figsize=(1.3 * columns, 1.5 * len(layers) + 0.3), layout="constrained")
    axes = figure.subplots(len(layers), columns, squeeze=False)
    for row, (name, value) in enumerate(zip(layers, values)):
        for column in range(columns):
            ax = axes[row, column]
            ax.set_axis_off()
            if column >= value.shape[-1]:
                continue
            ax.imshow(value[..., column], cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name} [{column}]" if column == 0 else f"[{column}]", fontsize=7, loc="left")
    figure.suptitle(f"{model.name}: feature maps (first {columns} channels)", fontsize=9)
    figure.activations = dict(zip(layers, values))
    return figure


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG with the Agg backend, under a temporary name renamed at the end."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"out must be a .png path, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"out {str(path)!r}: directory {str(path.parent)!r} does not exist")
    FigureCanvasAgg(figure)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(temporary, format="png", dpi=100)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
