"""The `torchvision` importer: a torchvision state dict `.pth` into faster_rcnn_resnet50_fpn by name.

No torch: the `.pth` files are written by hand in torch's legacy format (the format of
torchvision's published COCO file) by tests/zoo/test_torch_checkpoint.py's writer, with random
values in the shapes `torchvision_keys` gives (all of ResNet-50 and the FPN: about 160 MB, written
once per module). The download goes through the manifest's `hash_prefix` check against a local
HTTP server (tests/zoo/test_downloads.py's).
"""

import hashlib
import json

import numpy as np
import pytest

import zoo
from tests.zoo.test_downloads import server  # noqa: F401  (the local HTTP server fixture)
from tests.zoo.test_torch_checkpoint import contiguous, write_legacy
from zoo import weights as weights_lib
from zoo.detection.torchvision_weights import BOX_PREDICTOR, import_torchvision_state_dict, torchvision_keys

NAME = "faster_rcnn_resnet50_fpn"
SMALL = dict(num_classes=3, min_size=128, max_size=160, train_pre_nms_top_n=100, train_post_nms_top_n=64,
             test_pre_nms_top_n=50, test_post_nms_top_n=20)
COCO_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"


def random_state(model, rng, *, keys=None):
    """`{key: float32 array in torchvision's layout}` for `model`'s keys (or those of `keys`)."""
    shapes = {key: shape for key, (_, _, shape) in torchvision_keys(model).items()}
    return {key: rng.standard_normal(shapes[key]).astype(np.float32) for key in (keys or shapes)}


def write_state(path, state):
    """`state` as `torch.save(state_dict, path, _use_new_zipfile_serialization=False)` writes it."""
    return write_legacy(path, {key: contiguous("FloatStorage", value, str(index))
                               for index, (key, value) in enumerate(state.items())})


def snapshot(model):
    return [variable.numpy().copy() for variable in model.weights]


def assert_unchanged(model, before):
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, variable.numpy())


def coco_predictor(rng, width=1024, classes=91):
    """torchvision's box predictor for its 91 COCO outputs."""
    return {f"{BOX_PREDICTOR[0]}.weight": rng.standard_normal((classes, width)).astype(np.float32),
            f"{BOX_PREDICTOR[0]}.bias": rng.standard_normal(classes).astype(np.float32),
            f"{BOX_PREDICTOR[1]}.weight": rng.standard_normal((4 * classes, width)).astype(np.float32),
            f"{BOX_PREDICTOR[1]}.bias": rng.standard_normal(4 * classes).astype(np.float32)}


@pytest.fixture(scope="module")
def small_model():
    return zoo.build(NAME, **SMALL)


@pytest.fixture(scope="module")
def full_file(small_model, tmp_path_factory):
    state = random_state(small_model, np.random.default_rng(1))
    state["backbone.body.bn1.num_batches_tracked"] = np.zeros((), np.float32)  # dropped, as torchvision does
    return write_state(tmp_path_factory.mktemp("pth") / COCO_FILE, state), state


