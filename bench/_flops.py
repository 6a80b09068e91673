"""FLOPs of a Keras model's inference graph, counted the same way on both sides of a comparison.

Used by bench/deeplab_latency.py in the zoo's venv and by bench/keras_hub_deeplab.py in
keras-hub's (both have TensorFlow), so both models are counted by the same rules: the model is
traced in a `tf.function` for one fixed input shape, its variables frozen into constants, and
the multiply-adds of every convolution and matrix product in that graph are counted from the
ops' static shapes:

    Conv2D                 out_elements * kernel_h * kernel_w * in_channels
    DepthwiseConv2dNative  out_elements * kernel_h * kernel_w
    MatMul, BatchMatMul*   rows * inner * columns

FLOPs = 2 x multiply-adds. `total` counts what runs: TensorFlow computes an atrous
convolution as SpaceToBatchND -> convolution -> BatchToSpaceND over the map zero-padded to a
multiple of the rate on each side, so on small maps with large rates (ASPP's 18 on a 32 x 32
map: 1296 output positions computed for 1024) it runs more than the layer's arithmetic.
`nominal` counts the atrous convolutions over their real outputs only, the figure a paper would
give. Element-wise ops, batch norms, pooling and resizes are left out (a few percent of a CNN's
arithmetic). `tf.compat.v1.profiler`'s own count is recorded beside it
as a cross-check (`profiler_total`): it counts the same convolutions and matmuls plus bias adds
and other element-wise ops, so it comes out slightly above `total`, and it has no `nominal`.
"""

from __future__ import annotations

import math

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def _output_elements(op, nominal: bool) -> int:
    """The convolution's output elements; `nominal`: those of the atrous convolution it
    implements when TensorFlow wrapped it in SpaceToBatchND ... BatchToSpaceND."""
    if nominal and op.inputs[0].op.type == "SpaceToBatchND":
        tensor = op.outputs[0]
        for _ in range(3):  # conv [-> BiasAdd] -> BatchToSpaceND
            consumers = tensor.consumers()
            if not consumers:
                break
            if consumers[0].type == "BatchToSpaceND":
                return math.prod(consumers[0].outputs[0].shape)
            tensor = consumers[0].outputs[0]
    return math.prod(op.outputs[0].shape)


def _multiply_adds(op, nominal: bool = False) -> int:
    if op.type == "Conv2D":
        kernel = op.inputs[1].shape
        return _output_elements(op, nominal) * kernel[0] * kernel[1] * kernel[2]
    if op.type == "DepthwiseConv2dNative":
        kernel = op.inputs[1].shape
        return _output_elements(op, nominal) * kernel[0] * kernel[1]
    if op.type in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        left = op.inputs[0].shape
        transpose = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
        inner = left[-2] if transpose else left[-1]
        return math.prod(op.outputs[0].shape) * inner
    return 0


def inference_flops(model, input_shape) -> dict:
    """{"total": FLOPs, "by_op": {op type: FLOPs}, "profiler_total": ...} of
    `model(x, training=False)` on one input of `input_shape`."""
    forward = tf.function(lambda images: model(images, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    by_op: dict[str, int] = {}
    nominal = 0
    for op in graph.get_operations():
        flops = 2 * _multiply_adds(op)
        if flops:
            by_op[op.type] = by_op.get(op.type, 0) + flops
            nominal += 2 * _multiply_adds(op, nominal=True)
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    profile = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                            options=options)
    return {"total": sum(by_op.values()), "nominal": nominal, "by_op": by_op,
            "profiler_total": int(profile.total_float_ops)}
