"""Importing a DeepLab TF-slim checkpoint: a small checkpoint written through tf.compat.v1 with
DeepLab's variable names, then the report and the values loaded."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus
from zoo.slim.checkpoint import load_slim_checkpoint
from zoo.slim.names import head_slim_names

TINY = dict(backbone="resnet18", num_classes=2, aspp_filters=8, decoder_projection_filters=4, decoder_filters=8,
            preprocessing="torch", atrous_rates=(1, 2))


def write_slim_checkpoint(path, variables):
    """A TF1 checkpoint of `{slim name: value}` written by tf.compat.v1's Saver, as DeepLab's were."""
    graph = tf.Graph()
    with graph.as_default():
        created = [
            tf.compat.v1.get_variable(name, initializer=tf.constant(value), use_resource=False)
            for name, value in variables.items()
        ]
        saver = tf.compat.v1.train.Saver(created)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(path))


@pytest.fixture
def model():
    return build_deeplab_v3_plus(DeepLabV3PlusConfig(**TINY), name="tiny")


def test_checkpoint_with_deeplab_names_loads_and_reports(model, rng, tmp_path):
    names = head_slim_names(model)
    by_slim = {slim: path for path, slim in names.items()}
    shapes = {variable.path: tuple(variable.shape) for variable in model.weights}
    stored = {slim: rng.normal(size=shapes[path]).astype("float32") for slim, path in by_slim.items()}
    del stored["decoder/decoder_conv1_pointwise/weights"]  # missing
    stored["logits/semantic/weights"] = rng.normal(size=(1, 1, 8, 21)).astype("float32")  # 21 VOC classes
    stored["logits/semantic/biases"] = np.zeros(21, "float32")
    stored["aspp9/weights"] = np.ones((1, 1, 2, 2), "float32")  # unexpected
    stored["global_step"] = np.int64(30000)  # training state, not unexpected
    stored["aspp0/weights/Momentum"] = np.zeros(shapes[by_slim["aspp0/weights"]], "float32")
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", stored)

    before = {variable.path: variable.numpy().copy() for variable in model.weights}
    report = load_slim_checkpoint(model, prefix)

    assert report.missing == ["decoder/decoder_conv1_pointwise/weights"]
    assert report.unexpected == ["aspp9/weights"]
    assert sorted(name for name, _, _ in report.shape_mismatched) == ["logits/semantic/biases", "logits/semantic/weights"]
    assert ("logits/semantic/weights", (1, 1, 8, 21), (1, 1, 8, 3)) in report.shape_mismatched
    assert len(report.loaded) == len(names) - 3
    # The backbone has no map here: every one of its variables is listed, none silently skipped.
    assert set(report.unmapped) == {v.path for v in model.weights} - set(names)
    assert not report.complete

    values = {variable.path: variable.numpy() for variable in model.weights}
    for slim in report.loaded:
        np.testing.assert_array_equal(values[by_slim[slim]], stored[slim])
    for path in [by_slim["logits/semantic/weights"], by_slim["decoder/decoder_conv1_pointwise/weights"],
                 *report.unmapped]:
        np.testing.assert_array_equal(values[path], before[path])

    text = str(report)
    assert "3 missing" not in text and "1 missing" in text and "aspp9/weights" in text
    assert "logits/semantic/weights: [1, 1, 8, 21] vs [1, 1, 8, 3]" in text


def test_strict_assigns_nothing_and_a_backbone_map_is_used(model, rng, tmp_path):
    names = head_slim_names(model)
    shapes = {variable.path: tuple(variable.shape) for variable in model.weights}
    stored = {slim: rng.normal(size=shapes[path]).astype("float32") for path, slim in names.items()}
    stem = model.get_layer("conv1_conv").kernel
    stored["resnet_v1_18/conv1/weights"] = rng.normal(size=tuple(stem.shape)).astype("float32")
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", stored)
    before = stem.numpy().copy()
    with pytest.raises(ValueError, match="nothing was assigned"):
        load_slim_checkpoint(model, prefix, strict=True)
    np.testing.assert_array_equal(stem.numpy(), before)

    report = load_slim_checkpoint(model, prefix, backbone_map=lambda m: {stem.path: "resnet_v1_18/conv1/weights"})
    assert "resnet_v1_18/conv1/weights" in report.loaded and stem.path not in report.unmapped
    np.testing.assert_array_equal(stem.numpy(), stored["resnet_v1_18/conv1/weights"])
    with pytest.raises(ValueError, match="both map to"):
        load_slim_checkpoint(model, prefix, backbone_map=lambda m: {stem.path: "aspp0/weights"})


def test_not_a_checkpoint_is_a_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match="not a TF checkpoint"):
        load_slim_checkpoint(model, tmp_path / "nothing")
