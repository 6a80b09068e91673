"""The class-folder reader and the CLI's dataset strings."""

import cv2
import numpy as np
import pytest

from training.data import (
    SHAPES,
    DataError,
    DataWarning,
    Example,
    load_image,
    make_dataset,
    parse_dataset_spec,
    read_folder,
)

from training.data import spec
from tests.training.data.voc_fixture import VOC_IMAGES, write_voc


def write_folders(root, counts):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            colour = np.full((6, 5, 3), 40 * index, np.uint8)
            cv2.imwrite(str(root / name / f"{index}.{'png' if index % 2 else 'jpg'}"), colour)
    return root


def test_folders_sorted_into_labels(tmp_path):
    root = write_folders(tmp_path / "images", {"zebra": 2, "ant": 3, "Moth": 1})
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "ant" / "4.JPEG").write_bytes((root / "ant" / "0.jpg").read_bytes())
    (root / ".cache").mkdir()
    with pytest.warns(DataWarning, match=r"1 x file or folder that is not an image \(e\.g\. .*notes\.txt\)"):
        source = read_folder(root)
    assert source.class_names == ("Moth", "ant", "zebra") and source.class_source == "folders"
    assert source.task_kinds == ("classification",)
    assert [(e.label, e.image.rsplit("/", 2)[-2:]) for e in source.examples] == [
        (0, ["Moth", "0.jpg"]), (1, ["ant", "0.jpg"]), (1, ["ant", "1.png"]), (1, ["ant", "2.jpg"]),
        (1, ["ant", "4.JPEG"]), (2, ["zebra", "0.jpg"]), (2, ["zebra", "1.png"]),
    ]
    assert source.skipped == {"file or folder that is not an image": 1}
    images, labels = next(iter(make_dataset(source, task="classification", batch_size=7, image_size=6, training=False)))
    assert labels.numpy().tolist() == [0, 1, 1, 1, 1, 2, 2] and images.shape == (7, 6, 6, 3)


def test_folders_chosen_by_classes(tmp_path):
    root = write_folders(tmp_path / "images", {"a": 1, "b": 1, "c": 1})
    with pytest.warns(DataWarning, match="folder not in --classes"):
        source = read_folder(root, classes="c,a")
    assert source.class_names == ("c", "a") and source.class_source == "--classes"
    assert [(e.label, e.image.rsplit("/", 2)[-2]) for e in source.examples] == [(0, "c"), (1, "a")]
    with pytest.raises(DataError, match=r"no folder for the classes \['d'\]"):
        read_folder(root, classes=["a", "d"])


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: image folder does not exist"):
        read_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: empty dataset, no class folders"):
        read_folder(tmp_path / "empty")
    root = write_folders(tmp_path / "images", {"a": 1, "b": 0})
    with pytest.raises(DataError, match=r"images/b: class folder has no \.jpg"):
        read_folder(root)
    (root / "b" / "broken.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"b/broken\.jpg: not an image Pillow can decode"):
        read_folder(root)  # found from its header when the folder is read, not when a batch loads
    with pytest.raises(DataError, match=r"b/broken\.jpg: not an image OpenCV can decode"):
        load_image(Example(str(root / "b" / "broken.jpg"), label=0))


def test_synthetic_specs(monkeypatch):
    source = parse_dataset_spec("synthetic:12", image_size=(20, 24), seed=4)
    assert len(source.examples) == 12 and source.examples[0].image.shape == (20, 24, 3)
    assert source.class_names == SHAPES[:4] and source.class_source == "synthetic"
    fewer = parse_dataset_spec("synthetic:5", image_size=(20, 24), seed=4)
    np.testing.assert_array_equal(source.examples[3].image, fewer.examples[3].image)
    # Another split draws other images, the same ones each time.
    validation = parse_dataset_spec("synthetic:5", image_size=(20, 24), seed=4, split="val")
    assert not np.array_equal(validation.examples[0].image, fewer.examples[0].image)
    again = parse_dataset_spec("synthetic:5", image_size=(20, 24), seed=4, split="val")
    np.testing.assert_array_equal(validation.examples[0].image, again.examples[0].image)
    picked = parse_dataset_spec("synthetic:3", classes="star,ring")
    assert picked.class_names == ("star", "ring") and picked.class_source == "--classes"
    assert spec.SYNTHETIC_DEFAULT_SIZE == 1000
    monkeypatch.setattr(spec, "SYNTHETIC_DEFAULT_SIZE", 6)  # 1000 images take a second to draw
    assert len(parse_dataset_spec(" Synthetic ").examples) == 6
    with pytest.raises(ValueError, match="shapes must be among"):
        parse_dataset_spec("synthetic:3", classes="dog")


def test_voc_and_folder_specs(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    detection = parse_dataset_spec(f"voc:{root}", split="val")
    assert detection.task_kinds == ("detection",) and len(detection.examples) == 1
    segmentation = parse_dataset_spec(f"voc:{root}", task="segmentation")
    assert segmentation.task_kinds == ("segmentation",) and len(segmentation.examples) == 2
    chosen = parse_dataset_spec(f"voc:{root}", classes="cat,dog,person", split="train")
    assert chosen.class_names == ("cat", "dog", "person") and chosen.class_source == "--classes"
    folders = write_folders(tmp_path / "images", {"x": 1, "y": 1})
    assert parse_dataset_spec(f"folder:{folders}").class_names == ("x", "y")
    with pytest.raises(ValueError, match="feeds classification, not detection"):
        parse_dataset_spec(f"folder:{folders}", task="detection")
    with pytest.raises(ValueError, match="feeds detection, not classification"):
        parse_dataset_spec(f"voc:{root}", task="classification")
    assert len(VOC_IMAGES) == 3


@pytest.mark.parametrize("text", ["imagenet", "synthetic:0", "synthetic:many", "voc:", "folder", "", "coco:", "kitti:/data"])
def test_bad_specs_list_the_accepted_forms(text):
    accepted = r"accepted: 'synthetic', 'synthetic:N' \(N examples\), 'voc:PATH', 'coco:PATH.json' or 'folder:PATH'"
    with pytest.raises(ValueError, match=accepted):
        parse_dataset_spec(text)
