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
from zoo.saved_model import fold_batch_norm, with_compute_dtype

ROOT = Path(__file__).resolve().parents[2]
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")
ROIS = np.array([[[0, 0, 40, 40], [10, 20, 60, 64], [0, 0, 0, 0]], [[4, 4, 30, 50], [0, 0, 0, 0], [0, 0, 0, 0]]],
                "float32")


def tiny_classifier(rng):
    model = zoo.build("resnet18", input_shape=(32, 32, 3), classes=3, depths=(1, 1, 1, 1))
    randomize_batch_norm(model, rng)
    return model


def tiny_detector(input_shape=(None, None, 3)):
    return zoo.build("fast_rcnn_vgg16", num_classes=2, fc_units=32, max_detections=5, score_threshold=0.0,
                     input_shape=input_shape)


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
    loaded = tf.saved_model.load(directory)
    signature = loaded.signatures["serving_default"]
    result = {}
    for key, value in arrays.items():  # input_tensor_<i>[, rois_<i>]: one call per image size
        if not key.startswith("input_tensor"):
            continue
        index = key.rsplit("_", 1)[1]
        extra = {"rois": tf.constant(arrays["rois_" + index])} if "rois_" + index in arrays else {}
        served = signature(input_tensor=tf.constant(value), **extra)
        called = loaded(tf.constant(value), *extra.values())  # the TF OD API's detect_fn(x)
        for name, tensor in served.items():
            np.testing.assert_array_equal(called[name].numpy(), tensor.numpy())
            result[name + "_" + index] = tensor.numpy()
    np.savez(outputs, **result)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("zoo", "layers", "training"))
assert not loaded, f"the SavedModel pulled in the zoo: {loaded}"
print("zoo" in sys.modules)
"""


def _resized(images, size, resize):
    """What the graph feeds the model: `layers.image_resize`'s resize of each image."""
    from layers.image_resize import resize_image

    return np.stack([np.asarray(resize_image(image.astype("float32"), size, resize=resize)[0]) for image in images])


