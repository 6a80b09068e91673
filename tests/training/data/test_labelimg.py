"""VOC XML without ImageSets (LabelImg's layouts): every annotated image; `zoo train` holds out a
seeded fraction and `zoo evaluate --split val` evaluates on exactly those images."""

import json
import shutil

import cv2
import numpy as np
import pytest

from tests.training.data.voc_fixture import annotation_xml
from training.data import DataError, load_image, parse_dataset_spec, read_voc_detection, split_validation

# 10 images of helmets and vests (1-based inclusive VOC boxes), classes that are not PASCAL's.
IMAGES = {
    f"photo_{index:02d}": (32, 40, [("helmet", (2, 3, 14, 13), 0),
                                    ("vest" if index % 2 else "helmet", (20, 16, 36, 30), 0)])
    for index in range(10)
}


def write_labelimg(root, *, side_by_side=False, images=IMAGES):
    """LabelImg's save layout: Annotations/*.xml + JPEGImages/, or the XMLs beside their images."""
    xml_folder = root if side_by_side else root / "Annotations"
    image_folder = root if side_by_side else root / "JPEGImages"
    xml_folder.mkdir(parents=True, exist_ok=True)
    image_folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (height, width, objects) in images.items():
        suffix = ".png" if side_by_side else ".jpg"
        pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
        assert cv2.imwrite(str(image_folder / f"{image_id}{suffix}"), pixels)
        xml = annotation_xml(image_id, height, width, objects).replace(f"{image_id}.jpg", f"{image_id}{suffix}")
        (xml_folder / f"{image_id}.xml").write_text(xml)
    return root


def test_every_annotated_image_without_image_sets(tmp_path):
    root = write_labelimg(tmp_path / "labels")
    cv2.imwrite(str(root / "JPEGImages" / "unlabelled.jpg"), np.zeros((8, 8, 3), np.uint8))
    source = read_voc_detection(root, "train")
    assert not source.split_lists and len(source.examples) == 10
    assert source.class_names == ("helmet", "vest") and source.class_source == "found in annotations"
    assert "no ImageSets: 10 annotated images (1 images without XML left out)" in source.origin
    np.testing.assert_array_equal(source.examples[0].boxes, [[2, 1, 13, 14], [15, 19, 30, 36]])
    assert read_voc_detection(root, "anything").examples[3].source == source.examples[3].source


def test_xml_beside_their_images(tmp_path):
    root = write_labelimg(tmp_path / "labels", side_by_side=True)
    source = read_voc_detection(root)
    assert len(source.examples) == 10 and source.examples[0].image.endswith("photo_00.png")
    assert load_image(source.examples[0]).shape == (32, 40, 3)


def test_an_xml_without_its_image_is_named(tmp_path):
    root = write_labelimg(tmp_path / "labels")
    (root / "JPEGImages" / "photo_03.jpg").unlink()
    with pytest.raises(DataError, match=r"photo_03\.xml: its image \(photo_03\.jpg\) is not in .*JPEGImages"):
        read_voc_detection(root)
    shutil.rmtree(root / "Annotations")
    with pytest.raises(DataError, match="not a VOC directory"):
        read_voc_detection(root)


def test_the_val_split_is_what_the_trainer_holds_out(tmp_path):
    root = write_labelimg(tmp_path / "labels")
    every = parse_dataset_spec(f"voc:{root}", split="train", seed=3)
    assert len(every.examples) == 10
    assert "no ImageSets: 10 annotated images, 20% held out with seed 3 by zoo train for validation" in every.origin
    trained_on, held_out = split_validation(every, 0.2, 3)  # what train() does without a validation source
    val = parse_dataset_spec(f"voc:{root}", split="val", seed=3)
    assert [e.source for e in val.examples] == [e.source for e in held_out.examples] and len(val.examples) == 2
    assert not {e.source for e in val.examples} & {e.source for e in trained_on.examples}
    assert "20% held out with seed 3: evaluating on the 2 held out" in val.origin
    other_seed = parse_dataset_spec(f"voc:{root}", split="val", seed=4)
    assert [e.source for e in other_seed.examples] != [e.source for e in val.examples]
    assert len(parse_dataset_spec(f"voc:{root}", split="all").examples) == 10
    with pytest.raises(DataError, match="no ImageSets, so no split lists: split 'test' is none of 'train'"):
        parse_dataset_spec(f"voc:{root}", split="test")


@pytest.mark.slow
def test_zoo_train_then_evaluate_the_held_out_images_in_separate_processes(tmp_path):
    from tests.helpers import run_zoo

    root = write_labelimg(tmp_path / "labels")
    out = tmp_path / "run"
    common = ["--dataset", f"voc:{root}", "--image-size", "32", "32", "--batch-size", "2", "--seed", "1",
              "--proposal-stride", "16", "--proposal-scales", "16", "32", "--quiet"]
    trained = run_zoo("train", "fast_rcnn_vgg16", *common, "--epochs", "1", "--optimizer", "adam", "--lr", "0.001",
                      "--rois-per-image", "8", "--precise-bn", "0", "--set", "fc_units=16", "--out", out)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "no ImageSets: 10 annotated images, 20% held out with seed 1 by zoo train for validation" in trained.stderr
    assert "validation: " in trained.stderr and ": 2 examples" in trained.stderr
    evaluated = run_zoo("evaluate", "fast_rcnn_vgg16", "--weights", out / "model.keras", "--split", "val", *common)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "20% held out with seed 1: evaluating on the 2 held out): 2 examples" in evaluated.stderr
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"mAP@0.5", "AP/helmet", "AP/vest"}  # VOC data: no COCO metrics
    assert 0.0 <= metrics["mAP@0.5"] <= 1.0


@pytest.mark.slow
def test_zoo_train_val_split_val_on_a_folder_trains_only_on_what_it_does_not_hold_out(tmp_path):
    from tests.helpers import run_zoo

    root = write_labelimg(tmp_path / "labels")
    trained = run_zoo("train", "fast_rcnn_vgg16", "--dataset", f"voc:{root}", "--val-split", "val", "--image-size",
                      "32", "32", "--batch-size", "2", "--seed", "1", "--proposal-stride", "16", "--proposal-scales",
                      "16", "32", "--quiet", "--epochs", "1", "--rois-per-image", "8", "--precise-bn", "0", "--set",
                      "fc_units=16", "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr[-3000:]
    train_line = next(line for line in trained.stderr.splitlines() if line.startswith("train: voc:"))
    validation_line = next(line for line in trained.stderr.splitlines() if line.startswith("validation: "))
    assert ": 8 examples" in train_line, train_line
    assert ": 2 examples" in validation_line, validation_line
