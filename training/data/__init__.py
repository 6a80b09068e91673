"""Data for training: readers, a synthetic generator, augmentation and tf.data pipelines.

- `Example`, `DatasetSource`: one image with its labels; a list of them with class names.
- Readers: `synthetic` (no download), `read_voc_detection` (also LabelImg folders without
  ImageSets), `read_voc_segmentation`, `read_coco` (COCO instances JSON, with pycocotools),
  `read_folder`, and `parse_dataset_spec` for the CLI's "synthetic[:N]", "voc:PATH",
  "coco:PATH.json", "folder:PATH".
- `load_image`, `load_mask`: decode an example's files (OpenCV; Pillow for palette PNGs).
- `check_image_file`, `check_mask_file`: what readers check from each file's header (never its
  pixels) while reading: the pixel limit (`max_image_pixels`, `$ZOO_MAX_IMAGE_PIXELS`), JPEGs cut
  short (`$ZOO_ALLOW_TRUNCATED_IMAGES`), masks of 8-bit class ids and of their image's size.
- Augmentation (pure TensorFlow, stateless seeds): `random_horizontal_flip`, `random_scale`,
  `random_crop_with_padding`, `color_jitter`, `augment`; `augment_batch`, the same for a batch of
  images without boxes or masks in whole-batch ops (classification's pipeline).
- `make_dataset`: a source -> batched, deterministic `tf.data.Dataset` for one task.

Bad data raises `DataError` (a ValueError) naming the file, or is skipped with one
`DataWarning` and a count in `DatasetSource.skipped`; see each reader for which is which.
"""

from training.data.augment import (
    augment,
    augment_batch,
    color_jitter,
    random_crop_with_padding,
    random_horizontal_flip,
    random_scale,
)
from training.data.coco import read_coco
from training.data.examples import (
    IGNORE_LABEL,
    PASCAL_VOC_CLASSES,
    TASKS,
    VALIDATION_FRACTION,
    DataError,
    DatasetSource,
    DataWarning,
    Example,
    check_image_file,
    check_mask_file,
    load_image,
    load_mask,
    max_image_pixels,
    parse_class_list,
    split_validation,
)
from training.data.folder import IMAGE_EXTENSIONS, read_folder
from training.data.pipeline import make_dataset
from training.data.spec import parse_dataset_spec
from training.data.synthetic import SHAPES, synthetic
from training.data.voc import choose_class_names, read_voc_detection, read_voc_segmentation

__all__ = [
    "IGNORE_LABEL",
    "IMAGE_EXTENSIONS",
    "PASCAL_VOC_CLASSES",
    "SHAPES",
    "TASKS",
    "VALIDATION_FRACTION",
    "DataError",
    "DataWarning",
    "DatasetSource",
    "Example",
    "augment",
    "augment_batch",
    "check_image_file",
    "check_mask_file",
    "choose_class_names",
    "color_jitter",
    "load_image",
    "load_mask",
    "make_dataset",
    "max_image_pixels",
    "parse_class_list",
    "parse_dataset_spec",
    "random_crop_with_padding",
    "random_horizontal_flip",
    "random_scale",
    "read_coco",
    "read_folder",
    "read_voc_detection",
    "read_voc_segmentation",
    "split_validation",
    "synthetic",
]
