"""The synthetic shapes: deterministic per (seed, index), boxes exactly the masks' tight boxes."""

import numpy as np
import pytest

from training.data import SHAPES, DataError, Example, synthetic


def tight_box(pixels):
    rows = np.flatnonzero(pixels.any(axis=1))
    columns = np.flatnonzero(pixels.any(axis=0))
    return [rows[0], columns[0], rows[-1] + 1, columns[-1] + 1]


def test_same_seed_same_examples_and_prefix_stable():
    first = synthetic(12, num_classes=5, seed=3)
    again = synthetic(12, num_classes=5, seed=3)
    prefix = synthetic(5, num_classes=5, seed=3)
    for a, b in zip(first.examples, again.examples):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.classes, b.classes)
        assert a.label == b.label
    for a, b in zip(prefix.examples, first.examples):
        np.testing.assert_array_equal(a.image, b.image)
    other = synthetic(5, num_classes=5, seed=4)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(prefix.examples, other.examples))


def test_boxes_are_the_tight_boxes_of_the_mask_pixels():
    source = synthetic(60, image_size=(48, 56), num_classes=8, max_objects=4, seed=1)
    assert source.class_names == SHAPES
    assert set(source.task_kinds) == {"classification", "detection", "segmentation"}
    for example in source.examples:
        assert example.image.shape == (48, 56, 3) and example.image.dtype == np.uint8
        assert example.mask.shape == (48, 56) and example.mask.dtype == np.uint8
        assert example.boxes.dtype == np.float32 and example.classes.dtype == np.int32
        assert 1 <= len(example.classes) <= 4
        # Objects never overlap, so each object is a connected set of its class's pixels inside
        # its box, and the pixels of all objects together are the whole foreground.
        covered = np.zeros_like(example.mask, bool)
        for box, class_id in zip(example.boxes.astype(int), example.classes):
            ymin, xmin, ymax, xmax = box
            inside = example.mask[ymin:ymax, xmin:xmax] == class_id
            assert tight_box(inside) == [0, 0, ymax - ymin, xmax - xmin]
            covered[ymin:ymax, xmin:xmax] |= inside
        np.testing.assert_array_equal(covered, example.mask > 0)
        np.testing.assert_array_equal(example.boxes, np.round(example.boxes))


def test_label_is_the_class_of_the_largest_object():
    source = synthetic(80, num_classes=4, max_objects=3, seed=2)
    for example in source.examples:
        areas = [np.sum(example.mask[int(b[0]):int(b[2]), int(b[1]):int(b[3])] == c)
                 for b, c in zip(example.boxes, example.classes)]
        assert example.label == example.classes[int(np.argmax(areas))] - 1
        assert 0 <= example.label < 4


def test_classes_are_balanced_and_colour_does_not_give_the_class_away():
    source = synthetic(400, num_classes=4, max_objects=1, seed=0)
    labels = np.array([example.label for example in source.examples])
    assert np.all(np.bincount(labels, minlength=4) > 70)
    # The mean colour of the object pixels, per class: the classes share the same colours.
    colours = np.array([example.image[example.mask > 0].mean(axis=0) for example in source.examples])
    per_class = np.array([colours[labels == k].mean(axis=0) for k in range(4)])
    assert np.ptp(per_class, axis=0).max() < 40


@pytest.mark.parametrize("arguments, message", [
    (dict(num_examples=0), "num_examples"),
    (dict(num_examples=3, num_classes=9), "num_classes"),
    (dict(num_examples=3, max_objects=0), "max_objects"),
    (dict(num_examples=3, image_size=(8, 64)), "image_size"),
])
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        synthetic(**arguments)


def test_example_checks_its_arrays():
    image = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(DataError, match="ex1: box .* outside the 10x12 image"):
        Example(image=image, boxes=[[0, 0, 11, 5]], classes=[1], source="ex1")
    with pytest.raises(DataError, match="ex2: box .* zero area"):
        Example(image=image, boxes=[[2, 3, 2, 5]], classes=[1], source="ex2")
    with pytest.raises(DataError, match="ex3: object class ids are 1-based"):
        Example(image=image, boxes=[[2, 3, 4, 5]], classes=[0], source="ex3")
    with pytest.raises(DataError, match="ex4: 1 boxes but 2 classes"):
        Example(image=image, boxes=[[2, 3, 4, 5]], classes=[1, 2], source="ex4")
    with pytest.raises(DataError, match="ex5: image must be RGB uint8"):
        Example(image=image.astype(np.float32), source="ex5")
    example = Example(image=image, boxes=np.zeros((0, 4)), classes=[], source="empty")
    assert example.boxes.shape == (0, 4) and example.classes.shape == (0,) and example.size == (10, 12)


def test_shapes_pick_the_classes_in_order():
    default = synthetic(6, num_classes=2, seed=9)
    same = synthetic(6, shapes="circle,square", seed=9)
    swapped = synthetic(6, shapes=["square", "circle"], seed=9)
    assert same.class_names == ("circle", "square") and same.class_source == "--classes"
    assert swapped.class_names == ("square", "circle") and default.class_source == "synthetic"
    for a, b, c in zip(default.examples, same.examples, swapped.examples):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.label == c.label  # the same class ids are drawn, in another shape
    assert not all(np.array_equal(a.mask, c.mask) for a, c in zip(default.examples, swapped.examples))
    with pytest.raises(ValueError, match="shapes must be among"):
        synthetic(2, shapes="hexagon")
