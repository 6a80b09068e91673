"""ONNX and TFLite files of the zoo's models, beside `zoo.export`'s SavedModel.

    >>> zoo.export_onnx(model, "exports/resnet18.onnx")          # needs the [onnx] extra
    >>> session = onnxruntime.InferenceSession("exports/resnet18.onnx")
    >>> session.run(None, {"input_tensor": images})                # uint8 [N, H, W, 3], any H, W
    >>> zoo.export_tflite(model, "exports/mobilenetv2.tflite")   # TensorFlow's own converter

- **ONNX** (tf2onnx, opset 18) converts the SavedModel's serving function as it is: input
  `input_tensor` uint8 `[N, H, W, C]` of any size, resized in the graph as training resized
  (`layers.image_resize`), the same outputs under the same names (`zoo.export`'s docstring).
  TensorFlow's antialiased bilinear resize is the `ScaleAndTranslate` op, which tf2onnx does not
  convert; here it becomes ONNX `Resize` (linear, `antialias=1`, half-pixel, `exclude_outside=1`),
  the same filter: within 5e-3 of TensorFlow's on 0..255 pixels. A graph that tf2onnx leaves with
  an op ONNX does not define is refused with the ops named (the zoo's detectors: see the README).
- **TFLite** (`tf.lite.TFLiteConverter`, built-in ops only): TFLite has no antialiased resize,
  so the file takes float32 `images [N, H, W, C]` raw pixels (0..255) already at the model's
  input size, resized by the client as `layers.image_resize` does, and returns the same outputs
  at that size (`semantic_predictions [N, H, W]` of the model's input). The batch is 1 by
  default, as a phone runs it.

Both write the file atomically (a hidden sibling, renamed at the end; an existing file is kept
unless `overwrite=True`). The ONNX file's metadata (`metadata_props["zoo_export"]`, JSON) holds
what `zoo_export.json` holds for a SavedModel: task, inputs, outputs, class names, options.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from layers.files import write_atomically
from zoo.saved_model import LABEL_FIRST_ID, export, serving_function

FORMATS = ("saved_model", "onnx", "tflite")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}
# Opset 18 is the first with `Resize(antialias=1)` and its `axes`; onnxruntime >= 1.14 runs it.
ONNX_OPSET = 18
METADATA_KEY = "zoo_export"


# --------------------------------------------------------------------------- ONNX


def _antialiased_resize(ctx, node, name, args):
    """tf2onnx handler: TensorFlow's `ScaleAndTranslate` as ONNX `Resize` over axes 1, 2.

    `tf.image.resize(antialias=True)` (bilinear: the "triangle" kernel) emits
    `ScaleAndTranslate(images, size, scale=size/input, translation=0)`; ONNX's linear `Resize`
    with `antialias=1` widens the same triangle filter by the downscale factor, samples at
    half-pixel centres and, with `exclude_outside=1`, renormalises the weights inside the image
    as TensorFlow does. Any other use of the op (another kernel, a translation) is refused.
    """
    from onnx import TensorProto
    from tf2onnx import utils

    kernel = node.get_attr_str("kernel_type")
    translation = ctx.get_node_by_output(node.input[3])
    if kernel != "triangle" or translation is None or not translation.is_const() or \
            np.any(translation.get_tensor_value(as_list=False) != 0):
        raise ValueError(f"export_onnx: {node.name}: only tf.image.resize(method='bilinear', antialias=True) "
                         f"converts (ScaleAndTranslate with kernel_type='triangle' and no translation); got {kernel!r}")
    antialias = 1 if node.get_attr_value("antialias", True) else 0
    sizes = ctx.make_node("Cast", [node.input[1]], attr={"to": TensorProto.INT64},
                          name=utils.make_name(f"{node.name}_sizes")).output[0]
    for key in list(node.attr):
        del node.attr[key]
    node.type, node.domain = "Resize", ""
    ctx.replace_inputs(node, [node.input[0], "", "", sizes])
    node.set_attr("mode", "linear")
    node.set_attr("antialias", antialias)
    node.set_attr("axes", [1, 2])
    node.set_attr("coordinate_transformation_mode", "half_pixel")
    node.set_attr("exclude_outside", 1)
    return node


def _undefined_ops(graph, found=None):
    """`{op_type: first node name}` of the nodes (subgraphs included) that ONNX does not define:
    TensorFlow ops tf2onnx left as they were, which onnxruntime refuses to load."""
    import onnx

    found = {} if found is None else found
    for node in graph.node:
        if not onnx.defs.has(node.op_type, node.domain):
            found.setdefault(node.op_type, node.name)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                _undefined_ops(subgraph, found)
    return found


def _import_onnx_tools():
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as error:
        raise ImportError(f"export_onnx needs tf2onnx and onnx: pip install 'zoo[onnx]' ({error})") from error
    return tf2onnx


def export_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    task: str | None = None,
    batch_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    resize: str | None = None,
    class_names=None,
    proposals: str | None = None,
    proposal_options: dict | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export `model` as an ONNX file whose input is the SavedModel's: uint8 images of any size.

    Args:
      model: a zoo model, or a functional model of one of `zoo.export`'s task contracts.
      path: the `.onnx` file to write.
      overwrite: replace an existing file (only once the new one is complete).
      task, batch_size, image_size, resize, class_names, proposals, proposal_options: as
        `zoo.export`'s.
      opset: the ONNX opset, at least 18 (the antialiased `Resize`).

    Returns:
      `path`, as a `Path`.

    Raises:
      ImportError: tf2onnx or onnx is not installed (`pip install 'zoo[onnx]'`).
      FileExistsError: `path` exists and `overwrite` is False, or it is a directory.
      ValueError: `path` does not end with `.onnx`, an option out of range, or a model whose
        graph tf2onnx cannot convert (the ops it left are named).
    """
    target = _check_target(path, "onnx", overwrite)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < ONNX_OPSET:
        raise ValueError(f"export_onnx: opset must be an integer >= {ONNX_OPSET} (antialiased Resize), got {opset!r}")
    tf2onnx = _import_onnx_tools()
    function, signature, settings = serving_function(
        model, task=task, batch_size=batch_size, image_size=image_size, resize=resize,
        proposals=proposals, proposal_options=proposal_options,
    )
    names = _check_class_names(class_names)
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # its per-node errors: the refusal below names the ops
    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset,
            custom_op_handlers={"ScaleAndTranslate": (_antialiased_resize, [])},
        )
    finally:
        logger.setLevel(level)
    undefined = _undefined_ops(proto.graph)
    if undefined:
        listed = ", ".join(f"{op} (at {node})" for op, node in sorted(undefined.items()))
        raise ValueError(
            f"export_onnx: tf2onnx {tf2onnx.__version__} cannot convert {model.name!r}: it left TensorFlow ops "
            f"that ONNX does not define: {listed}"
        )
    metadata = _metadata(model, settings, signature, names, options={
        "format": "onnx", "opset": opset, "batch_size": batch_size, "proposals": proposals,
        "proposal_options": _jsonable(proposal_options),
    })
    metadata["outputs"] = {output.name: _value_info(output) for output in proto.graph.output}
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = f"zoo (tf2onnx {tf2onnx.__version__})"
    _write_file_atomically(target, proto.SerializeToString())
    return target


