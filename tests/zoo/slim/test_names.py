"""TF-slim checkpoint names (`zoo.slim.names`): the DeepLab backbones and DeepLab-v3+'s head.

Backbones: a checkpoint is written through `tf.compat.v1` under the slim names (random values), read back
with `tf.train.load_checkpoint` into the Keras model by `slim_variable_names`, and the Keras
model is compared with an independent forward pass written here with `tf.nn` from TF-slim's
definitions (research/slim/nets/resnet_v1.py, resnet_utils.py, research/deeplab/core/
resnet_v1_beta.py and xception.py), which reads the weights by their slim names. A wrong name,
a wrong stride placement or a wrong padding shows up as different numbers.

Head: the ASPP's, the decoder's and the logits' names are spelled out by hand as DeepLab's
checkpoints hold them.
"""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from layers import ASPP
from tests.helpers import random_pixels
from tests.zoo.slim.test_checkpoint import write_slim_checkpoint
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus
from zoo.slim.names import aspp_slim_names, head_slim_names, head_slim_scopes, slim_variable_names

SIZE = 64


# ---------------------------------------------------------------------------------------------
# checkpoint helpers


def random_checkpoint_values(model, names, rng):
    """Random values of slim's shapes for every name (positive moving variances)."""
    by_path = {w.path: w for w in model.weights}
    values = {}
    for path, name in names.items():
        shape = tuple(by_path[path].shape)
        if name.endswith("logits/weights") or name.endswith("Conv2d_1c_1x1/weights"):
            shape = (1, 1) + shape  # slim's logits are a 1x1 convolution
        if name.endswith("moving_variance") or name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("weights"):
            fan_in = int(np.prod(shape[:-1])) if not name.endswith("depthwise_weights") else 9
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        values[name] = value.astype("float32")
    return values


def load_by_names(model, names, prefix):
    """What a loader does with the map: read each slim tensor into its Keras variable."""
    reader = tf.train.load_checkpoint(prefix)
    by_path = {w.path: w for w in model.weights}
    for path, name in names.items():
        variable = by_path[path]
        variable.assign(reader.get_tensor(name).reshape(tuple(variable.shape)))
    return reader


# ---------------------------------------------------------------------------------------------
# the reference: slim's networks in plain tf.nn, reading weights by slim name


class SlimReference:
    def __init__(self, reader, scope, epsilon):
        self.reader, self.scope, self.epsilon = reader, scope, epsilon

    def get(self, name):
        return tf.constant(self.reader.get_tensor(f"{self.scope}/{name}"))

    def batch_norm(self, x, op):
        mean, variance = self.get(f"{op}/BatchNorm/moving_mean"), self.get(f"{op}/BatchNorm/moving_variance")
        gamma, beta = self.get(f"{op}/BatchNorm/gamma"), self.get(f"{op}/BatchNorm/beta")
        return (x - mean) * tf.math.rsqrt(variance + self.epsilon) * gamma + beta

    def conv2d_same(self, x, kernel, stride, rate, depthwise=False):
        """resnet_utils.conv2d_same / xception's fixed_padding: SAME if stride 1, else explicit
        symmetric zero padding and VALID."""
        conv = tf.nn.depthwise_conv2d if depthwise else tf.nn.conv2d
        strides = [1, stride, stride, 1] if depthwise else stride
        if stride == 1:
            return conv(x, kernel, strides, "SAME", dilations=[rate, rate])
        effective = kernel.shape[0] + (kernel.shape[0] - 1) * (rate - 1)
        begin, end = (effective - 1) // 2, (effective - 1) - (effective - 1) // 2
        x = tf.pad(x, [[0, 0], [begin, end], [begin, end], [0, 0]])
        return conv(x, kernel, strides, "VALID", dilations=[rate, rate])

    def conv_bn(self, x, op, *, stride=1, rate=1, relu=True):
        x = self.conv2d_same(x, self.get(f"{op}/weights"), stride, rate)
        x = self.batch_norm(x, op)
        return tf.nn.relu(x) if relu else x


