"""The hostile inputs and faults the zoo handles (issue 18), one row each: its category, what is
tried, what the user gets, and the test file that tries it in depth (most of them through `zoo`
in a subprocess). Every row runs a small real check of its own here, on tiny models, in-process;
the README's "Reliability" section summarises this table (`test_readme_counts_the_table`).
"""

import io
import os
import re
import tarfile
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import zoo
from zoo import cli

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("files and paths", "data", "weights and downloads", "training runs", "layers")


def _lenet(classes=3):
    return zoo.build("lenet5", classes=classes, input_shape=(32, 32, 3))


def _photo(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "photo.png"
    cv2.imwrite(str(path), np.full((32, 32, 3), 100, np.uint8))
    return path


def _error(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("zoo ")]


# --------------------------------------------------------------------------- files and paths


def predict_over_its_input(tmp_path, capsys):
    photo = _photo(tmp_path / "photos")
    original = photo.read_bytes()
    from zoo.predict import predict_files

    with pytest.raises(ValueError, match="would overwrite the input image"):
        predict_files(_lenet(), [photo], photo.parent, task="classification", class_names=("a", "b", "c"))
    assert photo.read_bytes() == original and [p.name for p in photo.parent.iterdir()] == ["photo.png"]


def demo_over_a_users_runs(tmp_path, capsys):
    theirs = tmp_path / "runs" / "detector" / "model.keras"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"a user's run")
    assert cli.main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "zoo demo did not make it" in _error(capsys)[0]
    assert theirs.read_bytes() == b"a user's run"


def out_is_a_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("notes")
    photo = _photo(tmp_path / "photos")
    for argv in (["train", "lenet5", "--dataset", "synthetic:16", "--out", str(notes)],
                 ["predict", "lenet5", str(photo), "--weights", "x.keras", "--out", str(notes)],
                 ["export", "lenet5", "--out", str(notes)]):
        assert cli.main(argv) == 2
        [line] = _error(capsys)
        assert f"error: --out {notes} is a file; give a directory" in line
    assert notes.read_text() == "notes"


