"""Writes a small VOC-layout directory: JPEGs, XML with 1-based boxes and the difficult flag,
palette PNG masks with 255 borders, and split lists."""

import pathlib

import cv2
import numpy as np
from PIL import Image

from training.data import PASCAL_VOC_CLASSES

# id -> (height, width, [(name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)])
VOC_IMAGES = {
    "2008_000001": (30, 40, [("dog", (1, 1, 10, 12), 0), ("person", (20, 5, 40, 30), 1)]),
    "2008_000002": (24, 32, [("cat", (6, 5, 15, 20), 0)]),
    "2008_000003": (20, 20, [("dog", (3, 4, 18, 16), 0), ("dog", (1, 1, 2, 2), 0)]),
}
# The same boxes as [ymin, xmin, ymax, xmax] in continuous 0-based pixels, worked out by hand.
EXPECTED_BOXES = {
    "2008_000001": [[0, 0, 12, 10], [4, 19, 30, 40]],
    "2008_000002": [[4, 5, 20, 15]],
    "2008_000003": [[3, 2, 16, 18], [0, 0, 2, 2]],
}


def voc_palette():
    """The devkit's colour map: class k's colour from the bits of k."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [red, green, blue]
    return palette


def annotation_xml(image_id, height, width, objects):
    parts = [f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def class_mask(height, width, objects):
    """Each object's box filled with its VOC class id, ringed by a 1-pixel 255 border."""
    mask = np.zeros((height, width), np.uint8)
    for name, (xmin, ymin, xmax, ymax), _ in objects:
        if name not in PASCAL_VOC_CLASSES:
            continue
        mask[max(ymin - 2, 0):ymax + 1, max(xmin - 2, 0):xmax + 1] = 255
        mask[ymin - 1:ymax, xmin - 1:xmax] = PASCAL_VOC_CLASSES.index(name) + 1
    return mask


def save_palette_png(path, mask):
    """Class ids as palette indices. Without a full palette Pillow may renumber the indices."""
    png = Image.fromarray(mask, mode="P")
    png.putpalette(voc_palette())
    png.save(path)


def write_voc(root, images=VOC_IMAGES, splits=None):
    root = pathlib.Path(root)
    for folder in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (height, width, objects) in images.items():
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), pixels)
        (root / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, height, width, objects))
        save_palette_png(root / "SegmentationClass" / f"{image_id}.png", class_mask(height, width, objects))
    splits = splits or {"train": list(images)[:2], "val": list(images)[2:]}
    for split, ids in splits.items():
        text = "".join(f"{image_id}\n" for image_id in ids)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(text)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(text)
    return root
