"""Saved runs are self-describing: each CLI verb in its own process, on the run `zoo train` left,
with no size, class or proposal flag repeated; a flag that contradicts the model is an error.
And a model.keras loads, compiled, in any process that imported `zoo`."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.helpers import run_zoo
from zoo.runs import settle, trained_run


def _photo(path, size=(40, 56)):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    cv2.rectangle(image, (8, 8), (30, 28), (255, 255, 255), -1)
    cv2.imwrite(str(path), image)
    return path


def _ok(process):
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    return process


def _metrics(process) -> dict:
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_settle_takes_the_flag_or_the_model_and_names_both_when_they_differ(tmp_path):
    source = tmp_path / "run.json"
    assert settle("--image-size", None, (32, 32), source=source) == (32, 32)
    assert settle("--image-size", (32, 32), None, source=source) == (32, 32)
    assert settle("--proposal-scales", [16, 32], (16.0, 32.0), source=source) == [16, 32]
    with pytest.raises(ValueError, match=r"--image-size 64 64 contradicts the model's 32 32 \(from .*run.json\)"):
        settle("--image-size", (64, 64), (32, 32), source=source)
    with pytest.raises(ValueError, match="--classes cat,dog contradicts the model's circle,square"):
        settle("--classes", ("cat", "dog"), ("circle", "square"), source=source)


def test_trained_run_reads_run_json_beside_a_keras_file_only(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({
        "model": "lenet5", "task": "classification", "class_names": ["a", "b"], "config": {"image_size": [32, 32]},
        "proposals": {"stride": 8, "scales": [16.0], "aspect_ratios": [1.0]},
    }))
    run = trained_run(tmp_path / "model.keras")
    assert (run.model, run.class_names, run.image_size) == ("lenet5", ("a", "b"), (32, 32))
    assert run.proposals == {"stride": 8, "scales": [16.0], "aspect_ratios": [1.0]}
    assert trained_run(tmp_path / "weights.h5") is None and trained_run("imagenet") is None
    assert trained_run(tmp_path / "elsewhere" / "model.keras") is None
    (tmp_path / "run.json").write_text("{cut short")
    with pytest.raises(ValueError, match="run.json cannot be read"):
        trained_run(tmp_path / "model.keras")


@pytest.mark.slow
def test_import_zoo_registers_every_custom_object_the_packages_define():
    # In a fresh process: what `import zoo` registers, then what importing every module adds.
    script = """
