"""SavedModel export: each task's signature in a TensorFlow-only process, each option against the
unexported model, batch-norm folding, atomic writes and the `zoo export` command.

Models are tiny (ResNet-18 with one block per stage at 32 x 32, Fast R-CNN VGG16 with 32-unit
fc layers at 64 x 64, a two-convolution stand-in for DeepLab-v3+'s `[B, H, W, K]` logits).
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from layers import PixelNormalization
from tests.helpers import randomize_batch_norm
from zoo import cli
from zoo.export import fold_batch_norm, with_compute_dtype

ROOT = Path(__file__).resolve().parents[2]
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")
ROIS = np.array([[[0, 0, 40, 40], [10, 20, 60, 64], [0, 0, 0, 0]], [[4, 4, 30, 50], [0, 0, 0, 0], [0, 0, 0, 0]]],
                "float32")


def tiny_classifier(rng):
    model = zoo.build("resnet18", input_shape=(32, 32, 3), classes=3, depths=(1, 1, 1, 1))
    randomize_batch_norm(model, rng)
    return model


def tiny_detector():
    return zoo.build("fast_rcnn_vgg16", num_classes=2, fc_units=32, max_detections=5, score_threshold=0.0)


def segmentation_stand_in():
    """DeepLab-v3+'s contract: raw pixels in, logits `[B, H, W, K]` at the input size out."""
    images = keras.Input((None, None, 3), name="images")
    x = PixelNormalization.from_preset("tf", name="preprocessing")(images)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    logits = keras.layers.Conv2D(3, 1, name="logits")(x)
    return keras.Model(images, logits, name="segmentation_stand_in")


def pixels(rng, shape):
    return rng.integers(0, 256, size=shape).astype("uint8")


