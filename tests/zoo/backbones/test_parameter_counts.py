"""Parameter counts against the published ones (with the top, 1000 classes, 224 x 224)."""

import numpy as np
import pytest

import zoo

# keras.applications' documented totals (Keras counts batch-norm moving statistics too).
KERAS_APPLICATIONS_TOTALS = {
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "resnet50": 25_636_712,
    "resnet101": 44_707_176,
    "resnet152": 60_419_944,
}
# torchvision's documented num_params, which count trainable parameters only.
TORCHVISION_TRAINABLE = {"resnet18": 11_689_512, "resnet34": 21_797_672}


@pytest.mark.parametrize("name", sorted(KERAS_APPLICATIONS_TOTALS))
def test_total_parameters_equal_keras_applications(name):
    assert zoo.build(name).count_params() == KERAS_APPLICATIONS_TOTALS[name]


@pytest.mark.parametrize("name", sorted(TORCHVISION_TRAINABLE))
def test_trainable_parameters_equal_torchvision(name):
    model = zoo.build(name)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == TORCHVISION_TRAINABLE[name]


def test_beta_stem_has_three_3x3_convolutions_of_64_64_128_filters():
    model = zoo.build("resnet50_beta", include_top=False, input_shape=(64, 64, 3))
    stem = [model.get_layer(f"conv1_{i}_conv") for i in (1, 2, 3)]
    assert [layer.filters for layer in stem] == [64, 64, 128]
    assert [layer.kernel_size for layer in stem] == [(3, 3)] * 3
    assert [layer.strides for layer in stem] == [(2, 2), (1, 1), (1, 1)]
    names = {layer.name for layer in model.layers}
    assert "conv1_conv" not in names
    # The beta stem changes only the root block: conv2 onwards matches resnet50.
    plain = zoo.build("resnet50", include_top=False, input_shape=(64, 64, 3))
    assert model.get_layer("conv5_block3_3_conv").kernel.shape == plain.get_layer("conv5_block3_3_conv").kernel.shape
    assert model.get_layer("conv2_block1_0_conv").kernel.shape == (1, 1, 128, 256)
