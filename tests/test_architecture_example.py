"""The README's Architecture section registers a new model in a few lines: that code runs.

The block after the `architecture-example` marker is run as written, in its own process (a
registration is global, and the model must not join the registry of the other tests), then the
registered model is checked: a detector of 80 object classes that trains at 800 x 800.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds VGG16 in a subprocess
def test_the_readme_architecture_example_registers_and_builds_a_model():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- architecture-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no architecture-example block"
    checks = """
description = zoo.describe("fast_rcnn_vgg16_coco")
assert description.task == "detection", description.task
assert tuple(description.image_size) == (800, 800), description.image_size
assert model.get_layer("class_probs").output.shape[-1] == 81  # the background added
assert model.get_layer("box_regression").output.shape[-1] == 80 * 4  # a box per object class
assert "fast_rcnn_vgg16_coco" in zoo.list_models("fast_rcnn_*")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", match.group(1) + checks], cwd=ROOT, capture_output=True,
                            text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.slow  # builds a MobileNet-v2 detector in a subprocess
def test_the_readme_trunk_example_adds_a_detector_trunk_as_data():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- architecture-trunk-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no architecture-trunk-example block"
    checks = """
from layers.detection_contract import FASTER_RCNN, RPN_ANCHORS, detector_kind
assert detector_kind(model) == FASTER_RCNN
assert model.get_layer(RPN_ANCHORS).input.shape[-1] == 160  # 320 channels at half width
assert model.get_layer("class_probs").output.shape[-1] == 4
full = zoo.build("faster_rcnn_mobilenetv2", num_classes=3)
assert model.count_params() < full.count_params()
assert zoo.describe("faster_rcnn_mobilenetv2_050").task == "detection"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", match.group(1) + checks], cwd=ROOT, capture_output=True,
                            text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
