"""`make demo` / `zoo demo`: the zoo's main job, end to end on the CPU, with no download.

1. Trains the light detector `faster_rcnn_mobilenetv2` (its RPN and head jointly) on synthetic
   shapes, measures PASCAL VOC mAP@0.5 on held-out images and draws its detections scoring at
   least 0.5.
2. Trains a DeepLab-v3+ MobileNet-v2 segmenter on the same kind of data, measures mean IoU and
   draws its masks over the images.
3. Exports both as SavedModels whose `serving_default` takes uint8 pixels (the detector's
   proposals and NMS are inside the graph), reloads them in a fresh Python process that imports
   TensorFlow only, and checks that they agree with the models in this process.
4. Where torchvision's COCO weights for `faster_rcnn_resnet50_fpn` are in the weights cache (and
   scikit-image is installed), shows them on one of its photographs; otherwise says how.

It ends with a table: model, held-out metric, training time, images/s, SavedModel agreement.
Everything lands in `out_dir` (default `demo_out/`): `detection.png`, `segmentation.png`,
`detector_savedmodel/`, `deeplab_savedmodel/`, `summary.json`, and the training runs under
`runs/`. `quick=True` shrinks every size so that the whole job takes about a minute (for
tests); its metrics mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes. The defaults fit `make demo` in about 10 minutes on 2 cores, install included."""

    detector: str = "faster_rcnn_mobilenetv2"
    image_size: int = 192
    num_classes: int = 3
    max_objects: int = 2
    train_images: int = 1360
    test_images: int = 100
    detector_epochs: int = 3
    # Proposals per image through the RPN's NMS, in training and at test time: an image holds at
    # most `max_objects` shapes, and the paper's 2000 / 300 are for ~600 x 1000 photographs.
    train_proposals: int = 128
    test_proposals: int = 32
    rois_per_image: int = 32
    segmenter: str = "deeplabv3plus_mobilenetv2"
    segmenter_image_size: int = 128
    segmenter_train_images: int = 800
    segmenter_epochs: int = 5
    batch_size: int = 8
    # Only detections scoring at least this are drawn.
    score_threshold: float = 0.5


QUICK = DemoConfig(
    image_size=64, train_images=16, test_images=4, detector_epochs=1, train_proposals=16, test_proposals=8,
    rois_per_image=8, segmenter_image_size=64, segmenter_train_images=16, segmenter_epochs=1,
)

_RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    directory, images_path, out_path = sys.argv[1:]
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    outputs = serve(input_tensor=tf.constant(np.load(images_path)))
    np.savez(out_path, **{name: value.numpy() for name, value in outputs.items()})
    print(json.dumps({"zoo_imported": any(m == "zoo" or m.startswith("zoo.") for m in sys.modules)}))
    """
)


def _say(message):
    print(f"demo: {message}", flush=True)


def reload_in_plain_tensorflow(directory, images) -> dict:
    """Runs `serving_default` of a SavedModel in a fresh process that never imports the zoo."""
    with tempfile.TemporaryDirectory() as scratch:
        images_path, out_path = Path(scratch) / "images.npy", Path(scratch) / "outputs.npz"
        np.save(images_path, images)
        # Run from the scratch directory with a clean PYTHONPATH, so the zoo cannot be imported.
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        result = subprocess.run(
            [sys.executable, "-c", _RELOAD_SCRIPT, str(Path(directory).resolve()), str(images_path), str(out_path)],
            cwd=scratch, env=environment, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"reloading {directory} in plain TensorFlow failed:\n{result.stderr[-2000:]}")
        if json.loads(result.stdout.strip().splitlines()[-1])["zoo_imported"]:
            raise RuntimeError("the reloading process imported the zoo; the SavedModel is not self-contained")
        with np.load(out_path) as outputs:
            return {name: outputs[name] for name in outputs.files}


def _grid(pictures, columns=4):
    rows = [np.concatenate(pictures[i:i + columns], axis=1) for i in range(0, len(pictures), columns)]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    return np.concatenate(rows, axis=0)


def draw_detection_grid(images, outputs, *, class_names, score_threshold=0.5, scale=1, columns=4):
    """`images` (uint8 `[B, H, W, 3]`) with a detector's `outputs` drawn, in one grid picture.

    Each image shows its detections scoring at least `score_threshold`, enlarged `scale` times
    so that the labels can be read.
    """
    from zoo.detection.visualize import draw_detections

    images = np.repeat(np.repeat(np.asarray(images), scale, axis=1), scale, axis=2)
    boxes, scores, classes, counts = (
        np.asarray(outputs[name]) for name in ("boxes", "scores", "classes", "num_detections")
    )
    pictures = []
    for index, image in enumerate(images):
        count = int(counts[index])
        pictures.append(draw_detections(
            image, scale * boxes[index, :count], scores[index, :count], classes[index, :count],
            class_names=class_names, score_threshold=score_threshold, thickness=1,
        ))
    return _grid(pictures, columns)


def _detector(config, out_dir, summary):
    import tensorflow as tf

    import zoo
    from training import TrainConfig, data, evaluate_detector, train
    from zoo.detection.sizing import detector_overrides
    from zoo.predict import write_image

    size = (config.image_size, config.image_size)
    synthetic = dict(image_size=size, num_classes=config.num_classes, max_objects=config.max_objects)
    train_source = data.synthetic(config.train_images, seed=0, **synthetic)
    test_source = data.synthetic(config.test_images, seed=1_000_003, **synthetic)
    # zoo train's sizing for this image size (anchors, minimum proposal, RoI grid), and fewer
    # proposals than the paper's for images that hold a few shapes.
    overrides, notes = detector_overrides(config.detector, size, {
        "train_pre_nms_top_n": 8 * config.train_proposals, "train_post_nms_top_n": config.train_proposals,
        "test_pre_nms_top_n": 8 * config.test_proposals, "test_post_nms_top_n": config.test_proposals,
    })
    name = config.detector
    _say(f"1/3 training {name} on {train_source.summary()}; {'; '.join(notes)}")
    start = time.perf_counter()
    result = train(
        lambda classes: zoo.build(name, num_classes=classes, input_shape=(None, None, 3), **overrides),
        train_source, out_dir=out_dir / "runs" / "detector", task="detection",
        config=TrainConfig(epochs=config.detector_epochs, batch_size=config.batch_size, image_size=size,
                           optimizer="adam", learning_rate=1e-3, schedule="cosine", warmup_epochs=0.3,
                           validation_fraction=0.0, seed=0),
        task_options={"rois_per_image": config.rois_per_image, "seed": 0},
    )
    train_seconds = time.perf_counter() - start
    model = result.model
    metrics = evaluate_detector(model, test_source, image_size=size)
    _say(f"{name}: held-out mAP@0.5 {metrics['mAP@0.5']:.3f} ({len(test_source.examples)} images), "
         f"trained in {train_seconds / 60:.1f} min")

    images = np.stack([example.image for example in test_source.examples[:8]]).astype(np.uint8)
    outputs = model({"images": tf.constant(images, tf.float32)}, training=False)
    picture = write_image(out_dir / "detection.png", draw_detection_grid(
        images, outputs, class_names=train_source.class_names, score_threshold=config.score_threshold, scale=2))

    export_dir = zoo.export(model, out_dir / "detector_savedmodel", overwrite=True,
                            class_names=train_source.class_names)
    served = reload_in_plain_tensorflow(export_dir, images)
    expected = outputs["boxes"].numpy() / np.array([size[0], size[1], size[0], size[1]], np.float32)
    count = int(outputs["num_detections"].numpy().sum())
    agree = (
        np.array_equal(served["num_detections"].astype(np.int64), outputs["num_detections"].numpy().astype(np.int64))
        and np.allclose(served["detection_boxes"], expected, atol=1e-4)
        and np.allclose(served["detection_scores"], outputs["scores"].numpy(), atol=1e-4)
    )
    _say(f"{name}: SavedModel {export_dir} reloaded in plain TensorFlow: "
         f"{'agrees' if agree else 'DISAGREES'} on {len(images)} images ({count} detections)")
    summary["detection"] = {
        "model": name, "mAP@0.5": metrics["mAP@0.5"], "train_minutes": round(train_seconds / 60, 2),
        "images_per_second": round(config.train_images * config.detector_epochs / train_seconds, 1),
        "picture": str(picture), "savedmodel": str(export_dir), "savedmodel_agrees": bool(agree),
        "agreement": f"{'agrees' if agree else 'DISAGREES'} ({count} detections)",
    }
    return agree


def _segmenter(config, out_dir, summary):
    import tensorflow as tf

    import zoo
    from training import TrainConfig, data, evaluate_segmenter, train
    from zoo.predict import write_image
    from zoo.segmentation.visualize import blend

    size = (config.segmenter_image_size, config.segmenter_image_size)
    synthetic = dict(image_size=size, num_classes=config.num_classes, max_objects=config.max_objects)
    train_source = data.synthetic(config.segmenter_train_images, seed=0, **synthetic)
    test_source = data.synthetic(config.test_images, seed=1_000_003, **synthetic)
    _say(f"2/3 training {config.segmenter} on {train_source.summary()}")
    start = time.perf_counter()
    result = train(
        # DeepLab's own batch-norm decays: precise batch norm (TrainConfig.precise_bn, on by
        # default) re-estimates the statistics that a few hundred steps would leave at their start.
        lambda classes: zoo.build(config.segmenter, num_classes=classes, input_shape=(None, None, 3)),
        train_source, out_dir=out_dir / "runs" / "deeplab", task="segmentation",
        config=TrainConfig(epochs=config.segmenter_epochs, batch_size=config.batch_size, image_size=size,
                           optimizer="adam", learning_rate=1e-3, schedule="cosine", validation_fraction=0.0, seed=0),
    )
    train_seconds = time.perf_counter() - start
    model = result.model
    metrics = evaluate_segmenter(model, test_source, image_size=size)
    _say(f"{config.segmenter}: held-out mIoU {metrics['mIoU']:.3f} ({len(test_source.examples)} images), "
         f"trained in {train_seconds / 60:.1f} min")

    images = np.stack([example.image for example in test_source.examples[:8]]).astype(np.uint8)
    logits = model(tf.constant(images, tf.float32), training=False)
    predictions = tf.argmax(logits, axis=-1).numpy()
    picture = write_image(out_dir / "segmentation.png",
                          _grid([blend(image, mask) for image, mask in zip(images, predictions)]))

    export_dir = zoo.export(model, out_dir / "deeplab_savedmodel", overwrite=True,
                            class_names=train_source.class_names)
    served = reload_in_plain_tensorflow(export_dir, images)
    agreement = float(np.mean(served["semantic_predictions"] == predictions))
    agree = agreement >= 0.999
    _say(f"{config.segmenter}: SavedModel {export_dir} reloaded in plain TensorFlow: "
         f"{'agrees' if agree else 'DISAGREES'} on {100 * agreement:.2f}% of the pixels")
    summary["segmentation"] = {
        "model": config.segmenter, "mIoU": metrics["mIoU"], "train_minutes": round(train_seconds / 60, 2),
        "images_per_second": round(config.segmenter_train_images * config.segmenter_epochs / train_seconds, 1),
        "picture": str(picture), "savedmodel": str(export_dir), "pixel_agreement": agreement,
        "agreement": f"{'agrees' if agree else 'DISAGREES'} ({100 * agreement:.2f}% of pixels)",
    }
    return agree


def summary_table(summary) -> str:
    """The demo's closing table: model, held-out metric, training time, images/s, SavedModel check."""
    rows = [("model", "held-out metric", "training", "images/s", "SavedModel in plain TensorFlow")]
    for task, metric in (("detection", "mAP@0.5"), ("segmentation", "mIoU")):
        if task in summary:
            part = summary[task]
            rows.append((part["model"], f"{metric} {part[metric]:.3f}", f"{part['train_minutes']:.1f} min",
                         f"{part['images_per_second']:.1f}", part["agreement"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _pretrained_photo(out_dir) -> dict:
    """torchvision's COCO Faster R-CNN on a photograph from scikit-image, where the weights are cached.

    Nothing is downloaded: without the file (or scikit-image) the demo says how to get them.
    """
    from zoo import weights as weights_lib

    entry = weights_lib.find_entry("faster_rcnn_resnet50_fpn", "coco")
    path = weights_lib.cache_dir() / entry["file_name"]
    if not path.is_file():
        _say(f"pretrained: torchvision's COCO weights are not in {weights_lib.cache_dir()}; "
             f"`zoo.build('faster_rcnn_resnet50_fpn', weights='coco')` downloads them ({entry['url']}), "
             "and the next demo shows them on a photograph")
        return {"shown": False, "reason": f"{path} absent"}
    try:
        from skimage import data as photographs
    except ImportError:
        _say("pretrained: the COCO weights are cached; `pip install scikit-image` for its photographs")
        return {"shown": False, "reason": "scikit-image absent"}
    import zoo
    from zoo.detection.visualize import draw_detections
    from zoo.predict import detect, write_image

    model = zoo.build("faster_rcnn_resnet50_fpn", weights="coco")
    image = photographs.astronaut()
    found = detect(model, image)
    keep = found["scores"] >= 0.5
    names = entry["classes"]["names"][1:]  # the manifest's list starts with the background's
    picture = write_image(Path(out_dir) / "coco_photo.png", draw_detections(
        image, found["boxes"][keep], found["scores"][keep], found["classes"][keep], class_names=names))
    labels = sorted({names[c - 1] for c in found["classes"][keep]})
    _say(f"pretrained: faster_rcnn_resnet50_fpn (COCO) on scikit-image's astronaut: {int(keep.sum())} "
         f"detections of at least 0.5 ({', '.join(labels)}), drawn in {picture}")
    return {"shown": True, "picture": str(picture), "detections": int(keep.sum()), "classes": labels}


def run_demo(out_dir="demo_out", *, quick=False, config: DemoConfig | None = None) -> dict:
    """Runs the demo (see the module docstring) and returns its summary; raises if an export disagrees."""
    config = config or (QUICK if quick else DemoConfig())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A demo starts from scratch: an earlier demo's runs would otherwise be refused (no --resume).
    # Only the demo's own run folders go, and only those that carry its marker: `zoo demo --out .`
    # must never delete a user's `runs/` (or a run of theirs that happens to share the name).
    demo_runs = [out_dir / "runs" / name for name in ("detector", "deeplab")]
    for run_dir in demo_runs:
        if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / ".zoo_demo_run").is_file():
            raise FileExistsError(
                f"{run_dir} exists and zoo demo did not make it; choose another --out, or move that folder away"
            )
    for run_dir in demo_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        (run_dir / ".zoo_demo_run").write_text("made by zoo demo, which deletes this folder when it runs again\n")
    start = time.perf_counter()
    summary = {"config": dataclasses.asdict(config)}
    detection_ok = _detector(config, out_dir, summary)
    segmentation_ok = _segmenter(config, out_dir, summary)
    summary["pretrained"] = _pretrained_photo(out_dir)
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    temporary = out_dir / f".summary.json.tmp-{os.getpid()}"
    temporary.write_text(json.dumps(summary, indent=1))
    os.replace(temporary, out_dir / "summary.json")
    print(summary_table(summary), flush=True)
    _say(f"3/3 done in {summary['minutes']:.1f} min; pictures, SavedModels and summary.json in {out_dir}/")
    if not (detection_ok and segmentation_ok):
        raise RuntimeError("an exported SavedModel disagrees with its Keras model; see the lines above")
    return summary
