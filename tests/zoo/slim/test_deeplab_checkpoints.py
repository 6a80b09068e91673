"""Importing whole DeepLab TF-slim checkpoints (backbone + head) into the registered variants'
layouts, through `load_slim_checkpoint`, the `tf_checkpoint_archive` importer and `zoo.build`.

The checkpoints are written here through tf.compat.v1 with DeepLab's names (tiny heads, 32-pixel
inputs); the expected names are spelled out by hand, not derived from the code under test.
"""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from tests.zoo.slim.test_checkpoint import write_slim_checkpoint
from tests.zoo.test_downloads import manifest_entry, md5, server, setup  # noqa: F401  (fixtures)
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus
from zoo.slim.checkpoint import load_slim_checkpoint
from zoo.slim.names import default_backbone_map, head_slim_names

TINY_HEAD = dict(num_classes=3, aspp_filters=8, decoder_projection_filters=4, decoder_filters=8,
                 input_shape=(32, 32, 3))


def tiny_mobilenet():
    return build_deeplab_v3_plus(
        DeepLabV3PlusConfig(backbone="mobilenetv2", slim_backbone=True, preprocessing="tf", **TINY_HEAD),
        name="tiny_mobilenet",
    )


def random_checkpoint_values(model, names, rng):
    shapes = {variable.path: tuple(variable.shape) for variable in model.weights}
    return {slim: rng.normal(size=shapes[path]).astype("float32") for path, slim in names.items()}


@pytest.fixture
def mobilenet():
    return tiny_mobilenet()


def test_default_backbone_names_are_deeplabs(mobilenet):
    names = set(default_backbone_map(mobilenet).values())
    for expected in ["MobilenetV2/Conv/weights", "MobilenetV2/Conv/BatchNorm/gamma",
                     "MobilenetV2/expanded_conv/depthwise/depthwise_weights",
                     "MobilenetV2/expanded_conv_2/depthwise/BatchNorm/moving_mean",
                     "MobilenetV2/expanded_conv_16/project/weights"]:
        assert expected in names
    assert not any("Conv_1" in name for name in names)  # DeepLab stops at layer_18
    resnet = zoo.build("deeplabv3plus_resnet50_beta", **TINY_HEAD)
    names = set(default_backbone_map(resnet).values())
    assert {"resnet_v1_50/conv1_1/weights", "resnet_v1_50/conv1_3/BatchNorm/beta",
            "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights",
            "resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/BatchNorm/moving_variance"} <= names


def test_a_full_checkpoint_loads_every_variable_with_its_value(mobilenet, rng, tmp_path):
    names = {**default_backbone_map(mobilenet), **head_slim_names(mobilenet)}
    assert len(names) == len(mobilenet.weights)  # every variable has a DeepLab name
    stored = random_checkpoint_values(mobilenet, names, rng)
    stored["MobilenetV2/Conv_1/weights"] = np.zeros((1, 1, 320, 1280), "float32")  # ImageNet's last conv
    stored["global_step"] = np.int64(30000)
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt-30000", stored)

    report = load_slim_checkpoint(mobilenet, prefix)
    assert report.complete and len(report.loaded) == len(names)
    assert report.unexpected == ["MobilenetV2/Conv_1/weights"]
    np.testing.assert_array_equal(mobilenet.get_layer("Conv1").kernel.numpy(), stored["MobilenetV2/Conv/weights"])
    np.testing.assert_array_equal(mobilenet.get_layer("block_2_depthwise_BN").moving_mean.numpy(),
                                  stored["MobilenetV2/expanded_conv_2/depthwise/BatchNorm/moving_mean"])
    np.testing.assert_array_equal(mobilenet.get_layer("feature_projection0").kernel.numpy(),
                                  stored["decoder/feature_projection0/weights"])
    for variable in mobilenet.weights:
        np.testing.assert_array_equal(variable.numpy(), stored[names[variable.path]])


