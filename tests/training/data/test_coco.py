"""The COCO reader: sparse category ids, [x, y, w, h] boxes, crowds, polygon and RLE masks, bad data;
COCO AP through `zoo evaluate`'s code path against pycocotools' own COCOeval on the JSON."""

import contextlib
import io
import json
import sys

import numpy as np
import pytest

from tests.training.data.coco_fixture import SIZES, write_coco
from training.data import DataError, DataWarning, load_image, load_mask, make_dataset, parse_dataset_spec, read_coco


@pytest.fixture
def coco_json(tmp_path):
    return write_coco(tmp_path / "coco")


def test_classes_follow_the_categories_order_with_sparse_ids(coco_json):
    source = read_coco(coco_json)
    assert source.class_names == ("dog", "cat", "kite") and source.class_source == "coco categories"
    assert source.annotation_format == "coco" and source.task_kinds == ("detection",)
    assert len(source.examples) == len(SIZES)
    first = source.examples[0]
    # [x, y, w, h] = [2, 3, 12, 10] -> [ymin, xmin, ymax, xmax] = [3, 2, 13, 14]; the crowd stays, marked.
    np.testing.assert_array_equal(first.boxes, [[3, 2, 13, 14], [18, 24, 30, 38], [0, 24, 8, 40]])
    np.testing.assert_array_equal(first.classes, [1, 3, 2])  # dog (17), kite (90), cat (3)
    np.testing.assert_array_equal(first.crowd, [False, False, True])
    np.testing.assert_array_equal(first.area, [120, 168, 128])
    assert first.size == SIZES[1] and load_image(first).shape == (*SIZES[1], 3)
    assert "annotations.json" in first.source and "000000000001.png" in first.source
    # The polygon's area is the triangle's (72), not its box's (144).
    assert source.examples[1].area[2] == 72


def test_training_batches_leave_crowds_out(coco_json):
    source = read_coco(coco_json)
    dataset = make_dataset(source, task="detection", batch_size=1, image_size=(32, 40), training=False, max_boxes=4)
    _, targets = next(iter(dataset))
    np.testing.assert_array_equal(targets["classes"][0], [1, 3, 0, 0])


def test_classes_pick_and_reorder_a_subset(coco_json):
    with pytest.warns(DataWarning, match="object of a class not in --classes"):
        source = parse_dataset_spec(f"coco:{coco_json}", classes="kite,dog", task="detection")
    assert source.class_names == ("kite", "dog") and source.class_source == "--classes"
    np.testing.assert_array_equal(source.examples[0].classes, [2, 1])
    with pytest.raises(DataError, match=r"annotations\.json: --classes \['bird'\] are no category"):
        read_coco(coco_json, classes="dog,bird")


def test_masks_from_polygons_and_rle_with_crowds_ignored(coco_json):
    source = parse_dataset_spec(f"coco:{coco_json}", task="segmentation")
    assert source.task_kinds == ("segmentation",) and source.class_names == ("dog", "cat", "kite")
    first, second = (load_mask(example, num_classes=3) for example in source.examples[:2])
    expected = np.zeros(SIZES[1], np.uint8)
    expected[3:13, 2:14] = 1
    expected[18:30, 24:38] = 3
    expected[0:8, 24:40] = 255  # the crowd
    np.testing.assert_array_equal(first, expected)
    assert (second[20:30, 2:10] == 2).all()  # the compressed RLE's cat
    assert second[3, 17] == 3 and second[12, 27] == 0  # inside and outside the polygon's triangle
    dataset = make_dataset(source, task="segmentation", batch_size=2, image_size=(32, 32), training=True, seed=0)
    images, masks = next(iter(dataset))
    assert images.shape == (2, 32, 32, 3) and set(np.unique(masks)) <= {0, 1, 2, 3, 255}


def test_images_resolve_against_the_images_folder(tmp_path):
    path = write_coco(tmp_path / "annotations", images_folder=tmp_path / "val2017")
    source = parse_dataset_spec(f"coco:{path}", images=str(tmp_path / "val2017"))
    assert load_image(source.examples[0]).shape == (*SIZES[1], 3)
    with pytest.raises(DataError, match=r"000000000001\.png: image file does not exist"):
        read_coco(path)  # default: the JSON's folder, where the images are not
    with pytest.raises(DataError, match="the images folder of .* does not exist"):
        read_coco(path, images=tmp_path / "missing")


def _edit(path, change):
    dataset = json.loads(path.read_text())
    change(dataset)
    path.write_text(json.dumps(dataset))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("categories"), "not a COCO instances file, it has no list 'categories'"),
    (lambda d: d["annotations"][0].update(category_id=5), "annotation 1 has category_id 5, which is no category"),
    (lambda d: d["annotations"][0].update(image_id=99), "annotation 1 names no image of the file"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotation 1 has bbox \[1, 2, 3\]"),
    (lambda d: d["categories"][1].update(name="dog"), "two categories are named 'dog'"),
    (lambda d: d["images"][0].pop("height"), "image 1 needs a file_name and integer height and width"),
])
def test_bad_data_names_the_file(coco_json, change, message):
    _edit(coco_json, change)
    with pytest.raises(DataError, match=r"annotations\.json: .*" + message):
        read_coco(coco_json)


