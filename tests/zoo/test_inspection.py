"""zoo.inspection (`zoo.inspect`): receptive fields (hand-known values and empirical
measurements), feature maps, and the `zoo inspect` command."""

import cv2
import keras
import numpy as np
import pytest

import zoo
from zoo import cli
from zoo.inspection import ReceptiveField, feature_maps, receptive_field

# ------------------------------------------------------------------ computed receptive fields


def test_vgg16_conv5_3_sees_196_pixels_at_stride_16():
    model = zoo.build("vgg16", include_top=False)
    field = receptive_field(model, "block5_conv3")
    # 13 3x3 convolutions and 4 2x2/2 poolings: 1 + 2 * (2 + 2*2 + 3*4 + 3*8 + 3*16) + (1 + 2 + 4 + 8) = 196
    # (Araujo et al., Distill 2019, list 196 and effective padding 90 for VGG-16 conv5_3).
    assert field == ReceptiveField(size=(196, 196), stride=(16, 16), start=(7.5, 7.5))
    assert field.padding == (90.0, 90.0)
    assert receptive_field(model, "block5_pool").size == (212, 212)
    assert receptive_field(model, "block5_pool").stride == (32, 32)


# ResNet-50 (keras.applications placement), by hand: layer, field, stride.
RESNET50_FIELDS = [
    ("conv1_relu", 7, 2),  # 7x7/2
    ("pool1_pool", 11, 4),  # + (3 - 1) * 2
    ("conv2_block3_out", 35, 4),  # + 3 blocks * (3 - 1) * 4
    ("conv3_block4_out", 99, 8),  # the stride is in the 1x1: + 4 * 2 * 8
    ("conv4_block6_out", 291, 16),  # + 6 * 2 * 16
    ("conv5_block3_out", 483, 32),  # + 3 * 2 * 32 (Distill lists 483 for ResNet-50 v1)
]


def test_resnet50_fields_follow_from_its_3x3_convolutions():
    model = zoo.build("resnet50", include_top=False, input_shape=(224, 224, 3))
    for layer, size, stride in RESNET50_FIELDS:
        field = receptive_field(model, layer)
        assert field.size == (size, size) and field.stride == (stride, stride), layer
        # Every layer pads symmetrically (explicit ZeroPadding before the strided 7x7 and 3x3
        # pool, 1x1 strided convolutions need none), so cell 0's field is centred on pixel 0.
        assert field.start == (0.0, 0.0) and field.padding == ((size - 1) / 2,) * 2, layer


def test_unsupported_layers_are_named_in_the_error():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.UpSampling2D(name="upsample")(x)
    x = keras.layers.Conv2D(4, 3, name="after")(x)
    model = keras.Model(inputs, x)
    assert receptive_field(model, "conv").size == (3, 3)
    with pytest.raises(ValueError, match="'upsample' \\(UpSampling2D\\)"):
        receptive_field(model, "after")
    with pytest.raises(ValueError, match="not a \\[B, H, W, C\\] map"):
        receptive_field(zoo.build("lenet5"), "f6")
    with pytest.raises(ValueError, match="'nope' is not in model"):
        receptive_field(model, "nope")


# --------------------------------------------------------------- empirical receptive fields


