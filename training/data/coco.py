"""COCO reader: an instances JSON (`instances_val2017.json`) -> detection or segmentation examples.

The JSON is read with pycocotools, which the zoo does not install by default
(`pip install zoo[coco]`, or `pip install pycocotools`); it is imported when a JSON is read.

The JSON is the split: COCO ships one file per split (`instances_train2017.json`,
`instances_val2017.json`), so `read_coco` takes no split name. Images' `file_name`s resolve
against `images` (default: the JSON's folder).

Classes: the categories in the JSON's order, with their names; their ids may be sparse and
arbitrary (COCO's run 1..90 with gaps) and become the zoo's 1-based ids 1..K in that order.
`classes` ("a,b,c" or a list of category names) picks and orders a subset.

Boxes: COCO's `[x, y, width, height]` (top-left corner, continuous pixels) become the zoo's
`[ymin, xmin, ymax, xmax]`: `[x, y, w, h] = [5, 10, 20, 30]` is `[10, 5, 40, 25]`.
`iscrowd` annotations are kept with `Example.crowd` set: training leaves them out
(`make_dataset`), evaluation ignores the detections on them, as COCO's evaluation does.

Masks (segmentation): each image's polygons and RLEs drawn by pycocotools' `annToMask` when the
example is loaded: class ids 1..K, 0 the background, 255 (ignore) on crowd regions and where two
objects of different classes overlap (as torchvision's COCO segmentation reference does).

Bad data:
  - a file that is missing or not JSON, a JSON without "images", "annotations" or
    "categories", duplicate category names, an annotation of an unknown image or category,
    a `bbox` that is not four finite numbers, an image without `file_name`, `height` or
    `width`, a `--classes` name that is no category: `DataError` naming the file;
  - a box of zero area or outside its image, an object of a class not in `--classes`, an
    image left with no object (crowds do not count): skipped, counted in `skipped` and
    reported in one `DataWarning`;
  - found when the JSON is read, from the image files' headers (never their pixels): an image
    file that is missing or unreadable, whose size differs from the JSON's, of more than
    `max_image_pixels()` pixels, or a JPEG cut short: `DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from training.data.examples import (
    IGNORE_LABEL,
    DataError,
    DatasetSource,
    Example,
    SkipCounter,
    check_image_file,
    parse_class_list,
    warn_truncated,
)

logger = logging.getLogger("training.data")


def _pycocotools_coco():
    try:
        from pycocotools.coco import COCO
    except ImportError as error:
        raise ImportError(
            "reading COCO JSON needs pycocotools, which the zoo does not install by default: "
            "pip install zoo[coco] (or pip install pycocotools)"
        ) from error
    return COCO


def _load(path):
    """The pycocotools `COCO` of `path`, or `DataError` naming the file."""
    COCO = _pycocotools_coco()
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file does not exist")
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a COCO JSON file: {error}") from None
    if not isinstance(dataset, dict):
        raise DataError(f"{path}: a COCO JSON file holds an object, got a {type(dataset).__name__}")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(dataset.get(key), list)]
    if missing:
        raise DataError(f"{path}: not a COCO instances file, it has no list {', '.join(repr(k) for k in missing)}")
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco.createIndex()
    except (KeyError, TypeError) as error:
        raise DataError(f"{path}: malformed COCO JSON, an entry lacks {error}") from None
    return coco


def _categories(coco, path, classes):
    """`(class_names, class_source, {category id: zoo class id})`."""
    names = {}
    for category in coco.dataset["categories"]:
        name = str(category.get("name", "")).strip()
        if not name or "id" not in category:
            raise DataError(f"{path}: category {category!r} needs an id and a name")
        if name in names.values():
            raise DataError(f"{path}: two categories are named {name!r}; class names must be distinct")
        names[category["id"]] = name
    if not names:
        raise DataError(f"{path}: no categories")
    if classes is None:
        class_names, class_source = tuple(names.values()), "coco categories"
    else:
        class_names, class_source = parse_class_list(classes), "--classes"
        unknown = [name for name in class_names if name not in names.values()]
        if unknown:
            raise DataError(f"{path}: --classes {unknown} are no category of the file (it has {list(names.values())})")
    zoo_ids = {name: index + 1 for index, name in enumerate(class_names)}
    return class_names, class_source, {cid: zoo_ids[name] for cid, name in names.items() if name in zoo_ids}


def _image_record(image, path):
    try:
        file_name, height, width = image["file_name"], int(image["height"]), int(image["width"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: image {image.get('id')!r} needs a file_name and integer height and width") from None
    if height < 1 or width < 1:
        raise DataError(f"{path}: image {image.get('id')!r} ({file_name}) has size {height}x{width}")
    return file_name, height, width


def _box(annotation, path):
    """COCO `[x, y, w, h]` -> `[ymin, xmin, ymax, xmax]`, or `DataError` naming the file."""
    bbox = annotation.get("bbox")
    try:
        x, y, width, height = (float(value) for value in bbox)
    except (TypeError, ValueError):
        raise DataError(
            f"{path}: annotation {annotation.get('id')!r} has bbox {bbox!r}, expected [x, y, width, height]"
        ) from None
    if not all(math.isfinite(value) for value in (x, y, width, height)):
        raise DataError(f"{path}: annotation {annotation.get('id')!r} has a non-finite bbox {bbox!r}")
    return [y, x, y + height, x + width]


class CocoMask:
    """The class-id mask of one COCO image, drawn from its polygons and RLEs when called.

    A callable `Example.mask` (see `load_mask`): masks are drawn per image when the pipeline
    loads it, so a reader of COCO's 118k training images holds no masks in memory.
    """

    def __init__(self, coco, annotations, class_ids, size, *, source):
        self.coco, self.annotations, self.class_ids = coco, annotations, class_ids
        self.size, self.source = tuple(size), source

    def __call__(self) -> np.ndarray:
        mask = np.zeros(self.size, np.uint8)
        crowd = np.zeros(self.size, bool)
        for annotation, class_id in zip(self.annotations, self.class_ids):
            try:
                drawn = self.coco.annToMask(annotation).astype(bool)
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise DataError(f"{self.source}: annotation {annotation.get('id')!r} has no usable segmentation "
                                f"(polygons or RLE): {error!r}") from None
            if drawn.shape != self.size:
                raise DataError(f"{self.source}: annotation {annotation.get('id')!r} draws a {drawn.shape} mask on "
                                f"a {self.size} image")
            if annotation.get("iscrowd"):
                crowd |= drawn
                continue
            clash = drawn & (mask != 0) & (mask != class_id)
            mask[drawn & (mask == 0)] = class_id
            mask[clash] = IGNORE_LABEL
        mask[crowd] = IGNORE_LABEL
        return mask

    def __repr__(self):
        return f"CocoMask({self.source}, {len(self.annotations)} annotations)"


def read_coco(path, *, images=None, classes=None, task="detection") -> DatasetSource:
    """The examples of one COCO instances JSON (which is the split: see the module docstring).

    Args:
      path: the JSON (`annotations/instances_val2017.json`).
      images: the folder the images' `file_name`s are relative to; None for the JSON's folder.
      classes: `"a,b,c"` or a list of category names: the classes, in id order; annotations of
        other categories are skipped (counted). None: every category, in the file's order.
      task: "detection" (boxes, with crowd flags and COCO's areas) or "segmentation" (masks
        drawn from the polygons and RLEs).

    Returns:
      A `DatasetSource` whose examples name the JSON and the image as `source` and carry the
      JSON's `(height, width)`, which the image file's header must agree with.

    Raises:
      DataError: naming the file, for the problems in the module docstring.
      ImportError: pycocotools is not installed (`pip install zoo[coco]`).

    Example:
      >>> source = read_coco("coco/annotations/instances_val2017.json", images="coco/val2017")
    """
    if task not in ("detection", "segmentation"):
        raise ValueError(f"read_coco: task must be 'detection' or 'segmentation', got {task!r}")
    path = Path(path).expanduser()
    folder = path.parent if images is None else Path(images).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: the images folder of {path} does not exist (--images DIR)")
    coco = _load(path)
    class_names, class_source, class_ids = _categories(coco, path, classes)
    origin = f"coco:{path} ({task})"
    counter = SkipCounter(origin)
    known_categories = {category["id"] for category in coco.dataset["categories"]}
    for annotation in coco.dataset["annotations"]:
        if annotation.get("image_id") not in coco.imgs:
            raise DataError(f"{path}: annotation {annotation.get('id')!r} names no image of the file "
                            f"(image_id {annotation.get('image_id')!r})")
        if annotation.get("category_id") not in known_categories:
            raise DataError(f"{path}: annotation {annotation.get('id')!r} has category_id "
                            f"{annotation.get('category_id')!r}, which is no category of the file")
    examples, truncated = [], []
    for image_id, image in coco.imgs.items():
        file_name, height, width = _image_record(image, path)
        where = f"{path} (image {image_id}, {file_name})"
        kept, boxes, zoo_classes, crowd, areas = [], [], [], [], []
        for annotation in coco.imgToAnns.get(image_id, []):
            box = _box(annotation, path)
            if annotation["category_id"] not in class_ids:
                counter.skip("object of a class not in --classes", where)
            elif box[2] <= box[0] or box[3] <= box[1]:
                counter.skip("box of zero area", where)
            elif box[0] < -1e-3 or box[1] < -1e-3 or box[2] > height + 1e-3 or box[3] > width + 1e-3:
                counter.skip("box outside its image", where)
            else:
                kept.append(annotation)
                boxes.append(np.clip(box, 0, [height, width, height, width]))
                zoo_classes.append(class_ids[annotation["category_id"]])
                crowd.append(bool(annotation.get("iscrowd", 0)))
                area = annotation.get("area")
                areas.append(float(area) if isinstance(area, (int, float)) else (box[2] - box[0]) * (box[3] - box[1]))
        if all(crowd):
            counter.skip("image with no objects left", where)
            continue
        image_path = str(folder / file_name)
        header = check_image_file(image_path)
        if header.size != (height, width):
            raise DataError(f"{image_path}: the image is {header.size[0]}x{header.size[1]} (height x width) but "
                            f"{path} says {height}x{width}")
        if header.truncated:
            truncated.append(image_path)
        if task == "detection":
            examples.append(Example(
                image=image_path, boxes=np.array(boxes, np.float32), classes=np.array(zoo_classes, np.int32),
                crowd=np.array(crowd, bool), area=np.array(areas, np.float32), source=where, size=(height, width),
            ))
        else:
            mask = CocoMask(coco, kept, zoo_classes, (height, width), source=where)
            examples.append(Example(image=image_path, mask=mask, source=where, size=(height, width)))
    counter.warn()
    warn_truncated(origin, truncated)
    if not examples:
        raise DataError(f"{path}: empty dataset, no image has a usable object")
    logger.info("%s: %d images, classes %s", origin, len(examples), class_source)
    return DatasetSource(
        examples=examples, class_names=class_names, task_kinds=(task,), class_source=class_source,
        skipped=dict(counter.counts), origin=origin, annotation_format="coco",
    )
