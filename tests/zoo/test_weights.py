"""Loading weights: keras.applications `.h5` files by layer name, reports, verified downloads,
the shipped manifest's schema.

Pretrained weights cannot be downloaded here, so the download path is tested against a local
HTTP server on 127.0.0.1 serving files that the test makes (tests/zoo/test_downloads.py).
"""

import functools
import hashlib
import http.server
import inspect
import json
import threading
import warnings

import keras
import numpy as np
import pytest

import zoo
from layers import compat
from zoo import weights as weights_lib
from tests.helpers import random_pixels, randomize_batch_norm

SHAPE = (64, 64, 3)


@pytest.fixture
def imagenet_like_file(tmp_path, rng):
    """A keras.applications ResNet50 (random weights) saved as its published files are."""
    reference = keras.applications.ResNet50(weights=None, input_shape=SHAPE, classes=1000)
    randomize_batch_norm(reference, rng)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    compat.save_legacy_h5_weights(reference, path)
    return reference, path


def test_h5_loads_by_layer_name_into_a_headless_model(imagenet_like_file, rng):
    reference, path = imagenet_like_file
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing of the model is missing
        model = zoo.build("resnet50", weights=str(path), include_top=False, input_shape=SHAPE)
    report = model.weights_load_report
    assert report.unused == ["predictions"]
    assert report.missing == []
    assert len(report.loaded) == len([layer for layer in model.layers if layer.weights])
    pixels = random_pixels(rng, (1,) + SHAPE)
    tap = keras.Model(reference.input, reference.get_layer("conv5_block3_out").output)
    expected = tap(keras.applications.resnet.preprocess_input(pixels.copy()), training=False)
    np.testing.assert_allclose(np.asarray(model(pixels, training=False)), np.asarray(expected), atol=1e-4)


def test_layers_missing_from_the_file_are_reported_and_warned(tmp_path):
    small = zoo.build("resnet18", include_top=False, input_shape=SHAPE)
    path = tmp_path / "backbone.h5"
    compat.save_legacy_h5_weights(small, path)
    with pytest.warns(UserWarning, match=r"missing from the file .*predictions"):
        model = zoo.build("resnet18", weights=str(path), input_shape=SHAPE, classes=3)
    assert model.weights_load_report.missing == ["predictions"]


def test_shape_mismatch_raises_and_changes_nothing(tmp_path):
    source = zoo.build("resnet18", input_shape=SHAPE, classes=7)
    path = tmp_path / "seven_classes.h5"
    compat.save_legacy_h5_weights(source, path)
    target = zoo.build("resnet18", input_shape=SHAPE, classes=3)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match=r"layer 'predictions' has weights of shapes"):
        weights_lib.load_weights_file(target, path)
    for old, new in zip(before, target.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras3_file_with_a_shape_mismatch_changes_nothing(tmp_path, suffix):
    source = zoo.build("resnet18", input_shape=SHAPE, classes=7)
    path = tmp_path / f"seven_classes{suffix}"
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    target = zoo.build("resnet18", input_shape=SHAPE, classes=3)
    before = [variable.numpy().copy() for variable in target.weights]
    with pytest.raises(ValueError, match=rf"weights file {path} does not fit the model: .*the model is unchanged"):
        weights_lib.load_weights_file(target, path)
    assert len(before) == len(target.weights)
    for old, variable in zip(before, target.weights):
        np.testing.assert_array_equal(old, variable.numpy())


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".keras"])
def test_a_truncated_weights_file_is_a_clear_error_naming_it(tmp_path, suffix):
    model = zoo.build("resnet18", include_top=False, input_shape=SHAPE)
    path = tmp_path / f"model{suffix}"
    if suffix == ".h5":
        compat.save_legacy_h5_weights(model, path)
    else:
        model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=rf"weights file {path} cannot be read"):
        weights_lib.load_weights_file(model, path)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_keras3_weights_file_round_trip(tmp_path, rng):
    source = zoo.build("resnet18", include_top=False, input_shape=SHAPE)
    path = tmp_path / "model.weights.h5"
    source.save_weights(path)
    model = zoo.build("resnet18", weights=str(path), include_top=False, input_shape=SHAPE)
    pixels = random_pixels(rng, (1,) + SHAPE)
    np.testing.assert_allclose(np.asarray(model(pixels)), np.asarray(source(pixels)), atol=1e-6)


def test_unknown_tag_and_bad_suffix_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"weights='no_such_tag': no such file and no manifest entry resnet18.no_such_tag"):
        zoo.build("resnet18", weights="no_such_tag", input_shape=SHAPE)
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"must end in .h5"):
        zoo.build("resnet18", weights=str(bad), input_shape=SHAPE)
    with pytest.raises(TypeError, match="weights must be None, a manifest tag or a file path"):
        zoo.build("resnet18", weights=3, input_shape=SHAPE)


