"""Running a model on image files: what `zoo predict` does.

Each image is read with OpenCV (RGB), resized to the size the model was trained at, the way it
was trained (`resize`: "stretch" or the aspect-keeping "letterbox", padded at the bottom and
right; `layers.image_resize`, the same bilinear, antialiased resize as
`training.data.make_dataset`), run through the model, and the result is mapped back to the
original image's pixels:

- detection: boxes, scores and 1-based classes after the model's own NMS, scaled back by the
  resize's ratios (no offset: the padding is at the bottom and right) and clipped to the image,
  drawn on it (`zoo.detection.visualize.draw_detections`); a Fast R-CNN model gets its RoIs from
  a `proposals(images) -> [N, 4]` function (the CLI uses the sliding windows it trained with);
- classification: the top-k classes with their probabilities, written on the image;
- segmentation: the class of every pixel of the original image (the logits cropped to the
  letterbox's content, resized back to the image's size bilinearly, with DeepLab's
  align-corners, then the argmax), drawn as VOC-palette colours blended over it
  (`zoo.segmentation.visualize.blend`), with each class's fraction of the pixels in
  `predictions.json`.

`predict_files` writes `OUT/<image stem>.png` for every image and `OUT/predictions.json` with
every result; each file is written under a temporary name and renamed, so an interrupted run
never leaves a half-written file where a finished one is expected. Every check comes before the
first write: the arguments (`score_threshold` in [0, 1], `top_k` >= 1, as many class names as
the model has classes), every image (read in full), and the names: a picture that would land on
one of the input images (`--out` is the images' folder and one of them is a `.png`) is refused,
never written over the input. The whole batch is predicted before anything is written, too.
A reused `OUT` keeps no stale pictures: once the new `predictions.json` is in place, the
pictures that the previous `predictions.json` listed and this run did not write are deleted;
nothing else in `OUT` is touched (a file the zoo did not list is never removed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from layers.detection_contract import IMAGES, ROIS, num_object_classes, takes_rois
from layers.image_resize import check_resize, resize_image


def read_image(path) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB pixels of an image file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image {path}: OpenCV cannot decode it (expected a JPEG, PNG or other image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path, image) -> Path:
    """Writes `[H, W, 3]` uint8 RGB to `path` (format from its suffix) through a temporary name."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)):
            raise ValueError(f"cannot write image {path}: OpenCV does not know the suffix {path.suffix!r}")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def model_input_names(model) -> list[str]:
    """The names of `model.inputs`' tensors, in their order (whether it takes RoIs:
    `layers.detection_contract.takes_rois`)."""
    return [tensor.name for tensor in model.inputs]


def model_image_size(model):
    """The fixed `(H, W)` of the model's image input, or None when either is free."""
    names = model_input_names(model)
    index = names.index(IMAGES) if IMAGES in names else 0
    height, width = model.inputs[index].shape[1:3]
    return (height, width) if height and width else None


def _resize(image, image_size, resize="stretch"):
    """`([1, h, w, 3] float32 model input, (ch, cw) where the image is in it)`."""
    check_resize(resize)
    if image_size is None or tuple(image.shape[:2]) == tuple(image_size):
        return tf.constant(image[None], tf.float32), tuple(image.shape[:2])
    resized, content = resize_image(tf.constant(image, tf.float32), image_size, resize=resize)
    return resized[None], tuple(int(side) for side in content)


def detect(model, image, *, image_size=None, proposals=None, resize="stretch") -> dict:
    """Detections of one `[H, W, 3]` RGB image, boxes in its own pixels.

    Args:
      model: a zoo detector (inputs `images` and, for Fast R-CNN, `rois`).
      image: `[H, W, 3]` uint8 RGB.
      image_size: `(h, w)` the image is resized to before the model, or None for its own size.
      proposals: `images [1, h, w, 3] -> [N, 4]` RoIs in the resized image's pixels; required
        when the model takes `rois`.
      resize: "stretch" or "letterbox" (`layers.image_resize`), as the model was trained.

    Returns:
      `{"boxes": [D, 4], "scores": [D], "classes": [D]}` NumPy arrays, D = the model's
      `num_detections` for the image, boxes `[ymin, xmin, ymax, xmax]` in the input image's pixels.
    """
    images, content = _resize(image, image_size, resize)
    if takes_rois(model):
        if proposals is None:
            raise ValueError(f"detect: model {model.name!r} takes RoIs: pass proposals (a function of the images)")
        rois = tf.convert_to_tensor(proposals(images), tf.float32)
        if rois.shape.rank == 2:
            rois = rois[None]
        outputs = model({IMAGES: images, ROIS: rois}, training=False)
    else:
        # Faster R-CNN takes `{"images"}` (its RPN makes the proposals).
        inputs = {IMAGES: images} if isinstance(model.input, dict) else images
        outputs = model(inputs, training=False)
    count = int(outputs["num_detections"][0])
    boxes = np.asarray(outputs["boxes"][0, :count], np.float32)
    # The boxes are pixels of the resized image: undo the resize's ratios (the letterbox pads at
    # the bottom and right, so there is no offset), and end where the image does, not the padding.
    original = tuple(image.shape[:2])
    scale = np.asarray(original, np.float64) / np.asarray(content, np.float64)
    boxes = np.clip(boxes * np.tile(scale, 2).astype(np.float32), 0.0, np.array(original * 2, np.float32))
    return {
        "boxes": boxes,
        "scores": np.asarray(outputs["scores"][0, :count], np.float32),
        "classes": np.asarray(outputs["classes"][0, :count]).astype(np.int64),
    }


