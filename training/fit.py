"""The trainer: Keras `compile`/`fit` with the callbacks that make a run resumable.

    >>> from training import TrainConfig, train, data
    >>> source = data.synthetic(512, image_size=(64, 64))
    >>> result = train(lambda classes: zoo.build("resnet18", classes=classes, input_shape=(64, 64, 3)),
    ...                source, config=TrainConfig(epochs=3, image_size=(64, 64)), out_dir="runs/r18")

What a run leaves in `out_dir`: `model.keras` (the final model), `best.keras` (the best on the
monitored validation metric), `backup/epoch-NNNN/` (what `resume=True` starts from),
`history.json`, `run.json` (the configuration, the class list, the model's weight shapes and
the pretrained weights it started from with their load report, written when the run starts and
again at its end) and `logs/` (TensorBoard). A resumed run must agree with `run.json` in every
`RESUME_SETTINGS` entry (the model, its weights' shapes, the pretrained weights' source, the
class list and the optimisation settings; the number of epochs may change).

Pretrained weights (`train(weights=...)`) arrive as a `WeightsInitializer`, since `training`
never imports `zoo`: `zoo.finetune.fine_tuning(...)` makes one. It is called with the built
model before anything is frozen, and only when the run starts: a resumed run takes its weights
from the backup, never from the pretrained file again.

Determinism: the data of epoch `e` is a function of `(seed, e)` alone (shuffling and
augmentation use stateless seeds), and a backup holds the weights, the optimizer's state and
every stateful callback's state, so a run resumed from the backup of epoch `e` sees the same
batches from there on as an uninterrupted run and ends at the same place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

from layers import compat
from layers.image_resize import RESIZE_MODES
from training import data as data_lib
from training.adversarial import AdversarialModel
from training.callbacks import Backup, BestCheckpoint, EarlyStopping, StalledValidation, StopOnNaN
from training.callbacks import save_model_atomically, write_atomically
from training.data.examples import VALIDATION_FRACTION, split_validation
from training.distribute import is_chief, make_strategy
from training.optimizers import OPTIMIZERS, SCHEDULES, WarmupSchedule, make_optimizer
from training.precise_bn import PreciseBatchNorm, trainable_batch_norms
from training.precision import POLICIES as MIXED_PRECISION
from training.precision import resolve_mixed_precision
from training.regularization import BATCH_NORM_MODES, apply_weight_decay, default_weight_decay
from training.regularization import freeze_stages, set_batch_norm
from training.tasks import get_task

JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message says where and which backup is the last good one."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
      epochs, batch_size: the global batch (split across replicas under a strategy).
      image_size: `(height, width)` the images are resized to.
      resize: how: "stretch" (each axis to its side, the aspect ratio lost: keras.applications'
        classifiers) or "letterbox" (the aspect ratio kept, the image fitted inside `image_size`
        and padded at the bottom and right: what detectors and DeepLab do); see
        `layers.image_resize`. Evaluation and prediction must resize the same way, so it is part
        of `run.json`'s config and of what a resumed run must agree on. Each model's own is
        `zoo.describe(name).resize`; this default is the classifiers'.
      optimizer: "sgd" (momentum `momentum`), "adam" or "adamw".
      learning_rate, schedule, warmup_epochs: the base rate, "constant" / "step" / "poly" /
        "cosine" (`training.optimizers.WarmupSchedule`) and a linear warm-up; "step" divides
        by 10 at 1/2 and 3/4 of the run.
      weight_decay: L2 on kernels; None takes the backbone's DeepLab default (1e-4 ResNet,
        4e-5 MobileNet-v2 / Xception, 5e-4 VGG), 0 turns it off. AdamW decays decoupled.
      batch_norm: "fine_tune" or "frozen" (statistics fixed: small batches).
      precise_bn: re-estimate the batch-norm statistics from this many training batches at
        the end of the run (fewer at each earlier epoch), before validation
        (`training.precise_bn`); 0 turns it off and leaves the moving averages of training.
      freeze_stages: how many backbone stages, from the stem, are not trained.
      augment: flips, scale, crop and colour jitter on the training data: True for
        `training.data.augment`'s defaults, False for none, or a dict of its arguments (e.g.
        `training.segmentation.DEEPLAB_AUGMENTATION`).
      validation_fraction: held out of the training source when no validation source is given.
      early_stopping_patience: epochs without improvement of the task's monitor before stopping.
      mixed_precision: "auto" (bfloat16 where the CPU multiplies it natively, AMX; else float32:
        `training.precision`), None or "float32", "mixed_float16" (loss scaling on) or
        "mixed_bfloat16". `run.json` records the policy it resolved to.
      jit_compile: "auto" (Keras's choice: XLA on a GPU), "on" or "off"; every registered
        model's training step compiles with XLA (`tests/training/test_xla.py`).
      strategy: "default", "mirrored" or "multi_worker" (`training.distribute`).
      adversarial_epsilon, adversarial_ratio: FGSM training when epsilon > 0 (pixel units).
      seed: every random choice of the run derives from it.
      backup_every: back up every this many epochs (and after the last).
    """

    epochs: int = 10
    batch_size: int = 16
    image_size: tuple[int, int] = (224, 224)
    resize: str = "stretch"
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float | None = None
    batch_norm: str = "fine_tune"
    precise_bn: int = 16
    freeze_stages: int = 0
    augment: bool | dict = True
    validation_fraction: float = VALIDATION_FRACTION
    early_stopping_patience: int | None = None
    mixed_precision: str | None = "auto"
    jit_compile: str = "auto"
    strategy: str = "default"
    adversarial_epsilon: float = 0.0
    adversarial_ratio: float = 0.5
    seed: int = 0
    backup_every: int = 1

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, "epochs", "a positive integer"),
            (self.batch_size >= 1, "batch_size", "a positive integer"),
            (len(self.image_size) == 2 and min(self.image_size) >= 1, "image_size", "(height, width)"),
            (self.resize in RESIZE_MODES, "resize", f"one of {RESIZE_MODES}"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
            (self.learning_rate > 0, "learning_rate", "positive"),
            (self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}"),
            (self.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
            (self.weight_decay is None or self.weight_decay >= 0, "weight_decay", "None or >= 0"),
            (self.batch_norm in BATCH_NORM_MODES, "batch_norm", f"one of {BATCH_NORM_MODES}"),
            (isinstance(self.precise_bn, int) and not isinstance(self.precise_bn, bool) and self.precise_bn >= 0,
             "precise_bn", "a number of batches >= 0"),
            (self.freeze_stages >= 0, "freeze_stages", ">= 0"),
            (0 <= self.validation_fraction < 1, "validation_fraction", "in [0, 1)"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             "early_stopping_patience", "None or >= 1"),
            (self.mixed_precision in MIXED_PRECISION, "mixed_precision", f"one of {MIXED_PRECISION}"),
            (self.jit_compile in JIT_COMPILE, "jit_compile", f"one of {tuple(JIT_COMPILE)}"),
            (self.adversarial_epsilon >= 0, "adversarial_epsilon", ">= 0 (pixel units)"),
            (self.backup_every >= 1, "backup_every", "a positive integer"),
            (isinstance(self.augment, (bool, dict)), "augment", "True, False or a dict of augment's arguments"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")


@runtime_checkable
class WeightsInitializer(Protocol):
    """Pretrained weights for `train(weights=...)` (`zoo.finetune.FineTuning` is one).

    Attributes:
      source: names the weights (a manifest tag, a file's path): kept in `run.json` and compared
        by `resume`, as part of what the run is.

    Calling it with the built model loads the weights into it and returns the load report, a
    JSON-able dict such as `{"source", "loaded": count, "missing": [layer, ...], "unused": [...]}`,
    which `run.json` keeps under "weights".
    """

    source: str

    def __call__(self, model: keras.Model) -> dict: ...


@dataclasses.dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    out_dir: Path
    class_names: tuple[str, ...]
    best_epoch: int | None
    best_value: float | None
    monitor: str
    initial_epoch: int


def _schedule(config: TrainConfig, steps_per_epoch: int) -> WarmupSchedule:
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    options = dict(total_steps=total, warmup_steps=min(warmup, total - 1))
    if config.schedule == "step":
        options["boundaries"] = (total // 2, (3 * total) // 4)
    return WarmupSchedule(config.schedule, config.learning_rate, **options)


def _epochs_dataset(source, task, config, first_epoch, steps_per_epoch):
    """The training batches of epochs `first_epoch ...`, each a function of (seed, epoch)."""
    epochs = [
        data_lib.make_dataset(
            source, task=task.name, batch_size=config.batch_size, image_size=config.image_size,
            training=True, seed=config.seed, epoch=epoch, augment=config.augment,
            num_classes=len(source.class_names), resize=config.resize,
        ).take(steps_per_epoch)
        for epoch in range(first_epoch, config.epochs)
    ]
    dataset = epochs[0]
    for more in epochs[1:]:
        dataset = dataset.concatenate(more)
    return dataset


def _multi_worker_workarounds(trainee, strategy, training_data):
    """Lets Keras 3's `fit` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two Keras bugs: `fit` all-reduces a whole input batch to build the model, which the
    collective ops refuse; and it reduces each step's metrics with a cross-worker mean over
    axis 0, which fails on the scalar metrics. So everything is built in cross-replica context
    first, `fit` takes the strategy from the scope instead of from the model, and each step's
    metrics are given a leading axis of 1, which the cross-worker mean then removes. The
    gradients are all-reduced by the optimizer as usual. Returns the scope to call `fit` in.
    """
    with strategy.scope():
        compat.symbolic_build(trainee, next(iter(training_data)))
    compat.forget_distribute_strategy(trainee)
    for name in ("train_step", "test_step"):
        step = getattr(type(trainee), name)
        expanded = lambda data, step=step: {k: tf.reshape(v, [1]) for k, v in step(trainee, data).items()}  # noqa: E731
        compat.override_step(trainee, name, expanded)
    return strategy.scope()


def _statistics_callbacks(trainee, train_source, task, config, nan_guard, validating, verbose):
    """Precise batch norm (when the model trains batch-norm statistics) and the stalled-validation
    warning: the callbacks that keep the validation metrics honest."""
    callbacks = []
    batch_norms = trainable_batch_norms(trainee)
    if config.precise_bn and batch_norms:
        num_batches = min(config.precise_bn, len(train_source.examples) // config.batch_size)

        def batches(epoch):
            # The statistics come from training batches as training sees them (augmented), a
            # function of (seed, epoch) like the training data, so that a resumed run agrees.
            return data_lib.make_dataset(
                train_source, task=task.name, batch_size=config.batch_size, image_size=config.image_size,
                training=True, seed=config.seed + 1, epoch=epoch, augment=config.augment,
                num_classes=len(train_source.class_names), resize=config.resize,
            )

        callbacks.append(PreciseBatchNorm(batches, num_batches=num_batches, nan_guard=nan_guard))
        _say(verbose, f"train: precise batch norm, {len(batch_norms)} layers re-estimated from {num_batches} "
                      "training batches at the end (fewer after earlier epochs), before validation")
    if validating:
        if batch_norms and not config.precise_bn:
            hint = "Precise batch norm is off: try --precise-bn 16 (TrainConfig(precise_bn=16))."
        else:
            hint = "Precise batch norm is on, so look at the data and the learning rate first."
        callbacks.append(StalledValidation(task.monitor, hint=hint))
    return callbacks


def _say(verbose, message):
    if verbose:
        print(message, file=sys.stderr, flush=True)


# What a resumed run must share with the run it continues, as (label, where in run.json): each
# changes what the backup's weights, optimizer state or data order mean. `epochs` (to extend a
# run), `precise_bn`, `early_stopping_patience`, `jit_compile`, `strategy` and `backup_every`
# may change.
RESUME_SETTINGS = (
    ("model", ("model",)), ("model weights", ("model_weights",)), ("weights", ("weights", "source")),
    ("task", ("task",)),
    ("classes", ("class_names",)), ("optimizer", ("config", "optimizer")), ("lr", ("config", "learning_rate")),
    ("schedule", ("config", "schedule")), ("warm-up epochs", ("config", "warmup_epochs")),
    ("momentum", ("config", "momentum")), ("weight decay", ("config", "weight_decay")),
    ("batch norm", ("config", "batch_norm")), ("frozen stages", ("config", "freeze_stages")),
    ("augmentation", ("config", "augment")), ("validation fraction", ("config", "validation_fraction")),
    ("mixed precision", ("config", "mixed_precision")), ("adversarial epsilon", ("config", "adversarial_epsilon")),
    ("adversarial ratio", ("config", "adversarial_ratio")), ("seed", ("config", "seed")),
    ("batch size", ("config", "batch_size")), ("image size", ("config", "image_size")),
    ("resize", ("config", "resize")),
)


def _weights_signature(model) -> dict:
    """The model's weight arrays as a count, a parameter count and a digest of their shapes in
    order: what a backup's weights must match (names are left out, Keras numbers them per process)."""
    shapes = [list(variable.shape) for variable in model.weights]
    digest = hashlib.sha1(json.dumps(shapes).encode()).hexdigest()[:12]
    return {"arrays": len(shapes), "parameters": int(sum(np.prod(shape, dtype=np.int64) for shape in shapes)),
            "shapes_sha1": digest}


def _run_record(model, task, source, config, metadata, weights_report) -> dict:
    """What `run.json` holds: written when the run starts (so that `resume` can compare) and again at the end."""
    record = {
        "model": model.name,
        "task": task.name,
        "class_names": list(source.class_names),
        "class_source": source.class_source,
        "config": dataclasses.asdict(config),
        "model_weights": _weights_signature(model),
        "weights": weights_report,
        **(metadata or {}),
    }
    return json.loads(json.dumps(record))  # tuples as lists, as they read back


def _setting_text(label, value) -> str:
    if isinstance(value, dict) and "parameters" in value:
        return f"{label} of {value['arrays']} arrays, {value['parameters']:,} parameters"
    if label == "weights":
        return f"weights {value if value is not None else 'none (random initialisation)'}"
    if label == "image size" and isinstance(value, list):
        return f"{label} {'x'.join(map(str, value))}"
    if label == "classes" and isinstance(value, list):
        names = ",".join(map(str, value[:8])) + (",..." if len(value) > 8 else "")
        return f"{len(value)} classes {names}"
    if value is None:
        return f"{label} default"
    return f"{label} {value:g}" if isinstance(value, float) else f"{label} {value}"


def resume_differences(stored: dict, record: dict) -> list[tuple[str, object, object]]:
    """`(label, stored value, new value)` for each `RESUME_SETTINGS` entry that differs; entries an
    older `run.json` lacks are not compared, and the weights only when the model's name agrees."""
    differences = []
    for label, keys in RESUME_SETTINGS:
        old, new = stored, record
        for key in keys:
            old = old.get(key, KeyError) if isinstance(old, dict) else KeyError
            new = new.get(key, KeyError) if isinstance(new, dict) else KeyError
        if old is KeyError or new is KeyError or old == new:
            continue
        if label == "model weights" and any(name == "model" for name, _, _ in differences):
            continue
        differences.append((label, old, new))
    return differences


def _check_resumable(out_dir: Path, record: dict) -> dict | None:
    """Raises ValueError naming every setting in which `record` differs from the run's `run.json`;
    returns what `run.json` holds (None for a run from before it was written at the start)."""
    path = out_dir / "run.json"
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # nothing to compare with
    except (OSError, ValueError) as error:
        raise ValueError(f"--resume: {path} cannot be read ({error}); it says how the run was trained") from None
    differences = resume_differences(stored, record)
    if differences:
        old = ", ".join(_setting_text(label, value) for label, value, _ in differences)
        new = ", ".join(_setting_text(label, value) for label, _, value in differences)
        raise ValueError(
            f"--resume: the run in {out_dir} was trained with {old}; this command asks for {new}. "
            "Resume with the run's settings, or train a new run in another directory"
        )
    return stored


def _write_json_atomically(path: Path, content) -> None:
    """`content` as JSON at `path`, through `write_atomically` (a temporary file and a rename)."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(content, indent=1)))


def train(
    build_model: Callable[[int], keras.Model],
    train_source,
    validation_source=None,
    *,
    out_dir,
    task: str = "classification",
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    verbose: int = 1,
    task_options: dict | None = None,
    metadata: dict | None = None,
    weights: WeightsInitializer | None = None,
) -> TrainResult:
    """Trains `build_model(num_classes)` on `train_source` and leaves the run in `out_dir`.

    Args:
      build_model: builds the (uncompiled) model for the number of object classes.
      train_source, validation_source: `training.data.DatasetSource`s; without a validation
        source, `config.validation_fraction` of the training examples is held out.
      out_dir: the run's directory (see the module docstring).
      task: a registered `training.tasks.Task` name.
      resume: continue from the newest backup in `out_dir/backup` (from scratch when none).
      task_options: keyword arguments of the task's `wrap` (detection: `proposals`, the RoI
        sampling options of `training.detection.FastRCNNTrainer`); the task must have a `wrap`.
      metadata: more JSON-able entries for `run.json` (`zoo train` stores its resolved recipe).
      weights: pretrained weights to start from (`WeightsInitializer`, e.g.
        `zoo.finetune.fine_tuning(name, "imagenet")`): loaded into the built model before
        `config.batch_norm` and `config.freeze_stages` apply, when the run starts (not when it
        resumes from a backup); its report goes to `run.json["weights"]`. None: the builder's
        initialisation (`run.json["weights"]` is `{"source": null}`).

    Raises:
      FileExistsError: `out_dir` holds a backup and `resume` is False, or a finished run
        (`model.keras`) and no backup.
      ValueError: `resume` and the run's `run.json` differ in a `RESUME_SETTINGS` entry (the
        message names each, with the run's value and this call's).
      TypeError: `weights` is not a `WeightsInitializer`.
      TrainingDiverged: the loss became NaN or Inf.
    """
    if weights is not None and not isinstance(weights, WeightsInitializer):
        raise TypeError(
            f"weights must be a WeightsInitializer (a callable with a `source`, such as "
            f"zoo.finetune.fine_tuning(name, weights)), got {weights!r}"
        )
    task = get_task(task)
    if task_options and task.wrap is None:
        raise ValueError(f"task_options {sorted(task_options)}: the {task.name} task takes none")
    if task.wrap is not None and config.adversarial_epsilon:
        raise ValueError(f"adversarial training (adversarial_epsilon) is for classification, not {task.name}")
    chief = is_chief()
    out_dir = Path(out_dir)
    # Only the chief writes the run; other workers write to a scratch directory of their own
    # (saving may involve every worker) and read the chief's backups to resume.
    write_dir = out_dir if chief else Path(tempfile.mkdtemp(prefix="zoo-worker-"))
    latest = Backup.latest(out_dir / "backup")
    if latest is not None and not resume:
        raise FileExistsError(
            f"{out_dir} holds a backup of an earlier run ({latest.name}); pass resume=True "
            "(`zoo train ... --resume`) to continue it, or choose another output directory"
        )
    if latest is None and (out_dir / "model.keras").exists():
        raise FileExistsError(
            f"{out_dir} holds a finished run (model.keras) and no backup to "
            f"{'resume' if resume else 'continue'} it from; choose another output directory, or move "
            "the run away first if you mean to replace it"
        )
    if resume and latest is None:
        _say(verbose, f"resume: no backup in {out_dir / 'backup'}, starting from the beginning")
    if validation_source is None and config.validation_fraction:
        train_source, validation_source = split_validation(train_source, config.validation_fraction, config.seed)
    num_classes = len(train_source.class_names)
    steps_per_epoch = len(train_source.examples) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has {len(train_source.examples)} examples, fewer than one batch of "
            f"{config.batch_size}; lower batch_size or add data"
        )

    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    policy, why = resolve_mixed_precision(config.mixed_precision)
    _say(verbose, f"train: precision {why}")
    metadata = {**(metadata or {}), "precision": policy or "float32"}
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        strategy = make_strategy(config.strategy)
        restoring = resume and latest is not None
        with strategy.scope():
            model = build_model(num_classes)
            weights_report = {"source": None if weights is None else str(weights.source)}
            if weights is not None and not restoring:
                # Before batch norm and stages are frozen: loading sets values, not trainability.
                weights_report = {**weights(model), "source": str(weights.source)}
            decay = default_weight_decay(model.name) if config.weight_decay is None else config.weight_decay
            if config.optimizer != "adamw":
                apply_weight_decay(model, decay)
            set_batch_norm(model, config.batch_norm)
            frozen = freeze_stages(model, config.freeze_stages)
            optimizer = make_optimizer(
                config.optimizer, _schedule(config, steps_per_epoch), momentum=config.momentum,
                weight_decay=decay if config.optimizer == "adamw" else None,
            )
            # The trainee is what `fit` trains; `model` is what the run saves (never a wrapper).
            trainee = model
            if task.wrap is not None:
                trainee = task.wrap(model, **(task_options or {}))
            elif config.adversarial_epsilon:
                trainee = AdversarialModel(model, epsilon=config.adversarial_epsilon, ratio=config.adversarial_ratio)
            trainee.compile(
                optimizer=optimizer,
                loss=task.loss(model) if task.loss else None,
                # None rather than []: an empty metric list would still make Keras trace the
                # trainee on a batch of inputs alone to build it.
                metrics=task.metrics(num_classes) or None,
                jit_compile=JIT_COMPILE[config.jit_compile],
            )
        monitor = task.monitor if validation_source is not None else task.monitor.removeprefix("val_")
        nan_guard = StopOnNaN()
        stateful = [BestCheckpoint(write_dir / "best.keras", monitor, nan_guard=nan_guard, export_model=model)]
        if config.early_stopping_patience:
            stateful.append(EarlyStopping(monitor, config.early_stopping_patience))
        backup = Backup(write_dir / "backup", every=config.backup_every, stateful=stateful, nan_guard=nan_guard)
        backup.set_model(trainee)
        record = _run_record(model, task, train_source, config, metadata, weights_report)
        if restoring:
            stored = _check_resumable(out_dir, record)
            if weights is not None:
                # The run's report of the load it started from; the backup holds the weights now.
                record["weights"] = (stored or {}).get("weights", record["weights"])
                _say(verbose, f"resume: the weights come from the backup, not {weights.source} again")
        if chief:
            _write_json_atomically(write_dir / "run.json", record)
        initial_epoch = 0
        if restoring:
            initial_epoch = backup.restore(latest)
            _say(verbose, f"resume: restored {latest} (continuing at epoch {initial_epoch + 1} of {config.epochs})")
        _say(verbose, f"train: {train_source.summary()}")
        if validation_source is not None:
            _say(verbose, f"validation: {validation_source.summary()}")
        _say(
            verbose,
            f"train: {model.name}, weight decay {decay:g}, batch norm {config.batch_norm}"
            + (f", {len(frozen)} layers frozen" if frozen else ""),
        )
        early = next((c for c in stateful if isinstance(c, EarlyStopping)), None)
        already_stopped = early is not None and early.stopped_epoch is not None
        if initial_epoch < config.epochs and not already_stopped:
            validation = None
            if validation_source is not None:
                validation = data_lib.make_dataset(
                    validation_source, task=task.name, batch_size=config.batch_size,
                    image_size=config.image_size, training=False, seed=config.seed,
                    num_classes=num_classes, resize=config.resize,
                )
            callbacks = [nan_guard, *_statistics_callbacks(trainee, train_source, task, config, nan_guard,
                                                           validation is not None, verbose),
                         *stateful, backup, keras.callbacks.TensorBoard(str(write_dir / "logs"))]
            training_data = _epochs_dataset(train_source, task, config, initial_epoch, steps_per_epoch)
            scope = contextlib.nullcontext()
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                scope = _multi_worker_workarounds(trainee, strategy, training_data)
            with scope:
                trainee.fit(
                    training_data,
                    epochs=config.epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps_per_epoch,
                    validation_data=validation,
                    callbacks=callbacks,
                    shuffle=False,  # each epoch's order is already a function of (seed, epoch)
                    verbose=verbose,
                )
        if nan_guard.diverged:
            where = nan_guard.diverged
            good = Backup.latest(out_dir / "backup")
            raise TrainingDiverged(
                f"the loss became {where['loss']} at epoch {where['epoch'] + 1}, batch {where['batch'] + 1}; "
                f"training stopped. The last good backup is {good or 'none (it diverged in the first epoch)'}; "
                "lower the learning rate or add warm-up, then resume from it."
            )
        save_model_atomically(model, write_dir / "model.keras")
        (write_dir / "history.json").write_text(json.dumps(backup.history, indent=1))
        _write_json_atomically(write_dir / "run.json", record)
        best = stateful[0]
        return TrainResult(
            model=model, history=backup.history, out_dir=out_dir, class_names=tuple(train_source.class_names),
            best_epoch=best.best_epoch, best_value=best.best, monitor=monitor, initial_epoch=initial_epoch,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def evaluate(model: keras.Model, source, *, task: str = "classification", batch_size: int = 16, image_size=None,
             verbose: int = 1, task_options: dict | None = None, resize: str = "stretch") -> dict[str, float]:
    """The task's metrics of `model` on `source`, as a dict (`{"loss": ..., "top1": ...}`).

    A task with its own `evaluate` (detection: `{"mAP@0.5": ..., "AP/<class>": ...}`) computes
    them, given `task_options` (detection: `proposals`); the others run Keras's `evaluate`.
    Images are resized to `image_size` (default: the model's input size) by `resize`, which
    must be the run's (`TrainConfig.resize`, `run.json["config"]["resize"]`); detections are
    scored in the original images' pixels either way.
    """
    task = get_task(task)
    if resize not in RESIZE_MODES:
        raise ValueError(f"evaluate: resize must be one of {RESIZE_MODES}, got {resize!r}")
    if task_options and task.evaluate is None:
        raise ValueError(f"task_options {sorted(task_options)}: the {task.name} task takes none")
    if image_size is None:
        height, width = model.inputs[0].shape[1:3]
        if height is None or width is None:
            raise ValueError("the model takes any image size; pass image_size=(height, width)")
        image_size = (height, width)
    if task.evaluate is not None:
        return task.evaluate(
            model, source, batch_size=batch_size, image_size=tuple(image_size), resize=resize, verbose=verbose,
            **(task_options or {}),
        )
    num_classes = len(source.class_names)
    model.compile(loss=task.loss(model) if task.loss else None, metrics=task.metrics(num_classes))
    dataset = data_lib.make_dataset(
        source, task=task.name, batch_size=batch_size, image_size=tuple(image_size), training=False,
        num_classes=num_classes, resize=resize,
    )
    results = model.evaluate(dataset, return_dict=True, verbose=verbose)
    return {name: float(value) for name, value in results.items()}
