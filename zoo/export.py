"""SavedModel export with serving signatures, and the inference rewrites that serving wants.

    >>> model = zoo.build("resnet50", weights="imagenet")
    >>> zoo.export(model, "exports/resnet50", batch_size=None, fold_batch_norm=True)

The SavedModel's `serving_default` takes `images`, `uint8 [N, H, W, 3]` raw RGB pixels (the
models normalise inside the graph, so the signature only casts to float32), and returns, by
task:

- classification: `probabilities [N, K]` float32 and `classes [N]` int32 (the argmax);
- detection: `detection_boxes [N, D, 4]` float32 `[ymin, xmin, ymax, xmax]` normalised to
  [0, 1] by the image size, `detection_scores [N, D]` float32, `detection_classes [N, D]`
  int32 (1-based, 0 in padding rows), `num_detections [N]` int32 (the TensorFlow Object
  Detection API's names; its classes and counts are float32, ours are integers). A Fast R-CNN
  export takes `rois float32 [N, R, 4]` (pixels, padding rows all zeros) as a second input,
  unless `proposals="sliding_windows"` computes the proposals in the graph;
- segmentation: `logits [N, H', W', K]` float32 as the model returns them and
  `semantic_predictions [N, H, W]` int32, the argmax of the logits resized (bilinear) to the
  image size when the model's logits are smaller.

Only TensorFlow is needed to serve the result: the signature is traced from the Keras model
(`keras.export.ExportArchive`), so the zoo's layers and the NMS are graph ops in the SavedModel.

Options (each checked against the unexported model in tests/zoo/test_export.py):
- `batch_size`: None for a dynamic batch, or a fixed N.
- `image_size`: `(H, W)` to fix the image size; by default it is free where the model allows.
- `jit_compile`: compile the network with XLA. NMS has no XLA kernel, so a detector's network
  (everything before `DetectionPostprocess`) is compiled and the NMS stays outside; a model
  with another op XLA cannot compile is refused at export time with the compiler's message.
- `compute_dtype`: "float16" or "bfloat16" rebuilds the model under Keras' mixed policy
  (float32 variables, float16/bfloat16 compute; the zoo's float32 heads stay float32) and copies
  the weights; outputs are float32 either way.
- `fold_batch_norm`: `fold_batch_norm(model)`, inference batch norm folded into the preceding
  convolution.

Atomicity: the SavedModel is written to a hidden sibling directory and renamed into place; an
existing directory is refused unless `overwrite=True`, and then replaced only after the new
export is complete (a failure leaves the old one as it was).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo.weights import apply_umask, remove_stale_temporaries

TASKS = ("classification", "detection", "segmentation")
COMPUTE_DTYPES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
PROPOSAL_METHODS = ("sliding_windows",)
METADATA_FILE = "zoo_export.json"
DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections")
# Layers that fold into a following BatchNormalization: the axis that carries output channels.
FOLDABLE = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Dense")


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
        if layer["class_name"] != "BatchNormalization" or len(layer.get("inbound_nodes", [])) != 1:
            continue
        axis = layer["config"]["axis"]
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
    gamma = np.asarray(bn_layer.gamma) if bn_layer.scale else 1.0
    beta = np.asarray(bn_layer.beta) if bn_layer.center else 0.0
    mean, variance = np.asarray(bn_layer.moving_mean), np.asarray(bn_layer.moving_variance)
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
    `W * s` and bias `(b - mean) * s + beta`, `s = gamma / sqrt(var + eps)` per output channel.
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
    outputs = model.output
    if isinstance(outputs, dict) and set(DETECTION_KEYS) <= set(outputs):
        return "detection"
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
        if "images" not in inputs:
            raise ValueError(f"export: the model's inputs {sorted(inputs)} have no 'images'")
        return inputs["images"]
    if isinstance(inputs, (list, tuple)):
        raise ValueError("export: a model with several inputs must take them as a dict with 'images'")
    return inputs


def _signature_image_shape(model, batch_size, image_size):
    shape = tuple(_image_input(model).shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"export: the model must take images [N, H, W, 3], its input is {shape}")
    height, width = shape[1:3]
    if image_size is not None:
        for fixed, wanted, side in ((height, image_size[0], "height"), (width, image_size[1], "width")):
            if fixed is not None and fixed != wanted:
                raise ValueError(
                    f"export: image_size={tuple(image_size)} disagrees with the model's fixed input "
                    f"{side} {fixed} (input shape {shape})"
                )
        height, width = image_size
    return (batch_size, height, width, 3)


def _probabilities(model, outputs):
    """Softmax of the classifier's output unless the classifier already applied it."""
    last = model.output._keras_history.operation
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


