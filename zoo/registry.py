"""The model registry: `register`, `build`, `list_models`, `describe`.

A registered variant is a function that returns a frozen config; the family's generic builder
turns a config into a `keras.Model`:

    @register("resnet50", task="classification", builder=build_resnet, paper=RESNET_PAPER)
    def resnet50() -> ResNetConfig:
        '''ResNet-50 v1, bottleneck blocks.'''
        return ResNetConfig(block="bottleneck", depths=(3, 4, 6, 3))

`zoo.build(name, **overrides)` applies the overrides with `dataclasses.replace` (see
`zoo.config.apply_overrides`) and calls the builder. The registry is a plain dict; registering
a name twice raises.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from typing import Any, Callable

from zoo.config import accepted_overrides, apply_overrides, config_to_dict, unused_fields
from zoo.recipes import DEFAULT_RECIPES, Recipe
from zoo.tasks import TASKS

# The image size (height, width) each task trains and evaluates at unless a family says
# otherwise: ImageNet's 224 crop, Fast R-CNN's 600-pixel shorter side, DeepLab's 513 crop.
TASK_IMAGE_SIZES = {"classification": (224, 224), "detection": (600, 600), "segmentation": (513, 513)}
# How each task's images become that size unless a family says otherwise (`layers.image_resize`):
# classifiers stretch, as keras.applications' 224 x 224 inputs ignore the aspect ratio; detectors
# keep it (Fast R-CNN's shorter side 600, torchvision's and detectron2's resize) and DeepLab pads
# to its crop, so both letterbox: fitted inside the input, padded at the bottom and right.
TASK_RESIZE = {"classification": "stretch", "detection": "letterbox", "segmentation": "letterbox"}
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before it is built.

    Attributes:
      name: registered name, lowercase with underscores (`resnet50`).
      task: one of `TASKS`.
      config: the frozen default config of the variant.
      builder: `builder(config, *, name) -> keras.Model`.
      paper: the paper the architecture comes from.
      summary: one line, from the variant's docstring.
      features: for backbones, `features(config, images) -> dict[str, FeatureMap]`, the
        feature contract that the detection and segmentation heads use; else None.
      recipe: the `zoo.recipes.Recipe` that `zoo train` uses by default.
      image_size: `(height, width)` the model is trained and evaluated at by default (the
        paper's: 32 for LeNet-5, 299 for Xception); `zoo train` uses it without `--image-size`.
      resize: how images become `image_size` by default: "stretch" or "letterbox" (aspect
        ratio kept, padded; `layers.image_resize`), the family's own (`TASK_RESIZE`).
    """

    name: str
    task: str
    config: Any
    builder: Callable[..., Any]
    paper: str
    summary: str
    features: Callable[..., Any] | None = None
    recipe: Recipe | None = None
    image_size: tuple[int, int] | None = None
    resize: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    """The answer of `zoo.describe(name)`: everything known without building the model."""

    name: str
    task: str
    summary: str
    paper: str
    defaults: dict[str, Any]
    accepted_overrides: list[str]
    weights: list[str]
    is_backbone: bool
    recipe: Recipe | None = None
    image_size: tuple[int, int] | None = None
    resize: str | None = None

    def __str__(self) -> str:
        lines = [
            f"{self.name} ({self.task}): {self.summary}",
            f"  paper: {self.paper}",
            f"  image size (zoo train's default): {self.image_size[0]} x {self.image_size[1]}",
        ]
        if self.resize is not None:
            kept = "aspect ratio kept, padded at the bottom and right" if self.resize == "letterbox" else (
                "aspect ratio not kept")
            lines.append(f"  resize (the family's): {self.resize} ({kept})")
        lines += [
            f"  weights: {', '.join(self.weights) if self.weights else 'none published in the manifest'}",
        ]
        if self.recipe is not None:
            lines.append(f"  training recipe (zoo train's defaults): {self.recipe.summary()}")
        lines.append("  defaults:")
        lines += [f"    {key} = {value!r}" for key, value in self.defaults.items()]
        return "\n".join(lines)


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    task: str,
    builder: Callable[..., Any],
    paper: str,
    features: Callable[..., Any] | None = None,
    recipe: Recipe | None = None,
    image_size: tuple[int, int] | None = None,
    resize: str | None = None,
):
    """Decorator that registers the config returned by the decorated function under `name`.

    `recipe` is the family's default training recipe (`zoo.recipes`); without it, the task's.
    `image_size` is the `(height, width)` it trains at by default; without it, the task's
    (`TASK_IMAGE_SIZES`). `resize` ("stretch" or "letterbox") is how images become that size;
    without it, the task's (`TASK_RESIZE`).

    Raises:
      ValueError: `name` is already registered, is not lowercase_with_underscores, or `task`
        is not one of `TASKS`.
    """
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r} must be lowercase letters, digits and underscores")
    if task not in TASKS:
        raise ValueError(f"task of {name!r} must be one of {TASKS}, got {task!r}")
    image_size = tuple(image_size) if image_size is not None else TASK_IMAGE_SIZES[task]
    if len(image_size) != 2 or not all(isinstance(side, int) and side > 0 for side in image_size):
        raise ValueError(f"image_size of {name!r} must be (height, width) in pixels, got {image_size!r}")
    from layers.image_resize import RESIZE_MODES  # here: this module stays importable without TensorFlow

    resize = TASK_RESIZE[task] if resize is None else resize
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize of {name!r} must be one of {RESIZE_MODES}, got {resize!r}")

    def decorator(config_fn: Callable[[], Any]):
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        config = config_fn()
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{config_fn.__name__} must return a config dataclass, got {config!r}")
        summary = (config_fn.__doc__ or name).strip().splitlines()[0]
        _REGISTRY[name] = ModelSpec(
            name=name,
            task=task,
            config=config,
            builder=builder,
            paper=paper,
            summary=summary,
            features=features,
            recipe=recipe or DEFAULT_RECIPES[task],
            image_size=image_size,
            resize=resize,
        )
        return config_fn

    return decorator


