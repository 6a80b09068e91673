"""bench/voc_cli.py's dataset: a real VOC layout that the zoo's readers take as a user's folder."""

import numpy as np

from bench.voc_cli import CLASSES, VOID, write_dataset
from training.data import read_voc_detection, read_voc_segmentation
from training.data.examples import load_mask


def test_the_dataset_reads_as_voc_with_boxes_over_their_class_and_void_bands(tmp_path):
    root = write_dataset(tmp_path / "voc", train=12, val=4, seed=3)
    detection = read_voc_detection(root, "train", classes=",".join(CLASSES))
    segmentation = read_voc_segmentation(root, "train", classes=",".join(CLASSES))
    assert len(detection.examples) == len(segmentation.examples) >= 10
    assert len(read_voc_detection(root, "val", classes=",".join(CLASSES)).examples) >= 3
    sizes, void = set(), 0
    for boxes, masks in zip(detection.examples, segmentation.examples):
        mask = load_mask(masks)
        height, width = mask.shape
        assert 200 <= min(height, width) and max(height, width) <= 360
        sizes.add((height, width))
        assert set(np.unique(mask)) <= {0, 1, 2, 3, VOID}
        void += int((mask == VOID).sum())
        for box, label in zip(boxes.boxes, boxes.classes):
            ymin, xmin, ymax, xmax = (int(round(v)) for v in box)
            # Each box holds pixels of its class, and the band of VOC's void pixels rings them.
            inside = mask[ymin:ymax, xmin:xmax]
            assert (inside == label).any()
    assert len(sizes) > 3  # sizes and aspect ratios vary
    assert void > 0  # 255 bands around the objects
