"""Loading weights: keras.applications `.h5` files by layer name, reports, verified downloads.

Pretrained weights cannot be downloaded here, so the download path is tested against a local
HTTP server on 127.0.0.1 serving files that the test makes.
"""

import functools
import hashlib
import http.server
import json
import threading
import warnings

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import zoo
from zoo import weights as weights_lib
from tests.helpers import random_pixels, randomize_batch_norm

SHAPE = (64, 64, 3)


def write_keras2_h5(model, path):
    """Write `model`'s weights in the Keras 2 HDF5 layout keras.applications publishes."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


@pytest.fixture
def imagenet_like_file(tmp_path, rng):
    """A keras.applications ResNet50 (random weights) saved as its published files are."""
    reference = keras.applications.ResNet50(weights=None, input_shape=SHAPE, classes=1000)
    randomize_batch_norm(reference, rng)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    write_keras2_h5(reference, path)
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
    write_keras2_h5(small, path)
    with pytest.warns(UserWarning, match=r"missing from the file .*predictions"):
        model = zoo.build("resnet18", weights=str(path), input_shape=SHAPE, classes=3)
    assert model.weights_load_report.missing == ["predictions"]


def test_shape_mismatch_raises_and_changes_nothing(tmp_path):
    source = zoo.build("resnet18", input_shape=SHAPE, classes=7)
    path = tmp_path / "seven_classes.h5"
    write_keras2_h5(source, path)
    target = zoo.build("resnet18", input_shape=SHAPE, classes=3)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match=r"layer 'predictions' has weights of shapes"):
        weights_lib.load_weights_file(target, path)
    for old, new in zip(before, target.get_weights()):
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


@pytest.fixture
def http_server(tmp_path):
    """Serve `tmp_path / "served"` on 127.0.0.1 for the length of one test."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_verifies_the_hash_and_leaves_nothing_half_written(http_server, tmp_path):
    root, url = http_server
    (root / "good.h5").write_bytes(b"weights" * 1000)
    md5 = hashlib.md5(b"weights" * 1000).hexdigest()
    cache = tmp_path / "cache"
    path = weights_lib.fetch(f"{url}/good.h5", "good.h5", hash_algorithm="md5", file_hash_value=md5, directory=cache)
    assert path.read_bytes() == b"weights" * 1000
    with pytest.raises(IOError, match="corrupt"):
        weights_lib.fetch(f"{url}/good.h5", "other.h5", hash_algorithm="md5", file_hash_value="0" * 32, directory=cache)
    assert sorted(p.name for p in cache.iterdir()) == ["good.h5"]


def test_build_with_a_manifest_tag_downloads_verifies_and_loads(http_server, tmp_path, monkeypatch, rng):
    root, url = http_server
    source = zoo.build("resnet18", include_top=False, input_shape=SHAPE)
    write_keras2_h5(source, root / "resnet18_test.h5")
    digest = hashlib.sha256((root / "resnet18_test.h5").read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "entries": [{
        "model": "resnet18", "tag": "test", "url": f"{url}/resnet18_test.h5",
        "file_name": "resnet18_test.h5", "hash_algorithm": "sha256", "hash": digest,
    }]}))
    monkeypatch.setenv("ZOO_WEIGHTS_MANIFEST", str(manifest))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    assert zoo.describe("resnet18").weights == ["test"]
    model = zoo.build("resnet18", weights="test", include_top=False, input_shape=SHAPE)
    assert (tmp_path / "home" / "weights" / "resnet18_test.h5").is_file()
    pixels = random_pixels(rng, (1,) + SHAPE)
    np.testing.assert_allclose(np.asarray(model(pixels)), np.asarray(source(pixels)), atol=1e-6)


def test_the_shipped_manifest_parses():
    entries = weights_lib.load_manifest()
    assert isinstance(entries, list)
    for entry in entries:
        assert {"model", "tag", "url", "file_name", "hash_algorithm", "hash"} <= set(entry)
        assert entry["model"] in zoo.list_models()