def classify(model, image, *, image_size=None, top_k=5, resize="stretch") -> dict:
    """The `top_k` classes (0-based indices) and probabilities of one RGB image."""
    probabilities = np.asarray(model(_resize(image, image_size, resize)[0], training=False), np.float64)[0]
    if np.any(probabilities < 0) or abs(probabilities.sum() - 1.0) > 1e-3:
        probabilities = tf.nn.softmax(probabilities).numpy()  # a model built with logits
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return {"classes": order, "probabilities": probabilities[order]}


def segment(model, image, *, image_size=None, resize="stretch") -> np.ndarray:
    """The `[H, W]` int32 class ids of one `[H, W, 3]` RGB image, in the image's own size.

    The model runs on the image resized to `image_size` (or as it is) by `resize`; its logits,
    not the ids, are cropped to where the image is (the letterbox's padding left out) and
    resized back to `H x W` (bilinear, align corners as DeepLab) before the argmax, so class
    boundaries fall between the model's pixels rather than on a blocky grid.
    """
    from layers import resize_bilinear

    images, content = _resize(image, image_size, resize)
    logits = tf.convert_to_tensor(model(images, training=False), tf.float32)
    if logits.shape.rank != 4:
        raise ValueError(f"segment: model {model.name!r} must return logits [B, H, W, K], got shape {logits.shape}")
    if content != tuple(images.shape[1:3]):
        if tuple(logits.shape[1:3]) != tuple(images.shape[1:3]):  # logits of a lower resolution: to the input's first
            logits = resize_bilinear(logits, images.shape[1:3], align_corners=True)
        logits = logits[:, :content[0], :content[1]]
    if tuple(logits.shape[1:3]) != tuple(image.shape[:2]):
        logits = resize_bilinear(logits, image.shape[:2], align_corners=True)
    return np.asarray(tf.argmax(logits[0], axis=-1, output_type=tf.int32))


def class_fractions(mask, class_names=None) -> list[dict]:
    """`[{"class", "fraction"[, "label"]}]` for every class present in `mask`, by class id;
    class 0 is "background" and class c names `class_names[c - 1]`."""
    ids, counts = np.unique(mask, return_counts=True)
    records = []
    for class_id, count in zip(ids.tolist(), counts.tolist()):
        record = {"class": int(class_id), "fraction": round(count / mask.size, 6)}
        if class_names is not None:
            record["label"] = "background" if class_id == 0 else class_names[class_id - 1]
        records.append(record)
    return records


def _draw_classification(image, result, class_names):
    canvas = np.ascontiguousarray(image.copy())
    for row, (index, probability) in enumerate(zip(result["classes"], result["probabilities"])):
        name = class_names[index] if class_names is not None else f"class {index}"
        position = (4, 16 + 16 * row)
        for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(canvas, f"{name} {probability:.2f}", position, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, width,
                        cv2.LINE_AA)
    return canvas


