"""The region proposal network of Faster R-CNN: anchors, the RPN head and its proposals.

Paper: Ren et al., "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
Networks", NeurIPS 2015, https://arxiv.org/abs/1506.01497, section 3.1; the test-time values
are py-faster-rcnn's (`fast_rcnn/config.py`, `rpn/proposal_layer.py`).

Shapes: B images of H x W pixels, a stride-16 feature map of Hf x Wf cells, A anchors per cell
(len(scales) * len(aspect_ratios)), P = Hf * Wf * A anchors per image, N proposals per image.

Names: `objectness` are the RPN's logits, one per anchor (sigmoid form, as in torchvision and
detectron2: `sigmoid(logit)` is the probability that the anchor covers an object; the paper's
2A-way softmax over {background, object} is the same model with one redundant logit);
`rpn_box_deltas` are the `(dy, dx, dh, dw)` deltas of `layers.boxes.encode` with weights
(1, 1, 1, 1), the paper's parameterisation (equation 2). Anchors, objectness and deltas are all
ordered `[Hf, Wf, A]` flattened (cells row-major, then ratio-major and scale fastest within a
cell, `zoo.detection.proposals.anchor_grid`'s order).

- `AnchorGrid`: the anchors of a feature map, for any H and W known only at run time.
- `rpn_head`: 3 x 3 conv (512, ReLU) -> 1 x 1 objectness (A) and 1 x 1 deltas (4 A).
- `generate_proposals` / `RPNProposals`: decode, clip to the image, drop boxes with a side
  below `min_size`, keep the `pre_nms_top_n` best by objectness, NMS at `iou_threshold`, keep
  `post_nms_top_n`; padded to a fixed N with zero rows (the RoI convention). The layer uses
  the training counts when called with `training=True` (12000 / 2000 in py-faster-rcnn) and
  the test counts otherwise (6000 / 300).
"""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf

