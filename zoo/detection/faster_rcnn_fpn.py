"""Faster R-CNN with a ResNet-50 FPN backbone, torchvision's `fasterrcnn_resnet50_fpn` exactly.

Papers: Ren et al., "Faster R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497; Lin et al.,
"Feature Pyramid Networks for Object Detection", CVPR 2017, https://arxiv.org/abs/1612.03144.
The architecture, defaults and arithmetic are torchvision's
(`torchvision/models/detection/faster_rcnn.py`, `rpn.py`, `roi_heads.py`, `transform.py`,
`anchor_utils.py`, `ops/feature_pyramid_network.py`, `ops/poolers.py`).

Shapes: B images of H x W pixels (the input), resized inside the graph to h x w (shorter side
800, longer at most 1333) and padded to Hp x Wp (multiples of 32); pyramid maps P2 ... P6
(strides 4 ... 32, P6 by max pooling P5); A = 3 anchors per cell (one size per level, three
aspect ratios), P anchors per image over all levels; N proposals; K object classes (torchvision's
91 is K + 1: its class 0 is the background, as here); D detections.

    images [B, H, W, 3] pixels ─ transform (/255, ImageNet mean/std, resize, pad to 32) ─ ResNet-50
      (FrozenBN) ─ C2..C5 ─ FPN ─ P2..P6 ─┬─ RPN head (shared) ─ rpn_objectness [B, P], rpn_box_deltas [B, P, 4]
                                           │    └─ proposals (per-level top-k, NMS per level) [B, N, 4]
                                           └─ RoI Align 7x7 on P2..P5 by level ─ fc6, fc7 (1024) ─ class_probs,
                                                box_deltas ─ detections (boxes in input pixels)

Everything before `detections` is in the resized image's pixels (h x w), as in torchvision; the
detections' boxes are mapped back to the input image (torchvision's `transform.postprocess`).

Layer names (the weight importer's rule): every layer with weights is named by its torchvision
module path, so the state-dict key `<path>.<variable>` is the variable `<variable>` of the layer
`<path>`: Conv2D `weight` -> `kernel` (transposed `[O, I, kh, kw]` -> `[kh, kw, I, O]`), `bias`
-> `bias`; Dense `weight` -> `kernel` (`[O, I]` -> `[I, O]`; fc6 takes its input flattened in
torchvision's channel-first order, so no permutation is needed); `FrozenBatchNormalization`
keeps torchvision's four names. The box regressions keep torchvision's channel layout ((dx, dy,
dw, dh) per anchor or class, background class included) and are reordered after them.
Exceptions: `rpn.head.conv.0.0` is one layer (torchvision's Conv2dNormActivation inside a
Sequential), `backbone.fpn.inner_blocks.{i}.0` and `backbone.fpn.layer_blocks.{i}.0` likewise.
`zoo.detection.torchvision_weights` imports torchvision's state dicts by this rule (the manifest's
`faster_rcnn_resnet50_fpn.coco`: torchvision's published COCO weights).

Differences from torchvision: a batch is one tensor, so all its images share one size (torchvision
resizes each image of a list); the zoo's NMS (`layers.boxes.padded_nms`) replaces torchvision's,
with the same selection.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf

from layers import boxes as box_ops
from layers.detection_contract import (
    BOX_DELTAS, CLASS_PROBS, DETECTIONS, FASTER_RCNN, IMAGES, PROPOSALS, RPN_ANCHORS, RPN_BOX_DELTAS, RPN_OBJECTNESS,
)
from layers.frozen_batch_norm import FrozenBatchNormalization
from layers.detection_transform import GeneralizedRCNNTransform, resized_size  # noqa: F401
from layers.roi_align import MultiLevelRoIAlign
from zoo.backbones._common import image_input
from zoo.detection.rpn import RPN_BOX_WEIGHTS  # (1, 1, 1, 1)
# The naming rule's key map, and the `torchvision` weights importer (registered on import).
from zoo.detection.torchvision_weights import torchvision_keys
from zoo.registry import register

PAPER = ("Ren et al., Faster R-CNN, NeurIPS 2015 (arXiv:1506.01497), with the FPN of Lin et al., CVPR 2017 "
         "(arXiv:1612.03144); torchvision's fasterrcnn_resnet50_fpn")
PYRAMID_LEVELS = (2, 3, 4, 5, 6)
ROI_LEVELS = (2, 3, 4, 5)
STAGE_FILTERS = (64, 128, 256, 512)
STAGE_DEPTHS = (3, 4, 6, 3)
TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")
HEAD_BOX_WEIGHTS = box_ops.DEFAULT_WEIGHTS  # (10, 10, 5, 5), torchvision's and the zoo's heads'


@dataclasses.dataclass(frozen=True)
class FasterRCNNFPNConfig:
    """torchvision's `fasterrcnn_resnet50_fpn` arguments, with its defaults.

    Attributes:
      num_classes: K object classes (torchvision's `num_classes` less its background): 90.
      input_shape: `(H, W, 3)`, any size by default.
      min_size, max_size: the resize rule, shorter side 800 unless the longer would pass 1333.
      trainable_backbone_layers: ResNet stages trained, counted from layer4 (3: conv1 and
        layer1 frozen).
      fpn_channels: 256.
      anchor_sizes: one per level P2 ... P6, (32, 64, 128, 256, 512).
      anchor_aspect_ratios: heights / widths, (0.5, 1, 2).
      train_pre_nms_top_n, test_pre_nms_top_n: per level, 2000 / 1000.
      train_post_nms_top_n, test_post_nms_top_n: 2000 / 1000.
      rpn_nms_iou_threshold, rpn_min_size, rpn_score_threshold: 0.7, 1e-3, 0.
      representation_size: fc6 / fc7 width, 1024.
      score_threshold, nms_iou_threshold, max_detections: 0.05, 0.5, 100.
    """

    num_classes: int = 90
    input_shape: tuple[int | None, ...] = (None, None, 3)
    min_size: int = 800
    max_size: int = 1333
    trainable_backbone_layers: int = 3
    fpn_channels: int = 256
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    train_pre_nms_top_n: int = 2000
    test_pre_nms_top_n: int = 1000
    train_post_nms_top_n: int = 2000
    test_post_nms_top_n: int = 1000
    rpn_nms_iou_threshold: float = 0.7
    rpn_min_size: float = 1e-3
    rpn_score_threshold: float = 0.0
    representation_size: int = 1024
    score_threshold: float = 0.05
    nms_iou_threshold: float = 0.5
    max_detections: int = 100
    box_weights: tuple[float, ...] = HEAD_BOX_WEIGHTS
    detector_kind: ClassVar[str] = FASTER_RCNN

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if len(self.input_shape) != 3 or self.input_shape[2] != 3:
            raise ValueError(f"input_shape must be (height, width, 3), got {self.input_shape}")
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {self.min_size}, {self.max_size}")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError(f"trainable_backbone_layers must be in [0, 5], got {self.trainable_backbone_layers}")
        if len(self.anchor_sizes) != len(PYRAMID_LEVELS) or min(self.anchor_sizes) <= 0:
            raise ValueError(f"anchor_sizes must be {len(PYRAMID_LEVELS)} positive sizes (P2..P6), "
                             f"got {self.anchor_sizes}")
        if not self.anchor_aspect_ratios or min(self.anchor_aspect_ratios) <= 0:
            raise ValueError(f"anchor_aspect_ratios must be positive, got {self.anchor_aspect_ratios}")
        for name in ("fpn_channels", "train_pre_nms_top_n", "test_pre_nms_top_n", "train_post_nms_top_n",
                     "test_post_nms_top_n", "representation_size", "max_detections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("rpn_nms_iou_threshold", "nms_iou_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.box_weights) != 4 or min(self.box_weights) <= 0:
            raise ValueError(f"box_weights must be four positive numbers, got {self.box_weights}")


# --------------------------------------------------------------------------- the transform


# --------------------------------------------------------------------------- backbone


def _frozen_bn(x, name):
    return FrozenBatchNormalization(epsilon=1e-5, name=name)(x)


def _conv(x, filters, kernel, *, name, strides=1, trainable=True):
    if strides > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    layer = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=name)
    layer.trainable = trainable
    return layer(x)


def bottleneck(x, filters, *, stride, name, trainable):
    """torchvision's `Bottleneck` (ResNet v1.5: the stride in the 3x3 conv2), FrozenBN, names
    `{name}.conv1` ... `{name}.bn3`, `{name}.downsample.0/1`."""
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv(x, 4 * filters, 1, strides=stride, name=f"{name}.downsample.0", trainable=trainable)
        shortcut = _frozen_bn(shortcut, f"{name}.downsample.1")
    x = _conv(x, filters, 1, name=f"{name}.conv1", trainable=trainable)
    x = keras.layers.ReLU(name=f"{name}.relu1")(_frozen_bn(x, f"{name}.bn1"))
    x = _conv(x, filters, 3, strides=stride, name=f"{name}.conv2", trainable=trainable)
    x = keras.layers.ReLU(name=f"{name}.relu2")(_frozen_bn(x, f"{name}.bn2"))
    x = _conv(x, 4 * filters, 1, name=f"{name}.conv3", trainable=trainable)
    x = _frozen_bn(x, f"{name}.bn3")
    x = keras.layers.Add(name=f"{name}.add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}.relu")(x)


def resnet50_body(images, config: FasterRCNNFPNConfig, *, prefix="backbone.body"):
    """torchvision's ResNet-50 with FrozenBN on normalised images: `[C2, C3, C4, C5]`."""
    trained = set(TRAINABLE_ORDER[: config.trainable_backbone_layers])
    x = keras.layers.ZeroPadding2D(3, name=f"{prefix}.conv1_pad")(images)
    conv1 = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name=f"{prefix}.conv1")
    conv1.trainable = "conv1" in trained
    x = keras.layers.ReLU(name=f"{prefix}.relu")(_frozen_bn(conv1(x), f"{prefix}.bn1"))
    # Zero padding before the max pool equals torchvision's -inf padding after a ReLU.
    x = keras.layers.ZeroPadding2D(1, name=f"{prefix}.maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=f"{prefix}.maxpool")(x)
    outputs = []
    for index, (filters, depth) in enumerate(zip(STAGE_FILTERS, STAGE_DEPTHS), start=1):
        stage = f"layer{index}"
        for block in range(depth):
            x = bottleneck(x, filters, stride=2 if index > 1 and block == 0 else 1, name=f"{prefix}.{stage}.{block}",
                           trainable=stage in trained)
        outputs.append(x)
    return outputs


def feature_pyramid(features, *, channels=256, prefix="backbone.fpn"):
    """torchvision's `FeaturePyramidNetwork` with `LastLevelMaxPool`: `[C2..C5]` -> `[P2..P6]`.

    Lateral 1x1 (`{prefix}.inner_blocks.{i}.0`) and output 3x3 (`{prefix}.layer_blocks.{i}.0`)
    convolutions with biases, kaiming_uniform(a=1) weights and zero biases as torchvision's;
    the top-down path upsamples by 2 (nearest), exact because the input is padded to 32; P6 is a
    1x1 max pool of stride 2 on P5.
    """
    init = keras.initializers.VarianceScaling(1.0, mode="fan_in", distribution="uniform")

    def conv(x, kernel, name):
        return keras.layers.Conv2D(channels, kernel, padding="same", kernel_initializer=init, name=name)(x)

    last = conv(features[-1], 1, f"{prefix}.inner_blocks.{len(features) - 1}.0")
    results = [conv(last, 3, f"{prefix}.layer_blocks.{len(features) - 1}.0")]
    for index in range(len(features) - 2, -1, -1):
        lateral = conv(features[index], 1, f"{prefix}.inner_blocks.{index}.0")
        top_down = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}.top_down.{index}")(last)
        last = keras.layers.Add(name=f"{prefix}.merge.{index}")([lateral, top_down])
        results.insert(0, conv(last, 3, f"{prefix}.layer_blocks.{index}.0"))
    results.append(keras.layers.MaxPooling2D(1, strides=2, name=f"{prefix}.extra_blocks")(results[-1]))
    return results


