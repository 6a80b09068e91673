"""`layers.compat`: one test per shim over Keras's and TensorFlow's internals, each failing by name
when a release moves what it relies on, and the fence: no other module of the project (nor a
notebook) reaches those internals, read from the source with `ast`, and `import zoo` imports no
`keras.src` or `tensorflow.python` module from the project's own code outside `layers/compat.py`.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from layers import compat

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "layers" / "compat.py"
PRIVATE_MODULES = ("keras.src", "tensorflow.python")
# Keras's private attributes the zoo needs (layers/compat.py wraps each one), their neighbours,
# and TensorFlow's `__internal__` namespace (as private as `tensorflow.python`).
PRIVATE_ATTRIBUTES = frozenset({
    "_loss_tracker", "_symbolic_build", "_distribute_strategy", "_keras_history", "_inbound_nodes",
    "_outbound_nodes", "_flatten_layers", "_tracker", "_compile_loss", "_compile_metrics", "__internal__",
})


# --------------------------------------------------------------------------- the fence


def _is_private_module(name):
    return any(name == module or name.startswith(module + ".") for module in PRIVATE_MODULES)


def private_uses(tree):
    """`(line, what)` of each reach into Keras's or TensorFlow's internals in a parsed module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names if _is_private_module(alias.name)]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]
            if _is_private_module(module) or any(_is_private_module(name) for name in names):
                found.append((node.lineno, f"from {module} import {', '.join(a.name for a in node.names)}"))
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            first = node.args[0] if node.args else None
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) and \
                    isinstance(first.value, str) and _is_private_module(first.value):
                found.append((node.lineno, f"{name}({first.value!r})"))
            # object.__setattr__(self, ...) in a frozen dataclass's __post_init__ is Python's idiom;
            # on anything else it goes past Keras's attribute tracking (compat.override_step).
            if isinstance(function, ast.Attribute) and function.attr == "__setattr__" and \
                    getattr(function.value, "id", "") == "object" and \
                    not (isinstance(first, ast.Name) and first.id == "self"):
                found.append((node.lineno, "object.__setattr__ on a non-self object"))
    return sorted(found)


