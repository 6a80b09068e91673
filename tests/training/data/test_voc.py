"""The VOC readers on a fixture the tests write: exact boxes, class-list rules, bad input."""

import cv2
import numpy as np
import pytest
from PIL import Image

from training.data import (
    PASCAL_VOC_CLASSES,
    DataError,
    DataWarning,
    Example,
    load_image,
    load_mask,
    make_dataset,
    read_voc_detection,
    read_voc_segmentation,
)

from tests.training.data.voc_fixture import EXPECTED_BOXES, VOC_IMAGES, annotation_xml, save_palette_png, write_voc


def by_id(source):
    return {example.image.rsplit("/", 1)[-1][:-4]: example for example in source.examples}


def test_detection_boxes_classes_and_difficult(voc_root):
    source = read_voc_detection(voc_root, "trainval")
    assert source.class_source == "pascal-voc-20" and source.class_names == PASCAL_VOC_CLASSES
    assert source.task_kinds == ("detection",) and source.skipped == {}
    examples = by_id(source)
    assert list(examples) == list(VOC_IMAGES)
    for image_id, example in examples.items():
        height, width, objects = VOC_IMAGES[image_id]
        np.testing.assert_array_equal(example.boxes, EXPECTED_BOXES[image_id])
        assert example.boxes.dtype == np.float32
        assert example.classes.tolist() == [PASCAL_VOC_CLASSES.index(name) + 1 for name, _, _ in objects]
        assert example.difficult.tolist() == [bool(d) for _, _, d in objects]
        assert example.size == (height, width) and example.source.endswith(f"Annotations/{image_id}.xml")
    assert examples["2008_000001"].classes.tolist() == [12, 15]  # dog, person


def test_boxes_are_the_tight_boxes_of_the_mask_objects(voc_root):
    boxes = by_id(read_voc_detection(voc_root, "train"))
    masks = by_id(read_voc_segmentation(voc_root, "train"))
    for image_id, example in boxes.items():
        mask = load_mask(masks[image_id], num_classes=20)
        for box, class_id in zip(example.boxes, example.classes):
            rows = np.flatnonzero((mask == class_id).any(axis=1))
            columns = np.flatnonzero((mask == class_id).any(axis=0))
            np.testing.assert_array_equal(box, [rows[0], columns[0], rows[-1] + 1, columns[-1] + 1])


def test_splits_and_keep_difficult(voc_root):
    assert list(by_id(read_voc_detection(voc_root, "val"))) == ["2008_000003"]
    source = read_voc_detection(voc_root, "train", keep_difficult=False)
    first = by_id(source)["2008_000001"]
    assert first.classes.tolist() == [12] and not first.difficult.any()


def test_images_decode_as_rgb(voc_root, tmp_path):
    example = by_id(read_voc_detection(voc_root, "train"))["2008_000002"]
    image = load_image(example)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 2] = 255  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "red.png"), red)
    assert load_image(Example(str(tmp_path / "red.png"))).reshape(-1, 3)[0].tolist() == [255, 0, 0]


def test_segmentation_masks_are_class_indices_with_255_kept(voc_root):
    source = read_voc_segmentation(voc_root, "train")
    assert source.class_source == "pascal-voc-20" and source.class_names == PASCAL_VOC_CLASSES
    assert source.task_kinds == ("segmentation",)
    example = by_id(source)["2008_000001"]
    mask = load_mask(example)
    assert mask.dtype == np.uint8 and mask.shape == (30, 40)
    assert set(np.unique(mask).tolist()) == {0, 12, 15, 255}
    assert mask[0, 0] == 12 and mask[12, 0] == 255 and mask[13, 0] == 0  # dog rows 0..11, border row 12
    assert example.source.endswith("SegmentationClass/2008_000001.png")


def test_class_list_from_the_command_line(voc_root):
    with pytest.warns(DataWarning, match=r"1 x object of a class not in --classes \(e\.g\. .*2008_000001\.xml\)"):
        source = read_voc_detection(voc_root, "train", classes="cat, dog")
    assert source.class_names == ("cat", "dog") and source.class_source == "--classes"
    assert source.skipped == {"object of a class not in --classes": 1}
    examples = by_id(source)
    assert examples["2008_000001"].classes.tolist() == [2]
    np.testing.assert_array_equal(examples["2008_000001"].boxes, [EXPECTED_BOXES["2008_000001"][0]])
    assert examples["2008_000002"].classes.tolist() == [1]
    assert read_voc_segmentation(voc_root, "train", classes=["a", "b"]).class_source == "--classes"


def test_class_list_found_in_annotations(tmp_path):
    images = dict(VOC_IMAGES, **{"2008_000004": (16, 16, [("unicorn", (2, 2, 9, 9), 0)])})
    root = write_voc(tmp_path / "voc", images, splits={"train": list(images)})
    source = read_voc_detection(root, "train")
    assert source.class_source == "found in annotations"
    assert source.class_names == ("cat", "dog", "person", "unicorn")
    assert by_id(source)["2008_000004"].classes.tolist() == [4]
    assert by_id(source)["2008_000001"].classes.tolist() == [2, 3]
    assert "found in annotations" in source.summary()


XML = "Annotations/2008_000002.xml"
BAD_BOX = annotation_xml("2008_000002", 24, 32, [("cat", (6, 5, "x", 20), 0)])
NO_NAME = annotation_xml("2008_000002", 24, 32, [("", (6, 5, 7, 20), 0)])