# --------------------------------------------------------------------------- RPN


def cell_anchors(size, aspect_ratios):
    """`[A, 4]` float32 `[ymin, xmin, ymax, xmax]` around (0, 0): torchvision's
    `AnchorGenerator.generate_anchors` in float32, rounded half to even as `torch.round`."""
    scales = np.asarray([size], np.float32)
    ratios = np.asarray(aspect_ratios, np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0))  # x1, y1, x2, y2
    return base[:, [1, 0, 3, 2]].astype(np.float32)


def pyramid_anchors(feature_sizes, image_size, *, sizes, aspect_ratios):
    """`[K, 4]` anchors of every level, torchvision's order (level, row, column, ratio).

    Level `l`'s stride is `image_size // feature_size` per axis (integer division, as
    torchvision's: P6 of an 800-pixel side has 13 cells and stride 61, not 64); cell `(i, j)`
    adds `(i * stride_y, j * stride_x)` to the cell anchors.
    """
    height, width = tf.cast(image_size[0], tf.int32), tf.cast(image_size[1], tf.int32)
    anchors = []
    for (rows, cols), size in zip(feature_sizes, sizes):
        rows, cols = tf.cast(rows, tf.int32), tf.cast(cols, tf.int32)
        stride_y = tf.cast(height // rows, tf.float32)
        stride_x = tf.cast(width // cols, tf.float32)
        shift_y, shift_x = tf.meshgrid(tf.cast(tf.range(rows), tf.float32) * stride_y,
                                       tf.cast(tf.range(cols), tf.float32) * stride_x, indexing="ij")
        shifts = tf.reshape(tf.stack([shift_y, shift_x, shift_y, shift_x], axis=-1), [-1, 1, 4])
        anchors.append(tf.reshape(shifts + cell_anchors(size, aspect_ratios)[None], [-1, 4]))
    return tf.concat(anchors, axis=0)


@keras.saving.register_keras_serializable(package="zoo")
class PyramidAnchors(keras.layers.Layer):
    """The anchors of P2 ... P6 for the padded batch, `[B, P, 4]` pixels (`pyramid_anchors`).

    Call arguments: `[P2, ..., P6, images [B, Hp, Wp, 3]]`.
    """

    def __init__(self, *, sizes=(32.0, 64.0, 128.0, 256.0, 512.0), aspect_ratios=(0.5, 1.0, 2.0), **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.sizes = tuple(float(s) for s in sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)

    def call(self, inputs):
        *features, images = inputs
        sizes = [tf.shape(feature)[1:3] for feature in features]
        anchors = pyramid_anchors([(s[0], s[1]) for s in sizes], tf.shape(images)[1:3], sizes=self.sizes,
                                  aspect_ratios=self.aspect_ratios)
        return tf.tile(anchors[None], [tf.shape(images)[0], 1, 1])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs[0].shape[0], None, 4), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "sizes": list(self.sizes), "aspect_ratios": list(self.aspect_ratios)}


@keras.saving.register_keras_serializable(package="zoo")
class ConcatenateLevels(keras.layers.Layer):
    """`[B, H_l, W_l, A * V]` maps of each level -> `[B, P, V]` (`[B, P]` when V is 1), in the
    anchors' order; `xy_to_yx` swaps torchvision's (dx, dy, dw, dh) into (dy, dx, dh, dw)."""

    def __init__(self, *, values_per_anchor=1, xy_to_yx=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.values_per_anchor, self.xy_to_yx = int(values_per_anchor), bool(xy_to_yx)

    def call(self, inputs):
        values = self.values_per_anchor
        flat = [tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1, values]) for x in inputs]
        result = tf.concat(flat, axis=1)
        if self.xy_to_yx:
            result = tf.gather(result, [1, 0, 3, 2], axis=-1)
        return result[..., 0] if values == 1 else result

    def compute_output_spec(self, inputs):
        shape = (inputs[0].shape[0], None) + (() if self.values_per_anchor == 1 else (self.values_per_anchor,))
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "values_per_anchor": self.values_per_anchor, "xy_to_yx": self.xy_to_yx}


