"""Fine-tuning: a training run that starts from pretrained weights, frozen as the paper froze it.

    $ zoo train fast_rcnn_vgg16 --weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 \\
          --dataset voc:VOCdevkit/VOC2007 --out runs/frcnn

    >>> tuning = fine_tuning("fast_rcnn_resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels.h5")
    >>> train(builder, source, config=tuning.configure(TrainConfig()), weights=tuning, out_dir="runs/r50c4")

`fine_tuning(model_name, weights)` resolves the weights (everything `zoo.weights.load_weights`
takes: a manifest tag, the backbone's tag for a detector or segmenter, a keras.applications `.h5`
loaded by layer name, a Keras 3 `.weights.h5` or `.keras` of this model or, by layer name, of
another, a TF-slim checkpoint archive for the DeepLab models), says what kind they are, and picks
the layers to freeze. The `FineTuning` it returns is what `training.train(weights=...)` takes
(`training.fit.WeightsInitializer`): called with the built model, it loads the weights, prints
the load report (counts; every name with `list_names`) and returns it for `run.json`.

Kinds of weights:
- "backbone": an ImageNet classifier's (keras.applications ResNet50 or VGG16, with or without
  the top; a backbone's manifest tag): they fill the trunk by layer name, the head keeps its
  initialisation (the report's `missing`), and the classifier's top is left over (`unused`).
- "model": the model's own (a detector's or segmenter's checkpoint, a run's `model.keras`).
- None: not known before loading (a checkpoint archive).

The papers' freezing, used when a detector starts from backbone weights (each part overridable:
`freeze_stages=` / `zoo train --freeze-stages`, `batch_norm=` / `--batch-norm`):

- VGG16 (`fast_rcnn_vgg16`; Faster R-CNN's VGG16 too): conv1_1 ... conv2_2 fixed (`block1_*`,
  `block2_*`: `freeze_stages=2`), conv3_1 and up fine-tuned: Fast R-CNN, section 4.5.
- ResNet-50 (R50-C4: `fast_rcnn_resnet50`, `faster_rcnn_resnet50`): the stem and res2 fixed
  (`conv1_*`, `conv2_*`: `freeze_stages=2`) and every batch norm frozen (`batch_norm="frozen"`:
  inference mode, ImageNet statistics and affine, the conv5 head's too): He et al. 2016,
  appendix A, and Detectron's R-50-C4 (`FREEZE_CONV_BODY_AT: 2`, affine batch norm).

Classifiers and DeepLab models freeze nothing by default: DeepLab fine-tunes every layer from
ImageNet, batch norm included (its `fine_tune_batch_norm=True` at batch 16), and the recipe's
batch-norm setting stands. Starting from a model's own weights changes nothing either.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from layers.detection_contract import CLASS_PROBS
from zoo import weights as weights_lib
from zoo.registry import describe, resolve_config

# The output layer that only a trained model of the task has, never a classifier's trunk (and its
# variable's name in DeepLab's TF-slim checkpoints, as the slim import reports it).
HEAD_LAYERS = {
    "classification": ("predictions",),
    "detection": (CLASS_PROBS,),
    "segmentation": ("logits_semantic", "logits/semantic/weights"),
}


@dataclasses.dataclass(frozen=True)
class Freezing:
    """What a paper kept fixed when it fine-tuned from ImageNet weights.

    Attributes:
      freeze_stages: stages from the stem not trained (`training.regularization.freeze_stages`).
      batch_norm: "frozen" (inference mode, ImageNet statistics and affine), or None for the
        recipe's setting (VGG16 has no batch norm).
      paper: where it comes from, one line.
    """

    freeze_stages: int
    batch_norm: str | None
    paper: str


# (task, backbone) -> the paper's freezing.
PAPER_FREEZING = {
    ("detection", "vgg16"): Freezing(
        freeze_stages=2, batch_norm=None,
        paper="Fast R-CNN (Girshick 2015, sec. 4.5) fine-tunes VGG16 from conv3_1 up: conv1 and conv2 stay fixed",
    ),
    ("detection", "resnet50"): Freezing(
        freeze_stages=2, batch_norm="frozen",
        paper="R50-C4 (He et al. 2016, appendix A; Detectron): the stem and res2 fixed, batch norm frozen",
    ),
}


def paper_freezing(model_name: str, overrides: dict | None = None) -> Freezing | None:
    """The freezing the paper used for `model_name` (built with `overrides`) from ImageNet
    weights, or None when it froze nothing."""
    config = resolve_config(model_name, **(overrides or {}))
    return PAPER_FREEZING.get((describe(model_name).task, getattr(config, "backbone", None)))


def weights_kind(model_name: str, weights, overrides: dict | None = None) -> str | None:
    """"backbone" (a classifier's weights for the trunk), "model" (the model's own) or None
    (a checkpoint archive: not known before loading), read from the manifest or the file's layer
    names without loading anything.

    Raises:
      ValueError: `weights` is neither a file nor a tag of the model or of its backbone.
    """
    task = describe(model_name).task
    if Path(weights).is_file():
        names = weights_lib.file_layer_names(weights)
        if names is None:
            return None
        return "model" if any(head in names for head in HEAD_LAYERS[task]) else "backbone"
    config = resolve_config(model_name, **(overrides or {}))
    if weights_lib.backbone_entry(model_name, str(weights), config) is not None:
        return "backbone"
    entry = weights_lib.find_entry(model_name, str(weights))  # raises, naming the tags there are
    return "backbone" if task != "classification" and entry["classes"]["dataset"] == "imagenet" else "model"


def _stages_text(backbone: str | None, stages: int) -> str:
    """`2 stages (block1_*, block2_*)`: the layer names `training.regularization.STAGE_PATTERNS` freezes."""
    prefix = "block" if backbone and backbone.startswith("vgg") else "conv"
    return f"{stages} stages ({', '.join(f'{prefix}{k}_*' for k in range(1, stages + 1))})"


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """How a run starts from pretrained weights; what `training.train(weights=...)` takes.

    Attributes:
      model_name: the registered model.
      weights: as given (a tag or a path).
      source: what names the weights in `run.json` and for `resume`: the tag, or the file's
        absolute path.
      kind: "backbone", "model" or None (see the module docstring).
      backbone: the model's backbone (None for a classifier), which names the frozen stages.
      freeze_stages, batch_norm: the run's settings (the caller's where given, else the paper's
        for backbone weights), None to leave the run's configuration as it is.
      paper: the paper's freezing that was used ("" when none was).
      list_names: print every loaded, missing and unused layer, not only their counts.
      verbose: print the load report (to stderr) when the weights are loaded.
    """

    model_name: str
    weights: str
    source: str
    kind: str | None
    backbone: str | None = None
    freeze_stages: int | None = None
    batch_norm: str | None = None
    paper: str = ""
    list_names: bool = False
    verbose: bool = True

    def configure(self, config):
        """`config` (a `training.TrainConfig`) with this fine-tuning's frozen stages and batch norm."""
        changes = {"freeze_stages": self.freeze_stages, "batch_norm": self.batch_norm}
        return dataclasses.replace(config, **{key: value for key, value in changes.items() if value is not None})

    def summary(self) -> str:
        """One line: where the weights come from, what is frozen, and why."""
        what = {"backbone": "a classifier's weights, for the trunk by layer name (the head starts from its "
                            "initialisation)", "model": f"{self.model_name}'s own weights"}.get(self.kind, "weights")
        frozen = [_stages_text(self.backbone, self.freeze_stages)] if self.freeze_stages else []
        frozen += ["batch norm"] if self.batch_norm == "frozen" else []
        why = f"; the paper's: {self.paper} (--freeze-stages / --batch-norm override)" if self.paper else ""
        frozen_text = ", ".join(frozen) or "nothing"
        return f"fine-tuning: {self.model_name} from {self.weights}, {what}; frozen: {frozen_text}{why}"

    def __call__(self, model) -> dict:
        """Loads the weights into the built `model`; returns the load report for `run.json`:
        `{"source", "file", "kind", "loaded" (a count), "missing", "unused"}` (layer names)."""
        report = weights_lib.load_weights(model, self.weights, model_name=self.model_name,
                                          config=getattr(model, "zoo_config", None), warn_missing=False)
        kind = self.kind
        if kind is None:  # a checkpoint archive: its head was loaded, or it is a backbone's
            heads = HEAD_LAYERS[describe(self.model_name).task]
            kind = "model" if set(heads) & set(report.loaded) else "backbone"
        if self.verbose:
            print(report_text(report, source=self.weights, names=self.list_names), file=sys.stderr, flush=True)
        return {"source": self.source, "file": report.source, "kind": kind, "loaded": len(report.loaded),
                "missing": list(report.missing), "unused": list(report.unused),
                **({"paper": self.paper} if self.paper else {})}


