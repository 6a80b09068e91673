"""Parameter counts against the published ones (with the top, 1000 classes, 224 x 224)."""

import keras
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
    "mobilenetv2": 3_538_984,
    "xception": 22_910_480,
}
# torchvision's documented num_params, which count trainable parameters only.
TORCHVISION_TRAINABLE = {"resnet18": 11_689_512, "resnet34": 21_797_672}


@pytest.mark.slow
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


def _separable(c_in, c_out):
    """DeepLab's split separable conv: depthwise 3x3 + BN, then 1x1 + BN (4 BN numbers each)."""
    return 9 * c_in + 4 * c_in + c_in * c_out + 4 * c_out


def _xception_unit(c_in, depths, shortcut):
    total, channels = 0, c_in
    for depth in depths:
        total, channels = total + _separable(channels, depth), depth
    if shortcut:  # 1x1 projection + BN
        total += c_in * depths[-1] + 4 * depths[-1]
    return total


def test_xception65_counts_the_slim_definition():
    # Counted from research/deeplab/core/xception.py (xception_65): entry convs 3x3x3x32 and
    # 3x3x32x64 with BN; entry units of (128,)*3, (256,)*3, (728,)*3 with 1x1 shortcuts; 16
    # middle units of (728,)*3 with identity; exit units (728, 1024, 1024) with a shortcut and
    # (1536, 1536, 2048) without; then 2048 x 1000 logits + 1000 biases.
    stem = 3 * 3 * 3 * 32 + 4 * 32 + 3 * 3 * 32 * 64 + 4 * 64
    entry = (_xception_unit(64, (128,) * 3, True) + _xception_unit(128, (256,) * 3, True)
             + _xception_unit(256, (728,) * 3, True))
    middle = 16 * _xception_unit(728, (728,) * 3, False)
    exit_flow = _xception_unit(728, (728, 1024, 1024), True) + _xception_unit(1024, (1536, 1536, 2048), False)
    logits = 2048 * 1000 + 1000
    expected = stem + entry + middle + exit_flow + logits
    assert zoo.build("xception65").count_params() == expected
    # 65 weighted layers deep: 2 stem convs + 21 units x 3 separable convolutions.
    model = zoo.build("xception65", include_top=False, input_shape=(64, 64, 3))
    depthwise = [l for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == 63
