"""`zoo.detection.postprocess`: the RoI reshaping layers against NumPy reshapes, and
`DetectionPostprocess` against a NumPy decode + clip + greedy per-class NMS and a hand case.

Shapes: B images, N RoIs, K object classes, D detections.
"""

import keras
import numpy as np
import pytest

from zoo.detection.postprocess import ClassBoxDeltas, DetectionPostprocess, FlattenRoIs, UnflattenRoIs

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


# --------------------------------------------------------------------------- NumPy reference


def _decode(deltas, rois):
    """Fast R-CNN's decode in float64, `deltas [..., 4]` against `rois [..., 4]`."""
    heights, widths = rois[..., 2] - rois[..., 0], rois[..., 3] - rois[..., 1]
    centre_y, centre_x = rois[..., 0] + 0.5 * heights, rois[..., 1] + 0.5 * widths
    centre_y = centre_y + deltas[..., 0] / WEIGHTS[0] * heights
    centre_x = centre_x + deltas[..., 1] / WEIGHTS[1] * widths
    half_h = 0.5 * heights * np.exp(np.minimum(deltas[..., 2] / WEIGHTS[2], np.log(1000 / 16)))
    half_w = 0.5 * widths * np.exp(np.minimum(deltas[..., 3] / WEIGHTS[3], np.log(1000 / 16)))
    return np.stack([centre_y - half_h, centre_x - half_w, centre_y + half_h, centre_x + half_w], axis=-1)


def _iou(a, b):
    overlap_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    overlap_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = overlap_h * overlap_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def _reference(class_probs, box_deltas, rois, image_size, *, max_detections, iou_threshold, score_threshold):
    """One image: a list of (score, class id, box) by descending score, and the suppressed count."""
    height, width = image_size
    real = np.any(rois != 0, axis=-1) & np.all(np.isfinite(rois), axis=-1)
    candidates, suppressed = [], 0
    for k in range(box_deltas.shape[1]):
        boxes = np.clip(_decode(box_deltas[:, k].astype(np.float64), np.nan_to_num(rois).astype(np.float64)),
                        0.0, [height, width, height, width])
        scores = np.where(real, class_probs[:, k + 1], 0.0)
        kept = []
        for i in np.argsort(-scores, kind="stable"):
            if not scores[i] > score_threshold or len(kept) == max_detections:
                break
            if all(_iou(boxes[i], boxes[j]) <= iou_threshold for j in kept):
                kept.append(i)
            else:
                suppressed += 1
        candidates += [(scores[i], k + 1, boxes[i]) for i in kept]
    candidates.sort(key=lambda candidate: -candidate[0])
    return candidates[:max_detections], suppressed


def _run(layer, class_probs, box_deltas, rois, image_size):
    images = np.zeros((len(rois), *image_size, 3), "float32")
    return {key: np.asarray(value) for key, value in layer([class_probs, box_deltas, rois, images]).items()}


# --------------------------------------------------------------------------- RoI reshaping


def test_flatten_and_unflatten_rois_are_numpy_reshapes(rng):
    pooled = rng.normal(size=(2, 3, 4, 4, 5)).astype("float32")
    rois = rng.uniform(0, 50, (2, 3, 4)).astype("float32")

    flat = np.asarray(FlattenRoIs()(pooled))
    np.testing.assert_array_equal(flat, pooled.reshape(6, 4, 4, 5))
    np.testing.assert_array_equal(np.asarray(UnflattenRoIs()([flat, rois])), pooled)

    features = flat.reshape(6, -1)  # e.g. fc7 of each RoI
    np.testing.assert_array_equal(np.asarray(UnflattenRoIs()([features, rois])), features.reshape(2, 3, -1))


def test_no_rois_flatten_to_one_zero_row_and_unflatten_to_none(rng):
    pooled = np.zeros((2, 0, 4, 4, 5), "float32")
    flat = np.asarray(FlattenRoIs()(pooled))
    assert flat.shape == (1, 4, 4, 5) and not flat.any()
    assert np.asarray(UnflattenRoIs()([flat, np.zeros((2, 0, 4), "float32")])).shape == (2, 0, 4, 4, 5)


def test_reshaping_layers_infer_static_shapes():
    assert FlattenRoIs().compute_output_shape((2, 3, 7, 7, 512)) == (6, 7, 7, 512)
    assert FlattenRoIs().compute_output_shape((None, 3, 7, 7, 512)) == (None, 7, 7, 512)
    assert UnflattenRoIs().compute_output_shape([(6, 4096), (2, 3, 4)]) == (2, 3, 4096)
    assert ClassBoxDeltas(5).compute_output_shape((2, 3, 20)) == (2, 3, 5, 4)


def test_class_box_deltas_groups_four_numbers_per_class(rng):
    flat = rng.normal(size=(2, 3, 12)).astype("float32")
    layer = ClassBoxDeltas(3)
    grouped = np.asarray(layer(flat))
    np.testing.assert_array_equal(grouped, flat.reshape(2, 3, 3, 4))
    np.testing.assert_array_equal(grouped[1, 2, 1], flat[1, 2, 4:8])  # class 2's (dy, dx, dh, dw)
    assert ClassBoxDeltas.from_config(layer.get_config()).num_classes == 3


# --------------------------------------------------------------------------- DetectionPostprocess