def report_text(report: weights_lib.LoadReport, *, source: str, names: bool = False) -> str:
    """`weights SOURCE: N layers loaded, M missing from the file (left as initialised), K in the
    file but not in the model`, and with `names` one line per list naming every layer."""
    text = (f"weights {source}: {len(report.loaded)} layers loaded, {len(report.missing)} missing from the file "
            f"(left as initialised), {len(report.unused)} in the file but not in the model")
    if report.source != str(source):
        text += f" (read from {report.source})"
    if not names:
        return text + ("; --weights-report names them" if report.missing or report.unused else "")
    for label, items in (("loaded", report.loaded), ("missing", report.missing), ("unused", report.unused)):
        text += f"\n  {label}: {', '.join(items) if items else 'none'}"
    return text


def fine_tuning(model_name: str, weights, *, overrides: dict | None = None, freeze_stages: int | None = None,
                batch_norm: str | None = None, list_names: bool = False, verbose: bool = True) -> FineTuning:
    """How `model_name` (built with `overrides`) fine-tunes from `weights`.

    Args:
      weights: a manifest tag of the model or of its backbone, or a weights file
        (`zoo.weights.load_weights_file`).
      freeze_stages, batch_norm: the caller's settings (None: not given). Each one given wins;
        each one not given is the paper's when the weights are a backbone's (`PAPER_FREEZING`),
        else None (the run's configuration stands).
      list_names, verbose: see `FineTuning`.

    Raises:
      ValueError: `weights` is neither a file nor a tag of the model or of its backbone.

    Example:
      >>> fine_tuning("fast_rcnn_resnet50", "imagenet").configure(TrainConfig())  # freeze_stages 2, BN frozen
    """
    if not isinstance(weights, (str, Path)):
        raise TypeError(f"weights must be a manifest tag or a file path, got {weights!r}")
    kind = weights_kind(model_name, weights, overrides)
    paper = paper_freezing(model_name, overrides) if kind == "backbone" else None
    used = []
    if freeze_stages is None and paper is not None and paper.freeze_stages:
        freeze_stages = paper.freeze_stages
        used.append("stages")
    if batch_norm is None and paper is not None and paper.batch_norm:
        batch_norm = paper.batch_norm
        used.append("batch norm")
    source = str(Path(weights).resolve()) if Path(weights).is_file() else str(weights)
    backbone = getattr(resolve_config(model_name, **(overrides or {})), "backbone", None)
    return FineTuning(
        model_name=model_name, weights=str(weights), source=source, kind=kind, backbone=backbone,
        freeze_stages=freeze_stages,
        batch_norm=batch_norm, paper=paper.paper if used else "", list_names=list_names, verbose=verbose,
    )