def predict_files(model, paths, out_dir, *, task, class_names=None, image_size=None, proposals=None,
                  score_threshold=0.3, top_k=5, resize="stretch") -> list[dict]:
    """Runs `model` on image files and writes the pictures and `predictions.json` to `out_dir`.

    Args:
      task: "detection", "classification" or "segmentation" (`zoo.describe(name).task`).
      class_names: names of the classes (detection and segmentation: classes 1..K, 0 being the
        background; classification: 0..K-1).
      score_threshold: detection: results below it are neither drawn nor listed.
      resize: "stretch" or "letterbox", as the model was trained (`run.json`'s
        `config.resize`); results are in each image's own pixels either way.
      Other arguments: as `detect` and `classify`.

    Returns:
      One record per image, as written to `predictions.json`.
    """
    from zoo.detection.visualize import draw_detections

    from zoo.segmentation.visualize import blend

    if task not in ("detection", "classification", "segmentation"):
        raise ValueError(
            f"predict_files: task must be 'detection', 'classification' or 'segmentation', got {task!r}"
        )
    _check_options(task, score_threshold, top_k)
    check_resize(resize, argument="predict_files: resize (--resize)")
    paths = [Path(path) for path in paths]
    if not paths:
        raise ValueError("predict_files: paths must name at least one image")
    stems = [path.stem for path in paths]
    if len(set(stems)) != len(stems):
        raise ValueError(f"predict_files: two images share a name stem, their pictures would collide: {stems}")
    _check_class_names(model, task, class_names)
    out_dir = Path(out_dir)
    targets = [out_dir / f"{stem}.png" for stem in stems]
    inputs = {os.path.realpath(path): path for path in paths}
    for target in [*targets, out_dir / "predictions.json"]:
        if os.path.realpath(target) in inputs:
            raise ValueError(
                f"predict_files: {target} would overwrite the input image {inputs[os.path.realpath(target)]}; "
                f"write the results to another folder (--out)"
            )
    images = [read_image(path) for path in paths]  # every file is checked before anything is written
    records, pictures = [], []
    for path, image in zip(paths, images):
        record = {"image": str(path), "height": int(image.shape[0]), "width": int(image.shape[1])}
        if task == "detection":
            result = detect(model, image, image_size=image_size, proposals=proposals, resize=resize)
            keep = result["scores"] >= score_threshold
            result = {key: value[keep] for key, value in result.items()}
            _check_class_ids(result["classes"], class_names, first=1)
            picture = draw_detections(image, **result, class_names=class_names)
            record["detections"] = [
                {
                    "box": [round(float(v), 2) for v in box],
                    "score": round(float(score), 5),
                    "class": int(class_id),
                    **({"label": class_names[class_id - 1]} if class_names is not None else {}),
                }
                for box, score, class_id in zip(result["boxes"], result["scores"], result["classes"])
            ]
        elif task == "segmentation":
            mask = segment(model, image, image_size=image_size, resize=resize)
            picture = blend(image, mask)
            record["classes"] = class_fractions(mask, class_names)
        else:
            result = classify(model, image, image_size=image_size, top_k=top_k, resize=resize)
            _check_class_ids(result["classes"], class_names, first=0)
            picture = _draw_classification(image, result, class_names)
            record["top_k"] = [
                {
                    "class": int(index),
                    "probability": round(float(probability), 5),
                    **({"label": class_names[index]} if class_names is not None else {}),
                }
                for index, probability in zip(result["classes"], result["probabilities"])
            ]
        records.append(record)
        pictures.append(picture)
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = out_dir / "predictions.json"
    previous = _listed_pictures(listing)
    for record, picture, target in zip(records, pictures, targets):
        record["picture"] = str(write_image(target, picture))
    temporary = listing.with_name(f".predictions.json.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(records, indent=1))
    os.replace(temporary, listing)
    _remove_stale_pictures(out_dir, previous, keep={os.path.realpath(t) for t in targets} | set(inputs))
    return records


def _check_options(task, score_threshold, top_k):
    if task == "detection" and not (isinstance(score_threshold, (int, float)) and 0.0 <= score_threshold <= 1.0):
        raise ValueError(f"predict_files: score_threshold (--score-threshold) must be in [0, 1], got {score_threshold}")
    if task == "classification" and not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"predict_files: top_k (--top-k) must be an integer >= 1, got {top_k}")


def model_class_count(model, task):
    """The classes a zoo model predicts (objects only for detection and segmentation, whose
    class 0 is the background), or None where the model does not show it."""
    if task == "detection":
        return num_object_classes(model)
    outputs = model.outputs
    if len(outputs) != 1 or outputs[0].shape[-1] is None:
        return None
    return int(outputs[0].shape[-1]) - (1 if task == "segmentation" else 0)


def _check_class_names(model, task, class_names):
    if class_names is None:
        return
    count = model_class_count(model, task)
    if count is None or count == len(class_names):
        return
    if task == "classification":
        raise ValueError(
            f"predict_files: the model has {count} classes but class_names has {len(class_names)} names "
            f"(--classes: one name per class)"
        )
    raise ValueError(
        f"predict_files: the model has {count + 1} classes (background included) but class_names has "
        f"{len(class_names)} names (--classes names classes 1..K; 0 is the background)"
    )


def _check_class_ids(class_ids, class_names, *, first):
    if class_names is not None and len(class_ids) and int(max(class_ids)) - first >= len(class_names):
        raise ValueError(
            f"predict_files: the model predicted class {int(max(class_ids))} but class_names (--classes) has only "
            f"{len(class_names)} names"
        )


def _listed_pictures(listing) -> list[str]:
    """The pictures an earlier run's `predictions.json` lists (none when it cannot be read)."""
    try:
        records = json.loads(Path(listing).read_text())
        return [str(record["picture"]) for record in records if isinstance(record.get("picture"), str)]
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return []


def _remove_stale_pictures(out_dir, previous, *, keep):
    """Deletes the pictures of an earlier run in `out_dir` that this run did not write: only
    `.png` files directly in `out_dir` that its `predictions.json` listed, never one in `keep`."""
    for picture in previous:
        # By name inside out_dir: the listed path may be relative to another working directory.
        candidate = Path(out_dir) / Path(picture).name
        resolved = os.path.realpath(candidate)
        if resolved in keep or candidate.suffix != ".png" or candidate.is_symlink() or not candidate.is_file():
            continue
        candidate.unlink()