def fpn_proposals(objectness, deltas, anchors, image_info, level_counts, *, pre_nms_top_n, post_nms_top_n,
                  iou_threshold=0.7, min_size=1e-3, score_threshold=0.0, box_weights=RPN_BOX_WEIGHTS):
    """torchvision's `RegionProposalNetwork.filter_proposals` on a batch.

    Per level, the `pre_nms_top_n` anchors with the highest objectness; their boxes decoded
    (with `box_weights`, torchvision's (1, 1, 1, 1)) and clipped to the resized image `(h, w)`; boxes with a side below
    `min_size` or a probability below `score_threshold` dropped; NMS within each level (a box of
    one level never suppresses another's) at `iou_threshold`; the first `post_nms_top_n` by
    probability. Returns `[B, post_nms_top_n, 4]`, zero rows after the survivors.
    """
    tops, level_ids, start = [], [], 0
    for level, count in enumerate(level_counts):
        scores = objectness[:, start: start + count]
        k = tf.minimum(pre_nms_top_n, count)
        _, order = tf.math.top_k(scores, k=k, sorted=True)
        tops.append(order + start)
        level_ids.append(tf.fill(tf.shape(order), level))
        start += count
    order = tf.concat(tops, axis=1)
    levels = tf.concat(level_ids, axis=1)
    logits = tf.gather(objectness, order, batch_dims=1)
    boxes = box_ops.decode(tf.gather(deltas, order, batch_dims=1), tf.gather(anchors, order, batch_dims=1),
                           weights=box_weights)
    boxes = box_ops.clip_boxes(boxes, image_info[:, :2])
    probabilities = tf.sigmoid(logits)
    heights, widths = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    keep = (heights >= min_size) & (widths >= min_size) & (probabilities >= score_threshold)
    # torchvision's batched_nms: each level's boxes moved apart by more than any coordinate.
    offsets = tf.cast(levels, tf.float32) * (tf.reduce_max(boxes) + 1.0)
    kept = box_ops.padded_nms(boxes + offsets[..., None], tf.where(keep, probabilities, -1.0),
                              max_output_size=post_nms_top_n, iou_threshold=iou_threshold, score_threshold=-0.5)
    valid = kept["indices"] >= 0
    chosen = tf.gather(boxes, tf.maximum(kept["indices"], 0), batch_dims=1)
    return tf.where(valid[..., None], chosen, 0.0)