from layers import boxes as box_ops
from layers.detection_contract import RPN_BOX_DELTAS, RPN_OBJECTNESS
from zoo.detection.proposals import anchor_grid, check_stride, positive_numbers

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def _count(value, *, name, function):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{function}: {name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- anchors


@keras.saving.register_keras_serializable(package="zoo")
class AnchorGrid(keras.layers.Layer):
    """The anchors of a feature map, the same for every image of the batch.

    `anchor_grid(Hf, Wf, stride=stride, scales=scales, aspect_ratios=aspect_ratios)` for the
    run-time size of the feature map, tiled over the batch: cell `(i, j)`'s anchors are centred
    on `((i + 0.5) * stride, (j + 0.5) * stride)` and are not clipped.

    Args:
      stride: image pixels per feature cell (16 for C4).
      scales: anchor sides in pixels (square roots of the areas), the paper's (128, 256, 512).
      aspect_ratios: heights / widths, the paper's (0.5, 1, 2).

    Call arguments:
      features: `[B, Hf, Wf, C]`.

    Returns:
      `[B, Hf * Wf * A, 4]` float32 anchors `[ymin, xmin, ymax, xmax]` in pixels.
    """

    def __init__(self, *, stride=16, scales=(128.0, 256.0, 512.0), aspect_ratios=(0.5, 1.0, 2.0), **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        name = type(self).__name__
        self.stride = check_stride(stride, function=name)
        self.scales = positive_numbers(scales, name="scales", function=name)
        self.aspect_ratios = positive_numbers(aspect_ratios, name="aspect_ratios", function=name)

    @property
    def anchors_per_cell(self):
        return len(self.scales) * len(self.aspect_ratios)

    def call(self, features):
        shape = tf.shape(features)
        anchors = anchor_grid(
            shape[1], shape[2], stride=self.stride, scales=self.scales, aspect_ratios=self.aspect_ratios
        )
        return tf.tile(anchors[None], [shape[0], 1, 1])

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        count = None if height is None or width is None else height * width * self.anchors_per_cell
        return (input_shape[0], count, 4)

    def compute_output_spec(self, features):
        return keras.KerasTensor(self.compute_output_shape(features.shape), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(), "stride": self.stride, "scales": list(self.scales),
            "aspect_ratios": list(self.aspect_ratios),
        }


# --------------------------------------------------------------------------- the head


def rpn_head(features, *, anchors_per_cell, channels=512, name="rpn"):
    """The RPN on a feature map: `(objectness [B, P], rpn_box_deltas [B, P, 4])`, float32.

    A 3 x 3 convolution (`channels`, ReLU; the paper's 512 for VGG16 and ResNet C4) slides over
    the map; 1 x 1 convolutions give A objectness logits and 4 A deltas per cell. All three
    start from N(0, 0.01) weights and zero biases, as in py-faster-rcnn. Layer names:
    `{name}_conv`, `{name}_objectness_logits`, `{name}_box_regression`, then `rpn_objectness`
    and `rpn_box_deltas` for the flattened outputs.
    """
    init = keras.initializers.RandomNormal(stddev=0.01)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=init,
                            name=f"{name}_conv")(features)
    logits = keras.layers.Conv2D(anchors_per_cell, 1, kernel_initializer=init, dtype="float32",
                                 name=f"{name}_objectness_logits")(x)
    regression = keras.layers.Conv2D(4 * anchors_per_cell, 1, kernel_initializer=init, dtype="float32",
                                     name=f"{name}_box_regression")(x)
    # [B, Hf, Wf, A] -> [B, P] and [B, Hf, Wf, 4 A] -> [B, P, 4]: channel a * 4 + k is anchor
    # a's k-th delta, so both follow the anchors' [Hf, Wf, A] order.
    objectness = keras.layers.Reshape((-1,), dtype="float32", name=RPN_OBJECTNESS)(logits)
    deltas = keras.layers.Reshape((-1, 4), dtype="float32", name=RPN_BOX_DELTAS)(regression)
    return objectness, deltas


# --------------------------------------------------------------------------- proposals


def generate_proposals(objectness, deltas, anchors, image_shape, *, pre_nms_top_n, post_nms_top_n,
                       iou_threshold=0.7, min_size=16.0, box_weights=RPN_BOX_WEIGHTS):
    """The RPN's proposals: decode, clip, drop small boxes, top-k, NMS, keep the best.

    Per image: every anchor's deltas are decoded (`layers.boxes.decode` with `box_weights`,
    the paper's (1, 1, 1, 1)) and clipped to `[0, H] x [0, W]`; boxes with a side below
    `min_size` pixels or no area are dropped; of the rest, the `pre_nms_top_n` with the
    highest objectness go through NMS (a box is suppressed when its IoU with a kept,
    higher-scoring one is above `iou_threshold`), and the first `post_nms_top_n` survivors
    are the proposals, in descending objectness. Rows past the survivors are zeros.

    Args:
      objectness: `[B, P]` logits (any monotonic score works: only the order matters).
      deltas: `[B, P, 4]` `(dy, dx, dh, dw)`.
      anchors: `[B, P, 4]` or `[P, 4]` pixels.
      image_shape: `(height, width)` of the (padded) batch, numbers or a `[2]` tensor.
      pre_nms_top_n, post_nms_top_n: Python ints.
      iou_threshold: NMS overlap, 0.7 in the paper.
      min_size: the smallest side kept, in pixels (py-faster-rcnn's RPN_MIN_SIZE, 16).
      box_weights: the deltas' weights.

    Returns:
      `{"boxes": [B, post_nms_top_n, 4] float32, "scores": [B, post_nms_top_n] float32
      (sigmoid of the logits, 0 in padding rows), "num_proposals": [B] int32}`.
    """
    function = "generate_proposals"
    pre_nms_top_n = _count(pre_nms_top_n, name="pre_nms_top_n", function=function)
    post_nms_top_n = _count(post_nms_top_n, name="post_nms_top_n", function=function)
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"{function}: iou_threshold must be in [0, 1], got {iou_threshold!r}")
    if not (math.isfinite(float(min_size)) and float(min_size) >= 0.0):
        raise ValueError(f"{function}: min_size must be a number of pixels >= 0, got {min_size!r}")
    objectness = tf.cast(objectness, tf.float32)
    deltas = tf.cast(deltas, tf.float32)
    anchors = tf.cast(anchors, tf.float32)
    if anchors.shape.rank == 2:
        anchors = anchors[None]
    boxes = box_ops.clip_boxes(box_ops.decode(deltas, anchors, weights=box_weights), image_shape)
    heights, widths = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    keep = (heights >= min_size) & (widths >= min_size) & (heights > 0) & (widths > 0)
    # Dropped boxes rank last and score below NMS's threshold, so NMS never returns them.
    scores = tf.where(keep, tf.sigmoid(objectness), -1.0)
    count = tf.minimum(pre_nms_top_n, tf.shape(scores)[1])
    top_scores, order = tf.math.top_k(scores, k=count, sorted=True)
    top_boxes = tf.gather(boxes, order, batch_dims=1)
    # padded_nms, not tf.image's NMS ops: those have no XLA kernel, and Keras compiles the
    # training step (which runs this layer) with XLA on a GPU.
    kept = box_ops.padded_nms(
        top_boxes, top_scores, max_output_size=post_nms_top_n, iou_threshold=float(iou_threshold),
        score_threshold=-0.5,
    )
    num_proposals = kept["num_valid"]
    return {
        "boxes": kept["boxes"],
        "scores": kept["scores"],
        "num_proposals": num_proposals,
    }