def test_the_shipped_manifest_is_valid_and_names_real_models():
    entries = weights_lib.load_manifest()  # validates every entry's schema
    tags = {f"{entry['model']}.{entry['tag']}" for entry in entries}
    assert {"vgg16.imagenet", "vgg19.imagenet", "resnet50.imagenet", "resnet101.imagenet", "resnet152.imagenet",
            "deeplabv3plus_xception65.voc", "deeplabv3plus_mobilenetv2.voc", "mobilenetv2.imagenet",
            "xception.imagenet"} <= tags
    for entry in entries:
        assert entry["model"] in zoo.list_models(), entry["model"]
        assert zoo.describe(entry["model"]).task == entry["task"]
        if entry["hash"] is None:
            assert entry["hash_note"]


@pytest.mark.parametrize("entry", [e for e in weights_lib.load_manifest() if e.get("num_parameters")],
                         ids=lambda e: e["model"])
def test_manifest_parameter_counts_match_the_built_models(entry):
    model = zoo.build(entry["model"], classes=entry["classes"]["count"])
    assert model.count_params() == entry["num_parameters"]


def test_keras_applications_entries_carry_keras_published_hashes():
    # Spot checks against keras' own source, which is installed here: the module that defines
    # keras.applications.ResNet50 (its constants are not exported).
    resnet = inspect.getmodule(keras.applications.ResNet50)

    entries = {entry["model"]: entry for entry in weights_lib.load_manifest()}
    for name in ("resnet50", "resnet101", "resnet152"):
        assert (entries[name]["hash"], entries[name]["no_top"]["hash"]) == resnet.WEIGHTS_HASHES[name]
        assert entries[name]["url"] == resnet.BASE_WEIGHTS_PATH + entries[name]["file_name"]


def test_schema_problems_are_named():
    good = weights_lib.load_manifest()[0]
    assert weights_lib.entry_problems(good) == []
    bad = {**good, "hash": None, "size_bytes": -1, "format": "pickle"}
    bad.pop("metrics_source")
    assert any("missing 'metrics_source'" in p for p in weights_lib.entry_problems(bad))
    bad["metrics_source"] = good["metrics_source"]
    problems = "\n".join(weights_lib.entry_problems(bad))
    assert "hash is null, so hash_note must say why" in problems
    assert "size_bytes must be a positive integer" in problems
    assert "format must be one of" in problems


def test_keras_applications_xception_h5_loads_its_unnamed_residual_layers(tmp_path, rng):
    # keras.applications' Xception names its residual projections only by session counters.
    reference = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    randomize_batch_norm(reference, rng)
    unnamed = [layer.name for layer in reference.layers if layer.name.startswith(("conv2d", "batch_normalization"))]
    assert len(unnamed) == 8
    path = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    compat.save_legacy_h5_weights(reference, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing of the model is missing
        model = zoo.build("xception", weights=str(path), include_top=False, input_shape=(71, 71, 3))
    report = model.weights_load_report
    assert report.missing == [] and report.unused == []
    assert "block13_residual_conv" in report.loaded
    np.testing.assert_array_equal(model.get_layer("block13_residual_bn").moving_variance.numpy(),
                                  reference.get_layer(unnamed[-1]).moving_variance.numpy())
    pixels = random_pixels(rng, (1, 71, 71, 3))
    expected = reference(keras.applications.xception.preprocess_input(pixels.copy()), training=False)
    np.testing.assert_allclose(np.asarray(model(pixels, training=False)), np.asarray(expected), atol=1e-4)


def test_unnamed_layer_aliases_pair_in_block_order_only_when_counts_agree():
    model = ["block13_residual_conv", "block2_residual_conv", "block4_residual_conv", "block3_residual_conv"]
    file = ["block1_conv1", "conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4"]
    assert weights_lib.unnamed_layer_aliases(model, file) == {
        "block2_residual_conv": "conv2d_1", "block3_residual_conv": "conv2d_2",
        "block4_residual_conv": "conv2d_3", "block13_residual_conv": "conv2d_4",
    }
    assert weights_lib.unnamed_layer_aliases(model, file[:-1]) == {}
    assert weights_lib.unnamed_layer_aliases(model, [*file, *model]) == {}  # a zoo-written file


def test_keras_applications_mobilenet_v2_and_xception_entries():
    mobilenet_v2 = inspect.getmodule(keras.applications.MobileNetV2)
    xception = inspect.getmodule(keras.applications.Xception)

    entries = {entry["model"]: entry for entry in weights_lib.load_manifest()}
    assert entries["xception"]["url"] == xception.WEIGHTS_PATH
    assert entries["xception"]["no_top"]["url"] == xception.WEIGHTS_PATH_NO_TOP
    assert entries["mobilenetv2"]["url"] == (
        mobilenet_v2.BASE_WEIGHT_PATH + "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")
    assert entries["mobilenetv2"]["hash"] is None and "no file_hash" in entries["mobilenetv2"]["hash_note"]
    assert zoo.describe("xception").weights == ["imagenet"]
