"""Pretrained weights: the manifest, verified downloads, and loading by layer name with a report.

`zoo.build(name, weights=...)` takes None, a tag of `weights_manifest.json` (`"imagenet"`) or
the path of a local file:

- `.weights.h5` / `.keras`: Keras 3 files, loaded with `Model.load_weights`.
- `.h5`: the keras.applications (Keras 2) format, loaded *by layer name*: every layer of the
  model whose name is in the file receives that layer's weights. Layers of the model missing
  from the file (a head on an ImageNet backbone) and layers of the file the model lacks (the
  ImageNet classifier under `include_top=False`) are listed in the returned `LoadReport`;
  a weight whose shape differs is an error, never skipped silently.

Downloads go to `$ZOO_HOME/weights` (default `~/.cache/zoo/weights`) under a temporary name,
are checked against the manifest's hash and only then renamed into place, so an interrupted
or corrupt download never sits where a good file is expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import urllib.request
import warnings
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


def manifest_path() -> Path:
    """`$ZOO_WEIGHTS_MANIFEST` if set, else the manifest shipped in the installed package,
    else the one at the repository root (an editable install)."""
    if os.environ.get("ZOO_WEIGHTS_MANIFEST"):
        return Path(os.environ["ZOO_WEIGHTS_MANIFEST"])
    packaged = resources.files("zoo").joinpath(MANIFEST_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / MANIFEST_NAME


def load_manifest(path: str | os.PathLike | None = None) -> list[dict]:
    """The manifest's entries (a list of dicts, one per model and tag)."""
    with open(path or manifest_path(), encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("schema_version") != 1 or not isinstance(manifest.get("entries"), list):
        raise ValueError(f"{path or manifest_path()}: expected schema_version 1 with a list of entries")
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


# --------------------------------------------------------------------------- download


def cache_dir() -> Path:
    return Path(os.environ.get("ZOO_HOME", Path.home() / ".cache" / "zoo")) / "weights"


def file_hash(path: str | os.PathLike, algorithm: str) -> str:
    if algorithm not in HASH_ALGORITHMS:
        raise ValueError(f"hash algorithm must be one of {HASH_ALGORITHMS}, got {algorithm!r}")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, file_name: str, *, hash_algorithm: str, file_hash_value: str, directory=None) -> Path:
    """Download `url` to `directory/file_name` unless a file with the right hash is there.

    The bytes go to a temporary file in the same directory, are hashed, and are renamed into
    place only if the hash matches; otherwise the temporary file is removed and `IOError`
    names the expected and actual hashes.
    """
    directory = Path(directory or cache_dir())
    target = directory / file_name
    if target.is_file() and file_hash(target, hash_algorithm) == file_hash_value:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{file_name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        actual = file_hash(temporary, hash_algorithm)
        if actual != file_hash_value:
            raise IOError(
                f"download of {url} is corrupt: {hash_algorithm} {actual}, expected {file_hash_value}"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


# --------------------------------------------------------------------------- loading


def load_weights(model, weights: str | os.PathLike, *, model_name: str, config=None) -> LoadReport:
    """Load `weights` (a local path or a manifest tag) into `model` and report what happened.

    The report is returned and kept as `model.weights_load_report`; model layers the file
    lacks are also announced with a `UserWarning`.
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, a manifest tag or a file path, got {weights!r}")
    path = Path(weights)
    if not path.is_file():
        entry = find_entry(model_name, str(weights))
        path = fetch(
            entry["url"],
            entry["file_name"],
            hash_algorithm=entry["hash_algorithm"],
            file_hash_value=entry["hash"],
        )
    report = load_weights_file(model, path)
    if report.missing:
        warnings.warn(str(report), UserWarning, stacklevel=3)
    model.weights_load_report = report
    return report


def load_weights_file(model, path: str | os.PathLike) -> LoadReport:
    """Load a `.h5` (by layer name), `.weights.h5` or `.keras` file into `model`."""
    path = Path(path)
    if path.name.endswith((".weights.h5", ".keras")):
        model.load_weights(str(path))
        names = [layer.name for layer in model.layers if layer.weights]
        return LoadReport(source=str(path), loaded=names)
    if path.suffix == ".h5":
        return load_h5_by_name(model, path)
    raise ValueError(
        f"weights file {path} must end in .h5 (keras.applications format), .weights.h5 or .keras"
    )


def _flat_layers(model):
    """Every layer with its own weights, looking inside nested models."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        elif layer.weights:
            yield layer


def load_h5_by_name(model, path: str | os.PathLike) -> LoadReport:
    """Load a keras.applications-style (Keras 2 HDF5) weights file into `model` by layer name.

    Raises:
      ValueError: a layer whose weights in the file have other shapes or another count.
    """
    import h5py

    report = LoadReport(source=str(path))
    with h5py.File(path, "r") as handle:
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
    assignments = []
    for layer in _flat_layers(model):
        values = file_layers.pop(layer.name, None)
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
