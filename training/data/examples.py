"""Examples, dataset sources, image and mask loading, and the errors bad data raises.

Shapes: H x W images, n objects. An `Example` is one image with whatever labels it has; a
`DatasetSource` is a list of them with the class names they index. Readers (`voc`, `folder`,
`synthetic`) build sources; `pipeline.make_dataset` turns one into a `tf.data.Dataset`.

Conventions (the zoo's, in every package): images RGB uint8 `[H, W, 3]`; boxes
`[ymin, xmin, ymax, xmax]` float32 in continuous image pixels; detection class ids 1-based with
0 the background; segmentation masks uint8 class ids, 0 the background, 255 "ignore";
classification labels 0-based. `class_names` never includes the background.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger("training.data")

TASKS = ("classification", "detection", "segmentation")
IGNORE_LABEL = 255

# The 20 PASCAL VOC object classes in the devkit's order; their 1-based ids are VOC's mask ids.
PASCAL_VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


class DataError(ValueError):
    """A file or example that cannot be used as it is; the message names it."""


class DataWarning(UserWarning):
    """Data was skipped; the message gives the counts and the first files."""


# --------------------------------------------------------------------------- examples


def _array(value, dtype, *, name, source, shape_text, ndim, last=None):
    array = np.asarray(value)
    if array.size == 0:
        array = array.reshape((0,) + ((last,) if last else ()))
    wrong_shape = array.ndim != ndim or (last is not None and array.shape[-1] != last)
    if wrong_shape or (array.size and not _castable(array, dtype)):
        raise DataError(f"{source}: {name} must be {shape_text}, got shape {array.shape} dtype {array.dtype}")
    return array.astype(dtype, copy=False)


def _castable(array, dtype):
    if np.dtype(dtype) == np.bool_:
        return array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.issubdtype(array.dtype, np.integer) or (
            np.issubdtype(array.dtype, np.floating) and np.all(np.equal(np.mod(array, 1), 0))
        )
    return np.issubdtype(array.dtype, np.number)


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One image and its labels. Arrays are checked and converted on construction.

    Attributes:
      image: a file path (decoded by `load_image`) or an RGB uint8 `[H, W, 3]` array.
      label: the 0-based class index for classification, or None.
      boxes: float32 `[n, 4]` `[ymin, xmin, ymax, xmax]` in image pixels, or None.
      classes: int32 `[n]` 1-based object class ids, aligned with `boxes`, or None.
      difficult: bool `[n]` (VOC's flag; all False where a source has none), or None.
      crowd: bool `[n]`: COCO's `iscrowd`, a box around a crowd of objects. Training leaves it
        out (`make_dataset`) and evaluation ignores detections on it, as COCO does. All False
        where a source has none (None without boxes).
      area: float32 `[n]` object areas in image pixels where the annotation gives them (COCO's
        `area`, of the segment rather than the box), used for COCO's small/medium/large
        ranges; None: the boxes' areas.
      mask: a PNG path (decoded by `load_mask`), a uint8 `[H, W]` array of class ids
        (0 background, 255 ignore), a callable returning such an array (a mask drawn from
        polygons when loaded), or None.
      source: the file (or "synthetic:#i") that error messages name.
      size: `(height, width)` the annotation declares, or None; `load_image` checks the decoded
        image against it, so boxes are never applied to an image of another size.
    """

    image: str | np.ndarray
    label: int | None = None
    boxes: np.ndarray | None = None
    classes: np.ndarray | None = None
    difficult: np.ndarray | None = None
    mask: str | np.ndarray | Callable[[], np.ndarray] | None = None
    source: str = ""
    size: tuple[int, int] | None = None
    crowd: np.ndarray | None = None
    area: np.ndarray | None = None

    def __post_init__(self):
        source = self.source or (self.image if isinstance(self.image, str) else "<array example>")
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("source", str(source))
        if isinstance(self.image, os.PathLike):
            set_("image", os.fspath(self.image))
        if isinstance(self.mask, os.PathLike):
            set_("mask", os.fspath(self.mask))
        if not isinstance(self.image, str):
            image = np.asarray(self.image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise DataError(
                    f"{source}: image must be RGB uint8 [H, W, 3], got shape {image.shape} dtype {image.dtype}"
                )
            set_("image", image)
        if self.mask is not None and not isinstance(self.mask, str) and not callable(self.mask):
            mask = np.asarray(self.mask)
            if mask.dtype != np.uint8 or mask.ndim != 2:
                raise DataError(
                    f"{source}: mask must be uint8 [H, W] class ids, got shape {mask.shape} dtype {mask.dtype}"
                )
            set_("mask", mask)
        if self.label is not None:
            if isinstance(self.label, bool) or not isinstance(self.label, (int, np.integer)):
                raise DataError(f"{source}: label must be an int class index, got {self.label!r}")
            set_("label", int(self.label))
        if (self.boxes is None) != (self.classes is None):
            raise DataError(f"{source}: boxes and classes come together (one of them is None)")
        if self.boxes is not None:
            boxes = _array(
                self.boxes, np.float32, name="boxes", source=source, shape_text="[n, 4] (ymin, xmin, ymax, xmax)",
                ndim=2, last=4,
            )
            classes = _array(self.classes, np.int32, name="classes", source=source, shape_text="int [n]", ndim=1)
            if len(classes) != len(boxes):
                raise DataError(f"{source}: {len(boxes)} boxes but {len(classes)} classes")
            if not np.all(np.isfinite(boxes)):
                raise DataError(f"{source}: boxes must be finite, got {boxes.tolist()}")
            empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if np.any(empty):
                raise DataError(
                    f"{source}: box {boxes[np.argmax(empty)].tolist()} has zero area (need ymax > ymin, xmax > xmin)"
                )
            if np.any(classes < 1):
                raise DataError(f"{source}: object class ids are 1-based (0 is background), got {classes.tolist()}")
            difficult = np.zeros(len(boxes), bool) if self.difficult is None else self.difficult
            difficult = _array(difficult, np.bool_, name="difficult", source=source, shape_text="bool [n]", ndim=1)
            if len(difficult) != len(boxes):
                raise DataError(f"{source}: {len(boxes)} boxes but {len(difficult)} difficult flags")
            crowd = np.zeros(len(boxes), bool) if self.crowd is None else self.crowd
            crowd = _array(crowd, np.bool_, name="crowd", source=source, shape_text="bool [n]", ndim=1)
            if len(crowd) != len(boxes):
                raise DataError(f"{source}: {len(boxes)} boxes but {len(crowd)} crowd flags")
            if self.area is not None:
                area = _array(self.area, np.float32, name="area", source=source, shape_text="float [n]", ndim=1)
                if len(area) != len(boxes) or not np.all(np.isfinite(area)) or np.any(area < 0):
                    raise DataError(f"{source}: area must be {len(boxes)} finite areas >= 0, got {area.tolist()}")
                set_("area", area)
            set_("boxes", boxes)
            set_("classes", classes)
            set_("difficult", difficult)
            set_("crowd", crowd)
        elif self.difficult is not None or self.crowd is not None or self.area is not None:
            raise DataError(f"{source}: difficult, crowd or area flags without boxes")
        if self.size is not None:
            set_("size", (int(self.size[0]), int(self.size[1])))
        elif not isinstance(self.image, str):
            set_("size", tuple(self.image.shape[:2]))
        if self.boxes is not None and self.size is not None:
            check_boxes_inside(self.boxes, self.size, source=source)


def check_boxes_inside(boxes, size, *, source, tolerance=1e-3):
    """Raise `DataError` naming `source` unless every box lies in `[0, H] x [0, W]`."""
    height, width = size
    limits = np.array([height, width, height, width], np.float32)
    outside = np.any((boxes < -tolerance) | (boxes > limits + tolerance), axis=1)
    if np.any(outside):
        raise DataError(
            f"{source}: box {boxes[np.argmax(outside)].tolist()} lies outside the {height}x{width} image "
            "([ymin, xmin, ymax, xmax] pixels)"
        )


@dataclasses.dataclass
class DatasetSource:
    """A list of examples and what they can feed.

    Attributes:
      examples: the `Example`s.
      class_names: the object classes without the background: classification label `i` is
        `class_names[i]`, detection class and mask id `k` is `class_names[k - 1]`.
      task_kinds: the tasks it can feed, a subset of ("classification", "detection",
        "segmentation").
      class_source: where `class_names` came from: "--classes", "pascal-voc-20",
        "found in annotations", "folders" or "synthetic".
      skipped: what the reader skipped, with counts (it also warned once with `DataWarning`).
      origin: what was read ("voc:/data/VOC2012 (train, detection)"), for messages.
      annotation_format: the annotation format read, "voc" or "coco" ("" for the others);
        detection evaluation adds COCO's AP for "coco".
      split_lists: False for data without split lists (a LabelImg folder of VOC XML): every
        split name reads every example, and `parse_dataset_spec` holds out a seeded fraction.
    """

    examples: list[Example]
    class_names: tuple[str, ...]
    task_kinds: tuple[str, ...]
    class_source: str
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    origin: str = ""
    annotation_format: str = ""
    split_lists: bool = True

    def __post_init__(self):
        self.class_names = tuple(self.class_names)
        self.task_kinds = tuple(self.task_kinds)
        unknown = [kind for kind in self.task_kinds if kind not in TASKS]
        if unknown:
            raise ValueError(f"task_kinds must be among {TASKS}, got {unknown}")

    def summary(self) -> str:
        """One line for a run's log: size, classes and where they came from, what was skipped."""
        names = ", ".join(self.class_names[:6]) + (", ..." if len(self.class_names) > 6 else "")
        line = (
            f"{self.origin or 'dataset'}: {len(self.examples)} examples, {len(self.class_names)} classes "
            f"({self.class_source}: {names})"
        )
        if self.skipped:
            line += "; skipped " + ", ".join(f"{count} x {what}" for what, count in self.skipped.items())
        return line


# The share of the training examples held out for validation when there is no validation
# source (`training.TrainConfig.validation_fraction`'s default, a LabelImg folder's "val").
VALIDATION_FRACTION = 0.2


def split_validation(source, fraction: float, seed: int):
    """A seeded split of `source`'s examples into (train, validation) sources."""
    count = len(source.examples)
    held = int(round(count * fraction))
    if fraction and (held == 0 or held == count):
        raise ValueError(
            f"validation_fraction {fraction} of {count} examples leaves an empty split; "
            "give more examples or a separate validation set"
        )
    order = np.random.default_rng(seed).permutation(count)
    pick = lambda indices: dataclasses.replace(source, examples=[source.examples[i] for i in sorted(indices)])  # noqa: E731
    return pick(order[held:]), pick(order[:held])


def parse_class_list(classes) -> tuple[str, ...]:
    """`"a,b,c"` or a sequence of names -> a tuple of distinct, non-empty names (no background)."""
    if isinstance(classes, str):
        names = [name.strip() for name in classes.split(",")]
    elif isinstance(classes, Sequence):
        names = [str(name).strip() for name in classes]
    else:
        raise ValueError(f"classes must be 'a,b,c' or a list of names, got {classes!r}")
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"classes must name at least one class, got {classes!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"classes must be distinct, got {duplicates} more than once")
    background = [name for name in names if name.lower() in ("background", "__background__", "_background_")]
    if background:
        raise ValueError(f"classes name the object classes only (id 0 is the background), got {background}")
    return tuple(names)


class SkipCounter:
    """Counts what a reader skips and warns once, with the counts and the first few files."""

    def __init__(self, origin):
        self.origin = origin
        self.counts: dict[str, int] = {}
        self.files: dict[str, list[str]] = {}

    def skip(self, what, file, count=1):
        self.counts[what] = self.counts.get(what, 0) + count
        self.files.setdefault(what, [])
        if len(self.files[what]) < 3 and file not in self.files[what]:
            self.files[what].append(str(file))

    def warn(self):
        if not self.counts:
            return
        parts = [f"{count} x {what} (e.g. {', '.join(self.files[what])})" for what, count in self.counts.items()]
        message = f"{self.origin}: skipped " + "; ".join(parts)
        logger.warning(message)
        warnings.warn(message, DataWarning, stacklevel=3)


# --------------------------------------------------------------------------- header checks

ENV_MAX_IMAGE_PIXELS = "ZOO_MAX_IMAGE_PIXELS"  # pixels an image or mask may hold ("none": no limit)
ENV_ALLOW_TRUNCATED_IMAGES = "ZOO_ALLOW_TRUNCATED_IMAGES"  # "1": read cut-short JPEGs, with a warning
# 50 megapixels: every phone or camera photo up to 50 MP (8160 x 6120) passes, a PNG of 8000 x 8000
# (64 MP, 69 KB of one colour, 1.9 GB through the pipeline) does not. Pillow's own guard
# (`Image.MAX_IMAGE_PIXELS`, 89.5 MP) would let it through; the zoo resizes every image to a model
# input of at most about 1000 x 1000 pixels anyway.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
MASK_MODES = ("P", "L", "1")  # Pillow modes of 8-bit class ids: palette, greyscale, 1-bit (ids 0 and 1)
_JPEG_TAIL_BYTES = 4096


def max_image_pixels() -> int | None:
    """The most pixels an image or mask file may declare: `$ZOO_MAX_IMAGE_PIXELS` when set
    (a number, or "none" for no limit), else `DEFAULT_MAX_IMAGE_PIXELS`."""
    setting = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip()
    if not setting:
        return DEFAULT_MAX_IMAGE_PIXELS
    if setting.lower() == "none":
        return None
    try:
        limit = int(setting)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{ENV_MAX_IMAGE_PIXELS} must be a positive number of pixels or 'none', got {setting!r}")
    return limit


def allow_truncated_images() -> bool:
    """Whether `$ZOO_ALLOW_TRUNCATED_IMAGES` asks to read cut-short JPEGs (with a warning)."""
    return os.environ.get(ENV_ALLOW_TRUNCATED_IMAGES, "").strip().lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels.

    Attributes:
      size: `(height, width)`.
      mode: Pillow's mode ("RGB", "L", "P", "1", "I;16", ...).
      format: Pillow's format ("JPEG", "PNG", ...).
      truncated: a JPEG without its end-of-image marker, read only because
        `$ZOO_ALLOW_TRUNCATED_IMAGES` is set.
    """

    size: tuple[int, int]
    mode: str
    format: str
    truncated: bool = False


def _pixel_limit_message(path, what, size, limit):
    declared = f"is {size[0]}x{size[1]} (height x width), {size[0] * size[1]:,} pixels," if size else "declares"
    return (
        f"{path}: the {what} {declared} more than the limit of {limit:,} pixels, which guards against "
        f"decompression bombs (a small file that decodes to gigabytes); set {ENV_MAX_IMAGE_PIXELS}=PIXELS to "
        f"raise it, or {ENV_MAX_IMAGE_PIXELS}=none to lift it"
    )


def _jpeg_scan_end(data, position):
    """Where the entropy-coded data from `position` ends (its next marker), or -1 at the end of data."""
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return -1
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # a stuffed 0xFF, a restart marker
            position += 2
        elif following == 0xFF:  # fill bytes before a marker
            position += 1
        else:
            return position


def _jpeg_is_complete(file) -> bool:
    """Whether the JPEG in the binary `file` reaches its end-of-image marker FFD9.

    Nearly every JPEG ends with it (padding aside), so its last few KB decide. Otherwise (data
    after the image: a phone's motion photo, a trailer) the markers are walked from the start,
    segments skipped by their length and scans to their next marker, so that the FFD9 of an
    embedded EXIF thumbnail does not count.
    """
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - _JPEG_TAIL_BYTES))
    if file.read().rstrip(b"\x00\t\n\r ").endswith(b"\xff\xd9"):
        return True
    file.seek(0)
    data = file.read()
    position = 2  # after SOI
    while position + 1 < len(data):
        if data[position] != 0xFF:
            return False  # no marker where one must be: damaged
        marker = data[position + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF:
            position += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
            if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
                position = _jpeg_scan_end(data, position)
                if position < 0:
                    return False
    return False


def _read_header(file, path, what, *, unreadable=True) -> ImageHeader | None:
    """`file`'s header: pixel limit and (JPEG) end marker checked, nothing decoded.

    Raises `DataError` naming `path`; an unreadable header gives None when `unreadable` is False.
    """
    limit = max_image_pixels()
    if limit is None or (Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS):
        # The user raised the zoo's limit: Pillow's own guard, which raises at twice its limit, follows.
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with Image.open(file) as image:
            (width, height), mode, format_ = image.size, image.mode, image.format or ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(_pixel_limit_message(path, what, None, limit)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if not unreadable:
            return None
        kind = "an image" if what == "image" else f"a {what} image"
        reason = "a format it does not know" if isinstance(error, UnidentifiedImageError) else str(error)
        raise DataError(f"{path}: not {kind} Pillow can decode ({reason})") from None
    if limit is not None and width * height > limit:
        raise DataError(_pixel_limit_message(path, what, (height, width), limit))
    truncated = format_ == "JPEG" and not _jpeg_is_complete(file)
    if truncated and not allow_truncated_images():
        raise DataError(
            f"{path}: the JPEG is cut short (no end-of-image marker FFD9): decoders refuse it or fill what is "
            f"missing with grey; replace the file, or set {ENV_ALLOW_TRUNCATED_IMAGES}=1 to read it grey-filled "
            "(with a warning)"
        )
    return ImageHeader((height, width), mode, format_, truncated)


def check_image_file(path, *, what="image") -> ImageHeader:
    """Reads the header of the image file `path` (never its pixels) and refuses what would go
    wrong when it is decoded, so that readers find bad files before training starts.

    Raises:
      DataError: naming the file, when it is missing or its header unreadable, when it declares
        more than `max_image_pixels()` pixels (`$ZOO_MAX_IMAGE_PIXELS`), or when it is a JPEG
        cut short (no end-of-image marker; `$ZOO_ALLOW_TRUNCATED_IMAGES=1` accepts it, with
        `truncated` set, and the reader warns).
    """
    try:
        with open(path, "rb") as file:
            return _read_header(file, path, what)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path}: {what} file is a directory") from None
    except PermissionError as error:
        raise DataError(f"{path}: cannot read {what}: {error}") from None


def _mask_mode_problem(mode):
    if mode in MASK_MODES:
        return None
    expected = (
        "an 8-bit palette PNG (mode P, as VOC's SegmentationClass) or 8-bit greyscale (mode L), 0 the background, "
        "255 ignore"
    )
    if mode.startswith("I;16") or mode in ("I", "F"):
        depth = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, "16-bit")
        return f"a {depth} image (mode {mode}); masks must be 8-bit class ids: {expected}"
    return f"a {mode} image; masks must hold class ids as palette indices or greyscale values, not colours: {expected}"


def check_mask_file(path, *, image_size=None, image_path=None) -> ImageHeader:
    """Reads the header of the mask file `path` (never its pixels): `check_image_file`'s checks,
    an 8-bit class-id mode (`MASK_MODES`; a 1-bit mask reads as ids 0 and 1), and, given
    `image_size` `(height, width)`, the size of its image `image_path`.

    Raises:
      DataError: naming the file and what was expected.
    """
    header = check_image_file(path, what="mask")
    problem = _mask_mode_problem(header.mode)
    if problem:
        raise DataError(f"{path}: {problem}")
    if image_size is not None and tuple(header.size) != tuple(image_size):
        raise DataError(
            f"{path}: the mask is {header.size[0]}x{header.size[1]} (height x width) but its image "
            f"{image_path or ''} is {image_size[0]}x{image_size[1]}"
        )
    return header


def warn_truncated(origin, paths):
    """One warning for the cut-short JPEGs a reader accepted (`$ZOO_ALLOW_TRUNCATED_IMAGES`)."""
    if not paths:
        return
    message = (
        f"{origin}: {len(paths)} JPEG(s) cut short read as they are, what is missing filled with grey "
        f"({ENV_ALLOW_TRUNCATED_IMAGES} is set), e.g. {', '.join(map(str, paths[:3]))}"
    )
    logger.warning(message)
    warnings.warn(message, DataWarning, stacklevel=3)


# --------------------------------------------------------------------------- loading


def _read_bytes(path, *, what):
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file does not exist") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read {what}: {error}") from None


def load_image(example: Example) -> np.ndarray:
    """The example's image as RGB uint8 `[H, W, 3]`.

    Files are decoded with OpenCV (any format it reads; greyscale becomes 3 channels; EXIF
    orientation is ignored, so pixels are as stored, which is what VOC's boxes refer to), after
    `check_image_file`'s header checks.

    Raises:
      DataError: naming the file, when it is missing or does not decode, declares more than
        `max_image_pixels()` pixels, is a JPEG cut short (unless `$ZOO_ALLOW_TRUNCATED_IMAGES`),
        or when its size differs from the `(height, width)` its annotation declares.
    """
    if not isinstance(example.image, str):
        return example.image
    path = example.image
    raw = _read_bytes(path, what="image")
    # The pixel limit and the JPEG end marker before decoding (readers checked them already; an
    # `Example` built by hand did not). A header Pillow cannot read is left to OpenCV.
    header = _read_header(io.BytesIO(raw), path, "image", unreadable=False)
    if header is not None and header.truncated:
        # Allowed by the user: OpenCV 5 refuses a JPEG without its end marker, and with one
        # libjpeg fills what is missing with grey, as OpenCV 4 and Pillow's LOAD_TRUNCATED_IMAGES do.
        raw += b"\xff\xd9"
    data = np.frombuffer(raw, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise DataError(f"{path}: not an image OpenCV can decode ({data.size} bytes)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if example.size is not None and tuple(image.shape[:2]) != tuple(example.size):
        raise DataError(
            f"{path}: the image is {image.shape[0]}x{image.shape[1]} (height x width) but its annotation "
            f"{example.source} says {example.size[0]}x{example.size[1]}"
        )
    return image


def load_mask(example: Example, *, num_classes: int | None = None) -> np.ndarray | None:
    """The example's mask as uint8 `[H, W]` class ids (0 background, 255 ignore), or None.

    PNG files are read with Pillow as palette indices (VOC's SegmentationClass images are
    palette PNGs, which cv2.imread would turn into colours) or 8-bit greyscale values; a 1-bit
    PNG (mode "1") as ids 0 and 1 (background and the first class, not 0 and 255, which would
    make its foreground "ignore"). A callable mask (COCO's polygons and RLE,
    `training.data.coco`) is drawn when loaded.

    Args:
      num_classes: the number of object classes; when given, every value must be in
        `0..num_classes` or 255.

    Raises:
      DataError: naming the file, when it is missing, does not decode, holds colours rather
        than class ids (an RGB PNG) or more than 8 bits (a 16-bit PNG), declares more than
        `max_image_pixels()` pixels, or holds a class id outside `0..num_classes` and 255.
    """
    if example.mask is None:
        return None
    name = example.mask if isinstance(example.mask, str) else f"the mask of {example.source}"
    if callable(example.mask):
        mask = np.asarray(example.mask())
        if mask.dtype != np.uint8 or mask.ndim != 2:
            raise DataError(f"{name}: must be uint8 [H, W] class ids, got shape {mask.shape} dtype {mask.dtype}")
    elif isinstance(example.mask, str):
        path = example.mask
        if not os.path.exists(path):
            raise DataError(f"{path}: mask file does not exist")
        check_mask_file(path)  # mode and pixel limit from the header, before decoding
        try:
            with Image.open(path) as png:
                png.load()
                mask = np.array(png, dtype=np.uint8)  # mode "1" gives booleans: ids 0 and 1
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(f"{path}: not a mask image Pillow can decode: {error}") from None
    else:
        mask = example.mask
    if num_classes is not None:
        bad = (mask > num_classes) & (mask != IGNORE_LABEL)
        if np.any(bad):
            values = sorted(set(np.unique(mask[bad]).tolist()))
            raise DataError(
                f"{name}: class ids {values} outside 0..{num_classes} (the background and "
                f"{num_classes} classes) and not 255 (ignore)"
            )
    return mask
