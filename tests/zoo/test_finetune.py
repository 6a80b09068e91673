"""Fine-tuning from pretrained weights (`zoo.finetune`, `training.train(weights=...)`, `zoo train
--weights`): an ImageNet classifier's file, made here in keras.applications' layouts, fills a
detector's or segmenter's trunk by layer name; the report names the head (missing) and the
classifier's top (unused); the paper's layers are frozen unless the flags say otherwise; `run.json`
keeps the report, and a resumed run never reloads the file over its backup."""

import dataclasses
import hashlib
import json
import re

import h5py
import keras
import numpy as np
import pytest

import zoo
from layers import compat
from tests.helpers import randomize_batch_norm, run_zoo
from tests.zoo.slim.test_deeplab_checkpoints import BUILD_TINY, archive  # noqa: F401  (a fixture)
from tests.zoo.test_downloads import TINY, server, setup  # noqa: F401  (fixtures: resnet18.imagenet served here)
from training import TrainConfig, data, train
from zoo import weights as weights_lib
from zoo.cli import main
from zoo.detection.sizing import sliding_window_proposals
from zoo.finetune import fine_tuning, weights_kind

SIZE = 64
DETECTOR_HEAD = ["box_regression", "class_probs"]


def _h5_arrays(path):
    """`{layer: [arrays]}` read back from a keras.applications-layout file with h5py alone."""
    with h5py.File(path, "r") as handle:
        return {name: [handle[name][weight][()] for weight in handle[name].attrs["weight_names"]]
                for name in handle.attrs["layer_names"] if len(handle[name].attrs["weight_names"])}


def _classifier(factory, folder, rng, **options):
    """A keras.applications classifier with random weights and batch-norm statistics, as the
    three files a user may hold: the published `.h5` layout, `.weights.h5` and `.keras`."""
    reference = factory(weights=None, input_shape=(32, 32, 3), **options)
    randomize_batch_norm(reference, rng)
    # Off Keras' seeded initialisers, so that no freshly built model can hold the same arrays.
    for layer in reference.layers:
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([w + rng.normal(0.0, 0.01, w.shape).astype(w.dtype) for w in layer.get_weights()])
    paths = {suffix: folder / f"{reference.name}{suffix}" for suffix in (".h5", ".weights.h5", ".keras")}
    compat.save_legacy_h5_weights(reference, paths[".h5"])
    reference.save_weights(paths[".weights.h5"])
    reference.save(paths[".keras"])
    arrays = {layer.name: layer.get_weights() for layer in reference.layers if layer.weights}
    return paths, arrays


@pytest.fixture(scope="module")
def resnet50_files(tmp_path_factory):
    """keras.applications ResNet50 with its top (`predictions`)."""
    return _classifier(keras.applications.ResNet50, tmp_path_factory.mktemp("resnet50"), np.random.default_rng(1),
                       classes=1000)


@pytest.fixture(scope="module")
def vgg16_notop(tmp_path_factory):
    """keras.applications VGG16 without its top, as `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`."""
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    compat.save_legacy_h5_weights(reference, path)
    return path


def _assert_layers_hold(model, arrays):
    for name, values in arrays.items():
        for got, expected in zip(model.get_layer(name).get_weights(), values, strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".keras"])
def test_a_keras_applications_resnet50_fills_the_r50_c4_trunk_and_the_report_names_the_rest(resnet50_files, suffix):
    paths, arrays = resnet50_files
    trunk = {name: values for name, values in arrays.items() if name != "predictions"}
    if suffix == ".h5":
        read_back = _h5_arrays(paths[".h5"])
        assert set(read_back) == set(arrays)
        trunk = {name: read_back[name] for name in trunk}
    model = zoo.build("fast_rcnn_resnet50", num_classes=2, input_shape=(SIZE, SIZE, 3), pool_size=4)
    assert not np.array_equal(model.get_layer("conv1_conv").get_weights()[0], trunk["conv1_conv"][0])
    head_before = {name: model.get_layer(name).get_weights() for name in DETECTOR_HEAD}

    tuning = fine_tuning("fast_rcnn_resnet50", paths[suffix])
    report = tuning(model)

    _assert_layers_hold(model, trunk)  # conv5 (the C4 head) too: keras.applications' names
    _assert_layers_hold(model, head_before)  # left as initialised
    assert report["missing"] == DETECTOR_HEAD
    assert report["unused"] == ["predictions"]
    assert report["loaded"] == len(trunk) == 106
    assert report["kind"] == "backbone" and report["source"] == str(paths[suffix].resolve())
    # R50-C4 from ImageNet weights: the stem and res2 frozen, and every batch norm.
    assert (tuning.freeze_stages, tuning.batch_norm) == (2, "frozen")


