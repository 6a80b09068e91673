"""`zoo train` and `zoo evaluate` of a segmenter on synthetic data, end to end (tiny sizes)."""

import json

import pytest

from zoo import cli

# ResNet-18 has no slim twin: its DeepLab is built without the slim layout and multi-grid.
TINY = ["--set", "backbone=resnet18", "--set", "slim_backbone=False", "--set", "multi_grid=()",
        "--set", "preprocessing=torch", "--set", "aspp_filters=8",
        "--set", "decoder_projection_filters=4", "--set", "decoder_filters=8"]


@pytest.mark.slow
def test_train_then_evaluate_prints_miou_and_per_class_iou(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "synthetic:12", "--image-size", "32", "32", "--batch-size", "4", "--quiet"]
    assert cli.main(["train", "deeplabv3plus_resnet50", *common, "--epochs", "1", "--optimizer", "adam",
                     "--lr", "0.001", "--out", str(out), *TINY]) == 0
    assert (out / "model.keras").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "segmentation"
    capsys.readouterr()
    assert cli.main(["evaluate", "deeplabv3plus_resnet50", "--weights", str(out / "model.keras"), *common,
                     "--add-flipped-images"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = ["background", *run["class_names"]]
    assert set(metrics) == {"mIoU", *(f"IoU/{name}" for name in names)}
    assert 0.0 <= metrics["mIoU"] <= 1.0
