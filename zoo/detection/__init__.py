"""Detection: region proposals, the Fast / Faster R-CNN detectors and their post-processing.

- `proposals`: selective search (OpenCV), sliding windows and the anchor grid of an RPN.
- `fast_rcnn`, `faster_rcnn`, `rpn`: the registered detectors; `postprocess`: per-class NMS.
- `faster_rcnn_fpn`: torchvision's `fasterrcnn_resnet50_fpn` (`faster_rcnn_resnet50_fpn`), layers
  named by torchvision's module paths, its resize and normalisation in the graph.
- `svd`: the truncated-SVD fc layers of Fast R-CNN's section 3.1 (imported here so that a
  compressed model's `.keras` file loads after `import zoo`).
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
