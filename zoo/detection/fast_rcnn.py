"""Fast R-CNN with a VGG16 or ResNet-50 (R50-C4) backbone.

Paper: Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083. The R50-C4 head
(conv5 on each pooled RoI) is He et al., "Deep Residual Learning", https://arxiv.org/abs/1512.03385,
appendix A.

Shapes: B images of H x W pixels, N RoIs per image (`[ymin, xmin, ymax, xmax]` in pixels,
padding rows all zeros), K object classes, D detections per image. Class 0 is the background;
object classes are 1 ... K in every output.

The model:

    images [B, H, W, 3] raw pixels ─ backbone to stride 16 ─┐
    rois   [B, N, 4] pixels ────────────────────────────────┴─ RoIPooling ─ head ─┬─ class_probs [B, N, K + 1]
                                                                                  ├─ box_deltas  [B, N, K, 4]
                                                     DetectionPostprocess (NMS) ──┴─ boxes, scores, classes,
                                                                                     num_detections

- `fast_rcnn_vgg16`: conv5_3 (stride 16) -> RoIPooling 7 x 7 -> fc6, fc7 (4096, ReLU, dropout
  0.5). fc6 and fc7 are named `fc1` and `fc2`, keras.applications' names of VGG16's dense
  layers, and take the flattened 7 x 7 x 512 pool in the same order, so ImageNet `.h5` weights
  initialise them by name, as the paper initialises fc6/fc7 from the ImageNet VGG16.
- `fast_rcnn_resnet50`: ResNet-50 up to conv4 (C4, stride 16) -> RoIPooling 14 x 14 -> conv5
  (stride 2, keras.applications' names, so it too loads ImageNet weights) -> global average
  pooling.
Both end in a (K + 1)-way softmax (`class_probs`, initialised N(0, 0.01)) and class-specific box
deltas (`box_regression`, N(0, 0.001)) in the (10, 10, 5, 5)-weighted parameterisation.

Proposals are the `rois` input: selective search (`zoo.detection.proposals.selective_search`),
sliding windows, or any boxes. Training (RoI sampling, targets, the multi-task loss) is in
`training.detection`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import keras

from layers import RoIPooling
from layers.detection_contract import BOX_DELTAS, CLASS_PROBS, DETECTIONS, FAST_RCNN, IMAGES, ROIS
from zoo.backbones import resnet, vgg
from zoo.backbones._common import check_choice, image_input
from zoo.detection.postprocess import ClassBoxDeltas, DetectionPostprocess, FlattenRoIs, UnflattenRoIs
from zoo.registry import register

PAPER = "Girshick, Fast R-CNN, ICCV 2015, https://arxiv.org/abs/1504.08083"
BACKBONES = ("vgg16", "resnet50")
FEATURE_STRIDE = 16
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class FastRCNNConfig:
    """Configuration of a Fast R-CNN detector.

    Attributes:
      backbone: "vgg16" (conv5_3) or "resnet50" (C4, with conv5 run per RoI).
      num_classes: K, the object classes (the background is added).
      pool_size: the RoI grid, 7 for VGG16 (the paper), 14 for R50-C4 (conv5 halves it).
      method: `layers.RoIPooling`'s "max" (Fast R-CNN's) or "crop_and_resize".
      input_shape: `(H, W, 3)`; H and W may be None (any size of at least 32 pixels).
      fc_units, dropout: the VGG16 head's fc6/fc7 width and dropout rate.
      nms_iou_threshold: per-class NMS overlap, 0.3 in the paper's test code.
      score_threshold: detections scoring at most this are dropped.
      max_detections: D, detections kept per image.
      box_weights: the (y, x, h, w) weights of the box parameterisation.
      preprocessing: the backbone's in-graph normalisation ("caffe" for both ImageNet models).
    """

    backbone: Literal["vgg16", "resnet50"] = "vgg16"
    num_classes: int = 20
    pool_size: int = 7
    method: Literal["max", "crop_and_resize"] = "max"
    input_shape: tuple[int | None, ...] = (None, None, 3)
    fc_units: int = 4096
    dropout: float = 0.5
    nms_iou_threshold: float = 0.3
    score_threshold: float = 0.05
    max_detections: int = 100
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    preprocessing: str | None = "caffe"
    # What the built model is (`layers.detection_contract.detector_kind`), known before it is
    # built (`zoo.detection.sizing.has_rpn`); a class constant, neither a field nor an override.
    detector_kind: ClassVar[str] = FAST_RCNN

    def __post_init__(self):
        check_choice(self.backbone, BACKBONES, argument="backbone")
        check_choice(self.method, ("max", "crop_and_resize"), argument="method")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if not 1 <= self.pool_size <= 64:
            raise ValueError(f"pool_size must be in [1, 64], got {self.pool_size}")
        if self.backbone == "resnet50" and self.pool_size % 2:
            raise ValueError(f"pool_size must be even for resnet50 (conv5 strides by 2), got {self.pool_size}")
        if len(self.input_shape) != 3 or self.input_shape[2] != 3:
            raise ValueError(f"input_shape must be (height, width, 3), got {self.input_shape}")
        for size in self.input_shape[:2]:
            if size is not None and size < MIN_INPUT_SIZE:
                raise ValueError(f"input_shape {self.input_shape}: sides must be at least {MIN_INPUT_SIZE} pixels")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.nms_iou_threshold <= 1.0:
            raise ValueError(f"nms_iou_threshold must be in [0, 1], got {self.nms_iou_threshold}")
        if self.max_detections < 1 or self.fc_units < 1:
            raise ValueError("max_detections and fc_units must be positive integers")
        if len(self.box_weights) != 4 or min(self.box_weights) <= 0:
            raise ValueError(f"box_weights must be four positive numbers, got {self.box_weights}")

    def unused_fields(self) -> dict[str, str]:
        """`fc_units` and `dropout` size the VGG16 head's fc6/fc7; R50-C4 runs conv5 per RoI instead
        (`zoo.config.unused_fields`: `zoo describe` hides them, an override of them raises)."""
        if self.backbone == "vgg16":
            return {}
        reason = f"the VGG16 head's fc6/fc7 only, and backbone={self.backbone!r} runs conv5 per RoI"
        return {"fc_units": reason, "dropout": reason}


def vgg16_trunk(images, config: FastRCNNConfig):
    """VGG16 to conv5_3 (stride 16): the `FeatureMap` the RoIs are pooled from."""
    trunk = vgg.VGGConfig(include_top=False, preprocessing=config.preprocessing)
    return vgg.vgg_features(trunk, images)["C4"]


def vgg16_roi_head(features, rois, config: FastRCNNConfig):
    """conv5_3 -> RoIPooling -> fc6 (`fc1`), fc7 (`fc2`): `[B, N, fc_units]`."""
    pooled = RoIPooling(
        config.pool_size, spatial_scale=1.0 / features.stride, method=config.method, name="roi_pooling"
    )([features.tensor, rois])
    x = keras.layers.Reshape((-1, config.pool_size * config.pool_size * features.channels), name="flatten")(pooled)
    for name in ("fc1", "fc2"):
        x = keras.layers.Dense(config.fc_units, activation="relu", name=name)(x)
        x = keras.layers.Dropout(config.dropout, name=f"{name}_dropout")(x)
    return x


def _resnet50_trunk_config(config: FastRCNNConfig):
    return dataclasses.replace(resnet.resnet50(), include_top=False, preprocessing=config.preprocessing)


def resnet50_trunk(images, config: FastRCNNConfig):
    """ResNet-50 to conv4 (C4, stride 16): the `FeatureMap` the RoIs are pooled from."""
    return resnet.resnet_features(_resnet50_trunk_config(config), images, last_level=4)["C4"]


def resnet50_roi_head(features, rois, config: FastRCNNConfig):
    """C4 -> RoIPooling -> conv5 on each RoI -> global average pool: `[B, N, 2048]`."""
    trunk = _resnet50_trunk_config(config)
    pooled = RoIPooling(
        config.pool_size, spatial_scale=1.0 / features.stride, method=config.method, name="roi_pooling"
    )([features.tensor, rois])
    x = FlattenRoIs(name="flatten_rois")(pooled)
    x = resnet.stage(x, resnet.STAGE_FILTERS[3], trunk.depths[3], trunk, stride=2, dilation=1, name="conv5")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return UnflattenRoIs(name="unflatten_rois")([x, rois])


# backbone -> (images -> stride-16 FeatureMap, (FeatureMap, rois) -> per-RoI features). Faster
# R-CNN (`zoo.detection.faster_rcnn`) runs the trunk once and feeds both its RPN and the head.
TRUNKS = {"vgg16": vgg16_trunk, "resnet50": resnet50_trunk}
ROI_HEADS = {"vgg16": vgg16_roi_head, "resnet50": resnet50_roi_head}


def detection_outputs(features, rois, images, config: FastRCNNConfig) -> dict:
    """The RoI head on `rois`: `class_probs`, `box_deltas` and the post-processed detections."""
    x = ROI_HEADS[config.backbone](features, rois, config)
    classes = config.num_classes
    # float32 heads: a float16 softmax and the decoded boxes would lose the precision NMS needs.
    class_probs = keras.layers.Dense(
        classes + 1, activation="softmax", dtype="float32", name=CLASS_PROBS,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
    )(x)
    box_regression = keras.layers.Dense(
        4 * classes, dtype="float32", name="box_regression",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
    )(x)
    box_deltas = ClassBoxDeltas(classes, name=BOX_DELTAS)(box_regression)
    detections = DetectionPostprocess(
        max_detections=config.max_detections, iou_threshold=config.nms_iou_threshold,
        score_threshold=config.score_threshold, box_weights=config.box_weights, name=DETECTIONS,
    )([class_probs, box_deltas, rois, images])
    return {CLASS_PROBS: class_probs, BOX_DELTAS: box_deltas, **detections}


def build_fast_rcnn(config: FastRCNNConfig, *, name: str = "fast_rcnn") -> keras.Model:
    """A Fast R-CNN detector: `{"images", "rois"}` -> head outputs and detections (see module)."""
    images = image_input(config.input_shape)
    rois = keras.Input((None, 4), name=ROIS)
    outputs = detection_outputs(TRUNKS[config.backbone](images, config), rois, images, config)
    return keras.Model({IMAGES: images, ROIS: rois}, outputs, name=name)


def _register(name):
    return register(name, task="detection", builder=build_fast_rcnn, paper=PAPER)


@_register("fast_rcnn_vgg16")
def fast_rcnn_vgg16() -> FastRCNNConfig:
    """Fast R-CNN on VGG16's conv5_3: RoI max pooling 7 x 7, fc6/fc7, 20 VOC classes."""
    return FastRCNNConfig(backbone="vgg16", pool_size=7)


@_register("fast_rcnn_resnet50")
def fast_rcnn_resnet50() -> FastRCNNConfig:
    """Fast R-CNN R50-C4: ResNet-50 C4, RoI max pooling 14 x 14, conv5 per RoI, 20 VOC classes."""
    return FastRCNNConfig(backbone="resnet50", pool_size=14)
