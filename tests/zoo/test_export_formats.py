"""ONNX (onnxruntime) and TFLite (the LiteRT interpreter) exports against the Keras model.

Each parity test feeds the same pixels to the exported file and to the Keras model after
`layers.image_resize` (what the SavedModel does in its graph), at the model's size and at sizes
that shrink and grow. Models are tiny (ResNet-18 with one block per stage at 32 x 32, LeNet-5,
MobileNet-v2 at alpha 0.35, DeepLab-v3+ on MobileNet-v2 at 64 x 64), their batch norms given
the statistics of random pixels so that their outputs vary with the input and a wrong
conversion shows.
"""

import json
import os
import sys

import keras
import numpy as np
import onnxruntime
import pytest
from ai_edge_litert.interpreter import Interpreter

import zoo
from layers import compat
from layers.image_resize import resize_image
from zoo import cli
from zoo.export_formats import FORMATS, METADATA_KEY, export_as, export_onnx, export_tflite


def pixels(rng, shape):
    return rng.integers(0, 256, size=shape).astype("uint8")


def resized(images, size, resize):
    return np.stack([np.asarray(resize_image(image.astype("float32"), size, resize=resize)[0]) for image in images])


def onnx_session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session, **inputs):
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def classifier(name, rng):
    settings = {
        "resnet18": dict(input_shape=(32, 32, 3), classes=3, depths=(1, 1, 1, 1)),
        "lenet5": dict(classes=4),
        "mobilenetv2": dict(input_shape=(32, 32, 3), classes=5, alpha=0.35),
    }[name]
    model = calibrated(zoo.build(name, **settings), rng)
    if name == "lenet5":  # tanh and no batch norm: near-uniform probabilities, sharpened
        kernel = model.get_layer("predictions").kernel
        kernel.assign(kernel * 30.0)
    return model


def segmenter(rng):
    return calibrated(zoo.build("deeplabv3plus_mobilenetv2", num_classes=4, input_shape=(64, 64, 3)), rng)


def calibrated(model, rng):
    """`model` with each batch norm's moving statistics set to those of its input on random
    pixels (every layer before it already normalised), as precise batch norm would: a random
    network's activations then keep their scale through every layer, so its outputs depend on
    its input (with made-up statistics MobileNet-v2's pooled features hardly do)."""
    norms = [layer for layer in compat.flatten_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    settings = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        layer.momentum, layer.trainable = 0.0, True
    model(pixels(rng, (8, *model.input.shape[1:])).astype("float32"), training=True)
    for layer, (momentum, trainable) in zip(norms, settings):
        layer.momentum, layer.trainable = momentum, trainable
    return model


# --------------------------------------------------------------------------- ONNX


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "lenet5", "mobilenetv2"])
def test_onnx_classifier_reproduces_the_keras_model_at_any_input_size(name, tmp_path, rng):
    model = classifier(name, rng)
    height, width, channels = model.input.shape[1:]
    path = export_onnx(model, tmp_path / f"{name}.onnx", class_names=[f"c{i}" for i in range(model.output.shape[-1])])
    session = onnx_session(path)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("input_tensor", "tensor(uint8)")]
    for size in [(height, width), (height * 2 - 3, width + 9), (height - 7, width - 5)]:  # same, shrink, grow
        images = pixels(rng, (2, *size, channels))
        got = run_onnx(session, input_tensor=images)
        expected = np.asarray(model(resized(images, (height, width), "stretch"), training=False))
        difference = np.abs(got["probabilities"] - expected).max()
        assert difference < 1e-4, (size, difference)  # float sums in another order (measured <= 3e-5)
        np.testing.assert_array_equal(got["classes"], expected.argmax(-1))
        assert got["classes"].dtype == np.int32 and got["probabilities"].dtype == np.float32
    metadata = json.loads({entry.key: entry.value for entry in _onnx_model(path).metadata_props}[METADATA_KEY])
    assert metadata["task"] == "classification" and metadata["class_names"][0] == "c0"
    assert metadata["inputs"]["input_tensor"] == {"dtype": "uint8", "shape": [None, None, None, channels]}
    assert metadata["options"]["resize"] == "stretch" and metadata["options"]["image_size"] == [height, width]


@pytest.mark.slow
def test_onnx_deeplab_reproduces_logits_and_masks(tmp_path, rng):
    model = segmenter(rng)
    session = onnx_session(export_onnx(model, tmp_path / "deeplab.onnx"))
    for size in [(64, 64), (90, 70), (40, 52)]:  # letterboxed into 64 x 64, masks at the input's size
        images = pixels(rng, (2, *size, 3))
        got = run_onnx(session, input_tensor=images)
        logits = np.asarray(model(resized(images, (64, 64), "letterbox"), training=False))
        difference = np.abs(got["logits"] - logits).max()
        assert difference < 1e-3 * max(1.0, np.abs(logits).max()), (size, difference)
        assert got["semantic_predictions"].shape == (2, *size)
        if size == (64, 64):
            agreement = (got["semantic_predictions"] == logits.argmax(-1)).mean()
        else:  # against the SavedModel's graph: crop to the content, resize back, argmax
            from zoo.saved_model import serving_function

            function, _, _ = serving_function(model)
            agreement = (got["semantic_predictions"] == function(images)["semantic_predictions"].numpy()).mean()
        assert agreement >= 0.99, (size, agreement)


