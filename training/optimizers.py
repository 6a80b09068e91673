"""Optimizers and learning-rate schedules: SGD with momentum, Adam, AdamW; step, poly, cosine.

Every schedule can start with a linear warm-up and is a registered, serializable
`keras.optimizers.schedules.LearningRateSchedule`, so an optimizer saved inside `model.keras`
comes back with its schedule. Step counts are optimizer iterations (batches), not epochs.

    >>> schedule = WarmupSchedule("poly", 0.007, total_steps=30_000, warmup_steps=500)
    >>> optimizer = make_optimizer("sgd", schedule, momentum=0.9)

Papers: DeepLab's "poly" policy (Chen et al., https://arxiv.org/abs/1606.00915, section 4.1:
`base * (1 - step / total) ** 0.9`); cosine annealing (Loshchilov and Hutter, SGDR,
https://arxiv.org/abs/1608.03983); warm-up (Goyal et al., https://arxiv.org/abs/1706.02677).
"""

from __future__ import annotations

import math

import keras
from keras import ops

SCHEDULES = ("constant", "step", "poly", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")


@keras.saving.register_keras_serializable(package="zoo")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule with an optional linear warm-up.

    Args:
      kind: "constant"; "step" (multiply by `decay_rate` at each of `boundaries`, as the
        classic ImageNet recipes divide by 10); "poly" (`base * (1 - t) ** power`, DeepLab's
        0.9); "cosine" (half a cosine from `base` to `min_learning_rate`). `t` runs from 0 at
        the end of the warm-up to 1 at `total_steps`.
      base_learning_rate: the rate after the warm-up.
      total_steps: the training length in optimizer steps ("poly" and "cosine" need it).
      warmup_steps: steps of the linear ramp from `warmup_start * base` to `base`.
      boundaries: the steps at which "step" decays.
      decay_rate: the factor "step" applies at each boundary.
      power: the exponent of "poly".
      min_learning_rate: where "poly" and "cosine" end.
    """

    def __init__(
        self,
        kind="constant",
        base_learning_rate=0.01,
        *,
        total_steps=None,
        warmup_steps=0,
        warmup_start=0.1,
        boundaries=(),
        decay_rate=0.1,
        power=0.9,
        min_learning_rate=0.0,
    ):
        if kind not in SCHEDULES:
            raise ValueError(f"kind must be one of {SCHEDULES}, got {kind!r}")
        if not base_learning_rate > 0:
            raise ValueError(f"base_learning_rate must be positive, got {base_learning_rate!r}")
        if kind in ("poly", "cosine") and (total_steps is None or total_steps <= warmup_steps):
            raise ValueError(
                f"the {kind!r} schedule needs total_steps greater than warmup_steps "
                f"({warmup_steps}), got {total_steps!r}"
            )
        if warmup_steps < 0 or not 0 <= warmup_start <= 1:
            raise ValueError(
                f"warmup_steps must be >= 0 and warmup_start in [0, 1], got {warmup_steps!r}, {warmup_start!r}"
            )
        boundaries = tuple(int(b) for b in boundaries)
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"boundaries must be increasing, got {boundaries}")
        self.kind = kind
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        self.boundaries = boundaries
        self.decay_rate = float(decay_rate)
        self.power = float(power)
        self.min_learning_rate = float(min_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        base = self.base_learning_rate
        if self.kind == "constant":
            rate = ops.convert_to_tensor(base, "float32")
        elif self.kind == "step":
            passed = sum(ops.cast(step >= boundary, "float32") for boundary in self.boundaries)
            rate = base * ops.power(self.decay_rate, ops.convert_to_tensor(passed, "float32"))
        else:
            span = float(self.total_steps - self.warmup_steps)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            low = self.min_learning_rate
            if self.kind == "poly":
                rate = low + (base - low) * ops.power(1.0 - progress, self.power)
            else:
                rate = low + (base - low) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps:
            ramp = self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
            rate = ops.where(step < self.warmup_steps, base * ramp, rate)
        return rate

    def get_config(self):
        return {
            "kind": self.kind,
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
            "boundaries": list(self.boundaries),
            "decay_rate": self.decay_rate,
            "power": self.power,
            "min_learning_rate": self.min_learning_rate,
        }


def make_optimizer(
    name="sgd",
    learning_rate=0.01,
    *,
    momentum=0.9,
    weight_decay=None,
    clipnorm=None,
):
    """One of the optimizers the classic recipes use.

    Args:
      name: "sgd" (with momentum, Nesterov off, as Caffe), "adam" or "adamw" (Keras 3's
        decoupled weight decay; tensorflow-addons' AdamW is end-of-life).
      learning_rate: a float or a `LearningRateSchedule` such as `WarmupSchedule`.
      momentum: SGD's momentum.
      weight_decay: AdamW's decoupled decay (default 1e-4 there). For SGD and Adam, weight
        decay is an L2 loss on the kernels (`training.regularization.apply_weight_decay`), as
        DeepLab and Caffe apply it, so it is refused here to avoid applying it twice.
      clipnorm: clip each gradient to this norm (None: no clipping).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if name != "adamw" and weight_decay:
        raise ValueError(
            f"weight_decay is AdamW's decoupled decay; for {name!r} use "
            "training.regularization.apply_weight_decay (an L2 loss on the kernels)"
        )
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, clipnorm=clipnorm)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, clipnorm=clipnorm)
    optimizer = keras.optimizers.AdamW(
        learning_rate, weight_decay=1e-4 if weight_decay is None else weight_decay, clipnorm=clipnorm
    )
    # Decoupled decay on kernels only, like the L2 path: biases and batch-norm scales and
    # offsets are left alone.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
