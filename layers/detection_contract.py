"""What a zoo detector is, answered from the built model: its kind, its inputs, its outputs.

Every question "is this a Fast or a Faster R-CNN, does it take RoIs, which outputs are which"
is answered here, from the model itself (its input names, output keys and layer names), for
`zoo` (the builders name their inputs, outputs and layers with these constants; `predict` and
`export` ask these functions) and `training` (the trainers find the RPN and the head by these
names; the detection task picks its trainer by `takes_rois`) alike. It lives in `layers`
because both packages may import `layers` (the builders in `zoo.detection` included), while
`zoo` imports `training` only for the CLI's train and evaluate verbs. Pure Python: no tensor
is touched.

The contract (the README's "Architecture" describes it in prose):

- Inputs: `IMAGES` `[B, H, W, 3]` raw pixels; a Fast R-CNN also takes `ROIS` `[B, N, 4]`
  pixels (padding rows all zeros) and is called with the dict `{"images", "rois"}`; a Faster
  R-CNN makes its own proposals and takes `{"images"}` alone.
- Outputs, a dict: `DETECTION_OUTPUTS` ("boxes" `[B, D, 4]` pixels, "scores" `[B, D]`,
  "classes" `[B, D]` 1-based, 0 in padding rows, "num_detections" `[B]`), from the layer
  `DETECTIONS` (NMS inside the model); the head's `CLASS_PROBS` `[B, N, K + 1]` (column 0 the
  background) and `BOX_DELTAS` `[B, N, K, 4]`, each the output of the layer of the same name;
  a Faster R-CNN adds `RPN_OBJECTNESS` `[B, A]`, `RPN_BOX_DELTAS` `[B, A, 4]` and `PROPOSALS`
  `[B, N, 4]`, again outputs of layers of those names, and its anchors come from the layer
  `RPN_ANCHORS` (whose input is the feature map that the RPN and the RoI head share).

    >>> detector_kind(zoo.build("faster_rcnn_resnet50"))
    'faster_rcnn'
    >>> takes_rois(zoo.build("fast_rcnn_vgg16")), detector_kind(zoo.build("resnet50"))
    (True, None)
"""

from __future__ import annotations

IMAGES = "images"
ROIS = "rois"

# The post-processed detections: output keys, in the TF Object Detection API's order.
DETECTION_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
# Layer names (and, but for the anchors and the post-processing, output keys).
CLASS_PROBS = "class_probs"
BOX_DELTAS = "box_deltas"
DETECTIONS = "detections"
RPN_ANCHORS = "rpn_anchors"
RPN_OBJECTNESS = "rpn_objectness"
RPN_BOX_DELTAS = "rpn_box_deltas"
PROPOSALS = "proposals"
# What each kind of detector has: the RoI head's layers, and the RPN's beside them.
HEAD_LAYERS = (CLASS_PROBS, BOX_DELTAS)
RPN_LAYERS = (RPN_ANCHORS, RPN_OBJECTNESS, RPN_BOX_DELTAS, PROPOSALS)

FAST_RCNN = "fast_rcnn"
FASTER_RCNN = "faster_rcnn"
DETECTOR_KINDS = (FAST_RCNN, FASTER_RCNN)


def input_names(model) -> tuple[str, ...]:
    """The names `model` is called with: the keys of a dict input, else its input tensors' names."""
    inputs = getattr(model, "input", None)
    if isinstance(inputs, dict):
        return tuple(inputs)
    return tuple(tensor.name for tensor in getattr(model, "inputs", None) or ())


def layer_names(model) -> frozenset[str]:
    """The names of `model`'s top-level layers."""
    return frozenset(layer.name for layer in getattr(model, "layers", ()))


def takes_rois(model) -> bool:
    """Whether `model` takes caller-given `rois` beside its `images` (a Fast R-CNN)."""
    inputs = getattr(model, "input", None)
    return isinstance(inputs, dict) and ROIS in inputs


def is_detector(model) -> bool:
    """Whether `model`'s outputs are a dict with every key of `DETECTION_OUTPUTS`."""
    outputs = getattr(model, "output", None)
    return isinstance(outputs, dict) and set(DETECTION_OUTPUTS) <= set(outputs)


def missing_layers(model, names) -> list[str]:
    """The layers of `names` that `model` lacks, in the order given."""
    present = layer_names(model)
    return [name for name in names if name not in present]


def detector_kind(model) -> str | None:
    """`FAST_RCNN`, `FASTER_RCNN` or None: which detector `model` is.

    A Fast R-CNN takes exactly `{"images", "rois"}` and has the head's layers (`HEAD_LAYERS`);
    a Faster R-CNN takes no `rois` and has the head's and the RPN's layers (`RPN_LAYERS`).
    Anything else (a classifier, a segmenter, a half-built detector) is None.
    """
    if missing_layers(model, HEAD_LAYERS):
        return None
    if takes_rois(model):
        return FAST_RCNN if set(input_names(model)) == {IMAGES, ROIS} else None
    return FASTER_RCNN if not missing_layers(model, RPN_LAYERS) else None


def has_rpn(model) -> bool:
    """Whether `model` is a detector that makes its own proposals (a Faster R-CNN)."""
    return detector_kind(model) == FASTER_RCNN


def num_object_classes(model) -> int | None:
    """K, the object classes of a detector (its `class_probs` output less the background, else the
    layer's of that name), or None where the model shows neither."""
    outputs = getattr(model, "output", None)
    probabilities = outputs.get(CLASS_PROBS) if isinstance(outputs, dict) else None
    if probabilities is None:
        try:
            probabilities = model.get_layer(CLASS_PROBS).output
        except (ValueError, AttributeError, TypeError):
            return None
    columns = probabilities.shape[-1]
    return None if columns is None else int(columns) - 1


__all__ = [
    "BOX_DELTAS",
    "CLASS_PROBS",
    "DETECTIONS",
    "DETECTION_OUTPUTS",
    "DETECTOR_KINDS",
    "FASTER_RCNN",
    "FAST_RCNN",
    "HEAD_LAYERS",
    "IMAGES",
    "PROPOSALS",
    "ROIS",
    "RPN_ANCHORS",
    "RPN_BOX_DELTAS",
    "RPN_LAYERS",
    "RPN_OBJECTNESS",
    "detector_kind",
    "has_rpn",
    "input_names",
    "is_detector",
    "layer_names",
    "missing_layers",
    "num_object_classes",
    "takes_rois",
]