@pytest.mark.slow
def test_onnx_refuses_a_detector_whose_roi_pooling_does_not_convert(tmp_path):
    # Fast R-CNN's exact RoI max pooling picks its table with tf.cond; tf2onnx turns it into an
    # ONNX If whose branches lose their input shapes, and leaves their StridedSlice unconverted.
    detector = zoo.build("fast_rcnn_vgg16", num_classes=2, fc_units=32, max_detections=5, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="cannot convert 'fast_rcnn_vgg16'.*StridedSlice"):
        export_onnx(detector, tmp_path / "detector.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary


# --------------------------------------------------------------------------- TFLite


def run_tflite(path, images):
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return runner(images=images)


@pytest.mark.slow
def test_tflite_mobilenetv2_reproduces_the_keras_model(tmp_path, rng):
    model = classifier("mobilenetv2", rng)
    path = export_tflite(model, tmp_path / "mobilenetv2.tflite")
    images = resized(pixels(rng, (1, 45, 38, 3)), (32, 32), "stretch")  # the client's resize
    got = run_tflite(path, images)
    expected = np.asarray(model(images, training=False))
    assert np.abs(got["probabilities"] - expected).max() < 1e-4  # XNNPACK's sums (measured 1.6e-5)
    np.testing.assert_array_equal(got["classes"], expected.argmax(-1))


@pytest.mark.slow
def test_tflite_deeplab_reproduces_logits_and_masks(tmp_path, rng):
    model = segmenter(rng)
    path = export_tflite(model, tmp_path / "deeplab.tflite")
    images = resized(pixels(rng, (1, 80, 50, 3)), (64, 64), "letterbox")
    got = run_tflite(path, images)
    logits = np.asarray(model(images, training=False))
    assert np.abs(got["logits"] - logits).max() < 1e-3 * max(1.0, np.abs(logits).max())
    assert (got["semantic_predictions"] == logits.argmax(-1)).mean() >= 0.99


def test_the_clients_resize_without_tensorflow_is_pillows_bilinear_on_float_pixels(rng):
    # What a TFLite client without TensorFlow can run: Pillow's BILINEAR widens its triangle
    # filter when shrinking, as TensorFlow's antialias does. On float ("F") images it matches.
    from PIL import Image

    for shape, size in [((75, 100, 3), (32, 32)), ((50, 37, 3), (32, 32)), ((20, 25, 3), (32, 48))]:
        image = pixels(rng, shape)
        expected = np.asarray(resize_image(image.astype("float32"), size, resize="stretch")[0])
        channels = [Image.fromarray(image[..., c].astype("float32")).resize(size[::-1], Image.BILINEAR)
                    for c in range(shape[-1])]
        assert np.abs(np.stack([np.asarray(c) for c in channels], -1) - expected).max() < 5e-3


# --------------------------------------------------------------------------- files and errors


def test_written_atomically_and_an_existing_file_kept_until_the_new_one_is_complete(tmp_path, rng, monkeypatch):
    model = classifier("lenet5", rng)
    target = tmp_path / "lenet5.onnx"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export_onnx(model, target)

    def fail(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(model, target, overwrite=True)
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.onnx"]
    export_onnx(model, target, overwrite=True)
    assert target.stat().st_size > 1000 and sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.onnx"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_bad_formats_paths_and_options_are_clear_errors(tmp_path, rng, monkeypatch):
    model = classifier("lenet5", rng)
    assert FORMATS == ("saved_model", "onnx", "tflite")
    with pytest.raises(ValueError, match=r"format must be one of \('saved_model', 'onnx', 'tflite'\), got 'onxx'"):
        export_as(model, tmp_path / "m.onnx", format="onxx")
    with pytest.raises(TypeError, match="format 'onnx' does not take jit_compile"):
        export_as(model, tmp_path / "m.onnx", format="onnx", jit_compile=True)
    with pytest.raises(ValueError, match=r"path must end with \.tflite"):
        export_tflite(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset must be an integer >= 18"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the [onnx] extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'zoo\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_zoo_export_format_command(tmp_path, rng, capsys):
    out = tmp_path / "lenet5.onnx"
    assert cli.main(["export", "lenet5", "--format", "onnx", "--out", str(out), "--set", "classes=4"]) == 0
    assert str(out) in capsys.readouterr().err
    images = pixels(rng, (1, 40, 30, 1))
    assert run_onnx(onnx_session(out), input_tensor=images)["probabilities"].shape == (1, 4)
    with pytest.raises(SystemExit):
        cli.main(["export", "lenet5", "--format", "caffe", "--out", str(tmp_path / "m")])
    assert "invalid choice: 'caffe'" in capsys.readouterr().err
    assert cli.main(["export", "lenet5", "--format", "tflite", "--jit-compile", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "does not take jit_compile" in capsys.readouterr().err


def _onnx_model(path):
    import onnx

    return onnx.load(str(path))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
