"""What `zoo list` and `zoo describe` print, kept as data so that neither builds a model or
imports TensorFlow.

For every registered model at its default configuration, `zoo/catalogue_data.py` holds its
description (`zoo.describe`, less the weight tags, which come from the manifest) and what
building it shows: inputs, outputs in the order of the dict the model returns, parameters
(all and trainable) and, for a backbone, its feature maps. `python -m zoo.catalogue` rewrites
the file from the registry; tests/zoo/test_cli.py rebuilds every model and compares, as
torchvision checks the parameter counts of its weights metadata, so the data cannot go stale.
"""

from __future__ import annotations

import dataclasses
import math
import pprint
from pathlib import Path

from zoo.recipes import Recipe
from zoo.registry import ModelDescription, select, unknown_name_error

DATA_PATH = Path(__file__).with_name("catalogue_data.py")
DESCRIPTION_FIELDS = (
    "task", "summary", "paper", "image_size", "resize", "recipe", "defaults", "accepted_overrides", "is_backbone",
)


def _models() -> dict:
    from zoo.catalogue_data import MODELS

    return MODELS


def names(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Sorted catalogued names, as `zoo.list_models(pattern, task)` returns them."""
    models = _models()
    return select(models, lambda name: models[name]["task"], pattern, task)


def stored_entry(name: str) -> dict:
    """The catalogue's entry of `name`; an unknown name raises `ValueError` with the closest names."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__} {name!r}")
    try:
        return _models()[name]
    except KeyError:
        raise unknown_name_error(name, _models()) from None


def description_entry(name: str) -> dict:
    """The catalogue's description fields of `name`, from the registry (imports the families)."""
    from zoo import registry

    description = registry.describe(name)
    entry = {key: getattr(description, key) for key in DESCRIPTION_FIELDS}
    entry["image_size"] = tuple(entry["image_size"])
    entry["recipe"] = dataclasses.asdict(entry["recipe"]) if entry["recipe"] is not None else None
    return entry


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def outputs_of(model) -> dict[str, tuple]:
    """`{name: shape}` of the model's outputs: a dict output's keys in the order the model returns
    them (not `model.outputs`' flattened order), else the output layers' names."""
    if isinstance(model.output, dict):
        return {key: _shape(tensor) for key, tensor in model.output.items()}
    return dict(zip(model.output_names, (_shape(tensor) for tensor in model.outputs)))


def built_entry(name: str, model, features=None) -> dict:
    """What building shows: inputs, outputs, parameters and the feature maps (`features`, the
    dict of `zoo.backbones.backbone_features`, or None for a model that is not a backbone)."""
    entry = {
        "inputs": {tensor.name: _shape(tensor) for tensor in model.inputs},
        "outputs": outputs_of(model),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(math.prod(weight.shape) for weight in model.trainable_weights)),
    }
    if features is not None:
        entry["feature_maps"] = {
            key: {"stride": feature.stride, "channels": feature.channels, "layer": feature.layer,
                  "shape": _shape(feature.tensor)}
            for key, feature in features.items()
        }
    return entry


def build_entry(name: str, **overrides) -> tuple[dict, dict]:
    """`(description fields, built_entry)` of `name` built with `overrides` (imports TensorFlow)."""
    import keras

    import zoo

    description = description_entry(name)
    model = zoo.build(name, **overrides)
    features = None
    if description["is_backbone"]:
        images = keras.Input(shape=model.inputs[0].shape[1:], name="images")
        backbone_overrides = {key: value for key, value in overrides.items() if key != "include_top"}
        features = zoo.backbones.backbone_features(name, images, **backbone_overrides)
    built = built_entry(name, model, features)
    del model, features
    keras.backend.clear_session()
    return description, built


def description_of(name: str, entry: dict) -> ModelDescription:
    """The `ModelDescription` an entry stands for; the weight tags are read from the manifest."""
    from zoo import weights as weights_lib

    fields = {key: entry[key] for key in DESCRIPTION_FIELDS}
    fields["recipe"] = Recipe(**fields["recipe"]) if fields["recipe"] is not None else None
    return ModelDescription(name=name, weights=weights_lib.available_tags(name), **fields)


def _shape_text(shape) -> str:
    sides = ["None" if side is None else str(side) for side in shape]
    return "(" + ", ".join(sides) + ("," if len(sides) == 1 else "") + ")"


def render(name: str, entry: dict) -> str:
    """`zoo describe`'s text: the description, then inputs, outputs, parameters, feature maps."""
    lines = [str(description_of(name, entry))]
    lines.append(f"  inputs: {', '.join(f'{key} {_shape_text(shape)}' for key, shape in entry['inputs'].items())}")
    outputs = entry["outputs"]
    if len(outputs) == 1:
        (key, shape), = outputs.items()
        lines.append(f"  outputs: {key} {_shape_text(shape)}")
    else:
        lines.append("  outputs (the dict the model returns, in its order):")
        lines += [f"    {key}: {_shape_text(shape)}" for key, shape in outputs.items()]
    lines.append(f"  parameters: {entry['parameters']:,} ({entry['trainable_parameters']:,} trainable)")
    if entry.get("feature_maps"):
        lines.append("  feature maps:")
        lines += [
            f"    {key}: stride {feature['stride']}, {feature['channels']} channels, layer {feature['layer']}, "
            f"shape {_shape_text(feature['shape'])}"
            for key, feature in entry["feature_maps"].items()
        ]
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's model table (a test keeps them equal)."""
    lines = ["| name | task | parameters | summary |", "|---|---|---:|---|"]
    for name in names():
        entry = stored_entry(name)
        lines.append(f"| `{name}` | {entry['task']} | {entry['parameters']:,} | {entry['summary']} |")
    return "\n".join(lines)


def write(path: Path = DATA_PATH) -> Path:
    """Rebuild every registered model and write the catalogue (a temporary file, then renamed)."""
    import zoo
    from layers.files import write_atomically

    models = {}
    for name in zoo.list_models():
        description, built = build_entry(name)
        models[name] = {**description, **built}
    text = (
        '"""Generated by `python -m zoo.catalogue` from the registry; tests/zoo/test_cli.py checks it.\n\n'
        'Every registered model at its default configuration: see `zoo.catalogue`."""\n\n'
        f"MODELS = {pprint.pformat(models, width=110, sort_dicts=False)}\n"
    )
    path = Path(path)
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))
    return path


if __name__ == "__main__":
    print(f"zoo.catalogue: written to {write()}")
