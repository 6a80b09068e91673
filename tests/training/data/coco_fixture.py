"""Writes a tiny COCO instances JSON with its images: sparse category ids listed out of id order,
a crowd annotation (uncompressed RLE, as COCO stores crowds), a polygon and a compressed RLE."""

import json
import pathlib

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# The file's category order (not sorted by id or name): the zoo's class ids 1, 2, 3.
CATEGORIES = [{"id": 17, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 90, "name": "kite"}]
SIZES = {1: (32, 40), 2: (36, 32), 3: (40, 40), 4: (32, 32), 5: (32, 36), 6: (36, 36), 7: (40, 32), 8: (32, 40)}


def _rle(height, width, top, left, bottom, right, *, compressed):
    pixels = np.zeros((height, width), np.uint8, order="F")
    pixels[top:bottom, left:right] = 1
    encoded = mask_utils.encode(np.asfortranarray(pixels))
    if compressed:
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}
    # Uncompressed RLE, as COCO writes crowds: run lengths in column-major order.
    flat = pixels.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [height, width], "counts": counts}


def annotations():
    """Every image gets two boxes; image 1 adds a crowd, image 2 uses a polygon and an RLE."""
    result = []

    def add(image_id, category_id, bbox, **extra):
        x, y, w, h = bbox
        result.append({"id": len(result) + 1, "image_id": image_id, "category_id": category_id,
                       "bbox": [float(v) for v in bbox], "area": float(w * h), "iscrowd": 0,
                       "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], **extra})

    for image_id, (height, width) in SIZES.items():
        add(image_id, 17, (2, 3, 12, 10))
        add(image_id, 90 if image_id % 2 else 3, (width - 16, height - 14, 14, 12))
    # Image 1: a crowd of cats (uncompressed RLE) over the top right.
    height, width = SIZES[1]
    result.append({"id": len(result) + 1, "image_id": 1, "category_id": 3, "bbox": [24.0, 0.0, 16.0, 8.0],
                   "area": 128.0, "iscrowd": 1,
                   "segmentation": _rle(height, width, 0, 24, 8, 40, compressed=False)})
    # Image 2: a triangle polygon (area of the segment, not of the box) and a compressed RLE.
    result.append({"id": len(result) + 1, "image_id": 2, "category_id": 90, "bbox": [16.0, 2.0, 12.0, 12.0],
                   "area": 72.0, "iscrowd": 0, "segmentation": [[16, 2, 28, 2, 16, 14]]})
    height, width = SIZES[2]
    result.append({"id": len(result) + 1, "image_id": 2, "category_id": 3, "bbox": [2.0, 20.0, 8.0, 10.0],
                   "area": 80.0, "iscrowd": 0, "segmentation": _rle(height, width, 20, 2, 30, 10, compressed=True)})
    return result


def write_coco(root, *, images_folder=None):
    """`root/annotations.json` and its images (in `images_folder`, default beside the JSON)."""
    root = pathlib.Path(root)
    folder = pathlib.Path(images_folder) if images_folder else root
    folder.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for image_id, (height, width) in SIZES.items():
        name = f"{image_id:012d}.png"
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / name), pixels)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    dataset = {"images": images, "annotations": annotations(), "categories": CATEGORIES}
    path = root / "annotations.json"
    path.write_text(json.dumps(dataset))
    return path
