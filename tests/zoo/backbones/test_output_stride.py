"""`output_stride` switches ResNet's later stages from stride to dilation, weights unchanged.

With the stride in the first 1x1 convolution (keras.applications), a stage computed densely
with dilation gives, at every `k`-th position, exactly the stage computed with stride: the
test checks that function equality, which is stronger than comparing weight shapes.
"""

import keras
import numpy as np
import pytest

import zoo
from tests.helpers import random_pixels, randomize_batch_norm

SIZE = 64


def features_model(output_stride, name="resnet50"):
    return zoo.backbones.feature_extractor(
        name, input_shape=(SIZE, SIZE, 3), output_stride=output_stride
    )


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_resnet50_is_the_strided_one_sampled_densely(output_stride, rng):
    strided = features_model(32)
    randomize_batch_norm(strided, rng)
    dense = features_model(output_stride)
    assert [w.shape for w in dense.weights] == [w.shape for w in strided.weights]
    dense.set_weights(strided.get_weights())

    pixels = random_pixels(rng, (1, SIZE, SIZE, 3))
    sparse_maps = strided(pixels, training=False)
    dense_maps = dense(pixels, training=False)
    assert dense_maps["C5"].shape[1:3] == (SIZE // output_stride, SIZE // output_stride)
    assert sparse_maps["C5"].shape[1:3] == (SIZE // 32, SIZE // 32)
    for level, stride in (("C2", 4), ("C3", 8), ("C4", 16), ("C5", 32)):
        step = stride // min(stride, output_stride)
        subsampled = np.asarray(dense_maps[level])[:, ::step, ::step]
        np.testing.assert_allclose(subsampled, np.asarray(sparse_maps[level]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_contract_reports_the_real_strides(output_stride):
    images = keras.Input((SIZE, SIZE, 3))
    features = zoo.backbones.backbone_features("resnet50", images, output_stride=output_stride)
    expected = {"C1": 2, "C2": 4, "C3": 8, "C4": min(16, output_stride), "C5": min(32, output_stride)}
    assert {key: f.stride for key, f in features.items()} == expected
    assert {key: f.channels for key, f in features.items()} == {
        "C1": 64, "C2": 256, "C3": 512, "C4": 1024, "C5": 2048
    }
    for feature in features.values():
        assert feature.tensor.shape[1] == -(-SIZE // feature.stride)
    assert features["C4"].layer == "conv4_block6_out"


def test_vgg_feature_contract_has_conv5_3_at_stride_16():
    images = keras.Input((SIZE, SIZE, 3))
    features = zoo.backbones.backbone_features("vgg16", images)
    assert features["C4"].layer == "block5_conv3"
    assert (features["C4"].stride, features["C4"].channels) == (16, 512)
    assert features["C4"].tensor.shape[1:3] == (SIZE // 16, SIZE // 16)
    assert features["C5"].layer == "block5_pool"


@pytest.mark.parametrize("name", ["resnet18", "resnet50_beta"])
def test_output_stride_16_halves_no_later_than_c4(name):
    model = zoo.backbones.feature_extractor(name, input_shape=(SIZE, SIZE, 3), output_stride=16)
    outputs = model(np.zeros((1, SIZE, SIZE, 3), "float32"))
    assert outputs["C4"].shape[1:3] == (4, 4)
    assert outputs["C5"].shape[1:3] == (4, 4)


# --- DeepLab's backbones: MobileNet-v2, Xception(-65), ResNet in slim placement -------------

# name -> (overrides that keep the model small, expected (stride, channels) of C1 ... C5 at
# output stride 32, the decoder tap's layer)
DEEPLAB_BACKBONES = {
    "mobilenetv2": ({}, [(2, 16), (4, 144), (8, 192), (16, 576), (32, 1280)], "block_2_depthwise_relu"),
    "xception65": (
        dict(middle_flow_units=2),
        [(2, 64), (4, 256), (8, 728), (16, 1024), (32, 2048)],
        "entry_flow_block2_unit1_sepconv2_pointwise_bn",
    ),
    "xception": (
        dict(middle_flow_units=2),
        [(2, 64), (4, 256), (8, 728), (16, 1024), (32, 2048)],
        "block3_sepconv2_bn",
    ),
    "resnet50_beta": (
        dict(stride_placement="slim", depths=(2, 2, 2, 2)),
        [(2, 128), (4, 256), (8, 512), (16, 1024), (32, 2048)],
        "conv2_block1_3_bn",
    ),
}


def _expected_size(name, stride):
    if name == "xception":
        # keras.applications' stem: 3x3/2 and 3x3 convolutions without padding (64 -> 31 -> 29),
        # then SAME-padded stride-2 pools.
        size = 29
        for _ in range(stride.bit_length() - 2):
            size = -(-size // 2)
        return size
    return -(-SIZE // stride)


@pytest.mark.parametrize("name", sorted(DEEPLAB_BACKBONES))
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_deeplab_backbones_feature_shapes(name, output_stride):
    overrides, expected, tap = DEEPLAB_BACKBONES[name]
    images = keras.Input((SIZE, SIZE, 3))
    features = zoo.backbones.backbone_features(name, images, output_stride=output_stride, **overrides)
    model = keras.Model(images, {level: feature.tensor for level, feature in features.items()})
    outputs = model(np.zeros((1, SIZE, SIZE, 3), "float32"))
    for level, (stride, channels) in zip(("C1", "C2", "C3", "C4", "C5"), expected):
        real_stride = min(stride, output_stride)
        assert (features[level].stride, features[level].channels) == (real_stride, channels), level
        size = _expected_size(name, real_stride)
        assert tuple(outputs[level].shape) == (1, size, size, channels), level
    assert features["C2"].layer == tap


@pytest.mark.parametrize("name", sorted(DEEPLAB_BACKBONES))
def test_output_stride_changes_no_variable(name):
    overrides = DEEPLAB_BACKBONES[name][0]
    shapes = {}
    for output_stride in (16, 32):
        model = zoo.backbones.feature_extractor(
            name, input_shape=(SIZE, SIZE, 3), output_stride=output_stride, **overrides
        )
        shapes[output_stride] = [(w.path, tuple(w.shape)) for w in model.weights]
    assert shapes[16] == shapes[32]


@pytest.mark.parametrize(
    "name, overrides, offset",
    [
        # DeepLab's aligned Xception and slim's ResNet pad strided convolutions symmetrically:
        # the strided map is the dense one at even positions.
        ("xception65", dict(middle_flow_units=1, multi_grid=(1, 2, 4)), 0),
        ("resnet50_beta", dict(stride_placement="slim", depths=(2, 2, 2, 2), multi_grid=(1, 2)), 0),
        ("resnet50", dict(stride_placement="slim", depths=(2, 3, 2, 3), use_bias=False), 0),
        # MobileNet-v2 strides with TensorFlow's SAME padding, which for even sizes pads only
        # at the end: the strided map is the dense one at odd positions.
        ("mobilenetv2", {}, 1),
    ],
)
def test_dilated_deeplab_backbones_are_the_strided_ones_sampled_densely(name, overrides, offset, rng):
    strided = features_model_with(name, 32, overrides)
    randomize_batch_norm(strided, rng)
    dense = features_model_with(name, 16, overrides)
    dense.set_weights(strided.get_weights())
    pixels = random_pixels(rng, (1, SIZE, SIZE, 3))
    sparse_maps = strided(pixels, training=False)
    dense_maps = dense(pixels, training=False)
    np.testing.assert_allclose(np.asarray(dense_maps["C4"]), np.asarray(sparse_maps["C4"]), atol=1e-4, rtol=1e-4)
    subsampled = np.asarray(dense_maps["C5"])[:, offset::2, offset::2]
    expected = np.asarray(sparse_maps["C5"])
    assert subsampled.shape == expected.shape == (1, SIZE // 32, SIZE // 32, expected.shape[-1])
    scale = np.abs(expected).max()
    assert scale > 1e-3
    np.testing.assert_allclose(subsampled / scale, expected / scale, atol=1e-4)


def features_model_with(name, output_stride, overrides):
    return zoo.backbones.feature_extractor(
        name, input_shape=(SIZE, SIZE, 3), output_stride=output_stride, **overrides
    )


def test_slim_placement_moves_the_strides_and_keeps_the_variables():
    keras_placement = features_model_with("resnet50", 32, dict(depths=(2, 2, 2, 2)))
    slim_placement = features_model_with("resnet50", 32, dict(depths=(2, 2, 2, 2), stride_placement="slim"))
    assert sorted((w.path, tuple(w.shape)) for w in keras_placement.weights) == sorted(
        (w.path, tuple(w.shape)) for w in slim_placement.weights
    )
    strides = {layer.name: layer.strides for layer in slim_placement.layers if hasattr(layer, "strides")}
    # TF-slim: block1 ... block3 stride in the last unit's 3x3, block4 not at all.
    assert strides["conv2_block2_2_conv"] == (2, 2) and strides["conv2_block1_1_conv"] == (1, 1)
    assert strides["conv3_block1_1_conv"] == (1, 1) and strides["conv3_block2_2_conv"] == (2, 2)
    assert strides["conv5_block1_0_conv"] == (1, 1) and strides["conv5_block2_2_conv"] == (1, 1)
    assert strides["conv2_block2_0_subsample"] == (2, 2)  # identity depth: max-pool 1x1 subsample
    keras_strides = {layer.name: layer.strides for layer in keras_placement.layers if hasattr(layer, "strides")}
    assert keras_strides["conv3_block1_1_conv"] == (2, 2) and keras_strides["conv3_block1_0_conv"] == (2, 2)


def test_slim_unit_rates_follow_stack_blocks_dense():
    config = zoo.registry.resolve_config(
        "resnet101_beta", stride_placement="slim", output_stride=8, multi_grid=(1, 2, 4)
    )
    plan = zoo.backbones.resnet.unit_plan(config)
    # block2's last unit would reach stride 16: it runs with stride 1 at rate 1, then rate 2;
    # block3's last unit runs at rate 2, then rate 4; block4 at 4 x multi_grid.
    assert [u[:2] for u in plan[1]] == [(1, 1)] * 4
    assert [u[:2] for u in plan[2]] == [(1, 2)] * 23
    assert [u[:2] for u in plan[3]] == [(1, 4), (1, 8), (1, 16)]
    assert plan[0][-1][:2] == (2, 1)
    keras_config = zoo.registry.resolve_config("resnet101", output_stride=8)
    keras_plan = zoo.backbones.resnet.unit_plan(keras_config)
    # keras placement: the former stride sits before the 3x3, which takes the new rate.
    assert [u[:2] for u in keras_plan[2]][:2] == [(1, 2), (1, 2)]
    assert [u[:2] for u in keras_plan[3]] == [(1, 4)] * 3


def test_slim_placement_rejects_what_slim_cannot_build():
    with pytest.raises(ValueError, match="block='bottleneck'"):
        zoo.build("resnet18", stride_placement="slim")
    with pytest.raises(ValueError, match="multi_grid"):
        zoo.build("resnet50", multi_grid=(1, 2))
    with pytest.raises(TypeError, match="stride_placement"):  # a Literal: the override check
        zoo.build("resnet50", stride_placement="caffe")
    with pytest.raises(ValueError, match="depths"):
        zoo.build("resnet50", stride_placement="slim", depths=(1, 2, 2, 2))