@keras.saving.register_keras_serializable(package="zoo")
class FPNProposals(keras.layers.Layer):
    """`fpn_proposals` in a layer, with torchvision's training and test counts.

    Call arguments: `[rpn_objectness [B, P], rpn_box_deltas [B, P, 4], anchors [B, P, 4],
    image_info [B, 4], P2, ..., P6]` (the maps give each level's anchor count).
    """

    def __init__(self, *, anchors_per_cell=3, train_pre_nms_top_n=2000, test_pre_nms_top_n=1000,
                 train_post_nms_top_n=2000, test_post_nms_top_n=1000, iou_threshold=0.7, min_size=1e-3,
                 score_threshold=0.0, box_weights=RPN_BOX_WEIGHTS, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.anchors_per_cell = int(anchors_per_cell)
        # The RPN trainer encodes its anchor targets with the same weights it reads here.
        self.box_weights = tuple(float(w) for w in box_weights)
        self.train_pre_nms_top_n, self.test_pre_nms_top_n = int(train_pre_nms_top_n), int(test_pre_nms_top_n)
        self.train_post_nms_top_n, self.test_post_nms_top_n = int(train_post_nms_top_n), int(test_post_nms_top_n)
        self.iou_threshold, self.min_size = float(iou_threshold), float(min_size)
        self.score_threshold = float(score_threshold)

    def call(self, inputs, training=None):
        objectness, deltas, anchors, image_info, *features = inputs
        counts = [tf.shape(f)[1] * tf.shape(f)[2] * self.anchors_per_cell for f in features]
        pre, post = ((self.train_pre_nms_top_n, self.train_post_nms_top_n) if training
                     else (self.test_pre_nms_top_n, self.test_post_nms_top_n))
        return fpn_proposals(objectness, deltas, anchors, image_info, counts, pre_nms_top_n=pre,
                             post_nms_top_n=post, iou_threshold=self.iou_threshold, min_size=self.min_size,
                             score_threshold=self.score_threshold, box_weights=self.box_weights)

    def compute_output_spec(self, inputs, training=None):
        same = self.train_post_nms_top_n == self.test_post_nms_top_n
        return keras.KerasTensor((inputs[0].shape[0], self.test_post_nms_top_n if same else None, 4),
                                 dtype="float32")

    def get_config(self):
        return {**super().get_config(), "anchors_per_cell": self.anchors_per_cell,
                "train_pre_nms_top_n": self.train_pre_nms_top_n, "test_pre_nms_top_n": self.test_pre_nms_top_n,
                "train_post_nms_top_n": self.train_post_nms_top_n, "test_post_nms_top_n": self.test_post_nms_top_n,
                "iou_threshold": self.iou_threshold, "min_size": self.min_size,
                "score_threshold": self.score_threshold, "box_weights": list(self.box_weights)}


def rpn(pyramid, *, anchors_per_cell, channels, prefix="rpn.head"):
    """torchvision's `RPNHead`, shared across levels: 3x3 conv + ReLU, 1x1 objectness (A) and
    1x1 deltas (4 A), N(0, 0.01) weights, zero biases. Returns `(objectness, deltas)` concatenated
    over the levels (`rpn_objectness`, `rpn_box_deltas`)."""
    init = keras.initializers.RandomNormal(stddev=0.01)
    conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=init,
                               name=f"{prefix}.conv.0.0")
    logits = keras.layers.Conv2D(anchors_per_cell, 1, kernel_initializer=init, dtype="float32",
                                 name=f"{prefix}.cls_logits")
    regression = keras.layers.Conv2D(4 * anchors_per_cell, 1, kernel_initializer=init, dtype="float32",
                                     name=f"{prefix}.bbox_pred")
    hidden = [conv(level) for level in pyramid]
    objectness = ConcatenateLevels(name=RPN_OBJECTNESS)([logits(x) for x in hidden])
    deltas = ConcatenateLevels(values_per_anchor=4, xy_to_yx=True, name=RPN_BOX_DELTAS)([regression(x) for x in hidden])
    return objectness, deltas