def slim_resnet_v1(ref, x, *, depths, beta, output_stride, multi_grid):
    """resnet_v1_beta.resnet_v1_beta with bottleneck units; returns (net, end_points)."""
    end_points = {}
    if beta:
        x = ref.conv_bn(x, "conv1_1", stride=2)
        x = ref.conv_bn(x, "conv1_2")
        x = ref.conv_bn(x, "conv1_3")
    else:
        x = ref.conv_bn(x, "conv1", stride=2)
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    current, rate, target = 1, 1, output_stride // 4
    for block, (base, units) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        for unit in range(1, units + 1):
            stride = 2 if block < 4 and unit == units else 1
            unit_rate = multi_grid[unit - 1] if block == 4 else 1
            if current == target:
                unit_stride, unit_dilation = 1, rate
                rate *= stride
            else:
                unit_stride, unit_dilation = stride, 1
                current *= stride
            op = f"block{block}/unit_{unit}/bottleneck_v1"
            depth = 4 * base
            if x.shape[-1] == depth:
                shortcut = x if unit_stride == 1 else tf.nn.max_pool2d(x, 1, unit_stride, "SAME")
            else:
                shortcut = tf.nn.conv2d(x, ref.get(f"{op}/shortcut/weights"), unit_stride, "SAME")
                shortcut = ref.batch_norm(shortcut, f"{op}/shortcut")
            residual = ref.conv_bn(x, f"{op}/conv1")
            residual = ref.conv_bn(residual, f"{op}/conv2", stride=unit_stride, rate=unit_dilation * unit_rate)
            residual = ref.conv_bn(residual, f"{op}/conv3", relu=False)
            end_points[f"{op}/conv3"] = residual
            x = tf.nn.relu(shortcut + residual)
    return x, end_points


def slim_xception_65(ref, x, *, middle_units, output_stride, multi_grid):
    """deeplab/core/xception.py xception_65 (split separable convolutions, explicit padding)."""
    end_points = {}
    x = ref.conv_bn(x, "entry_flow/conv1_1", stride=2)
    x = ref.conv_bn(x, "entry_flow/conv1_2")
    blocks = [
        ("entry_flow/block1", (128,) * 3, "conv", 2, 1), ("entry_flow/block2", (256,) * 3, "conv", 2, 1),
        ("entry_flow/block3", (728,) * 3, "conv", 2, 1), ("middle_flow/block1", (728,) * 3, "sum", 1, middle_units),
        ("exit_flow/block1", (728, 1024, 1024), "conv", 2, 1), ("exit_flow/block2", (1536, 1536, 2048), "none", 1, 1),
    ]
    current, rate, target = 1, 1, output_stride // 2
    for scope, depths, skip, stride, units in blocks:
        last = scope == "exit_flow/block2"
        for unit in range(1, units + 1):
            if current == target:
                unit_stride, unit_rate = 1, rate
                rate *= stride
            else:
                unit_stride, unit_rate = stride, 1
                current *= stride
            op = f"{scope}/unit_{unit}/xception_module"
            residual = x
            for i, depth in enumerate(depths):
                conv_stride = unit_stride if i == 2 else 1
                conv_rate = unit_rate * (multi_grid[i] if last else 1)
                name = f"{op}/separable_conv{i + 1}"
                if not last:
                    residual = tf.nn.relu(residual)
                residual = ref.conv2d_same(
                    residual, ref.get(f"{name}_depthwise/depthwise_weights"), conv_stride, conv_rate, depthwise=True
                )
                residual = ref.batch_norm(residual, f"{name}_depthwise")
                if last:
                    residual = tf.nn.relu(residual)
                residual = tf.nn.conv2d(residual, ref.get(f"{name}_pointwise/weights"), 1, "SAME")
                residual = ref.batch_norm(residual, f"{name}_pointwise")
                if last:
                    residual = tf.nn.relu(residual)
                end_points[f"{name}_pointwise"] = residual
            if skip == "conv":
                shortcut = tf.nn.conv2d(x, ref.get(f"{op}/shortcut/weights"), unit_stride, "SAME")
                x = residual + ref.batch_norm(shortcut, f"{op}/shortcut")
            elif skip == "sum":
                x = residual + x
            else:
                x = residual
    return x, end_points