def test_unreadable_files_and_skipped_boxes(coco_json, tmp_path):
    with pytest.raises(DataError, match="COCO annotation file does not exist"):
        read_coco(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json: not a COCO JSON file"):
        read_coco(broken)
    _edit(coco_json, lambda d: d["annotations"][0].update(bbox=[30, 3, 20, 10]))  # past the 40-pixel width
    with pytest.warns(DataWarning, match="1 x box outside its image"):
        source = read_coco(coco_json)
    assert source.skipped == {"box outside its image": 1} and len(source.examples[0].boxes) == 2


def test_a_clear_error_without_pycocotools(coco_json, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match=r"pip install zoo\[coco\]"):
        read_coco(coco_json)


def _pycocotools_ap(coco_json, source, detections):
    """COCOeval run directly on the JSON, with the detections in COCO's own ids and [x, y, w, h]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(coco_json))
    category_ids = {k: truth.getCatIds(catNms=[name])[0] for k, name in enumerate(source.class_names, start=1)}
    results = []
    for image_id, detection in zip(sorted(truth.getImgIds()), detections):
        count = int(detection.get("num_detections", len(detection["boxes"])))
        for (ymin, xmin, ymax, xmax), score, class_id in zip(
            detection["boxes"][:count], detection["scores"][:count], detection["classes"][:count]
        ):
            if class_id:
                results.append({"image_id": image_id, "category_id": category_ids[int(class_id)], "score": float(score),
                                "bbox": [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)]})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(truth, truth.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return dict(zip(("coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl"), evaluation.stats[:6]))


def _made_up_detections(source, rng):
    """Near-misses, hits, duplicates, a hit on the crowd and false positives, in original pixels."""
    detections = []
    for example in source.examples:
        boxes = [box + rng.normal(0, 1.5, 4) for box in example.boxes] + [example.boxes[0] + 0.5]
        boxes.append(np.array([1, 1, 9, 9], np.float32))
        classes = list(example.classes) + [example.classes[0], 3]
        detections.append({"boxes": np.array(boxes, np.float32), "scores": rng.uniform(0.1, 1, len(boxes)),
                           "classes": np.array(classes, np.int32)})
    return detections


def test_coco_ap_equals_pycocotools_on_the_json(coco_json):
    from training.detection import detection_metrics

    source = read_coco(coco_json)
    detections = _made_up_detections(source, np.random.default_rng(0))
    metrics = detection_metrics(detections, source)
    assert {"mAP@0.5", "AP/dog", "AP/cat", "AP/kite"} < set(metrics)
    expected = _pycocotools_ap(coco_json, source, detections)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value if value >= 0 else np.nan, nan_ok=True, abs=1e-12), name
    assert 0 < metrics["coco/AP"] < 1
    # COCO metrics come only with COCO data, unless asked for.
    assert "coco/AP" not in detection_metrics(detections, source, coco_ap=False)


@pytest.mark.slow
def test_zoo_train_and_evaluate_on_coco_in_separate_processes(coco_json, tmp_path):
    import keras

    import zoo  # noqa: F401 (registers the zoo's layers for load_model)
    from tests.helpers import run_zoo
    from training.detection import detect_source, detection_metrics
    from zoo.detection.sizing import proposal_options, sliding_window_proposals

    out = tmp_path / "run"
    common = ["--dataset", f"coco:{coco_json}", "--image-size", "32", "32", "--batch-size", "2",
              "--proposal-stride", "16", "--proposal-scales", "16", "32", "--quiet"]
    trained = run_zoo("train", "fast_rcnn_vgg16", *common, "--epochs", "1", "--optimizer", "adam", "--lr", "0.001",
                      "--rois-per-image", "8", "--precise-bn", "0", "--set", "fc_units=16", "--out", out)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "coco:" in trained.stderr and "3 classes (coco categories: dog, cat, kite)" in trained.stderr
    evaluated = run_zoo("evaluate", "fast_rcnn_vgg16", "--weights", out / "model.keras", "--split", "val", *common)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert {"mAP@0.5", "AP/dog", "AP/cat", "AP/kite", "coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm",
            "coco/APl"} == set(metrics)

    # The same detections, computed once here, scored by zoo evaluate's code path and by COCOeval.
    source = read_coco(coco_json)
    model = keras.saving.load_model(out / "model.keras")
    options = proposal_options((32, 32), stride=16, scales=(16, 32))
    detections = detect_source(model, source, proposals=sliding_window_proposals(**options), image_size=(32, 32),
                               batch_size=2)
    ours = detection_metrics(detections, source)
    for name, value in _pycocotools_ap(coco_json, source, detections).items():
        assert ours[name] == pytest.approx(value if value >= 0 else np.nan, nan_ok=True, abs=1e-12), name
        assert metrics[name] == pytest.approx(ours[name], nan_ok=True, abs=1e-6), name