def test_every_weight_lands_in_keras_layout(full_file):
    path, state = full_file
    model = zoo.build(NAME, weights=str(path), **SMALL)  # a local .pth goes to the importer
    report = model.weights_load_report
    keys = torchvision_keys(model)
    layers = {layer_name for layer_name, _, _ in keys.values()}
    assert sorted(report.loaded) == sorted(layers) and report.missing == [] and report.unused == []
    variables = {key: model.get_layer(layer_name).weights[index].numpy() for key, (layer_name, index, _) in keys.items()}
    # A convolution: kernel [kh, kw, I, O] = weight [O, I, kh, kw].
    conv = state["backbone.body.layer2.0.conv2.weight"]  # [128, 128, 3, 3], stride 2
    kernel = variables["backbone.body.layer2.0.conv2.weight"]
    assert kernel.shape == (3, 3, 128, 128)
    assert kernel[2, 0, 5, 7] == conv[7, 5, 2, 0] and kernel[0, 1, 100, 3] == conv[3, 100, 0, 1]
    # A dense layer: kernel [I, O] = weight [O, I]; fc6's input is torchvision's flattened order.
    fc6 = state["roi_heads.box_head.fc6.weight"]
    assert variables["roi_heads.box_head.fc6.weight"].shape == (256 * 7 * 7, 1024)
    assert variables["roi_heads.box_head.fc6.weight"][12_000, 17] == fc6[17, 12_000]
    # FrozenBN buffers by torchvision's names, as they are.
    for buffer in ("weight", "bias", "running_mean", "running_var"):
        key = f"backbone.body.layer3.5.bn2.{buffer}"
        np.testing.assert_array_equal(variables[key], state[key])
        assert model.get_layer("backbone.body.layer3.5.bn2").weights[keys[key][1]].name.endswith(buffer)
    # The box predictor in torchvision's channel layout (the model reorders its outputs).
    np.testing.assert_array_equal(variables[f"{BOX_PREDICTOR[1]}.weight"], state[f"{BOX_PREDICTOR[1]}.weight"].T)
    np.testing.assert_array_equal(variables[f"{BOX_PREDICTOR[1]}.bias"], state[f"{BOX_PREDICTOR[1]}.bias"])
    np.testing.assert_array_equal(variables[f"{BOX_PREDICTOR[0]}.weight"], state[f"{BOX_PREDICTOR[0]}.weight"].T)
    for key, value in state.items():  # and every other weight
        if key in variables:
            expected = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T if value.ndim == 2 else value
            np.testing.assert_array_equal(variables[key], expected, err_msg=key)


