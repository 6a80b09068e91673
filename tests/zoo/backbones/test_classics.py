"""The classic networks: LeNet-5, AlexNet, GoogLeNet, DenseNet.

Parameter counts are checked against the papers (or the reference implementation a docstring
names), structure against the papers' tables, DenseNet numerically against keras.applications.
"""

import keras
import numpy as np
import pytest

import zoo
from tests.helpers import random_pixels, randomize_batch_norm
from tests.zoo.backbones.test_parity import copy_weights_by_name
from zoo.backbones.lenet import C3_CONNECTION_TABLE, ConnectionTableConv2D


def kernel_weights(layer) -> int:
    return sum(int(np.prod(w.shape)) for w in layer.weights if w.path.endswith("kernel"))


# ---------------------------------------------------------------------------------- LeNet-5


def test_lenet5_counts_the_papers_60000_parameters_up_to_f6():
    model = zoo.build("lenet5")
    # LeCun et al. 1998, Section II.B, layer by layer.
    paper = {"c1": 156, "s2_scale": 12, "c3": 1516, "s4_scale": 32, "c5": 48_120, "f6": 10_164}
    assert {name: model.get_layer(name).count_params() for name in paper} == paper
    assert sum(paper.values()) == 60_000
    # Plus the dense softmax that replaces the RBF output: 84 * 10 + 10.
    assert model.count_params() == 60_000 + 850
    assert model.input.shape == (None, 32, 32, 1) and model.output.shape == (None, 10)
    assert model.get_layer("c5").output.shape == (None, 1, 1, 120)


def test_lenet5_common_dense_variant_counts_61706_parameters():
    model = zoo.build("lenet5", c3_connections="dense", trainable_subsampling=False)
    # 156 + 6 * 25 * 16 + 16 + 48,120 + 10,164 + 850, the textbook LeNet-5 count.
    assert model.get_layer("c3").count_params() == 2416
    assert model.count_params() == 61_706


def test_connection_table_matches_the_papers_table_one():
    assert len(C3_CONNECTION_TABLE) == 16
    assert [len(row) for row in C3_CONNECTION_TABLE] == [3] * 6 + [4] * 9 + [6]
    # Row 0 of Table I: S2 map 0 feeds C3 maps 0, 4, 5, 6, 9, 10, 11, 12, 14, 15.
    assert [j for j, row in enumerate(C3_CONNECTION_TABLE) if 0 in row] == [0, 4, 5, 6, 9, 10, 11, 12, 14, 15]


def test_connection_table_convolution_against_numpy(rng):
    table = ((0, 2), (1,), (0, 1, 2))
    layer = ConnectionTableConv2D(table=table, kernel_size=(3, 2), name="sparse")
    x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    layer.build(x.shape)
    kernel = rng.normal(size=(3, 2, 6)).astype("float32")
    bias = rng.normal(size=(3,)).astype("float32")
    layer.set_weights([kernel, bias])
    out = np.asarray(layer(x))
    assert out.shape == (2, 4, 4, 3) == layer.compute_output_shape(x.shape)

    expected = np.zeros_like(out)
    position = 0
    for j, row in enumerate(table):
        for i in row:
            k = kernel[:, :, position]
            position += 1
            for y in range(4):
                for xx in range(4):
                    expected[:, y, xx, j] += np.einsum("bhw,hw->b", x[:, y : y + 3, xx : xx + 2, i], k)
        expected[..., j] += bias[j]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.all(np.asarray(layer.dense_kernel())[:, :, 1, 0] == 0)  # no 1 -> 0 connection

    clone = ConnectionTableConv2D.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), out, atol=1e-6)


def test_connection_table_rejects_bad_tables_and_too_few_channels():
    with pytest.raises(ValueError, match="table"):
        ConnectionTableConv2D(table=((0,), ()), kernel_size=3)
    with pytest.raises(ValueError, match="distinct"):
        ConnectionTableConv2D(table=((0, 0),), kernel_size=3)
    with pytest.raises(ValueError, match="at least 6 channels"):
        ConnectionTableConv2D(table=((5,),), kernel_size=3)(np.zeros((1, 8, 8, 2), "float32"))


def test_lenet5_rejects_small_inputs_and_unknown_preprocessing():
    with pytest.raises(ValueError, match="input_shape .*28"):
        zoo.build("lenet5", input_shape=(28, 28, 1))
    with pytest.raises(TypeError, match="preprocessing.*'tf' or None"):
        zoo.build("lenet5", preprocessing="caffe")


# ---------------------------------------------------------------------------------- AlexNet


