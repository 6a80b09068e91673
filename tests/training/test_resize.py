"""The resize mode through the trainer and evaluation: `TrainConfig.resize` in run.json and in
what a resume must agree on, validation equal to `evaluate` on letterboxed images, and detections
of a letterboxed detector scored in the original images' pixels."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from tests.helpers import bright_object_detector
from training import TrainConfig, data, train
from training.detection import detect_source
from training.fit import evaluate, resume_differences


def _tiny_segmenter(num_classes):
    inputs = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes + 1, 1, name="logits")(x), name="tiny_segmenter")


def test_resize_is_checked_recorded_and_part_of_what_a_resume_must_agree_on(tmp_path):
    with pytest.raises(ValueError, match=r"TrainConfig.resize must be one of \('stretch', 'letterbox'\), got 'fit'"):
        TrainConfig(resize="fit")
    assert TrainConfig().resize == "stretch"
    new = {"config": {"resize": "letterbox", "seed": 0}}
    assert resume_differences({"config": {"resize": "stretch", "seed": 0}}, new) == [("resize", "stretch", "letterbox")]
    assert resume_differences({"config": {"seed": 0}}, new) == []  # a run.json from before resize was recorded

    # Non-square images (24 x 48) into 32 x 32: the content is 16 x 32, then 16 rows of padding.
    source = data.synthetic(16, image_size=(24, 48), num_classes=2, seed=0, max_objects=2)
    validation = data.synthetic(8, image_size=(24, 48), num_classes=2, seed=5, max_objects=2)
    config = TrainConfig(epochs=1, batch_size=8, image_size=(32, 32), resize="letterbox", optimizer="adam",
                         learning_rate=1e-3, augment=False, precise_bn=0)
    result = train(_tiny_segmenter, source, validation, out_dir=tmp_path / "run", task="segmentation", config=config,
                   verbose=0)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["resize"] == "letterbox"
    # The validation during training and `evaluate` score the same letterboxed pixels, padding ignored.
    metrics = evaluate(result.model, validation, task="segmentation", batch_size=8, verbose=0, resize="letterbox")
    assert result.history["val_mIoU"][-1] == pytest.approx(metrics["mIoU"], abs=1e-5)
    stretched = evaluate(result.model, validation, task="segmentation", batch_size=8, verbose=0, resize="stretch")
    assert stretched["mIoU"] != pytest.approx(metrics["mIoU"], abs=1e-5)
    with pytest.raises(ValueError, match="trained with resize letterbox; this command asks for resize stretch"):
        train(_tiny_segmenter, source, validation, out_dir=tmp_path / "run", task="segmentation",
              config=dataclasses.replace(config, epochs=2, resize="stretch"), resume=True, verbose=0)
    with pytest.raises(ValueError, match="evaluate: resize must be one of"):
        evaluate(result.model, validation, task="segmentation", resize="pad")


def _object_image(size, box):
    image = np.full((*size, 3), 30, np.uint8)
    ymin, xmin, ymax, xmax = box
    image[ymin:ymax, xmin:xmax] = 230
    return image


def test_evaluate_scores_a_letterboxed_detector_in_the_original_pixels():
    # One object at [10, 20, 30, 60] of a 40 x 80 image; letterboxed into 32 x 32 (scale 0.4, 16
    # rows of padding) it is at [4, 8, 12, 24]. A detection there is perfect in the original pixels
    # only if evaluation undoes the letterbox (stretch would map it back to [5, 20, 15, 60], IoU 0.25).
    wide = data.DatasetSource([data.Example(image=_object_image((40, 80), [10, 20, 30, 60]), boxes=[[10, 20, 30, 60]],
                                            classes=[1], source="wide")],
                              class_names=("thing",), task_kinds=("detection",), class_source="--classes")
    perfect = bright_object_detector((32, 32), fixed_box=[4.0, 8.0, 12.0, 24.0])
    assert evaluate(perfect, wide, task="detection", verbose=0, resize="letterbox")["mAP@0.5"] == pytest.approx(1.0)
    assert evaluate(perfect, wide, task="detection", verbose=0, resize="stretch")["mAP@0.5"] == pytest.approx(0.0)

    # A detector that finds the bright object in what it is given, on a wide and a tall image: the
    # letterboxed pixels and the mapping back agree, to the annotated boxes.
    boxes = [[10, 20, 30, 60], [20, 10, 60, 30]]
    source = data.DatasetSource(
        [data.Example(image=_object_image(size, box), boxes=[box], classes=[1], source=f"image{index}")
         for index, (size, box) in enumerate(zip([(40, 80), (80, 40)], boxes))],
        class_names=("thing",), task_kinds=("detection",), class_source="--classes",
    )
    model = bright_object_detector((32, 32))
    images, _ = next(iter(data.make_dataset(source, task="detection", batch_size=2, image_size=(32, 32),
                                            training=False, resize="letterbox")))
    np.testing.assert_allclose(model({"images": images})["boxes"][:, 0], [[4, 8, 12, 24], [8, 4, 24, 12]])
    metrics = evaluate(model, source, task="detection", batch_size=2, verbose=0, resize="letterbox")
    assert metrics["mAP@0.5"] == pytest.approx(1.0)
    for detection, box in zip(detect_source(model, source, image_size=(32, 32), resize="letterbox"), boxes):
        np.testing.assert_allclose(detection["boxes"][:1], [box], atol=1e-4)