def truncated_keras_file(tmp_path, capsys):
    _lenet().save(tmp_path / "model.keras")
    whole = (tmp_path / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(whole[: len(whole) // 2])
    truncated = tmp_path / "model.keras"
    assert cli.main(["export", "lenet5", "--weights", str(truncated), "--out", str(tmp_path / "e")]) == 2
    [line] = _error(capsys)
    assert "cannot be read as a .keras file (truncated or not a Keras file?" in line
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- data


def _voc_with_mask(tmp_path, mask):
    from tests.training.data.voc_fixture import VOC_IMAGES, write_voc

    root = write_voc(tmp_path / "VOC2012", splits={"train": list(VOC_IMAGES)[:2]})
    path = root / "SegmentationClass" / "2008_000002.png"
    Image.fromarray(mask).save(path)
    return root, path


def image_bomb(tmp_path, capsys):
    from tests.training.data.test_bad_files import png_bomb
    from training import data

    (tmp_path / "images" / "a").mkdir(parents=True)
    bomb = png_bomb(tmp_path / "images" / "a" / "bomb.png", 8000, 8000)
    with pytest.raises(data.DataError, match=r"bomb\.png: the image is 8000x8000 .*ZOO_MAX_IMAGE_PIXELS=PIXELS"):
        data.read_folder(tmp_path / "images")
    with pytest.raises(data.DataError, match="more than the limit of 50,000,000 pixels"):
        data.load_image(data.Example(str(bomb), label=0))


def truncated_jpeg(tmp_path, capsys):
    from training import data

    (tmp_path / "images" / "a").mkdir(parents=True)
    whole = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))[1]
    (tmp_path / "images" / "a" / "cut.jpg").write_bytes(whole.tobytes()[: len(whole) // 2])
    with pytest.raises(data.DataError, match=r"cut\.jpg: the JPEG is cut short .*ZOO_ALLOW_TRUNCATED_IMAGES=1"):
        data.read_folder(tmp_path / "images")


def one_and_sixteen_bit_masks(tmp_path, capsys):
    from training import data

    foreground = np.zeros((24, 32), bool)
    foreground[4:20, 5:15] = True
    root, path = _voc_with_mask(tmp_path, foreground)  # a 1-bit PNG
    mask = data.load_mask(data.read_voc_segmentation(root, "train", classes="dog").examples[1], num_classes=1)
    np.testing.assert_array_equal(mask, foreground)  # ids 0 and 1, not 255 (ignore)
    Image.fromarray(foreground.astype(np.uint16)).save(path)
    with pytest.raises(data.DataError, match=r"2008_000002\.png: a 16-bit image \(mode I;16\); masks must be 8-bit"):
        data.read_voc_segmentation(root, "train")
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(path)
    with pytest.raises(data.DataError, match=r"2008_000002\.png: the mask is 20x32 .* but its image"):
        data.read_voc_segmentation(root, "train")


def bad_mask_found_by_zoo_train(tmp_path, capsys):
    _, path = _voc_with_mask(tmp_path, np.zeros((24, 32), np.uint16))
    out = tmp_path / "run"
    argv = ["train", "deeplabv3plus_mobilenetv2", "--dataset", f"voc:{tmp_path / 'VOC2012'}", "--out", str(out)]
    assert cli.main(argv) == 2
    [line] = _error(capsys)
    assert line.startswith("zoo train: error: ") and str(path) in line and "16-bit" in line
    assert not out.exists()  # no logs/, no run.json: refused before the model is built


# --------------------------------------------------------------------------- weights and downloads


def refused_weights_file(tmp_path, capsys):
    _lenet(classes=5).save_weights(tmp_path / "other.weights.h5")
    model = _lenet()
    before = [variable.numpy() for variable in model.weights]
    with pytest.raises(ValueError, match="the model is unchanged"):
        zoo.weights.load_weights_file(model, tmp_path / "other.weights.h5")
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cut_short_download(tmp_path, capsys):
    whole = _archive(tmp_path / "whole.tar.gz", {"m/model.ckpt.index": os.urandom(50_000)}).read_bytes()
    (tmp_path / "served.tar.gz").write_bytes(whole[: len(whole) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(zoo.weights.WeightsDownloadError, match="incomplete or corrupt"):
        zoo.weights.fetch((tmp_path / "served.tar.gz").as_uri(), "weights.tar.gz", hash_algorithm=None,
                          file_hash_value=None, directory=cache, progress=False)
    assert list(cache.iterdir()) == []  # nothing cached, not even the .part


def stale_temporaries(tmp_path, capsys):
    stale = tmp_path / ".model.k3j4h5g6.keras"
    stale.write_bytes(b"left by a save killed before its rename")
    hour_ago = time.time() - 2 * 3600
    os.utime(stale, (hour_ago, hour_ago))
    from training.callbacks import save_model_atomically

    save_model_atomically(_lenet(), tmp_path / "model.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def archive_bomb(tmp_path, capsys):
    bomb = _archive(tmp_path / "bomb.tar.gz", {"m/model.ckpt.data-00000-of-00001": bytes(32 * 2**20)})
    with pytest.raises(ValueError, match="a decompression bomb"):
        zoo.weights.extract_archive(bomb, tmp_path / "extracted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tar.gz"]


def bogus_checkpoint_in_archive(tmp_path, capsys):
    from zoo.slim.checkpoint import import_checkpoint_archive

    bogus = _archive(tmp_path / "bogus.tar.gz", {"m/model.ckpt.index": b"\x00not an sstable" * 8,
                                                 "m/model.ckpt.data-00000-of-00001": b"\x00" * 64})
    with pytest.raises(ValueError, match=r"model.ckpt is not a TF checkpoint"):
        import_checkpoint_archive(_lenet(), bogus)


# --------------------------------------------------------------------------- training runs


def _tiny(num_classes, width=8):
    inputs = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(width, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _train(out, *, width=8, **changes):
    from training import TrainConfig, data, train

    settings = dict(epochs=1, batch_size=8, image_size=(32, 32), optimizer="adam", learning_rate=0.001,
                    precise_bn=0, augment=False)
    settings.update(changes)
    source = data.synthetic(24, image_size=(32, 32), num_classes=3)
    return train(lambda classes: _tiny(classes, width), source, out_dir=out, config=TrainConfig(**settings),
                 resume=(out / "backup").exists(), verbose=0)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile_run") / "run"
    _train(out)
    return out


def resume_with_other_settings(tmp_path, capsys, finished_run):
    with pytest.raises(ValueError, match=r"trained with optimizer adam, lr 0.001, seed 0; this command asks for "
                                         r"optimizer sgd, lr 0.01, seed 4"):
        _train(finished_run, epochs=2, optimizer="sgd", learning_rate=0.01, seed=4)


def resume_with_another_shape(tmp_path, capsys, finished_run):
    with pytest.raises(ValueError, match=r"trained with model weights of 4 arrays, 251 parameters; this command "
                                         r"asks for model weights of 4 arrays, 499 parameters"):
        _train(finished_run, epochs=2, width=16)


def finished_run_without_backup(tmp_path, capsys, finished_run):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes((finished_run / "model.keras").read_bytes())
    with pytest.raises(FileExistsError, match="holds a finished run"):
        _train(out)
    assert (out / "model.keras").read_bytes() == (finished_run / "model.keras").read_bytes()


# --------------------------------------------------------------------------- layers


def nan_roi_under_xla(tmp_path, capsys):
    from layers.roi_pooling import RoIPooling

    features = np.full((1, 8, 8, 3), 2.0, np.float32)
    rois = np.array([[[0, 0, 16, 16], [0, 0, 16, np.nan]]], np.float32)
    layer = RoIPooling(2, spatial_scale=0.25, method="max")
    pooled = np.asarray(tf.function(lambda f, r: layer([f, r]), jit_compile=True)(features, rois))
    np.testing.assert_array_equal(pooled[0, 1], 0.0)
    np.testing.assert_array_equal(pooled[0, 0], 2.0)


def batch_mismatch_at_run_time(tmp_path, capsys):
    from layers.roi_pooling import RoIPooling

    layer = RoIPooling(2, spatial_scale=0.25, method="max")
    run = tf.function(lambda f, r: layer([f, r]),
                      input_signature=[tf.TensorSpec([None, None, None, 1]), tf.TensorSpec([None, None, 4])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same batch size"):
        run(np.ones((1, 8, 8, 1), np.float32), np.zeros((2, 1, 4), np.float32))


# (category, hostile input or fault, what the user gets, the test that tries it in depth, check)
ROWS = [
    ("files and paths", "zoo predict --out: the input image's own folder",
     "refused before writing; the image is untouched", "tests/zoo/test_predict.py", predict_over_its_input),
    ("files and paths", "zoo demo --out: a folder holding a user's runs/",
     "refused; only run folders the demo marked as its own are ever deleted", "tests/zoo/test_cli.py",
     demo_over_a_users_runs),
    ("files and paths", "--out of train, predict or export: an existing file",
     "one error line naming --out; the file is untouched", "tests/zoo/test_cli_errors.py", out_is_a_file),
    ("files and paths", "--weights: a truncated .keras (predict, evaluate, export)",
     "one error line: cannot be read, truncated (not 'File not found')", "tests/zoo/test_cli_errors.py",
     truncated_keras_file),
    ("data", "an image whose header declares 64 MP (a 69 KB PNG of 8000 x 8000: 1.9 GB once decoded)",
     "DataError naming the file and ZOO_MAX_IMAGE_PIXELS, from the header, before decoding",
     "tests/training/data/test_bad_files.py", image_bomb),
    ("data", "a JPEG cut short", "DataError naming the file when the dataset is read; ZOO_ALLOW_TRUNCATED_IMAGES=1 "
     "reads it grey-filled with a warning", "tests/training/data/test_bad_files.py", truncated_jpeg),
    ("data", "a 1-bit mask; a 16-bit mask; a mask of another size than its image",
     "1-bit: class ids 0 and 1 (not 255, ignore); the others: DataError naming the file and what was expected",
     "tests/training/data/test_bad_files.py", one_and_sixteen_bit_masks),
    ("data", "zoo train on a VOC folder with a bad mask or image",
     "one error line naming the file, found from headers while reading, before the model; --out untouched",
     "tests/training/data/test_bad_files.py", bad_mask_found_by_zoo_train),
    ("weights and downloads", "a .weights.h5 / .keras that does not fit the model",
     "ValueError; the model is unchanged", "tests/zoo/test_weights.py", refused_weights_file),
    ("weights and downloads", "a download cut short, with no published hash",
     "WeightsDownloadError naming mirror, offline switch and cache; nothing cached", "tests/zoo/test_downloads.py",
     cut_short_download),
    ("weights and downloads", "temporaries of saves, exports and downloads killed by SIGKILL",
     "removed by the next save into the folder once an hour old", "tests/training/test_callbacks.py",
     stale_temporaries),
    ("weights and downloads", "a .tar.gz that extracts to 100x its size (decompression bomb)",
     "refused before extracting, nothing left; ZOO_MAX_ARCHIVE_BYTES raises the limit",
     "tests/zoo/test_archives.py", archive_bomb),
    ("weights and downloads", "a bogus or cut-short TF checkpoint inside an archive",
     "ValueError naming the checkpoint; nothing assigned", "tests/zoo/test_archives.py",
     bogus_checkpoint_in_archive),
    ("training runs", "--resume with another optimizer, lr, seed, batch size, image size or classes",
     "one error line naming each setting, old and new value", "tests/training/test_resume.py",
     resume_with_other_settings),
    ("training runs", "--resume with another model or model shape (--set)",
     "one error line naming the model or its weight shapes, not a dump of arrays", "tests/training/test_resume.py",
     resume_with_another_shape),
    ("training runs", "--out holding a finished run (model.keras) and no backup",
     "FileExistsError naming the folder; the run is untouched", "tests/training/test_resume.py",
     finished_run_without_backup),
    ("layers", "a NaN or Inf RoI under XLA (where CheckNumerics is dropped)",
     "pools zeros, never values of the map, and gives no detection", "tests/layers/test_roi_pooling.py",
     nan_roi_under_xla),
    ("layers", "features and RoIs whose batch sizes differ, known only at run time",
     "InvalidArgumentError naming the mismatch (XLA: the graph fails)", "tests/layers/test_roi_pooling.py",
     batch_mismatch_at_run_time),
]


@pytest.mark.parametrize("row", ROWS, ids=[row[4].__name__ for row in ROWS])
def test_hostile_input(row, tmp_path, capsys, request):
    category, _, _, reference, check = row
    assert category in CATEGORIES and (ROOT / reference).is_file()
    extra = {"finished_run": request.getfixturevalue("finished_run")} if category == "training runs" else {}
    check(tmp_path, capsys, **extra)


def test_readme_counts_the_table():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Reliability"):]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    assert f"{len(ROWS)} hostile inputs and faults" in section, section
    for category in CATEGORIES:
        count = sum(row[0] == category for row in ROWS)
        assert re.search(rf"{category}[^|\n]*\|\s*{count}\s*\|", section, re.IGNORECASE), (category, count)
