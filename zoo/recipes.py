"""Default training recipes, as data: what `zoo train` uses for every flag a user leaves out.

A recipe is a model family's optimizer, learning rate, schedule, warm-up, weight decay,
batch-norm mode, batch size and, for detectors, RoIs sampled per image. Each registered model
carries one (`zoo.describe(name).recipe`, shown by `zoo describe`); `zoo train` prints the
recipe it resolved and stores it in `run.json`.

Scaling with the run: the warm-up is a fraction of the run's steps (so a 3-epoch run and a
30-epoch run both warm up for their first few per cent), "poly" and "cosine" decay over the
run's steps, and with SGD a batch size other than the recipe's scales the learning rate
linearly (Goyal et al., https://arxiv.org/abs/1706.02677). Adam's rate is left as it is.

Where the values come from:
- classification: SGD with momentum 0.9, cosine annealing (SGDR, https://arxiv.org/abs/1608.03983),
  the ImageNet recipes' momentum; 0.01 at batch 16 (0.1 at batch 256 scaled down, ResNet's).
- DeepLab-v3+: the paper's poly schedule (power 0.9), with Adam at 3e-3 and a 5% warm-up rather
  than SGD 0.007, because SGD 0.007 was set for 30k-step runs from ImageNet weights and learns
  too slowly from random weights in the few hundred steps of a CPU run; `--optimizer sgd --lr
  0.007` gives DeepLab's own. Batch norm is fine-tuned, with its statistics re-estimated by
  precise batch norm (`training.precise_bn`), so DeepLab's 0.9997 decay does no harm. The
  standard augmentation (scale 0.75 to 1.25) rather than DeepLab's 0.5 to 2: on a user's 300
  images, DeepLab's reached val mIoU 0.49 after 14 epochs where the standard one (see
  `bench/voc_cli.py`) learns faster; DeepLab's is `augmentation="deeplab"`.
- Fast and Faster R-CNN: Adam at 1e-3, cosine, a 10% warm-up, batch 8 and 32 sampled RoIs per
  image: the settings that reached mAP@0.5 0.93-0.96 in `bench/fast_rcnn_synthetic.py`. The
  paper's SGD 0.001 (0.01 for R50-C4 in detectron2) is for ImageNet-initialised trunks over
  tens of thousands of steps; from random weights its head diverged in a CLI run (issue 15).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A family's default training settings (see the module docstring).

    Attributes:
      optimizer: "sgd", "adam" or "adamw".
      learning_rate: the base rate at `batch_size`.
      schedule: "constant", "step", "poly" or "cosine".
      batch_size: the batch the rate is set for.
      warmup_fraction: the share of the run's steps spent in the linear warm-up.
      momentum: SGD's momentum.
      weight_decay: None for the backbone's own (`training.regularization.default_weight_decay`).
      batch_norm: "fine_tune" or "frozen".
      rois_per_image: detectors: RoIs sampled per image for the head's loss; None otherwise.
      augmentation: "standard" (`training.data.augment`'s defaults: flips, scale 0.75 to 1.25,
        crop, colour jitter) or "deeplab" (DeepLab's scale 0.5 to 2, mean padding, flips).
      source: where the values come from, one line.
    """

    optimizer: str
    learning_rate: float
    schedule: str
    batch_size: int
    warmup_fraction: float = 0.0
    momentum: float = 0.9
    weight_decay: float | None = None
    batch_norm: str = "fine_tune"
    rois_per_image: int | None = None
    augmentation: str = "standard"
    source: str = ""

    def resolve(self, *, epochs: int, **given) -> dict:
        """The settings of one run: the recipe's, replaced by every `given` value that is not None.

        Args:
          epochs: the run's length (the warm-up is `warmup_fraction` of it).
          **given: `optimizer`, `learning_rate`, `schedule`, `batch_size`, `warmup_epochs`,
            `momentum`, `weight_decay`, `batch_norm`, `rois_per_image` as the user gave them
            (None: not given).

        Returns:
          `{"optimizer", "learning_rate", "schedule", "batch_size", "warmup_epochs", "momentum",
          "weight_decay", "batch_norm", "rois_per_image", "given": [names the user set]}`.

        Raises:
          TypeError: a keyword that is not a setting.
        """
        names = ("optimizer", "learning_rate", "schedule", "batch_size", "warmup_epochs", "momentum", "weight_decay",
                 "batch_norm", "rois_per_image")
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(f"Recipe.resolve: unknown setting(s) {unknown}; accepted: {', '.join(names)}")
        chosen = {name: value for name, value in given.items() if value is not None}
        settings = {
            "optimizer": self.optimizer, "schedule": self.schedule, "batch_size": self.batch_size,
            "warmup_epochs": round(self.warmup_fraction * epochs, 4), "momentum": self.momentum,
            "weight_decay": self.weight_decay, "batch_norm": self.batch_norm, "rois_per_image": self.rois_per_image,
        }
        settings.update(chosen)
        if "learning_rate" in chosen:
            settings["learning_rate"] = chosen["learning_rate"]
        else:
            same_optimizer = settings["optimizer"] == self.optimizer
            scale = settings["batch_size"] / self.batch_size if same_optimizer and self.optimizer == "sgd" else 1.0
            settings["learning_rate"] = self.learning_rate * scale
        settings["augmentation"] = self.augmentation
        settings["given"] = sorted(chosen)
        return settings

    def summary(self) -> str:
        """One line: `sgd lr 0.01 (batch 16), cosine, warm-up 0% of the run, ...`."""
        parts = [
            f"{self.optimizer} lr {self.learning_rate:g} (batch {self.batch_size})", f"{self.schedule} schedule",
            f"warm-up {self.warmup_fraction:.0%} of the run",
            "weight decay of the backbone" if self.weight_decay is None else f"weight decay {self.weight_decay:g}",
            f"batch norm {self.batch_norm}",
        ]
        if self.rois_per_image:
            parts.append(f"{self.rois_per_image} RoIs per image")
        parts.append(f"{self.augmentation} augmentation")
        return ", ".join(parts)


CLASSIFICATION = Recipe(
    optimizer="sgd", learning_rate=0.01, schedule="cosine", batch_size=16,
    source="SGD momentum 0.9 with cosine annealing; ResNet's 0.1 at batch 256, scaled to batch 16",
)
DEEPLAB = Recipe(
    optimizer="adam", learning_rate=3e-3, schedule="poly", batch_size=8, warmup_fraction=0.05,
    source="DeepLab's poly schedule and per-backbone weight decay; Adam 1e-3 for short runs from random weights",
)
DETECTION = Recipe(
    optimizer="adam", learning_rate=1e-3, schedule="cosine", batch_size=8, warmup_fraction=0.1, rois_per_image=32,
    source="the settings of bench/fast_rcnn_synthetic.py's runs (mAP@0.5 0.93-0.96)",
)
# Each task's recipe, unless a family registers its own (`zoo.register(..., recipe=...)`).
DEFAULT_RECIPES = {"classification": CLASSIFICATION, "detection": DETECTION, "segmentation": DEEPLAB}