def test_a_backbone_only_checkpoint_reports_the_head_missing(mobilenet, rng, tmp_path):
    backbone = default_backbone_map(mobilenet)
    stored = random_checkpoint_values(mobilenet, backbone, rng)
    stored["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] = np.zeros((1, 1, 1280, 1001), "float32")
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", stored)
    report = load_slim_checkpoint(mobilenet, prefix)
    assert sorted(report.loaded) == sorted(backbone.values())
    assert sorted(report.missing) == sorted(head_slim_names(mobilenet).values())
    assert "logits/semantic/weights" in report.missing and "aspp0/weights" in report.missing
    assert report.unexpected == ["MobilenetV2/Logits/Conv2d_1c_1x1/weights"]
    assert report.unmapped == [] and report.shape_mismatched == []


def test_a_resnet_v1_stem_given_to_the_beta_model_is_shape_mismatched(rng, tmp_path):
    model = zoo.build("deeplabv3plus_resnet50_beta", **TINY_HEAD)
    stored = {
        # resnet_v1_50's 7x7 stem (beta has three 3x3 convolutions instead) and block1's first
        # unit, which reads its 64 channels (beta's stem gives 128).
        "resnet_v1_50/conv1/weights": rng.normal(size=(7, 7, 3, 64)).astype("float32"),
        "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights": np.ones((1, 1, 64, 256), "float32"),
        "resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights": np.ones((1, 1, 64, 64), "float32"),
        "resnet_v1_50/block1/unit_1/bottleneck_v1/conv2/weights": np.full((3, 3, 64, 64), 0.5, "float32"),
    }
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", stored)
    report = load_slim_checkpoint(model, prefix)
    assert report.shape_mismatched == [
        ("resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights", (1, 1, 64, 64), (1, 1, 128, 64)),
        ("resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights", (1, 1, 64, 256), (1, 1, 128, 256)),
    ]
    assert report.unexpected == ["resnet_v1_50/conv1/weights"]
    assert "resnet_v1_50/conv1_1/weights" in report.missing and report.unmapped == []
    assert report.loaded == ["resnet_v1_50/block1/unit_1/bottleneck_v1/conv2/weights"]
    np.testing.assert_array_equal(model.get_layer("conv2_block1_2_conv").kernel.numpy(), 0.5)


def write_archive(path, prefix, *, folder="deeplabv3_mnv2_pascal_train_aug"):
    """A `.tar.gz` laid out as the DeepLab model zoo's: a folder with the checkpoint files and a
    frozen graph beside them."""
    with tarfile.open(path, "w:gz") as tar:
        for file in prefix.parent.glob(prefix.name + ".*"):
            tar.add(file, arcname=f"{folder}/{file.name}")
        graph = b"not a graph, never read"
        info = tarfile.TarInfo(f"{folder}/frozen_inference_graph.pb")
        info.size = len(graph)
        tar.addfile(info, io.BytesIO(graph))
    return path


@pytest.fixture
def archive(rng, tmp_path):
    source = tiny_mobilenet()
    names = {**default_backbone_map(source), **head_slim_names(source)}
    stored = random_checkpoint_values(source, names, rng)
    (tmp_path / "ckpt").mkdir()
    prefix = write_slim_checkpoint(tmp_path / "ckpt" / "model.ckpt-30000", stored)
    return write_archive(tmp_path / "deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz", Path(prefix)), stored


BUILD_TINY = dict(**TINY_HEAD)


@pytest.mark.slow
def test_build_with_a_local_archive_imports_it(archive):
    path, stored = archive
    model = zoo.build("deeplabv3plus_mobilenetv2", weights=str(path), **BUILD_TINY)
    report = model.weights_load_report
    assert report.missing == [] and report.unused == [] and len(report.loaded) == len(model.weights)
    assert report.slim_report.complete
    np.testing.assert_array_equal(model.get_layer("logits_semantic").kernel.numpy(), stored["logits/semantic/weights"])


@pytest.mark.slow
def test_the_manifest_entry_downloads_and_imports_the_archive(archive, setup, monkeypatch):
    path, stored = archive
    served = setup["root"] / "models" / path.name
    served.parent.mkdir(parents=True)
    served.write_bytes(path.read_bytes())
    entry = manifest_entry("deeplabv3plus_mobilenetv2", "voc", path.name, md5(served), format="tf_checkpoint_archive",
                           task="segmentation")
    entry["url"] = f"http://download.tensorflow.org/models/{path.name}"
    setup["write_manifest"](entry)
    model = zoo.build("deeplabv3plus_mobilenetv2", weights="voc", **BUILD_TINY)
    assert model.weights_load_report.missing == []
    np.testing.assert_array_equal(model.get_layer("Conv1").kernel.numpy(), stored["MobilenetV2/Conv/weights"])
    assert (setup["cache"] / path.name).is_file()


@pytest.mark.slow
def test_unsafe_or_empty_archives_are_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="refusing member '../outside.txt'"):
        zoo.build("deeplabv3plus_mobilenetv2", weights=str(evil), **BUILD_TINY)
    assert not (tmp_path.parent / "outside.txt").exists()
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(ValueError, match="expected one TF checkpoint"):
        zoo.build("deeplabv3plus_mobilenetv2", weights=str(empty), **BUILD_TINY)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        zoo.build("deeplabv3plus_mobilenetv2", weights=str(broken), **BUILD_TINY)