@pytest.mark.slow
def test_a_keras_applications_mobilenet_v2_fills_the_deeplab_trunk(tmp_path, rng):
    paths, arrays = _classifier(keras.applications.MobileNetV2, tmp_path, rng, classes=1000)
    model = zoo.build("deeplabv3plus_mobilenetv2", num_classes=3, input_shape=(33, 33, 3))
    tuning = fine_tuning("deeplabv3plus_mobilenetv2", paths[".h5"], verbose=False)
    report = tuning(model)
    # DeepLab's MobileNet-v2 stops before keras.applications' last 1x1 convolution (Conv_1).
    assert report["unused"] == ["Conv_1", "Conv_1_bn", "predictions"]
    _assert_layers_hold(model, {name: values for name, values in arrays.items() if name not in report["unused"]})
    assert "logits_semantic" in report["missing"] and "aspp" in report["missing"]
    assert not any(name in arrays for name in report["missing"])
    # DeepLab fine-tunes every layer from ImageNet: nothing frozen, the recipe's batch norm.
    assert (tuning.kind, tuning.freeze_stages, tuning.batch_norm) == ("backbone", None, None)
    config = TrainConfig(batch_norm="fine_tune")
    assert tuning.configure(config) == config


def test_the_papers_freezing_applies_to_backbone_weights_and_the_callers_settings_win(vgg16_notop, tmp_path):
    vgg = fine_tuning("fast_rcnn_vgg16", vgg16_notop)
    assert (vgg.kind, vgg.freeze_stages, vgg.batch_norm) == ("backbone", 2, None)  # conv1-conv2; VGG has no BN
    assert "frozen: 2 stages (block1_*, block2_*)" in vgg.summary()
    assert vgg.configure(TrainConfig()) == TrainConfig(freeze_stages=2)
    given = fine_tuning("fast_rcnn_resnet50", vgg16_notop, overrides={"backbone": "resnet50"}, freeze_stages=0,
                        batch_norm="fine_tune")
    assert given.configure(TrainConfig(freeze_stages=3)) == TrainConfig(freeze_stages=0, batch_norm="fine_tune")
    assert not given.paper
    half = fine_tuning("fast_rcnn_resnet50", vgg16_notop, freeze_stages=1)
    assert (half.freeze_stages, half.batch_norm) == (1, "frozen")

    # A detector's own weights: it is not starting from ImageNet, nothing changes.
    detector = zoo.build("fast_rcnn_vgg16", num_classes=2, input_shape=(SIZE, SIZE, 3), fc_units=16)
    own = tmp_path / "detector.weights.h5"
    detector.save_weights(own)
    tuning = fine_tuning("fast_rcnn_vgg16", own)
    assert (tuning.kind, tuning.freeze_stages, tuning.batch_norm) == ("model", None, None)
    assert tuning.configure(TrainConfig()) == TrainConfig()

    # A tag the detector lacks is its backbone's (read from the manifest, nothing downloaded).
    assert weights_kind("fast_rcnn_vgg16", "imagenet") == "backbone"
    assert fine_tuning("faster_rcnn_resnet50", "imagenet").configure(TrainConfig()) == TrainConfig(
        freeze_stages=2, batch_norm="frozen")
    with pytest.raises(ValueError, match=r"its backbone's \(resnet50.imagenet\) expect 'caffe' preprocessing where "
                                         r"deeplabv3plus_resnet50 uses 'deeplab_resnet'"):
        fine_tuning("deeplabv3plus_resnet50", "imagenet")
    with pytest.raises(ValueError, match=r"no such file and no manifest entry fast_rcnn_vgg16.voc"):
        fine_tuning("fast_rcnn_vgg16", "voc")