import importlib, json, pkgutil, keras
import zoo
registered = set(keras.saving.get_custom_objects())
for package in ("layers", "training", "zoo"):
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
print(json.dumps(sorted(set(keras.saving.get_custom_objects()) - registered)))
print(json.dumps(sorted(registered)))
"""
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    missing, registered = (json.loads(line) for line in process.stdout.strip().splitlines()[-2:])
    assert missing == []
    assert {"zoo>WarmupSchedule", "zoo>SegmentationCrossEntropy", "zoo>MeanIoU", "zoo>RoIPooling"} <= set(registered)


@pytest.mark.slow
def test_a_classifier_run_in_separate_processes_at_lenet5s_own_size(tmp_path):
    out, photo = tmp_path / "run", _photo(tmp_path / "photo.png")
    trained = _ok(run_zoo("train", "lenet5", "--dataset", "synthetic:24", "--epochs", "1", "--no-flip",
                          "--precise-bn", "0", "--quiet", "--out", out))
    assert "image size: 32 x 32, lenet5's own (--image-size H W for another)" in trained.stderr
    assert "standard augmentation with no horizontal flips (--no-flip)" in trained.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["image_size"] == [32, 32] and run["config"]["augment"] == {"flip_probability": 0.0}

    # Plain Keras, in a process that imported zoo: the optimizer's warm-up schedule loads too.
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, keras, zoo; m = keras.saving.load_model(sys.argv[1]); "
        "print(m.optimizer.get_config()['learning_rate']['class_name'], m.compiled)"), str(out / "model.keras")],
        capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.split() == ["WarmupSchedule", "True"], loaded.stderr[-2000:]

    weights = ("--weights", out / "model.keras")
    metrics = _metrics(_ok(run_zoo("evaluate", "lenet5", *weights, "--dataset", "synthetic:24", "--quiet")))
    assert 0.0 <= metrics["top1"] <= 1.0
    _ok(run_zoo("predict", "lenet5", *weights, photo, "--out", tmp_path / "pred"))
    labels = [entry["label"] for entry in json.loads((tmp_path / "pred" / "predictions.json").read_text())[0]["top_k"]]
    assert set(labels) <= set(run["class_names"]) and len(labels) == min(5, len(run["class_names"]))
    _ok(run_zoo("export", "lenet5", *weights, "--out", tmp_path / "saved"))
    assert (tmp_path / "saved" / "saved_model.pb").is_file()
    inspected = _ok(run_zoo("inspect", out / "model.keras", photo, "--receptive-field", "c5"))
    assert "c5: receptive field 32x32 px" in inspected.stdout

    contradicted = run_zoo("evaluate", "lenet5", *weights, "--dataset", "synthetic:24", "--image-size", "64", "64")
    assert contradicted.returncode == 2
    assert "--image-size 64 64 contradicts the model's 32 32" in contradicted.stderr
    renamed = run_zoo("predict", "lenet5", *weights, photo, "--out", tmp_path / "p2", "--classes", "cat,dog")
    assert renamed.returncode == 2 and "--classes cat,dog contradicts the model's" in renamed.stderr
    resized = run_zoo("evaluate", "lenet5", *weights, "--dataset", "synthetic:24", "--resize", "letterbox")
    assert resized.returncode == 2 and "--resize letterbox contradicts the model's stretch" in resized.stderr
    onnx = _ok(run_zoo("export", "lenet5", *weights, "--format", "onnx", "--out", tmp_path / "lenet5.onnx"))
    assert (tmp_path / "lenet5.onnx").stat().st_size > 0 and "Traceback" not in onnx.stderr
    other = run_zoo("predict", "resnet18", *weights, photo, "--out", tmp_path / "p3")
    assert other.returncode == 2 and "model resnet18 but --weights" in other.stderr and "is a lenet5" in other.stderr


@pytest.mark.slow
def test_a_fast_rcnn_run_keeps_its_proposals_in_every_verb(tmp_path):
    out, photo = tmp_path / "run", _photo(tmp_path / "photo.png", (72, 100))
    windows = "proposals: sliding windows every 16 px, sides (16.0, 32.0), aspect ratios (1.0,)"
    trained = _ok(run_zoo("train", "fast_rcnn_vgg16", "--dataset", "synthetic:8", "--image-size", "48", "48",
                          "--proposal-stride", "16", "--proposal-scales", "16", "32", "--proposal-ratios", "1",
                          "--epochs", "1", "--batch-size", "4", "--rois-per-image", "8", "--precise-bn", "0",
                          "--set", "fc_units=16", "--quiet", "--out", out))
    assert windows in trained.stderr
    assert json.loads((out / "run.json").read_text())["proposals"] == {
        "stride": 16, "scales": [16.0, 32.0], "aspect_ratios": [1.0]}

    weights = ("--weights", out / "model.keras")
    evaluated = _ok(run_zoo("evaluate", "fast_rcnn_vgg16", *weights, "--dataset", "synthetic:8", "--quiet"))
    assert windows in evaluated.stderr and 0.0 <= _metrics(evaluated)["mAP@0.5"] <= 1.0
    predicted = _ok(run_zoo("predict", "fast_rcnn_vgg16", *weights, photo, "--out", tmp_path / "pred"))
    assert windows in predicted.stderr
    exported = _ok(run_zoo("export", "fast_rcnn_vgg16", *weights, "--proposals", "sliding_windows",
                           "--out", tmp_path / "saved"))
    assert "proposals as in training" in exported.stderr
    saved = json.loads((tmp_path / "saved" / "zoo_export.json").read_text())["options"]["proposal_options"]
    assert (saved["stride"], saved["scales"], saved["aspect_ratios"]) == (16, [16.0, 32.0], [1.0])
    _ok(run_zoo("inspect", out / "model.keras", photo, "--receptive-field", "block5_conv3"))

    contradicted = run_zoo("predict", "fast_rcnn_vgg16", *weights, photo, "--out", tmp_path / "p2",
                           "--proposal-stride", "8")
    assert contradicted.returncode == 2 and "--proposal-stride 8 contradicts the model's 16" in contradicted.stderr


@pytest.mark.slow
def test_a_deeplab_run_in_separate_processes(tmp_path):
    out, photo = tmp_path / "run", _photo(tmp_path / "photo.png", (50, 70))
    _ok(run_zoo("train", "deeplabv3plus_mobilenetv2", "--dataset", "synthetic:8", "--image-size", "64", "64",
                "--epochs", "1", "--batch-size", "4", "--precise-bn", "0", "--quiet", "--out", out))
    weights = ("--weights", out / "model.keras")
    metrics = _metrics(_ok(run_zoo("evaluate", "deeplabv3plus_mobilenetv2", *weights, "--dataset", "synthetic:8",
                                   "--quiet")))
    assert 0.0 <= metrics["mIoU"] <= 1.0
    _ok(run_zoo("predict", "deeplabv3plus_mobilenetv2", *weights, photo, "--out", tmp_path / "pred"))
    record = json.loads((tmp_path / "pred" / "predictions.json").read_text())[0]
    assert sum(entry["fraction"] for entry in record["classes"]) == pytest.approx(1.0, abs=1e-3)
    _ok(run_zoo("export", "deeplabv3plus_mobilenetv2", *weights, "--out", tmp_path / "saved"))
    assert (tmp_path / "saved" / "saved_model.pb").is_file()
    _ok(run_zoo("inspect", out / "model.keras", photo, "--layers", "logits_semantic", "--out", tmp_path / "maps.png"))
    assert (tmp_path / "maps.png").is_file()


@pytest.mark.slow
def test_an_fpn_run_trains_at_its_image_size_in_separate_processes(tmp_path):
    # faster_rcnn_resnet50_fpn resizes in its graph (torchvision's 800 px); zoo train sets that
    # resize to the image size and keeps torchvision's anchors, and the other verbs use the run.
    out = tmp_path / "run"
    trained = _ok(run_zoo("train", "faster_rcnn_resnet50_fpn", "--dataset", "synthetic:8", "--image-size", "96", "96",
                          "--epochs", "1", "--batch-size", "4", "--precise-bn", "0", "--quiet", "--out", out))
    assert "resize in the graph: shorter side 96, longer at most 96" in trained.stderr
    assert "anchors" not in trained.stderr  # the C4 model's anchor sizing does not apply
    weights = ("--weights", out / "model.keras")
    evaluated = _ok(run_zoo("evaluate", "faster_rcnn_resnet50_fpn", *weights, "--dataset", "synthetic:8", "--quiet"))
    assert 0.0 <= _metrics(evaluated)["mAP@0.5"] <= 1.0
    _ok(run_zoo("export", "faster_rcnn_resnet50_fpn", *weights, "--fold-batch-norm", "--out", tmp_path / "saved"))
    options = json.loads((tmp_path / "saved" / "zoo_export.json").read_text())["options"]
    assert options["fold_batch_norm"] and options["image_size"] == [96, 96]
