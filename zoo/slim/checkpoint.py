"""Import DeepLab's TF-slim (TF1) checkpoints into the zoo's DeepLab-v3+ models, with a report.

The DeepLab model zoo publishes TF1 checkpoints whose variables are named by slim scopes:
`resnet_v1_101/block1/unit_1/bottleneck_v1/conv1/weights` (backbone), `aspp0/weights`,
`image_pooling/BatchNorm/gamma`, `decoder/feature_projection0/BatchNorm/moving_mean`,
`decoder/decoder_conv0_depthwise/depthwise_weights`, `logits/semantic/biases` (head).

The names come from `zoo.slim.names`: `head_slim_names` for the ASPP, decoder and logits, and
for the backbone a function `backbone_map(model) -> {keras variable path: slim name}`, by default
`default_backbone_map` (`slim_variable_names` with DeepLab's scope: `resnet_v1_50` /
`resnet_v1_101`, also for the `_beta` stems, `MobilenetV2`, `xception_65`). Backbone variables
that no map names (a ResNet-18, or a ResNet in the keras.applications placement) are listed as
`unmapped` in the report, never silently skipped.

`import_checkpoint_archive(model, path)` is the importer of the manifest's
`tf_checkpoint_archive` entries (the DeepLab model zoo's `.tar.gz` files), registered with
`zoo.weights.register_importer`, so `zoo.build("deeplabv3plus_xception65", weights="voc")` and
`weights="/path/to/archive.tar.gz"` load through it.

Keras and slim lay kernels out alike (`[kh, kw, in, out]`, depthwise `[kh, kw, in, 1]`), so a
value is assigned as it is stored. Nothing is assigned when `strict=True` finds a problem.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

import tensorflow as tf

from zoo import weights as weights_lib
from zoo.slim.names import default_backbone_map, head_slim_names

# Checkpoint entries that are training state, not model weights: never "unexpected".
TRAINING_STATE_SUFFIXES = ("/Momentum", "/ExponentialMovingAverage", "/Adam", "/Adam_1", "/RMSProp", "/RMSProp_1")
TRAINING_STATE_NAMES = ("global_step",)


@dataclasses.dataclass
class SlimLoadReport:
    """What `load_slim_checkpoint` did.

    Attributes:
      loaded: slim names assigned to the model.
      missing: slim names the model needs that the checkpoint lacks (the head's, when only an
        ImageNet backbone checkpoint is given).
      unexpected: checkpoint variables the model has no place for (training state such as
        `global_step` and optimizer slots left out).
      shape_mismatched: `(slim name, checkpoint shape, model shape)` (a `resnet_v1_101`
        checkpoint given to the `_beta` model: its stem differs; a 21-class logits layer
        given to a 3-class model).
      unmapped: Keras variable paths without a slim name (a backbone without a map).
    """

    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    unmapped: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every variable of the model was loaded."""
        return not (self.missing or self.shape_mismatched or self.unmapped)

    def __str__(self) -> str:
        lines = [
            f"slim checkpoint: {len(self.loaded)} loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatched)} shape-mismatched, "
            f"{len(self.unmapped)} without a slim name"
        ]

        def section(title, items, limit=10):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {item}" for item in items[:limit])
                if len(items) > limit:
                    lines.append(f"    ... and {len(items) - limit} more")

        section("missing from the checkpoint", self.missing)
        section("unexpected in the checkpoint", self.unexpected)
        section(
            "shape mismatches (checkpoint vs model)",
            [f"{name}: {list(stored)} vs {list(wanted)}" for name, stored, wanted in self.shape_mismatched],
        )
        section("model variables without a slim name", self.unmapped)
        return "\n".join(lines)


def _is_training_state(name: str) -> bool:
    return name in TRAINING_STATE_NAMES or name.endswith(TRAINING_STATE_SUFFIXES)