def test_a_shape_mismatch_is_refused_naming_the_key_and_leaves_the_model_unchanged(small_model, tmp_path, rng):
    keys = ["backbone.body.conv1.weight", "backbone.fpn.layer_blocks.0.0.weight", "backbone.fpn.layer_blocks.0.0.bias"]
    state = random_state(small_model, rng, keys=keys)
    state["backbone.fpn.layer_blocks.0.0.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    path = write_state(tmp_path / "bad.pth", state)
    before = snapshot(small_model)
    with pytest.raises(ValueError, match=r"backbone\.fpn\.layer_blocks\.0\.0\.weight has shape \[256, 256, 1, 1\] in "
                                         r"the file, the model expects \[256, 256, 3, 3\].*the model is unchanged"):
        import_torchvision_state_dict(small_model, path)
    assert_unchanged(small_model, before)
    # Half a layer (a weight without its bias) is no state dict of this model either.
    del state["backbone.fpn.layer_blocks.0.0.bias"]
    state["backbone.fpn.layer_blocks.0.0.weight"] = np.zeros((256, 256, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"has backbone\.fpn\.layer_blocks\.0\.0\.weight but not .*\.bias"):
        import_torchvision_state_dict(small_model, write_state(tmp_path / "half.pth", state))
    # Another model's file names nothing here.
    with pytest.raises(ValueError, match=r"none of its 2 keys .*names a weight of"):
        import_torchvision_state_dict(small_model, write_state(tmp_path / "other.pth", {
            "features.0.weight": np.zeros((64, 3, 3, 3), np.float32), "features.0.bias": np.zeros(64, np.float32)}))
    assert_unchanged(small_model, before)


def test_other_classes_load_everything_but_the_box_predictor(small_model, tmp_path, rng):
    # torchvision's 91 outputs into a model built for 3 classes + background (fine-tuning).
    keys = ["backbone.body.conv1.weight", "roi_heads.box_head.fc7.weight", "roi_heads.box_head.fc7.bias"]
    state = {**random_state(small_model, rng, keys=keys), **coco_predictor(rng)}
    path = write_state(tmp_path / "coco.pth", state)
    predictor = [small_model.get_layer(name).get_weights() for name in BOX_PREDICTOR]
    report = import_torchvision_state_dict(small_model, path)
    assert sorted(report.loaded) == ["backbone.body.conv1", "roi_heads.box_head.fc7"]
    assert set(BOX_PREDICTOR) <= set(report.missing) and len(report.missing) == len(
        {name for name, _, _ in torchvision_keys(small_model).values()}) - 2
    assert report.unused == sorted(BOX_PREDICTOR)
    for name, old in zip(BOX_PREDICTOR, predictor):
        for value, new in zip(old, small_model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(value, new)
    np.testing.assert_array_equal(small_model.get_layer("roi_heads.box_head.fc7").kernel.numpy(),
                                  state["roi_heads.box_head.fc7.weight"].T)
    # A predictor that differs in anything but the class count is a mismatch, not other classes.
    state.update(coco_predictor(rng, width=512))
    with pytest.raises(ValueError, match=r"box_predictor\.\w+\.weight has shape \[\d+, 512\] in the file"):
        import_torchvision_state_dict(small_model, write_state(tmp_path / "narrow.pth", state))


def test_the_manifest_entry_is_torchvisions_coco_file():
    entry = weights_lib.find_entry(NAME, "coco")
    assert entry["url"] == f"https://download.pytorch.org/models/{COCO_FILE}" and entry["file_name"] == COCO_FILE
    assert entry["format"] == "torchvision" and entry["hash"] is None
    assert entry["hash_algorithm"] == "sha256" and entry["hash_prefix"] == "258fb6c6"
    names = entry["classes"]["names"]
    assert entry["classes"]["count"] == len(names) == 91 == zoo.describe(NAME).defaults["num_classes"] + 1
    assert names[:3] == ["__background__", "person", "bicycle"] and names[-1] == "toothbrush"
    assert names.index("N/A") == 12 and names.count("N/A") == 10 and len(set(names) - {"N/A"}) == 81
    assert zoo.describe(NAME).weights == ["coco"]


def test_hash_prefix_schema():
    entry = weights_lib.find_entry(NAME, "coco")
    assert weights_lib.entry_problems(entry) == []
    for bad, problem in [({"hash_prefix": "258FB6C6"}, "hash_prefix must be 8 to 63 lowercase hex"),
                         ({"hash_prefix": "258f"}, "hash_prefix must be 8 to 63"),
                         ({"hash": "0" * 64}, "with the whole hash, drop hash_prefix"),
                         ({"hash_algorithm": None}, "hash_prefix needs hash_algorithm")]:
        assert any(problem in p for p in weights_lib.entry_problems({**entry, **bad})), bad


@pytest.fixture
def served_coco(server, tmp_path, monkeypatch, small_model):  # noqa: F811
    """The shipped coco entry served by the local server: a few layers and torchvision's 91-class predictor."""
    root, url = server
    rng = np.random.default_rng(2)
    state = {**random_state(small_model, rng, keys=["backbone.body.conv1.weight"]), **coco_predictor(rng)}
    (root / "models").mkdir()
    path = write_state(root / "models" / COCO_FILE, state)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.json"

    def write_manifest(prefix):
        entry = {**weights_lib.find_entry(NAME, "coco"), "hash_prefix": prefix}
        manifest.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", url)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("ZOO_ALLOW_UNVERIFIED_WEIGHTS", raising=False)
    write_manifest(digest[:8])  # before setting the variable: find_entry reads the shipped manifest
    monkeypatch.setenv("ZOO_WEIGHTS_MANIFEST", str(manifest))
    return {"digest": digest, "state": state, "cache": tmp_path / "home" / "weights", "write_manifest": write_manifest}


def test_coco_downloads_checked_by_its_hash_prefix_and_loads(served_coco):
    with pytest.warns(UserWarning, match="missing from the file"):  # all but conv1
        model = zoo.build(NAME, weights="coco", **SMALL)
    report = model.weights_load_report
    assert report.loaded == ["backbone.body.conv1"] and report.unused == sorted(BOX_PREDICTOR)
    np.testing.assert_array_equal(model.get_layer("backbone.body.conv1").kernel.numpy(),
                                  served_coco["state"]["backbone.body.conv1.weight"].transpose(2, 3, 1, 0))
    assert [p.name for p in served_coco["cache"].iterdir()] == [COCO_FILE]
    # The cached file is checked again by its prefix, and used.
    assert weights_lib.fetch_entry(NAME, "coco").read_bytes()[:100] == (served_coco["cache"] / COCO_FILE).read_bytes()[:100]


def test_a_download_that_does_not_start_with_the_hash_prefix_is_refused(served_coco):
    served_coco["write_manifest"]("00000000")
    with pytest.raises(weights_lib.WeightsDownloadError,
                       match=rf"corrupt: sha256 found {served_coco['digest']}, expected 00000000\.\.\."):
        weights_lib.fetch_entry(NAME, "coco", progress=False)
    assert not served_coco["cache"].exists() or list(served_coco["cache"].iterdir()) == []
