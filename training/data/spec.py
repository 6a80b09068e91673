"""`parse_dataset_spec`: the CLI's dataset strings -> a `DatasetSource`."""

from __future__ import annotations

import dataclasses
import zlib

from training.data.coco import read_coco
from training.data.examples import VALIDATION_FRACTION, DataError, split_validation
from training.data.folder import read_folder
from training.data.synthetic import synthetic
from training.data.voc import read_voc_detection, read_voc_segmentation

SYNTHETIC_DEFAULT_SIZE = 1000
ACCEPTED = "'synthetic', 'synthetic:N' (N examples), 'voc:PATH', 'coco:PATH.json' or 'folder:PATH'"
# The splits of a LabelImg folder (no ImageSets), cut by `split_validation`.
HELD_OUT_SPLITS = {"train": "every annotated image", "val": "the held-out images", "all": "every annotated image"}


def parse_dataset_spec(text, *, split="train", classes=None, image_size=None, seed=0, task=None, images=None,
                       validation_fraction=None):
    """The source a CLI dataset string names.

    Forms:
      "synthetic", "synthetic:N": `synthetic(N)` (N = 1000 without it) of `image_size`
        (default 64 x 64) and `seed`; `classes` picks shapes from `SHAPES`. Splits other than
        "train" draw other images (the seed is offset by a hash of the split's name), so
        `--split val` evaluates on images the training run never saw.
      "voc:PATH": `read_voc_detection(PATH, split, classes=classes)`, or with
        `task="segmentation"` `read_voc_segmentation(PATH, split, classes=classes)`. A folder
        without ImageSets (LabelImg's) has no split lists: "train" and "all" are every
        annotated image (`zoo train` holds out `validation_fraction` of them with `seed`, by
        `training.data.split_validation`), "val" exactly the images that this holds out, so
        `zoo evaluate --split val` with the training run's `--seed` evaluates on them.
      "coco:PATH.json": `read_coco(PATH.json, images=images, classes=classes, task=task)`; the
        JSON is the split (COCO ships one per split), so `split` does not apply.
      "folder:PATH": `read_folder(PATH, classes=classes)`; `split` does not apply.

    Args:
      text: the string.
      split: the VOC split (`ImageSets/.../<split>.txt`).
      classes: `"a,b,c"` or a list (the CLI's --classes), or None for each reader's rule.
      image_size: synthetic images' `(height, width)`; readers of files keep the files' sizes
        (`make_dataset` resizes).
      seed: synthetic images' seed.
      task: None, or the task the source must feed; "segmentation" selects VOC's and COCO's
        masks.
      images: COCO: the folder of the images (the CLI's --images); None for the JSON's folder.
      validation_fraction: a LabelImg folder's held-out fraction; None for `TrainConfig`'s
        default, which `zoo train` uses.

    Raises:
      ValueError: naming the accepted forms, for a string that is none of them; or when the
        source cannot feed `task`.
    """
    if not isinstance(text, str):
        raise ValueError(f"dataset must be a string, one of {ACCEPTED}; got {text!r}")
    kind, colon, argument = text.strip().partition(":")
    kind = kind.strip().lower()
    argument = argument.strip()
    if kind == "synthetic":
        if colon and not argument.isdigit() or (argument.isdigit() and int(argument) < 1):
            raise ValueError(
                f"dataset {text!r}: 'synthetic:N' needs a positive number of examples; accepted: {ACCEPTED}"
            )
        count = int(argument) if argument else SYNTHETIC_DEFAULT_SIZE
        if split != "train":
            seed = seed + zlib.crc32(split.encode()) + 1
        source = synthetic(count, image_size=image_size or (64, 64), seed=seed, shapes=classes)
    elif kind in ("voc", "folder", "coco"):
        if not argument:
            raise ValueError(f"dataset {text!r}: '{kind}:PATH' needs a path; accepted: {ACCEPTED}")
        if kind == "folder":
            source = read_folder(argument, classes=classes)
        elif kind == "coco":
            if task not in (None, "detection", "segmentation"):
                raise ValueError(f"dataset {text!r} feeds detection, segmentation, not {task}")
            source = read_coco(argument, images=images, classes=classes, task=task or "detection")
        elif task == "segmentation":
            source = read_voc_segmentation(argument, split, classes=classes)
        else:
            source = read_voc_detection(argument, split, classes=classes)
            if not source.split_lists:
                source = _held_out_split(source, split, seed, validation_fraction)
    else:
        raise ValueError(f"dataset {text!r} not understood; accepted: {ACCEPTED}")
    if task is not None and task not in source.task_kinds:
        raise ValueError(f"dataset {text!r} feeds {', '.join(source.task_kinds)}, not {task}")
    return source


def _held_out_split(source, split, seed, fraction):
    """A LabelImg folder's `split`: every image, or the part `zoo train` holds out for validation."""
    fraction = VALIDATION_FRACTION if fraction is None else fraction
    root = source.origin.partition(" (")[0]
    if split not in HELD_OUT_SPLITS:
        raise DataError(
            f"{root}: no ImageSets, so no split lists: split {split!r} is none of "
            + ", ".join(f"{name!r} ({meaning})" for name, meaning in HELD_OUT_SPLITS.items())
        )
    # The reader's note, "no ImageSets: 120 annotated images (3 images without XML left out)".
    note = source.origin[len(root) + 2:].removesuffix(", detection)")
    held = f"{fraction:.0%} held out with seed {seed}"
    if split == "val":
        _, validation = split_validation(source, fraction, seed)
        origin = f"{root} ({note}, {held}: evaluating on the {len(validation.examples)} held out)"
        return dataclasses.replace(validation, origin=origin)
    what = " by zoo train for validation" if split == "train" else ""
    return dataclasses.replace(source, origin=f"{root} ({note}, {held}{what})")