def serve(directory, **inputs):
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return {key: value.numpy() for key, value in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


# --------------------------------------------------------------------------- every task, TF only

CHILD = """
import sys, numpy as np, tensorflow as tf
for directory, inputs, outputs in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    arrays = dict(np.load(inputs))
    signature = tf.saved_model.load(directory).signatures["serving_default"]
    result = signature(**{key: tf.constant(value) for key, value in arrays.items()})
    np.savez(outputs, **{key: value.numpy() for key, value in result.items()})
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("zoo", "layers", "training"))
assert not loaded, f"the SavedModel pulled in the zoo: {loaded}"
print("zoo" in sys.modules)
"""


def test_every_task_serves_in_a_process_without_the_zoo(tmp_path, rng):
    classifier, detector, segmenter = tiny_classifier(rng), tiny_detector(), segmentation_stand_in()
    randomize_batch_norm(segmenter, rng)
    images = pixels(rng, (2, 64, 64, 3))
    cases = {
        "classification": (classifier, {"images": pixels(rng, (2, 32, 32, 3))}),
        "detection": (detector, {"images": images, "rois": ROIS}),
        "segmentation": (segmenter, {"images": pixels(rng, (2, 48, 40, 3))}),
    }
    arguments = []
    for task, (model, inputs) in cases.items():
        directory = zoo.export(model, tmp_path / task)
        np.savez(tmp_path / f"{task}_in.npz", **inputs)
        arguments += [str(directory), str(tmp_path / f"{task}_in.npz"), str(tmp_path / f"{task}_out.npz")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", CHILD, *arguments], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip().splitlines()[-1] == "False"

    served = {task: dict(np.load(tmp_path / f"{task}_out.npz")) for task in cases}
    as_float = {task: {k: v.astype("float32") if k in ("images",) else v for k, v in inputs.items()}
                for task, (_, inputs) in cases.items()}

    expected = np.asarray(classifier(as_float["classification"]["images"], training=False))
    assert sorted(served["classification"]) == ["classes", "probabilities"]
    np.testing.assert_allclose(served["classification"]["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["classification"]["classes"], expected.argmax(-1))

    raw = detector(as_float["detection"], training=False)
    got = served["detection"]
    assert sorted(got) == ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]
    np.testing.assert_allclose(got["detection_boxes"] * 64.0, np.asarray(raw["boxes"]), atol=1e-3)
    assert got["detection_boxes"].max() <= 1.0
    np.testing.assert_allclose(got["detection_scores"], np.asarray(raw["scores"]), atol=1e-5)
    np.testing.assert_array_equal(got["detection_classes"], np.asarray(raw["classes"]))
    np.testing.assert_array_equal(got["num_detections"], np.asarray(raw["num_detections"]))
    assert got["num_detections"][0] > 0 and got["detection_classes"].min() >= 0

    logits = np.asarray(segmenter(as_float["segmentation"]["images"], training=False))
    np.testing.assert_allclose(served["segmentation"]["logits"], logits, atol=1e-4)
    assert served["segmentation"]["semantic_predictions"].shape == (2, 48, 40)
    np.testing.assert_array_equal(served["segmentation"]["semantic_predictions"], logits.argmax(-1))

    shown = subprocess.run([str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(tmp_path / "detection")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serving_default']" in shown.stdout
    for name in ("inputs['images']", "inputs['rois']", "dtype: DT_UINT8", "outputs['detection_boxes']",
                 "outputs['num_detections']"):
        assert name in shown.stdout
    metadata = json.loads((tmp_path / "detection" / "zoo_export.json").read_text())
    assert metadata["task"] == "detection" and metadata["inputs"]["images"]["dtype"] == "uint8"


# --------------------------------------------------------------------------- options


def test_fixed_batch_jit_compile_and_fold_batch_norm_match_the_model(tmp_path, rng):
    model = tiny_classifier(rng)
    images = pixels(rng, (2, 32, 32, 3))
    expected = np.asarray(model(images.astype("float32"), training=False))
    directory = zoo.export(model, tmp_path / "xla", batch_size=2, jit_compile=True, fold_batch_norm=True)
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].shape.as_list() == [2, 32, 32, 3]
    # XLA on the CPU reorders float sums: 1e-5 on probabilities.
    np.testing.assert_allclose(signature(images=tf.constant(images))["probabilities"].numpy(), expected, atol=1e-5)
    assert b"_XlaMustCompile" in (directory / "saved_model.pb").read_bytes()
    metadata = json.loads((directory / "zoo_export.json").read_text())
    assert metadata["options"]["jit_compile"] and metadata["options"]["fold_batch_norm"]


@pytest.mark.parametrize("compute_dtype, atol", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_mixed_precision_export_matches_float32_within_tolerance(compute_dtype, atol, tmp_path, rng):
    model = tiny_classifier(rng)
    images = pixels(rng, (2, 32, 32, 3))
    expected = np.asarray(model(images.astype("float32"), training=False))
    rebuilt = with_compute_dtype(model, compute_dtype)
    assert rebuilt.get_layer("conv2_block1_1_conv").compute_dtype == compute_dtype
    assert rebuilt.get_layer("conv2_block1_1_conv").kernel.dtype == "float32"
    served = serve(zoo.export(model, tmp_path / compute_dtype, compute_dtype=compute_dtype), images=images)
    assert served["probabilities"].dtype == np.float32
    np.testing.assert_allclose(served["probabilities"], expected, atol=atol)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_mixed_precision_keeps_the_detector_heads_in_float32():
    rebuilt = with_compute_dtype(tiny_detector(), "float16")
    assert rebuilt.get_layer("block1_conv1").compute_dtype == "float16"
    assert rebuilt.get_layer("class_probs").compute_dtype == "float32"
    assert rebuilt.get_layer("box_regression").compute_dtype == "float32"


def test_fold_batch_norm_equals_the_model_and_removes_every_batch_norm(rng):
    model = tiny_classifier(rng)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    folded = fold_batch_norm(model)
    batch_norms = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert folded.folded_batch_norms == sorted(batch_norms)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert folded.get_layer("conv1_conv").use_bias
    np.testing.assert_allclose(np.asarray(folded(images)), np.asarray(model(images, training=False)), atol=1e-5)


def test_fold_batch_norm_handles_depthwise_separable_dense_and_leaves_shared_outputs(rng):
    # A hand-checked case per foldable kind, and a batch norm whose input has a second reader
    # (the skip connection), which must not fold.
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(inputs)
    x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="separable")(x)
    y = keras.layers.BatchNormalization(name="separable_bn", center=False)(y)
    z = keras.layers.Conv2D(8, 1, name="shared")(y)
    skip = keras.layers.BatchNormalization(name="shared_bn")(z)
    x = keras.layers.Add(name="add")([skip, z])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(5, name="dense")(x)
    outputs = keras.layers.BatchNormalization(name="dense_bn")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.5, channels))
    folded = fold_batch_norm(model)
    assert folded.folded_batch_norms == ["dense_bn", "depthwise_bn", "separable_bn"]
    assert isinstance(folded.get_layer("shared_bn"), keras.layers.BatchNormalization)
    values = rng.normal(0, 1, (3, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(folded(values)), np.asarray(model(values, training=False)), atol=1e-4)
    with pytest.raises(TypeError, match="functional keras.Model"):
        fold_batch_norm(keras.Sequential())


def test_detector_with_xla_and_with_sliding_window_proposals_in_the_graph(tmp_path, rng):
    from zoo.detection.proposals import SlidingWindowProposals

    detector = tiny_detector()
    images = pixels(rng, (2, 64, 64, 3))
    raw = detector({"images": images.astype("float32"), "rois": ROIS}, training=False)
    # XLA compiles everything up to the NMS, which stays outside (it has no XLA kernel).
    served = serve(zoo.export(detector, tmp_path / "xla", jit_compile=True), images=images, rois=ROIS)
    np.testing.assert_allclose(served["detection_boxes"] * 64.0, np.asarray(raw["boxes"]), atol=1e-3)
    np.testing.assert_allclose(served["detection_scores"], np.asarray(raw["scores"]), atol=1e-4)

    options = {"stride": 16, "scales": [32.0, 48.0], "aspect_ratios": [1.0], "max_proposals": 20}
    directory = zoo.export(detector, tmp_path / "windows", proposals="sliding_windows", proposal_options=options)
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["images"]
    served = {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}
    rois = np.asarray(SlidingWindowProposals(**options)(images))
    raw = detector({"images": images.astype("float32"), "rois": rois}, training=False)
    np.testing.assert_allclose(served["detection_boxes"] * 64.0, np.asarray(raw["boxes"]), atol=1e-3)
    np.testing.assert_array_equal(served["detection_classes"], np.asarray(raw["classes"]))


class _NMSInside(keras.layers.Layer):
    """Adds 0 times a count from combined NMS, an op with no XLA kernel, in a classifier."""

    def call(self, x):
        boxes = tf.reshape(x, [tf.shape(x)[0], -1, 1, 4])[:, :8]
        scores = tf.reshape(x, [tf.shape(x)[0], -1, 1])[:, :8]
        count = tf.image.combined_non_max_suppression(boxes, scores, 4, 4)[3]
        return x + 0.0 * tf.cast(count, x.dtype)[:, None, None, None]


def test_bad_options_are_clear_errors(tmp_path, rng):
    model = tiny_classifier(rng)
    with pytest.raises(ValueError, match="batch_size must be None"):
        zoo.export(model, tmp_path / "a", batch_size=0)
    with pytest.raises(ValueError, match=r"image_size=\(64, 64\) disagrees with the model's fixed input height 32"):
        zoo.export(model, tmp_path / "a", image_size=(64, 64))
    with pytest.raises(ValueError, match="compute_dtype must be"):
        zoo.export(model, tmp_path / "a", compute_dtype="int8")
    with pytest.raises(ValueError, match="proposals= is for a detector"):
        zoo.export(model, tmp_path / "a", proposals="sliding_windows")
    with pytest.raises(ValueError, match="needs the classifier top"):
        zoo.export(zoo.build("resnet18", include_top=False, pooling="avg", depths=(1, 1, 1, 1)), tmp_path / "a")
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(_NMSInside()(inputs)))
    with pytest.raises(ValueError, match="XLA cannot compile this model"):
        zoo.export(keras.Model(inputs, outputs), tmp_path / "a", jit_compile=True)
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- atomic


def test_existing_directory_is_refused_and_a_failed_export_leaves_the_old_one(tmp_path, rng, monkeypatch):
    model = segmentation_stand_in()
    images = pixels(rng, (1, 16, 16, 3))
    target = zoo.export(model, tmp_path / "seg")
    before = serve(target, images=images)["logits"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zoo.export(model, target)

    def broken_write(archive, path, metadata):
        Path(path, "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(importlib.import_module("zoo.export"), "_write", broken_write)
    other = segmentation_stand_in()
    with pytest.raises(OSError, match="disk full"):
        zoo.export(other, target, overwrite=True)
    np.testing.assert_array_equal(serve(target, images=images)["logits"], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # no temporary left beside it
    monkeypatch.undo()

    replaced = zoo.export(other, target, overwrite=True)
    np.testing.assert_allclose(serve(replaced, images=images)["logits"], np.asarray(other(images.astype("float32"))),
                               atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


# --------------------------------------------------------------------------- command line


def test_zoo_export_command(tmp_path, rng, capsys):
    source = zoo.build("resnet18", input_shape=(32, 32, 3), classes=3, depths=(1, 1, 1, 1))
    source.save_weights(tmp_path / "trained.weights.h5")
    out = tmp_path / "exported"
    argv = ["export", "resnet18", "--weights", str(tmp_path / "trained.weights.h5"), "--out", str(out),
            "--set", "input_shape=(32, 32, 3)", "--set", "classes=3", "--set", "depths=(1, 1, 1, 1)", "--batch-size", "4"]
    assert cli.main(argv) == 0
    assert str(out) in capsys.readouterr().err
    images = pixels(rng, (4, 32, 32, 3))
    np.testing.assert_allclose(serve(out, images=images)["probabilities"],
                               np.asarray(source(images.astype("float32"))), atol=1e-5)
    assert cli.main(argv) == 2
    assert "exists; pass overwrite=True" in capsys.readouterr().err


def test_zoo_export_refuses_a_keras_file_with_a_lambda_layer(tmp_path, capsys):
    # safe_mode=True: a .keras file that would run arbitrary Python on loading is an error.
    inputs = keras.Input((8, 8, 3), name="images")
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    assert cli.main(["export", "resnet18", "--weights", str(tmp_path / "lambda.keras"), "--out", str(tmp_path / "out")]) == 2
    assert "safe_mode" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_removes_stale_partial_folders_and_follows_the_umask(tmp_path):
    import time

    # An export killed before its rename leaves `.NAME.<random>.partial`: the next export into the
    # same folder removes those untouched for an hour, and nothing else.
    stale, fresh = tmp_path / ".old_export.k3j4h5g6.partial", tmp_path / ".other.a1b2c3d4.partial"
    for folder in (stale, fresh):
        (folder / "variables").mkdir(parents=True)
        (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    for path in (stale, stale / "variables", stale / "variables" / "variables.data-00000-of-00001"):
        os.utime(path, (hours_ago, hours_ago))
    model = zoo.build("resnet18", depths=(1, 1, 1, 1), classes=3, input_shape=(32, 32, 3))
    mask = os.umask(0o022)
    try:
        directory = zoo.export(model, tmp_path / "exported")
    finally:
        os.umask(mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.a1b2c3d4.partial", "exported"]
    assert os.stat(directory).st_mode & 0o777 == 0o755  # not mkdtemp's 0700
