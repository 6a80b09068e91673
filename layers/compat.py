"""The one place where the zoo reaches into Keras's and TensorFlow's internals.

Every private attribute, private module or monkey-patch the zoo depends on goes through a
function here, each with a test in `tests/layers/test_compat.py` that fails by name when a
Keras or TensorFlow release moves it. `tests/layers/test_compat.py` also checks, from the
source, that no other module of `layers`, `training` or `zoo` (nor a notebook) imports
`keras.src` or `tensorflow.python` or touches the private attributes named below.
`setup.py` bounds Keras to the minor versions these tests ran on.

What is private, and why no public API does the job:
- `in_xla_context`: TensorFlow's `control_flow_util.GraphOrParentsInXlaContext`. The choice
  between a TensorFlow kernel and an XLA-compilable formulation is made at trace time, and
  only that helper sees the XLA context `jit_compile=True` enters.
- `flatten_layers`: `Layer._flatten_layers`. `Model.layers` stops at the top level and a
  composite layer (`layers.ASPP`) has no public list of its sublayers.
- `producer`, `call_count`: `KerasTensor._keras_history` and `Layer._inbound_nodes`, the
  functional graph. Keras 3 has no public accessor for the layer that produced a symbolic
  tensor, the inputs of that call, or how often a layer was called.
- `loss_tracker`: `Trainer._loss_tracker`, the "loss" metric that Keras's own steps update. A
  custom `train_step` that logs its loss the way Keras does updates that same metric, so that
  Keras's `test_step` and the logged "loss" stay one metric.
- `symbolic_build`, `forget_distribute_strategy`, `override_step`: the workarounds of
  keras-team/keras#20585 (`fit` under MultiWorkerMirroredStrategy, `training.fit`).
- `save_legacy_h5_weights`: Keras 2's weights-only HDF5 layout (keras.applications' published
  files), which Keras 3 reads but writes only from `keras.src.legacy`.

Replaced by public APIs (kept here because they are Keras's definitions, and a test checks
that Keras's own still agree): `scale_loss_for_distribution`, `unscale_loss_for_distribution`.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

try:
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover (a TensorFlow that moved it; test_compat fails by name)
    _control_flow_util = None

_warned_xla_fallback = False


# --------------------------------------------------------------------------- TensorFlow


def in_xla_context() -> bool:
    """True while tracing a function that XLA will compile (`tf.function(jit_compile=True)`,
    Keras's `jit_compile=True`), including functions nested inside one; False when executing
    eagerly or tracing a plain `tf.function`.

    Fallback: if a TensorFlow release removes the private helper, this answers True (with one
    warning) whenever a graph is being traced. Every caller's XLA formulation is correct outside
    XLA too, only slower, whereas a TensorFlow kernel chosen inside XLA may not compile at all
    (CropAndResize has no XLA kernel).

    Caveat: a nested `tf.function` first traced outside XLA keeps that trace when a
    `jit_compile=True` function calls it later (the trace cache does not key on the XLA
    context). Keras layers are not `tf.function`s, so models built from them are traced afresh
    under `jit_compile=True`.
    """
    global _warned_xla_fallback
    if tf.executing_eagerly():
        return False
    helper = getattr(_control_flow_util, "GraphOrParentsInXlaContext", None)
    if helper is None:
        if not _warned_xla_fallback:
            _warned_xla_fallback = True
            warnings.warn(
                "layers.compat.in_xla_context: TensorFlow no longer has "
                "control_flow_util.GraphOrParentsInXlaContext; every traced graph now takes the "
                "XLA formulation (correct, slower outside XLA)",
                RuntimeWarning,
                stacklevel=2,
            )
        return True
    return bool(helper(tf.compat.v1.get_default_graph()))


# --------------------------------------------------------------------------- layers and graphs


def flatten_layers(layer, *, include_self: bool = True, recursive: bool = True) -> list:
    """`layer` (if `include_self`) and its sublayers, each once, in Keras's order: a model's
    layers, a composite layer's sublayers, and (if `recursive`) theirs, depth first."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def producer(tensor) -> tuple:
    """`(layer, inputs, output_index)` of a symbolic KerasTensor: the layer (or nested model)
    whose call returned it, the list of KerasTensors that call took (empty for an `Input`), and
    which of the call's outputs it is."""
    layer, node_index, output_index = tensor._keras_history
    if isinstance(layer, keras.layers.InputLayer):
        return layer, [], output_index
    return layer, list(layer._inbound_nodes[node_index].input_tensors), output_index


def call_count(layer) -> int:
    """How many times `layer` has been called on symbolic inputs (the nodes of the graphs that
    use it): 1 for an ordinary layer of one functional model."""
    return len(layer._inbound_nodes)


# --------------------------------------------------------------------------- training


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """The compiled model's "loss" metric, the one Keras's own `train_step`/`test_step` update."""
    tracker = getattr(model, "_loss_tracker", None)
    if tracker is None:
        raise RuntimeError(f"model {model.name!r} has no loss tracker: compile it before fit/evaluate")
    return tracker


def scale_loss_for_distribution(value):
    """`value / replicas` under a `tf.distribute` strategy with several replicas (their
    gradients are summed), else `value`: what Keras's own `train_step` does to the loss."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = keras.ops.multiply(value, keras.ops.cast(1.0 / replicas, value.dtype))
    return value


def unscale_loss_for_distribution(value):
    """The inverse of `scale_loss_for_distribution`: `value * replicas` (the global loss that
    Keras logs)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = keras.ops.multiply(value, keras.ops.cast(replicas, value.dtype))
    return value


def symbolic_build(model: keras.Model, data_batch) -> None:
    """Builds a compiled model's layers, optimizer variables and compiled metrics from one batch,
    as `fit` does before its first step."""
    model._symbolic_build(data_batch=data_batch)


def forget_distribute_strategy(model: keras.Model) -> None:
    """Makes `fit`/`evaluate` take the strategy of the scope they run in instead of the one the
    model was built under."""
    model._distribute_strategy = None


def override_step(model: keras.Model, name: str, step) -> None:
    """Replaces `model.<name>` (`train_step`, `test_step`) on this instance by `step(data)`;
    `fit` and `evaluate` call the instance's attribute. Set as a plain instance attribute,
    past the attribute tracking of Keras and TensorFlow."""
    if name not in ("train_step", "test_step", "predict_step"):
        raise ValueError(f"override_step: name must be train_step, test_step or predict_step, got {name!r}")
    object.__setattr__(model, name, step)


# --------------------------------------------------------------------------- saving


def save_legacy_h5_weights(model: keras.Model, path) -> None:
    """Writes `model`'s weights to `path` in Keras 2's weights-only HDF5 layout (top-level
    `layer_names`, one group per layer), the layout of keras.applications' published files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


__all__ = [
    "call_count",
    "flatten_layers",
    "forget_distribute_strategy",
    "in_xla_context",
    "loss_tracker",
    "override_step",
    "producer",
    "save_legacy_h5_weights",
    "scale_loss_for_distribution",
    "symbolic_build",
    "unscale_loss_for_distribution",
]