def positive_weights(model, rng):
    """All kernels positive and all biases zero, batch norm an identity: no cancellation."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([np.ones(channels), np.zeros(channels), np.zeros(channels), np.ones(channels)])
            continue
        weights = []
        for weight in layer.get_weights():
            fan_in = max(1, int(np.prod(weight.shape[:-1])))
            weights.append(rng.uniform(0.5, 1.0, weight.shape) / fan_in if weight.ndim > 1 else np.zeros(weight.shape))
        layer.set_weights(weights)


def extent(mask, axis):
    """First and last index along `axis` where `mask` is set."""
    rows = np.flatnonzero(mask.any(axis=1 - axis))
    return float(rows[0]), float(rows[-1])


def assert_inside(bounds, size):
    for first, last in bounds:
        assert 0 <= first and last <= size - 1, f"field {bounds} is clipped by the {size}-pixel image"


def small_stack():
    """Every kind of layer the walk knows, with branches of different fields merged."""
    inputs = keras.Input((64, 64, 1))
    x = keras.layers.ZeroPadding2D(((2, 1), (1, 2)), name="pad")(inputs)
    x = keras.layers.Conv2D(3, 5, strides=2, activation="relu", name="conv_s2")(x)  # valid
    x = keras.layers.BatchNormalization(name="bn")(x)
    a = keras.layers.Conv2D(3, 3, dilation_rate=2, padding="same", activation="relu", name="dilated")(x)
    b = keras.layers.DepthwiseConv2D(3, strides=1, padding="same", name="depthwise")(x)
    b = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="avg")(b)
    x = keras.layers.Concatenate(name="concat")([a, b])
    # 3x3/2 "same" on an even size: TensorFlow pads 0 before and 1 after.
    x = keras.layers.SeparableConv2D(4, 3, strides=2, padding="same", activation="relu", name="separable")(x)
    c = keras.layers.Conv2D(4, 1, name="shortcut")(x)
    d = keras.layers.Conv2D(4, (3, 5), padding="same", name="wide")(x)
    x = keras.layers.Add(name="add")([c, d])
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    return keras.Model(inputs, x)


def test_small_stack_field_equals_the_gradients_extent(rng):
    model = small_stack()
    positive_weights(model, rng)
    field = receptive_field(model, "pool")
    _, height, width, _ = model.output.shape
    cell = (height // 2, width // 2)
    bounds = field.bounds(cell)
    assert_inside(bounds, 64)

    image = keras.ops.convert_to_tensor(rng.uniform(1.0, 2.0, (1, 64, 64, 1)).astype("float32"))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(image)
        output = model(image, training=False)
        cell_value = keras.ops.sum(output[0, cell[0], cell[1]])
    gradient = np.abs(np.asarray(tape.gradient(cell_value, image))[0, ..., 0]) > 0
    assert extent(gradient, 0) == bounds[0]
    assert extent(gradient, 1) == bounds[1]
    assert field.size[0] != field.size[1]  # the 3x5 kernel makes it non-square


def perturbation_extent(model, size, cell, rng, *, bump=1000.0, chunk=24):
    """Rows of the input that change output `cell` when raised by `bump` (one image per row).

    A gradient would miss most of a max pooling's window (it flows to the maximum only); with
    positive weights every row inside the field raises the cell, and one outside cannot.
    """
    base = rng.uniform(1.0, 2.0, (size, size, 3)).astype("float32")
    images = np.repeat(base[None], size + 1, axis=0)
    for row in range(size):
        images[row + 1, row, :, :] += bump
    values = np.concatenate([
        np.asarray(model(images[i : i + chunk], training=False))[:, cell[0], cell[1]].sum(axis=-1)
        for i in range(0, size + 1, chunk)
    ])
    changed = np.abs(values[1:] - values[0]) > 1e-4 * np.abs(values[0])
    rows = np.flatnonzero(changed)
    return float(rows[0]), float(rows[-1])


@pytest.mark.parametrize(
    "name, layer, size",
    [("vgg16", "block3_conv3", 40), ("vgg16", "block4_conv1", 60), ("resnet50", "conv3_block1_out", 51)],
)
def test_field_equals_the_measured_extent_through_max_pooling(name, layer, size, rng):
    full = zoo.build(name, include_top=False, input_shape=(72, 72, 3), preprocessing=None)
    model = keras.Model(full.input, full.get_layer(layer).output)
    positive_weights(model, rng)
    field = receptive_field(model, layer)
    assert field.size == (size, size)
    cells = model.output.shape[1]
    # The cell nearest the middle whose field lies inside the image.
    cell = min(
        (c for c in range(cells) if 0 <= field.bounds((c, c))[0][0] and field.bounds((c, c))[0][1] <= 71),
        key=lambda c: abs(c - cells / 2),
    )
    bounds = field.bounds((cell, cell))
    assert_inside(bounds, 72)
    assert perturbation_extent(model, 72, (cell, cell), rng) == bounds[0]


# ------------------------------------------------------------------------------ feature maps


def known_model():
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    model = keras.Model(inputs, x, name="known")
    model.get_layer("conv").set_weights([np.array([1.0, -1.0], "float32").reshape(1, 1, 1, 2)])
    return model


def test_feature_maps_draw_one_row_per_layer_with_the_activations(rng):
    image = rng.normal(size=(8, 8, 1)).astype("float32")
    figure = feature_maps(known_model(), image, ["conv", "relu", "pool"])
    axes = np.array(figure.axes).reshape(3, 2)  # three layers, two channels each
    x = image[..., 0]
    expected = {
        "conv": [x, -x],
        "relu": [np.maximum(x, 0), np.maximum(-x, 0)],
        "pool": [np.maximum(x, 0).reshape(4, 2, 4, 2).max(axis=(1, 3)), np.maximum(-x, 0).reshape(4, 2, 4, 2).max(axis=(1, 3))],
    }
    for row, layer in enumerate(["conv", "relu", "pool"]):
        assert axes[row, 0].get_title(loc="left").startswith(layer)
        for channel in range(2):
            drawn = np.asarray(axes[row, channel].images[0].get_array())
            np.testing.assert_allclose(drawn, expected[layer][channel], atol=1e-6)
        np.testing.assert_allclose(figure.activations[layer], np.stack(expected[layer], axis=-1), atol=1e-6)


def test_feature_maps_cap_the_channels_and_resize_to_a_fixed_input(rng):
    model = zoo.build("vgg16", include_top=False, input_shape=(32, 32, 3))
    image = rng.uniform(0, 255, (50, 40, 3)).astype("float32")
    figure = feature_maps(model, image, ["block1_conv1", "block2_pool"], max_channels=3)
    assert len(figure.axes) == 6
    assert figure.activations["block1_conv1"].shape == (32, 32, 64)
    assert figure.activations["block2_pool"].shape == (8, 8, 128)
    with pytest.raises(ValueError, match="channels"):
        feature_maps(model, image[..., :1], ["block1_conv1"])
    with pytest.raises(ValueError, match="not a \\[B, H, W, C\\] feature map"):
        feature_maps(zoo.build("lenet5"), np.zeros((32, 32, 1)), ["f6"])


# ----------------------------------------------------------------------------------- the CLI


def test_cli_inspect_writes_a_png_and_prints_receptive_fields(tmp_path, rng, capsys):
    image_path = tmp_path / "image.png"
    cv2.imwrite(str(image_path), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = tmp_path / "fig.png"
    argv = ["inspect", "vgg16", str(image_path), "--layers", "block1_conv1", "block1_pool", "--max-channels", "4",
            "--out", str(out), "--receptive-field", "block5_conv3"]
    assert cli.main(argv) == 0
    assert "block5_conv3: receptive field 196x196 px, stride 16x16" in capsys.readouterr().out
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "image.png"]  # no temporary left


def test_cli_inspect_errors(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert cli.main(["inspect", "vgg16", str(tmp_path / "broken.png"), "--receptive-field", "block1_conv1"]) == 2
    assert "not a readable image" in capsys.readouterr().err
    image_path = tmp_path / "image.png"
    cv2.imwrite(str(image_path), np.zeros((40, 40, 3), np.uint8))
    assert cli.main(["inspect", "vgg16", str(image_path), "--layers", "block1_conv1"]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli.main(["inspect", "vgg16", str(image_path), "--layers", "nope", "--out", str(tmp_path / "f.png")]) == 2
    assert "'nope' is not in model" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()
