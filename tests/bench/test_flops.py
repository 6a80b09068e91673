"""bench/_flops.py: the multiply-add count that bench/deeplab_latency.py reports for both models."""

import keras

from bench._flops import inference_flops


def tiny_model(dilation):
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(images)
    x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(5)(x))


# By hand: conv 8*8 outputs * 4 filters * 3*3*3 taps; depthwise 8*8*4 outputs * 3*3 taps; dense 4*5.
MULTIPLY_ADDS = 8 * 8 * 4 * 27 + 8 * 8 * 4 * 9 + 4 * 5


def test_undilated_counts_match_hand_computed_values():
    flops = inference_flops(tiny_model(1), (1, 8, 8, 3))
    assert flops["total"] == flops["nominal"] == 2 * MULTIPLY_ADDS
    assert flops["by_op"]["Conv2D"] == 2 * 8 * 8 * 4 * 27
    assert flops["by_op"]["DepthwiseConv2dNative"] == 2 * 8 * 8 * 4 * 9
    # TensorFlow's profiler counts the same products plus the bias adds and other element-wise ops.
    assert flops["total"] <= flops["profiler_total"] <= 1.1 * flops["total"]


def test_atrous_padding_counts_in_total_not_in_nominal():
    # Rate 6 on an 8 x 8 map: TensorFlow pads it to 24 x 24 for SpaceToBatchND (36 blocks of
    # 4 x 4, each giving 2 x 2 outputs), so 144 output positions run where the layer has 64.
    flops = inference_flops(tiny_model(6), (1, 8, 8, 3))
    assert flops["nominal"] == 2 * MULTIPLY_ADDS
    assert flops["total"] == 2 * (MULTIPLY_ADDS - 8 * 8 * 4 * 9 + 144 * 4 * 9)