# --------------------------------------------------------------------------- RoI head


@keras.saving.register_keras_serializable(package="zoo")
class ChannelFirstFlatten(keras.layers.Layer):
    """`[B, N, S, S, C]` -> `[B, N, C * S * S]` in torchvision's `flatten(start_dim=1)` order of
    `[C, S, S]`, so that fc6's weights are torchvision's transposed."""

    def call(self, inputs):
        shape = tf.shape(inputs)
        transposed = tf.transpose(inputs, [0, 1, 4, 2, 3])
        return tf.reshape(transposed, [shape[0], shape[1], -1])

    def compute_output_shape(self, input_shape):
        b, n, s1, s2, c = input_shape
        return (b, n, None if None in (s1, s2, c) else s1 * s2 * c)


@keras.saving.register_keras_serializable(package="zoo")
class TorchvisionBoxDeltas(keras.layers.Layer):
    """`[B, N, 4 (K + 1)]` torchvision's bbox_pred ((dx, dy, dw, dh) per class, background first)
    -> `[B, N, K, 4]` (dy, dx, dh, dw) of the object classes, the zoo's `box_deltas`."""

    def __init__(self, num_classes, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, inputs):
        shape = tf.shape(inputs)
        deltas = tf.reshape(tf.cast(inputs, tf.float32), [shape[0], shape[1], self.num_classes + 1, 4])
        return tf.gather(deltas[:, :, 1:], [1, 0, 3, 2], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.num_classes, 4)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="zoo")