def test_a_hand_case_decodes_clips_and_drops_padding_and_non_finite_rois():
    # Image 40 x 60; K = 2. RoI 0 is a 10 x 20 box; RoI 1 runs past the right edge; RoI 2 is
    # padding and RoI 3 has a NaN, both with high scores that must never be detections.
    rois = np.array([[[10, 10, 20, 30], [0, 40, 20, 80], [0, 0, 0, 0], [np.nan, 0, 10, 10]]], "float32")
    class_probs = np.array([[[0.1, 0.7, 0.2], [0.5, 0.04, 0.46], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], "float32")
    box_deltas = np.zeros((1, 4, 2, 4), "float32")
    # RoI 0, class 1: move down by half its height (dy = 10 * 0.5) and double its width
    # (dw = 5 * log 2): [15, 0, 25, 40].
    box_deltas[0, 0, 0] = [5.0, 0.0, 0.0, 5.0 * np.log(2.0)]

    detections = _run(DetectionPostprocess(max_detections=5), class_probs, box_deltas, rois, (40, 60))

    assert detections["num_detections"].tolist() == [3]
    np.testing.assert_allclose(detections["scores"][0], [0.7, 0.46, 0.2, 0.0, 0.0], atol=1e-6)
    assert detections["classes"][0].tolist() == [1, 2, 2, 0, 0]
    np.testing.assert_allclose(detections["boxes"][0], [[15, 0, 25, 40], [0, 40, 20, 60], [10, 10, 20, 30],
                                                        [0, 0, 0, 0], [0, 0, 0, 0]], atol=1e-4)
    # RoI 1's class 1 scores 0.04, below the 0.05 threshold: left out.


@pytest.mark.parametrize("seed", range(3))
def test_detections_equal_a_numpy_decode_clip_and_greedy_nms(seed):
    rng = np.random.default_rng(seed)
    batch, count, classes, image_size = 2, 12, 3, (48, 64)
    # RoIs around three centres, so that their decoded boxes overlap and NMS has work to do.
    centres = rng.uniform([10, 10], [38, 54], (batch, 3, 2))[:, rng.integers(0, 3, count)]
    sizes = rng.uniform(8, 30, (batch, count, 2))
    rois = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1).astype("float32")
    rois[1, -2:] = 0.0  # padding rows
    logits = rng.normal(0.0, 1.5, (batch, count, classes + 1))
    class_probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    box_deltas = rng.normal(0.0, 1.0, (batch, count, classes, 4)).astype("float32")
    options = dict(max_detections=6, iou_threshold=0.4, score_threshold=0.1)

    detections = _run(DetectionPostprocess(**options), class_probs, box_deltas, rois, image_size)

    suppressed = 0
    for b in range(batch):
        expected, dropped = _reference(class_probs[b], box_deltas[b], rois[b], image_size, **options)
        suppressed += dropped
        found = int(detections["num_detections"][b])
        assert found == len(expected)
        np.testing.assert_allclose(detections["scores"][b, :found], [e[0] for e in expected], atol=1e-6)
        assert detections["classes"][b, :found].tolist() == [e[1] for e in expected]
        np.testing.assert_allclose(detections["boxes"][b, :found], np.array([e[2] for e in expected]).reshape(-1, 4),
                                   atol=1e-3)
        assert not detections["boxes"][b, found:].any() and not detections["classes"][b, found:].any()
    assert suppressed > 0  # the case does exercise the suppression


def test_outputs_are_float32_and_int32_and_the_layer_round_trips_through_keras(rng, tmp_path):
    count, classes = 5, 2
    inputs = {
        "class_probs": keras.Input((count, classes + 1), name="class_probs"),
        "box_deltas": keras.Input((count, classes, 4), name="box_deltas"),
        "rois": keras.Input((count, 4), name="rois"),
        "images": keras.Input((32, 32, 3), name="images"),
    }
    layer = DetectionPostprocess(max_detections=4, iou_threshold=0.5, score_threshold=0.2, box_weights=(1, 1, 1, 1))
    model = keras.Model(inputs, layer(list(inputs.values())))
    values = {
        "class_probs": rng.dirichlet(np.ones(classes + 1), (1, count)).astype("float32"),
        "box_deltas": rng.normal(0.0, 0.1, (1, count, classes, 4)).astype("float32"),
        "rois": np.sort(rng.uniform(0, 32, (1, count, 2, 2)), axis=2).reshape(1, count, 4).astype("float32"),
        "images": np.zeros((1, 32, 32, 3), "float32"),
    }
    outputs = model(values)
    assert {key: np.asarray(value).dtype.name for key, value in outputs.items()} == {
        "boxes": "float32", "scores": "float32", "classes": "int32", "num_detections": "int32"}
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {
        "boxes": (1, 4, 4), "scores": (1, 4), "classes": (1, 4), "num_detections": (1,)}

    config = layer.get_config()
    assert {key: config[key] for key in ("max_detections", "iou_threshold", "score_threshold", "box_weights")} == {
        "max_detections": 4, "iou_threshold": 0.5, "score_threshold": 0.2, "box_weights": [1.0, 1.0, 1.0, 1.0]}
    model.save(tmp_path / "postprocess.keras")
    loaded = keras.saving.load_model(tmp_path / "postprocess.keras", safe_mode=True)
    for key, value in loaded(values).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(outputs[key]))
