"""`zoo predict` of a segmenter: class ids in the image's own size (logits resized, not ids),
VOC-palette masks blended over the images, class fractions in predictions.json."""

import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from zoo import cli
from zoo.predict import predict_files, read_image, segment
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus
from zoo.segmentation.visualize import blend, voc_palette

TINY = dict(backbone="resnet18", num_classes=2, aspp_filters=8, decoder_projection_filters=4, decoder_filters=8,
            preprocessing="torch", atrous_rates=(1, 2))


@pytest.fixture(scope="module")
def segmenter():
    model = build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY), name="tiny_segmenter")
    # DeepLab initialises the logits with a standard deviation of 0.01; larger weights make the
    # argmax of a random model vary across the image.
    kernel = model.get_layer("logits_semantic").kernel
    kernel.assign(np.random.default_rng(1).normal(scale=3.0, size=kernel.shape).astype("float32"))
    return model


def _write_images(directory, sizes):
    rng = np.random.default_rng(3)
    paths = []
    for index, (height, width) in enumerate(sizes):
        path = directory / f"photo{index}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _align_corners_resize(logits, size):
    """NumPy bilinear resize with aligned corners (an independent reference)."""
    height, width = logits.shape[:2]
    ys = np.linspace(0, height - 1, size[0])
    xs = np.linspace(0, width - 1, size[1])
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = logits[y0][:, x0] * (1 - wx) + logits[y0][:, x1] * wx
    bottom = logits[y1][:, x0] * (1 - wx) + logits[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def test_segment_resizes_the_logits_back_to_the_image(segmenter):
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mask = segment(segmenter, image, image_size=(33, 41))
    assert mask.shape == (50, 70) and mask.dtype == np.int32
    resized = tf.clip_by_value(tf.image.resize(image[None].astype(np.float32), (33, 41), antialias=True), 0, 255)
    logits = np.asarray(segmenter(resized, training=False), np.float64)[0]
    expected = _align_corners_resize(logits, (50, 70)).argmax(-1)
    assert (mask == expected).mean() > 0.999  # float32 vs float64 ties only
    assert len(np.unique(mask)) > 1
    # At its own size, no resize at all: the model's argmax.
    direct = segment(segmenter, image)
    np.testing.assert_array_equal(direct, np.asarray(segmenter(image[None].astype(np.float32)))[0].argmax(-1))


def _bright_pixel_segmenter(image_size, *, stride=1):
    """Logits [B, H / stride, W / stride, 2]: class 1 where the pixels are brighter than 127.5."""
    import keras

    images = keras.Input((*image_size, 3))
    brightness = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant(1 / 30),
                                     bias_initializer=keras.initializers.Constant(-127.5 / 10))(images)
    if stride > 1:
        brightness = keras.layers.AveragePooling2D(stride)(brightness)
    logits = keras.layers.Concatenate()([-brightness, brightness])
    return keras.Model(images, logits, name="bright_pixels")


@pytest.mark.parametrize("stride", [1, 2])
def test_a_letterboxed_prediction_is_cropped_to_the_image_then_resized_back(stride):
    image = np.full((40, 80, 3), 30, np.uint8)
    image[10:30, 20:60] = 230
    truth = np.zeros((40, 80), np.int32)
    truth[10:30, 20:60] = 1
    model = _bright_pixel_segmenter((32, 32), stride=stride)
    letterboxed = segment(model, image, image_size=(32, 32), resize="letterbox")
    assert letterboxed.shape == (40, 80)
    # The content is 16 x 32 (scale 0.4): only the object's edges, a pixel or two wide, may differ.
    assert (letterboxed == truth).mean() > 0.95, (letterboxed == truth).mean()
    rows = np.flatnonzero(letterboxed.any(axis=1))
    assert abs(rows[0] - 10) <= 2 and abs(rows[-1] - 29) <= 2  # not squeezed into the top half
    stretched = segment(model, image, image_size=(32, 32), resize="stretch")
    assert (stretched == truth).mean() > 0.95


def test_predict_files_writes_blended_masks_and_class_fractions(segmenter, tmp_path):
    paths = _write_images(tmp_path, [(40, 56), (64, 48)])
    records = predict_files(segmenter, paths, tmp_path / "out", task="segmentation", class_names=("cat", "dog"),
                            image_size=(48, 48))
    listing = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert listing == records and len(listing) == 2
    for path, record in zip(paths, listing):
        image = read_image(path)
        mask = segment(segmenter, image, image_size=(48, 48))
        fractions = {c["class"]: c["fraction"] for c in record["classes"]}
        assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-5)
        for class_id, fraction in fractions.items():
            assert fraction == pytest.approx((mask == class_id).mean(), abs=1e-6)
        assert {c["label"] for c in record["classes"]} <= {"background", "cat", "dog"}
        picture = read_image(record["picture"])
        np.testing.assert_array_equal(picture, blend(image, mask))  # PNG: lossless
        coloured = mask == 1
        if coloured.any():  # class 1 pixels mix VOC's (128, 0, 0) into the image
            expected = np.round(0.5 * image[coloured].astype(float) + 0.5 * voc_palette()[1]).astype(np.uint8)
            np.testing.assert_array_equal(picture[coloured], expected)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo0.png", "photo1.png", "predictions.json"]


def test_cli_predict_a_trained_segmenter(segmenter, tmp_path, capsys):
    weights = tmp_path / "run" / "model.keras"
    weights.parent.mkdir()
    segmenter.save(weights)
    (weights.parent / "run.json").write_text(json.dumps({"class_names": ["cat", "dog"], "config": {"image_size": [48, 48]}}))
    paths = _write_images(tmp_path, [(60, 44)])
    assert cli.main(["predict", "deeplabv3plus_resnet50", *map(str, paths), "--weights", str(weights),
                     "--out", str(tmp_path / "out")]) == 0
    listing = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(listing) == 1 and listing[0]["height"] == 60 and listing[0]["width"] == 44
    assert read_image(listing[0]["picture"]).shape == (60, 44, 3)
    assert "pixels" in capsys.readouterr().err
    # Class names other than the run's are named, not drawn as wrong labels.
    assert cli.main(["predict", "deeplabv3plus_resnet50", *map(str, paths), "--weights", str(weights),
                     "--classes", "cat", "--out", str(tmp_path / "out2")]) == 2
    assert "--classes cat contradicts the model's cat,dog (from " in capsys.readouterr().err