@keras.saving.register_keras_serializable(package="zoo")
class RPNProposals(keras.layers.Layer):
    """`generate_proposals` in a layer: the RPN's proposals as `[B, N, 4]` RoIs, in the graph.

    With `training=True` it keeps `train_pre_nms_top_n` / `train_post_nms_top_n` boxes,
    otherwise the test counts; N is the post-NMS count of the mode (the static shape says None
    when the two differ).

    Args:
      train_pre_nms_top_n, train_post_nms_top_n: 12000 and 2000 (py-faster-rcnn's TRAIN).
      test_pre_nms_top_n, test_post_nms_top_n: 6000 and 300 (py-faster-rcnn's TEST, the
        paper's 300 proposals at test time).
      iou_threshold: 0.7.
      min_size: 16 pixels.
      box_weights: (1, 1, 1, 1).

    Call arguments:
      inputs: `[objectness [B, P], rpn_box_deltas [B, P, 4], anchors [B, P, 4], images
        [B, H, W, C]]` (the images give the size to clip to).

    Returns:
      `[B, N, 4]` float32 proposals in pixels, padding rows all zeros.
    """

    def __init__(self, *, train_pre_nms_top_n=12000, train_post_nms_top_n=2000, test_pre_nms_top_n=6000,
                 test_post_nms_top_n=300, iou_threshold=0.7, min_size=16.0, box_weights=RPN_BOX_WEIGHTS, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        name = type(self).__name__
        self.train_pre_nms_top_n = _count(train_pre_nms_top_n, name="train_pre_nms_top_n", function=name)
        self.train_post_nms_top_n = _count(train_post_nms_top_n, name="train_post_nms_top_n", function=name)
        self.test_pre_nms_top_n = _count(test_pre_nms_top_n, name="test_pre_nms_top_n", function=name)
        self.test_post_nms_top_n = _count(test_post_nms_top_n, name="test_post_nms_top_n", function=name)
        if not 0.0 <= float(iou_threshold) <= 1.0:
            raise ValueError(f"{name}: iou_threshold must be in [0, 1], got {iou_threshold!r}")
        if not (math.isfinite(float(min_size)) and float(min_size) >= 0.0):
            raise ValueError(f"{name}: min_size must be a number of pixels >= 0, got {min_size!r}")
        self.iou_threshold, self.min_size = float(iou_threshold), float(min_size)
        self.box_weights = tuple(float(w) for w in box_weights)

    def call(self, inputs, training=None):
        objectness, deltas, anchors, images = inputs
        pre, post = ((self.train_pre_nms_top_n, self.train_post_nms_top_n) if training
                     else (self.test_pre_nms_top_n, self.test_post_nms_top_n))
        return generate_proposals(
            objectness, deltas, anchors, tf.shape(images)[1:3], pre_nms_top_n=pre, post_nms_top_n=post,
            iou_threshold=self.iou_threshold, min_size=self.min_size, box_weights=self.box_weights,
        )["boxes"]

    def compute_output_shape(self, input_shape):
        same = self.train_post_nms_top_n == self.test_post_nms_top_n
        return (input_shape[0][0], self.test_post_nms_top_n if same else None, 4)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(self.compute_output_shape([x.shape for x in inputs]), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "train_pre_nms_top_n": self.train_pre_nms_top_n, "train_post_nms_top_n": self.train_post_nms_top_n,
            "test_pre_nms_top_n": self.test_pre_nms_top_n, "test_post_nms_top_n": self.test_post_nms_top_n,
            "iou_threshold": self.iou_threshold, "min_size": self.min_size, "box_weights": list(self.box_weights),
        }