def _assert_close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 1e-3, "reference too small to compare"
    np.testing.assert_allclose(actual / scale, expected / scale, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# ResNet-v1 (slim placement)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, beta, output_stride, multi_grid",
    [("resnet101_beta", True, 16, (1, 2)), ("resnet101", False, 8, ()), ("resnet101", False, 32, ())],
)
def test_resnet_slim_checkpoint_computes_slim_resnet_v1(name, beta, output_stride, multi_grid, rng, tmp_path):
    depths = (2, 3, 2, 2)
    model = zoo.backbones.feature_extractor(
        name, input_shape=(SIZE, SIZE, 3), stride_placement="slim", depths=depths, use_bias=False,
        batch_norm_epsilon=1e-5, output_stride=output_stride, multi_grid=multi_grid, preprocessing=None,
    )
    names = slim_variable_names(model, scope="resnet_v1_101")
    assert len(names) == len(model.weights)
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", random_checkpoint_values(model, names, rng))
    reader = load_by_names(model, names, prefix)

    stem = "conv1_1" if beta else "conv1"
    np.testing.assert_array_equal(
        model.get_layer(f"{stem}_conv").kernel.numpy(), reader.get_tensor(f"resnet_v1_101/{stem}/weights")
    )
    inputs = random_pixels(rng, (1, SIZE, SIZE, 3)) - 120.0
    outputs = model(inputs, training=False)
    expected, end_points = slim_resnet_v1(
        SlimReference(reader, "resnet_v1_101", 1e-5), tf.constant(inputs), depths=depths, beta=beta,
        output_stride=output_stride, multi_grid=multi_grid or (1, 1),
    )
    _assert_close(outputs["C5"], expected)
    # DeepLab's decoder end point: conv3 + BN of block1's unit before the strided one.
    _assert_close(outputs["C2"], end_points["block1/unit_1/bottleneck_v1/conv3"])
    _assert_close(outputs["C4"], end_points["block3/unit_1/bottleneck_v1/conv3"])
    assert outputs["C2"].shape[1] == SIZE // 4


@pytest.mark.slow
def test_resnet_slim_names_follow_the_deeplab_checkpoints():
    model = zoo.build("resnet101_beta", stride_placement="slim", include_top=False, input_shape=(SIZE, SIZE, 3))
    names = slim_variable_names(model, scope="resnet_v1_101")
    assert names["conv1_1_conv/kernel"] == "resnet_v1_101/conv1_1/weights"
    assert names["conv1_3_bn/moving_variance"] == "resnet_v1_101/conv1_3/BatchNorm/moving_variance"
    assert names["conv2_block1_1_conv/kernel"] == "resnet_v1_101/block1/unit_1/bottleneck_v1/conv1/weights"
    assert names["conv2_block1_1_bn/gamma"] == "resnet_v1_101/block1/unit_1/bottleneck_v1/conv1/BatchNorm/gamma"
    assert names["conv2_block1_0_conv/kernel"] == "resnet_v1_101/block1/unit_1/bottleneck_v1/shortcut/weights"
    assert names["conv4_block23_3_bn/beta"] == "resnet_v1_101/block3/unit_23/bottleneck_v1/conv3/BatchNorm/beta"
    assert names["conv5_block3_2_conv/kernel"] == "resnet_v1_101/block4/unit_3/bottleneck_v1/conv2/weights"
    assert len(set(names.values())) == len(names) == len(model.weights)
    # No bias anywhere (slim convolutions before batch norm have none).
    assert not any(name.endswith("biases") for name in names.values())


