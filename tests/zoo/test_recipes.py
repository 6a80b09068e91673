"""Default training recipes: data per family, resolved against the user's flags, shown by
`zoo describe`, printed by `zoo train` and stored in run.json."""

import json

import pytest

import zoo
from tests.helpers import run_zoo
from zoo.recipes import CLASSIFICATION, DEEPLAB, DETECTION, Recipe


def test_every_registered_model_has_its_task_recipe():
    expected = {"classification": CLASSIFICATION, "detection": DETECTION, "segmentation": DEEPLAB}
    for name in zoo.list_models():
        description = zoo.describe(name)
        assert description.recipe == expected[description.task], name
    assert zoo.describe("deeplabv3plus_mobilenetv2").recipe.schedule == "poly"  # the paper's
    assert zoo.describe("faster_rcnn_resnet50").recipe.rois_per_image == 32


def test_resolve_keeps_the_recipe_where_no_flag_is_given():
    recipe = Recipe(optimizer="sgd", learning_rate=0.02, schedule="cosine", batch_size=16, warmup_fraction=0.1)
    settings = recipe.resolve(epochs=20, optimizer=None, learning_rate=None, batch_size=None)
    assert settings == {
        "optimizer": "sgd", "learning_rate": 0.02, "schedule": "cosine", "batch_size": 16, "warmup_epochs": 2.0,
        "momentum": 0.9, "weight_decay": None, "batch_norm": "fine_tune", "rois_per_image": None, "augmentation": "standard",
        "given": [],
    }


def test_resolve_scales_sgd_linearly_with_the_batch_and_leaves_adam_and_given_rates_alone():
    sgd = Recipe(optimizer="sgd", learning_rate=0.02, schedule="cosine", batch_size=16)
    assert sgd.resolve(epochs=3, batch_size=8)["learning_rate"] == pytest.approx(0.01)
    assert sgd.resolve(epochs=3, batch_size=64)["learning_rate"] == pytest.approx(0.08)
    assert sgd.resolve(epochs=3, batch_size=8, learning_rate=0.5)["learning_rate"] == 0.5
    # Another optimizer than the recipe's: its rate is not the recipe's to scale.
    assert sgd.resolve(epochs=3, batch_size=8, optimizer="adam")["learning_rate"] == pytest.approx(0.02)
    adam = Recipe(optimizer="adam", learning_rate=1e-3, schedule="poly", batch_size=8)
    settings = adam.resolve(epochs=3, batch_size=32, warmup_epochs=0.5, batch_norm="frozen")
    assert settings["learning_rate"] == pytest.approx(1e-3) and settings["warmup_epochs"] == 0.5
    assert settings["given"] == ["batch_norm", "batch_size", "warmup_epochs"]


def test_resolve_refuses_unknown_settings():
    with pytest.raises(TypeError, match="unknown setting.*lr.*accepted: optimizer, learning_rate"):
        DEEPLAB.resolve(epochs=3, lr=0.1)


def test_describe_shows_the_recipe():
    text = str(zoo.describe("deeplabv3plus_mobilenetv2"))
    assert "training recipe (zoo train's defaults): adam lr 0.003 (batch 8), poly schedule, warm-up 5% of the run" in text
    assert "standard augmentation" in text


@pytest.mark.slow
def test_zoo_train_prints_and_stores_the_recipe_it_used(tmp_path):
    out = tmp_path / "run"
    process = run_zoo("train", "resnet18", "--dataset", "synthetic:24", "--image-size", "32", "32", "--epochs", "1",
                      "--batch-size", "8", "--quiet", "--out", out)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "recipe: sgd lr 0.005, cosine schedule, warm-up 0 epochs, batch 8" in process.stderr
    assert "standard augmentation" in process.stderr
    assert "(from your flags: batch_size)" in process.stderr
    recipe = json.loads((out / "run.json").read_text())["recipe"]
    assert recipe["optimizer"] == "sgd" and recipe["learning_rate"] == pytest.approx(0.005)
    assert json.loads((out / "run.json").read_text())["config"]["precise_bn"] == 16
    # A new process that never imported `training` uses the run (its optimizer names the
    # trainer's WarmupSchedule).
    import cv2
    import numpy as np

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((40, 48, 3), 128, np.uint8))
    predicted = run_zoo("predict", "resnet18", "--weights", out / "model.keras", image, "--out", tmp_path / "pred")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (tmp_path / "pred" / "predictions.json").is_file()


def test_a_stride_16_heads_roi_grid_scales_with_the_image_and_set_wins():
    from zoo.detection.sizing import roi_head_overrides

    assert roi_head_overrides("faster_rcnn_resnet50", (600, 800), {}) == {"pool_size": 14}  # the registered one
    assert roi_head_overrides("fast_rcnn_resnet50", (256, 320), {}) == {"pool_size": 6}
    assert roi_head_overrides("faster_rcnn_resnet50", (192, 192), {}) == {"pool_size": 4}  # the benches' grid
    assert roi_head_overrides("faster_rcnn_resnet50", (96, 96), {}) == {"pool_size": 4}
    assert roi_head_overrides("faster_rcnn_resnet50", (256, 256), {"pool_size": 8}) == {"pool_size": 8}
    assert roi_head_overrides("fast_rcnn_vgg16", (256, 256), {}) == {}  # fc6's weights fix VGG16's 7 x 7
    # The MobileNet-v2 head's RoI Align: 7 * S / 600 rounded, in [4, 7].
    assert roi_head_overrides("faster_rcnn_mobilenetv2", (600, 800), {}) == {"pool_size": 7}
    assert roi_head_overrides("faster_rcnn_mobilenetv2", (400, 500), {}) == {"pool_size": 5}
    assert roi_head_overrides("faster_rcnn_mobilenetv2", (192, 192), {}) == {"pool_size": 4}
    assert roi_head_overrides("faster_rcnn_mobilenetv2", (192, 192), {"pool_size": 7}) == {"pool_size": 7}


def test_detector_overrides_size_each_detector_kind_for_the_image():
    from zoo.detection.sizing import detector_overrides

    c4, notes = detector_overrides("faster_rcnn_resnet50", (192, 256), {})
    assert c4["anchor_scales"] == (24.0, 48.0, 96.0, 144.0) and c4["pool_size"] == 4 and len(notes) == 2
    # The FPN model keeps torchvision's anchors (no anchor_scales field) and trains at the image
    # size instead of resizing every image to 800 pixels in the graph.
    fpn, _ = detector_overrides("faster_rcnn_resnet50_fpn", (192, 256), {})
    assert fpn == {"min_size": 192, "max_size": 256}
    assert {"min_size", "max_size"} <= set(vars(zoo.registry.get_spec("faster_rcnn_resnet50_fpn").config))
    assert detector_overrides("faster_rcnn_resnet50_fpn", (192, 256), {"min_size": 800})[0] == {"min_size": 800}
    assert detector_overrides("fast_rcnn_vgg16", (192, 256), {}) == ({}, [])
