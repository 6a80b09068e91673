"""`layers.files.write_atomically`, for files and folders: the result appears whole or not at all,
with the umask's mode, and temporaries of killed writes are removed once an hour old.
(`training`'s checkpoints and `zoo`'s exports test it again through their own callers.)"""

import os

import pytest

from layers.files import write_atomically


@pytest.fixture
def umask_022():
    mask = os.umask(0o022)
    yield
    os.umask(mask)


def test_a_file_is_written_whole_with_the_umasks_mode_and_its_temporary_keeps_the_suffix(tmp_path, umask_022):
    seen = []

    def write(temporary):
        seen.append(temporary.name)
        temporary.write_text("new")

    target = write_atomically(tmp_path / "sub" / "best.keras", write)
    assert target == tmp_path / "sub" / "best.keras" and target.read_text() == "new"
    assert seen[0].startswith(".best.keras.") and seen[0].endswith(".keras")
    assert os.listdir(target.parent) == ["best.keras"]
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")

    def broken(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken, suffix=".partial")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["model.onnx"]


def test_a_folder_replaces_the_old_one_only_when_complete(tmp_path, umask_022):
    target = tmp_path / "exported"
    target.mkdir()
    (target / "old.pb").write_text("old")

    def broken(temporary):
        (temporary / "saved_model.pb").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken, suffix=".partial", directory=True)
    assert os.listdir(tmp_path) == ["exported"] and os.listdir(target) == ["old.pb"]

    write_atomically(target, lambda temporary: (temporary / "saved_model.pb").write_text("new"), suffix=".partial",
                     directory=True)
    assert os.listdir(tmp_path) == ["exported"] and os.listdir(target) == ["saved_model.pb"]
    assert target.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


def test_only_temporaries_of_the_same_suffix_untouched_for_an_hour_are_removed(tmp_path):
    stale_file, stale_folder = tmp_path / ".a.onnx.k3j4h5g6.partial", tmp_path / ".b.a1b2c3d4.partial"
    fresh, other, link = tmp_path / ".c.onnx.z9y8x7w6.partial", tmp_path / ".d.k3j4h5g6.part", tmp_path / ".e.q1w2e3r4.partial"
    for path in (stale_file, fresh, other):
        path.write_text("half")
    (stale_folder / "variables").mkdir(parents=True)
    (stale_folder / "variables" / "data").write_text("half")
    link.symlink_to(other)
    now = os.stat(fresh).st_mtime
    for path in (stale_file, other, stale_folder, stale_folder / "variables", stale_folder / "variables" / "data"):
        os.utime(path, (now - 7200, now - 7200))
    os.utime(link, (now - 7200, now - 7200), follow_symlinks=False)
    write_atomically(tmp_path / "model.onnx", lambda temporary: temporary.write_bytes(b"onnx"), suffix=".partial")
    assert sorted(os.listdir(tmp_path)) == [".c.onnx.z9y8x7w6.partial", ".d.k3j4h5g6.part", ".e.q1w2e3r4.partial",
                                            "model.onnx"]
