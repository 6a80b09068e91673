"""`zoo train --resume` continues only the run it was given, and `zoo train` never trains over a
finished run: each refusal is one `zoo train: error:` line, and the run is left as it was."""

import json
import shutil

import pytest

from tests.helpers import run_zoo

# Every test drives `zoo train` in subprocesses, after a module fixture that trains a run.
pytestmark = pytest.mark.slow

COMMON = ("--dataset", "synthetic:24", "--batch-size", "8", "--quiet", "--precise-bn", "0")


def _train(out, *extra, model="resnet18", size=32, optimizer="adam", lr=0.001):
    return run_zoo("train", model, *COMMON, "--image-size", size, size, "--optimizer", optimizer, "--lr", lr,
                   "--out", out, *extra)


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("zoo ")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    done = _train(out, "--epochs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _files(out):
    return {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}


def test_resume_names_each_changed_setting_with_its_old_and_new_value(finished_run):
    before = _files(finished_run)
    refused = _train(finished_run, "--resume", "--epochs", "2", "--seed", "3", "--batch-size", "4",
                     size=48, optimizer="sgd", lr=0.01)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert _error_lines(refused) == [
        f"zoo train: error: --resume: the run in {finished_run} was trained with optimizer adam, lr 0.001, seed 0, "
        "batch size 8, image size 32x32; this command asks for optimizer sgd, lr 0.01, seed 3, batch size 4, "
        "image size 48x48. Resume with the run's settings, or train a new run in another directory"
    ], refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    assert _files(finished_run) == before  # run.json, model.keras: as the run left them


def test_resume_with_another_model_or_shape_is_named_not_a_dump_of_weight_arrays(finished_run):
    other_model = _train(finished_run, "--resume", "--epochs", "2", model="lenet5")
    assert other_model.returncode == 2, other_model.stderr[-2000:]
    assert _error_lines(other_model) == [
        f"zoo train: error: --resume: the run in {finished_run} was trained with model resnet18; this command asks "
        "for model lenet5. Resume with the run's settings, or train a new run in another directory"
    ], other_model.stderr[-3000:]

    other_shape = _train(finished_run, "--resume", "--epochs", "2", "--set", "depths=(1, 1, 1, 1)")
    assert other_shape.returncode == 2, other_shape.stderr[-2000:]
    [line] = _error_lines(other_shape)
    assert "was trained with model weights of 102 arrays, 11," in line, line
    assert "this command asks for model weights of 62 arrays, 4,9" in line, line
    assert "Traceback" not in other_shape.stderr and len(line) < 400, line


def test_resume_with_the_same_settings_and_more_epochs_continues(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    resumed = _train(out, "--resume", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing at epoch 2 of 2" in resumed.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["epochs"] == 2 and run["model"] == "resnet18" and "recipe" in run
    assert run["model_weights"]["arrays"] == 102


@pytest.mark.parametrize("resume", [False, True], ids=["train", "resume"])
def test_a_finished_run_without_a_backup_is_not_trained_over(finished_run, tmp_path, resume):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    shutil.rmtree(out / "backup")
    before = _files(out)
    refused = _train(out, "--epochs", "1", *(["--resume"] if resume else []))
    assert refused.returncode == 2, refused.stderr[-2000:]
    [line] = _error_lines(refused)
    assert f"{out} holds a finished run (model.keras) and no backup" in line
    assert "choose another output directory" in line
    assert _files(out) == before
