"""bench/fast_rcnn_synthetic.py: the sliding windows scale with the image, as the synthetic objects do."""

import numpy as np
import tensorflow as tf

from bench.fast_rcnn_synthetic import BASE_SIZE, default_windows, parse_tiers, window_proposals
from training import data
from training.detection.average_precision import iou_matrix


def test_base_size_gives_the_base_windows_and_other_sizes_scale_them():
    assert default_windows(BASE_SIZE) == "8:20,28,40;16:56,80,112"
    # By hand: 192 / 128 = 1.5 times every stride and side.
    assert default_windows(192) == "12:30,42,60;24:84,120,168"
    assert parse_tiers(default_windows(64)) == ((4, (10.0, 14.0, 20.0)), (8, (28.0, 40.0, 56.0)))


def test_scaled_windows_find_the_objects_of_larger_images():
    size = 192
    source = data.synthetic(40, image_size=size, num_classes=4, max_objects=3, seed=5)
    windows = window_proposals(parse_tiers(default_windows(size)), (1.0,))(tf.zeros([1, size, size, 3])).numpy()
    best = np.concatenate([iou_matrix(example.boxes, windows).max(axis=1) for example in source.examples])
    assert len(best) > 40
    # Every object is within IoU 0.5 of a window; at 128 x 128 the base windows do the same.
    assert best.min() >= 0.5
