"""Names of the zoo's variables in TF-slim checkpoints (the DeepLab model zoo's).

Every map here is `{keras variable path: slim variable name}` and a pure function of the layer
names and types: it reads no checkpoint and changes no weight (`zoo.slim.checkpoint` loads).

- `slim_variable_names(model, scope=...)`: the backbone's variables that have a slim
  counterpart; layers it does not know (a segmentation head, a pooling) are left out.
- `head_slim_names(model)`: DeepLab-v3+'s head (`aspp_slim_names` inside `layers.ASPP`,
  `head_slim_scopes` for the decoder and the logits).
- `default_backbone_map(model)`: the backbone's names with DeepLab's scope (`resnet_scope`).

Conventions, checked against tensorflow/models research/slim/nets and research/deeplab/core:

- A convolution's kernel is `<op>/weights`, its bias `<op>/biases` (slim convolutions followed
  by batch norm have no bias, so a model built with `use_bias=True` gets names that no DeepLab
  checkpoint holds: a loader reports them as missing). Both use HWIO, as Keras.
- A depthwise kernel is `<op>/depthwise_weights`, `[H, W, C, multiplier]` in both.
- Batch norm: `<op>/BatchNorm/{gamma, beta, moving_mean, moving_variance}`.
- The classifier: Keras' Dense `predictions` (`[C, K]` kernel) is slim's 1x1 convolution
  `logits` (`[1, 1, C, K]`, reshape it), `Logits/Conv2d_1c_1x1` in MobileNet. Slim's ImageNet
  MobileNet-v2 and Xception-65 have 1001 classes (0 is "background"), ResNet-v1 1000.

Per family (`{scope}` is the checkpoint's top scope):

- ResNet-v1 (`stride_placement="slim"` only; `scope` "resnet_v1_50" / "resnet_v1_101", which
  DeepLab also uses for the beta variants): `conv1_conv` -> `{scope}/conv1`, the beta stem's
  `conv1_k_conv` -> `{scope}/conv1_k`, `conv{s}_block{u}_{k}_conv` ->
  `{scope}/block{s-1}/unit_{u}/bottleneck_v1/conv{k}` (k = 1, 2, 3) and `..._0_conv` ->
  `.../bottleneck_v1/shortcut`; each `_bn` is the same op's `BatchNorm`.
- MobileNet-v2 (`scope` "MobilenetV2"): `Conv1` -> `Conv`, `expanded_conv_{depthwise,project}`
  -> `expanded_conv/{depthwise,project}`, `block_{i}_{expand,depthwise,project}` ->
  `expanded_conv_{i}/{expand,depthwise,project}`, `Conv_1` -> `Conv_1`; the batch norms are
  `bn_Conv1`, `*_BN` and `Conv_1_bn`.
- Aligned Xception-65 (`scope` "xception_65"): `entry_flow_conv1_k` -> `entry_flow/conv1_k`,
  `{flow}_block{b}_unit{u}_sepconv{i}_{depthwise,pointwise}` ->
  `{flow}/block{b}/unit_{u}/xception_module/separable_conv{i}_{depthwise,pointwise}` and
  `..._shortcut` -> `.../xception_module/shortcut`; each `_bn` is the op's `BatchNorm`.
  keras.applications' Xception has no slim checkpoint and is refused.

DeepLab-v3+'s head (`zoo.segmentation.deeplabv3plus`, whose layers are named after DeepLab's
scopes) has no top scope: inside the `aspp` layer (`layers.ASPP`) a sublayer `aspp1_depthwise`
is the scope `aspp1_depthwise` (`image_pooling`, `aspp0`, `concat_projection` alike);
`feature_projection0` is `decoder/feature_projection0`, `decoder_conv{i}_{depthwise,pointwise}`
`decoder/decoder_conv{i}_{depthwise,pointwise}`, the non-separable decoder's `decoder_conv0_{1,2}`
(slim.repeat's) `decoder/decoder_conv0/decoder_conv0_{1,2}` and `logits_semantic`
`logits/semantic`; a batch norm `<layer>_bn` is `<scope>/BatchNorm`.
"""

from __future__ import annotations

import re

import keras

from layers import ASPP
from zoo.weights import weighted_layers

DEFAULT_SCOPES = {"mobilenet_v2": "MobilenetV2", "xception": "xception_65"}

