"""Detection: region proposals now; the Fast / Faster R-CNN assembly and post-processing join here.

- `proposals`: selective search (OpenCV), sliding windows and the anchor grid of an RPN.
"""

from zoo.detection import proposals
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
