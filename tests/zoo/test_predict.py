"""`zoo predict`: drawing, mapping detections back to the image's pixels, the files it writes."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import cli
from zoo.detection.proposals import sliding_windows
from zoo.detection.visualize import class_colour, draw_detections
from zoo.predict import classify, detect, predict_files, read_image


def test_class_colours_are_the_voc_palette():
    # PASCAL VOC's published colours: aeroplane, bicycle, person, tvmonitor.
    assert class_colour(1) == (128, 0, 0)
    assert class_colour(2) == (0, 128, 0)
    assert class_colour(15) == (192, 128, 128)
    assert class_colour(20) == (0, 64, 128)


def test_draw_detections_outlines_kept_boxes_only():
    image = np.zeros((60, 80, 3), np.uint8)
    boxes = [[10, 20, 50, 70], [5, 5, 15, 15], [30, 5, 55, 15]]
    canvas = draw_detections(image, boxes, [0.9, 0.2, 0.8], [1, 2, 0], score_threshold=0.5, thickness=1)
    assert tuple(canvas[30, 20]) == class_colour(1)  # the left edge of the kept box
    assert tuple(canvas[50, 45]) == class_colour(1)  # its bottom edge
    assert canvas[30, 45].sum() == 0  # inside is untouched
    assert canvas[10, 10].sum() == 0  # the second box scores below the threshold
    assert canvas[40, 10].sum() == 0  # class 0 (background) is never drawn
    assert image.sum() == 0  # the input is not modified
    with pytest.raises(ValueError, match="one row per detection"):
        draw_detections(image, boxes, [0.9], [1, 2, 0])
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(image.astype(np.float32), boxes, [0.9] * 3, [1] * 3)


@pytest.fixture(scope="module")
def detector():
    # Every RoI scores: a random detector still returns max_detections boxes.
    return zoo.build(
        "fast_rcnn_vgg16", num_classes=2, input_shape=(None, None, 3), pool_size=2, fc_units=16,
        score_threshold=0.0, max_detections=5,
    )


def _proposals(images):
    shape = tf.shape(images)
    return sliding_windows(shape[1], shape[2], stride=16, scales=(24.0, 40.0), aspect_ratios=(1.0,))


def test_detect_maps_boxes_back_to_the_original_pixels(detector):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    result = detect(detector, image, image_size=(64, 64), proposals=_proposals)
    resized = tf.clip_by_value(
        tf.image.resize(tf.constant(image[None], tf.float32), (64, 64), antialias=True), 0.0, 255.0
    )
    direct = detector({"images": resized, "rois": _proposals(resized)[None]}, training=False)
    count = int(direct["num_detections"][0])
    assert count == 5 and len(result["boxes"]) == count
    # 96 / 64 = 1.5 along y, 128 / 64 = 2 along x.
    np.testing.assert_allclose(result["boxes"], direct["boxes"][0, :count].numpy() * [1.5, 2.0, 1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(result["scores"], direct["scores"][0, :count].numpy())
    assert set(result["classes"]) <= {1, 2}
    assert (result["boxes"][:, 2] <= 96).all() and (result["boxes"][:, 3] <= 128).all()
    with pytest.raises(ValueError, match="takes RoIs: pass proposals"):
        detect(detector, image)


def test_classify_lists_the_top_classes_by_probability():
    model = zoo.build("resnet18", classes=4, input_shape=(32, 32, 3))
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    result = classify(model, image, image_size=(32, 32), top_k=3)
    resized = tf.clip_by_value(tf.image.resize(image[None].astype(np.float32), (32, 32), antialias=True), 0, 255)
    probabilities = model(resized, training=False).numpy()[0]
    expected = np.argsort(-probabilities)[:3]
    np.testing.assert_array_equal(result["classes"], expected)
    np.testing.assert_allclose(result["probabilities"], probabilities[expected], rtol=1e-5)


def _write_images(directory, sizes):
    paths = []
    rng = np.random.default_rng(2)
    for index, (height, width) in enumerate(sizes):
        path = directory / f"image{index}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_predict_files_writes_pictures_and_json(detector, tmp_path):
    paths = _write_images(tmp_path, [(70, 90), (64, 64)])
    records = predict_files(
        detector, paths, tmp_path / "out", task="detection", class_names=("cat", "dog"), image_size=(64, 64),
        proposals=_proposals, score_threshold=0.0,
    )
    listing = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert listing == records and len(listing) == 2
    for path, record in zip(paths, listing):
        picture = read_image(record["picture"])
        assert picture.shape == read_image(path).shape  # drawn on the original image
        assert len(record["detections"]) == 5
        assert all(d["label"] in ("cat", "dog") and d["label"] == ("cat", "dog")[d["class"] - 1] for d in record["detections"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["image0.png", "image1.png", "predictions.json"]


def test_cli_predict_a_trained_detector_and_refuse_a_missing_image(detector, tmp_path, capsys):
    weights = tmp_path / "run" / "model.keras"
    weights.parent.mkdir()
    detector.save(weights)
    (weights.parent / "run.json").write_text(json.dumps({"class_names": ["cat", "dog"], "config": {"image_size": [64, 64]}}))
    paths = _write_images(tmp_path, [(80, 100)])
    argv = ["predict", "fast_rcnn_vgg16", *map(str, paths), "--weights", str(weights), "--out", str(tmp_path / "out"),
            "--score-threshold", "0", "--proposal-stride", "16", "--proposal-scales", "24", "40"]
    assert cli.main(argv) == 0
    listing = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(listing) == 1 and listing[0]["width"] == 100 and len(listing[0]["detections"]) == 5
    assert "detections 5" in capsys.readouterr().err

    missing = tmp_path / "nowhere.jpg"
    argv = ["predict", "fast_rcnn_vgg16", str(paths[0]), str(missing), "--weights", str(weights), "--out",
            str(tmp_path / "out2")]
    assert cli.main(argv) == 2
    assert f"image {missing}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()  # every image is read before anything is written


@pytest.fixture
def trained_detector(detector, tmp_path):
    """`detector` saved as `zoo train` leaves it: `run/model.keras` with `run/run.json` beside it."""
    weights = tmp_path / "run" / "model.keras"
    weights.parent.mkdir()
    detector.save(weights)
    run = {"class_names": ["cat", "dog"], "config": {"image_size": [64, 64]}}
    (weights.parent / "run.json").write_text(json.dumps(run))
    return weights


@pytest.mark.slow
def test_cli_predict_refuses_to_overwrite_its_input_and_bad_options_before_writing(trained_detector, tmp_path):
    from tests.helpers import run_zoo

    photos = tmp_path / "photos"
    photos.mkdir()
    photo = photos / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    original = photo.read_bytes()
    common = ["predict", "fast_rcnn_vgg16", photo, "--weights", trained_detector, "--proposal-stride", "16",
              "--proposal-scales", "24"]
    # --out is the photo's own folder: its picture would be photos/photo.png, the input itself.
    result = run_zoo(*common, "--out", photos)
    assert result.returncode == 2, result.stderr
    assert f"zoo predict: error: predict_files: {photo} would overwrite the input image {photo}" in result.stderr
    assert "Traceback" not in result.stderr
    assert photo.read_bytes() == original and sorted(p.name for p in photos.iterdir()) == ["photo.png"]

    result = run_zoo(*common, "--out", tmp_path / "out", "--score-threshold", "1.5")
    assert result.returncode == 2 and "score_threshold (--score-threshold) must be in [0, 1], got 1.5" in result.stderr
    result = run_zoo(*common, "--out", tmp_path / "out", "--classes", "cat")
    assert result.returncode == 2, result.stderr
    assert "--classes cat contradicts the model's cat,dog (from " in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_predict_files_removes_only_the_stale_pictures_its_last_run_listed(detector, tmp_path):
    first = _write_images(tmp_path, [(40, 40), (48, 48)])
    out = tmp_path / "out"
    options = dict(task="detection", class_names=("cat", "dog"), image_size=(64, 64), proposals=_proposals)
    predict_files(detector, first, out, **options)
    (out / "mine.png").write_bytes(b"a user's file")
    second = tmp_path / "second.jpg"
    cv2.imwrite(str(second), np.zeros((40, 40, 3), np.uint8))
    records = predict_files(detector, [second, first[1]], out, **options)
    assert [Path(r["picture"]).name for r in records] == ["second.png", "image1.png"]
    # image0.png was the last run's and is not this run's: gone. mine.png was never listed: kept.
    assert sorted(p.name for p in out.iterdir()) == ["image1.png", "mine.png", "predictions.json", "second.png"]


def test_predict_files_refuses_out_of_range_options_and_too_few_class_names(detector, tmp_path):
    paths = _write_images(tmp_path, [(40, 40)])
    options = dict(image_size=(64, 64), proposals=_proposals)
    for threshold in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"score_threshold \(--score-threshold\) must be in \[0, 1\]"):
            predict_files(detector, paths, tmp_path / "out", task="detection", score_threshold=threshold, **options)
    with pytest.raises(ValueError, match=r"has 3 classes \(background included\) but class_names has 1 names"):
        predict_files(detector, paths, tmp_path / "out", task="detection", class_names=("cat",), **options)
    classifier = zoo.build("resnet18", classes=4, input_shape=(32, 32, 3))
    for top_k in (0, -1):
        with pytest.raises(ValueError, match=r"top_k \(--top-k\) must be an integer >= 1"):
            predict_files(classifier, paths, tmp_path / "out", task="classification", top_k=top_k)
    with pytest.raises(ValueError, match="the model has 4 classes but class_names has 2 names"):
        predict_files(classifier, paths, tmp_path / "out", task="classification", class_names=("a", "b"))
    assert not (tmp_path / "out").exists()


def test_predict_files_maps_letterboxed_detections_back_to_a_non_square_image(tmp_path):
    from tests.helpers import bright_object_detector

    image = np.full((40, 80, 3), 30, np.uint8)
    image[10:30, 20:60] = 230  # the object, [10, 20, 30, 60] in the image's pixels
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), image)  # PNG: the same pixels come back
    finder = bright_object_detector((32, 32))  # finds the bright object in whatever it is given
    for resize in ("letterbox", "stretch"):
        records = predict_files(finder, [path], tmp_path / resize, task="detection", image_size=(32, 32),
                                score_threshold=0.0, resize=resize)
        assert records[0]["detections"][0]["box"] == [10.0, 20.0, 30.0, 60.0], resize
    # In the letterbox's pixels (scale 0.4, 16 rows of padding below) the object is at [4, 8, 12, 24].
    at_object = bright_object_detector((32, 32), fixed_box=[4.0, 8.0, 12.0, 24.0])
    np.testing.assert_allclose(detect(at_object, image, image_size=(32, 32), resize="letterbox")["boxes"],
                               [[10, 20, 30, 60]])
    np.testing.assert_allclose(detect(at_object, image, image_size=(32, 32), resize="stretch")["boxes"],
                               [[5, 20, 15, 60]])
    # A box reaching into the padding ends where the image does.
    into_padding = bright_object_detector((32, 32), fixed_box=[4.0, 8.0, 30.0, 24.0])
    np.testing.assert_allclose(detect(into_padding, image, image_size=(32, 32), resize="letterbox")["boxes"],
                               [[10, 20, 40, 60]])
    with pytest.raises(ValueError, match=r"predict_files: resize \(--resize\) must be one of"):
        predict_files(finder, [path], tmp_path / "bad", task="detection", image_size=(32, 32), resize="crop")
