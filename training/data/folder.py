"""A directory of class folders for classification: `root/<class>/<image>.jpg|png`.

Classes are the folder names, sorted (label i is `class_names[i]`), as in torchvision's
ImageFolder and keras' `image_dataset_from_directory`. Images are the folder's `.jpg`, `.jpeg`,
`.png`, `.bmp` and `.webp` files (any case), sorted; other files and nested folders are skipped
and counted. An empty class folder, or a root without class folders, is a `DataError`; so is an
image whose header is unreadable, declares more than `max_image_pixels()` pixels, or is a JPEG cut
short, found when the folder is read (`check_image_file` reads headers only, never pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.data.examples import (
    DataError,
    DatasetSource,
    Example,
    SkipCounter,
    check_image_file,
    parse_class_list,
    warn_truncated,
)

logger = logging.getLogger("training.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_folder(root, *, classes=None) -> DatasetSource:
    """The images under `root/<class>/` with their folder's index as `label`.

    Args:
      root: the directory holding one folder per class.
      classes: `"a,b,c"` or a list: use these folders, in this order (label i is the i-th);
        other folders are skipped and counted. None: every folder, sorted by name.

    Returns:
      A `DatasetSource` for "classification", `class_source` "folders" or "--classes".

    Raises:
      DataError: naming the directory, when `root` does not exist or has no class folders, or
        a class folder (given or found) has no image; naming the file, for an image that
        `check_image_file` refuses.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: image folder does not exist")
    origin = f"folder:{root}"
    counter = SkipCounter(origin)
    folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if classes is None:
        class_names, class_source = tuple(path.name for path in folders), "folders"
        if not class_names:
            raise DataError(f"{root}: empty dataset, no class folders (expected {root}/<class>/<image>.jpg)")
    else:
        class_names, class_source = parse_class_list(classes), "--classes"
        missing = [name for name in class_names if not (root / name).is_dir()]
        if missing:
            raise DataError(f"{root}: no folder for the classes {missing} (folders: {[p.name for p in folders]})")
        for path in folders:
            if path.name not in class_names:
                counter.skip("folder not in --classes", path)
    examples = []
    for label, name in enumerate(class_names):
        folder = root / name
        images = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                counter.skip("file or folder that is not an image", path)
        if not images:
            raise DataError(f"{folder}: class folder has no {'/'.join(IMAGE_EXTENSIONS)} images")
        examples.extend(Example(image=str(path), label=label, source=str(path)) for path in images)
    truncated = [example.image for example in examples if check_image_file(example.image).truncated]
    counter.warn()
    warn_truncated(origin, truncated)
    logger.info("%s: %d images, %d classes from %s", origin, len(examples), len(class_names), class_source)
    return DatasetSource(
        examples=examples, class_names=class_names, task_kinds=("classification",), class_source=class_source,
        skipped=dict(counter.counts), origin=origin,
    )