def _value_info(value):
    from onnx import helper

    dims = value.type.tensor_type.shape.dim
    return {"dtype": helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name,
            "shape": [dim.dim_value if dim.HasField("dim_value") else None for dim in dims]}


# --------------------------------------------------------------------------- TFLite


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    task: str | None = None,
    batch_size: int | None = 1,
    image_size: tuple[int, int] | None = None,
    resize: str | None = None,
) -> Path:
    """Export `model` as a TFLite file: float32 `images [N, H, W, C]` at the model's input size.

    The client resizes (`resize`: the model family's as `zoo describe` says, else the run's) as
    `layers.image_resize` does; the outputs are the SavedModel's at the model's size.

    Args:
      model: a zoo model with a fixed input size (or `image_size`).
      path: the `.tflite` file to write.
      overwrite: replace an existing file (only once the new one is complete).
      task, image_size: as `zoo.export`'s.
      batch_size: the fixed N (1 by default), or None (the interpreter's `resize_tensor_input`).
      resize: recorded for the client only (the file does not resize); checked as `zoo.export`'s.

    Returns:
      `path`, as a `Path`.

    Raises:
      FileExistsError: `path` exists and `overwrite` is False, or it is a directory.
      ValueError: `path` does not end with `.tflite`, an option out of range, no fixed input
        size, or an op that TFLite's built-in ops do not have (the converter's message).
    """
    target = _check_target(path, "tflite", overwrite)
    function, signature, _ = serving_function(
        model, task=task, batch_size=batch_size, image_size=image_size, resize=resize, resize_in_graph=False,
    )
    # From a SavedModel, as Keras' own LiteRT export does: the converter then freezes the
    # variables (from a concrete function it kept them as variables, read uninitialised).
    staging = Path(tempfile.mkdtemp(prefix="zoo-tflite-"))
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        module = tf.Module()
        module.served_variables = list(function.get_concrete_function().variables)
        module.__call__ = function
        tf.saved_model.save(module, str(staging), signatures={"serving_default": function})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(staging), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # ConverterError, its summary after pages of MLIR locations
            lines = [line.strip() for line in str(error).strip().splitlines()]
            summary = [line for line in lines if line.startswith(("TF Select ops:", "Custom ops:"))] or lines[:1]
            raise ValueError(f"export_tflite: TFLite's built-in ops cannot run {model.name!r}: "
                             f"{'; '.join(summary)} (ops the converter would need from TensorFlow)") from error
    finally:
        logger.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
    _write_file_atomically(target, flatbuffer)
    return target


