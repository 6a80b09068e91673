"""The `zoo` command line."""

import pytest

from zoo import cli


def test_list_prints_names_tasks_and_parameters(capsys):
    assert cli.main(["list", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "classification" in out and "11,699,112" in out
    assert "vgg16" not in out


def test_describe_prints_inputs_outputs_feature_maps_parameters_and_weights(capsys):
    assert cli.main(["describe", "resnet18", "--set", "input_shape=(64, 64, 3)", "--set", "output_stride=16"]) == 0
    out = capsys.readouterr().out
    assert "inputs: images (None, 64, 64, 3)" in out
    assert "outputs: predictions (None, 1000)" in out
    assert "C5: stride 16, 512 channels" in out
    assert "parameters:" in out and "weights:" in out


def test_errors_are_one_line_with_exit_code_2(capsys):
    assert cli.main(["describe", "resnet05"]) == 2
    assert "closest registered names: resnet50" in capsys.readouterr().err
    assert cli.main(["describe", "resnet18", "--set", "output_stride=12"]) == 2
    assert "output_stride must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_trains_exports_and_reloads_both_heads(tmp_path):
    import json

    import cv2

    from tests.helpers import run_zoo

    # `runs/` beside the demo's own run folders may hold a user's training runs: they stay.
    mine = tmp_path / "demo" / "runs" / "mine" / "model.keras"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"a user's run")
    result = run_zoo("demo", "--quick", "--out", tmp_path / "demo")  # in its own process, as a user runs it
    assert result.returncode == 0, result.stderr
    assert mine.read_bytes() == b"a user's run"
    out = result.stdout
    assert "reloaded in plain TensorFlow: agrees" in out and "DISAGREES" not in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["detection"]["savedmodel_agrees"] and summary["segmentation"]["pixel_agreement"] >= 0.999
    assert 0.0 <= summary["detection"]["mAP@0.5"] <= 1.0 and 0.0 <= summary["segmentation"]["mIoU"] <= 1.0
    for name in ("detection.png", "segmentation.png"):
        assert cv2.imread(str(tmp_path / "demo" / name)) is not None
    for name in ("detector_savedmodel", "deeplab_savedmodel"):
        assert (tmp_path / "demo" / name / "saved_model.pb").is_file()
    # The closing table names both models with their figures; the pretrained photo is shown only
    # where torchvision's COCO file is cached, and otherwise the demo says where to get it.
    table = out[out.index("model "):]
    assert "faster_rcnn_mobilenetv2" in table and "deeplabv3plus_mobilenetv2" in table and "images/s" in table
    assert summary["detection"]["images_per_second"] > 0
    assert summary["pretrained"]["shown"] or "torchvision's COCO weights are not in" in out


def test_bad_override_syntax_is_rejected():
    with pytest.raises(SystemExit):
        cli.main(["describe", "resnet18", "--set", "output_stride"])


def test_readme_model_table_is_the_generated_one():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<!-- models-table")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- end models-table -->")
    assert readme[start:end].strip() == cli.models_markdown_table(), (
        "README's model table is stale: regenerate it with `zoo list --markdown`"
    )


@pytest.mark.slow
def test_catalogue_is_what_the_registry_builds():
    # The one test that builds every registered model (about a minute on 2 cores): `zoo list`,
    # `zoo describe` and the README's table print zoo/catalogue_data.py, this keeps it true.
    # Outputs are compared in order: `zoo describe` lists them as the model's dict returns them.
    import zoo
    from zoo import catalogue

    stale = "zoo/catalogue_data.py is stale: regenerate it with `python -m zoo.catalogue`"
    assert catalogue.names() == zoo.list_models(), stale
    for name in zoo.list_models():
        description, built = catalogue.build_entry(name)
        stored = catalogue.stored_entry(name)
        assert {key: stored[key] for key in description} == description, f"{name}: {stale}"
        assert {key: stored[key] for key in built} == built, f"{name}: {stale}"
        assert list(stored["outputs"]) == list(built["outputs"]), f"{name}: {stale}"
        assert set(stored) == set(description) | set(built), f"{name}: {stale}"


def test_describe_lists_a_detectors_outputs_by_name_in_the_returned_order(capsys):
    assert cli.main(["describe", "faster_rcnn_resnet50"]) == 0
    out = capsys.readouterr().out
    keys = ["rpn_objectness", "rpn_box_deltas", "proposals", "class_probs", "box_deltas", "boxes", "scores",
            "classes", "num_detections"]
    positions = [out.index(f"\n    {key}: (") for key in keys]
    assert positions == sorted(positions)
    assert "    num_detections: (None,)" in out and "    class_probs: (None, None, 21)" in out
    assert "fc_units" not in out and "dropout" not in out  # the VGG16 head's only


@pytest.mark.slow
def test_help_list_and_describe_do_not_import_tensorflow():
    # In the zoo command's process they read zoo.catalogue: a fraction of a second, no TensorFlow
    # log lines. `python -X importtime` names every module imported; the console script and
    # `python -m zoo` are both checked.
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("zoo")
    commands = [["--help"], ["list"], ["list", "--markdown"], ["describe", "deeplabv3plus_resnet50"],
                ["describe", "resnet05"], ["demo", "--help"]]
    commands += [[verb, "--help"] for verb in ("train", "evaluate", "predict", "inspect", "export")]
    for launcher in ([[str(script)]] if script.is_file() else []) + [["-m", "zoo"]]:
        for argv in commands if launcher[0] == "-m" else commands[:3]:
            result = subprocess.run([sys.executable, "-X", "importtime", *launcher, *argv],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode in (0, 2), (argv, result.stderr[-2000:])
            imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                        if line.startswith("import time:")}
            assert not imported & {"tensorflow", "keras", "training", "layers"}, (launcher, argv)
            assert "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower(), argv


def test_demo_help_states_the_readmes_quick_time(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    said = re.search(r"`zoo demo --quick` runs .*? in (about [a-z]+ minutes?)", " ".join(readme.split())).group(1)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert said in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_demo_refuses_to_delete_a_run_folder_it_did_not_make(tmp_path):
    from tests.helpers import run_zoo

    theirs = tmp_path / "runs" / "detector" / "model.keras"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"a user's run")
    result = run_zoo("demo", "--quick", "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"zoo demo: error: {theirs.parent} exists and zoo demo did not make it" in result.stderr
    assert theirs.read_bytes() == b"a user's run" and not (tmp_path / "runs" / "deeplab").exists()
