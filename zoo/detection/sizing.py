"""How a detector's proposals, anchors and RoI grid are sized from the image size it trains at.

The registered defaults suit the papers' images of about 600 pixels. `zoo train` on smaller
images (and `zoo evaluate`, `predict` and `export` after it, through the run's record) sizes
them here, unless the user gives them:

- `proposal_options`: sliding windows (Fast R-CNN's proposals without selective search) every
  S / 16 pixels, of sides S / 8 ... 3 S / 4, for a shorter side S;
- `rpn_overrides`: a Faster R-CNN's anchors of the same sides and its minimum proposal size;
- `roi_head_overrides`: a stride-16 head's RoI grid: R50-C4's `14 * S / 600` rounded to an even
  size, the MobileNet-v2 head's `7 * S / 600`, at least 4;
- `detector_overrides`: the above as they apply to a registered detector: the FPN model keeps
  torchvision's anchors (one size per level, 32 to 512) and trains at the image size instead of
  resizing it to torchvision's 800 pixels inside the graph.

    >>> proposal_options((192, 256))
    {'stride': 12, 'scales': (24.0, 48.0, 96.0, 144.0), 'aspect_ratios': (0.5, 1.0, 2.0)}
"""

from __future__ import annotations

from layers.detection_contract import FASTER_RCNN

# Sliding windows as fractions of the image's shorter side S: every S / 16 pixels (at least 4),
# sides S / 8 ... 3 S / 4.
PROPOSAL_SCALES = (0.125, 0.25, 0.5, 0.75)
PROPOSAL_RATIOS = (0.5, 1.0, 2.0)


def proposal_options(image_size, *, stride=None, scales=None, aspect_ratios=None):
    """The sliding windows' `{"stride", "scales", "aspect_ratios"}` for an image size, with defaults."""
    short = min(image_size)
    return {
        "stride": int(stride) if stride else max(4, short // 16),
        "scales": tuple(float(s) for s in scales) if scales else tuple(round(f * short, 1) for f in PROPOSAL_SCALES),
        "aspect_ratios": tuple(float(r) for r in aspect_ratios) if aspect_ratios else PROPOSAL_RATIOS,
    }


def sliding_window_proposals(*, stride, scales, aspect_ratios):
    """`images [B, H, W, 3] -> [N, 4]`: `zoo.detection.proposals.sliding_windows` over the batch's size."""
    import tensorflow as tf

    from zoo.detection.proposals import sliding_windows

    def proposals(images):
        shape = tf.shape(images)
        return sliding_windows(shape[1], shape[2], stride=stride, scales=scales, aspect_ratios=aspect_ratios)

    return proposals


def has_rpn(name) -> bool:
    """A detector that makes its own proposals (Faster R-CNN), not one with a `rois` input.

    The registry's answer, before the model is built: its config's `detector_kind`, which
    `layers.detection_contract.detector_kind` gives for the built model (a test holds them equal).
    """
    from zoo.registry import get_spec

    return getattr(get_spec(name).config, "detector_kind", None) == FASTER_RCNN


def rpn_overrides(image_size, overrides, *, scales=None, aspect_ratios=None) -> dict:
    """A Faster R-CNN's anchors and minimum proposal size for `zoo train`, from the image size.

    The registered defaults (anchors of 128 to 512 pixels, proposals of at least 16) suit
    images of about 600 pixels. Unless `--set` gives them, `zoo train` uses the sliding
    windows' sides (`--proposal-scales`, default 1/8 ... 3/4 of the shorter side), their aspect
    ratios, and a minimum side of 1/16 of the shorter side (at most 16 pixels).
    """
    windows = proposal_options(image_size, scales=scales, aspect_ratios=aspect_ratios)
    defaults = {
        "anchor_scales": windows["scales"], "anchor_aspect_ratios": windows["aspect_ratios"],
        "rpn_min_size": float(min(16.0, min(image_size) / 16.0)),
    }
    return {**defaults, **overrides}


def roi_head_overrides(name, image_size, overrides) -> dict:
    """A stride-16 head's RoI grid for `zoo train`, from the image size, unless `--set` gives it.

    The registered grids (R50-C4's 14 x 14, which conv5 halves to detectron2's and torchvision's
    7 x 7; the MobileNet-v2 detector's 7 x 7 RoI Align) suit images of about 600 pixels. A smaller
    image holds proportionally smaller objects, a few cells of the stride-16 map, and a full grid
    over them repeats the same cells while the head runs on all of them: the grid scales with
    the shorter side S, `14 * S / 600` rounded to an even size in [4, 14] for R50-C4 (6 at 256
    pixels, 4 at 192: the grid of the synthetic benches) and `7 * S / 600` rounded, in [4, 7], for
    the MobileNet-v2 head. VGG16's grid stays 7, which its fc6 weights fix.
    """
    from zoo.registry import get_spec

    defaults = vars(get_spec(name).config)  # the registered config itself: no description, no manifest read
    if "pool_size" not in defaults or "pool_size" in overrides:
        return overrides
    side = min(image_size)
    if defaults.get("backbone") == "resnet50":
        return {**overrides, "pool_size": int(min(14, max(4, 2 * round(7 * side / 600))))}
    if defaults.get("backbone") == "mobilenetv2":
        return {**overrides, "pool_size": int(min(7, max(4, round(7 * side / 600))))}
    return overrides


def detector_overrides(name, image_size, overrides, *, scales=None, aspect_ratios=None) -> tuple[dict, list[str]]:
    """`zoo train`'s sizing of detector `name` for `image_size`: (the overrides, what they say).

    - An RPN with one anchor grid (R50-C4: `anchor_scales`): `rpn_overrides`.
    - A model that resizes in its graph (`faster_rcnn_resnet50_fpn`: `min_size`, `max_size`,
      torchvision's shorter side 800, longer at most 1333): the image size itself, so that a
      model trained at 256 pixels does not upsample every image to 800 (unless `--set` gives
      either side); its anchors stay torchvision's.
    - An R50-C4 or MobileNet-v2 head: `roi_head_overrides`.
    Anything `overrides` (`--set`) gives is kept.
    """
    from zoo.registry import get_spec

    fields = vars(get_spec(name).config)
    notes = []
    if has_rpn(name) and "anchor_scales" in fields:
        overrides = rpn_overrides(image_size, overrides, scales=scales, aspect_ratios=aspect_ratios)
        notes.append(f"rpn: anchors {overrides['anchor_scales']} px at aspect ratios "
                     f"{overrides['anchor_aspect_ratios']}, proposals of at least {overrides['rpn_min_size']:g} px")
    if "min_size" in fields and "max_size" in fields and not {"min_size", "max_size"} & set(overrides):
        overrides = {"min_size": min(image_size), "max_size": max(image_size), **overrides}
        notes.append(f"resize in the graph: shorter side {overrides['min_size']}, longer at most "
                     f"{overrides['max_size']} (torchvision's 800 and 1333 with --set min_size=800 max_size=1333)")
    overrides = roi_head_overrides(name, image_size, overrides)
    if "pool_size" in overrides:
        notes.append(f"roi head: {overrides['pool_size']} x {overrides['pool_size']} RoI grid")
    return overrides, notes
