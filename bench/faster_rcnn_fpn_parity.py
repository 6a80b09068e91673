"""Parity of `faster_rcnn_resnet50_fpn` with torchvision's `fasterrcnn_resnet50_fpn`: the same
random weights, saved by torch as a `.pth` and imported by the zoo's `torchvision` importer, give
the same pyramid, RPN, proposals and detections.

Two roles in one script, as torch is never a dependency of the zoo:

    python bench/faster_rcnn_fpn_parity.py    # the zoo's Python; writes bench/results/faster_rcnn_fpn_parity.{json,md}
    TORCH_PYTHON=/path/to/venv/bin/python python bench/faster_rcnn_fpn_parity.py

The zoo's side runs `$TORCH_PYTHON bench/faster_rcnn_fpn_parity.py --torch OUT.npz` (default
/work/tv-venv/bin/python), which builds torchvision's model with FrozenBatchNorm2d (the
pretrained configuration, 91 classes), draws random FrozenBN statistics and a wider cls_score
(so that random weights give confident detections), runs it on a synthetic image, saves its
state dict with `torch.save` in the legacy format of torchvision's published COCO file, and its
intermediate results. The zoo's side loads that `.pth` as `zoo.build(..., weights=...)` loads the
manifest's `coco` entry (`zoo.detection.torchvision_weights.import_torchvision_state_dict`: read
without torch, layer = module path, kernels transposed), runs the same image and compares. Sizes: a 240 x 300 image with min_size 320 / max_size 533
(resized to 320 x 400), to keep the CPU run short; the rule and the code path are the defaults'.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _machine import cpu_model_and_flags  # bench/ is this script's folder on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MIN_SIZE, MAX_SIZE = 320, 533
IMAGE_SHAPE = (240, 300, 3)


def synthetic_image():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 60, IMAGE_SHAPE)
    for _ in range(6):
        y, x = rng.integers(0, 180), rng.integers(0, 240)
        h, w = rng.integers(20, 60), rng.integers(20, 60)
        image[y: y + h, x: x + w] = rng.uniform(80, 255, 3)
    return image.astype(np.float32)


# --------------------------------------------------------------------------- torch's side


def torch_side(path):
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FasterRCNN
    from torchvision.ops import misc

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
    model = FasterRCNN(backbone, 91, min_size=MIN_SIZE, max_size=MAX_SIZE).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, misc.FrozenBatchNorm2d):
                n = module.weight.shape[0]
                module.weight.copy_(torch.empty(n).uniform_(0.5, 1.0))
                module.bias.copy_(torch.randn(n) * 0.1)
                module.running_mean.copy_(torch.randn(n) * 0.1)
                module.running_var.copy_(torch.empty(n).uniform_(0.5, 1.5))
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.5)
    image = torch.from_numpy(synthetic_image() / np.float32(255.0)).permute(2, 0, 1)
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        objectness, _ = model.rpn.head(list(features.values()))
        proposals, _ = model.rpn(images, features)
        pooled = model.roi_heads.box_roi_pool(features, proposals, images.image_sizes)
        logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        detections = model.transform.postprocess(detections, images.image_sizes, [tuple(image.shape[-2:])])[0]
    torch.save(model.state_dict(), str(path)[: -len(".npz")] + ".pth", _use_new_zipfile_serialization=False)
    out = {"state_dict_keys": np.array(len(model.state_dict()))}
    out.update({
        "transformed": images.tensors[0].permute(1, 2, 0).numpy(),
        "image_size": np.array(images.image_sizes[0]),
        **{f"P{i + 2}": f[0].permute(1, 2, 0).numpy() for i, f in enumerate(features.values())},
        "objectness": np.concatenate([o[0].permute(1, 2, 0).reshape(-1).numpy() for o in objectness]),
        "proposals": proposals[0][:, [1, 0, 3, 2]].numpy(),
        "class_probs": torch.softmax(logits, -1).numpy(),
        "boxes": detections["boxes"][:, [1, 0, 3, 2]].numpy(),
        "scores": detections["scores"].numpy(),
        "labels": detections["labels"].numpy(),
        "torch_version": np.array(torch.__version__),
    })
    np.savez(path, **out)


# --------------------------------------------------------------------------- the zoo's side




def zoo_side():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import zoo
    from zoo.detection.torchvision_weights import import_torchvision_state_dict

    python = os.environ.get("TORCH_PYTHON", "/work/tv-venv/bin/python")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "torch.npz"
        subprocess.run([python, __file__, "--torch", str(path)], check=True)
        ref = dict(np.load(path))
        model = zoo.build("faster_rcnn_resnet50_fpn", min_size=MIN_SIZE, max_size=MAX_SIZE)
        load = import_torchvision_state_dict(model, Path(tmp) / "torch.pth")
    names = ["transform"] + [f"backbone.fpn.layer_blocks.{i}.0" for i in range(4)] + ["backbone.fpn.extra_blocks"]
    probe = keras.Model(model.input, {
        "transformed": model.get_layer("transform").output[0],
        **{f"P{i + 2}": model.get_layer(n).output for i, n in enumerate(names[1:])},
        **model.output,
    })
    got = {k: np.asarray(v) for k, v in probe({"images": tf.constant(synthetic_image()[None])}).items()}
    h, w = (int(v) for v in ref["image_size"])
    report = {"imported_layers": len(load.loaded), "missing_layers": load.missing, "unused_layers": load.unused,
              "state_dict_keys": int(ref["state_dict_keys"]),
              "image": list(IMAGE_SHAPE), "resized": [h, w], "torch": str(ref["torch_version"])}

    def relative(a, b):
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))

    report["transformed_shape_equal"] = got["transformed"].shape[1:] == ref["transformed"].shape
    report["transformed_max_abs_diff"] = float(np.abs(got["transformed"][0] - ref["transformed"]).max())
    for level in range(2, 7):
        a, b = got[f"P{level}"][0], ref[f"P{level}"]
        report[f"P{level}_shape_equal"] = a.shape == b.shape
        report[f"P{level}_max_relative_diff"] = relative(a, b)
    report["objectness_max_relative_diff"] = relative(got["rpn_objectness"][0], ref["objectness"])
    proposals = got["proposals"][0]
    count = len(ref["proposals"])
    report["proposals"] = {"torchvision": count, "zoo": int(np.any(proposals != 0, axis=-1).sum())}
    same = np.abs(proposals[:count] - ref["proposals"]).max(axis=-1) < 1e-2
    report["proposals"]["same_box_same_rank"] = int(same.sum())
    first_difference = int(np.argmin(same)) if not same.all() else count
    report["proposals"]["first_rank_that_differs"] = first_difference
    # Ranks swap where two objectness scores tie to float32 rounding; the set is what matters.
    distance = np.abs(proposals[:, None, :] - ref["proposals"][None]).max(axis=-1)
    report["proposals"]["zoo_boxes_found_in_torchvisions_set"] = int((distance.min(axis=1) < 1e-2).sum())
    report["class_probs_max_abs_diff_over_matching_proposals"] = float(
        np.abs(got["class_probs"][0][:first_difference] - ref["class_probs"][:first_difference]).max())
    n = int(got["num_detections"][0])
    boxes, scores, classes = got["boxes"][0][:n], got["scores"][0][:n], got["classes"][0][:n]
    ref_boxes, ref_scores, ref_labels = ref["boxes"], ref["scores"], ref["labels"]
    matched = 0
    for box, score, label in zip(ref_boxes, ref_scores, ref_labels):
        close = (np.abs(boxes - box).max(axis=-1) < 1e-2) & (classes == label) & (np.abs(scores - score) < 1e-4)
        matched += bool(close.any())
    report["detections"] = {"torchvision": int(len(ref_boxes)), "zoo": n, "matched (box 1e-2 px, score 1e-4, class)": matched}
    cpu, flags = cpu_model_and_flags()
    report["machine"] = {"cpu": cpu, "flags": flags, "python": sys.version.split()[0],
                         "tensorflow": tf.__version__, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    report["date"] = datetime.date.today().isoformat()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faster_rcnn_fpn_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# faster_rcnn_resnet50_fpn vs torchvision fasterrcnn_resnet50_fpn (same random weights, through a .pth)", "",
             "Generated by `python bench/faster_rcnn_fpn_parity.py`.", "", "| check | value |", "|---|---|"]
    for key, value in report.items():
        lines.append(f"| {key} | {value} |")
    (RESULTS / "faster_rcnn_fpn_parity.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", help="torch's side: write the state dict and results to this .npz")
    args = parser.parse_args()
    if args.torch:
        torch_side(args.torch)
    else:
        zoo_side()