def _notebook_source(path):
    """The code cells of a notebook as one module (IPython's `%magic` and `!shell` lines dropped)."""
    cells = [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    lines = [line for cell in cells for line in "".join(cell["source"]).splitlines() + [""]
             if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _sources():
    for package in ("layers", "training", "zoo"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != COMPAT:
                yield path, path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        yield path, _notebook_source(path)


def test_the_fence_sees_every_kind_of_private_use():
    planted = textwrap.dedent("""
        import keras.src.losses
        import tensorflow.python.ops.control_flow_util as cfu
        from keras.src.losses.loss import scale_loss_for_distribution
        from tensorflow.python.ops import control_flow_util
        from keras import src
        from tensorflow import python
        model._loss_tracker.update_state(1.0)
        model._symbolic_build(data_batch=batch)
        model._distribute_strategy = None
        tensor._keras_history.operation
        layer._inbound_nodes[0]
        model._flatten_layers()
        tf.__internal__.tracking
        object.__setattr__(model, "train_step", step)
        importlib.import_module("keras.src.legacy")

        object.__setattr__(self, "source", source)
        from keras import layers, ops
        import tensorflow as tf
        from .sibling import _helper
    """)
    assert [line for line, _ in private_uses(ast.parse(planted))] == list(range(2, 17))


def test_no_module_outside_compat_reaches_keras_or_tensorflow_internals():
    sources = list(_sources())
    assert any(path.suffix == ".ipynb" for path, _ in sources)
    assert {"layers", "training", "zoo"} <= {path.relative_to(ROOT).parts[0] for path, _ in sources}
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path, text in sources
        for line, what in private_uses(ast.parse(text, filename=str(path)))
    ]
    assert not found, "use layers.compat (or a public API) instead:\n" + "\n".join(found)


WATCH_IMPORTS = """
import builtins, os, sys
root, compat = sys.argv[1], os.path.join(sys.argv[1], "layers", "compat.py")
packages = tuple(os.path.join(root, package) + os.sep for package in ("layers", "training", "zoo"))
private = ("keras.src", "tensorflow.python")
found, original = [], builtins.__import__

def watching(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__file__") or ""
    if not level and importer.startswith(packages) and os.path.abspath(importer) != compat:
        names = [name] + [f"{name}.{item}" for item in fromlist or ()]
        if any(n == p or n.startswith(p + ".") for n in names for p in private):
            found.append(f"{importer}: {name} {list(fromlist or ())}")
    return original(name, globals, locals, fromlist, level)

builtins.__import__ = watching
import importlib, pkgutil
import zoo  # the issue's check; then every module of the three packages (`import zoo` may be lazy)
for package in ("layers", "training", "zoo"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(len(found), *found, sep="\\n")
"""


@pytest.mark.slow
def test_importing_the_zoo_and_its_modules_imports_no_keras_internals_outside_compat():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", WATCH_IMPORTS, str(ROOT)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "0", result.stdout


# --------------------------------------------------------------------------- TensorFlow


def test_tensorflow_still_has_the_xla_context_helper():
    from tensorflow.python.ops import control_flow_util

    assert callable(control_flow_util.GraphOrParentsInXlaContext)
    assert compat._control_flow_util is control_flow_util


def _traced(jit_compile, nested=False):
    inner = tf.function(lambda: tf.constant(compat.in_xla_context()))
    outer = tf.function((lambda: inner()) if nested else inner.python_function, jit_compile=jit_compile)
    return bool(outer().numpy())


def test_in_xla_context():
    assert compat.in_xla_context() is False  # eager
    assert _traced(jit_compile=False) is False
    assert _traced(jit_compile=True) is True
    assert _traced(jit_compile=True, nested=True) is True


def test_in_xla_context_falls_back_to_the_xla_formulation_with_one_warning(monkeypatch):
    monkeypatch.setattr(compat, "_control_flow_util", None)
    monkeypatch.setattr(compat, "_warned_xla_fallback", False)
    assert compat.in_xla_context() is False  # eager needs no helper
    with pytest.warns(RuntimeWarning, match="GraphOrParentsInXlaContext"):
        assert _traced(jit_compile=False) is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _traced(jit_compile=False) is True


def test_the_fallback_computes_the_same_values(monkeypatch, rng):
    """Outside XLA, the formulation the fallback picks agrees with TensorFlow's kernels."""
    from layers import resample
    from layers.roi_pooling import roi_pool_max

    features = tf.constant(rng.uniform(size=(2, 12, 10, 3)), tf.float32)
    rois = tf.constant([[[0, 0, 80, 60], [16, 8, 40, 72]], [[32, 32, 96, 80], [0, 0, 0, 0]]], tf.float32)
    boxes = tf.constant([[0.1, 0.2, 0.9, 0.7], [0.0, 0.0, 1.0, 1.0]], tf.float32)

    def outputs():
        pooled = tf.function(lambda f: roi_pool_max(f, rois, pool_size=(3, 3), spatial_scale=1 / 8))(features)
        crops = tf.function(lambda f: resample.crop_and_resize(f, boxes, [0, 1], (5, 4)))(features)
        resized = tf.function(lambda f: resample.resize_bilinear(f, (23, 19), align_corners=True))(features)
        return [pooled, crops, resized]

    expected = outputs()
    monkeypatch.setattr(compat, "_control_flow_util", None)
    monkeypatch.setattr(compat, "_warned_xla_fallback", False)
    with pytest.warns(RuntimeWarning):
        fallback = outputs()
    for want, got in zip(expected, fallback):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6)


# --------------------------------------------------------------------------- layers and graphs


class _Composite(keras.layers.Layer):
    """A layer with sublayers of its own, like `layers.ASPP`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(2, 1, name="inner_conv")
        self.norm = keras.layers.BatchNormalization(name="inner_norm")

    def call(self, x):
        return self.norm(self.conv(x))


def _nested_model():
    inner_input = keras.Input((4, 4, 2))
    inner = keras.Model(inner_input, keras.layers.Conv2D(2, 1, name="nested_conv")(inner_input), name="nested")
    images = keras.Input((4, 4, 2), name="images")
    x = _Composite(name="composite")(images)
    x = inner(x)
    return keras.Model(images, keras.layers.ReLU(name="relu")(x), name="outer")


def test_flatten_layers():
    model = _nested_model()
    walked = compat.flatten_layers(model)
    names = [layer.name for layer in walked]
    assert walked[0] is model and len(names) == len(set(names))
    assert set(names) == {"outer", "images", "composite", "inner_conv", "inner_norm", "nested",
                          "nested_conv", "relu"} | {layer.name for layer in model.get_layer("nested").layers}
    for parent, child in (("composite", "inner_conv"), ("composite", "inner_norm"), ("nested", "nested_conv")):
        assert names.index(parent) < names.index(child)
    assert [layer.name for layer in compat.flatten_layers(model, include_self=False)] == names[1:]
    top = [layer.name for layer in compat.flatten_layers(model, include_self=False, recursive=False)]
    assert top == [layer.name for layer in model.layers]
    assert compat.flatten_layers(model.get_layer("relu"), include_self=False) == []
    assert [layer.name for layer in compat.flatten_layers(model.get_layer("composite"))] == \
        ["composite", "inner_conv", "inner_norm"]


def test_producer():
    images = keras.Input((4, 4, 2), name="images")
    conv = keras.layers.Conv2D(2, 1, name="conv")
    left, right = conv(images), keras.layers.ReLU(name="relu")(images)
    total = keras.layers.Add(name="add")([left, right])
    pair_input = keras.Input((4, 4, 2))
    pair = keras.Model(pair_input, [pair_input * 1.0, keras.layers.ReLU()(pair_input)], name="pair")
    first, second = pair(total)

    layer, inputs, index = compat.producer(total)
    assert layer.name == "add" and index == 0
    assert len(inputs) == 2 and inputs[0] is left and inputs[1] is right
    layer, inputs, index = compat.producer(left)
    assert layer is conv and inputs == [images] and index == 0
    layer, inputs, index = compat.producer(images)
    assert isinstance(layer, keras.layers.InputLayer) and inputs == [] and index == 0
    layer, inputs, index = compat.producer(second)
    assert layer is pair and inputs == [total] and index == 1
    assert compat.producer(first)[2] == 0


def test_call_count():
    images = keras.Input((4,))
    once, shared = keras.layers.Dense(4, name="once"), keras.layers.Dense(4, name="shared")
    model = keras.Model(images, shared(shared(once(images))))
    assert compat.call_count(model.get_layer("once")) == 1
    assert compat.call_count(model.get_layer("shared")) == 2
    assert compat.call_count(keras.layers.Dense(1)) == 0


# --------------------------------------------------------------------------- training


def _tiny_classifier():
    images = keras.Input((3,))
    return keras.Model(images, keras.layers.Dense(2, activation="softmax", name="probs")(images))


def test_loss_tracker_is_the_loss_keras_logs(rng):
    model = _tiny_classifier()
    with pytest.raises(RuntimeError, match="compile it"):
        compat.loss_tracker(model)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    assert model.metrics[0] is tracker
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.integers(0, 2, 8)
    logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert float(tracker.result()) == pytest.approx(logs["loss"])
    tracker.update_state(123.0, sample_weight=1e6)  # a custom step's update is what Keras reports
    assert float(model.get_metrics_result()["loss"]) == pytest.approx(float(tracker.result()))


class _Replicas:
    """A stand-in strategy with several replicas, for the loss scaling."""

    def __init__(self, replicas):
        self.num_replicas_in_sync = replicas


@pytest.mark.parametrize("replicas", [1, 4])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_loss_scaling_agrees_with_keras(monkeypatch, replicas, dtype):
    from keras.src.losses import loss as keras_loss

    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: _Replicas(replicas))
    value = tf.constant(3.0, dtype)
    for ours, theirs in ((compat.scale_loss_for_distribution, keras_loss.scale_loss_for_distribution),
                         (compat.unscale_loss_for_distribution, keras_loss.unscale_loss_for_distribution)):
        mine, keras_value = ours(value), theirs(value)
        assert mine.dtype == keras_value.dtype
        assert float(mine) == float(keras_value)
    assert float(compat.scale_loss_for_distribution(value)) == pytest.approx(3.0 / replicas, rel=1e-3)
    assert float(compat.unscale_loss_for_distribution(value)) == 3.0 * replicas


def test_symbolic_build(rng):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="probs")(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert not model.optimizer.built
    compat.symbolic_build(model, (rng.normal(size=(4, 3)).astype("float32"), rng.integers(0, 2, 4)))
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    assert model._compile_metrics.built  # what `fit` would otherwise build from its first batch


def test_forget_distribute_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _tiny_classifier()
    assert model.distribute_strategy is strategy
    compat.forget_distribute_strategy(model)
    assert model.distribute_strategy is tf.distribute.get_strategy()
    with strategy.scope():
        assert model.distribute_strategy is strategy


def test_override_step(rng):
    model = _tiny_classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    calls = []

    def step(data):
        calls.append(data)
        return {"marker": tf.constant(7.0)}

    compat.override_step(model, "train_step", step)
    compat.override_step(model, "test_step", step)
    x, y = rng.normal(size=(4, 3)).astype("float32"), rng.integers(0, 2, 4)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert history.history["marker"] == [7.0]
    assert model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True) == {"marker": 7.0}
    assert calls
    with pytest.raises(ValueError, match="train_step, test_step or predict_step"):
        compat.override_step(model, "call", step)


# --------------------------------------------------------------------------- saving


def test_save_legacy_h5_weights(tmp_path, rng):
    model = _nested_model()
    for weight in model.weights:
        weight.assign(rng.normal(size=weight.shape).astype(weight.dtype))
    path = tmp_path / "weights.h5"
    compat.save_legacy_h5_weights(model, path)
    with h5py.File(path, "r") as handle:
        names = [name.decode() if isinstance(name, bytes) else name for name in handle.attrs["layer_names"]]
        assert "composite" in names and "nested" in names and "keras_version" in handle.attrs
    fresh = _nested_model()
    fresh.load_weights(path)
    for saved, loaded in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