def test_a_backbone_tag_fetches_the_no_top_file_into_the_trunk(vgg16_notop, tmp_path, monkeypatch):
    digest = hashlib.md5(vgg16_notop.read_bytes()).hexdigest()
    record = {"url": vgg16_notop.as_uri(), "file_name": vgg16_notop.name, "hash_algorithm": "md5", "hash": digest,
              "size_bytes": None, "size_note": "test"}
    entry = {
        "model": "vgg16", "tag": "imagenet", "task": "classification", "format": "h5", "preprocessing": "caffe",
        # The file with the top is not there: a head with fc_units 16 must not ask for it.
        **record, "url": (tmp_path / "absent.h5").as_uri(), "file_name": "absent.h5", "no_top": record,
        "classes": {"count": 1000, "dataset": "imagenet"}, "metrics": {},
        "metrics_source": "https://example.invalid/", "license": "test",
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    monkeypatch.setenv("ZOO_WEIGHTS_MANIFEST", str(manifest))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    for name in ("ZOO_WEIGHTS_MIRROR", "ZOO_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    model = zoo.build("fast_rcnn_vgg16", num_classes=2, input_shape=(SIZE, SIZE, 3), fc_units=16)
    report = fine_tuning("fast_rcnn_vgg16", "imagenet", verbose=False)(model)
    assert report["file"] == str(tmp_path / "home" / "weights" / vgg16_notop.name)
    assert report["missing"] == ["fc1", "fc2", *DETECTOR_HEAD] and report["unused"] == []
    _assert_layers_hold(model, _h5_arrays(vgg16_notop))


class _Spy:
    """A `WeightsInitializer` that must not be called (a resumed run takes the backup's weights)."""

    def __init__(self, source):
        self.source = source

    def __call__(self, model):
        raise AssertionError(f"{self.source} was loaded again over the backup")


@pytest.mark.slow
def test_train_loads_freezes_records_the_report_and_resume_never_reloads(vgg16_notop, tmp_path):
    source = data.synthetic(8, image_size=(SIZE, SIZE), num_classes=2)
    tuning = fine_tuning("fast_rcnn_vgg16", vgg16_notop, verbose=False)
    config = tuning.configure(TrainConfig(epochs=1, batch_size=4, image_size=(SIZE, SIZE), optimizer="adam",
                                          learning_rate=1e-3, precise_bn=0, augment=False, validation_fraction=0))
    options = {"proposals": sliding_window_proposals(stride=16, scales=(16.0, 32.0), aspect_ratios=(1.0,)),
               "rois_per_image": 8, "seed": 0}

    def build(num_classes):
        return zoo.build("fast_rcnn_vgg16", num_classes=num_classes, input_shape=(SIZE, SIZE, 3), fc_units=16)

    out = tmp_path / "run"
    result = train(build, source, out_dir=out, task="detection", config=config, verbose=0, task_options=options,
                   weights=tuning)
    file_arrays = _h5_arrays(vgg16_notop)
    frozen = {name: values for name, values in file_arrays.items() if name.startswith(("block1_", "block2_"))}
    assert sorted(frozen) == ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]
    _assert_layers_hold(result.model, frozen)  # conv1-conv2 did not move
    assert not result.model.get_layer("block1_conv1").trainable and result.model.get_layer("block3_conv1").trainable
    trained = result.model.get_layer("block3_conv1").get_weights()[0]
    assert not np.array_equal(trained, file_arrays["block3_conv1"][0])  # conv3_1 and up were fine-tuned

    run = json.loads((out / "run.json").read_text())
    assert run["config"]["freeze_stages"] == 2
    report = run["weights"]
    assert report["source"] == str(vgg16_notop.resolve()) and report["kind"] == "backbone"
    assert report["loaded"] == 13 and report["unused"] == []
    assert report["missing"] == ["fc1", "fc2", *DETECTOR_HEAD]
    assert "Fast R-CNN" in report["paper"]

    # Resumed, the run continues from its backup: the pretrained file is not loaded again, and
    # run.json keeps the report of the load the run started from.
    again = train(build, source, out_dir=out, task="detection", config=dataclasses.replace(config, epochs=2),
                  verbose=0, task_options=options, weights=_Spy(tuning.source), resume=True)
    assert again.initial_epoch == 1
    assert json.loads((out / "run.json").read_text())["weights"] == report
    # Other pretrained weights (or none) are another run.
    for other, text in ((_Spy("imagenet"), "weights imagenet"), (None, "weights none (random initialisation)")):
        with pytest.raises(ValueError, match=re.escape(f"trained with weights {vgg16_notop.resolve()}; this command "
                                                       f"asks for {text}. Resume with")):
            train(build, source, out_dir=out, task="detection", config=dataclasses.replace(config, epochs=3),
                  verbose=0, task_options=options, weights=other, resume=True)
    with pytest.raises(TypeError, match="weights must be a WeightsInitializer"):
        train(build, source, out_dir=tmp_path / "other", task="detection", config=config, weights=str(vgg16_notop))


@pytest.mark.slow
def test_zoo_train_weights_prints_the_report_and_keeps_it_in_run_json(vgg16_notop, tmp_path, capsys):
    out = tmp_path / "run"
    process = run_zoo("train", "fast_rcnn_vgg16", "--weights", vgg16_notop, "--weights-report", "--dataset",
                      "synthetic:8", "--image-size", SIZE, SIZE, "--epochs", "1", "--batch-size", "4", "--set",
                      "fc_units=16", "--rois-per-image", "8", "--proposal-stride", "16", "--proposal-scales", "16",
                      "32", "--precise-bn", "0", "--no-augment", "--quiet", "--out", out)
    assert process.returncode == 0, process.stderr[-3000:]
    err = process.stderr
    assert (f"fine-tuning: fast_rcnn_vgg16 from {vgg16_notop}, a classifier's weights, for the trunk by layer name "
            "(the head starts from its initialisation); frozen: 2 stages (block1_*, block2_*); the paper's: Fast R-CNN"
            ) in err
    assert (f"weights {vgg16_notop}: 13 layers loaded, 4 missing from the file (left as initialised), 0 in the file "
            "but not in the model") in err
    assert "  missing: fc1, fc2, box_regression, class_probs\n  unused: none" in err
    assert "  loaded: block1_conv1, block1_conv2, block2_conv1" in err
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["freeze_stages"] == 2 and run["config"]["batch_norm"] == "fine_tune"
    assert run["weights"]["missing"] == ["fc1", "fc2", *DETECTOR_HEAD] and run["weights"]["loaded"] == 13
    saved = keras.saving.load_model(out / "model.keras", compile=False)
    _assert_layers_hold(saved, {name: values for name, values in _h5_arrays(vgg16_notop).items()
                                if name.startswith(("block1_", "block2_"))})

    # --freeze-stages wins over the paper (said before the data is read: here, data that is not
    # there); a tag that is nobody's is one error line.
    common = ["--image-size", str(SIZE), str(SIZE), "--out", str(tmp_path / "other")]
    assert main(["train", "fast_rcnn_vgg16", "--weights", str(vgg16_notop), "--freeze-stages", "0", "--dataset",
                 f"voc:{tmp_path / 'no_such_folder'}", *common]) == 2
    err = capsys.readouterr().err
    assert "frozen: nothing\n" in err and "the paper's" not in err
    assert main(["train", "fast_rcnn_vgg16", "--weights", "no_such_tag", "--dataset", "synthetic:8", *common]) == 2
    assert "zoo train: error: weights='no_such_tag': no such file and no manifest entry" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_weights_files_layer_names_are_read_without_a_model(resnet50_files):
    paths, arrays = resnet50_files
    for path in paths.values():
        assert sorted(weights_lib.file_layer_names(path)) == sorted(arrays)


@pytest.mark.slow
def test_a_zoo_classifier_run_fills_a_detector_trunk_by_layer_name(tmp_path):
    classifier = zoo.build("resnet50", classes=5, input_shape=(32, 32, 3))
    run = tmp_path / "model.keras"  # what `zoo train resnet50` leaves
    classifier.save(run)
    detector = zoo.build("fast_rcnn_resnet50", num_classes=2, input_shape=(SIZE, SIZE, 3), pool_size=4)
    report = fine_tuning("fast_rcnn_resnet50", run, verbose=False)(detector)
    assert (report["loaded"], report["missing"], report["unused"]) == (106, DETECTOR_HEAD, ["predictions"])
    _assert_layers_hold(detector, {layer.name: layer.get_weights() for layer in classifier.layers
                                   if layer.weights and layer.name != "predictions"})


def test_a_vgg16_head_of_4096_units_asks_for_the_file_with_the_top():
    # fc1/fc2 at VGG16's shapes take ImageNet's fc6/fc7 (the paper); any other width cannot.
    from types import SimpleNamespace

    def model(fc_units):
        layer = lambda name, shape: SimpleNamespace(name=name, weights=[SimpleNamespace(shape=shape)])  # noqa: E731
        return SimpleNamespace(layers=[layer("block5_conv3", (3, 3, 512, 512)), layer("fc1", (25088, fc_units)),
                                       layer("fc2", (fc_units, fc_units)), layer("class_probs", (fc_units, 3))])

    assert weights_lib._wants_top(model(4096))
    assert not weights_lib._wants_top(model(1024))
    assert not weights_lib._wants_top(SimpleNamespace(layers=model(4096).layers[:1]))


@pytest.mark.slow
def test_a_deeplab_slim_archive_fine_tunes_through_the_importer(archive):
    path, stored = archive
    tuning = fine_tuning("deeplabv3plus_mobilenetv2", path, verbose=False)
    assert (tuning.kind, tuning.freeze_stages, tuning.batch_norm) == (None, None, None)  # not known before loading
    model = zoo.build("deeplabv3plus_mobilenetv2", **BUILD_TINY)
    report = tuning(model)
    assert report["kind"] == "model" and report["missing"] == [] and report["unused"] == []
    np.testing.assert_array_equal(model.get_layer("logits_semantic").kernel.numpy(), stored["logits/semantic/weights"])


def test_a_classifier_fine_tuned_on_other_classes_fetches_the_no_top_file(setup):
    model = zoo.build("resnet18", classes=3, **TINY)
    tuning = fine_tuning("resnet18", "imagenet", verbose=False)
    assert (tuning.kind, tuning.freeze_stages, tuning.batch_norm) == ("model", None, None)
    report = tuning(model)
    assert report["file"] == str(setup["cache"] / "tiny_notop.h5")  # the top's 1000 classes do not fit 3
    assert report["missing"] == ["predictions"] and report["unused"] == []
    _assert_layers_hold(model, {layer.name: layer.get_weights() for layer in setup["source"].layers
                                if layer.weights and layer.name != "predictions"})
