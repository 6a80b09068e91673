"""PASCAL VOC readers: detection from Annotations/*.xml, segmentation from SegmentationClass/*.png.

The directory is one year of the VOC devkit (`VOCdevkit/VOC2012`), holding `JPEGImages/`,
`Annotations/`, `SegmentationClass/` and `ImageSets/{Main,Segmentation}/<split>.txt`.

Detection also reads a folder without `ImageSets` (LabelImg's layout): `Annotations/*.xml` with
the images in `JPEGImages/`, or the XMLs beside their images in one folder. Every annotated
image is read, whatever the split (`split_lists` is False); `parse_dataset_spec` holds out a
seeded fraction for validation. An XML's image is its `<filename>` in the image folder, else the
image of the same stem, else its `<path>` (LabelImg writes the absolute path).

Boxes: VOC counts pixels from 1 and includes both ends; `layers.boxes.voc_to_yxyx` turns them
into the zoo's continuous `[ymin, xmin, ymax, xmax]` (`(xmin, ymin, xmax, ymax) = (1, 1, 10, 10)`
becomes `[0, 0, 10, 10]`). Segmentation PNGs are palette images read as class indices
(0 background, 1..20 the classes, 255 the void border kept as ignore).

Bad data:
  - a split list that is missing or names no image, an image id without its XML, JPEG or PNG,
    a LabelImg folder without XML or an XML without its image,
    malformed XML, an object without a name or numeric box: `DataError` naming the file;
  - a box of zero area or outside the image `<size>`, an object whose class is not in
    `--classes`, an image left with no object: skipped, counted in `skipped` and reported in
    one `DataWarning`;
  - found when the split is read, from the files' headers (never their pixels): an image
    whose size differs from its XML's `<size>`, a header that is unreadable, an image or mask
    of more than `max_image_pixels()` pixels, a JPEG cut short, a mask that is not 8-bit class
    ids (RGB, 16-bit) or whose size differs from its image's: `DataError` naming the file;
  - a mask pixel that is not a class id or 255: `DataError` naming the file when the example
    is loaded (that needs the pixels).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from layers.boxes import voc_to_yxyx
from training.data.examples import (
    PASCAL_VOC_CLASSES,
    DataError,
    DatasetSource,
    Example,
    SkipCounter,
    check_image_file,
    check_mask_file,
    parse_class_list,
    warn_truncated,
)
from training.data.folder import IMAGE_EXTENSIONS

logger = logging.getLogger("training.data")

CLASS_SOURCES = ("--classes", "pascal-voc-20", "found in annotations")


def _voc_root(root, needs):
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: VOC directory does not exist")
    missing = [name for name in needs if not (root / name).is_dir()]
    if missing:
        years = sorted(str(path) for path in root.glob("*/") if (path / "JPEGImages").is_dir())
        years += sorted(str(path) for path in root.glob("VOCdevkit/*/") if (path / "JPEGImages").is_dir())
        hint = f"; did you mean {' or '.join(years)}?" if years else ""
        raise DataError(f"{root}: not a VOC directory, it has no {', '.join(missing)}{hint}")
    return root


def _split_ids(root, kind, split, counter):
    path = root / "ImageSets" / kind / f"{split}.txt"
    if not path.is_file():
        folder = path.parent
        available = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
        raise DataError(f"{path}: split list does not exist (splits there: {available or 'none'})")
    ids, seen = [], set()
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] in seen:
            counter.skip("image listed twice in the split", path)
            continue
        seen.add(fields[0])
        ids.append(fields[0])
    if not ids:
        raise DataError(f"{path}: empty dataset, the split list names no image")
    return ids


def _labelimg_pairs(root):
    """[(xml_path, image_path)] of a folder without ImageSets, and a line for the log."""
    xml_folder = root / "Annotations" if (root / "Annotations").is_dir() else root
    image_folder = root / "JPEGImages" if (root / "JPEGImages").is_dir() else xml_folder
    xml_paths = sorted(xml_folder.glob("*.xml"))
    if not xml_paths:
        raise DataError(
            f"{root}: not a VOC directory: no ImageSets, and no annotation XML in {xml_folder} "
            "(LabelImg's layout: Annotations/*.xml with JPEGImages/, or the XMLs beside their images)"
        )
    pairs = []
    for xml_path in xml_paths:
        try:
            tree = ElementTree.parse(xml_path)
        except ElementTree.ParseError as error:
            raise DataError(f"{xml_path}: malformed XML: {error}") from None
        named = (tree.findtext("filename") or "").strip()
        candidates = [image_folder / named] if named else []
        candidates += [image_folder / (xml_path.stem + ext) for ext in IMAGE_EXTENSIONS]
        candidates += [image_folder / (xml_path.stem + ext.upper()) for ext in IMAGE_EXTENSIONS]
        written = (tree.findtext("path") or "").strip()
        candidates += [Path(written)] if written else []
        image_path = next((path for path in candidates if path.is_file()), None)
        if image_path is None:
            raise DataError(
                f"{xml_path}: its image ({named or xml_path.stem + '.*'}) is not in {image_folder}"
                + (f" nor at {written}" if written else "")
            )
        pairs.append((xml_path, image_path, tree))
    used = {image_path.resolve() for _, image_path, _ in pairs}
    unannotated = sum(
        1 for path in image_folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.resolve() not in used
    )
    note = f"no ImageSets: {len(pairs)} annotated images" + (
        f" ({unannotated} images without XML left out)" if unannotated else ""
    )
    return pairs, note


def _split_pairs(root, split, counter):
    """[(xml_path, image_path, tree)] of the ids that a split list names."""
    pairs = []
    for image_id in _split_ids(root, "Main", split, counter):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        if not xml_path.is_file():
            raise DataError(f"{xml_path}: annotation file does not exist (listed in the split)")
        try:
            tree = ElementTree.parse(xml_path)
        except ElementTree.ParseError as error:
            raise DataError(f"{xml_path}: malformed XML: {error}") from None
        pairs.append((xml_path, _image_path(root, image_id), tree))
    return pairs


def _image_path(root, image_id):
    path = root / "JPEGImages" / f"{image_id}.jpg"
    if not path.is_file():
        raise DataError(f"{path}: image file does not exist (listed in the split)")
    return path


def _size(tree, xml_path, image_path, truncated):
    """`(height, width)` of the image from its header (`check_image_file`), which `<size>`, where
    the XML has one, must agree with. Appends the image to `truncated` when it is a JPEG cut short."""
    header = check_image_file(image_path)
    if header.truncated:
        truncated.append(image_path)
    try:
        width = int(float(tree.findtext("size/width")))
        height = int(float(tree.findtext("size/height")))
    except (TypeError, ValueError):
        return header.size
    if width > 0 and height > 0 and (height, width) != header.size:
        raise DataError(
            f"{image_path}: the image is {header.size[0]}x{header.size[1]} (height x width) but its annotation "
            f"{xml_path} says {height}x{width}"
        )
    return header.size


def _objects(tree, xml_path):
    """[(name, (xmin, ymin, xmax, ymax), difficult)] of one annotation, or DataError."""
    objects = []
    for number, node in enumerate(tree.iter("object"), start=1):
        name = (node.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{xml_path}: object #{number} has no <name>")
        try:
            box = tuple(float(node.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DataError(
                f"{xml_path}: object #{number} ({name!r}) needs a <bndbox> with numeric xmin, ymin, xmax, ymax"
            ) from None
        if not all(np.isfinite(box)):
            raise DataError(f"{xml_path}: object #{number} ({name!r}) has a non-finite box {box}")
        flag = (node.findtext("difficult") or "0").strip()
        try:
            difficult = bool(int(float(flag)))
        except ValueError:
            raise DataError(
                f"{xml_path}: object #{number} ({name!r}) has <difficult>{flag}</difficult>, expected 0 or 1"
            ) from None
        objects.append((name, box, difficult))
    return objects


def choose_class_names(found, classes=None):
    """`(class_names, class_source)` by the rules: `classes` if given ("--classes"); else the 20
    PASCAL classes in the devkit's order when every name found is one of them ("pascal-voc-20");
    else the names found, sorted ("found in annotations")."""
    if classes is not None:
        return parse_class_list(classes), "--classes"
    found = set(found)
    if found <= set(PASCAL_VOC_CLASSES):
        return PASCAL_VOC_CLASSES, "pascal-voc-20"
    return tuple(sorted(found)), "found in annotations"


def read_voc_detection(root, split="train", *, classes=None, keep_difficult=True) -> DatasetSource:
    """The detection examples of a VOC split: boxes, 1-based classes and difficult flags.

    Args:
      root: the year directory (`VOCdevkit/VOC2007`), or a LabelImg folder without
        `ImageSets` (see the module docstring), whose every annotated image is read.
      split: `ImageSets/Main/<split>.txt` lists the image ids; not used without ImageSets.
      classes: `"a,b,c"` or a list: the class names, in id order; objects of other classes are
        skipped (counted). None: the 20 PASCAL classes when the annotations use only those
        names, else the sorted names found. `class_source` says which rule applied.
      keep_difficult: keep objects flagged difficult (their `difficult` is True, so that
        evaluation can ignore them); False drops them.

    Returns:
      A `DatasetSource` for "detection" whose examples name their XML as `source` and carry
      the XML's `<size>`, which `load_image` checks.

    Raises:
      DataError: naming the file, for the problems in the module docstring.
    """
    root = Path(root).expanduser()
    labelimg = root.is_dir() and not (root / "ImageSets").is_dir() and (
        (root / "Annotations").is_dir() or any(root.glob("*.xml"))
    )
    split_lists = not labelimg
    if split_lists:
        root = _voc_root(root, ("Annotations", "JPEGImages", "ImageSets"))
        origin = f"voc:{root} ({split}, detection)"
        counter = SkipCounter(origin)
        pairs = _split_pairs(root, split, counter)
    else:
        pairs, note = _labelimg_pairs(root)
        origin = f"voc:{root} ({note}, detection)"
        counter = SkipCounter(origin)
    truncated = []
    records = [
        (xml_path, image_path, _size(tree, xml_path, image_path, truncated), _objects(tree, xml_path))
        for xml_path, image_path, tree in pairs
    ]
    warn_truncated(origin, truncated)

    class_names, class_source = choose_class_names((name for *_, objects in records for name, _, _ in objects), classes)
    ids = {name: index + 1 for index, name in enumerate(class_names)}
    voc_boxes = np.array([box for *_, objects in records for _, box, _ in objects], np.float32).reshape(-1, 4)
    all_boxes = voc_to_yxyx(voc_boxes).numpy() if len(voc_boxes) else voc_boxes
    examples, start = [], 0
    for xml_path, image_path, (height, width), objects in records:
        boxes, start = all_boxes[start:start + len(objects)], start + len(objects)
        keep = []
        for (name, _, difficult), box in zip(objects, boxes):
            if box[2] <= box[0] or box[3] <= box[1]:
                counter.skip("box of zero area", xml_path)
            elif box[0] < 0 or box[1] < 0 or box[2] > height or box[3] > width:
                counter.skip("box outside its image", xml_path)
            elif name not in ids:
                counter.skip("object of a class not in --classes", xml_path)
            elif difficult and not keep_difficult:
                pass
            else:
                keep.append(True)
                continue
            keep.append(False)
        if not any(keep):
            counter.skip("image with no objects left", xml_path)
            continue
        keep = np.array(keep)
        examples.append(Example(
            image=str(image_path),
            boxes=boxes[keep],
            classes=np.array([ids[name] for (name, _, _), k in zip(objects, keep) if k], np.int32),
            difficult=np.array([difficult for (_, _, difficult), k in zip(objects, keep) if k], bool),
            source=str(xml_path),
            size=(height, width),
        ))
    counter.warn()
    if not examples:
        listed = root / "ImageSets" / "Main" / f"{split}.txt" if split_lists else root
        raise DataError(f"{listed}: empty dataset, no {'listed' if split_lists else 'annotated'} image has a "
                        "usable object")
    logger.info("%s: %d images, classes %s", origin, len(examples), class_source)
    return DatasetSource(
        examples=examples, class_names=class_names, task_kinds=("detection",), class_source=class_source,
        skipped=dict(counter.counts), origin=origin, annotation_format="voc", split_lists=split_lists,
    )


def read_voc_segmentation(root, split="train", *, classes=None) -> DatasetSource:
    """The segmentation examples of a VOC split: JPEG images and palette-PNG class masks.

    Mask values are class ids: 0 background, `k` the class `class_names[k - 1]`, 255 ignore
    (VOC's void borders); a 1-bit PNG holds ids 0 and 1. Every image's and mask's header is
    checked here (`check_image_file`, `check_mask_file`: pixel limit, JPEG end marker, an 8-bit
    class-id mask of its image's size); the pixels are decoded when loaded (`load_image`,
    `load_mask`), where a mask value above the number of classes (and not 255) is a `DataError`
    naming the PNG.

    Args:
      root: the year directory (`VOCdevkit/VOC2012`).
      split: `ImageSets/Segmentation/<split>.txt` lists the image ids.
      classes: names for the mask ids 1, 2, ... (`"a,b,c"` or a list); None for the 20 PASCAL
        classes.

    Returns:
      A `DatasetSource` for "segmentation" whose examples name their PNG as `source`.
    """
    root = _voc_root(root, ("JPEGImages", "SegmentationClass", "ImageSets"))
    origin = f"voc:{root} ({split}, segmentation)"
    counter = SkipCounter(origin)
    examples, truncated = [], []
    for image_id in _split_ids(root, "Segmentation", split, counter):
        mask_path = root / "SegmentationClass" / f"{image_id}.png"
        if not mask_path.is_file():
            raise DataError(f"{mask_path}: mask file does not exist (listed in the split)")
        image_path = _image_path(root, image_id)
        header = check_image_file(image_path)
        if header.truncated:
            truncated.append(image_path)
        check_mask_file(mask_path, image_size=header.size, image_path=image_path)
        examples.append(Example(image=str(image_path), mask=str(mask_path), source=str(mask_path)))
    counter.warn()
    warn_truncated(origin, truncated)
    if classes is not None:
        class_names, class_source = parse_class_list(classes), "--classes"
    else:
        class_names, class_source = PASCAL_VOC_CLASSES, "pascal-voc-20"
    logger.info("%s: %d images, classes %s", origin, len(examples), class_source)
    return DatasetSource(
        examples=examples, class_names=class_names, task_kinds=("segmentation",), class_source=class_source,
        skipped=dict(counter.counts), origin=origin, annotation_format="voc",
    )
