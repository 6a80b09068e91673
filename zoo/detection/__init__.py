"""Detection: the Fast and Faster R-CNN families, their proposals, post-processing and drawing.

- `fast_rcnn`: Fast R-CNN on given RoIs: its config, builder and registered variants.
- `faster_rcnn`: Faster R-CNN, an RPN and the Fast R-CNN head on one shared trunk.
- `faster_rcnn_fpn`: torchvision's `fasterrcnn_resnet50_fpn`, layers named by its module paths.
- `rpn`: the region proposal network: anchors, the RPN head and its proposals.
- `proposals`: selective search (OpenCV), sliding windows and the anchor grid of an RPN.
- `postprocess`: the layers that carry RoIs through a head and turn its outputs into detections.
- `sizing`: proposals, anchors and the RoI grid sized from the image size a detector trains at.
- `svd`: the truncated-SVD fc layers of Fast R-CNN's section 3.1 (imported here, so that a
  compressed model's `.keras` file loads after `import zoo`).
- `torchvision_weights`: torchvision state dicts (`.pth`) into the layers named after them.
- `visualize`: detections drawn on an image, one colour per class.
"""

from zoo.detection import proposals, svd  # noqa: F401
from zoo.detection.proposals import (
    SlidingWindowProposals,
    anchor_grid,
    selective_search,
    selective_search_batch,
    sliding_windows,
)

__all__ = [
    "SlidingWindowProposals",
    "anchor_grid",
    "proposals",
    "selective_search",
    "selective_search_batch",
    "sliding_windows",
]
