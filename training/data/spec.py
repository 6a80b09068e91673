"""`parse_dataset_spec`: the CLI's dataset strings -> a `DatasetSource`."""

from __future__ import annotations

import zlib

from training.data.folder import read_folder
from training.data.synthetic import synthetic
from training.data.voc import read_voc_detection, read_voc_segmentation

SYNTHETIC_DEFAULT_SIZE = 1000
ACCEPTED = "'synthetic', 'synthetic:N' (N examples), 'voc:PATH' or 'folder:PATH'"


def parse_dataset_spec(text, *, split="train", classes=None, image_size=None, seed=0, task=None):
    """The source a CLI dataset string names.

    Forms:
      "synthetic", "synthetic:N": `synthetic(N)` (N = 1000 without it) of `image_size`
        (default 64 x 64) and `seed`; `classes` picks shapes from `SHAPES`. Splits other than
        "train" draw other images (the seed is offset by a hash of the split's name), so
        `--split val` evaluates on images the training run never saw.
      "voc:PATH": `read_voc_detection(PATH, split, classes=classes)`, or with
        `task="segmentation"` `read_voc_segmentation(PATH, split, classes=classes)`.
      "folder:PATH": `read_folder(PATH, classes=classes)`; `split` does not apply.

    Args:
      text: the string.
      split: the VOC split (`ImageSets/.../<split>.txt`).
      classes: `"a,b,c"` or a list (the CLI's --classes), or None for each reader's rule.
      image_size: synthetic images' `(height, width)`; readers of files keep the files' sizes
        (`make_dataset` resizes).
      seed: synthetic images' seed.
      task: None, or the task the source must feed; "segmentation" selects VOC's masks.

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
    elif kind in ("voc", "folder"):
        if not argument:
            raise ValueError(f"dataset {text!r}: '{kind}:PATH' needs a path; accepted: {ACCEPTED}")
        if kind == "folder":
            source = read_folder(argument, classes=classes)
        elif task == "segmentation":
            source = read_voc_segmentation(argument, split, classes=classes)
        else:
            source = read_voc_detection(argument, split, classes=classes)
    else:
        raise ValueError(f"dataset {text!r} not understood; accepted: {ACCEPTED}")
    if task is not None and task not in source.task_kinds:
        raise ValueError(f"dataset {text!r} feeds {', '.join(source.task_kinds)}, not {task}")
    return source
