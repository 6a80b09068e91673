"""Pretrained weights: the manifest, verified downloads, and loading by layer name with a report.

`zoo.build(name, weights=...)` takes None, a tag of `weights_manifest.json` (`"imagenet"`) or
the path of a local file:

- `.weights.h5` / `.keras`: Keras 3 files, loaded with `Model.load_weights` when they hold the
  model's own layers; another model's file (a classifier's, into a detector's trunk) loads by
  layer name as below, each of its layers' `vars` carrying the layer's name.
- `.h5`: the keras.applications (Keras 2) format, loaded *by layer name*: every layer of the
  model whose name is in the file receives that layer's weights. Layers of the model missing
  from the file (a head on an ImageNet backbone) and layers of the file the model lacks (the
  ImageNet classifier under `include_top=False`) are listed in the returned `LoadReport`;
  a weight whose shape differs is an error, never skipped silently. The layers keras.applications
  leaves unnamed (Xception's residual projections) are paired by order (`unnamed_layer_aliases`).

Manifest tags resolve through `weights_manifest.json` (`$ZOO_WEIGHTS_MANIFEST` overrides its
path); every entry is validated on reading (`entry_problems`). A model built with
`include_top=False`, or with other `classes` than the entry's (fine-tuning a classifier), fetches
the entry's `no_top` file when it has one. A detector or segmenter without an entry of its own for
a tag takes its backbone's (`fast_rcnn_vgg16` with `"imagenet"`: `vgg16.imagenet`, loaded by name
into the trunk; `backbone_entry`), provided the model normalises its input as those weights
expect. Downloads go to
`$ZOO_HOME/weights` (default `~/.cache/zoo/weights`) under a temporary name, are checked against
the manifest's hash and only then renamed into place, so an interrupted or corrupt download never
sits where a good file is expected. An entry with no published hash is checked for being whole
instead (`file_problem`: an HDF5 file that opens, a zip or gzip stream that reaches its end), on
download and again whenever the cached file is used, so a download cut short (a body without
Content-Length, closed early) never stays in the cache. Temporary files of downloads killed
before their rename are removed by the next download into the cache once nobody has written to
them for an hour (`remove_stale_temporaries`). `$ZOO_WEIGHTS_MIRROR` replaces the origin of every URL,
`$ZOO_OFFLINE=1` forbids downloads. Entries that publish no hash (the DeepLab archives) load only
with an explicit `expected_hash` (`fetch_entry`) or `$ZOO_ALLOW_UNVERIFIED_WEIGHTS=1`; formats
this module cannot read (`tf_checkpoint_archive`, `torchvision`) need an importer (`register_importer`).
An entry whose publisher gives only the start of the hash (torchvision's file names carry the first
8 hex digits of the sha256) has `hash: null` and `hash_prefix`: the download's hash must start with
it, as torch.hub checks, and it loads without `expected_hash`.

Archives are extracted by `extract_archive`: plain files and folders only, inside the target,
and at most `archive_byte_limit` bytes in all (100 times the archive's size, at least 16 MiB;
`$ZOO_MAX_ARCHIVE_BYTES` or `max_bytes` sets another limit), counted from the members' headers
before anything is written, so a decompression bomb is refused and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from importlib import resources
from pathlib import Path

MANIFEST_NAME = "weights_manifest.json"
HASH_ALGORITHMS = ("md5", "sha256")


@dataclasses.dataclass
class LoadReport:
    """What loading a weights file did to a model.

    Attributes:
      source: the file that was read.
      loaded: model layers that received weights.
      missing: model layers with weights that the file does not have (left as initialised).
      unused: layers of the file that the model does not have.
    """

    source: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        def names(items):
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            return shown or "none"

        return (
            f"weights from {self.source}: {len(self.loaded)} layers loaded; "
            f"missing from the file (left as initialised): {names(self.missing)}; "
            f"in the file but not in the model: {names(self.unused)}"
        )


# --------------------------------------------------------------------------- manifest

# Environment variables (README, "Pretrained weights").
ENV_MANIFEST = "ZOO_WEIGHTS_MANIFEST"  # another manifest file (tests, private weights)
ENV_HOME = "ZOO_HOME"  # the cache is $ZOO_HOME/weights
ENV_MIRROR = "ZOO_WEIGHTS_MIRROR"  # replaces scheme://host[:port] of every URL
ENV_OFFLINE = "ZOO_OFFLINE"  # "1": never download; a file missing from the cache is an error
ENV_ALLOW_UNVERIFIED = "ZOO_ALLOW_UNVERIFIED_WEIGHTS"  # "1": load entries that publish no hash
ENV_MAX_ARCHIVE_BYTES = "ZOO_MAX_ARCHIVE_BYTES"  # bytes an archive may extract to (extract_archive)

FORMATS = ("h5", "weights.h5", "keras", "tf_checkpoint_archive", "torchvision")
# Formats this module reads itself; the others need an importer (`register_importer`).
BUILTIN_FORMATS = ("h5", "weights.h5", "keras")
REQUIRED_FIELDS = {
    "model": str, "tag": str, "task": str, "url": str, "file_name": str, "format": str,
    "hash_algorithm": (str, type(None)), "hash": (str, type(None)), "size_bytes": (int, type(None)),
    "preprocessing": str, "classes": dict, "metrics": dict, "metrics_source": str, "license": str,
}
HASH_LENGTHS = {"md5": 32, "sha256": 64}


def manifest_path() -> Path:
    """`$ZOO_WEIGHTS_MANIFEST` if set, else the manifest shipped in the installed package,
    else the one at the repository root (an editable install)."""
    if os.environ.get(ENV_MANIFEST):
        return Path(os.environ[ENV_MANIFEST])
    packaged = resources.files("zoo").joinpath(MANIFEST_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / MANIFEST_NAME


def _file_problems(where: str, record: dict) -> list[str]:
    """Problems of the download fields (`url`, `file_name`, hash, size) of an entry or its `no_top`."""
    problems = []
    url = record.get("url")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        problems.append(f"{where}: url must be an http(s) or file URL, got {url!r}")
    name = record.get("file_name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        problems.append(f"{where}: file_name must be a plain file name, got {name!r}")
    algorithm, digest = record.get("hash_algorithm"), record.get("hash")
    prefix = record.get("hash_prefix")
    if prefix is not None:
        if digest is not None:
            problems.append(f"{where}: hash_prefix is for a publisher that gives only the start of the hash; "
                            f"with the whole hash, drop hash_prefix")
        elif algorithm not in HASH_LENGTHS:
            problems.append(f"{where}: hash_prefix needs hash_algorithm, one of {sorted(HASH_LENGTHS)}")
        elif not (isinstance(prefix, str) and 8 <= len(prefix) < HASH_LENGTHS[algorithm]
                  and all(c in "0123456789abcdef" for c in prefix)):
            problems.append(f"{where}: hash_prefix must be 8 to {HASH_LENGTHS[algorithm] - 1} lowercase hex "
                            f"digits of {algorithm}, got {prefix!r}")
    elif digest is None:
        if not record.get("hash_note"):
            problems.append(f"{where}: hash is null, so hash_note must say why (the publisher gives none)")
    elif algorithm not in HASH_LENGTHS:
        problems.append(f"{where}: hash_algorithm must be one of {sorted(HASH_LENGTHS)}, got {algorithm!r}")
    elif not (isinstance(digest, str) and len(digest) == HASH_LENGTHS[algorithm]
              and all(c in "0123456789abcdef" for c in digest)):
        problems.append(f"{where}: hash must be {HASH_LENGTHS[algorithm]} lowercase hex digits of {algorithm}")
    size = record.get("size_bytes")
    if size is None and not record.get("size_note"):
        problems.append(f"{where}: size_bytes is null, so size_note must say why")
    if size is not None and (not isinstance(size, int) or size <= 0):
        problems.append(f"{where}: size_bytes must be a positive integer or null, got {size!r}")
    return problems


def entry_problems(entry: dict) -> list[str]:
    """Everything wrong with one manifest entry (an empty list when it is valid)."""
    where = f"{entry.get('model')}.{entry.get('tag')}"
    problems = []
    for key, kind in REQUIRED_FIELDS.items():
        if key not in entry:
            problems.append(f"{where}: missing {key!r}")
        elif not isinstance(entry[key], kind):
            problems.append(f"{where}: {key} has the wrong type {type(entry[key]).__name__}")
    if problems:
        return problems
    from zoo.tasks import TASKS  # here: this module alone downloads without TensorFlow

    if entry["task"] not in TASKS:
        problems.append(f"{where}: task must be one of {TASKS}, got {entry['task']!r}")
    if entry["format"] not in FORMATS:
        problems.append(f"{where}: format must be one of {FORMATS}, got {entry['format']!r}")
    problems += _file_problems(where, entry)
    if "no_top" in entry:
        if not isinstance(entry["no_top"], dict):
            problems.append(f"{where}: no_top must be an object with url, file_name, hash_algorithm, hash")
        else:
            problems += _file_problems(f"{where}.no_top", entry["no_top"])
    count = entry["classes"].get("count")
    if not isinstance(count, int) or count < 1 or not isinstance(entry["classes"].get("dataset"), str):
        problems.append(f"{where}: classes must be {{'count': positive int, 'dataset': name}}")
    if not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in entry["metrics"].values()):
        problems.append(f"{where}: metrics must be fractions in [0, 1]")
    if not entry["metrics_source"].startswith("https://"):
        problems.append(f"{where}: metrics_source must be an https URL")
    parameters = entry.get("num_parameters")
    if parameters is not None and (not isinstance(parameters, int) or parameters < 1):
        problems.append(f"{where}: num_parameters must be a positive integer or null")
    return problems


def load_manifest(path: str | os.PathLike | None = None) -> list[dict]:
    """The manifest's entries (a list of dicts, one per model and tag), each validated.

    Raises:
      ValueError: not schema_version 1, an invalid entry, or a model.tag listed twice.
    """
    path = path or manifest_path()
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("schema_version") != 1 or not isinstance(manifest.get("entries"), list):
        raise ValueError(f"{path}: expected schema_version 1 with a list of entries")
    problems, seen = [], set()
    for entry in manifest["entries"]:
        problems += entry_problems(entry)
        key = (entry.get("model"), entry.get("tag"))
        if key in seen:
            problems.append(f"{key[0]}.{key[1]}: listed twice")
        seen.add(key)
    if problems:
        raise ValueError(f"{path}: invalid weights manifest:\n  " + "\n  ".join(problems))
    return manifest["entries"]


def available_tags(model_name: str) -> list[str]:
    """Sorted weight tags the manifest has for `model_name`."""
    return sorted(entry["tag"] for entry in load_manifest() if entry["model"] == model_name)


def find_entry(model_name: str, tag: str) -> dict:
    for entry in load_manifest():
        if entry["model"] == model_name and entry["tag"] == tag:
            return entry
    tags = available_tags(model_name)
    raise ValueError(
        f"weights={tag!r}: no such file and no manifest entry {model_name}.{tag}; "
        f"tags available for {model_name}: {', '.join(tags) if tags else 'none'} "
        f"(or pass the path of a local .h5/.weights.h5 file)"
    )


def file_record(entry: dict, config=None) -> dict:
    """The entry's download fields, or its `no_top` file's for a model built without the top or
    with another number of classes than the entry's (a classifier fine-tuned on other classes,
    whose `predictions` then start from their initialisation)."""
    if "no_top" in entry and config is not None:
        other_classes = getattr(config, "classes", entry["classes"]["count"]) != entry["classes"]["count"]
        if getattr(config, "include_top", True) is False or other_classes:
            return {**entry, **entry["no_top"]}
    return entry


# --------------------------------------------------------------------------- download


class WeightsDownloadError(IOError):
    """A download that failed, was cut short, or does not have the published hash."""


# --------------------------------------------------------------------------- temporary files
# Every other write of the zoo goes through `layers.files.write_atomically`, which removes its
# own stale temporaries the same way; a download cannot, as this module imports without
# TensorFlow (`zoo describe` reads it, and the download runs in processes without it).

# A temporary file or folder that nobody has written to for this long belongs to a write that was
# killed before its rename (SIGKILL, power loss): a running download or export writes far more often.
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


def remove_stale_temporaries(directory, pattern: re.Pattern, *, older_than: float = STALE_AFTER_SECONDS) -> list[Path]:
    """Removes the zoo's own temporary files or folders in `directory` that a killed write left.

    Only entries whose whole name matches `pattern` (a temporary name the zoo makes, such as
    `.NAME.<random>.part`), that are not symbolic links, and that nothing has modified for
    `older_than` seconds (checked inside folders too) are removed; anything else, and any entry
    that cannot be read or removed, is left alone. Time rather than a process id decides, because
    a cache or output folder may be shared by several machines. Returns the removed paths.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if entry.is_symlink() or now - _newest_change(entry.path) < older_than:
                continue
            if entry.is_dir():
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path, *, directory: bool = False) -> None:
    """Gives `path` the mode a plain `open()` or `mkdir()` would have: `tempfile.mkstemp` makes
    files 0600 and `mkdtemp` folders 0700, which a rename into place would otherwise keep."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


# Random part of a `tempfile.mkstemp` / `mkdtemp` name.
_RANDOM = r"[a-z0-9_]{8}"


def cache_dir() -> Path:
    """`$ZOO_HOME/weights`; `$ZOO_HOME` defaults to `~/.cache/zoo`."""
    return Path(os.environ.get(ENV_HOME, Path.home() / ".cache" / "zoo")) / "weights"


def resolve_url(url: str) -> str:
    """`url` with its origin (`scheme://host[:port]`) replaced by `$ZOO_WEIGHTS_MIRROR`, if set.

    The mirror may carry a path prefix; the URL's path is appended to it unchanged:
    with `ZOO_WEIGHTS_MIRROR=http://mirror:8000/zoo`,
    `https://storage.googleapis.com/tensorflow/keras-applications/vgg16/x.h5` is fetched from
    `http://mirror:8000/zoo/tensorflow/keras-applications/vgg16/x.h5`.
    """
    mirror = os.environ.get(ENV_MIRROR)
    if not mirror:
        return url
    if urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise ValueError(f"{ENV_MIRROR} must be an http(s) or file URL such as http://host:8000/prefix, got {mirror!r}")
    parts = urllib.parse.urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "") not in ("", "0")


def file_hash(path: str | os.PathLike, algorithm: str) -> str:
    if algorithm not in HASH_ALGORITHMS:
        raise ValueError(f"hash algorithm must be one of {HASH_ALGORITHMS}, got {algorithm!r}")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress:
    """A one-line progress report on stderr: redrawn in place on a terminal, a few lines otherwise."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.done, self.last, self.next_line = 0, 0.0, 0.25
        if enabled:
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            print(f"downloading {label}{size}", file=sys.stderr, flush=True)

    def update(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        fraction = self.done / self.total if self.total else None
        now = time.monotonic()
        if self.tty and now - self.last > 0.2:
            shown = f"{fraction:6.1%}" if fraction is not None else ""
            print(f"\r  {self.done / 1e6:8.1f} MB {shown}", end="", file=sys.stderr, flush=True)
            self.last = now
        elif not self.tty and fraction is not None and fraction >= self.next_line:
            print(f"  {fraction:.0%} of {self.label}", file=sys.stderr, flush=True)
            self.next_line += 0.25

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def file_problem(path: str | os.PathLike, *, name: str | None = None) -> str | None:
    """Why `path` cannot be a whole weights file of the kind its name (or `name`) says, or None.

    `.h5` / `.weights.h5`: HDF5 opens it (HDF5 compares the file's size with the end its
    superblock records, so a cut-short file fails); `.keras`: a zip whose members all read back
    with their CRC; `.tar.gz` / `.tgz`: a gzip stream that reaches its end marker. Other names
    have no check (None).
    """
    name = name or Path(path).name
    try:
        if name.endswith(".h5"):
            import h5py

            with h5py.File(path, "r"):
                pass
        elif name.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
            if broken is not None:
                return f"member {broken} of the zip archive is corrupt"
        elif name.endswith(ARCHIVE_SUFFIXES):
            with tarfile.open(path, "r:gz") as archive:
                for _ in archive:  # walks the whole gzip stream; a cut-short one ends early
                    pass
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _download_hint(directory: Path, file_name: str) -> str:
    return (
        f"; the cache is {directory}: to fetch from another server set {ENV_MIRROR}=http://host[:port][/prefix], "
        f"or to work without the network copy {file_name} there and set {ENV_OFFLINE}=1"
    )


def fetch(url: str, file_name: str, *, hash_algorithm: str | None, file_hash_value: str | None, directory=None,
          progress: bool = True, hash_prefix: str | None = None) -> Path:
    """Download `url` to `directory/file_name` unless a file with the right hash is there.

    The URL goes through `resolve_url` (`$ZOO_WEIGHTS_MIRROR`). The bytes go to a temporary
    file in the same directory, are hashed, and are renamed into place only if the hash matches
    (two processes fetching the same file each write their own temporary file; the rename is
    atomic). With `file_hash_value=None` (an entry that publishes no hash) the file is taken
    as it comes; the callers allow that only when asked to. With `hash_prefix` instead (a publisher
    that gives only the start of the hash: torchvision's file names carry the first 8 hex digits
    of the sha256, which torch.hub checks), the file's hash must start with it.

    Raises:
      WeightsDownloadError: the connection failed or dropped, the body is shorter than its
        Content-Length, or the hash differs (the message names the expected and found hashes);
        `$ZOO_OFFLINE` is set and the file is not in the cache. Nothing is left in the cache.
    """
    directory = Path(directory or cache_dir())
    target = directory / file_name
    checked = file_hash_value is not None or hash_prefix is not None
    expected = file_hash_value if file_hash_value is not None else f"{hash_prefix}... (the published start)"

    def verified(found: str) -> bool:
        return found == file_hash_value if file_hash_value is not None else found.startswith(hash_prefix)

    if target.is_file():
        if not checked:
            # Nothing to compare with: a cached file that is not whole (a download of an earlier
            # version cut short) is fetched again rather than used for good.
            problem = file_problem(target)
            if problem is None:
                return target
            if offline():
                raise WeightsDownloadError(
                    f"{ENV_OFFLINE}=1: the cached {target} is incomplete or corrupt ({problem}) and has no published "
                    f"hash to check it by; delete it and download again (unset {ENV_OFFLINE}), or replace it"
                )
            warnings.warn(f"the cached {target} is incomplete or corrupt ({problem}); downloading it again",
                          UserWarning, stacklevel=2)
            target.unlink()
        else:
            found = file_hash(target, hash_algorithm)
            if verified(found):
                return target
            if offline():
                raise WeightsDownloadError(
                    f"{ENV_OFFLINE}=1: the cached {target} has {hash_algorithm} {found}, expected {expected}, "
                    f"and downloads are off; replace the file or unset {ENV_OFFLINE}"
                )
    if offline():
        raise WeightsDownloadError(
            f"{ENV_OFFLINE}=1: {file_name} is not in the cache {directory} and downloads are off; "
            f"copy the file there (from {url}) or unset {ENV_OFFLINE}"
        )
    source = resolve_url(url)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory, re.compile(rf"\..+\.{_RANDOM}\.part"))
    hint = _download_hint(directory, file_name)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{file_name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(source, timeout=60) as response:
                    length = response.headers.get("Content-Length")
                    expected_length = int(length) if length and length.isdigit() else None
                    bar = _Progress(source, expected_length, progress)
                    try:
                        for chunk in iter(lambda: response.read(1 << 20), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
                    finally:
                        bar.close()
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
                raise WeightsDownloadError(f"download of {source} failed: {error}{hint}") from error
        received = os.path.getsize(temporary)
        found = file_hash(temporary, hash_algorithm or "sha256")
        if expected_length is not None and received != expected_length:
            raise WeightsDownloadError(
                f"download of {source} is truncated: {received} of {expected_length} bytes; "
                f"{hash_algorithm or 'sha256'} found {found}, expected {expected if checked else None}{hint}"
            )
        if checked and not verified(found):
            raise WeightsDownloadError(
                f"download of {source} is corrupt: {hash_algorithm} found {found}, expected {expected}{hint}"
            )
        if not checked:
            problem = file_problem(temporary, name=file_name)
            if problem is not None:
                raise WeightsDownloadError(
                    f"download of {source} is incomplete or corrupt ({received} bytes, no published hash to check): "
                    f"{problem}{hint}"
                )
            warnings.warn(f"{file_name}: no published hash to check; sha256 of the download is {found}",
                          UserWarning, stacklevel=2)
        apply_umask(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


def fetch_entry(model_name: str, tag: str, *, config=None, expected_hash: str | None = None,
                progress: bool = True) -> Path:
    """The cached file of manifest entry `model_name.tag`, downloaded and verified if needed.

    Args:
      expected_hash: `"sha256:<hex>"` or `"md5:<hex>"`, for an entry that publishes no hash
        (the DeepLab archives): the download must match it.

    Raises:
      ValueError: the entry has no hash, and neither `expected_hash` nor
        `ZOO_ALLOW_UNVERIFIED_WEIGHTS=1` says to go on.
      WeightsDownloadError: see `fetch`.
    """
    entry = file_record(find_entry(model_name, tag), config)
    algorithm, digest, prefix = entry["hash_algorithm"], entry["hash"], entry.get("hash_prefix")
    if expected_hash is not None:
        prefix = None
        algorithm, _, digest = expected_hash.partition(":")
        if algorithm not in HASH_LENGTHS or len(digest) != HASH_LENGTHS[algorithm]:
            raise ValueError(f"expected_hash must be 'sha256:<64 hex>' or 'md5:<32 hex>', got {expected_hash!r}")
    elif digest is None and prefix is None and os.environ.get(ENV_ALLOW_UNVERIFIED, "") in ("", "0"):
        raise ValueError(
            f"weights {model_name}.{tag} publish no hash ({entry.get('hash_note', 'no note')}); refusing to load "
            f"an unverified file. Pass expected_hash='sha256:...' to zoo.weights.fetch_entry, download and "
            f"check the file yourself and pass its path as weights=, or set {ENV_ALLOW_UNVERIFIED}=1"
        )
    return fetch(entry["url"], entry["file_name"], hash_algorithm=algorithm, file_hash_value=digest,
                 progress=progress, hash_prefix=prefix)


# --------------------------------------------------------------------------- importers

# Formats that need code outside this module (the TF-slim import of the DeepLab archives lives
# in `zoo.slim`): `format -> importer(model, path) -> LoadReport`.
IMPORTERS: dict = {}


def register_importer(format_name: str, importer) -> None:
    """Let `load_weights` read manifest entries of `format_name` with `importer(model, path)`."""
    if format_name not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format_name!r}")
    IMPORTERS[format_name] = importer


# --------------------------------------------------------------------------- loading


# keras.applications' VGG16/VGG19 top: the layers a Fast R-CNN head reuses as fc6/fc7 (same
# names, same flattened 7 x 7 x 512 input), so a detector with them fetches the file *with* top.
CLASSIFIER_TOP_KERNELS = {"fc1": (7 * 7 * 512, 4096), "fc2": (4096, 4096)}


def backbone_entry(model_name: str, tag: str, config) -> dict | None:
    """The manifest entry of `config.backbone` for `tag`, for a model without an entry of its own
    (None when the model has one, has no backbone, or the backbone has no such tag).

    Raises:
      ValueError: the backbone's weights expect another input normalisation than the model's
        (`preprocessing`): loaded, they would compute something else.
    """
    backbone = getattr(config, "backbone", None)
    entries = {(entry["model"], entry["tag"]): entry for entry in load_manifest()}
    if (model_name, tag) in entries or not isinstance(backbone, str) or (backbone, tag) not in entries:
        return None
    entry = entries[(backbone, tag)]
    preprocessing = getattr(config, "preprocessing", entry["preprocessing"])
    if preprocessing != entry["preprocessing"]:
        raise ValueError(
            f"weights={tag!r}: {model_name} has no entry of its own, and its backbone's ({backbone}.{tag}) expect "
            f"{entry['preprocessing']!r} preprocessing where {model_name} uses {preprocessing!r}; pass a weights "
            f"file made for {model_name}'s backbone"
        )
    return entry


def _wants_top(model) -> bool:
    """Whether `model` has VGG's fc1/fc2 at their ImageNet shapes (a Fast R-CNN VGG16 head)."""
    kernels = {layer.name: tuple(layer.weights[0].shape) for layer in weighted_layers(model)
               if layer.name in CLASSIFIER_TOP_KERNELS}
    return bool(kernels) and all(CLASSIFIER_TOP_KERNELS[name] == shape for name, shape in kernels.items())


def load_weights(model, weights: str | os.PathLike, *, model_name: str, config=None,
                 warn_missing: bool = True) -> LoadReport:
    """Load `weights` (a local path or a manifest tag) into `model` and report what happened.

    A tag the model has no entry for may be its backbone's (`backbone_entry`): the backbone's
    classifier file is fetched without its top (with it where the model reuses VGG's fc1/fc2)
    and loaded by layer name into the trunk.

    The report is returned and kept as `model.weights_load_report`; model layers the file
    lacks are also announced with a `UserWarning` unless `warn_missing` is False (fine-tuning,
    whose head is missing from an ImageNet file by design, prints the report instead).
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, a manifest tag or a file path, got {weights!r}")
    path = Path(weights)
    if path.is_file():
        report = load_weights_file(model, path)
    elif (backbone := backbone_entry(model_name, str(weights), config)) is not None:
        top = types.SimpleNamespace(include_top=_wants_top(model))
        report = load_weights_file(model, fetch_entry(backbone["model"], str(weights), config=top))
    else:
        entry = find_entry(model_name, str(weights))
        if entry["format"] in IMPORTERS:
            path = fetch_entry(model_name, str(weights), config=config)
            report = IMPORTERS[entry["format"]](model, path)
        elif entry["format"] not in BUILTIN_FORMATS:
            what = "a TF checkpoint archive" if entry["format"] == "tf_checkpoint_archive" else f"in {entry['format']!r} format"
            raise ValueError(
                f"weights {model_name}.{weights} are {what}; no importer is registered for "
                f"that format (zoo.weights.register_importer), so they cannot be loaded"
            )
        else:
            report = load_weights_file(model, fetch_entry(model_name, str(weights), config=config))
    if report.missing and warn_missing:
        warnings.warn(str(report), UserWarning, stacklevel=3)
    model.weights_load_report = report
    return report


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
TORCH_SUFFIXES = (".pth", ".pt")
# A checkpoint's floats barely compress (DeepLab's archives extract to about 1.1 times their
# size); an archive that extracts to 100 times its size is a decompression bomb, not weights.
ARCHIVE_EXPANSION_LIMIT = 100
ARCHIVE_MINIMUM_LIMIT = 16 * 2**20


def archive_byte_limit(archive: str | os.PathLike) -> int:
    """How many bytes `archive` may extract to: `$ZOO_MAX_ARCHIVE_BYTES` when set, else
    `ARCHIVE_EXPANSION_LIMIT` times its size, at least `ARCHIVE_MINIMUM_LIMIT`."""
    setting = os.environ.get(ENV_MAX_ARCHIVE_BYTES)
    if setting:
        try:
            return int(setting)
        except ValueError:
            raise ValueError(f"{ENV_MAX_ARCHIVE_BYTES} must be a number of bytes, got {setting!r}") from None
    return max(ARCHIVE_MINIMUM_LIMIT, ARCHIVE_EXPANSION_LIMIT * os.path.getsize(archive))


def extract_archive(archive: str | os.PathLike, directory: str | os.PathLike, *, max_bytes: int | None = None) -> Path:
    """Extract the `.tar.gz` `archive` into `directory`, which must not exist yet; returns it.

    Every member is checked before anything is written: plain files and folders only (no
    links or devices), no absolute names or `..`, and at most `max_bytes` bytes in all
    (default `archive_byte_limit(archive)`; the count stops as soon as it is passed, so a bomb
    costs no more than the limit to read). The members go to a temporary folder beside
    `directory`, renamed into place at the end: on any error nothing is left.

    Raises:
      ValueError: the archive is unreadable, unsafe or over the limit (the message says which,
        and how to raise the limit).
      FileExistsError: `directory` exists.
    """
    archive, directory = Path(archive), Path(directory)
    limit = archive_byte_limit(archive) if max_bytes is None else int(max_bytes)
    if directory.exists():
        raise FileExistsError(f"extract_archive: {directory} exists; give a new folder to extract {archive} into")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            total, members = 0, []
            for member in tar:
                name = Path(member.name)
                if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                    raise ValueError(
                        f"archive {archive}: refusing member {member.name!r} (absolute, outside the archive, "
                        f"or not a plain file or folder)"
                    )
                total += member.size
                if total > limit:
                    raise ValueError(
                        f"archive {archive} ({os.path.getsize(archive):,} bytes) extracts to more than {limit:,} "
                        f"bytes (a decompression bomb?); refused before extracting. If you trust it, raise the limit "
                        f"with {ENV_MAX_ARCHIVE_BYTES}=BYTES (or max_bytes=)"
                    )
                members.append(member)
            tar.extractall(staging, members=members, filter="data")
        os.replace(staging, directory)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"archive {archive} is not a readable .tar.gz: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def load_weights_file(model, path: str | os.PathLike) -> LoadReport:
    """Load a `.h5` (by layer name), `.weights.h5` or `.keras` file into `model`; a checkpoint
    archive (`.tar.gz`) goes to the `tf_checkpoint_archive` importer, a PyTorch state dict
    (`.pth`, `.pt`) to the `torchvision` one."""
    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        if "torchvision" not in IMPORTERS:
            raise ValueError(f"weights file {path} is a PyTorch state dict; no importer is registered for it")
        return IMPORTERS["torchvision"](model, path)
    if path.name.endswith(ARCHIVE_SUFFIXES):
        if "tf_checkpoint_archive" not in IMPORTERS:
            raise ValueError(f"weights file {path} is a checkpoint archive; no importer is registered for it")
        return IMPORTERS["tf_checkpoint_archive"](model, path)
    if path.name.endswith((".weights.h5", ".keras")):
        file_layers = _keras3_file_layers(path)
        if file_layers is not None and set(file_layers) != {layer.name for layer in _leaf_layers(model)}:
            # Another model's file (a classifier's, into a detector's trunk): by layer name.
            return _assign_by_name(_leaf_layers(model), file_layers, path)
        # Keras assigns layer by layer and stops at the first mismatch, so a refused file would
        # leave the model half loaded: keep every value, and put them back on any failure.
        snapshot = [variable.numpy() for variable in model.weights]
        try:
            model.load_weights(str(path))
        except BaseException as error:
            for variable, value in zip(model.weights, snapshot):
                variable.assign(value)
            if isinstance(error, (ValueError, KeyError, OSError, zipfile.BadZipFile)):
                problem = file_problem(path)
                what = (f"cannot be read (truncated or not a Keras file? {problem})" if problem
                        else f"does not fit the model: {_first_line(error)}")
                raise ValueError(f"weights file {path} {what}; the model is unchanged") from error
            raise
        names = [layer.name for layer in model.layers if layer.weights]
        return LoadReport(source=str(path), loaded=names)
    if path.suffix == ".h5":
        return load_h5_by_name(model, path)
    raise ValueError(
        f"weights file {path} must end in .h5 (keras.applications format), .weights.h5, .keras, .tar.gz "
        f"(a TF-slim checkpoint archive) or .pth (a torchvision state dict)"
    )


def _first_line(error) -> str:
    """Keras's loading error without the dump of weight values it carries."""
    text = str(error).strip()
    shapes = re.search(r"variable\.shape=\([^)]*\), Received: value\.shape=\([^)]*\)", text)
    first = text.splitlines()[0] if text else type(error).__name__
    return f"{first} {shapes.group(0)}" if shapes else first


def weighted_layers(model):
    """Every layer with weights, looking inside nested models (a backbone inside a detector) but
    not inside composite layers (`layers.ASPP` comes whole, as a Keras 2 `.h5` file holds it):
    the layers whose names a Keras 2 `.h5` file and the TF-slim rules (`zoo.slim.names`) go
    by. `_leaf_layers` walks a Keras 3 file's layers, `layers.compat.flatten_layers` every one."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from weighted_layers(layer)
        elif layer.weights:
            yield layer


# Layers keras.applications leaves unnamed, named in the zoo: Xception's residual projections.
_NAMED_IN_THE_ZOO = {"conv": re.compile(r"^block(\d+)_residual_conv$"), "bn": re.compile(r"^block(\d+)_residual_bn$")}
_UNNAMED_IN_KERAS = {"conv": re.compile(r"^conv2d(_\d+)?$"), "bn": re.compile(r"^batch_normalization(_\d+)?$")}


def unnamed_layer_aliases(model_layers: list[str], file_layers: list[str]) -> dict[str, str]:
    """`{model layer: file layer}` for layers keras.applications did not name.

    keras.applications' Xception leaves its four residual 1x1 projections and their batch norms
    unnamed, so its published `.h5` holds them under session-dependent names (`conv2d_1` ...
    `conv2d_4`, `batch_normalization_1` ... `_4`); the zoo names them `block{k}_residual_conv`
    and `_bn` (k = 2, 3, 4, 13). The file lists layers in the order they were created, which is
    block order, so the k-th unnamed layer of a kind is the k-th residual block's. Paired only
    when the counts agree; otherwise nothing is aliased and the layers are reported missing.
    """
    aliases = {}
    for kind, named_pattern in _NAMED_IN_THE_ZOO.items():
        named = sorted((int(m[1]), name) for name in model_layers if (m := named_pattern.match(name)))
        if not named or any(name in file_layers for _, name in named):
            continue
        unnamed = [name for name in file_layers if _UNNAMED_IN_KERAS[kind].match(name)]
        if len(unnamed) == len(named):
            aliases.update({name: file_name for (_, name), file_name in zip(named, unnamed)})
    return aliases


def _leaf_layers(model):
    """Every layer that holds weights and has no sublayers: the layers of a Keras 3 weights file
    (whose `vars` groups are per leaf layer), looking inside nested models and composite layers."""
    from layers import compat  # here: this module alone downloads without TensorFlow

    seen = set()
    for layer in model.layers:
        for sublayer in compat.flatten_layers(layer, include_self=True, recursive=True):
            if id(sublayer) in seen or not sublayer.weights:
                continue
            seen.add(id(sublayer))
            if not compat.flatten_layers(sublayer, include_self=False, recursive=False):
                yield sublayer


def _keras3_file_layers(path: Path) -> dict[str, list] | None:
    """`{layer name: its arrays in order}` of a Keras 3 `.weights.h5` or `.keras` file, read from
    the `vars` groups under `layers/` (each carries its layer's name); None when the file cannot
    be read (the caller's loading then says why) or is a Keras without layer names in the file."""
    import h5py

    def read(handle):
        values = {}

        def visit(name, item):
            if isinstance(item, h5py.Group) and name.rsplit("/", 1)[-1] == "vars" and len(item):
                if "name" not in item.attrs:
                    raise KeyError(name)
                values.setdefault(str(item.attrs["name"]), [item[str(i)][()] for i in range(len(item))])

        if "layers" in handle:
            handle["layers"].visititems(visit)
        return values

    try:
        if path.name.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                content = io.BytesIO(archive.read("model.weights.h5"))
            with h5py.File(content, "r") as handle:
                return read(handle)
        with h5py.File(path, "r") as handle:
            return read(handle)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def file_layer_names(path: str | os.PathLike) -> list[str] | None:
    """The names of the layers with weights in a weights file (`.h5` in keras.applications'
    layout, `.weights.h5`, `.keras`), without loading it into a model; None for a checkpoint
    archive or a file that cannot be read."""
    import h5py

    path = Path(path)
    if path.name.endswith((".weights.h5", ".keras")):
        layers = _keras3_file_layers(path)
        return None if layers is None else list(layers)
    if path.suffix != ".h5":
        return None
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "layer_names" not in handle.attrs else handle
            names = [raw.decode("utf8") if isinstance(raw, bytes) else str(raw) for raw in group.attrs["layer_names"]]
            return [name for name in names if len(group[name].attrs.get("weight_names", []))]
    except (OSError, KeyError):
        return None


def load_h5_by_name(model, path: str | os.PathLike) -> LoadReport:
    """Load a keras.applications-style (Keras 2 HDF5) weights file into `model` by layer name.

    Raises:
      ValueError: a layer whose weights in the file have other shapes or another count.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"weights file {path} cannot be read as HDF5 (truncated or not an .h5 file?): {error}"
        ) from error
    with handle:
        group = handle["model_weights"] if "layer_names" not in handle.attrs else handle
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path} is not a Keras HDF5 weights file (no 'layer_names')")
        file_layers = {}
        for raw in group.attrs["layer_names"]:
            name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
            weight_names = [
                w.decode("utf8") if isinstance(w, bytes) else str(w)
                for w in group[name].attrs.get("weight_names", [])
            ]
            if weight_names:
                file_layers[name] = [group[name][w][()] for w in weight_names]
    aliases = unnamed_layer_aliases([layer.name for layer in weighted_layers(model)], list(file_layers))
    return _assign_by_name(weighted_layers(model), file_layers, path, aliases=aliases)


def _assign_by_name(layers, file_layers: dict, path, *, aliases: dict | None = None) -> LoadReport:
    """Gives each of `layers` the arrays `file_layers` holds under its name (or its alias), once
    every shape has been checked, and reports the layers on either side that found no partner.

    Raises:
      ValueError: a layer whose weights in the file have other shapes or another count.
    """
    report = LoadReport(source=str(path))
    file_layers, aliases = dict(file_layers), aliases or {}
    assignments = []
    for layer in layers:
        values = file_layers.pop(aliases.get(layer.name, layer.name), None)
        if values is None:
            report.missing.append(layer.name)
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(
                f"{path}: layer {layer.name!r} has weights of shapes {got} in the file, "
                f"the model expects {expected}"
            )
        assignments.append((layer, values))
    # Assign only once every layer has been checked, so a bad file changes nothing.
    for layer, values in assignments:
        layer.set_weights(values)
        report.loaded.append(layer.name)
    report.unused = sorted(file_layers)
    return report
