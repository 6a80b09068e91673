"""Distribution on TensorFlow's own engine: `tf.distribute`.

"default" is the one-device strategy (CPU or one GPU); "mirrored" copies the model onto every
local GPU (or every logical CPU device when there is no GPU) and all-reduces the gradients;
"multi_worker" does the same across machines described by the `TF_CONFIG` environment
variable. The trainer runs the same code under each.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable describing the "
            "cluster, e.g. {\"cluster\": {\"worker\": [\"host1:port\", \"host2:port\"]}, "
            "\"task\": {\"type\": \"worker\", \"index\": 0}}"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief() -> bool:
    """Whether this process writes the run's files (worker 0, or the chief, or no cluster)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})
