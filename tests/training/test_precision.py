"""training.precision: which policy "auto" picks from the CPU's flags and the GPUs, and a run
records what it resolved to; bfloat16 gives float32's detections and masks on a fixed input."""

import json

import keras
import numpy as np
import pytest

from training.precision import cpu_flags, resolve_mixed_precision

AMX_XEON = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
EPYC = {"avx2", "avx512f", "avx512_bf16"}


def test_auto_is_bfloat16_only_on_an_amx_cpu_without_a_gpu():
    assert resolve_mixed_precision("auto", flags=AMX_XEON, gpus=0)[0] == "mixed_bfloat16"
    policy, why = resolve_mixed_precision("auto", flags=EPYC, gpus=0)
    assert policy is None and "no AMX" in why
    assert resolve_mixed_precision("auto", flags=AMX_XEON, gpus=1)[0] is None
    # What the user asks for is kept; float32 and None both turn it off.
    assert resolve_mixed_precision("mixed_float16", flags=EPYC, gpus=0)[0] == "mixed_float16"
    assert resolve_mixed_precision("float32", flags=AMX_XEON, gpus=0)[0] is None
    assert resolve_mixed_precision(None, flags=AMX_XEON, gpus=0)[0] is None
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve_mixed_precision("bfloat16", flags=AMX_XEON, gpus=0)


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_a_run_records_the_policy_auto_resolved_to(tmp_path):
    from training import TrainConfig, data, train

    source = data.synthetic(16, image_size=(32, 32), num_classes=2)
    config = TrainConfig(epochs=1, batch_size=8, image_size=(32, 32), augment=False, validation_fraction=0.0)
    assert config.mixed_precision == "auto"

    def tiny(classes):
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
        return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", dtype="float32")(x), name="tiny")

    train(tiny, source, out_dir=tmp_path / "run", config=config, verbose=0)
    expected = resolve_mixed_precision("auto")[0] or "float32"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == expected
    assert keras.config.dtype_policy().name == "float32"  # restored after the run


def test_bfloat16_gives_float32s_detections_and_masks_on_a_fixed_input():
    # The same weights under both policies: the light detector's proposals and the segmenter's
    # masks agree within what bfloat16's 8-bit mantissa allows (stated here).
    import zoo
    from layers.detection_contract import PROPOSALS

    built = {}
    rng = np.random.default_rng(0)
    pictures = rng.uniform(0, 40, (2, 96, 96, 3)).astype("float32")
    pictures[:, 20:60, 30:70] = 200.0  # one bright square per image
    outputs = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        try:
            keras.utils.set_random_seed(1)
            detector = zoo.build("faster_rcnn_mobilenetv2", num_classes=2, anchor_scales=(32.0, 48.0),
                                 rpn_min_size=4.0, test_pre_nms_top_n=50, test_post_nms_top_n=10, max_detections=5)
            keras.utils.set_random_seed(2)
            segmenter = zoo.build("deeplabv3plus_mobilenetv2", num_classes=3, input_shape=(96, 96, 3))
            built[policy] = (detector, segmenter)
        finally:
            keras.config.set_dtype_policy("float32")
    reference_detector, reference_segmenter = built["float32"]
    detector, segmenter = built["mixed_bfloat16"]
    detector.set_weights(reference_detector.get_weights())
    segmenter.set_weights(reference_segmenter.get_weights())
    for name, model in (("float32", built["float32"]), ("bfloat16", built["mixed_bfloat16"])):
        outputs[name] = (model[0].predict_on_batch({"images": pictures}), model[1].predict_on_batch(pictures))
    (f32_detections, f32_logits), (bf16_detections, bf16_logits) = outputs["float32"], outputs["bfloat16"]
    assert bf16_detections["class_probs"].dtype == np.float32  # the heads stay float32
    # Class probabilities of the same proposals: within 0.05.
    np.testing.assert_allclose(bf16_detections["class_probs"][:, :3], f32_detections["class_probs"][:, :3], atol=0.05)
    # The best proposal of each image: the same box within 2 pixels.
    np.testing.assert_allclose(bf16_detections[PROPOSALS][:, 0], f32_detections[PROPOSALS][:, 0], atol=2.0)
    # Masks: at least 98% of the pixels get the same class.
    agreement = np.mean(np.argmax(bf16_logits, -1) == np.argmax(f32_logits, -1))
    assert agreement >= 0.98, agreement


def test_a_classifier_of_more_than_five_classes_trains_in_bfloat16_with_its_top5(tmp_path):
    # The top-5 metric's in_top_k takes float32 only; the classifier's probabilities are bfloat16.
    from training import TrainConfig, data, train

    source = data.synthetic(16, image_size=(32, 32), num_classes=6)
    config = TrainConfig(epochs=1, batch_size=8, image_size=(32, 32), augment=False, validation_fraction=0.0,
                         mixed_precision="mixed_bfloat16", precise_bn=0)

    def tiny(classes):
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
        return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x), name="tiny")

    result = train(tiny, source, out_dir=tmp_path / "run", config=config, verbose=0)
    assert result.model.output.dtype == "bfloat16"
    assert 0.0 <= result.history["top5"][0] <= 1.0
