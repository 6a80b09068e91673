"""What a `zoo train` run recorded about its model, for the verbs that use the model afterwards.

`zoo train` writes `run.json` beside `model.keras`: the registered model's name, the task, the
class names, the image size and how images were resized to it and, for a detector that takes
`rois`, the sliding-window proposals it trained with. `zoo evaluate`, `zoo predict` and `zoo export` read them here, so none of them
needs `--image-size`, `--classes` or a proposal flag again; a flag that contradicts the run is
an error naming both values (`settle`).

    >>> run = trained_run("runs/shapes/model.keras")
    >>> settle("--image-size", None, run.image_size, source=run.source)
    (64, 64)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

# The sliding-window settings a run records, in the order `SlidingWindowProposals` takes them.
PROPOSAL_KEYS = ("stride", "scales", "aspect_ratios")


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """The settings of the run a `model.keras` came from; a field the run did not record is None."""

    source: Path
    model: str | None
    task: str | None
    class_names: tuple[str, ...] | None
    image_size: tuple[int, int] | None
    proposals: dict | None
    resize: str | None = None


def trained_run(weights) -> TrainedRun | None:
    """The run recorded beside a `.keras` file (`run.json` in its folder), else None (a manifest
    tag, a weights file, or a `.keras` file copied away from its run).

    Raises:
      ValueError: a `run.json` that cannot be read as JSON.
    """
    if weights is None or not str(weights).endswith(".keras"):
        return None
    path = Path(weights).parent / "run.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({error}); it says how {weights} was trained") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a zoo train run record (a JSON object)")
    config = record.get("config") or {}
    size = config.get("image_size")
    names = record.get("class_names")
    proposals = record.get("proposals")
    return TrainedRun(
        source=path,
        model=record.get("model"),
        task=record.get("task"),
        class_names=tuple(names) if names else None,
        image_size=tuple(int(side) for side in size) if size else None,
        proposals={key: proposals[key] for key in PROPOSAL_KEYS if key in proposals} if proposals else None,
        # A run recorded before there was a choice was stretched.
        resize=config.get("resize", "stretch") if config else None,
    )


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_text(item) for item in value) if all(not isinstance(v, str) for v in value) else ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same(given, stored) -> bool:
    if isinstance(given, (tuple, list)) and isinstance(stored, (tuple, list)):
        return len(given) == len(stored) and all(_same(a, b) for a, b in zip(given, stored))
    if isinstance(given, (int, float)) and isinstance(stored, (int, float)):
        return float(given) == float(stored)
    return given == stored


def settle(option: str, given, stored, *, source):
    """The setting a verb uses: the flag's value `given`, else the model's `stored` one.

    Raises:
      ValueError: both exist and differ, naming the option, both values and where the
        stored one comes from.
    """
    if given is None:
        return stored
    if stored is None or _same(given, stored):
        return given
    raise ValueError(
        f"{option} {_text(given)} contradicts the model's {_text(stored)} (from {source}); leave {option} out to "
        "use the model's"
    )
