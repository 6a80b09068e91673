"""Files and folders written atomically: into a hidden temporary sibling, renamed at the end.

`write_atomically` is the one writer of what `training` saves (checkpoints, backups' records,
run records), of `zoo.export`'s SavedModel folders, of `zoo.export_formats`' ONNX and TFLite
files and of the benchmarks' results: a process killed at any moment leaves the previous file
(or folder) or the new one, never a torn one. It lives here, the one package both `training`
and `zoo` import. `zoo.weights` keeps its own download writer and `remove_stale_temporaries`:
that module imports without TensorFlow (`zoo describe` reads it), and `import layers` brings
TensorFlow.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

# A temporary that nothing has written to for this long belongs to a write killed before its
# rename (SIGKILL, power loss): a running write touches it far more often.
STALE_AFTER_SECONDS = 3600.0


def _newest_change(path: str) -> float:
    """The latest modification time of `path` and, for a folder, of everything inside it."""
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path) and not os.path.islink(path):
        for folder, names, files in os.walk(path):
            for name in names + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _remove_stale(directory: Path, pattern: re.Pattern, now: float) -> None:
    """Removes the entries of `directory` whose whole name matches `pattern`, that are not
    symbolic links and that nothing has modified (inside folders too) for an hour before `now`;
    an entry that cannot be read or removed is left alone."""
    for entry in os.scandir(directory):
        try:
            if (not pattern.fullmatch(entry.name) or entry.is_symlink()
                    or now - _newest_change(entry.path) < STALE_AFTER_SECONDS):
                continue
            if entry.is_dir():
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        except OSError:
            continue


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str | None = None,
                     directory: bool = False) -> Path:
    """`write(temporary)` into a hidden temporary sibling of `path`, then a rename to `path`.

    The temporary is `.NAME.<8 random characters>SUFFIX` (`.best.keras.k3j4h5g6.keras`,
    `.exported.k3j4h5g6.partial`). If `write` raises, the temporary is removed and `path` is as
    it was. The result gets the mode a plain `open()` or `mkdir()` gives under the umask, not
    `mkstemp`'s 0600 or `mkdtemp`'s 0700, which would hide it from a server's user.

    Temporaries of writes killed before their rename (the same pattern in the same folder,
    files or folders, nothing modified in them for `STALE_AFTER_SECONDS`) are removed first.
    Age rather than a process id decides, as the folder may be shared between machines, and the
    file system's clock tells the age: the new temporary's time is its "now".

    Args:
      path: the file or folder to write; its parent folders are made.
      write: `(temporary: Path) -> anything`, writing the file (or filling the folder) at
        `temporary`, which exists, empty.
      suffix: the temporary's suffix; defaults to `path`'s own, for writers that pick the
        format from it (`model.save`, `cv2.imwrite`).
      directory: `path` is a folder. An existing one is moved aside and removed only once the
        new one is in place (a folder cannot be renamed over another).

    Returns:
      `path`, as a `Path`.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    if directory:
        temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))
    else:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(handle)
        temporary = Path(name)
    _remove_stale(path.parent, re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(suffix)), os.stat(temporary).st_mtime)
    old = None
    try:
        write(temporary)
        os.chmod(temporary, (0o777 if directory else 0o666) & ~_umask())
        if directory and path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".old"))
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(temporary, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
    finally:
        if directory:
            shutil.rmtree(temporary, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        elif os.path.lexists(temporary):
            os.remove(temporary)
    return path


__all__ = ["STALE_AFTER_SECONDS", "write_atomically"]
