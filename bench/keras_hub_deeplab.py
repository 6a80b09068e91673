"""keras-hub's side of bench/deeplab_latency.py: DeepLabV3Plus on a ResNet-50, random weights.

Runs in its own virtual environment (keras-hub is never a dependency of the zoo), for example
`/work/kh-venv/bin/python bench/keras_hub_deeplab.py --size 512`, and speaks bench/_peer.py's
protocol: one JSON line describing the model (parameters, FLOPs by bench/_flops.py's rules),
then `run K` commands, each call `model(images, training=False)` in one `tf.function` on one
`[1, size, size, 3]` float32 image of random pixels.

The model, from keras-hub's own classes and constructor arguments (no preset, no download):
- `ResNetBackbone`: ResNet-50 (7x7 stem of 64, bottleneck blocks 3, 4, 6, 3 of 64 ... 512
  filters, post-activation: keras-hub's `resnet_50` configuration), except that the last stack
  has stride 1 instead of 2, so that the encoder's output stride is 16 like the zoo's.
  keras-hub's ResNet has no dilation switch, so that stack runs undilated: the same
  parameters and arithmetic as DeepLab's dilated stack, a smaller receptive field.
- `DeepLabV3Backbone`: the decoder taps the stride-4 map (`P2`), the spatial pyramid pooling
  (rates 6, 12, 18) the stride-16 one, upsampled by 4 to meet it, 48 projection filters.
  `DeepLabV3Backbone` derives its final upsampling from the last digit of the pyramid key
  (`2 ** level // upsampling_size`), and `ResNetBackbone` names its maps by stack (`P5` for the
  last), so the stride-16 map is handed over under the key of its stride, `P4`.
- `DeepLabV3ImageSegmenter` with `num_classes` (21) and no activation: logits.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
import keras_hub  # noqa: E402
from _flops import inference_flops  # noqa: E402
from _peer import serve  # noqa: E402


def build(size, num_classes, output_stride):
    last_stride = {16: 1, 32: 2}[output_stride]
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, last_stride],
        block_type="bottleneck_block", use_pre_activation=False, image_shape=(size, size, 3),
    )
    pyramid = dict(encoder.pyramid_outputs)
    key = f"P{output_stride.bit_length() - 1}"  # 16 -> P4, 32 -> P5: the key of the map's stride
    encoder.pyramid_outputs = {"P2": pyramid["P2"], key: pyramid["P5"]}
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key=key, upsampling_size=output_stride // 4,
        dilation_rates=[6, 12, 18], low_level_feature_key="P2", projection_filters=48,
        image_shape=(size, size, 3),
    )
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=num_classes, activation=None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--output-stride", type=int, default=16, choices=(16, 32))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jit", action="store_true", help="jit_compile=True (XLA)")
    args = parser.parse_args(argv)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    model = build(args.size, args.num_classes, args.output_stride)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3)).astype(np.float32))
    forward = tf.function(lambda x: model(x, training=False), jit_compile=args.jit)
    logits_shape = list(forward(images).shape)
    if logits_shape != [1, args.size, args.size, args.num_classes]:
        sys.exit(f"keras-hub's logits have shape {logits_shape}, expected [1, {args.size}, {args.size}, "
                 f"{args.num_classes}]")

    def run_once():
        return forward(images).numpy()  # reading the result waits for it

    serve(
        {
            "model": "keras-hub DeepLabV3ImageSegmenter on ResNetBackbone (ResNet-50), random weights",
            "keras_hub": keras_hub.__version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "parameters": model.count_params(), "logits_shape": logits_shape, "jit_compile": args.jit,
            "flops": inference_flops(model, (1, args.size, args.size, 3)),
        },
        run_once,
    )


if __name__ == "__main__":
    main()
