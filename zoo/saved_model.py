"""SavedModel export that standard clients serve as it is: the TF Object Detection API's contract.

    >>> model = keras.saving.load_model("runs/frcnn/model.keras")
    >>> zoo.export(model, "exports/frcnn", class_names=("cat", "dog"))
    >>> detect_fn = tf.saved_model.load("exports/frcnn")        # in any process, TensorFlow only
    >>> detect_fn(images)["detection_boxes"]                    # or .signatures["serving_default"]

The SavedModel's `serving_default` (and the loaded object's `__call__`, the same function)
takes `input_tensor`, `uint8 [N, H, W, C]` raw pixels of **any** size (C the model's channels:
3, or 1 for LeNet-5). Inside the graph the images are resized to the model's input size as
training resized them (`layers.image_resize`: "stretch", or "letterbox": aspect ratio kept,
padded at the bottom and right), the model runs (it normalises its pixels itself), and the
outputs are mapped back to the input images. By task:

- classification: `probabilities [N, K]` float32 and `classes [N]` int32 (the argmax);
- detection, the TF Object Detection API's outputs: `detection_boxes [N, D, 4]` float32
  `[ymin, xmin, ymax, xmax]` normalised to [0, 1] of the **input** image, `detection_scores
  [N, D]`, `detection_classes [N, D]` (1-based, 0 in padding rows) and `num_detections [N]`,
  all float32 as the TF OD API's are (gRPC clients read `float_val`). A Fast R-CNN export
  takes `rois float32 [N, R, 4]` (the input image's pixels, padding rows all zeros) as a
  second input, unless `proposals="sliding_windows"` computes them in the graph;
- segmentation: `logits [N, h', w', K]` float32 as the model returns them, and
  `semantic_predictions [N, H, W]` int32 at the input's size: the logits over the image's part
  of the model input, resized (bilinear) to the image, then the argmax.

With `class_names`, the SavedModel's `assets/label_map.pbtxt` is the TF OD API's label map of
the ids the outputs use, and `zoo_export.json` lists the names.

Only TensorFlow is needed to serve the result: the function is traced from the Keras model, so
the zoo's layers, the resize and the NMS are graph ops in the SavedModel.

Options (each checked against the unexported model in tests/zoo/test_saved_model.py):
- `batch_size`: None for a dynamic batch, or a fixed N.
- `image_size`: `(H, W)` the model runs at; its fixed input size by default. For a model that
  takes any size, None runs it at each input's own size.
- `resize`: "stretch" or "letterbox"; the registered family's by default, as `zoo train`.
- `jit_compile`: compile the whole model with XLA, a detector's proposals and NMS included
  (`layers.boxes.padded_nms`); a model with an op XLA cannot compile is refused at export time
  with the compiler's message.
- `compute_dtype`: "float16" or "bfloat16" rebuilds the model under Keras' mixed policy
  (float32 variables, float16/bfloat16 compute; the zoo's float32 heads stay float32) and copies
  the weights; outputs are float32 either way.
- `fold_batch_norm`: `fold_batch_norm(model)`, inference batch norm folded into the preceding
  convolution.

Atomicity: the SavedModel is written to a hidden sibling directory and renamed into place; an
existing directory is refused unless `overwrite=True`, and then replaced only after the new
export is complete (a failure leaves the old one as it was). The directory gets the umask's
usual mode, so a server running as another user can read it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from layers import compat
from layers.detection_contract import IMAGES, ROIS, is_detector, takes_rois
from layers.image_resize import check_resize, resize_batch
from layers.files import write_atomically
from zoo.tasks import TASKS

COMPUTE_DTYPES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
PROPOSAL_METHODS = ("sliding_windows",)
METADATA_FILE = "zoo_export.json"
# Layers that fold into a following BatchNormalization: the axis that carries output channels.
FOLDABLE = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
# The normalisations that fold: Keras's batch norm in inference, and torchvision's frozen one
# (`layers.FrozenBatchNormalization`, always over the last axis).
NORMALIZATIONS = ("BatchNormalization", "FrozenBatchNormalization")


# --------------------------------------------------------------------------- batch-norm folding


def _history_refs(node):
    """Every `keras_history` `[layer, node_index, tensor_index]` inside a serialized node."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            yield node["config"]["keras_history"]
            return
        for value in node.values():
            yield from _history_refs(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _history_refs(value)


def _foldable_pairs(config):
    """`{bn_name: conv_name}` for each batch norm that can fold into the layer before it.

    A pair folds when the batch norm normalises the last axis, both layers are called once,
    the batch norm's only input is that layer's output, and nothing else reads that output.
    """
    layers = {layer["config"]["name"]: layer for layer in config["layers"]}
    readers = {}
    for layer in config["layers"]:
        for ref in _history_refs(layer.get("inbound_nodes", [])):
            readers.setdefault(ref[0], []).append(layer["config"]["name"])
    outputs = {ref[0] for ref in _history_refs(config["output_layers"])}
    pairs = {}
    for name, layer in layers.items():
        if layer["class_name"] not in NORMALIZATIONS or len(layer.get("inbound_nodes", [])) != 1:
            continue
        axis = layer["config"].get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if axis != -1:
            continue
        sources = list(_history_refs(layer["inbound_nodes"][0].get("args", [])))
        if len(sources) != 1:
            continue
        conv_name = sources[0][0]
        conv = layers.get(conv_name)
        if (conv is None or conv["class_name"] not in FOLDABLE or len(conv.get("inbound_nodes", [])) != 1
                or readers.get(conv_name) != [name] or conv_name in outputs):
            continue
        if conv["class_name"] in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D") and \
                conv["config"].get("data_format", "channels_last") != "channels_last":
            continue
        pairs[name] = conv_name
    return pairs


def _fold_into(conv, bn_layer, conv_class):
    """The folded `[kernel(s)..., bias]` of `conv` followed by the inference batch norm."""
    if isinstance(bn_layer, keras.layers.BatchNormalization):
        gamma = np.asarray(bn_layer.gamma) if bn_layer.scale else 1.0
        beta = np.asarray(bn_layer.beta) if bn_layer.center else 0.0
        mean, variance = np.asarray(bn_layer.moving_mean), np.asarray(bn_layer.moving_variance)
    else:  # layers.FrozenBatchNormalization: torchvision's buffer names
        gamma, beta = np.asarray(bn_layer.weight), np.asarray(bn_layer.bias)
        mean, variance = np.asarray(bn_layer.running_mean), np.asarray(bn_layer.running_var)
    factor = (gamma / np.sqrt(variance + bn_layer.epsilon)).astype(np.float64)
    weights = [np.asarray(w, np.float64) for w in conv.get_weights()]
    has_bias = conv.use_bias
    bias = weights[-1] if has_bias else np.zeros_like(mean, np.float64)
    kernels = weights[:-1] if has_bias else weights
    if conv_class == "DepthwiseConv2D":
        # [kh, kw, in, multiplier]: output channel c * multiplier + m.
        kernel = kernels[0]
        kernels = [kernel * factor.reshape(kernel.shape[2], kernel.shape[3])]
    elif conv_class == "SeparableConv2D":
        depthwise, pointwise = kernels
        kernels = [depthwise, pointwise * factor]
    else:
        kernels = [kernels[0] * factor]
    bias = (bias - mean) * factor + beta
    return [k.astype(np.float32) for k in kernels] + [bias.astype(np.float32)]


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` with each inference batch norm folded into the layer before it.

    `y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta` is the convolution with kernel
    `W * s` and bias `(b - mean) * s + beta`, `s = gamma / sqrt(var + eps)` per output channel;
    torchvision's frozen batch norm (`layers.FrozenBatchNormalization`) folds the same way.
    The model is rebuilt from its config with each folded `BatchNormalization` replaced by an
    `Identity` of the same name (so every other layer keeps its name and inputs) and the
    convolution given a bias. Conv1D/2D/3D, DepthwiseConv2D, SeparableConv2D and Dense fold;
    a batch norm after anything else, one whose input is read by another layer too, or one
    over another axis is kept. Only the top level of a functional model is rewritten.

    For inference only: the folded model computes the batch norm with its moving statistics,
    whatever `training` says.

    Args:
      model: a functional `keras.Model`.

    Returns:
      A new `keras.Model` of the same inputs and outputs; `model` is left as it was. Its
      `folded_batch_norms` attribute lists the folded batch norms.

    Raises:
      TypeError: `model` is not a functional Keras model.
    """
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential) or \
            "output_layers" not in (model.get_config() or {}):
        raise TypeError(f"fold_batch_norm: model must be a functional keras.Model, got {type(model).__name__}")
    config = copy.deepcopy(model.get_config())
    pairs = _foldable_pairs(config)
    for layer in config["layers"]:
        name = layer["config"]["name"]
        if name in pairs:
            identity = keras.saving.serialize_keras_object(
                keras.layers.Identity(name=name, dtype=model.get_layer(name).dtype_policy.name)
            )
            identity["inbound_nodes"] = [{"args": layer["inbound_nodes"][0]["args"], "kwargs": {}}]
            identity["name"] = name
            layer.clear()
            layer.update(identity)
        elif name in pairs.values():
            layer["config"]["use_bias"] = True
            layer["config"].pop("bias_constraint", None)
            layer["config"].pop("bias_regularizer", None)
    folded = model.__class__.from_config(config) if type(model) is not keras.Model else keras.Model.from_config(config)
    conv_to_bn = {conv: bn for bn, conv in pairs.items()}
    for layer in folded.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name)
        if layer.name in conv_to_bn:
            layer.set_weights(_fold_into(source, model.get_layer(conv_to_bn[layer.name]), type(source).__name__))
        else:
            layer.set_weights(source.get_weights())
    folded.folded_batch_norms = sorted(pairs)
    return folded


_fold_batch_norm = fold_batch_norm  # `export` has an argument of that name


# --------------------------------------------------------------------------- compute dtype


def with_compute_dtype(model: keras.Model, compute_dtype: str) -> keras.Model:
    """`model` rebuilt under the mixed policy of `compute_dtype` ("float16" or "bfloat16").

    A model made by `zoo.build` is rebuilt by its builder under the global policy, so layers
    the builder pins to float32 (detection heads, NMS inputs) stay float32. Any other
    functional model is rebuilt from its config with every layer switched to the policy except
    those whose outputs are model outputs (Keras' advice for the last layer). Variables stay
    float32 either way, and the weights are copied.
    """
    policy = COMPUTE_DTYPES[compute_dtype]
    previous = keras.config.dtype_policy()
    spec_config = getattr(model, "zoo_config", None)
    try:
        keras.config.set_dtype_policy(policy)
        if spec_config is not None:
            from zoo.registry import get_spec

            rebuilt = get_spec(model.name).builder(spec_config, name=model.name)
        else:
            config = copy.deepcopy(model.get_config())
            outputs = {ref[0] for ref in _history_refs(config["output_layers"])}
            for layer in config["layers"]:
                if layer["class_name"] != "InputLayer" and layer["config"]["name"] not in outputs:
                    layer["config"].pop("dtype", None)
            rebuilt = keras.Model.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


# --------------------------------------------------------------------------- serving functions


def infer_task(model) -> str:
    """The task of `model`: the registry's for a model built by `zoo.build`, else from outputs."""
    from zoo import registry

    if model.name in registry.list_models():
        return registry.get_spec(model.name).task
    if is_detector(model):
        return "detection"
    outputs = model.output
    if not isinstance(outputs, (dict, list, tuple)):
        if len(outputs.shape) == 4:
            return "segmentation"
        if len(outputs.shape) == 2:
            return "classification"
    raise ValueError(
        f"export: cannot tell the task of model {model.name!r} from its outputs; pass task= one of {TASKS}"
    )


def _image_input(model):
    inputs = model.input
    if isinstance(inputs, dict):
        if IMAGES not in inputs:
            raise ValueError(f"export: the model's inputs {sorted(inputs)} have no '{IMAGES}'")
        return inputs[IMAGES]
    if isinstance(inputs, (list, tuple)):
        raise ValueError("export: a model with several inputs must take them as a dict with 'images'")
    return inputs


def default_resize(model, task) -> str:
    """The resize `zoo train` uses by default for `model`: its registered family's, else the task's."""
    from zoo import registry

    if model.name in registry.list_models():
        return registry.describe(model.name).resize
    return registry.TASK_RESIZE[task]


def _model_image_size(model, image_size):
    """`(channels, size)`: the model's image channels and the `(h, w)` it runs at inside the
    graph: its fixed input size, else `image_size`, else None (the input's own size)."""
    shape = tuple(_image_input(model).shape)
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"export: the model must take images [N, H, W, C], its input is {shape}")
    height, width = shape[1:3]
    if image_size is not None:
        for fixed, wanted, side in ((height, image_size[0], "height"), (width, image_size[1], "width")):
            if fixed is not None and fixed != wanted:
                raise ValueError(
                    f"export: image_size={tuple(image_size)} disagrees with the model's fixed input "
                    f"{side} {fixed} (input shape {shape})"
                )
        return shape[-1], tuple(int(side) for side in image_size)
    if (height is None) != (width is None):
        raise ValueError(f"export: the model's input {shape} fixes one side only; pass image_size=(H, W)")
    return shape[-1], (None if height is None else (int(height), int(width)))


def _probabilities(model, outputs):
    """Softmax of the classifier's output unless the classifier already applied it."""
    last, _, _ = compat.producer(model.output)
    activation = getattr(last, "activation", None)
    if getattr(activation, "__name__", "") == "softmax":
        return tf.cast(outputs, tf.float32)
    if getattr(activation, "__name__", "") == "linear":
        return tf.nn.softmax(tf.cast(outputs, tf.float32), axis=-1)
    raise ValueError(
        f"export: a classification export needs the classifier top (a Dense layer with softmax or "
        f"no activation); the model's output comes from {last.name!r} ({type(last).__name__}): "
        f"build it with include_top=True"
    )


def _check_options(model, task, batch_size, image_size, compute_dtype, proposals, proposal_options, resize,
                   class_names):
    if task not in TASKS:
        raise ValueError(f"export: task must be one of {TASKS}, got {task!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"export: batch_size must be None (dynamic) or a positive integer, got {batch_size!r}")
    if image_size is not None:
        if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_size)):
            raise ValueError(f"export: image_size must be None or (height, width) positive integers, got {image_size!r}")
    if compute_dtype not in (None, "float32") and compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"export: compute_dtype must be None, 'float32', 'float16' or 'bfloat16', got {compute_dtype!r}")
    if resize is not None:
        check_resize(resize, argument="export: resize")
    if class_names is not None and (isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"export: class_names must be a sequence of names, got {class_names!r}")
    if proposals is not None:
        if proposals not in PROPOSAL_METHODS:
            raise ValueError(f"export: proposals must be None or one of {PROPOSAL_METHODS}, got {proposals!r}")
        if task != "detection" or not takes_rois(model):
            raise ValueError("export: proposals= is for a detector that takes 'rois' (Fast R-CNN)")
    elif proposal_options:
        raise ValueError("export: proposal_options needs proposals='sliding_windows'")


def _serving_function(model, task, *, jit_compile, proposals, proposal_options, model_size, resize):
    """`(fn, input_names)`: the serving function of `model` and its argument names.

    `fn(input_tensor[, rois])` takes uint8 images of any size, resizes them to `model_size`
    (`resize`), runs the model (all of it under XLA with `jit_compile`: NMS included) and maps
    the outputs back to the input images' pixels.
    """
    with_rois = task == "detection" and takes_rois(model)

    def run_model(inputs):
        return model(inputs, training=False)

    if jit_compile:
        run_model = tf.function(run_model, jit_compile=True, autograph=False)

    proposal_layer = None
    if proposals == "sliding_windows":
        from zoo.detection.proposals import SlidingWindowProposals

        proposal_layer = SlidingWindowProposals(name="export_proposals", **(proposal_options or {}))

    def outputs_of(raw, size, content):
        if task == "classification":
            probabilities = _probabilities(model, raw)
            return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}
        if task == "segmentation":
            logits = tf.cast(raw, tf.float32)
            # Logits over the model's input, cropped to the image's content, at the image's size.
            full = tf.image.resize(logits, model_size or size, method="bilinear") if model_size else logits
            if model_size:
                full = tf.image.resize(full[:, :content[0], :content[1]], size, method="bilinear")
            else:
                full = tf.cond(tf.reduce_all(tf.equal(tf.shape(logits)[1:3], size)), lambda: logits,
                               lambda: tf.image.resize(logits, size, method="bilinear"))
            return {"logits": logits, "semantic_predictions": tf.argmax(full, axis=-1, output_type=tf.int32)}
        # Model pixels -> [0, 1] of the input image: the content is all of the image.
        extent = tf.cast(tf.concat([content, content], axis=0), tf.float32)
        return {
            "detection_boxes": tf.clip_by_value(tf.cast(raw["boxes"], tf.float32) / extent, 0.0, 1.0),
            "detection_scores": tf.cast(raw["scores"], tf.float32),
            "detection_classes": tf.cast(raw["classes"], tf.float32),
            "num_detections": tf.cast(raw["num_detections"], tf.float32),
        }

    def run(input_tensor, rois=None):
        pixels = tf.cast(input_tensor, tf.float32)
        size = tf.shape(pixels)[1:3]
        if model_size is None:
            images, content = pixels, size
        else:  # as training resized them (`layers.image_resize`)
            images, content = resize_batch(pixels, model_size, resize=resize)
        if not with_rois:
            inputs = images if not isinstance(model.input, dict) else {IMAGES: images}
        else:
            if rois is None:
                rois = proposal_layer(images)
            else:  # the input image's pixels -> the model's
                ratio = tf.cast(content, tf.float32) / tf.cast(size, tf.float32)
                rois = tf.cast(rois, tf.float32) * tf.concat([ratio, ratio], axis=0)
            inputs = {IMAGES: images, ROIS: tf.cast(rois, tf.float32)}
        return outputs_of(run_model(inputs), size, content)

    if with_rois and proposal_layer is None:
        def serve(input_tensor, rois):
            return run(input_tensor, rois)

        return serve, ("input_tensor", ROIS)

    def serve(input_tensor):  # noqa: F811 (one image input)
        return run(input_tensor)

    return serve, ("input_tensor",)


def serving_function(
    model: keras.Model,
    *,
    task: str | None = None,
    batch_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    resize: str | None = None,
    resize_in_graph: bool = True,
    proposals: str | None = None,
    proposal_options: dict | None = None,
):
    """`(function, signature, settings)`: `export`'s serving function, for the other formats.

    `function` is a `tf.function` of `signature`, computing what the SavedModel's
    `serving_default` does (`zoo.export_formats` converts it to ONNX as it is). With
    `resize_in_graph=False` it takes float32 `images [N, H, W, C]` pixels already at the model's
    input size, resized by the client as `layers.image_resize` does, and runs no resize (for
    runtimes without an antialiased resize: TFLite). `settings`: the `task`, `resize` and
    `image_size` it was built with. Arguments as `export`'s; raises as `export` does.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"export: model must be a keras.Model, got {type(model).__name__}")
    task = task or infer_task(model)
    _check_options(model, task, batch_size, image_size, None, proposals, proposal_options, resize, None)
    resize = resize or default_resize(model, task)
    channels, model_size = _model_image_size(model, None if image_size is None else tuple(image_size))
    if not resize_in_graph and model_size is None:
        raise ValueError("export: without a resize in the graph the input size must be fixed: pass image_size=(H, W)")
    serve, input_names = _serving_function(
        model, task, jit_compile=False, proposals=proposals, proposal_options=proposal_options,
        model_size=model_size if resize_in_graph else None, resize=resize,
    )
    if resize_in_graph:
        signature = [tf.TensorSpec((batch_size, None, None, channels), tf.uint8, name="input_tensor")]
    else:
        signature = [tf.TensorSpec((batch_size, *model_size, channels), tf.float32, name="images")]
    if ROIS in input_names:
        signature.append(tf.TensorSpec((batch_size, None, 4), tf.float32, name=ROIS))
    function = tf.function(serve, input_signature=signature, autograph=False)
    return function, signature, {"task": task, "resize": resize, "image_size": model_size}


def label_map_text(class_names, *, first_id: int) -> str:
    """The TF Object Detection API's `label_map.pbtxt` of `class_names`, ids from `first_id`."""
    items = []
    for index, name in enumerate(class_names):
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        items.append(f"item {{\n  id: {first_id + index}\n  name: '{quoted}'\n  display_name: '{quoted}'\n}}\n")
    return "".join(items)


# --------------------------------------------------------------------------- export


def export(
    model: keras.Model,
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    task: str | None = None,
    batch_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    resize: str | None = None,
    class_names=None,
    jit_compile: bool = False,
    compute_dtype: str | None = None,
    fold_batch_norm: bool = False,
    proposals: str | None = None,
    proposal_options: dict | None = None,
) -> Path:
    """Export `model` as a SavedModel whose `serving_default` takes uint8 images of any size.

    Args:
      model: a zoo model (`zoo.build`, or a `.keras` file from `zoo train`), or any functional
        model of one of the tasks' contracts (see the module docstring).
      directory: where the SavedModel goes.
      overwrite: replace an existing `directory` (only once the new export is complete).
      task: "classification", "detection" or "segmentation"; default: the registry's task of
        the model's name, else guessed from its outputs.
      batch_size: None for a dynamic batch, or the fixed N of the signature.
      image_size: `(H, W)` the model runs at inside the graph: the model's fixed input size
        (the default; another is an error), or for a model that takes any size, a size to
        resize to (default: none, the input's own size).
      resize: how an input becomes `image_size` (`layers.image_resize`): "stretch" or
        "letterbox"; default the registered model's (`zoo describe`), else the task's, as
        `zoo train` resizes by default. Pass the run's for a model trained otherwise.
      class_names: the names of the model's classes (the background not included); written
        to `zoo_export.json` and, as the TF Object Detection API's `label_map.pbtxt`, to the
        SavedModel's assets.
      jit_compile: compile the model with XLA, a detector's proposals and NMS included.
      compute_dtype: None/"float32", "float16" or "bfloat16" (mixed precision).
      fold_batch_norm: fold inference batch norm into the preceding convolutions.
      proposals: for a Fast R-CNN detector, None (the signature takes `rois`) or
        "sliding_windows" (computed in the graph by `SlidingWindowProposals`).
      proposal_options: `SlidingWindowProposals` arguments (`stride`, `scales`,
        `aspect_ratios`, `max_proposals`).

    Returns:
      The SavedModel directory, as a `Path`. It also holds `zoo_export.json`: the task, the
      signature's inputs and outputs, the class names and the options.

    Raises:
      FileExistsError: `directory` exists and `overwrite` is False.
      ValueError: an option out of range or not applicable to the model; `jit_compile=True`
        on a model with an op XLA cannot compile.
      TypeError: `model` is not a Keras model.

    Example:
      >>> zoo.export(keras.saving.load_model("runs/frcnn/model.keras"), "exports/frcnn",
      ...            proposals="sliding_windows", proposal_options={"stride": 32, "scales": (64, 128)})
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"export: model must be a keras.Model, got {type(model).__name__}")
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"export: directory {target} exists; pass overwrite=True (zoo export --overwrite) to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"export: {target} exists and is not a directory")
    task = task or infer_task(model)
    if compute_dtype == "float32":
        compute_dtype = None
    _check_options(model, task, batch_size, image_size, compute_dtype, proposals, proposal_options, resize,
                   class_names)
    resize = resize or default_resize(model, task)
    channels, model_size = _model_image_size(model, None if image_size is None else tuple(image_size))

    served = model
    if compute_dtype is not None:
        served = with_compute_dtype(served, compute_dtype)
    if fold_batch_norm:
        served = _fold_batch_norm(served)
    serve, input_names = _serving_function(
        served, task, jit_compile=jit_compile, proposals=proposals, proposal_options=proposal_options,
        model_size=model_size, resize=resize,
    )
    signature = [tf.TensorSpec((batch_size, None, None, channels), tf.uint8, name="input_tensor")]
    if ROIS in input_names:
        signature.append(tf.TensorSpec((batch_size, None, 4), tf.float32, name=ROIS))
    endpoint = tf.function(serve, input_signature=signature, autograph=False)
    if jit_compile:
        _check_compiles(endpoint, signature, model_size)

    # What is saved: the variables the traced function reads (tracked as TensorFlow variables,
    # not through the Keras model, so that TF1-style loaders such as TF Serving and
    # `saved_model_cli run` restore them too), `__call__` (so `tf.saved_model.load(d)(images)`
    # works as the TF Object Detection API's `detect_fn` does) and `serving_default`.
    concrete = endpoint.get_concrete_function()
    module = tf.Module()
    module.served_variables = list(concrete.variables)
    module.__call__ = endpoint
    names = None if class_names is None else [str(name) for name in class_names]
    outputs = concrete.structured_outputs
    metadata = {
        "task": task,
        "model": model.name,
        "class_names": names,
        "label_ids": None if names is None else LABEL_FIRST_ID[task],
        "inputs": {spec.name: {"dtype": spec.dtype.name, "shape": list(spec.shape)} for spec in signature},
        "outputs": {key: {"dtype": value.dtype.name, "shape": value.shape.as_list()} for key, value in outputs.items()},
        "options": {
            "batch_size": batch_size, "image_size": None if model_size is None else list(model_size),
            "resize": resize if model_size is not None else None,
            "jit_compile": bool(jit_compile), "compute_dtype": compute_dtype,
            "fold_batch_norm": bool(fold_batch_norm), "proposals": proposals,
            "proposal_options": _jsonable(proposal_options),
        },
    }
    # Folders of exports killed before their rename (`.NAME.<random>.partial`, nothing written in
    # them for an hour) are removed, or they would stay for good, each as large as a SavedModel.
    write_atomically(target, lambda path: _write(module, endpoint, path, metadata), suffix=".partial",
                     directory=True)
    return target


# The id of the first class name in the outputs: detections count from 1 (the TF OD API's), a
# segmenter's class 0 is the background, a classifier's output 0 is its first class.
LABEL_FIRST_ID = {"detection": 1, "segmentation": 1, "classification": 0}


def _jsonable(value):
    return json.loads(json.dumps(value, default=list)) if value is not None else None


def _check_compiles(endpoint, signature, model_size):
    """Run the serving function once on zeros, so XLA refuses at export time, not when serving."""
    height, width = model_size or (64, 64)
    shapes = [[1 if d is None else d for d in spec.shape] for spec in signature]
    shapes[0][1:3] = [height, width]
    arguments = [tf.zeros(shape, spec.dtype) for shape, spec in zip(shapes, signature)]
    try:
        endpoint(*arguments)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"export: jit_compile=True, but XLA cannot compile this model: {first}") from error


def _write(module, endpoint, path: Path, metadata: dict) -> None:
    names = metadata["class_names"]
    staging = Path(tempfile.mkdtemp(prefix=".label_map.", dir=path.parent)) if names is not None else None
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # not "INFO: Assets written to <the temporary folder>"
    try:
        if staging is not None:
            # An asset of the SavedModel: copied into `assets/` and found again by a client's loader.
            label_map = staging / "label_map.pbtxt"
            label_map.write_text(label_map_text(names, first_id=metadata["label_ids"]), encoding="utf-8")
            module.label_map = tf.saved_model.Asset(str(label_map))
        tf.saved_model.save(module, str(path), signatures={"serving_default": endpoint})
    finally:
        logger.setLevel(level)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    (path / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
