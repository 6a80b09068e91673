"""Helpers shared by the tests."""

import keras
import numpy as np


def random_pixels(rng, shape):
    """A float32 batch of raw pixel values in [0, 255]."""
    return rng.uniform(0.0, 255.0, size=shape).astype("float32")


def randomize_batch_norm(model, rng):
    """Give every BatchNormalization layer random statistics, so parity tests see them used."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, channels).astype("float32"),
                rng.normal(0.0, 0.1, channels).astype("float32"),
                rng.normal(0.0, 0.1, channels).astype("float32"),
                rng.uniform(0.5, 1.5, channels).astype("float32"),
            ])


def run_zoo(*arguments, cwd=None, env=None, timeout=600):
    """`python -m zoo ARGUMENTS` in a subprocess, as a user runs it; returns the CompletedProcess
    (text stdout and stderr). `env` adds to (or, with None values, removes from) this environment."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = str(value)
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, arguments)], cwd=cwd or root, env=environment,
                          capture_output=True, text=True, timeout=timeout)
