"""layers.roi_align: torchvision's LevelMapper and RoI Align (aligned=False) against NumPy
transcriptions of torchvision's code (`ops/poolers.py`, `csrc/ops/cpu/roi_align_kernel.cpp`)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.roi_align import MultiLevelRoIAlign, fpn_levels, roi_align


def reference_levels(rois):
    """torchvision's LevelMapper: floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to [2, 5]."""
    out = []
    for y1, x1, y2, x2 in rois:
        area = (y2 - y1) * (x2 - x1)
        size = math.sqrt(area)
        level = -math.inf if size == 0 else math.floor(4 + math.log2(size / 224) + 1e-6)
        out.append(int(min(max(level, 2), 5)))
    return out


def reference_bilinear(feature, y, x):
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
            + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])


def reference_roi_align(feature, roi, scale, size=7, ratio=2):
    """torchvision's roi_align_forward_kernel_impl for one RoI, aligned=False."""
    y1, x1, y2, x2 = (v * scale for v in roi)
    roi_h, roi_w = max(y2 - y1, 1.0), max(x2 - x1, 1.0)
    bin_h, bin_w = roi_h / size, roi_w / size
    out = np.zeros((size, size, feature.shape[-1]))
    for ph in range(size):
        for pw in range(size):
            total = 0.0
            for iy in range(ratio):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / ratio
                for ix in range(ratio):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / ratio
                    total = total + reference_bilinear(feature, y, x)
            out[ph, pw] = total / (ratio * ratio)
    return out


def test_levels_follow_torchvisions_level_mapper():
    sides = [0, 1, 16, 111.9, 112, 112.1, 223.9, 224, 448, 447.99, 896, 5000]
    rois = np.array([[0, 0, s, s] for s in sides] + [[3, 4, 3 + 50, 4 + 400]], np.float32)
    assert fpn_levels(rois).numpy().tolist() == reference_levels(rois.astype(np.float64))
    assert fpn_levels(rois).numpy().tolist()[:8] == [2, 2, 2, 2, 3, 3, 3, 4]