def get_spec(name: str) -> ModelSpec:
    """The registered `ModelSpec` of `name`; an unknown name raises with the closest names."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__} {name!r}")
    _ensure_registered()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name_error(name, _REGISTRY) from None


def unknown_name_error(name: str, names) -> ValueError:
    """The error for a model name not among `names`, listing the closest ones."""
    close = difflib.get_close_matches(name.lower(), list(names), n=5, cutoff=0.5)
    hint = f"closest registered names: {', '.join(close)}" if close else (
        f"registered names: {', '.join(sorted(names))}"
    )
    return ValueError(f"unknown model name {name!r}; {hint}")


_populate: Callable[[], None] | None = None


def populate_with(loader: Callable[[], None]) -> None:
    """`loader()` fills the registry on the first lookup: `zoo` passes `zoo.load_models`, which
    imports the families, so that importing `zoo` (and this module) does not import TensorFlow."""
    global _populate
    _populate = loader


def _ensure_registered() -> None:
    if _populate is not None:
        _populate()


def select(names, task_of: Callable[[str], str], pattern: str | None = None, task: str | None = None) -> list[str]:
    """The sorted `names` that match the fnmatch `pattern` and whose `task_of(name)` is `task`."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be an fnmatch string or None, got {pattern!r}")
    return sorted(
        name for name in names
        if (pattern is None or fnmatch.fnmatchcase(name, pattern)) and (task is None or task_of(name) == task)
    )


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Sorted registered names, filtered by an fnmatch `pattern` (`"resnet*"`) and `task`."""
    _ensure_registered()
    return select(_REGISTRY, lambda name: _REGISTRY[name].task, pattern, task)


def resolve_config(name: str, **overrides):
    """The config that `build(name, **overrides)` would build, without building it."""
    spec = get_spec(name)
    return apply_overrides(spec.config, overrides, model_name=name)


def class_count_columns(config, task: str) -> int | None:
    """The class columns a model of `config` outputs: one meaning of a class count everywhere.

    A count is the dataset's classes, never the background: `classes` for a classifier
    (keras.applications' name) outputs that many; `num_classes` for a detector or a segmenter
    outputs one more, class 0 the background it adds (PASCAL VOC: 20, 21 columns). None where the
    config has no count or no top that shows it.
    """
    if task == "classification":
        return getattr(config, "classes", None) if getattr(config, "include_top", True) else None
    count = getattr(config, "num_classes", None)
    return None if count is None else count + 1


def check_class_count(model, config, task: str, *, model_name: str) -> None:
    """Raises if the built model's class columns are not `class_count_columns(config, task)`:
    the check that holds every builder, new families' too, to the one meaning."""
    expected = class_count_columns(config, task)
    if expected is None:
        return
    if task == "detection":
        outputs = model.output
        columns = outputs["class_probs"].shape[-1] if isinstance(outputs, dict) and "class_probs" in outputs else None
    else:
        columns = model.output.shape[-1] if not isinstance(model.output, (dict, list, tuple)) else None
    if columns is not None and int(columns) != expected:
        count = "classes" if task == "classification" else "num_classes"
        raise ValueError(
            f"{model_name}: its builder made {columns} class columns where {count}={getattr(config, count)} "
            f"means {expected} ({'the classes' if task == 'classification' else 'the object classes and the background'})"
        )


def build(name: str, *, weights: str | None = None, **overrides):
    """Build the registered model `name`.

    Args:
      name: a registered name, see `list_models()`.
      weights: None (random initialisation), a tag of `weights_manifest.json` (`"imagenet"`),
        or the path of a local weights file (`.weights.h5`, or a keras.applications-style
        `.h5` loaded by layer name).
      **overrides: fields of the model's config (see `describe(name).accepted_overrides`).

    Returns:
      A `keras.Model` named `name`, taking raw pixels (0..255) as input.

    Raises:
      ValueError: unknown name, or an override value outside its accepted range.
      TypeError: unknown override, or an override of the wrong type.

    Example:
      >>> model = zoo.build("resnet50", include_top=False, pooling="avg")
    """
    spec = get_spec(name)
    config = apply_overrides(spec.config, overrides, model_name=name)
    model = spec.builder(config, name=name)
    check_class_count(model, config, spec.task, model_name=name)
    # What built it, so that `zoo.export` can rebuild it under another dtype policy.
    model.zoo_config = config
    if weights is not None:
        from zoo import weights as weights_lib

        weights_lib.load_weights(model, weights, model_name=name, config=config)
    return model


def describe(name: str) -> ModelDescription:
    """Task, defaults, accepted overrides, available weights and paper of `name`.

    `defaults` leaves out the fields that the default configuration ignores (Fast R-CNN's
    `fc_units` and `dropout` with a ResNet head): overriding one of those raises (`zoo.config`).
    """
    from zoo import weights as weights_lib

    spec = get_spec(name)
    ignored = unused_fields(spec.config)
    return ModelDescription(
        name=spec.name,
        task=spec.task,
        summary=spec.summary,
        paper=spec.paper,
        defaults={key: value for key, value in config_to_dict(spec.config).items() if key not in ignored},
        accepted_overrides=accepted_overrides(spec.config),
        weights=weights_lib.available_tags(name),
        is_backbone=spec.features is not None,
        recipe=spec.recipe,
        image_size=spec.image_size,
        resize=spec.resize,
    )
