"""Draws a trained synthetic-bench detector's predictions on held-out images, for the README.

    $ python bench/draw_detections.py RUN/model.keras bench/results/fast_rcnn_synthetic.png
    $ python bench/draw_detections.py RUN/model.keras bench/results/faster_rcnn_synthetic.png

RUN is the `--out` of `bench/fast_rcnn_synthetic.py`; its `run.json` is not needed: the
held-out images are the bench's (same sizes, classes and seed), and a Fast R-CNN model gets the
bench's sliding windows (`--windows`, default the bench's). Each picture shows an image's
detections scoring at least `--score-threshold` (at most `--best` of them), labelled with
class and score, in a grid of `--images` held-out images.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402,F401  (registers the zoo's layers for loading)
from fast_rcnn_synthetic import default_windows, held_out, parse_tiers, window_proposals  # noqa: E402
from layers.detection_contract import takes_rois  # noqa: E402
from zoo.demo import draw_detection_grid  # noqa: E402
from zoo.predict import write_image  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a detector trained by bench/fast_rcnn_synthetic.py (.keras)")
    parser.add_argument("out", help="the picture to write (.png)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--windows", default=None, help="default: the bench's for --image-size")
    parser.add_argument("--best", type=int, default=4)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")

    model = keras.models.load_model(args.model)
    source = held_out(args.images, image_size=(args.image_size,) * 2, num_classes=args.num_classes,
                      max_objects=args.max_objects, seed=args.seed)
    images = np.stack([example.image for example in source.examples]).astype(np.uint8)
    inputs = {"images": tf.constant(images, tf.float32)}
    if takes_rois(model):
        tiers = parse_tiers(args.windows or default_windows(args.image_size))
        windows = window_proposals(tiers, (1.0,))(inputs["images"])
        inputs["rois"] = tf.tile(windows[None], [len(images), 1, 1])
    outputs = model(inputs, training=False)
    # Drawn at twice the size, so that the labels can be read in the README.
    picture = draw_detection_grid(images, outputs, class_names=source.class_names, best=args.best,
                                  score_threshold=args.score_threshold, scale=2)
    print(write_image(args.out, picture))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