_RESNET_RULES = (
    (re.compile(r"^conv1_(conv|bn)$"), lambda m: "conv1"),
    (re.compile(r"^conv1_(\d)_(conv|bn)$"), lambda m: f"conv1_{m[1]}"),
    (
        re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$"),
        lambda m: f"block{int(m[1]) - 1}/unit_{m[2]}/bottleneck_v1/"
        + ("shortcut" if m[3] == "0" else f"conv{m[3]}"),
    ),
)
_MOBILENET_RULES = (
    (re.compile(r"^(Conv1|bn_Conv1)$"), lambda m: "Conv"),
    (re.compile(r"^(Conv_1|Conv_1_bn)$"), lambda m: "Conv_1"),
    (
        re.compile(r"^expanded_conv_(depthwise|project)(_BN)?$"),
        lambda m: f"expanded_conv/{m[1]}",
    ),
    (
        re.compile(r"^block_(\d+)_(expand|depthwise|project)(_BN)?$"),
        lambda m: f"expanded_conv_{m[1]}/{m[2]}",
    ),
)
_XCEPTION_RULES = (
    (re.compile(r"^entry_flow_conv1_(\d)(_bn)?$"), lambda m: f"entry_flow/conv1_{m[1]}"),
    (
        re.compile(r"^(entry_flow|middle_flow|exit_flow)_block(\d+)_unit(\d+)_"
                   r"(sepconv(\d)_(depthwise|pointwise)|shortcut)(_bn)?$"),
        lambda m: f"{m[1]}/block{m[2]}/unit_{m[3]}/xception_module/"
        + ("shortcut" if m[4] == "shortcut" else f"separable_conv{m[5]}_{m[6]}"),
    ),
)
# `{Keras layer name: slim scope}` of every decoder and logits layer the DeepLab-v3+ builder can
# create, with a separable decoder or slim.repeat's plain one (see the module docstring).
_HEAD_SCOPES = {
    "logits_semantic": "logits/semantic",
    "feature_projection0": "decoder/feature_projection0",
    **{f"decoder_conv{index}_{part}": f"decoder/decoder_conv{index}_{part}"
       for index in range(2) for part in ("depthwise", "pointwise")},
    **{f"decoder_conv0_{repeat}": f"decoder/decoder_conv0/decoder_conv0_{repeat}" for repeat in (1, 2)},
}
_LOGITS = {"resnet": "logits", "mobilenet_v2": "Logits/Conv2d_1c_1x1", "xception": "logits"}
_BATCH_NORM_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


def backbone_family(model) -> str:
    """"resnet", "mobilenet_v2" or "xception" (aligned), read from the layer names.

    Raises:
      ValueError: a model with no known slim backbone (keras.applications' Xception among them).
    """
    names = {layer.name for layer in weighted_layers(model)}
    if "entry_flow_conv1_1" in names:
        return "xception"
    if "Conv1" in names and "expanded_conv_depthwise" in names:
        return "mobilenet_v2"
    if "conv2_block1_1_conv" in names:
        return "resnet"
    hint = " (keras.applications' Xception has no slim twin; use xception65)" if "block1_conv1" in names else ""
    raise ValueError(
        f"model {model.name!r} has no backbone with TF-slim names: expected a ResNet-v1 "
        f"(stride_placement='slim'), MobileNet-v2 or aligned Xception-65 layer layout{hint}"
    )


def _variable_suffix(layer, variable) -> str:
    short = variable.path.rsplit("/", 1)[-1]
    if isinstance(layer, keras.layers.BatchNormalization):
        if short not in _BATCH_NORM_VARIABLES:
            raise ValueError(f"unexpected batch-norm variable {variable.path!r}")
        return f"BatchNorm/{short}"
    if isinstance(layer, keras.layers.DepthwiseConv2D) and short == "kernel":
        return "depthwise_weights"
    if short == "kernel":
        return "weights"
    if short == "bias":
        return "biases"
    raise ValueError(f"no slim name for variable {variable.path!r} of layer {layer.name!r}")


def _names_by_scope(layers, scope_of) -> dict[str, str]:
    """`{variable.path: "<scope>/<slim variable>"}` for the variables of each of `layers` that
    `scope_of(layer)` gives a slim scope (None: the layer is left out)."""
    names = {}
    for layer in layers:
        scope = scope_of(layer)
        if scope is not None:
            names.update({variable.path: f"{scope}/{_variable_suffix(layer, variable)}" for variable in layer.weights})
    return names


def _check_resnet_placement(model) -> None:
    """Slim weights in the keras.applications placement compute another function: refuse."""
    layers = {layer.name: layer for layer in weighted_layers(model)}
    first_conv = layers.get("conv3_block1_1_conv")
    if first_conv is not None and tuple(first_conv.strides) != (1, 1):
        raise ValueError(
            f"model {model.name!r} is a ResNet in the keras.applications stride placement (the "
            "stride in the first unit's 1x1 convolution); TF-slim checkpoints put it in the last "
            "unit's 3x3 convolution. Build it with stride_placement='slim'."
        )
    basic = layers.get("conv2_block1_1_conv")
    if basic is not None and tuple(basic.kernel_size) != (1, 1):
        raise ValueError(f"model {model.name!r} has basic blocks; slim names cover bottleneck_v1 units")