def test_alexnet_counts_torchvisions_61100840_parameters_and_sizes():
    model = zoo.build("alexnet")
    assert model.count_params() == 61_100_840  # torchvision.models.alexnet, 1000 classes
    sizes = [model.get_layer(name).output.shape[1] for name in ("conv1", "pool1", "pool2", "conv5", "pool5")]
    assert sizes == [55, 27, 13, 13, 6]
    assert model.get_layer("fc6").kernel.shape == (9216, 4096)
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.5, 0.5]


def test_alexnet_uses_the_papers_initialisation():
    model = zoo.build("alexnet", include_top=False, input_shape=(96, 96, 3))
    assert abs(float(np.std(model.get_layer("conv3").kernel)) - 0.01) < 1e-3
    biases = {name: float(np.mean(model.get_layer(name).bias)) for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert biases == {"conv1": 0.0, "conv2": 1.0, "conv3": 0.0, "conv4": 1.0, "conv5": 1.0}


def test_alexnet_small_input_is_refused_with_its_minimum():
    with pytest.raises(ValueError, match="63 pixels"):
        zoo.build("alexnet", input_shape=(62, 62, 3))


# -------------------------------------------------------------------------------- GoogLeNet

# Table 1 of Szegedy et al. 2015, typed in here: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj, output depth.
TABLE_1 = {
    "3a": (64, 96, 128, 16, 32, 32, 256),
    "3b": (128, 128, 192, 32, 96, 64, 480),
    "4a": (192, 96, 208, 16, 48, 64, 512),
    "4b": (160, 112, 224, 24, 64, 64, 512),
    "4c": (128, 128, 256, 24, 64, 64, 512),
    "4d": (112, 144, 288, 32, 64, 64, 528),
    "4e": (256, 160, 320, 32, 128, 128, 832),
    "5a": (256, 160, 320, 32, 128, 128, 832),
    "5b": (384, 192, 384, 48, 128, 128, 1024),
}
# Table 1's params column (kernel weights in units of 1024) for the rows that agree with its
# filter numbers; see zoo/backbones/googlenet.py for the rows that do not.
TABLE_1_PARAMS_K = {"conv2": 112, "inception_3a": 159, "inception_3b": 380, "predictions": 1000}


def test_googlenet_modules_have_the_papers_branches_and_depths():
    model = zoo.build("googlenet")
    for module, (n1, r3, n3, r5, n5, proj, depth) in TABLE_1.items():
        name = f"inception_{module}"
        channels_in = model.get_layer(f"{name}_1x1").input.shape[-1]
        assert model.get_layer(f"{name}_1x1").kernel.shape == (1, 1, channels_in, n1)
        assert model.get_layer(f"{name}_3x3_reduce").kernel.shape == (1, 1, channels_in, r3)
        assert model.get_layer(f"{name}_3x3").kernel.shape == (3, 3, r3, n3)
        assert model.get_layer(f"{name}_5x5_reduce").kernel.shape == (1, 1, channels_in, r5)
        assert model.get_layer(f"{name}_5x5").kernel.shape == (5, 5, r5, n5)  # the paper's 5x5
        pool = model.get_layer(f"{name}_pool")
        assert pool.pool_size == (3, 3) and pool.strides == (1, 1)
        assert model.get_layer(f"{name}_pool_proj").kernel.shape == (1, 1, channels_in, proj)
        assert model.get_layer(f"{name}_output").output.shape[-1] == depth
    assert model.get_layer("inception_3a_output").output.shape[1:3] == (28, 28)
    assert model.get_layer("inception_4e_output").output.shape[1:3] == (14, 14)
    assert model.get_layer("inception_5b_output").output.shape[1:3] == (7, 7)
    assert model.get_layer("dropout").rate == 0.4


def test_googlenet_parameters_against_table_one():
    model = zoo.build("googlenet")
    rows = {}
    for layer in model.layers:
        key = layer.name if layer.name == "predictions" else "_".join(layer.name.split("_")[:2])
        key = "conv2" if key.startswith("conv2") else key
        rows[key] = rows.get(key, 0) + kernel_weights(layer)
    for key, thousands in TABLE_1_PARAMS_K.items():
        assert abs(rows[key] / 1024 - thousands) <= 1, (key, rows[key] / 1024)

    # The exact count from the table's filter numbers, kernels and biases, worked out by hand.
    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + c_out

    total = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    channels = 192
    for n1, r3, n3, r5, n5, proj, depth in TABLE_1.values():
        total += conv(1, channels, n1) + conv(1, channels, r3) + conv(3, r3, n3)
        total += conv(1, channels, r5) + conv(5, r5, n5) + conv(1, channels, proj)
        channels = depth
    total += 1024 * 1000 + 1000
    assert model.count_params() == total == 6_998_552
    # The paper's "about 6.8M": its params column sums to 6,797.7K kernel weights.
    assert abs(sum(rows.values()) / 1024 - 6797.7) / 6797.7 < 0.005


def test_googlenet_auxiliary_classifiers_give_three_outputs(rng):
    model = zoo.build("googlenet", aux_logits=True, input_shape=(96, 96, 3), classes=3)
    assert [tensor.shape for tensor in model.outputs] == [(None, 3)] * 3
    assert model.get_layer("aux1_conv").input.shape[-1] == 512  # on inception_4a
    assert model.get_layer("aux2_conv").input.shape[-1] == 528  # on inception_4d
    assert model.get_layer("aux1_dropout").rate == 0.7
    outputs = model(random_pixels(rng, (1, 96, 96, 3)), training=False)
    assert len(outputs) == 3 and all(np.allclose(np.sum(o), 1.0, atol=1e-5) for o in outputs)
    # At 224: 5x5/3 pooling of the 14 x 14 map gives 4 x 4 x 128 = 2048 inputs to the fc.
    full = zoo.build("googlenet", aux_logits=True)
    assert full.get_layer("aux1_fc").kernel.shape == (2048, 1024)
    assert full.count_params() == 6_998_552 + 2 * 2_098_176 + 65_664 + 67_712 + 2 * 1_025_000


def test_googlenet_auxiliary_classifiers_refuse_what_they_cannot_build():
    with pytest.raises(ValueError, match="include_top"):
        zoo.build("googlenet", aux_logits=True, include_top=False)
    with pytest.raises(ValueError, match="at least 65"):
        zoo.build("googlenet", aux_logits=True, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="fixed"):
        zoo.build("googlenet", aux_logits=True, input_shape=(None, None, 3))


def test_googlenet_batch_norm_option():
    model = zoo.build("googlenet", batch_norm=True, include_top=False, input_shape=(64, 64, 3))
    assert model.get_layer("inception_3a_5x5").use_bias is False
    assert isinstance(model.get_layer("inception_3a_5x5_bn"), keras.layers.BatchNormalization)


# --------------------------------------------------------------------------------- DenseNet

# keras.applications' documented totals (moving statistics included).
DENSENET_TOTALS = {"densenet121": 8_062_504, "densenet169": 14_307_880, "densenet201": 20_242_984}
DENSENET_TWINS = {
    "densenet121": keras.applications.DenseNet121,
    "densenet169": keras.applications.DenseNet169,
    "densenet201": keras.applications.DenseNet201,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DENSENET_TOTALS))