class FPNDetectionPostprocess(keras.layers.Layer):
    """torchvision's `RoIHeads.postprocess_detections` and `transform.postprocess`.

    Each proposal's class boxes decoded (weights (10, 10, 5, 5)) and clipped to the resized image;
    scores above `score_threshold`; boxes with a side below 1e-2 dropped; NMS per class at
    `iou_threshold`; the best `max_detections`; boxes scaled back to the input image by
    `input size / resized size` per axis.

    Call arguments: `[class_probs [B, N, K + 1], box_deltas [B, N, K, 4], proposals [B, N, 4],
    image_info [B, 4]]`.

    Returns: the detector contract's `{"boxes", "scores", "classes", "num_detections"}`.
    """

    MIN_SIZE = 1e-2

    def __init__(self, *, max_detections=100, iou_threshold=0.5, score_threshold=0.05,
                 box_weights=HEAD_BOX_WEIGHTS, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.max_detections = int(max_detections)
        self.iou_threshold, self.score_threshold = float(iou_threshold), float(score_threshold)
        self.box_weights = tuple(float(w) for w in box_weights)

    def call(self, inputs):
        class_probs, box_deltas, proposals, image_info = inputs
        proposals = tf.cast(proposals, tf.float32)
        boxes = box_ops.decode(tf.cast(box_deltas, tf.float32), proposals[:, :, None, :], weights=self.box_weights)
        boxes = box_ops.clip_boxes(boxes, image_info[:, :2])
        real = tf.reduce_any(tf.not_equal(proposals, 0.0), axis=-1)[..., None]
        large = ((boxes[..., 2] - boxes[..., 0]) >= self.MIN_SIZE) & ((boxes[..., 3] - boxes[..., 1]) >= self.MIN_SIZE)
        scores = tf.where(real & large, tf.cast(class_probs, tf.float32)[..., 1:], 0.0)
        detections = box_ops.batched_nms(
            boxes, scores, max_output_size_per_class=self.max_detections, max_total_size=self.max_detections,
            iou_threshold=self.iou_threshold, score_threshold=self.score_threshold,
        )
        ratio = image_info[:, 2:] / image_info[:, :2]  # [B, 2]: input / resized, (y, x)
        scale = tf.concat([ratio, ratio], axis=-1)[:, None, :]
        return {**detections, "boxes": detections["boxes"] * scale}

    def compute_output_spec(self, inputs):
        batch, count = inputs[0].shape[0], self.max_detections
        return {
            "boxes": keras.KerasTensor((batch, count, 4), dtype="float32"),
            "scores": keras.KerasTensor((batch, count), dtype="float32"),
            "classes": keras.KerasTensor((batch, count), dtype="int32"),
            "num_detections": keras.KerasTensor((batch,), dtype="int32"),
        }

    def get_config(self):
        return {**super().get_config(), "max_detections": self.max_detections, "iou_threshold": self.iou_threshold,
                "score_threshold": self.score_threshold, "box_weights": list(self.box_weights)}


def box_head(pyramid, proposals, config: FasterRCNNFPNConfig):
    """RoI Align 7x7 (sampling 2) on P2..P5 -> fc6, fc7 (ReLU) -> `(class_probs, box_deltas)`."""
    pooled = MultiLevelRoIAlign(output_size=7, sampling_ratio=2, min_level=ROI_LEVELS[0], max_level=ROI_LEVELS[-1],
                                name="roi_heads.box_roi_pool")([*pyramid[: len(ROI_LEVELS)], proposals])
    x = ChannelFirstFlatten(name="roi_heads.box_head.flatten")(pooled)
    x = keras.layers.Dense(config.representation_size, activation="relu", name="roi_heads.box_head.fc6")(x)
    x = keras.layers.Dense(config.representation_size, activation="relu", name="roi_heads.box_head.fc7")(x)
    logits = keras.layers.Dense(config.num_classes + 1, dtype="float32", name="roi_heads.box_predictor.cls_score")(x)
    class_probs = keras.layers.Softmax(dtype="float32", name=CLASS_PROBS)(logits)
    regression = keras.layers.Dense(4 * (config.num_classes + 1), dtype="float32",
                                    name="roi_heads.box_predictor.bbox_pred")(x)
    return class_probs, TorchvisionBoxDeltas(config.num_classes, name=BOX_DELTAS)(regression)


# --------------------------------------------------------------------------- the model


def build_faster_rcnn_fpn(config: FasterRCNNFPNConfig, *, name: str = "faster_rcnn_resnet50_fpn") -> keras.Model:
    """torchvision's Faster R-CNN ResNet-50 FPN: `{"images"}` -> the detector contract's outputs."""
    images = image_input(config.input_shape)
    normalised, image_info = GeneralizedRCNNTransform(min_size=config.min_size, max_size=config.max_size,
                                                      name="transform")(images)
    pyramid = feature_pyramid(resnet50_body(normalised, config), channels=config.fpn_channels)
    anchors_per_cell = len(config.anchor_aspect_ratios)
    anchors = PyramidAnchors(sizes=config.anchor_sizes, aspect_ratios=config.anchor_aspect_ratios,
                             name=RPN_ANCHORS)([*pyramid, normalised])
    objectness, deltas = rpn(pyramid, anchors_per_cell=anchors_per_cell, channels=config.fpn_channels)
    proposals = FPNProposals(
        anchors_per_cell=anchors_per_cell, train_pre_nms_top_n=config.train_pre_nms_top_n,
        test_pre_nms_top_n=config.test_pre_nms_top_n, train_post_nms_top_n=config.train_post_nms_top_n,
        test_post_nms_top_n=config.test_post_nms_top_n, iou_threshold=config.rpn_nms_iou_threshold,
        min_size=config.rpn_min_size, score_threshold=config.rpn_score_threshold, name=PROPOSALS,
    )([objectness, deltas, anchors, image_info, *pyramid])
    class_probs, box_deltas = box_head(pyramid, proposals, config)
    detections = FPNDetectionPostprocess(
        max_detections=config.max_detections, iou_threshold=config.nms_iou_threshold,
        score_threshold=config.score_threshold, box_weights=config.box_weights, name=DETECTIONS,
    )([class_probs, box_deltas, proposals, image_info])
    outputs = {RPN_OBJECTNESS: objectness, RPN_BOX_DELTAS: deltas, PROPOSALS: proposals, CLASS_PROBS: class_probs,
               BOX_DELTAS: box_deltas, **detections}
    return keras.Model({IMAGES: images}, outputs, name=name)


@register("faster_rcnn_resnet50_fpn", task="detection", builder=build_faster_rcnn_fpn, paper=PAPER)
def faster_rcnn_resnet50_fpn() -> FasterRCNNFPNConfig:
    """torchvision's fasterrcnn_resnet50_fpn: 41,755,286 parameters by its count (buffers aside), 90 classes + background.

    The parameter count above is torchvision's (`model.parameters()`); Keras's `count_params` adds
    the 106,240 elements of the FrozenBN buffers.
    """
    return FasterRCNNFPNConfig()


__all__ = ["FasterRCNNFPNConfig", "build_faster_rcnn_fpn", "cell_anchors", "fpn_proposals", "pyramid_anchors",
           "resized_size", "torchvision_keys"]
