"""`layers.detection_contract` answers from the built model: every registered detector at a small
size, a classifier, a segmenter, hand-built models on the edges of each rule, a `.keras` round
trip, and the registry's answer before the build (`zoo.detection.sizing.has_rpn`)."""

import keras
import pytest

import zoo
from layers import detection_contract as contract
from zoo.detection.sizing import has_rpn
from zoo.registry import get_spec

K = 4
SMALL = {
    "fast_rcnn_vgg16": dict(num_classes=K, max_detections=7, fc_units=64),
    "fast_rcnn_resnet50": dict(num_classes=K, max_detections=7),
    "faster_rcnn_resnet50": dict(num_classes=K, max_detections=7, anchor_scales=(16.0, 32.0), rpn_min_size=1.0,
                                 test_post_nms_top_n=3),
    "faster_rcnn_mobilenetv2": dict(num_classes=K, max_detections=7, anchor_scales=(16.0, 32.0), rpn_min_size=1.0,
                                    test_post_nms_top_n=3),
    "faster_rcnn_resnet50_fpn": dict(num_classes=K, max_detections=7, min_size=64, max_size=64,
                                     test_post_nms_top_n=3),
    "lenet5": dict(classes=K),
    "deeplabv3plus_mobilenetv2": dict(num_classes=K, input_shape=(64, 64, 3)),
}
KINDS = {"fast_rcnn_vgg16": contract.FAST_RCNN, "fast_rcnn_resnet50": contract.FAST_RCNN,
         "faster_rcnn_resnet50": contract.FASTER_RCNN, "faster_rcnn_resnet50_fpn": contract.FASTER_RCNN,
         "faster_rcnn_mobilenetv2": contract.FASTER_RCNN,
         "lenet5": None, "deeplabv3plus_mobilenetv2": None}


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(name):
        if name not in built:
            built[name] = zoo.build(name, **SMALL[name])
        return built[name]

    return get


def test_every_registered_detector_is_covered():
    assert set(zoo.list_models(task="detection")) <= set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_contract_answers_from_the_built_model(models, name):
    model = models(name)
    kind = KINDS[name]
    assert contract.detector_kind(model) == kind
    assert contract.takes_rois(model) == (kind == contract.FAST_RCNN)
    assert contract.has_rpn(model) == (kind == contract.FASTER_RCNN)
    assert contract.is_detector(model) == (kind is not None)
    assert contract.num_object_classes(model) == (K if kind else None)
    expected_inputs = {contract.IMAGES, contract.ROIS} if kind == contract.FAST_RCNN else {contract.IMAGES}
    assert set(contract.input_names(model)) == expected_inputs
    if kind is None:
        assert contract.missing_layers(model, contract.HEAD_LAYERS) == list(contract.HEAD_LAYERS)
        return
    assert contract.missing_layers(model, contract.HEAD_LAYERS) == []
    assert contract.DETECTIONS in contract.layer_names(model)
    # Which outputs are which: the detections, then each named output is its layer's output.
    named = contract.HEAD_LAYERS + (contract.RPN_LAYERS[1:] if kind == contract.FASTER_RCNN else ())
    assert set(model.output) == set(contract.DETECTION_OUTPUTS) | set(named)
    for key in named:
        assert model.output[key] is model.get_layer(key).output, key
    assert (contract.missing_layers(model, contract.RPN_LAYERS) == []) == (kind == contract.FASTER_RCNN)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_registry_gives_the_same_answer_before_the_build(models, name):
    kind = KINDS[name]
    assert getattr(get_spec(name).config, "detector_kind", None) == kind
    assert has_rpn(name) == contract.has_rpn(models(name)) == (kind == contract.FASTER_RCNN)


def test_the_kind_is_a_class_constant_not_an_override():
    assert "detector_kind" not in zoo.describe("faster_rcnn_resnet50").defaults
    with pytest.raises(TypeError):
        zoo.build("fast_rcnn_vgg16", detector_kind=contract.FASTER_RCNN)


def test_the_answers_survive_a_keras_round_trip(models, tmp_path):
    path = tmp_path / "detector.keras"
    models("fast_rcnn_vgg16").save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert contract.detector_kind(loaded) == contract.FAST_RCNN
    assert contract.is_detector(loaded) and contract.num_object_classes(loaded) == K


def _head_model(inputs, *, rpn=False, head=contract.HEAD_LAYERS):
    """A tiny functional model with the named inputs and layers of the contract (no real detector)."""
    tensors = {name: keras.Input((None, 4), name=name) for name in inputs}
    x = tensors[inputs[0]]
    outputs = {}
    for name in head + (contract.RPN_LAYERS if rpn else ()):
        outputs[name] = keras.layers.Dense(4, name=name)(x)
    return keras.Model(tensors, outputs or x)


@pytest.mark.parametrize("inputs, rpn, head, kind", [
    (("images", "rois"), False, contract.HEAD_LAYERS, contract.FAST_RCNN),
    (("images", "rois", "extra"), False, contract.HEAD_LAYERS, None),  # exactly {images, rois}
    (("images", "rois"), False, (contract.CLASS_PROBS,), None),  # no box_deltas
    (("images",), True, contract.HEAD_LAYERS, contract.FASTER_RCNN),
    (("images",), True, (), None),  # an RPN alone
    (("images", "rois"), True, contract.HEAD_LAYERS, contract.FAST_RCNN),  # rois: the caller's proposals
    (("images",), False, contract.HEAD_LAYERS, None),  # neither rois nor an RPN
])
def test_the_rules_on_their_edges(inputs, rpn, head, kind):
    model = _head_model(inputs, rpn=rpn, head=head)
    assert contract.detector_kind(model) == kind
    assert contract.takes_rois(model) == ("rois" in inputs)
    assert not contract.is_detector(model)  # no detections among the outputs
    assert contract.num_object_classes(model) == (3 if contract.CLASS_PROBS in head else None)  # 4 columns


def test_anything_without_inputs_or_layers_is_no_detector():
    assert contract.detector_kind(object()) is None
    assert not contract.takes_rois(object()) and not contract.is_detector(object())
    assert contract.input_names(object()) == () and contract.num_object_classes(object()) is None