# --------------------------------------------------------------------------- any format


def export_as(model: keras.Model, path: str | os.PathLike, *, format: str = "saved_model", **options) -> Path:
    """`zoo.export` (format "saved_model", a directory), `export_onnx` or `export_tflite` (a file).

    Raises:
      ValueError: an unknown `format`.
      TypeError: an option the format does not take (`jit_compile` is the SavedModel's only).
    """
    exporters = {"saved_model": export, "onnx": export_onnx, "tflite": export_tflite}
    if format not in exporters:
        raise ValueError(f"export: format must be one of {FORMATS}, got {format!r}")
    import inspect

    accepted = [name for name in inspect.signature(exporters[format]).parameters if name not in ("model", "directory", "path")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"export: format {format!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return exporters[format](model, path, **options)


# --------------------------------------------------------------------------- helpers


def _check_target(path, format, overwrite) -> Path:
    target = Path(path)
    suffix = SUFFIXES[format]
    if target.suffix != suffix:
        raise ValueError(f"export_{format}: path must end with {suffix}, got {str(path)!r}")
    if target.is_dir():
        raise FileExistsError(f"export_{format}: {target} is a directory")
    if target.exists() and not overwrite:
        raise FileExistsError(f"export_{format}: {target} exists; pass overwrite=True (zoo export --overwrite) to replace it")
    return target


def _check_class_names(class_names):
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
        raise ValueError(f"export: class_names must be a sequence of names, got {class_names!r}")
    return list(class_names)


def _jsonable(value):
    return json.loads(json.dumps(value, default=list)) if value is not None else None


def _metadata(model, settings, signature, names, *, options):
    task, size = settings["task"], settings["image_size"]
    return {
        "task": task,
        "model": model.name,
        "class_names": names,
        "label_ids": None if names is None else LABEL_FIRST_ID[task],
        "inputs": {spec.name: {"dtype": spec.dtype.name, "shape": list(spec.shape)} for spec in signature},
        "options": {"image_size": None if size is None else list(size),
                    "resize": settings["resize"] if size is not None else None, **options},
    }


def _write_file_atomically(target: Path, data: bytes) -> None:
    """`data` into a hidden sibling of `target` (`.NAME.<random>.partial`), synced to the disk
    and renamed to `target` once complete (`layers.files.write_atomically`)."""

    def write(temporary):
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())

    write_atomically(target, write, suffix=".partial")