def slim_variable_names(model, *, scope: str | None = None) -> dict[str, str]:
    """`{keras variable path: slim checkpoint variable name}` for the backbone of `model`.

    Args:
      model: a zoo backbone (`mobilenetv2`, `xception65`, a ResNet built with
        `stride_placement="slim"`), or any model whose layers include one (a DeepLab model).
      scope: the checkpoint's top scope; defaults to "MobilenetV2" and "xception_65" and must
        be given for ResNets ("resnet_v1_50", "resnet_v1_101").

    Returns:
      The map, for every variable of a backbone layer and of `predictions` when present.

    Raises:
      ValueError: no known backbone, a ResNet in the keras placement or with basic blocks, or
        a ResNet without `scope`.

    Example:
      >>> model = zoo.build("resnet101_beta", stride_placement="slim", include_top=False)
      >>> slim_variable_names(model, scope="resnet_v1_101")["conv1_1_conv/kernel"]
      'resnet_v1_101/conv1_1/weights'
    """
    family = backbone_family(model)
    if family == "resnet":
        _check_resnet_placement(model)
        if scope is None:
            raise ValueError("scope is required for a ResNet: 'resnet_v1_50' or 'resnet_v1_101'")
    scope = scope or DEFAULT_SCOPES[family]
    if not re.fullmatch(r"[A-Za-z0-9_]+", scope):
        raise ValueError(f"scope must be one slim scope name such as 'resnet_v1_101', got {scope!r}")
    rules = {"resnet": _RESNET_RULES, "mobilenet_v2": _MOBILENET_RULES, "xception": _XCEPTION_RULES}[family]

    def op_scope(layer):
        if layer.name == "predictions":
            return f"{scope}/{_LOGITS[family]}"
        op = next((fn(m) for pattern, fn in rules if (m := pattern.match(layer.name))), None)
        return None if op is None else f"{scope}/{op}"

    return _names_by_scope(weighted_layers(model), op_scope)


# --------------------------------------------------------------------------- DeepLab's head and scopes


def _scope_name(layer) -> str:
    """The scope a head layer is named after: its name, a batch norm's less its `_bn`."""
    return layer.name.removesuffix("_bn") if isinstance(layer, keras.layers.BatchNormalization) else layer.name


def _head_scope(layer) -> str | None:
    return _HEAD_SCOPES.get(_scope_name(layer))


def aspp_slim_names(layer: ASPP) -> dict[str, str]:
    """`{variable.path: slim name}` for every variable of a built `layers.ASPP`.

    Its sublayers carry DeepLab's scopes as names (a batch norm `<scope>_bn`), which have no
    outer scope in the checkpoints: `aspp0/weights`, `image_pooling/BatchNorm/beta`.

    Example:
      >>> aspp_slim_names(model.get_layer("aspp"))["aspp/aspp1_depthwise_bn/gamma"]
      'aspp1_depthwise/BatchNorm/gamma'
    """
    if not layer.built:
        raise ValueError(f"aspp_slim_names: {layer.name} is not built")
    return _names_by_scope(layer.sublayers, _scope_name)


def head_slim_scopes(model) -> dict[str, str]:
    """`{Keras layer name: DeepLab slim scope}` for the decoder and logits layers of `model` (a
    DeepLab-v3+); the ASPP's are its sublayers' own names (`aspp_slim_names`)."""
    return {layer.name: _HEAD_SCOPES[layer.name] for layer in model.layers if layer.name in _HEAD_SCOPES}


def head_slim_names(model) -> dict[str, str]:
    """`{variable.path: slim name}` for the ASPP, decoder and logits variables of `model`."""
    names = {}
    for layer in model.layers:
        if isinstance(layer, ASPP):
            names.update(aspp_slim_names(layer))
        else:
            names.update(_names_by_scope([layer], _head_scope))
    return names


def resnet_scope(model) -> str:
    """DeepLab's scope of a slim-placement ResNet in `model`: `resnet_v1_{depth}`, the depth
    counted from its bottleneck units (3 layers each, plus the stem and the classifier), so
    `resnet_v1_50` for (3, 4, 6, 3) and `resnet_v1_101` for (3, 4, 23, 3), the beta stems too."""
    units = sum(1 for layer in model.layers if re.fullmatch(r"conv\d_block\d+_1_conv", layer.name))
    return f"resnet_v1_{3 * units + 2}"


def default_backbone_map(model) -> dict[str, str]:
    """`slim_variable_names` of `model`'s backbone with DeepLab's scope, or {} for a backbone
    that has no slim layout (its variables are then reported as `unmapped`)."""
    try:
        family = backbone_family(model)
        return slim_variable_names(model, scope=resnet_scope(model) if family == "resnet" else None)
    except ValueError:
        return {}