@pytest.mark.slow
def test_every_task_serves_in_a_process_without_the_zoo_at_other_image_sizes(tmp_path, rng):
    classifier, detector, segmenter = tiny_classifier(rng), tiny_detector((64, 64, 3)), segmentation_stand_in()
    randomize_batch_norm(segmenter, rng)
    for layer in ("box_regression",):  # zero deltas: every detection is one of the RoIs, exactly
        for weight in detector.get_layer(layer).weights:
            weight.assign(np.zeros(weight.shape, "float32"))
    sizes = {"classification": [(40, 56), (20, 24)], "detection": [(96, 128), (80, 40)],
             "segmentation": [(48, 40), (31, 17)]}
    images = {task: [pixels(rng, (2, *size, 3)) for size in task_sizes] for task, task_sizes in sizes.items()}
    rois = [np.stack([_rois(size, rng) for _ in range(2)]) for size in sizes["detection"]]
    models = {"classification": classifier, "detection": detector, "segmentation": segmenter}
    arguments = []
    for task, model in models.items():
        directory = zoo.export(model, tmp_path / task, class_names=["cat", "dog", "bird"][:2 if task == "detection" else 3]
                               if task != "segmentation" else ["circle", "square"])
        inputs = {f"input_tensor_{i}": batch for i, batch in enumerate(images[task])}
        if task == "detection":
            inputs.update({f"rois_{i}": batch for i, batch in enumerate(rois)})
        np.savez(tmp_path / f"{task}_in.npz", **inputs)
        arguments += [str(directory), str(tmp_path / f"{task}_in.npz"), str(tmp_path / f"{task}_out.npz")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", CHILD, *arguments], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip().splitlines()[-1] == "False"
    served = {task: dict(np.load(tmp_path / f"{task}_out.npz")) for task in models}

    for i, batch in enumerate(images["classification"]):  # stretched to 32 x 32, as training did
        expected = np.asarray(classifier(_resized(batch, (32, 32), "stretch"), training=False))
        np.testing.assert_allclose(served["classification"][f"probabilities_{i}"], expected, atol=1e-5)
        np.testing.assert_array_equal(served["classification"][f"classes_{i}"], expected.argmax(-1))
        assert served["classification"][f"classes_{i}"].dtype == np.int32

    for i, (batch, size) in enumerate(zip(images["detection"], sizes["detection"])):
        got = {key: served["detection"][f"{key}_{i}"] for key in
               ("detection_boxes", "detection_scores", "detection_classes", "num_detections")}
        assert all(value.dtype == np.float32 for value in got.values())  # the TF OD API's dtypes
        # Letterboxed into 64 x 64 and back: each box, in the input image's pixels, is one of its RoIs.
        scale = np.array([size[0], size[1], size[0], size[1]], "float32")
        for image in range(2):
            count = int(got["num_detections"][image])
            assert count > 0 and got["detection_classes"][image, :count].min() >= 1
            for box in got["detection_boxes"][image, :count] * scale:
                assert np.abs(rois[i][image] - box).max(axis=1).min() < 0.05, (box, rois[i][image])
        model_rois = rois[i] * (_content(size, (64, 64)) / np.asarray(size, "float32")).repeat(2)[[0, 2, 1, 3]]
        raw = detector({"images": _resized(batch, (64, 64), "letterbox"), "rois": model_rois}, training=False)
        np.testing.assert_allclose(got["detection_scores"], np.asarray(raw["scores"]), atol=1e-5)

    for i, batch in enumerate(images["segmentation"]):  # takes any size: no resize
        logits = np.asarray(segmenter(batch.astype("float32"), training=False))
        np.testing.assert_allclose(served["segmentation"][f"logits_{i}"], logits, atol=1e-4)
        np.testing.assert_array_equal(served["segmentation"][f"semantic_predictions_{i}"], logits.argmax(-1))

    label_map = (tmp_path / "detection" / "assets" / "label_map.pbtxt").read_text()
    assert "id: 1\n  name: 'cat'" in label_map and "id: 2\n  name: 'dog'" in label_map
    metadata = json.loads((tmp_path / "detection" / "zoo_export.json").read_text())
    assert metadata["class_names"] == ["cat", "dog"] and metadata["options"]["resize"] == "letterbox"
    assert metadata["inputs"]["input_tensor"] == {"dtype": "uint8", "shape": [None, None, None, 3]}

    # TensorFlow's own client, which nobody here wrote.
    shown = subprocess.run([str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(tmp_path / "detection")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in ("signature_def['serving_default']", "inputs['input_tensor']", "inputs['rois']", "dtype: DT_UINT8",
                 "outputs['detection_boxes']", "outputs['num_detections']"):
        assert name in shown.stdout
    np.save(tmp_path / "photo.npy", images["classification"][0])
    ran = subprocess.run([str(SAVED_MODEL_CLI), "run", "--dir", str(tmp_path / "classification"), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"input_tensor={tmp_path / 'photo.npy'}",
                          "--outdir", str(tmp_path / "cli_out")], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "cli_out" / "probabilities.npy"),
                               served["classification"]["probabilities_0"], atol=1e-6)


def _rois(size, rng):
    """Three RoIs inside an image of `size`, as `[ymin, xmin, ymax, xmax]` pixels."""
    height, width = size
    top, left = rng.uniform(0, 0.5, 3) * height, rng.uniform(0, 0.5, 3) * width
    return np.stack([top, left, top + rng.uniform(0.2, 0.5, 3) * height, left + rng.uniform(0.2, 0.5, 3) * width],
                    1).astype("float32")


def _content(size, output_size):
    from layers.image_resize import resized_size

    return np.asarray(resized_size(size, output_size, resize="letterbox"), "float32")


# --------------------------------------------------------------------------- options


def test_fixed_batch_jit_compile_and_fold_batch_norm_match_the_model(tmp_path, rng):
    model = tiny_classifier(rng)
    images = pixels(rng, (2, 32, 32, 3))
    expected = np.asarray(model(images.astype("float32"), training=False))
    directory = zoo.export(model, tmp_path / "xla", batch_size=2, jit_compile=True, fold_batch_norm=True)
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["input_tensor"].shape.as_list() == [2, None, None, 3]
    # XLA on the CPU reorders float sums: 1e-5 on probabilities.
    np.testing.assert_allclose(signature(input_tensor=tf.constant(images))["probabilities"].numpy(), expected, atol=1e-5)
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
    served = serve(zoo.export(model, tmp_path / compute_dtype, compute_dtype=compute_dtype), input_tensor=images)
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


def test_fold_batch_norm_folds_torchvisions_frozen_batch_norm(rng):
    # faster_rcnn_resnet50_fpn's convolutions (no bias) are each followed by a frozen batch
    # norm with torchvision's buffers; folded, the convolution computes both.
    from layers.frozen_batch_norm import FrozenBatchNormalization

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = FrozenBatchNormalization(name="conv_bn")(x)
    x = keras.layers.Conv2D(2, 1, name="head")(keras.layers.ReLU()(x))
    model = keras.Model(inputs, x)
    bn = model.get_layer("conv_bn")
    for variable, low, high in ((bn.weight, 0.5, 2.0), (bn.bias, -1.0, 1.0), (bn.running_mean, -1.0, 1.0),
                                (bn.running_var, 0.5, 3.0)):
        variable.assign(rng.uniform(low, high, variable.shape).astype("float32"))
    values = rng.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    folded = fold_batch_norm(model)
    assert folded.folded_batch_norms == ["conv_bn"]
    assert not any(isinstance(layer, FrozenBatchNormalization) for layer in folded.layers)
    # NumPy: the convolution's output at one pixel, normalised with the frozen statistics.
    kernel = model.get_layer("conv").get_weights()[0]
    conv = np.einsum("hwc,hwco->o", values[0, 2:5, 2:5], kernel)
    scale = np.asarray(bn.weight) / np.sqrt(np.asarray(bn.running_var) + 1e-5)
    expected = (conv - np.asarray(bn.running_mean)) * scale + np.asarray(bn.bias)
    pixel = keras.Model(folded.inputs, folded.get_layer("conv").output)(values)[0, 3, 3]
    np.testing.assert_allclose(np.asarray(pixel), expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(folded(values)), np.asarray(model(values)), atol=1e-5)


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


@pytest.mark.slow
def test_detector_with_xla_and_with_sliding_window_proposals_in_the_graph(tmp_path, rng):
    from zoo.detection.proposals import SlidingWindowProposals

    detector = tiny_detector()
    images = pixels(rng, (2, 64, 64, 3))
    raw = detector({"images": images.astype("float32"), "rois": ROIS}, training=False)
    # XLA compiles the whole detector, its NMS included (layers.boxes.padded_nms).
    directory = zoo.export(detector, tmp_path / "xla", jit_compile=True)
    served = serve(directory, input_tensor=images, rois=ROIS)
    assert b"_XlaMustCompile" in (directory / "saved_model.pb").read_bytes()
    np.testing.assert_allclose(served["detection_boxes"] * 64.0, np.asarray(raw["boxes"]), atol=1e-3)
    np.testing.assert_allclose(served["detection_scores"], np.asarray(raw["scores"]), atol=1e-4)

    options = {"stride": 16, "scales": [32.0, 48.0], "aspect_ratios": [1.0], "max_proposals": 20}
    directory = zoo.export(detector, tmp_path / "windows", proposals="sliding_windows", proposal_options=options)
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["input_tensor"]
    served = {k: v.numpy() for k, v in signature(input_tensor=tf.constant(images)).items()}
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
    before = serve(target, input_tensor=images)["logits"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zoo.export(model, target)

    def broken_write(module, endpoint, path, metadata):
        Path(path, "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(importlib.import_module("zoo.saved_model"), "_write", broken_write)
    other = segmentation_stand_in()
    with pytest.raises(OSError, match="disk full"):
        zoo.export(other, target, overwrite=True)
    np.testing.assert_array_equal(serve(target, input_tensor=images)["logits"], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # no temporary left beside it
    monkeypatch.undo()

    replaced = zoo.export(other, target, overwrite=True)
    np.testing.assert_allclose(serve(replaced, input_tensor=images)["logits"], np.asarray(other(images.astype("float32"))),
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
    np.testing.assert_allclose(serve(out, input_tensor=images)["probabilities"],
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
