"""torchvision state dicts (`.pth`) into models whose layers carry torchvision's module paths.

`faster_rcnn_resnet50_fpn` (`zoo.detection.faster_rcnn_fpn`) names every layer with weights by
its torchvision module path, so a state-dict key `<path>.<variable>` is the variable `<variable>`
of the layer `<path>` (`torchvision_keys`): Conv2D `weight` [O, I, kh, kw] -> `kernel`
[kh, kw, I, O], Dense `weight` [O, I] -> `kernel` [I, O], biases and FrozenBN's four buffers as
they are. The box regressions keep torchvision's channel layout in the weights (the model
reorders their outputs), so nothing else is permuted.

`import_torchvision_state_dict(model, path)` is the importer of the manifest's `torchvision`
entries (torchvision's published `fasterrcnn_resnet50_fpn_coco-258fb6c6.pth`), registered with
`zoo.weights.register_importer`, so `zoo.build("faster_rcnn_resnet50_fpn", weights="coco")` and
`weights="/path/to/file.pth"` load through it. The file is read by `zoo.torch_checkpoint`
(no torch, nothing in the file is run).

    >>> model = zoo.build("faster_rcnn_resnet50_fpn", weights="coco")
    >>> tuned = zoo.build("faster_rcnn_resnet50_fpn", weights="coco", num_classes=3)
    >>> tuned.weights_load_report.missing     # the box predictor starts from its initialisation
    ['roi_heads.box_predictor.cls_score', 'roi_heads.box_predictor.bbox_pred']
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from zoo import weights as weights_lib
from zoo.torch_checkpoint import read_state_dict

# torchvision's box predictor: its shapes follow the number of classes, so a model built for
# other classes (fine-tuning) keeps its own and reports them missing.
BOX_PREDICTOR = ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred")
# A BatchNorm2d's step counter, which torchvision's FrozenBatchNorm2d drops when loading too.
IGNORED_SUFFIXES = (".num_batches_tracked",)


def torchvision_keys(model) -> dict:
    """`{state-dict key: (layer name, variable index, torchvision shape)}` for every weight of
    `model` (the naming rule of the module docstring): the layer's name, then the variable's
    torchvision name (a Conv2D's or Dense's `kernel` is `weight`, in torchvision's layout `[O, I,
    kh, kw]` / `[O, I]`; FrozenBatchNormalization's names are torchvision's already)."""
    from layers.compat import flatten_layers

    keys = {}
    for layer in flatten_layers(model, include_self=False):
        for index, variable in enumerate(layer.weights if not isinstance(layer, keras.Model) else ()):
            name = variable.name.split("/")[-1]
            shape = tuple(variable.shape)
            if name == "kernel":
                name = "weight"
                shape = (shape[-1], shape[-2], *shape[:-2]) if len(shape) == 4 else (shape[1], shape[0])
            keys[f"{layer.name}.{name}"] = (layer.name, index, shape)
    return keys


def to_keras_layout(value: np.ndarray) -> np.ndarray:
    """A torchvision array in Keras's layout: `[O, I, kh, kw]` -> `[kh, kw, I, O]`, `[O, I]` ->
    `[I, O]`, vectors as they are."""
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def _other_classes(model_keys: dict, state: dict) -> bool:
    """Whether the file's box predictor is the model's for another number of classes: the same
    representation size, `cls_score` [C' + 1, R] and `bbox_pred` [4 (C' + 1), R] with C' not the
    model's C."""
    score, box = (f"{BOX_PREDICTOR[0]}.weight", f"{BOX_PREDICTOR[1]}.weight")
    if not all(key in model_keys and key in state for key in (score, box)):
        return False
    (classes, width), (boxes, box_width) = state[score].shape, state[box].shape
    wanted_classes, wanted_width = model_keys[score][2]
    return (width == box_width == wanted_width and boxes == 4 * classes and classes != wanted_classes
            and state.get(f"{BOX_PREDICTOR[0]}.bias", np.zeros(classes)).shape == (classes,)
            and state.get(f"{BOX_PREDICTOR[1]}.bias", np.zeros(boxes)).shape == (boxes,))


def load_state_dict(model, state: dict, *, source: str = "<state dict>") -> weights_lib.LoadReport:
    """Assign the torchvision state dict `state` (`{key: array in torch's layout}`) to `model` by
    name, once every shape has been checked; returns the `LoadReport`.

    A layer loads when the file has all of its variables. Model layers the file lacks are
    `missing`, file layers (module paths) the model lacks are `unused`. A box predictor made for
    another number of classes (a model built to fine-tune on its own classes) is both: the
    model's `cls_score` / `bbox_pred` stay as initialised.

    Raises:
      ValueError: a key whose shape differs from the model's (naming the key and both shapes),
        a layer of which the file has some variables but not all, or a file that names none of
        the model's layers. The model is then unchanged.
    """
    model_keys = torchvision_keys(model)
    state = {key: value for key, value in state.items() if not key.endswith(IGNORED_SUFFIXES)}
    skipped = set(BOX_PREDICTOR) if _other_classes(model_keys, state) else set()
    by_layer: dict[str, list] = {}
    for key, (layer_name, index, shape) in model_keys.items():
        by_layer.setdefault(layer_name, []).append((key, index, shape))
    report = weights_lib.LoadReport(source=str(source))
    assignments = []
    for layer_name, entries in by_layer.items():
        present = [key for key, _, _ in entries if key in state]
        if layer_name in skipped or not present:
            report.missing.append(layer_name)
            continue
        if len(present) != len(entries):
            absent = [key for key, _, _ in entries if key not in state]
            raise ValueError(f"{source}: has {', '.join(present)} but not {', '.join(absent)}; the model is unchanged")
        for key, index, shape in entries:
            found = tuple(state[key].shape)
            if found != shape:
                raise ValueError(
                    f"{source}: {key} has shape {list(found)} in the file, the model expects {list(shape)} "
                    f"(torchvision's layout); the model is unchanged"
                )
            assignments.append((layer_name, index, key))
        report.loaded.append(layer_name)
    taken = {key for key in model_keys if key in state and model_keys[key][0] not in skipped}
    if not taken and state:
        raise ValueError(
            f"{source}: none of its {len(state)} keys (e.g. {next(iter(state))!r}) names a weight of {model.name}, "
            f"whose layers are named by torchvision's module paths (e.g. {next(iter(model_keys), 'none')!r})"
        )
    report.unused = sorted({key.rsplit(".", 1)[0] for key in state if key not in taken})
    # Assign only once everything has been checked, so that a refused file changes nothing.
    from layers.compat import flatten_layers

    layers = {layer.name: layer for layer in flatten_layers(model, include_self=False)}
    for layer_name, index, key in assignments:
        variable = layers[layer_name].weights[index]
        variable.assign(to_keras_layout(state[key]).astype(variable.dtype))
    return report


def import_torchvision_state_dict(model, path: str | os.PathLike) -> weights_lib.LoadReport:
    """The `torchvision` importer: read the `.pth` at `path` (`zoo.torch_checkpoint.read_state_dict`,
    without torch) and `load_state_dict` it into `model`.

    Raises:
      ValueError: the file is not a readable state dict (`TorchCheckpointError`), or does not fit
        the model (see `load_state_dict`); the model is unchanged.
    """
    return load_state_dict(model, read_state_dict(path), source=str(Path(path)))


weights_lib.register_importer("torchvision", import_torchvision_state_dict)


__all__ = ["BOX_PREDICTOR", "import_torchvision_state_dict", "load_state_dict", "to_keras_layout", "torchvision_keys"]