@pytest.mark.parametrize("path, content, message", [
    (XML, None, r"2008_000002\.xml: annotation file does not exist"),
    (XML, "<annotation><object>", r"2008_000002\.xml: malformed XML"),
    (XML, BAD_BOX, r"2008_000002\.xml: object #1 \('cat'\) needs a <bndbox>"),
    (XML, NO_NAME, r"2008_000002\.xml: object #1 has no <name>"),
    ("JPEGImages/2008_000002.jpg", None, r"2008_000002\.jpg: image file does not exist"),
    ("ImageSets/Main/train.txt", "\n", r"Main/train\.txt: empty dataset"),
    ("ImageSets/Main/train.txt", None, r"train\.txt: split list does not exist \(splits there: \['trainval', 'val'\]"),
])
def test_detection_errors_name_the_file(voc_root, path, content, message):
    if content is None:
        (voc_root / path).unlink()
    else:
        (voc_root / path).write_text(content)
    with pytest.raises(DataError, match=message):
        read_voc_detection(voc_root, "train")


def test_not_a_voc_directory_points_to_the_year(tmp_path):
    write_voc(tmp_path / "VOCdevkit" / "VOC2007")
    expected = r"not a VOC directory, it has no Annotations, JPEGImages, ImageSets; did you mean .*VOC2007"
    with pytest.raises(DataError, match=expected):
        read_voc_detection(tmp_path)


def test_bad_boxes_are_skipped_and_counted(tmp_path):
    images = {
        "a": (20, 20, [("dog", (1, 1, 20, 20), 0), ("cat", (5, 5, 4, 9), 0), ("cat", (5, 5, 21, 9), 0)]),
        "b": (20, 20, [("dog", (0, 3, 5, 9), 0)]),
    }
    root = write_voc(tmp_path / "voc", images, splits={"train": ["a", "b", "a"]})
    with pytest.warns(DataWarning) as caught:
        source = read_voc_detection(root, "train")
    message = str(caught[0].message)
    assert "a.xml" in message and "b.xml" in message
    assert source.skipped == {
        "image listed twice in the split": 1,
        "box of zero area": 1,
        "box outside its image": 2,
        "image with no objects left": 1,
    }
    assert [example.source.rsplit("/", 1)[-1] for example in source.examples] == ["a.xml"]
    np.testing.assert_array_equal(source.examples[0].boxes, [[0, 0, 20, 20]])


def test_image_of_another_size_than_its_xml_fails_when_read(voc_root):
    example = by_id(read_voc_detection(voc_root, "train"))["2008_000002"]
    cv2.imwrite(str(voc_root / "JPEGImages" / "2008_000002.jpg"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"2008_000002\.jpg: the image is 10x10 .*/2008_000002\.xml says 24x32"):
        read_voc_detection(voc_root, "train")  # from the JPEG's header, before any batch loads
    with pytest.raises(DataError, match=r"2008_000002\.jpg: the image is 10x10 .*/2008_000002\.xml says 24x32"):
        load_image(example)  # a file changed after reading is still caught


def test_image_that_does_not_decode_fails_naming_it(voc_root):
    source = read_voc_detection(voc_root, "train")
    (voc_root / "JPEGImages" / "2008_000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"2008_000002\.jpg: not an image Pillow can decode"):
        read_voc_detection(voc_root, "train")
    with pytest.raises(DataError, match=r"2008_000002\.jpg: not an image OpenCV can decode"):
        load_image(by_id(source)["2008_000002"])
    dataset = make_dataset(source, task="detection", batch_size=2, image_size=16, training=False)
    with pytest.raises(Exception, match=r"DataError: .*2008_000002\.jpg: not an image OpenCV can decode"):
        list(dataset)


def test_mask_problems_fail_naming_the_png(voc_root):
    path = voc_root / "SegmentationClass" / "2008_000002.png"
    mask = np.array(Image.open(path))
    mask[0, 0] = 30
    save_palette_png(path, mask)
    source = read_voc_segmentation(voc_root, "train")
    with pytest.raises(DataError, match=r"2008_000002\.png: class ids \[30\] outside 0\.\.20"):
        load_mask(by_id(source)["2008_000002"], num_classes=20)
    with pytest.raises(Exception, match=r"DataError: .*2008_000002\.png: class ids \[30\]"):
        list(make_dataset(source, task="segmentation", batch_size=2, image_size=16, training=False))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"2008_000002\.png: a RGB image; masks must hold class ids"):
        read_voc_segmentation(voc_root, "train")
    with pytest.raises(DataError, match=r"2008_000002\.png: a RGB image; masks must hold class ids"):
        load_mask(by_id(source)["2008_000002"])
    path.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"2008_000002\.png: not a mask image Pillow can decode"):
        read_voc_segmentation(voc_root, "train")
    with pytest.raises(DataError, match=r"2008_000002\.png: not a mask image Pillow can decode"):
        load_mask(by_id(source)["2008_000002"])
    path.unlink()
    with pytest.raises(DataError, match=r"2008_000002\.png: mask file does not exist"):
        read_voc_segmentation(voc_root, "train")


def test_voc_through_make_dataset_scales_boxes_exactly(voc_root):
    source = read_voc_detection(voc_root, "train")
    dataset = make_dataset(source, task="detection", batch_size=2, image_size=(60, 20), training=False)
    images, targets = next(iter(dataset))
    assert images.shape == (2, 60, 20, 3)
    # 30x40 -> 60x20 and 24x32 -> 60x20: y scales by 2 and 2.5, x by 0.5 and 0.625.
    np.testing.assert_allclose(targets["boxes"][0, :2], np.array(EXPECTED_BOXES["2008_000001"]) * [2, 0.5, 2, 0.5])
    np.testing.assert_allclose(targets["boxes"][1, :1], np.array(EXPECTED_BOXES["2008_000002"]) * ([2.5, 0.625] * 2))
    assert targets["classes"][0, :3].numpy().tolist() == [12, 15, 0]
    assert not np.any(targets["boxes"][:, 2:])
