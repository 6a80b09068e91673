"""`make demo` / `zoo demo`: the zoo's main job, end to end on the CPU, with no download.

1. Trains `fast_rcnn_resnet50` on synthetic shapes (dense sliding-window proposals), measures
   PASCAL VOC mAP@0.5 on held-out images and draws its detections.
2. Trains a DeepLab-v3+ segmenter on the same kind of data, measures mean IoU and draws its
   masks over the images.
3. Exports both as SavedModels whose `serving_default` takes uint8 pixels (the detector computes
   its proposals and NMS inside the graph), reloads them in a fresh Python process that imports
   TensorFlow only, and checks that they agree with the models in this process.

Everything lands in `out_dir` (default `demo_out/`): `detection.png`, `segmentation.png`,
`fast_rcnn_savedmodel/`, `deeplab_savedmodel/`, `summary.json`, and the training runs under
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
    image_size: int = 96
    num_classes: int = 2
    train_images: int = 320
    test_images: int = 64
    detector_epochs: int = 3
    segmenter: str = "deeplabv3plus_mobilenetv2"
    segmenter_image_size: int = 64
    segmenter_train_images: int = 320
    segmenter_epochs: int = 5
    batch_size: int = 8
    # Sliding windows: every 8 px, sides near the synthetic objects' sizes.
    window_stride: int = 8
    window_scales: tuple[float, ...] = (20.0, 28.0, 40.0, 56.0, 80.0)


QUICK = DemoConfig(
    image_size=64, train_images=16, test_images=4, detector_epochs=1, segmenter_train_images=16,
    segmenter_epochs=1, batch_size=8, window_stride=16, window_scales=(24.0, 48.0),
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


def draw_detection_grid(images, outputs, *, class_names, best=3, score_threshold=0.2, scale=1, columns=4):
    """`images` (uint8 `[B, H, W, 3]`) with a detector's `outputs` drawn, in one grid picture.

    Each image shows its `best` highest-scoring detections (at least `score_threshold`),
    enlarged `scale` times so that the labels can be read. A detector trained for a few CPU
    minutes scores its boxes low (0.3 to 0.5 after the demo's run), so a fixed 0.5 threshold
    would draw nothing; the best few show what it found.
    """
    from zoo.detection.visualize import draw_detections

    images = np.repeat(np.repeat(np.asarray(images), scale, axis=1), scale, axis=2)
    boxes, scores, classes, counts = (
        np.asarray(outputs[name]) for name in ("boxes", "scores", "classes", "num_detections")
    )
    pictures = []
    for index, image in enumerate(images):
        order = np.argsort(-scores[index, :int(counts[index])], kind="stable")[:best]
        pictures.append(draw_detections(
            image, scale * boxes[index, order], scores[index, order], classes[index, order],
            class_names=class_names, score_threshold=score_threshold, thickness=1,
        ))
    return _grid(pictures, columns)


def _detector(config, out_dir, summary):
    import tensorflow as tf

    import zoo
    from training import TrainConfig, data, evaluate_detector, train
    from zoo.detection.sizing import sliding_window_proposals
    from zoo.predict import write_image

    size = (config.image_size, config.image_size)
    synthetic = dict(image_size=size, num_classes=config.num_classes, max_objects=2)
    train_source = data.synthetic(config.train_images, seed=0, **synthetic)
    test_source = data.synthetic(config.test_images, seed=1_000_003, **synthetic)

    proposals = sliding_window_proposals(stride=config.window_stride, scales=config.window_scales, aspect_ratios=(1.0,))

    _say(f"1/3 training fast_rcnn_resnet50 on {train_source.summary()}")
    start = time.perf_counter()
    result = train(
        lambda classes: zoo.build("fast_rcnn_resnet50", num_classes=classes, input_shape=(None, None, 3),
                                  pool_size=4),
        train_source, out_dir=out_dir / "runs" / "fast_rcnn", task="detection",
        config=TrainConfig(epochs=config.detector_epochs, batch_size=config.batch_size, image_size=size,
                           optimizer="adam", learning_rate=1e-3, schedule="cosine", warmup_epochs=0.3,
                           validation_fraction=0.0, seed=0),
        task_options={"proposals": proposals, "rois_per_image": 32, "seed": 0},
    )
    train_seconds = time.perf_counter() - start
    model = result.model
    metrics = evaluate_detector(model, test_source, proposals=proposals, image_size=size)
    _say(f"fast_rcnn_resnet50: held-out mAP@0.5 {metrics['mAP@0.5']:.3f} ({len(test_source.examples)} images), "
         f"trained in {train_seconds / 60:.1f} min")

    images = np.stack([example.image for example in test_source.examples[:8]]).astype(np.uint8)
    outputs = model({"images": tf.constant(images, tf.float32), "rois": tf.tile(proposals(images)[None], [len(images), 1, 1])},
                    training=False)
    picture = write_image(out_dir / "detection.png",
                          draw_detection_grid(images, outputs, class_names=train_source.class_names))

    export_dir = zoo.export(
        model, out_dir / "fast_rcnn_savedmodel", overwrite=True, proposals="sliding_windows",
        proposal_options={"stride": config.window_stride, "scales": config.window_scales, "aspect_ratios": (1.0,)},
        class_names=train_source.class_names,
    )
    served = reload_in_plain_tensorflow(export_dir, images)
    expected = outputs["boxes"].numpy() / np.array([size[0], size[1], size[0], size[1]], np.float32)
    count = int(outputs["num_detections"].numpy().sum())
    agree = (
        np.array_equal(served["num_detections"].astype(np.int64), outputs["num_detections"].numpy().astype(np.int64))
        and np.allclose(served["detection_boxes"], expected, atol=1e-4)
        and np.allclose(served["detection_scores"], outputs["scores"].numpy(), atol=1e-4)
    )
    _say(f"fast_rcnn_resnet50: SavedModel {export_dir} reloaded in plain TensorFlow: "
         f"{'agrees' if agree else 'DISAGREES'} on {len(images)} images ({count} detections)")
    summary["detection"] = {
        "model": "fast_rcnn_resnet50", "mAP@0.5": metrics["mAP@0.5"], "train_minutes": round(train_seconds / 60, 2),
        "picture": str(picture), "savedmodel": str(export_dir), "savedmodel_agrees": bool(agree),
    }
    return agree


def _segmenter(config, out_dir, summary):
    import tensorflow as tf

    import zoo
    from training import TrainConfig, data, evaluate_segmenter, train
    from zoo.predict import write_image
    from zoo.segmentation.visualize import blend

    size = (config.segmenter_image_size, config.segmenter_image_size)
    synthetic = dict(image_size=size, num_classes=config.num_classes, max_objects=2)
    train_source = data.synthetic(config.segmenter_train_images, seed=0, **synthetic)
    test_source = data.synthetic(config.test_images, seed=1_000_003, **synthetic)
    _say(f"2/3 training {config.segmenter} on {train_source.summary()}")
    start = time.perf_counter()
    result = train(
        # DeepLab's own batch-norm decays: precise batch norm (TrainConfig.precise_bn, on by
        # default) re-estimates the statistics that a few hundred steps would leave at their start.
        lambda classes: zoo.build(config.segmenter, num_classes=classes + 1, input_shape=(None, None, 3)),
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
        "picture": str(picture), "savedmodel": str(export_dir), "pixel_agreement": agreement,
    }
    return agree


def run_demo(out_dir="demo_out", *, quick=False, config: DemoConfig | None = None) -> dict:
    """Runs the demo (see the module docstring) and returns its summary; raises if an export disagrees."""
    config = config or (QUICK if quick else DemoConfig())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A demo starts from scratch: an earlier demo's runs would otherwise be refused (no --resume).
    # Only the demo's own run folders go, and only those that carry its marker: `zoo demo --out .`
    # must never delete a user's `runs/` (or a run of theirs that happens to share the name).
    demo_runs = [out_dir / "runs" / name for name in ("fast_rcnn", "deeplab")]
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
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    temporary = out_dir / f".summary.json.tmp-{os.getpid()}"
    temporary.write_text(json.dumps(summary, indent=1))
    os.replace(temporary, out_dir / "summary.json")
    _say(f"3/3 done in {summary['minutes']:.1f} min; pictures, SavedModels and summary.json in {out_dir}/")
    if not (detection_ok and segmentation_ok):
        raise RuntimeError("an exported SavedModel disagrees with its Keras model; see the lines above")
    return summary
