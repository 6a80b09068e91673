"""The registry's public API and its errors."""

import dataclasses

import pytest

import zoo
from zoo import registry
from zoo.backbones.resnet import ResNetConfig, build_resnet


def test_list_models_is_sorted_and_filters_by_pattern_and_task():
    names = zoo.list_models()
    assert names == sorted(names)
    assert {"vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
            "resnet50_beta", "resnet101_beta"} <= set(names)
    assert zoo.list_models("vgg*") == ["vgg16", "vgg19"]
    assert zoo.list_models("resnet*_beta") == ["resnet101_beta", "resnet50_beta"]
    assert "vgg16" in zoo.list_models(task="classification")
    assert zoo.list_models("no_such*") == []


def test_list_models_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="task must be one of"):
        zoo.list_models(task="captioning")


def test_the_task_names_are_one_tuple_in_zoo_and_the_same_in_training():
    # zoo cannot import training's tuple (nor training zoo's): the two must not drift apart.
    import importlib

    import training
    from zoo import tasks

    assert importlib.import_module("zoo.saved_model").TASKS is registry.TASKS is tasks.TASKS
    assert registry.TASKS == training.data.TASKS == tuple(sorted(training.TASKS))


def test_unknown_name_lists_the_closest_registered_names():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet05'.*resnet50"):
        zoo.build("resnet05")
    with pytest.raises(ValueError, match=r"closest registered names: .*vgg16"):
        zoo.describe("vgg61")


def test_unknown_override_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown override\(s\) 'num_clases'.*accepted overrides are: .*classes"):
        zoo.build("resnet50", num_clases=3)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(output_stride="16"), r"'output_stride' expects int, got str"),
        (dict(include_top="yes"), r"'include_top' expects bool"),
        (dict(classes=2.5), r"'classes' expects int"),
        (dict(classes=True), r"'classes' expects int"),
        (dict(input_shape=(64, "64", 3)), r"'input_shape' expects"),
        (dict(pooling="mean"), r"'pooling' expects one of 'avg', 'max' or None"),
    ],
)
def test_ill_typed_override_names_the_argument_and_the_type(overrides, pattern):
    with pytest.raises(TypeError, match=pattern):
        zoo.build("resnet18", **overrides)


