"""Hostile weights archives: a decompression bomb is refused before anything is extracted (and the
limit can be raised), a bogus or corrupt TF checkpoint inside an archive is a ValueError naming
the file, never a TensorFlow traceback, and a refused checkpoint leaves the model unchanged."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from tests.helpers import run_zoo
from tests.zoo.slim.test_deeplab_checkpoints import (  # noqa: F401  (the archive fixture)
    BUILD_TINY, archive, tiny_mobilenet, write_archive,
)
from zoo import weights as weights_lib
from zoo.slim.checkpoint import load_slim_checkpoint

EXPORT = ("export", "deeplabv3plus_mobilenetv2", "--set", "input_shape=(32, 32, 3)")


def write_bomb(path, megabytes=64):
    """A `.tar.gz` of about 65 KB holding one file of `megabytes` MiB of zeros."""
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("deeplab/model.ckpt.data-00000-of-00001")
        info.size = megabytes * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = write_bomb(tmp_path_factory.mktemp("bomb") / "deeplab_bomb.tar.gz")
    assert path.stat().st_size < 100_000
    return path


def test_a_decompression_bomb_is_refused_before_extracting(bomb, tmp_path):
    target = tmp_path / "extracted"
    with pytest.raises(ValueError, match=r"extracts to more than 16,777,216 bytes.*ZOO_MAX_ARCHIVE_BYTES"):
        weights_lib.extract_archive(bomb, target)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a half-extracted .partial one
    # The limit is the caller's to raise: then it extracts, whole.
    weights_lib.extract_archive(bomb, target, max_bytes=65 * 2**20)
    assert (target / "deeplab" / "model.ckpt.data-00000-of-00001").stat().st_size == 64 * 2**20


@pytest.mark.slow
def test_zoo_refuses_a_bomb_as_weights_with_one_error_line_and_leaves_nothing(bomb, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    refused = run_zoo(*EXPORT, "--weights", bomb, "--out", tmp_path / "export", env={"TMPDIR": scratch})
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"zoo export: error: archive {bomb} (" in refused.stderr
    assert "a decompression bomb?" in refused.stderr and "ZOO_MAX_ARCHIVE_BYTES" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert list(scratch.iterdir()) == [] and not (tmp_path / "export").exists()
    # ZOO_MAX_ARCHIVE_BYTES raises the limit: the archive is then extracted and read (it holds no checkpoint).
    allowed = run_zoo(*EXPORT, "--weights", bomb, "--out", tmp_path / "export",
                      env={"TMPDIR": scratch, "ZOO_MAX_ARCHIVE_BYTES": 100 * 2**20})
    assert allowed.returncode == 2 and "expected one TF checkpoint" in allowed.stderr, allowed.stderr[-2000:]
    assert list(scratch.iterdir()) == []


def _rewritten(archive_path, tmp_path, suffix, damage):
    """The archive with the checkpoint file ending in `suffix` replaced by `damage(its bytes)`."""
    folder = tmp_path / "unpacked"
    weights_lib.extract_archive(archive_path, folder)
    [damaged] = folder.rglob(f"*{suffix}")
    damaged.write_bytes(damage(damaged.read_bytes()))
    prefix = Path(str(damaged)[: -len(suffix)])
    return write_archive(tmp_path / f"damaged{suffix.replace('-', '_')}.tar.gz", prefix), prefix


@pytest.mark.slow
def test_a_bogus_checkpoint_index_in_an_archive_is_a_value_error_naming_it(archive, tmp_path):
    path, _ = archive
    bogus, _ = _rewritten(path, tmp_path, ".index", lambda data: b"\x00not an sstable" * 8)
    with pytest.raises(ValueError, match=r"model.ckpt-30000 is not a TF checkpoint"):
        zoo.build("deeplabv3plus_mobilenetv2", weights=str(bogus), **BUILD_TINY)
    refused = run_zoo(*EXPORT, "--weights", bogus, "--out", tmp_path / "export")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "zoo export: error: load_slim_checkpoint:" in refused.stderr and "is not a TF checkpoint" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "export").exists()


def test_a_cut_short_checkpoint_data_file_assigns_nothing(archive, tmp_path):
    path, _ = archive
    _, prefix = _rewritten(path, tmp_path, ".data-00000-of-00001", lambda data: data[: len(data) // 2])
    model = tiny_mobilenet()
    before = [variable.numpy() for variable in model.weights]
    cut_short = r"cannot be read \(a corrupt or cut-short data file\?\).*nothing was assigned"
    with pytest.raises(ValueError, match=cut_short):
        load_slim_checkpoint(model, prefix)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)
