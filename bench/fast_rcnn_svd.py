"""Truncated SVD of Fast R-CNN VGG16's fc6/fc7: detection time and, for a trained model, mAP.

    $ export TF_ENABLE_ONEDNN_OPTS=1
    $ python bench/fast_rcnn_svd.py                      # speed at the paper's sizes
    $ python bench/fast_rcnn_svd.py --trained RUN/model.keras --test-images 200 --image-size 128 \
          --ranks fc1=256,fc2=64                          # + mAP change of a trained detector

Speed: `fast_rcnn_vgg16` with the paper's dimensions (fc6 25088 -> 4096, fc7 4096 -> 4096),
one image of `--image-size`, `--rois` proposals, the whole detection call (conv layers, RoI
pooling, fc layers, heads, NMS) in `tf.function`, before and after
`zoo.detection.svd.truncate_dense_layers` with the paper's ranks (fc6 1024, fc7 256). The
weights are random: the time of a matrix product does not depend on its values.

mAP: with `--trained`, a detector trained by `zoo train` / `bench/fast_rcnn_synthetic.py
--model fast_rcnn_vgg16` is evaluated on a held-out synthetic split before and after the
truncation, with the same sliding-window proposals the synthetic benchmark uses.

Writes bench/results/fast_rcnn_svd.md (or `--results`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from fast_rcnn_synthetic import default_windows, held_out, machine, parse_tiers, window_proposals  # noqa: E402
from zoo.detection.svd import truncate_dense_layers  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fast_rcnn_svd.md"


def parse_ranks(text):
    return {name: int(rank) for name, rank in (part.split("=") for part in text.split(","))}


def time_detection(model, images, rois, repeats):
    detect = tf.function(lambda images, rois: model({"images": images, "rois": rois}, training=False))
    for _ in range(2):
        detect(images, rois)["num_detections"].numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detect(images, rois)["num_detections"].numpy()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), min(times)


def random_rois(count, height, width, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.uniform([0, 0], [height, width], (count, 2))
    side = np.exp(rng.uniform(np.log(16), np.log(min(height, width)), (count, 2)))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], axis=1)
    return np.clip(boxes, 0, [height, width, height, width]).astype(np.float32)[None]


def speed(args):
    height, width = args.image_size
    model = zoo.build("fast_rcnn_vgg16", num_classes=20, input_shape=(height, width, 3))
    images = tf.constant(np.random.default_rng(1).uniform(0, 255, (1, height, width, 3)), tf.float32)
    rois = tf.constant(random_rois(args.rois, height, width))
    full = time_detection(model, images, rois, args.repeats)
    compressed = truncate_dense_layers(model, args.paper_ranks)
    truncated = time_detection(compressed, images, rois, args.repeats)
    return {
        "image": [height, width], "rois": args.rois, "ranks": args.paper_ranks,
        "parameters": [model.count_params(), compressed.count_params()],
        "full_ms": [round(v, 1) for v in full], "svd_ms": [round(v, 1) for v in truncated],
    }


def accuracy(args):
    from training import evaluate_detector

    model = keras.saving.load_model(args.trained)
    size = tuple(model.inputs[0].shape[1:3])
    proposals = window_proposals(parse_tiers(args.windows or default_windows(size[0])), (1.0,))
    test_source = held_out(args.test_images, image_size=size, num_classes=args.num_classes,
                           max_objects=args.max_objects, seed=args.seed)
    before = evaluate_detector(model, test_source, proposals=proposals, image_size=size, batch_size=8)["mAP@0.5"]
    compressed = truncate_dense_layers(model, args.ranks)
    after = evaluate_detector(compressed, test_source, proposals=proposals, image_size=size, batch_size=8)["mAP@0.5"]
    return {"trained": str(args.trained), "ranks": args.ranks, "mAP_full": before, "mAP_svd": after,
            "test_images": args.test_images, "fc_units": model.get_layer("fc1").units}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, nargs=2, default=(480, 640))
    parser.add_argument("--rois", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-ranks", type=parse_ranks, default={"fc1": 1024, "fc2": 256})
    parser.add_argument("--trained", default=None, help="a trained fast_rcnn_vgg16 .keras for the mAP part")
    parser.add_argument("--ranks", type=parse_ranks, default=None, help="ranks for the trained model")
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--windows", default=None, help="default: the synthetic bench's for the model's size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    record = {"speed": speed(args), "machine": machine(), "load_average": list(os.getloadavg())}
    if args.trained:
        record["accuracy"] = accuracy(args)
    print(json.dumps(record), flush=True)
    write_markdown(Path(args.results), record)
    return 0


def write_markdown(path, record):
    s = record["speed"]
    lines = [
        "# Truncated SVD of Fast R-CNN VGG16's fc6 / fc7",
        "",
        f"Produced by `bench/fast_rcnn_svd.py`. One {s['image'][0]} x {s['image'][1]} image, {s['rois']} random "
        f"RoIs, the whole detection call in tf.function (conv layers, RoI max pooling, fc6/fc7, heads, NMS), "
        f"median and min of timed runs after 2 warm-ups; fc6 = `fc1` (25088 -> 4096), fc7 = `fc2` (4096 -> 4096).",
        "",
        "| model | parameters | median ms | min ms |",
        "|---|---:|---:|---:|",
        f"| full | {s['parameters'][0]:,} | {s['full_ms'][0]} | {s['full_ms'][1]} |",
        f"| SVD {s['ranks']} | {s['parameters'][1]:,} | {s['svd_ms'][0]} | {s['svd_ms'][1]} |",
        "",
        f"Detection time {s['svd_ms'][0] / s['full_ms'][0]:.2f}x of the full model's "
        f"({100 * (1 - s['svd_ms'][0] / s['full_ms'][0]):.0f}% less; the paper: about 30% less on a GPU).",
        "",
    ]
    if "accuracy" in record:
        a = record["accuracy"]
        lines += [
            "## mAP change on a trained detector",
            "",
            f"`{a['trained']}` (fc width {a['fc_units']}), {a['test_images']} held-out synthetic images, ranks "
            f"{a['ranks']}: mAP@0.5 {a['mAP_full']:.3f} full, {a['mAP_svd']:.3f} truncated "
            f"({a['mAP_svd'] - a['mAP_full']:+.3f}).",
            "",
        ]
    m = record["machine"]
    lines += [
        "## Machine",
        "",
        f"{m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, "
        f"TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}, commit {m['commit']}; load average at the end "
        f"{[round(v, 2) for v in record['load_average']]} (the bench's own two threads make up to about 2).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
