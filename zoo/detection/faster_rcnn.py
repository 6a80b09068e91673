"""Faster R-CNN: a region proposal network and the Fast R-CNN head on one shared trunk.

Paper: Ren et al., "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
Networks", NeurIPS 2015, https://arxiv.org/abs/1506.01497. The R50-C4 design (RPN and RoI
pooling on conv4, conv5 run per RoI) is He et al., "Deep Residual Learning",
https://arxiv.org/abs/1512.03385, appendix A.

Shapes: B images of H x W pixels, P = Hf * Wf * A anchors per image (A = len(anchor_scales) *
len(anchor_aspect_ratios) per cell of the stride-16 map), N proposals per image, K object
classes, D detections.

The model (`images` only; the trunk runs once, its C4 feeds both the RPN and the RoI head):

    images [B, H, W, 3] ─ ResNet-50 to C4 ─┬─ rpn_head ─ rpn_objectness [B, P], rpn_box_deltas [B, P, 4]
                                           │    └─ RPNProposals (decode, clip, top-k, NMS) ─ proposals [B, N, 4]
                                           └─ RoIPooling(proposals) ─ conv5 per RoI ─ class_probs [B, N, K + 1]
                                                ├─ box_deltas [B, N, K, 4]
                                                └─ DetectionPostprocess ─ boxes, scores, classes, num_detections

The RoI head is `zoo.detection.fast_rcnn`'s, layer for layer (same names, so the same ImageNet
weights), fed with the proposals instead of a `rois` input. Training (the RPN's anchor targets
and the joint loss `L_rpn_cls + L_rpn_box + L_cls + L_box`) is
`training.detection.FasterRCNNTrainer`; `training.fit.train(..., task="detection")` and
`zoo train faster_rcnn_resnet50` use it for any detector without a `rois` input.

Defaults are the paper's and py-faster-rcnn's: anchors of 128, 256 and 512 pixels at aspect
ratios 0.5, 1 and 2 (9 per cell), proposals from the 12000 (training) / 6000 (test) best-scored
boxes through NMS at 0.7, keeping 2000 / 300, boxes with a side below 16 pixels dropped. Those
suit images of about 600 pixels; for small images give smaller anchors and `rpn_min_size`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras

from layers.detection_contract import FASTER_RCNN, IMAGES, PROPOSALS, RPN_ANCHORS, RPN_BOX_DELTAS, RPN_OBJECTNESS
from zoo.backbones._common import image_input
from zoo.detection.fast_rcnn import TRUNKS, FastRCNNConfig, detection_outputs
from zoo.detection.proposals import positive_numbers
from zoo.detection.rpn import AnchorGrid, RPNProposals, rpn_head
from zoo.registry import register

PAPER = "Ren et al., Faster R-CNN, NeurIPS 2015, https://arxiv.org/abs/1506.01497"


@dataclasses.dataclass(frozen=True)
class FasterRCNNConfig(FastRCNNConfig):
    """Configuration of a Faster R-CNN detector: a `FastRCNNConfig` plus the RPN.

    Attributes (besides `FastRCNNConfig`'s, whose `nms_iou_threshold`, `score_threshold` and
    `max_detections` are the final detections'):
      anchor_scales: anchor sides in pixels (square roots of the areas), (128, 256, 512).
      anchor_aspect_ratios: anchor heights / widths, (0.5, 1, 2).
      rpn_channels: the RPN's 3 x 3 convolution width, 512.
      train_pre_nms_top_n, train_post_nms_top_n: boxes into / proposals out of the RPN's NMS
        in training, 12000 / 2000.
      test_pre_nms_top_n, test_post_nms_top_n: the same at test time, 6000 / 300 (N).
      rpn_nms_iou_threshold: the RPN's NMS overlap, 0.7.
      rpn_min_size: proposals with a side below this many pixels are dropped, 16.
    """

    backbone: str = "resnet50"
    pool_size: int = 14
    anchor_scales: tuple[float, ...] = (128.0, 256.0, 512.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_channels: int = 512
    train_pre_nms_top_n: int = 12000
    train_post_nms_top_n: int = 2000
    test_pre_nms_top_n: int = 6000
    test_post_nms_top_n: int = 300
    rpn_nms_iou_threshold: float = 0.7
    rpn_min_size: float = 16.0
    detector_kind: ClassVar[str] = FASTER_RCNN

    def __post_init__(self):
        super().__post_init__()
        positive_numbers(self.anchor_scales, name="anchor_scales", function=type(self).__name__)
        positive_numbers(self.anchor_aspect_ratios, name="anchor_aspect_ratios", function=type(self).__name__)
        for name in ("rpn_channels", "train_pre_nms_top_n", "train_post_nms_top_n", "test_pre_nms_top_n",
                     "test_post_nms_top_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.rpn_nms_iou_threshold <= 1.0:
            raise ValueError(f"rpn_nms_iou_threshold must be in [0, 1], got {self.rpn_nms_iou_threshold}")
        if not self.rpn_min_size >= 0.0:
            raise ValueError(f"rpn_min_size must be a number of pixels >= 0, got {self.rpn_min_size}")


def build_faster_rcnn(config: FasterRCNNConfig, *, name: str = "faster_rcnn") -> keras.Model:
    """A Faster R-CNN detector: `{"images"}` -> RPN outputs, proposals, head outputs and detections."""
    images = image_input(config.input_shape)
    features = TRUNKS[config.backbone].features(images, config)
    anchor_layer = AnchorGrid(
        stride=features.stride, scales=config.anchor_scales, aspect_ratios=config.anchor_aspect_ratios,
        name=RPN_ANCHORS,
    )
    anchors = anchor_layer(features.tensor)
    objectness, deltas = rpn_head(features.tensor, anchors_per_cell=anchor_layer.anchors_per_cell,
                                  channels=config.rpn_channels)
    proposals = RPNProposals(
        train_pre_nms_top_n=config.train_pre_nms_top_n, train_post_nms_top_n=config.train_post_nms_top_n,
        test_pre_nms_top_n=config.test_pre_nms_top_n, test_post_nms_top_n=config.test_post_nms_top_n,
        iou_threshold=config.rpn_nms_iou_threshold, min_size=config.rpn_min_size, name=PROPOSALS,
    )([objectness, deltas, anchors, images])
    outputs = {
        RPN_OBJECTNESS: objectness, RPN_BOX_DELTAS: deltas, PROPOSALS: proposals,
        **detection_outputs(features, proposals, images, config),
    }
    return keras.Model({IMAGES: images}, outputs, name=name)


@register("faster_rcnn_resnet50", task="detection", builder=build_faster_rcnn, paper=PAPER)
def faster_rcnn_resnet50() -> FasterRCNNConfig:
    """Faster R-CNN R50-C4: an RPN (9 anchors per cell) and the Fast R-CNN head on one ResNet-50 C4."""
    return FasterRCNNConfig(backbone="resnet50", pool_size=14)


@register("faster_rcnn_mobilenetv2", task="detection", builder=build_faster_rcnn, paper=PAPER)
def faster_rcnn_mobilenetv2() -> FasterRCNNConfig:
    """Faster R-CNN on MobileNet-v2 at stride 16, RoI Align 7 x 7 and two fc of 512: the CPU detector.

    The trunk's last blocks are dilated (DeepLab's output stride 16) and its Conv_1 dropped; the
    RPN has 15 anchors per cell (32 to 512 pixels) on a 256-channel convolution. keras.applications'
    layer names, so `weights="imagenet"` loads MobileNet-v2's ImageNet file into the trunk. The fc
    layers are half torchvision's TwoMLPHead (1024): on 2 cores, 192-pixel images in batches of 8,
    a training step took 401 ms against 517 ms with 1024.
    """
    return FasterRCNNConfig(
        backbone="mobilenetv2", preprocessing="tf", pool_size=7, method="crop_and_resize", fc_units=512,
        dropout=0.0, rpn_channels=256, anchor_scales=(32.0, 64.0, 128.0, 256.0, 512.0),
    )
