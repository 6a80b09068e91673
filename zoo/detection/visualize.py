"""Drawing detections on an image: one colour per class, a label with the score above each box.

Shapes: D detections. Boxes are `[ymin, xmin, ymax, xmax]` in the image's pixels, classes
1-based (0 is background and never drawn), as every detector of the zoo returns them.
"""

from __future__ import annotations

import cv2
import numpy as np


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The RGB colour of a 1-based class: PASCAL VOC's palette (bit-interleaved class index)."""
    r = g = b = 0
    value = int(class_id)
    for shift in range(7, -1, -1):
        r |= ((value >> 0) & 1) << shift
        g |= ((value >> 1) & 1) << shift
        b |= ((value >> 2) & 1) << shift
        value >>= 3
    return r, g, b


def draw_detections(image, boxes, scores, classes, *, class_names=None, score_threshold=0.0, thickness=2):
    """A copy of `image` with the detections drawn.

    Args:
      image: `[H, W, 3]` uint8 RGB.
      boxes: `[D, 4]` pixels. scores: `[D]`. classes: `[D]` 1-based ints.
      class_names: names of classes 1..K (index k - 1 names class k), or None for "class k".
      score_threshold: detections below it are not drawn.
      thickness: of the box outline, in pixels.

    Returns:
      `[H, W, 3]` uint8 RGB.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_detections: image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    classes = np.asarray(classes).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(
            f"draw_detections: boxes, scores and classes must have one row per detection, got "
            f"{len(boxes)}, {len(scores)} and {len(classes)}"
        )
    canvas = np.ascontiguousarray(image.copy())
    height, width = canvas.shape[:2]
    # Lowest score first, so the most confident boxes end up on top.
    for index in np.argsort(scores, kind="stable"):
        if scores[index] < score_threshold or classes[index] < 1:
            continue
        ymin, xmin, ymax, xmax = boxes[index]
        top_left = (int(np.clip(round(xmin), 0, width - 1)), int(np.clip(round(ymin), 0, height - 1)))
        bottom_right = (int(np.clip(round(xmax), 0, width - 1)), int(np.clip(round(ymax), 0, height - 1)))
        colour = class_colour(classes[index])
        cv2.rectangle(canvas, top_left, bottom_right, colour, thickness)
        name = class_names[classes[index] - 1] if class_names is not None else f"class {classes[index]}"
        label = f"{name} {scores[index]:.2f}"
        (text_width, text_height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        text_top = max(0, top_left[1] - text_height - baseline - 2)
        cv2.rectangle(
            canvas, (top_left[0], text_top), (top_left[0] + text_width + 2, text_top + text_height + baseline + 2),
            colour, cv2.FILLED,
        )
        # Black or white text, whichever reads better on the class colour.
        text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(
            canvas, label, (top_left[0] + 1, text_top + text_height + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
            text_colour, 1, cv2.LINE_AA,
        )
    return canvas
