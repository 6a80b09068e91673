"""A user's mistake given to `zoo` in a subprocess gets one `zoo VERB: error:` line that names the
argument and the file, never a traceback: an `--out` that is a file, a truncated `.keras`."""

import cv2
import numpy as np
import pytest

import zoo
from tests.helpers import run_zoo

# Every test runs `zoo` in a subprocess (TensorFlow's import alone is seconds).
pytestmark = pytest.mark.slow

SIZE = ("--image-size", "32", "32")


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("zoo ")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_errors")
    model = zoo.build("lenet5", classes=3, input_shape=(32, 32, 3))
    model.save(folder / "good.keras")
    whole = (folder / "good.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    cv2.imwrite(str(folder / "photo.png"), np.full((32, 32, 3), 128, np.uint8))
    (folder / "notes.txt").write_text("a file, not a directory\n")
    return folder


def _command(verb, files, *, weights, out):
    if verb == "train":
        return ("train", "lenet5", "--dataset", "synthetic:16", *SIZE, "--batch-size", "8", "--epochs", "1",
                "--quiet", "--out", out)
    if verb == "predict":
        return ("predict", "lenet5", files / "photo.png", "--weights", weights, "--classes", "a,b,c", "--out", out)
    if verb == "evaluate":
        return ("evaluate", "lenet5", "--weights", weights, "--dataset", "synthetic:16", *SIZE, "--quiet")
    return ("export", "lenet5", "--weights", weights, "--out", out)


@pytest.mark.parametrize("verb", ["train", "predict", "export"])
def test_an_out_that_is_a_file_is_refused_and_left_alone(files, verb):
    notes = files / "notes.txt"
    result = run_zoo(*_command(verb, files, weights=files / "good.keras", out=notes))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = _error_lines(result)
    assert line.startswith(f"zoo {verb}: error: --out {notes} is a file; give a directory"), line
    assert "Traceback" not in result.stderr
    assert notes.read_text() == "a file, not a directory\n"


@pytest.mark.parametrize("verb", ["predict", "evaluate", "export"])
def test_a_truncated_keras_file_is_named_as_unreadable_not_missing(files, verb, tmp_path):
    truncated = files / "truncated.keras"
    result = run_zoo(*_command(verb, files, weights=truncated, out=tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = _error_lines(result)
    assert line.startswith(f"zoo {verb}: error: --weights {truncated} cannot be read as a .keras file "
                           "(truncated or not a Keras file?"), line
    assert "File not found" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