def _detection_network(model):
    """`(network, postprocess, spec)`: the model up to its NMS layer, compiled apart from it.

    `spec[i]` says where input `i` of the NMS layer comes from: `("output", key)` of the network
    or `("input", key)` of the model.
    """
    from zoo.detection.postprocess import DetectionPostprocess

    post = [layer for layer in model.layers if isinstance(layer, DetectionPostprocess)]
    if len(post) != 1 or len(post[0]._inbound_nodes) != 1:
        raise ValueError(
            "export: jit_compile=True for a detector needs exactly one DetectionPostprocess (NMS) layer, "
            f"which is kept out of XLA; found {len(post)}"
        )
    post = post[0]
    inputs = model.input if isinstance(model.input, dict) else {"images": model.input}
    by_id = {id(tensor): key for key, tensor in inputs.items()}
    spec, outputs = [], {}
    for index, tensor in enumerate(post.input):
        if id(tensor) in by_id:
            spec.append(("input", by_id[id(tensor)]))
        else:
            key = f"postprocess_input_{index}"
            outputs[key] = tensor
            spec.append(("output", key))
    network = keras.Model(model.input, outputs, name=f"{model.name}_network")
    return network, post, spec


def _check_options(model, task, batch_size, image_size, compute_dtype, proposals, proposal_options):
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
    if proposals is not None:
        if proposals not in PROPOSAL_METHODS:
            raise ValueError(f"export: proposals must be None or one of {PROPOSAL_METHODS}, got {proposals!r}")
        if task != "detection" or not isinstance(model.input, dict) or "rois" not in model.input:
            raise ValueError("export: proposals= is for a detector that takes 'rois' (Fast R-CNN)")
    elif proposal_options:
        raise ValueError("export: proposal_options needs proposals='sliding_windows'")


def _serving_function(model, task, *, jit_compile, proposals, proposal_options):
    """`(fn, input_names)`: the serving function of `model` and its argument names."""
    takes_rois = task == "detection" and isinstance(model.input, dict) and "rois" in model.input

    def run_model(inputs):
        return model(inputs, training=False)

    if task == "detection" and jit_compile:
        network, post, spec = _detection_network(model)
        compiled = tf.function(lambda inputs: network(inputs, training=False), jit_compile=True, autograph=False)

        def run_model(inputs):  # noqa: F811 (the XLA variant)
            parts = compiled(inputs)
            post_inputs = [inputs[key] if where == "input" else parts[key] for where, key in spec]
            return post(post_inputs)
    elif jit_compile:
        run_model = tf.function(run_model, jit_compile=True, autograph=False)

    proposal_layer = None
    if proposals == "sliding_windows":
        from zoo.detection.proposals import SlidingWindowProposals

        proposal_layer = SlidingWindowProposals(name="export_proposals", **(proposal_options or {}))

    def images_to_model_inputs(images, rois=None):
        pixels = tf.cast(images, tf.float32)
        if not takes_rois:
            return pixels if not isinstance(model.input, dict) else {"images": pixels}
        if rois is None:
            rois = proposal_layer(pixels)
        return {"images": pixels, "rois": tf.cast(rois, tf.float32)}

    def outputs_of(images, raw):
        if task == "classification":
            probabilities = _probabilities(model, raw)
            return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}
        if task == "segmentation":
            logits = tf.cast(raw, tf.float32)
            size = tf.shape(images)[1:3]
            resized = tf.cond(
                tf.reduce_all(tf.equal(tf.shape(logits)[1:3], size)),
                lambda: logits,
                lambda: tf.image.resize(logits, size, method="bilinear"),
            )
            return {"logits": logits, "semantic_predictions": tf.argmax(resized, axis=-1, output_type=tf.int32)}
        size = tf.cast(tf.shape(images)[1:3], tf.float32)
        scale = tf.concat([size, size], axis=0)
        return {
            "detection_boxes": tf.cast(raw["boxes"], tf.float32) / scale,
            "detection_scores": tf.cast(raw["scores"], tf.float32),
            "detection_classes": tf.cast(raw["classes"], tf.int32),
            "num_detections": tf.cast(raw["num_detections"], tf.int32),
        }

    if takes_rois and proposal_layer is None:
        def serve(images, rois):
            return outputs_of(images, run_model(images_to_model_inputs(images, rois)))

        return serve, ("images", "rois")

    def serve(images):  # noqa: F811 (one image input)
        return outputs_of(images, run_model(images_to_model_inputs(images)))

    return serve, ("images",)


# --------------------------------------------------------------------------- export


