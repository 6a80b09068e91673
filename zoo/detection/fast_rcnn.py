"""Fast R-CNN with a VGG16, ResNet-50 (R50-C4) or MobileNet-v2 backbone.

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
- the MobileNet-v2 trunk (`faster_rcnn_mobilenetv2`): its last block's map, dilated to stride 16
  (320 channels), -> RoI Align (`crop_and_resize`) 7 x 7 -> two fc layers of 512
  (torchvision's TwoMLPHead at half its width). keras.applications' layer names, so its ImageNet weights load.
All end in a (K + 1)-way softmax (`class_probs`, initialised N(0, 0.01)) and class-specific box
deltas (`box_regression`, N(0, 0.001)) in the (10, 10, 5, 5)-weighted parameterisation.

A backbone family enters as a `DetectorTrunk` in `TRUNKS`: which registered backbone, which of its
feature maps (`zoo.backbones.backbone_features`), and its per-RoI head.

Proposals are the `rois` input: selective search (`zoo.detection.proposals.selective_search`),
sliding windows, or any boxes. Training (RoI sampling, targets, the multi-task loss) is in
`training.detection`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import keras

from layers import RoIPooling
from layers.detection_contract import BOX_DELTAS, CLASS_PROBS, DETECTIONS, FAST_RCNN, IMAGES, ROIS
from zoo.backbones import backbone_features, resnet
from zoo.backbones._common import FeatureMap, check_choice, image_input
from zoo.config import apply_overrides
from zoo.detection.postprocess import ClassBoxDeltas, DetectionPostprocess, FlattenRoIs, UnflattenRoIs
from zoo.registry import get_spec, register

PAPER = "Girshick, Fast R-CNN, ICCV 2015, https://arxiv.org/abs/1504.08083"
FEATURE_STRIDE = 16
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class FastRCNNConfig:
    """Configuration of a Fast R-CNN detector.

    Attributes:
      backbone: a key of `TRUNKS`: "vgg16" (conv5_3), "resnet50" (C4, with conv5 run per RoI),
        "mobilenetv2" (its last map, dilated to stride 16), or any trunk added there.
      num_classes: K, the object classes (the background is added).
      pool_size: the RoI grid, 7 for VGG16 (the paper), 14 for R50-C4 (conv5 halves it).
      method: `layers.RoIPooling`'s "max" (Fast R-CNN's) or "crop_and_resize".
      input_shape: `(H, W, 3)`; H and W may be None (any size of at least 32 pixels).
      fc_units, dropout: the fully connected head's width and dropout rate (VGG16's fc6/fc7).
      nms_iou_threshold: per-class NMS overlap, 0.3 in the paper's test code.
      score_threshold: detections scoring at most this are dropped.
      max_detections: D, detections kept per image.
      box_weights: the (y, x, h, w) weights of the box parameterisation.
      preprocessing: the backbone's in-graph normalisation ("caffe" for both ImageNet models).
    """

    backbone: str = "vgg16"
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
        check_choice(self.backbone, tuple(TRUNKS), argument="backbone")
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
        """`fc_units` and `dropout` size the fully connected RoI head (VGG16, MobileNet-v2); R50-C4
        runs conv5 per RoI instead (`zoo.config.unused_fields`: `zoo describe` hides them, an
        override of them raises)."""
        if TRUNKS[self.backbone].roi_head is fc_roi_head:
            return {}
        reason = f"the fully connected RoI head only, and backbone={self.backbone!r} runs conv5 per RoI"
        return {"fc_units": reason, "dropout": reason}


@dataclasses.dataclass(frozen=True)
class DetectorTrunk:
    """A backbone family as a stride-16 detector uses it: a few lines of data per family.

    Attributes:
      backbone: the registered backbone (`zoo.backbones.backbone_features`), whose layer names,
        and so whose ImageNet weights, the detector's trunk keeps.
      level: the feature map the RPN and the RoIs read, at stride 16.
      roi_head: `(FeatureMap, rois, config) -> [B, N, features]`, the per-RoI head.
      overrides: the backbone config's overrides (`last_level` stops a trunk whose last stage
        the head runs per RoI).
    """

    backbone: str
    level: str
    roi_head: Callable
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def backbone_config(self, config: FastRCNNConfig):
        """The backbone's registered config as the detector builds it (no top, its preprocessing)."""
        options = {key: value for key, value in self.overrides.items() if key != "last_level"}
        return apply_overrides(get_spec(self.backbone).config,
                               {"include_top": False, "preprocessing": config.preprocessing, **options},
                               model_name=self.backbone)

    def features(self, images, config: FastRCNNConfig) -> FeatureMap:
        """The stride-16 `FeatureMap` of raw-pixel `images`."""
        features = backbone_features(self.backbone, images, preprocessing=config.preprocessing, **self.overrides)
        return features[self.level]


def roi_pool(features, rois, config: FastRCNNConfig):
    """`[B, N, pool, pool, channels]`: `layers.RoIPooling` of the stride-16 map, the config's method."""
    return RoIPooling(
        config.pool_size, spatial_scale=1.0 / features.stride, method=config.method, name="roi_pooling"
    )([features.tensor, rois])


def fc_roi_head(features, rois, config: FastRCNNConfig):
    """RoI pool -> flatten -> two fully connected layers (`fc1`, `fc2`): `[B, N, fc_units]`.

    VGG16's fc6/fc7 (keras.applications' `fc1`/`fc2`, ImageNet-initialised by name on a 7 x 7
    pool), and the light trunks' head (torchvision's TwoMLPHead).
    """
    pooled = roi_pool(features, rois, config)
    x = keras.layers.Reshape((-1, config.pool_size * config.pool_size * features.channels), name="flatten")(pooled)
    for name in ("fc1", "fc2"):
        x = keras.layers.Dense(config.fc_units, activation="relu", name=name)(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"{name}_dropout")(x)
    return x


def conv5_roi_head(features, rois, config: FastRCNNConfig):
    """C4 -> RoI pool -> ResNet's conv5 on each RoI -> global average pool: `[B, N, 2048]`."""
    trunk = TRUNKS[config.backbone].backbone_config(config)
    x = FlattenRoIs(name="flatten_rois")(roi_pool(features, rois, config))
    x = resnet.stage(x, resnet.STAGE_FILTERS[3], trunk.depths[3], trunk, stride=2, dilation=1, name="conv5")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return UnflattenRoIs(name="unflatten_rois")([x, rois])


# The detector trunks by `backbone` name; a new one is an entry (README, "Architecture"). Faster
# R-CNN (`zoo.detection.faster_rcnn`) runs the trunk once and feeds both its RPN and the head.
TRUNKS = {
    "vgg16": DetectorTrunk("vgg16", "C4", fc_roi_head),
    "resnet50": DetectorTrunk("resnet50", "C4", conv5_roi_head, {"last_level": 4}),
    # Stride 16 by dilating the last blocks, as DeepLab does; without the 1280-channel Conv_1.
    "mobilenetv2": DetectorTrunk("mobilenetv2", "C5", fc_roi_head, {"output_stride": 16, "last_conv": False}),
}


def detection_outputs(features, rois, images, config: FastRCNNConfig) -> dict:
    """The RoI head on `rois`: `class_probs`, `box_deltas` and the post-processed detections."""
    x = TRUNKS[config.backbone].roi_head(features, rois, config)
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
    outputs = detection_outputs(TRUNKS[config.backbone].features(images, config), rois, images, config)
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
