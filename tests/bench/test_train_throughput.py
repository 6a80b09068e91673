"""bench/train_throughput.py: its arithmetic by hand, the weight copy between the two ResNet-50s,
and a tiny run of the whole bench writing its results."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.train_throughput import (KERAS_APPLICATIONS, copy_weights_by_name, forward_difference, images_per_second,
                                    ratios, throughput)

ROOT = Path(__file__).resolve().parents[2]


def test_throughput_is_the_batch_over_the_median_and_the_minimum_step():
    result = throughput([400.0, 100.0, 250.0, 300.0], batch_size=8)
    # median of 100, 250, 300, 400 = 275 ms: 8 images / 0.275 s; min 100 ms: 80 images/s.
    assert result["median_ms"] == 275.0 and result["min_ms"] == 100.0 and result["steps"] == 4
    assert result["images_per_s"] == round(8 / 0.275, 3) == 29.091
    assert result["best_images_per_s"] == 80.0
    assert images_per_second(4, 500.0) == 8.0


def test_ratios_compare_zoo_with_keras_bfloat16_with_float32_and_detectors_with_the_r50_c4():
    def case(model, precision, task, ips, best):
        return {"model": model, "precision": precision, "task": task, "images_per_s": ips, "best_images_per_s": best}

    cases = {
        "resnet50 float32": case("resnet50", "float32", "classification", 3.0, 4.0),
        "resnet50 bfloat16": case("resnet50", "bfloat16", "classification", 6.0, 6.0),
        f"{KERAS_APPLICATIONS} float32": case(KERAS_APPLICATIONS, "float32", "classification", 2.0, 5.0),
        "faster_rcnn_resnet50 float32": case("faster_rcnn_resnet50", "float32", "detection", 4.0, 4.0),
        "faster_rcnn_mobilenetv2 float32": case("faster_rcnn_mobilenetv2", "float32", "detection", 10.0, 12.0),
        "faster_rcnn_mobilenetv2 bfloat16": case("faster_rcnn_mobilenetv2", "bfloat16", "detection", 15.0, 15.0),
    }
    result = ratios(cases)
    assert result["zoo_vs_keras_applications"] == {"float32": {"median": 1.5, "best": 0.8}}  # no bf16 keras side
    assert result["bfloat16_vs_float32"] == {"resnet50": {"median": 2.0, "best": 1.5},
                                             "faster_rcnn_mobilenetv2": {"median": 1.5, "best": 1.25}}
    # Only detectors, only against the baseline of their own precision (none in bfloat16 here).
    assert result["vs_faster_rcnn_resnet50"] == {"faster_rcnn_mobilenetv2 float32": {"median": 2.5, "best": 3.0}}


def test_keras_applications_resnet50_takes_the_zoo_weights_by_name():
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    ours = zoo.build("resnet50", input_shape=(32, 32, 3))
    theirs = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    before = forward_difference(ours, theirs, 32)
    copied = copy_weights_by_name(ours, theirs)
    assert copied == sum(1 for layer in theirs.layers if layer.weights) == 107  # 53 conv, 53 BN, the top
    after = forward_difference(ours, theirs, 32)
    assert after["max_abs_diff"] <= 1e-5 < before["max_abs_diff"] and after["top1_equal"] == 1.0


@pytest.mark.slow
def test_a_tiny_run_writes_positive_finite_figures(tmp_path):
    out = tmp_path / "train_throughput"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--models", "lenet5", "not_a_model",
         "--image-size", "32", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "2",
         "--pipeline-sizes", "32", "--pipeline-images", "16", "--pipeline-batch-size", "8",
         "--pipeline-batch-images", "32",
         "--small-models", "lenet5", "--small-steps", "2", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "not_a_model is not registered; skipped" in completed.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".md").read_text().startswith("# Training throughput")
    machine = report["machine"]
    assert machine["cpu"] and isinstance(machine["flags"], list)
    assert len(machine["load_average_at_start"]) == len(machine["load_average_at_end"]) == 3
    assert report["settings"]["jit_compile"] is False
    assert set(report["cases"]) == {"lenet5 float32", "lenet5 bfloat16"}
    assert report["skipped"] == {"not_a_model": "not registered (zoo.build does not know it yet)"}
    positive = lambda value: isinstance(value, (int, float)) and math.isfinite(value) and value > 0  # noqa: E731
    for case in report["cases"].values():
        assert case["steps"] == 4 and case["batch_size"] == 4 and case["image_size"] == 32
        for key in ("median_ms", "min_ms", "images_per_s", "best_images_per_s", "first_step_s"):
            assert positive(case[key]), (key, case[key])
        assert case["images_per_s"] == pytest.approx(4000 / case["median_ms"], rel=1e-3)
    assert positive(report["ratios"]["bfloat16_vs_float32"]["lenet5"]["median"])
    assert [(row["size"], row["augment"]) for row in report["pipeline"]] == [(32, True), (32, False), (32, True)]
    assert all(positive(row["images_per_s"]) for row in report["pipeline"])
    (small,) = report["small_models"]
    assert small["model"] == "lenet5" and isinstance(small["pipeline_bound"], bool)
    assert positive(small["alone"]["images_per_s"]) and positive(small["fed_by_pipeline"]["images_per_s"])
    assert np.isclose(small["pipeline_alone_images_per_s"], report["pipeline"][0]["images_per_s"])