def test_roi_align_matches_torchvision_algorithm_on_each_level(rng):
    maps = [rng.normal(size=(2, 16 // 2**k, 20 // 2**k, 3)).astype(np.float32) for k in range(3)]
    scales = (1 / 4, 1 / 8, 1 / 16)
    rois = np.array([
        [[0, 0, 30, 40], [10.3, 5.7, 50.2, 77.1], [-8, -8, 12, 90], [60, 70, 64, 80]],
        [[1, 2, 3, 4], [0, 0, 64, 80], [30, 30, 31, 31], [0, 0, 0, 0]],
    ], np.float32)
    levels = np.array([[0, 1, 2, 0], [1, 2, 0, 2]], np.int32)
    got = roi_align([tf.constant(m) for m in maps], rois, levels, output_size=7, sampling_ratio=2,
                    scales=scales).numpy()
    assert got.shape == (2, 4, 7, 7, 3)
    for b in range(2):
        for n in range(4):
            level = levels[b, n]
            want = reference_roi_align(maps[level][b].astype(np.float64), rois[b, n], scales[level])
            np.testing.assert_allclose(got[b, n], want, atol=1e-5)


def test_roi_align_gradient_reaches_the_maps_and_compiles_with_xla(rng):
    maps = [tf.Variable(rng.normal(size=(1, 8 // 2**k, 8 // 2**k, 2)).astype(np.float32)) for k in range(2)]
    rois = tf.constant([[[0, 0, 16, 16], [4, 4, 30, 30]]], tf.float32)
    levels = tf.constant([[0, 1]])

    def pooled():
        return roi_align(maps, rois, levels, output_size=2, sampling_ratio=2, scales=(1 / 4, 1 / 8))

    with tf.GradientTape() as tape:
        total = tf.reduce_sum(pooled())
    gradients = tape.gradient(total, maps)
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients)
    np.testing.assert_allclose(tf.function(pooled, jit_compile=True)(), pooled(), atol=1e-6)


def test_multilevel_roi_align_layer_round_trips(rng, tmp_path):
    inputs = [keras.Input((None, None, 4)) for _ in range(4)] + [keras.Input((None, 4))]
    layer = MultiLevelRoIAlign(output_size=3, name="roi_heads.box_roi_pool")
    model = keras.Model(inputs, layer(inputs))
    maps = [rng.normal(size=(1, 32 // 2**k, 32 // 2**k, 4)).astype(np.float32) for k in range(4)]
    rois = np.array([[[0, 0, 20, 20], [0, 0, 128, 128], [8, 8, 120, 60]]], np.float32)
    out = model([*maps, rois]).numpy()
    assert out.shape == (1, 3, 3, 3, 4)
    # The first RoI (side 20) is on P2, the second (side 128) on P3: rows 0 and 1 of fpn_levels.
    levels = reference_levels(rois[0])
    for n in range(3):
        want = reference_roi_align(maps[levels[n] - 2][0], rois[0, n], 2.0 ** -levels[n], size=3)
        np.testing.assert_allclose(out[0, n], want, atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded([*maps, rois]), out, atol=1e-6)
    assert MultiLevelRoIAlign.from_config(layer.get_config()).get_config() == layer.get_config()


def test_layer_rejects_wrong_level_range():
    with pytest.raises(ValueError, match="min_level"):
        MultiLevelRoIAlign(min_level=5, max_level=2)


def test_the_layer_pools_under_xla_inside_a_plain_graph_and_a_saved_model(rng, tmp_path):
    # compile_pooling: a plain tf.function gets the pooling compiled alone; the result, its
    # gradient and a SavedModel of it agree with the uncompiled layer and the NumPy reference.
    maps = [tf.constant(rng.normal(size=(2, 32 // 2**k, 24 // 2**k, 3)).astype(np.float32)) for k in range(4)]
    rois = tf.constant(np.array([[[0, 0, 20, 20], [4, 2, 100, 90], [-6, -6, 9, 30]],
                                 [[1, 1, 2, 2], [0, 0, 160, 200], [0, 0, 0, 0]]], np.float32))
    compiled, plain = MultiLevelRoIAlign(output_size=3), MultiLevelRoIAlign(output_size=3, compile_pooling=False)
    graph_ops = set()

    @tf.function
    def pooled_and_gradient(layer, maps):
        with tf.GradientTape() as tape:
            tape.watch(maps)
            out = layer([*maps, rois])
            loss = tf.reduce_sum(out * out)
        graph_ops.update(op.type for op in tf.compat.v1.get_default_graph().get_operations())
        return out, tape.gradient(loss, maps, unconnected_gradients="zero")

    out, grads = pooled_and_gradient(compiled, maps)
    assert {"StatefulPartitionedCall", "PartitionedCall"} & graph_ops and "GatherV2" not in graph_ops
    graph_ops.clear()
    want, want_grads = pooled_and_gradient(plain, maps)
    assert "GatherV2" in graph_ops  # the uncompiled layer gathers in the graph itself
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) >= 2
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, atol=1e-4)
    levels = reference_levels(rois.numpy()[1])
    np.testing.assert_allclose(out[1, 1], reference_roi_align(maps[levels[1] - 2][1].numpy(), rois[1, 1],
                                                             2.0 ** -levels[1], size=3), atol=1e-5)

    module = tf.Module()
    module.pool = tf.function(lambda *args: compiled(list(args)),
                              input_signature=[tf.TensorSpec([None, None, None, 3])] * 4 + [tf.TensorSpec([None, None, 4])])
    tf.saved_model.save(module, str(tmp_path / "pool"))
    np.testing.assert_allclose(tf.saved_model.load(str(tmp_path / "pool")).pool(*maps, rois), want, atol=1e-5)
