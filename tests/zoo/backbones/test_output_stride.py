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