@pytest.mark.slow
def test_resnet_v1_101_stem_names_do_not_match_the_beta_model():
    plain = zoo.build(
        "resnet101", stride_placement="slim", use_bias=False, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    beta = zoo.build("resnet101_beta", stride_placement="slim", include_top=False, input_shape=(SIZE, SIZE, 3))
    plain_names = set(slim_variable_names(plain, scope="resnet_v1_101").values())
    beta_names = set(slim_variable_names(beta, scope="resnet_v1_101").values())
    stem = {n for n in plain_names if n.startswith("resnet_v1_101/conv1/")}
    beta_stem = {n for n in beta_names if n.startswith("resnet_v1_101/conv1_")}
    assert len(stem) == 5 and len(beta_stem) == 15
    assert plain_names - beta_names == stem and beta_names - plain_names == beta_stem
    # The first shortcut's kernel has the same name but another shape (64 vs 128 inputs).
    assert tuple(plain.get_layer("conv2_block1_0_conv").kernel.shape) == (1, 1, 64, 256)
    assert tuple(beta.get_layer("conv2_block1_0_conv").kernel.shape) == (1, 1, 128, 256)


@pytest.mark.slow
def test_resnet_in_keras_placement_is_refused():
    model = zoo.build("resnet50", include_top=False, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="stride_placement='slim'"):
        slim_variable_names(model, scope="resnet_v1_50")
    slim = zoo.build("resnet50", stride_placement="slim", include_top=False, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="scope is required"):
        slim_variable_names(slim)
    with pytest.raises(ValueError, match="no slim twin"):
        slim_variable_names(zoo.build("xception", include_top=False, input_shape=(SIZE, SIZE, 3)))


def test_keras_biases_get_slim_bias_names():
    """A model built with conv biases maps them too: a loader reports them missing."""
    model = zoo.build("resnet50", stride_placement="slim", include_top=True, classes=3, input_shape=(SIZE, SIZE, 3))
    names = slim_variable_names(model, scope="resnet_v1_50")
    assert names["conv1_conv/bias"] == "resnet_v1_50/conv1/biases"
    assert names["predictions/kernel"] == "resnet_v1_50/logits/weights"
    assert names["predictions/bias"] == "resnet_v1_50/logits/biases"


# ---------------------------------------------------------------------------------------------
# Xception-65


@pytest.mark.slow
@pytest.mark.parametrize("output_stride, multi_grid", [(16, (1, 2, 4)), (32, (1, 1, 1))])
def test_xception65_slim_checkpoint_computes_deeplab_xception(output_stride, multi_grid, rng, tmp_path):
    model = zoo.backbones.feature_extractor(
        "xception65", input_shape=(SIZE, SIZE, 3), middle_flow_units=2, output_stride=output_stride,
        multi_grid=multi_grid, preprocessing=None,
    )
    names = slim_variable_names(model)
    assert len(names) == len(model.weights)
    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", random_checkpoint_values(model, names, rng))
    reader = load_by_names(model, names, prefix)
    inputs = rng.uniform(-1.0, 1.0, (1, SIZE, SIZE, 3)).astype("float32")
    outputs = model(inputs, training=False)
    expected, end_points = slim_xception_65(
        SlimReference(reader, "xception_65", 1e-3), tf.constant(inputs), middle_units=2,
        output_stride=output_stride, multi_grid=multi_grid,
    )
    _assert_close(outputs["C5"], expected)
    _assert_close(outputs["C2"], end_points["entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise"])
    _assert_close(outputs["C4"], end_points["exit_flow/block1/unit_1/xception_module/separable_conv2_pointwise"])


@pytest.mark.slow
def test_xception65_slim_names_follow_the_deeplab_checkpoints():
    model = zoo.build("xception65", include_top=True, classes=1001, input_shape=(SIZE, SIZE, 3))
    names = slim_variable_names(model)
    unit = "xception_65/entry_flow/block1/unit_1/xception_module"
    assert names["entry_flow_conv1_1/kernel"] == "xception_65/entry_flow/conv1_1/weights"
    assert names["entry_flow_conv1_2_bn/beta"] == "xception_65/entry_flow/conv1_2/BatchNorm/beta"
    depthwise = "entry_flow_block1_unit1_sepconv1_depthwise"
    assert names[f"{depthwise}/kernel"] == f"{unit}/separable_conv1_depthwise/depthwise_weights"
    assert names[f"{depthwise}_bn/gamma"] == f"{unit}/separable_conv1_depthwise/BatchNorm/gamma"
    assert names["entry_flow_block1_unit1_sepconv3_pointwise/kernel"] == f"{unit}/separable_conv3_pointwise/weights"
    assert names["entry_flow_block1_unit1_shortcut/kernel"] == f"{unit}/shortcut/weights"
    assert names["middle_flow_block1_unit16_sepconv3_pointwise_bn/moving_mean"] == (
        "xception_65/middle_flow/block1/unit_16/xception_module/separable_conv3_pointwise/BatchNorm/moving_mean"
    )
    assert names["predictions/kernel"] == "xception_65/logits/weights"
    assert len(set(names.values())) == len(names) == len(model.weights)


# ---------------------------------------------------------------------------------------------
# MobileNet-v2 (its function is keras.applications', checked in test_parity.py)


def test_mobilenet_v2_slim_checkpoint_loads_into_the_right_variables(rng, tmp_path):
    model = zoo.build("mobilenetv2", include_top=True, classes=1001, input_shape=(SIZE, SIZE, 3))
    names = slim_variable_names(model)
    assert len(set(names.values())) == len(names) == len(model.weights)
    expected_names = {
        "Conv1/kernel": "MobilenetV2/Conv/weights",
        "bn_Conv1/gamma": "MobilenetV2/Conv/BatchNorm/gamma",
        "expanded_conv_depthwise/kernel": "MobilenetV2/expanded_conv/depthwise/depthwise_weights",
        "expanded_conv_project_BN/moving_variance": "MobilenetV2/expanded_conv/project/BatchNorm/moving_variance",
        "block_1_expand/kernel": "MobilenetV2/expanded_conv_1/expand/weights",
        "block_1_depthwise/kernel": "MobilenetV2/expanded_conv_1/depthwise/depthwise_weights",
        "block_16_project/kernel": "MobilenetV2/expanded_conv_16/project/weights",
        "Conv_1/kernel": "MobilenetV2/Conv_1/weights",
        "Conv_1_bn/beta": "MobilenetV2/Conv_1/BatchNorm/beta",
        "predictions/kernel": "MobilenetV2/Logits/Conv2d_1c_1x1/weights",
        "predictions/bias": "MobilenetV2/Logits/Conv2d_1c_1x1/biases",
    }
    assert {path: names[path] for path in expected_names} == expected_names

    prefix = write_slim_checkpoint(tmp_path / "model.ckpt", random_checkpoint_values(model, names, rng))
    reader = load_by_names(model, names, prefix)
    np.testing.assert_array_equal(
        model.get_layer("block_3_depthwise").kernel.numpy(),
        reader.get_tensor("MobilenetV2/expanded_conv_3/depthwise/depthwise_weights"),
    )
    np.testing.assert_array_equal(
        model.get_layer("predictions").kernel.numpy(),
        reader.get_tensor("MobilenetV2/Logits/Conv2d_1c_1x1/weights")[0, 0],
    )
    probabilities = np.asarray(model(random_pixels(rng, (1, SIZE, SIZE, 3)), training=False))
    assert probabilities.shape == (1, 1001) and np.all(np.isfinite(probabilities))


def test_deeplab_stops_mobilenet_v2_at_layer_18():
    model = zoo.build("mobilenetv2", include_top=False, last_conv=False, input_shape=(SIZE, SIZE, 3))
    names = set(slim_variable_names(model).values())
    assert not any("Conv_1" in name for name in names)
    assert model.output.shape[-1] == 320


# ---------------------------------------------------------------------------------------------
# DeepLab-v3+'s head

# A small segmenter: ResNet-18 (no slim names: only the head is named) and narrow head layers.
TINY_DEEPLAB = dict(backbone="resnet18", num_classes=3, aspp_filters=8, decoder_projection_filters=4,
                    decoder_filters=8, preprocessing="torch", atrous_rates=(1, 2))


def tiny_deeplab(**overrides):
    return build_deeplab_v3_plus(DeepLabV3PlusConfig(**{**TINY_DEEPLAB, **overrides}), name="tiny_deeplab")


def test_aspp_names_follow_deeplab_scopes():
    layer = ASPP(4, atrous_rates=(6,), separable=True, name="aspp")
    with pytest.raises(ValueError, match="not built"):
        aspp_slim_names(layer)
    layer.build((None, None, None, 3))
    names = aspp_slim_names(layer)
    assert names["aspp/aspp0/kernel"] == "aspp0/weights"
    assert names["aspp/image_pooling_bn/moving_variance"] == "image_pooling/BatchNorm/moving_variance"
    assert names["aspp/aspp1_depthwise/kernel"] == "aspp1_depthwise/depthwise_weights"
    assert names["aspp/aspp1_pointwise_bn/gamma"] == "aspp1_pointwise/BatchNorm/gamma"
    assert names["aspp/concat_projection/kernel"] == "concat_projection/weights"
    assert len(names) == len(layer.weights) == len(set(names.values()))


def test_head_names_are_deeplabs():
    model = tiny_deeplab()
    names = set(head_slim_names(model).values())
    for expected in [
        "image_pooling/weights", "image_pooling/BatchNorm/gamma", "aspp0/weights", "aspp0/BatchNorm/moving_mean",
        "aspp1_depthwise/depthwise_weights", "aspp2_pointwise/BatchNorm/beta", "concat_projection/weights",
        "decoder/feature_projection0/weights", "decoder/feature_projection0/BatchNorm/moving_variance",
        "decoder/decoder_conv0_depthwise/depthwise_weights", "decoder/decoder_conv1_pointwise/weights",
        "logits/semantic/weights", "logits/semantic/biases",
    ]:
        assert expected in names
    assert not any(name.startswith(("conv1", "conv2")) for name in names)  # the backbone is not the head's


def test_every_head_layer_with_weights_has_a_slim_scope():
    model = tiny_deeplab()
    scopes = head_slim_scopes(model)
    head = [layer.name for layer in model.layers if layer.weights and not layer.name.startswith("conv")]
    unmapped = [name for name in head if name != "aspp" and name.removesuffix("_bn") not in scopes]
    assert unmapped == []
    assert scopes["decoder_conv0_depthwise"] == "decoder/decoder_conv0_depthwise"
    assert scopes["logits_semantic"] == "logits/semantic"


def test_non_separable_decoder_has_slim_repeat_scopes():
    model = tiny_deeplab(decoder_separable=False, aspp_separable=False)
    scopes = head_slim_scopes(model)
    assert scopes["decoder_conv0_1"] == "decoder/decoder_conv0/decoder_conv0_1"
    assert scopes["decoder_conv0_2"] == "decoder/decoder_conv0/decoder_conv0_2"
    assert "decoder_conv0_depthwise" not in scopes
    names = head_slim_names(model)
    gamma = model.get_layer("decoder_conv0_2_bn").gamma.path
    assert names[gamma] == "decoder/decoder_conv0/decoder_conv0_2/BatchNorm/gamma"
    assert {"aspp1/weights", "aspp1/BatchNorm/beta"} <= set(names.values())  # a plain 3x3 branch