@pytest.mark.parametrize(
    "name, overrides, pattern",
    [
        ("resnet50", dict(output_stride=12), r"output_stride must be one of \[8, 16, 32\], got 12"),
        ("resnet50", dict(input_shape=(16, 64, 3), include_top=False), r"height 16 is too small.*at least 32"),
        ("vgg16", dict(input_shape=(64, 20, 3)), r"width 20 is too small"),
        ("vgg16", dict(input_shape=(None, None, 3)), r"include_top=True flattens.*must be fixed"),
        ("resnet50", dict(input_shape=(64, 64, 4)), r"needs 3 channels"),
        ("resnet50", dict(input_shape=(64, 64)), r"input_shape must be \(height, width, channels\)"),
        ("resnet50", dict(classes=0), r"classes must be a positive integer"),
        ("resnet50", dict(classifier_activation="softmaxx"), r"classifier_activation must be"),
        ("resnet50", dict(preprocessing="imagenet"), r"preprocessing must be one of"),
        ("resnet50", dict(depths=(3, 4, 6)), r"depths must be four positive"),
    ],
)
def test_bad_values_raise_value_error_naming_the_argument(name, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        zoo.build(name, **overrides)


def test_lists_are_accepted_for_tuples_and_overrides_reach_the_builder():
    config = registry.resolve_config("resnet18", input_shape=[48, 40, 3], depths=[1, 1, 1, 1])
    assert config.input_shape == (48, 40, 3) and config.depths == (1, 1, 1, 1)
    small = zoo.build("resnet18", include_top=False, input_shape=[48, 40, 3], depths=[1, 1, 1, 1])
    assert small.input_shape == (None, 48, 40, 3)
    assert len([layer for layer in small.layers if layer.name.endswith("_add")]) == 4


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        @zoo.register("resnet50", task="classification", builder=build_resnet, paper="-")
        def again():
            return ResNetConfig()


def test_register_rejects_bad_names_and_tasks():
    with pytest.raises(ValueError, match="lowercase"):
        zoo.register("ResNet50", task="classification", builder=build_resnet, paper="-")
    with pytest.raises(ValueError, match="task of"):
        zoo.register("resnet_x", task="captioning", builder=build_resnet, paper="-")
    with pytest.raises(ValueError, match=r"resize of 'resnet_x' must be one of \('stretch', 'letterbox'\)"):
        zoo.register("resnet_x", task="classification", builder=build_resnet, paper="-", resize="crop")


def test_each_family_resizes_as_it_was_published():
    # keras.applications' classifiers stretch to 224 x 224; detectors and DeepLab keep the aspect ratio.
    for name in zoo.list_models():
        task = zoo.describe(name).task
        assert zoo.describe(name).resize == ("stretch" if task == "classification" else "letterbox"), name
    assert "resize (the family's): letterbox (aspect ratio kept" in str(zoo.describe("faster_rcnn_resnet50"))


def test_describe_reports_task_defaults_overrides_weights_and_paper():
    description = zoo.describe("resnet50")
    assert description.task == "classification"
    assert description.defaults["depths"] == [3, 4, 6, 3]
    assert description.defaults["output_stride"] == 32
    assert "output_stride" in description.accepted_overrides
    assert "arXiv:1512.03385" in description.paper
    assert description.is_backbone
    assert isinstance(description.weights, list)
    assert "resnet50 (classification)" in str(description)


def test_registered_configs_are_frozen():
    config = registry.get_spec("vgg16").config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.classes = 3


def test_built_model_is_named_after_the_registry_entry():
    assert zoo.build("resnet18", include_top=False, input_shape=(32, 32, 3)).name == "resnet18"


def test_a_field_the_configuration_ignores_is_neither_described_nor_accepted():
    # fc_units and dropout size the VGG16 head; R50-C4 runs conv5 per RoI instead.
    for name in ("fast_rcnn_resnet50", "faster_rcnn_resnet50"):
        defaults = zoo.describe(name).defaults
        assert "fc_units" not in defaults and "dropout" not in defaults and "pool_size" in defaults
        with pytest.raises(ValueError, match="'fc_units' do nothing in this configuration: .*backbone='resnet50'"):
            registry.resolve_config(name, fc_units=1024)
    assert zoo.describe("fast_rcnn_vgg16").defaults["fc_units"] == 4096
    assert registry.resolve_config("fast_rcnn_resnet50", backbone="vgg16", pool_size=7, fc_units=1024).fc_units == 1024


@pytest.mark.slow
def test_the_zoo_command_imports_the_families_on_the_first_registry_lookup():
    import subprocess
    import sys

    script = ("import sys, zoo.registry; print('tensorflow' in sys.modules); "
              "print(zoo.registry.get_spec('vgg16').task, 'tensorflow' in sys.modules, callable(zoo.export))")
    # As in the `zoo` command's process (sys.argv[0] is the console script): lazy until a lookup.
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = 'zoo'; {script}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "classification", "True", "True"]


def test_one_meaning_of_a_class_count_checked_at_build_time():
    # The dataset's classes everywhere: a classifier outputs `classes` columns, a detector's
    # class_probs and a segmenter's logits one more (the background, class 0).
    import dataclasses

    import keras

    from zoo.registry import check_class_count, class_count_columns

    @dataclasses.dataclass
    class Segmenter:
        num_classes: int = 3

    @dataclasses.dataclass
    class Classifier:
        classes: int = 10
        include_top: bool = True

    assert class_count_columns(Segmenter(), "segmentation") == 4
    assert class_count_columns(Classifier(), "classification") == 10
    assert class_count_columns(Classifier(include_top=False), "classification") is None
    inputs = keras.Input((8, 8, 3))
    check_class_count(keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs)), Segmenter(), "segmentation",
                      model_name="good")
    with pytest.raises(ValueError, match="made 3 class columns where num_classes=3 means 4"):
        check_class_count(keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs)), Segmenter(), "segmentation",
                          model_name="bad")
    # Every registered family keeps it: a VOC detector and a VOC segmenter both say 20.
    assert zoo.build("deeplabv3plus_mobilenetv2", input_shape=(64, 64, 3)).output.shape[-1] == 21
    assert zoo.describe("deeplabv3plus_mobilenetv2").defaults["num_classes"] == 20
    assert zoo.describe("faster_rcnn_resnet50").defaults["num_classes"] == 20
