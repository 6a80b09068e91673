"""Synthetic shapes on textured backgrounds: a dataset that needs no download.

Every image holds one large "dominant" object and up to `max_objects - 1` small ones, each a
shape (circle, square, triangle, ...) whose class is its shape. Colours are drawn independently
of the class, so a model must learn shapes, not colours; backgrounds are low-saturation stripes
and noise. Objects never overlap, so each object's mask is exactly the shape drawn, and its box
is the tight bounding box of its mask pixels. One generator feeds all three tasks:
classification (`label` is the dominant object's class), detection (every object) and
segmentation (masks of 1-based class ids, 0 background).

Example i depends only on `(seed, i)`: `synthetic(10, seed=3).examples[:5]` equals
`synthetic(5, seed=3).examples`.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.data.examples import DatasetSource, Example, parse_class_list

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "crescent")

# Saturated object colours (RGB); the backgrounds are greyish, so objects stand out by any of them.
_COLOURS = np.array(
    [
        (230, 40, 40), (40, 200, 60), (40, 90, 230), (240, 220, 40), (230, 60, 220),
        (40, 220, 230), (250, 140, 20), (150, 60, 240), (250, 250, 250), (20, 20, 20),
    ],
    np.float32,
)
# The dominant object's side, and the small objects', as fractions of the image's shorter side.
_DOMINANT_SIZE = (0.45, 0.75)
_SMALL_SIZE = (0.15, 0.3)
_PLACEMENT_TRIES = 20
# Below 6 pixels a ring's hole or a crescent's bite can swallow the whole shape.
_MIN_SIDE = 6


def _unit_polygon(shape):
    """The shape's outline(s) in the unit square [0, 1]^2 as (x, y) points, or None for curves."""
    if shape == "square":
        return [[(0, 0), (1, 0), (1, 1), (0, 1)]]
    if shape == "triangle":
        return [[(0.5, 0), (1, 1), (0, 1)]]
    if shape == "diamond":
        return [[(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]]
    if shape == "cross":
        a, b = 1 / 3, 2 / 3
        return [[(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]]
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
        return [list(zip(0.5 + radii * np.cos(angles), 0.5 + radii * np.sin(angles) * 1.05 + 0.03))]
    return None


def _shape_mask(shape, height, width):
    """A bool `[height, width]` mask of `shape` filling its box as far as the shape does."""
    canvas = np.zeros((height, width), np.uint8)
    scale = np.array([width - 1, height - 1], np.float64)
    polygons = _unit_polygon(shape)
    if polygons is not None:
        points = [np.round(np.array(polygon) * scale).astype(np.int32) for polygon in polygons]
        cv2.fillPoly(canvas, points, 1, lineType=cv2.LINE_8)
        return canvas.astype(bool)
    centre = (int(round((width - 1) / 2)), int(round((height - 1) / 2)))
    axes = (max(1, (width - 1) // 2), max(1, (height - 1) // 2))
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8)
    if shape == "ring":
        inner = (max(1, int(axes[0] * 0.5)), max(1, int(axes[1] * 0.5)))
        cv2.ellipse(canvas, centre, inner, 0, 0, 360, 0, thickness=-1, lineType=cv2.LINE_8)
    elif shape == "crescent":
        bite = (centre[0] + max(1, int(round(axes[0] * 0.55))), centre[1] - max(1, int(round(axes[1] * 0.25))))
        cv2.ellipse(canvas, bite, axes, 0, 0, 360, 0, thickness=-1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def _background(rng, height, width):
    """Greyish stripes at a random angle and frequency, plus pixel noise; float32 [H, W, 3]."""
    base = rng.uniform(70, 180) + rng.uniform(-20, 20, size=3)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16)
    phase = (rows * np.sin(angle) + columns * np.cos(angle)) * (2 * np.pi / period)
    stripes = rng.uniform(10, 35) * np.sin(phase + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(0.6, 1.0, size=3)
    noise = rng.normal(0, rng.uniform(6, 18), size=(height, width, 3))
    return base[None, None, :] + stripes[..., None] * tint + noise


def _place(rng, height, width, size_range, taken):
    """A (top, left, h, w) box of a random size inside the image, disjoint from `taken`, or None."""
    short = min(height, width)
    for _ in range(_PLACEMENT_TRIES):
        side = rng.uniform(*size_range) * short
        aspect = np.sqrt(rng.uniform(0.75, 4 / 3))
        box_h = int(np.clip(round(side / aspect), _MIN_SIDE, height))
        box_w = int(np.clip(round(side * aspect), _MIN_SIDE, width))
        top = int(rng.integers(0, height - box_h + 1))
        left = int(rng.integers(0, width - box_w + 1))
        # One pixel of margin, so that no two objects touch and masks never merge.
        apart = (
            top + box_h + 1 <= other_top or other_top + other_h + 1 <= top
            or left + box_w + 1 <= other_left or other_left + other_w + 1 <= left
            for other_top, other_left, other_h, other_w in taken
        )
        if all(apart):
            return top, left, box_h, box_w
    return None


def _render(rng, height, width, shapes, max_objects):
    image = _background(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    boxes, classes, taken = [], [], []
    for index in range(int(rng.integers(1, max_objects + 1))):
        placement = _place(rng, height, width, _DOMINANT_SIZE if index == 0 else _SMALL_SIZE, taken)
        if placement is None:
            continue
        taken.append(placement)
        top, left, box_h, box_w = placement
        class_id = int(rng.integers(1, len(shapes) + 1))
        shape_mask = _shape_mask(shapes[class_id - 1], box_h, box_w)
        if not shape_mask.any():
            continue
        colour = _COLOURS[rng.integers(len(_COLOURS))] * rng.uniform(0.85, 1.0)
        window = (slice(top, top + box_h), slice(left, left + box_w))
        texture = rng.normal(0, 8, size=(box_h, box_w, 3))
        image[window][shape_mask] = (colour + texture)[shape_mask]
        mask[window][shape_mask] = class_id
        rows = np.flatnonzero(shape_mask.any(axis=1))
        columns = np.flatnonzero(shape_mask.any(axis=0))
        boxes.append((top + rows[0], left + columns[0], top + rows[-1] + 1, left + columns[-1] + 1))
        classes.append(class_id)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, np.array(boxes, np.float32), np.array(classes, np.int32), mask


def _check_count(value, name, largest=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or value > (largest or value):
        within = f"1..{largest} (the shapes {SHAPES})" if largest else "a positive int"
        raise ValueError(f"synthetic: {name} must be {within}, got {value!r}")


def synthetic(
    num_examples: int,
    *,
    image_size=(64, 64),
    num_classes: int = 4,
    max_objects: int = 3,
    seed: int = 0,
    shapes=None,
) -> DatasetSource:
    """`num_examples` images of shapes on textured backgrounds, with labels, boxes and masks.

    Args:
      num_examples: how many images (at least 1). They are generated now and held in memory
        (`num_examples * H * W * 4` bytes).
      image_size: `(height, width)` (or one int), at least 16 pixels each.
      num_classes: how many shape classes, 1 to 8: the first `num_classes` of `SHAPES`.
      max_objects: objects per image at most (at least 1); the first is the dominant one.
      seed: example i is a function of `(seed, i)` alone.
      shapes: names from `SHAPES` (`"ring,star"` or a list) to use instead of the first
        `num_classes`; `num_classes` is then their number and `class_source` "--classes".

    Returns:
      A `DatasetSource` for all three tasks, `class_names` the shape names, `class_source`
      "synthetic" (or "--classes" with `shapes`). Each example has `label` (0-based class of
      the dominant object), `boxes` (tight boxes of the mask pixels), `classes` (1-based),
      `difficult` (all False) and `mask`.

    Example:
      >>> source = synthetic(1000, image_size=(64, 64), num_classes=4, seed=0)
    """
    _check_count(num_examples, "num_examples")
    class_source = "synthetic"
    if shapes is not None:
        shapes = parse_class_list(shapes)
        unknown = [shape for shape in shapes if shape not in SHAPES]
        if unknown:
            raise ValueError(f"synthetic: shapes must be among {SHAPES}, got {unknown}")
        num_classes, class_source = len(shapes), "--classes"
    _check_count(num_classes, "num_classes", largest=len(SHAPES))
    _check_count(max_objects, "max_objects")
    shapes = shapes or SHAPES[:num_classes]
    height, width = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if min(height, width) < 16:
        raise ValueError(f"synthetic: image_size must be at least 16 x 16, got {image_size!r}")
    examples = []
    for index in range(num_examples):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index])
        image, boxes, classes, mask = _render(rng, int(height), int(width), shapes, int(max_objects))
        examples.append(
            Example(
                image=image, label=int(classes[0]) - 1, boxes=boxes, classes=classes, mask=mask,
                source=f"synthetic:#{index}",
            )
        )
    return DatasetSource(
        examples=examples,
        class_names=shapes,
        task_kinds=("classification", "detection", "segmentation"),
        class_source=class_source,
        origin=f"synthetic ({num_examples} images {height}x{width}, seed {seed})",
    )