def export(
    model: keras.Model,
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    task: str | None = None,
    batch_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    jit_compile: bool = False,
    compute_dtype: str | None = None,
    fold_batch_norm: bool = False,
    proposals: str | None = None,
    proposal_options: dict | None = None,
) -> Path:
    """Export `model` as a SavedModel whose `serving_default` takes uint8 pixels.

    Args:
      model: a zoo model (`zoo.build`, or a `.keras` file from `zoo train`), or any functional
        model of one of the tasks' contracts (see the module docstring).
      directory: where the SavedModel goes.
      overwrite: replace an existing `directory` (only once the new export is complete).
      task: "classification", "detection" or "segmentation"; default: the registry's task of
        the model's name, else guessed from its outputs.
      batch_size: None for a dynamic batch, or the fixed N of the signature.
      image_size: `(H, W)` to fix the signature's image size (default: the model's input
        size, free where it is None).
      jit_compile: compile the network with XLA (a detector's NMS stays outside).
      compute_dtype: None/"float32", "float16" or "bfloat16" (mixed precision).
      fold_batch_norm: fold inference batch norm into the preceding convolutions.
      proposals: for a Fast R-CNN detector, None (the signature takes `rois`) or
        "sliding_windows" (computed in the graph by `SlidingWindowProposals`).
      proposal_options: `SlidingWindowProposals` arguments (`stride`, `scales`,
        `aspect_ratios`, `max_proposals`).

    Returns:
      The SavedModel directory, as a `Path`. It also holds `zoo_export.json`: the task, the
      signature's inputs and outputs, and the options.

    Raises:
      FileExistsError: `directory` exists and `overwrite` is False.
      ValueError: an option out of range or not applicable to the model; `jit_compile=True`
        on a model with an op XLA cannot compile.
      TypeError: `model` is not a Keras model.

    Example:
      >>> zoo.export(zoo.build("fast_rcnn_vgg16", weights="voc.keras"), "exports/frcnn",
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
    _check_options(model, task, batch_size, image_size, compute_dtype, proposals, proposal_options)
    image_shape = _signature_image_shape(model, batch_size, None if image_size is None else tuple(image_size))

    served = model
    if compute_dtype is not None:
        served = with_compute_dtype(served, compute_dtype)
    if fold_batch_norm:
        served = _fold_batch_norm(served)
    serve, input_names = _serving_function(
        served, task, jit_compile=jit_compile, proposals=proposals, proposal_options=proposal_options
    )
    signature = [tf.TensorSpec(image_shape, tf.uint8, name="images")]
    if "rois" in input_names:
        signature.append(tf.TensorSpec((batch_size, None, 4), tf.float32, name="rois"))
    if jit_compile:
        _check_compiles(serve, signature)

    archive = keras.export.ExportArchive()
    archive.track(served)
    endpoint = archive.add_endpoint("serving_default", serve, input_signature=signature)
    metadata = {
        "task": task,
        "model": model.name,
        "inputs": {spec.name: {"dtype": spec.dtype.name, "shape": list(spec.shape)} for spec in signature},
        "outputs": {
            key: {"dtype": value.dtype.name, "shape": value.shape.as_list()}
            for key, value in endpoint.get_concrete_function().structured_outputs.items()
        },
        "options": {
            "batch_size": batch_size, "image_size": None if image_size is None else list(image_size),
            "jit_compile": bool(jit_compile), "compute_dtype": compute_dtype,
            "fold_batch_norm": bool(fold_batch_norm), "proposals": proposals,
            "proposal_options": _jsonable(proposal_options),
        },
    }
    _write_atomically(target, lambda path: _write(archive, path, metadata))
    return target


def _jsonable(value):
    return json.loads(json.dumps(value, default=list)) if value is not None else None


def _check_compiles(serve, signature):
    """Run the serving function once on zeros, so XLA refuses at export time, not when serving."""
    shapes = [[1 if d is None else d for d in spec.shape] for spec in signature]
    shapes[0][1:3] = [max(s, 64) if spec_dim is None else s
                      for s, spec_dim in zip(shapes[0][1:3], signature[0].shape[1:3])]
    arguments = [tf.zeros(shape, spec.dtype) for shape, spec in zip(shapes, signature)]
    try:
        tf.function(serve, autograph=False)(*arguments)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"export: jit_compile=True, but XLA cannot compile this model: {first}") from error


def _write(archive, path: Path, metadata: dict) -> None:
    archive.write_out(str(path), verbose=False)
    (path / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def _write_atomically(target: Path, write) -> None:
    """`write(temporary)` into a hidden sibling of `target`, then rename it to `target`.

    An existing `target` is moved aside first and removed only once the new directory is in
    place; if anything fails, the temporary directory is removed and the old `target` stays.
    Stale temporary folders of killed exports in the same parent are removed first
    (`zoo.weights.remove_stale_temporaries`), and the new folder gets the umask's usual mode.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Folders of exports killed before their rename (`.NAME.<random>.partial`, nothing written in
    # them for an hour) would otherwise stay for good, each as large as a SavedModel.
    remove_stale_temporaries(target.parent, re.compile(r"\..+\.[a-z0-9_]{8}\.partial"))
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    old = None
    try:
        write(temporary)
        apply_umask(temporary, directory=True)  # mkdtemp's 0700 would hide it from a server's user
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.rmdir(old)
            os.replace(target, old)
        try:
            os.replace(temporary, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
                old = None
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