def load_slim_checkpoint(
    model,
    path,
    *,
    backbone_map: Callable[..., dict[str, str]] | None = default_backbone_map,
    strict: bool = False,
) -> SlimLoadReport:
    """Assign a DeepLab TF-slim checkpoint's variables to a zoo DeepLab-v3+ model by name.

    Args:
      model: a model built by `zoo.build("deeplabv3plus_...")`.
      path: a TF1 checkpoint prefix (`model.ckpt-30000`) or its directory.
      backbone_map: `(model) -> {keras variable path: slim name}` for the backbone's variables;
        `default_backbone_map` (DeepLab's names) unless given; None loads the head only (the
        backbone's variables are then `unmapped`).
      strict: raise ValueError (assigning nothing) unless every model variable is loaded and
        the checkpoint has nothing unexpected.

    Returns:
      A `SlimLoadReport`; `print(report)` explains it.

    Raises:
      ValueError: the path is not a checkpoint, two variables map to one slim name, or
        `strict` found a problem.

    Example:
      >>> report = load_slim_checkpoint(model, "deeplabv3_pascal_train_aug/model.ckpt")
      >>> print(report)
    """
    try:
        reader = tf.train.load_checkpoint(str(path))
    except (tf.errors.OpError, ValueError) as error:  # OpError: a bogus .index ("not an sstable")
        raise ValueError(f"load_slim_checkpoint: {path} is not a TF checkpoint: {error}") from None
    stored_shapes = reader.get_variable_to_shape_map()

    names = head_slim_names(model)
    if backbone_map is not None:
        backbone = backbone_map(model)
        overlap = sorted(set(backbone) & set(names))
        if overlap:
            raise ValueError(f"load_slim_checkpoint: backbone_map names head variables: {overlap[:5]}")
        names.update(backbone)
    inverse: dict[str, str] = {}
    for keras_path, slim_name in names.items():
        if slim_name in inverse:
            raise ValueError(
                f"load_slim_checkpoint: {inverse[slim_name]} and {keras_path} both map to {slim_name}"
            )
        inverse[slim_name] = keras_path

    report = SlimLoadReport()
    assignments = []
    for variable in model.weights:
        slim_name = names.get(variable.path)
        if slim_name is None:
            report.unmapped.append(variable.path)
        elif slim_name not in stored_shapes:
            report.missing.append(slim_name)
        elif tuple(stored_shapes[slim_name]) != tuple(variable.shape):
            report.shape_mismatched.append((slim_name, tuple(stored_shapes[slim_name]), tuple(variable.shape)))
        else:
            assignments.append((variable, slim_name))
    report.unexpected = sorted(
        name for name in stored_shapes if name not in inverse and not _is_training_state(name)
    )
    if strict and (not report.complete or report.unexpected):
        raise ValueError(f"load_slim_checkpoint(strict=True): nothing was assigned\n{report}")
    # Every value is read before the first is assigned: a corrupt data file leaves the model as it was.
    try:
        values = [reader.get_tensor(slim_name) for _, slim_name in assignments]
    except (tf.errors.OpError, IndexError) as error:  # IndexError: "Read less bytes than requested"
        raise ValueError(
            f"load_slim_checkpoint: {path} cannot be read (a corrupt or cut-short data file?): "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; nothing was assigned"
        ) from None
    for (variable, slim_name), value in zip(assignments, values):
        variable.assign(value.astype(variable.dtype))
        report.loaded.append(slim_name)
    return report


# --------------------------------------------------------------------------- archives


def _safe_extract(archive: Path, directory: Path, *, max_bytes: int | None = None) -> Path:
    """`zoo.weights.extract_archive` into a new folder `directory / "archive"`: plain files and
    folders inside it only, and a size limit (`$ZOO_MAX_ARCHIVE_BYTES`) against decompression
    bombs; returns the folder."""
    return weights_lib.extract_archive(archive, Path(directory) / "archive", max_bytes=max_bytes)


def find_checkpoint_prefix(directory) -> Path:
    """The one TF checkpoint prefix under `directory` (`.../model.ckpt-30000` beside its `.index`).

    Raises:
      ValueError: none, or several (the archive's layout is then ambiguous).
    """
    prefixes = sorted(path.with_suffix("") for path in Path(directory).rglob("*.index"))
    if len(prefixes) != 1:
        found = ", ".join(str(p.relative_to(directory)) for p in prefixes) or "none"
        raise ValueError(f"expected one TF checkpoint (a *.index file) in the archive, found: {found}")
    return prefixes[0]


def as_load_report(report: SlimLoadReport, source) -> weights_lib.LoadReport:
    """The slim report in `zoo.weights.LoadReport` terms (what `zoo.build(weights=...)` keeps):
    `missing` holds the model's missing, shape-mismatched and unmapped variables, `unused` the
    checkpoint's unexpected ones; the full report is kept as `.slim_report`."""
    missing = list(report.missing)
    missing += [f"{name} (checkpoint {list(stored)}, model {list(wanted)})"
                for name, stored, wanted in report.shape_mismatched]
    missing += [f"{path} (no slim name)" for path in report.unmapped]
    result = weights_lib.LoadReport(
        source=str(source), loaded=list(report.loaded), missing=missing, unused=list(report.unexpected)
    )
    result.slim_report = report
    return result


def import_checkpoint_archive(model, path, *, max_bytes: int | None = None) -> weights_lib.LoadReport:
    """The `tf_checkpoint_archive` importer: extract the DeepLab `.tar.gz` to a temporary folder
    (`zoo.weights.extract_archive`, at most `max_bytes`), find its checkpoint and
    `load_slim_checkpoint` it into `model` with DeepLab's names."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="zoo-slim-") as directory:
        if path.is_dir() or Path(f"{path}.index").is_file():
            prefix = find_checkpoint_prefix(path) if path.is_dir() else path
        else:
            prefix = find_checkpoint_prefix(_safe_extract(path, Path(directory), max_bytes=max_bytes))
        report = load_slim_checkpoint(model, prefix)
    return as_load_report(report, path)


weights_lib.register_importer("tf_checkpoint_archive", import_checkpoint_archive)


__all__ = ["SlimLoadReport", "import_checkpoint_archive", "load_slim_checkpoint"]