def test_densenet_total_parameters_equal_keras_applications(name):
    assert zoo.build(name).count_params() == DENSENET_TOTALS[name]


@pytest.mark.slow
@pytest.mark.parametrize("include_top", [True, False])
def test_densenet121_same_outputs_as_keras_applications(include_top, rng):
    shape = (64, 64, 3)
    options = dict(include_top=include_top, input_shape=shape, classes=10)
    options.update(classifier_activation=None) if include_top else options.update(pooling="avg")
    reference = keras.applications.DenseNet121(weights=None, **options)
    randomize_batch_norm(reference, rng)
    model = zoo.build("densenet121", **options)
    copy_weights_by_name(reference, model)

    pixels = random_pixels(rng, (2,) + shape)
    expected = reference(keras.applications.densenet.preprocess_input(pixels.copy()), training=False)
    actual = model(pixels, training=False)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-4, rtol=0)
    assert np.abs(np.asarray(expected)).max() > 1e-2, "outputs too small to make the comparison meaningful"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet169", "densenet201"])
def test_densenet169_201_have_keras_applications_layer_names_and_shapes(name):
    reference = DENSENET_TWINS[name](weights=None, include_top=False, input_shape=(64, 64, 3))
    model = zoo.build(name, include_top=False, input_shape=(64, 64, 3))
    shapes = lambda m: {w.path: tuple(w.shape) for layer in m.layers for w in layer.weights}  # noqa: E731
    assert shapes(model) == shapes(reference)


def test_densenet_feature_contract():
    images = keras.Input((64, 64, 3))
    features = zoo.backbones.backbone_features("densenet121", images)
    assert {key: (f.stride, f.channels, f.tensor.shape[1]) for key, f in features.items()} == {
        "C1": (2, 64, 32), "C2": (4, 256, 16), "C3": (8, 512, 8), "C4": (16, 1024, 4), "C5": (32, 1024, 2),
    }
    assert features["C4"].layer == "conv4_block24_concat" and features["C5"].layer == "relu"
