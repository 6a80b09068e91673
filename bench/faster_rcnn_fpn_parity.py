"""Parity of `faster_rcnn_resnet50_fpn` with torchvision's `fasterrcnn_resnet50_fpn`: the same
random weights, saved by torch as a `.pth` and imported by the zoo's `torchvision` importer, give
the same pyramid, RPN, proposals and detections on scikit-image's photographs.

Two roles in one script, as torch is never a dependency of the zoo:

    python bench/faster_rcnn_fpn_parity.py    # the zoo's Python; writes bench/results/faster_rcnn_fpn_parity.{json,md}
    TORCH_PYTHON=/path/to/venv/bin/python python bench/faster_rcnn_fpn_parity.py

The zoo's side runs `$TORCH_PYTHON bench/faster_rcnn_fpn_parity.py --torch OUT.npz` (default
/work/tv-venv/bin/python; that venv needs torch, torchvision and scikit-image, the zoo's none of
them), which builds torchvision's model with FrozenBatchNorm2d (the pretrained configuration, 91
classes) and its default transform (min_size 800, max_size 1333), draws random FrozenBN
statistics and a wider cls_score (so that random weights give confident detections), saves its
state dict with `torch.save` in the legacy format of torchvision's published COCO file, reads
the photographs that ship with scikit-image (`skimage.data`) and writes, per image, the pixels it
was given and its intermediate results. The zoo's side loads that `.pth` as `zoo.build(...,
weights=...)` loads the manifest's `coco` entry
(`zoo.detection.torchvision_weights.import_torchvision_state_dict`: read without torch, layer =
module path, kernels transposed), runs the same pixels (resized in its graph by the same rule)
and compares, per image:

- the transform, P2..P6 and the RPN's objectness (relative to the largest value);
- the RPN's proposals, before the head's NMS: the set, and the ranks that agree;
- over the proposals both sides have (matched by box, whatever their rank), the class
  probabilities and the head's candidates before its NMS: every (proposal, class) box decoded
  and clipped, kept where its score passes the threshold and its sides 1e-2 px;
- the final detections (after NMS, in input pixels), matched one to one: same class, box within
  `BOX_TOLERANCE_PX`, score within `SCORE_TOLERANCE`.

The images: a synthetic 240 x 300 (blocks on noise) and scikit-image's astronaut (512 x 512),
coffee (400 x 600), chelsea (300 x 451) and rocket (427 x 640).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from bench._machine import cpu_model_and_flags  # noqa: E402

MIN_SIZE, MAX_SIZE = 800, 1333  # torchvision's defaults
SCORE_THRESHOLD = 0.05  # torchvision's box_score_thresh and the zoo's score_threshold, both defaults
BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-4
SAME_PROPOSAL_PX = 1e-2  # two proposals (in resized pixels) are the same box
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket")
SYNTHETIC_SHAPE = (240, 300, 3)
HEAD_CLASSES = 90  # the object classes of torchvision's 91 (background first)


def synthetic_image():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 60, SYNTHETIC_SHAPE)
    for _ in range(6):
        y, x = rng.integers(0, 180), rng.integers(0, 240)
        h, w = rng.integers(20, 60), rng.integers(20, 60)
        image[y: y + h, x: x + w] = rng.uniform(80, 255, 3)
    return image.astype(np.float32)


# --------------------------------------------------------------------------- torch's side


def torch_side(path):
    import torch
    from skimage import data
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FasterRCNN
    from torchvision.ops import boxes as box_ops, misc

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
    model = FasterRCNN(backbone, 91, min_size=MIN_SIZE, max_size=MAX_SIZE, box_score_thresh=SCORE_THRESHOLD).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, misc.FrozenBatchNorm2d):
                n = module.weight.shape[0]
                module.weight.copy_(torch.empty(n).uniform_(0.5, 1.0))
                module.bias.copy_(torch.randn(n) * 0.1)
                module.running_mean.copy_(torch.randn(n) * 0.1)
                module.running_var.copy_(torch.empty(n).uniform_(0.5, 1.5))
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.5)
    torch.save(model.state_dict(), str(path)[: -len(".npz")] + ".pth", _use_new_zipfile_serialization=False)
    images = {"synthetic": synthetic_image(), **{name: getattr(data, name)().astype(np.float32) for name in PHOTOGRAPHS}}
    out = {"state_dict_keys": np.array(len(model.state_dict())), "torch_version": np.array(torch.__version__),
           "names": np.array(list(images))}
    for name, pixels in images.items():
        start = time.perf_counter()
        image = torch.from_numpy(pixels / np.float32(255.0)).permute(2, 0, 1)
        with torch.no_grad():
            batch, _ = model.transform([image])
            features = model.backbone(batch.tensors)
            objectness, _ = model.rpn.head(list(features.values()))
            proposals, _ = model.rpn(batch, features)
            pooled = model.roi_heads.box_roi_pool(features, proposals, batch.image_sizes)
            logits, regression = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
            # postprocess_detections up to its NMS: decode, clip, drop the background.
            head_boxes = model.roi_heads.box_coder.decode(regression, proposals)
            head_boxes = box_ops.clip_boxes_to_image(head_boxes, batch.image_sizes[0])[:, 1:]
            detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
            detections = model.transform.postprocess(detections, batch.image_sizes, [tuple(image.shape[-2:])])[0]
        seconds = time.perf_counter() - start
        out.update({f"{name}.{key}": value for key, value in {
            "pixels": pixels,
            "seconds": np.array(seconds),
            "transformed": batch.tensors[0].permute(1, 2, 0).numpy(),
            "image_size": np.array(batch.image_sizes[0]),
            **{f"P{i + 2}": f[0].permute(1, 2, 0).numpy() for i, f in enumerate(features.values())},
            "objectness": np.concatenate([o[0].permute(1, 2, 0).reshape(-1).numpy() for o in objectness]),
            "proposals": proposals[0][:, [1, 0, 3, 2]].numpy(),
            "class_probs": torch.softmax(logits, -1).numpy(),
            "head_boxes": head_boxes[..., [1, 0, 3, 2]].numpy(),
            "boxes": detections["boxes"][:, [1, 0, 3, 2]].numpy(),
            "scores": detections["scores"].numpy(),
            "labels": detections["labels"].numpy(),
        }.items()})
        print(f"torchvision: {name} {tuple(pixels.shape)} in {seconds:.1f} s", flush=True)
    np.savez(path, **out)


# --------------------------------------------------------------------------- pure helpers


def match_proposals(zoo, reference, *, tolerance=SAME_PROPOSAL_PX):
    """For each of the zoo's proposals `[N, 4]`, the index of the same box (every coordinate within
    `tolerance`) among the reference's `[M, 4]`, or -1."""
    if len(zoo) == 0 or len(reference) == 0:
        return np.full(len(zoo), -1)
    distance = np.abs(zoo[:, None, :] - reference[None]).max(axis=-1)
    nearest = distance.argmin(axis=1)
    return np.where(distance[np.arange(len(zoo)), nearest] < tolerance, nearest, -1)


def match_detections(boxes, scores, classes, ref_boxes, ref_scores, ref_classes, *,
                     box_tolerance=BOX_TOLERANCE_PX, score_tolerance=SCORE_TOLERANCE):
    """One-to-one matching of detections: each reference detection, best score first, takes the
    unclaimed detection of its class with the nearest box; a pair counts as matched when the box
    is within `box_tolerance` px (every coordinate) and the score within `score_tolerance`.

    Returns `{"matched", "max_box_diff_px", "max_score_diff"}`, the maxima over the pairs formed
    (nan where none)."""
    claimed = np.zeros(len(boxes), bool)
    box_diffs, score_diffs, matched = [], [], 0
    for index in np.argsort(-np.asarray(ref_scores), kind="stable"):
        candidates = np.flatnonzero((classes == ref_classes[index]) & ~claimed)
        if len(candidates) == 0:
            continue
        distance = np.abs(boxes[candidates] - ref_boxes[index]).max(axis=-1)
        best = candidates[distance.argmin()]
        claimed[best] = True
        box_diffs.append(float(distance.min()))
        score_diffs.append(float(abs(scores[best] - ref_scores[index])))
        matched += box_diffs[-1] <= box_tolerance and score_diffs[-1] <= score_tolerance
    return {"matched": int(matched), "max_box_diff_px": max(box_diffs, default=float("nan")),
            "max_score_diff": max(score_diffs, default=float("nan"))}


def head_candidates(class_probs, head_boxes, *, score_threshold=SCORE_THRESHOLD, min_size=1e-2):
    """The head's candidates before its NMS, as torchvision's postprocess_detections keeps them:
    `[N, C]` mask of (proposal, object class) pairs with a score above `score_threshold` and both
    sides of the decoded, clipped box at least `min_size`. `class_probs [N, C + 1]`, `head_boxes
    [N, C, 4]`."""
    sides = head_boxes[..., 2:] - head_boxes[..., :2]
    return (class_probs[:, 1:] > score_threshold) & (sides >= min_size).all(axis=-1)


def _figure(value):
    return "-" if value is None or value != value else f"{value:.1e}"


def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# --------------------------------------------------------------------------- the zoo's side


def compare_image(probe, ref, name):
    import tensorflow as tf

    from layers import boxes as box_ops

    pixels = ref[f"{name}.pixels"]
    start = time.perf_counter()
    got = {k: np.asarray(v) for k, v in probe({"images": tf.constant(pixels[None])}).items()}
    seconds = time.perf_counter() - start
    r = {key.split(".", 1)[1]: value for key, value in ref.items() if key.startswith(f"{name}.")}
    h, w = (int(v) for v in r["image_size"])
    report = {"image": list(pixels.shape), "resized": [h, w],
              "zoo_seconds": round(seconds, 2), "torchvision_seconds": round(float(r["seconds"]), 2),
              "resized_equal": [int(v) for v in got["image_info"][0][:2]] == [h, w]}
    report["transformed_shape_equal"] = got["transformed"].shape[1:] == r["transformed"].shape
    report["transformed_max_abs_diff"] = float(np.abs(got["transformed"][0] - r["transformed"]).max())
    for level in range(2, 7):
        a, b = got[f"P{level}"][0], r[f"P{level}"]
        report[f"P{level}_max_relative_diff"] = _relative(a, b) if a.shape == b.shape else f"shapes {a.shape} {b.shape}"
    report["objectness_max_relative_diff"] = _relative(got["rpn_objectness"][0], r["objectness"])

    # The RPN's proposals: what the head's NMS works on.
    proposals, ref_proposals = got["proposals"][0], r["proposals"]
    real = np.any(proposals != 0, axis=-1)
    count = len(ref_proposals)
    same = np.abs(proposals[:count] - ref_proposals).max(axis=-1) < SAME_PROPOSAL_PX
    to_ref = match_proposals(proposals, ref_proposals)
    found = (to_ref >= 0) & real
    report["proposals"] = {
        "torchvision": count, "zoo": int(real.sum()),
        "same_box_same_rank": int(same.sum()),
        "first_rank_that_differs": int(np.argmin(same)) if not same.all() else count,
        "zoo_boxes_found_in_torchvisions_set": int(found.sum()),
    }

    # Over the proposals both sides have, whatever their ranks: the class probabilities and the
    # head's candidates before NMS.
    zoo_index, ref_index = np.flatnonzero(found), to_ref[found]
    probs, ref_probs = got["class_probs"][0][zoo_index], r["class_probs"][ref_index]
    report["class_probs_max_abs_diff_over_matching_proposals"] = float(np.abs(probs - ref_probs).max())
    head_boxes = np.asarray(box_ops.clip_boxes(
        box_ops.decode(tf.constant(got["box_deltas"]), tf.constant(got["proposals"])[:, :, None, :]),
        got["image_info"][:, :2]))[0][zoo_index]
    ref_head_boxes = r["head_boxes"][ref_index]
    keep, ref_keep = head_candidates(probs, head_boxes), head_candidates(ref_probs, ref_head_boxes)
    both = keep & ref_keep
    report["before_nms"] = {
        "candidates_torchvision": int(head_candidates(r["class_probs"], r["head_boxes"]).sum()),
        "candidates_zoo_over_matching_proposals": int(keep.sum()),
        "candidates_torchvision_over_matching_proposals": int(ref_keep.sum()),
        "same_proposal_and_class": int(both.sum()),
        "max_box_diff_px": float(np.abs(head_boxes - ref_head_boxes)[both].max()) if both.any() else None,
        "max_score_diff": float(np.abs(probs[:, 1:] - ref_probs[:, 1:])[both].max()) if both.any() else None,
    }

    # The detections, after NMS, in the input's pixels.
    n = int(got["num_detections"][0])
    boxes, scores, classes = got["boxes"][0][:n], got["scores"][0][:n], got["classes"][0][:n]
    report["detections"] = {"torchvision": int(len(r["boxes"])), "zoo": n,
                            **match_detections(boxes, scores, classes, r["boxes"], r["scores"], r["labels"]),
                            "torchvision_min_score": float(r["scores"].min()) if len(r["scores"]) else None}
    before = report["before_nms"]
    report["agrees"] = bool(
        report["resized_equal"] and report["proposals"]["zoo_boxes_found_in_torchvisions_set"] == count == real.sum()
        and report["before_nms"]["same_proposal_and_class"] == report["before_nms"]["candidates_zoo_over_matching_proposals"]
        == report["before_nms"]["candidates_torchvision_over_matching_proposals"]
        and (not before["same_proposal_and_class"]
             or (before["max_box_diff_px"] <= BOX_TOLERANCE_PX and before["max_score_diff"] <= SCORE_TOLERANCE))
        and report["detections"]["matched"] == report["detections"]["torchvision"] == n)
    return report


def zoo_side():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import zoo
    from layers.files import write_atomically
    from zoo.detection.torchvision_weights import import_torchvision_state_dict

    python = os.environ.get("TORCH_PYTHON", "/work/tv-venv/bin/python")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "torch.npz"
        subprocess.run([python, __file__, "--torch", str(path)], check=True)
        ref = dict(np.load(path))
        model = zoo.build("faster_rcnn_resnet50_fpn", min_size=MIN_SIZE, max_size=MAX_SIZE,
                          score_threshold=SCORE_THRESHOLD)
        load = import_torchvision_state_dict(model, Path(tmp) / "torch.pth")
    torch_seconds = time.perf_counter() - start
    names = [f"backbone.fpn.layer_blocks.{i}.0" for i in range(4)] + ["backbone.fpn.extra_blocks"]
    transform = model.get_layer("transform")
    probe = keras.Model(model.input, {
        "transformed": transform.output[0], "image_info": transform.output[1],
        **{f"P{i + 2}": model.get_layer(n).output for i, n in enumerate(names)},
        **model.output,
    })
    report = {"imported_layers": len(load.loaded), "missing_layers": load.missing, "unused_layers": load.unused,
              "state_dict_keys": int(ref["state_dict_keys"]), "torch": str(ref["torch_version"]),
              "transform": {"min_size": MIN_SIZE, "max_size": MAX_SIZE},
              "score_threshold": SCORE_THRESHOLD,
              "tolerances": {"detection_box_px": BOX_TOLERANCE_PX, "detection_score": SCORE_TOLERANCE,
                             "same_proposal_px": SAME_PROPOSAL_PX},
              "images": {}}
    for name in (str(n) for n in ref["names"]):
        report["images"][name] = compare_image(probe, ref, name)
        print(name, json.dumps(report["images"][name]), flush=True)
    report["all_agree"] = all(image["agrees"] for image in report["images"].values())
    cpu, flags = cpu_model_and_flags()
    report["machine"] = {"cpu": cpu, "flags": flags, "python": sys.version.split()[0],
                         "tensorflow": tf.__version__, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    report["seconds"] = {"torchvision_side_and_import": round(torch_seconds, 1),
                         "total": round(time.perf_counter() - start, 1)}
    report["date"] = datetime.date.today().isoformat()
    write_atomically(RESULTS / "faster_rcnn_fpn_parity.json",
                     lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))
    write_atomically(RESULTS / "faster_rcnn_fpn_parity.md", lambda p: p.write_text(markdown(report)))
    print(json.dumps({k: v for k, v in report.items() if k != "images"}, indent=2))


def markdown(report):
    lines = ["# faster_rcnn_resnet50_fpn vs torchvision fasterrcnn_resnet50_fpn (same random weights, through a .pth)", "",
             "Generated by `python bench/faster_rcnn_fpn_parity.py` (torchvision's side in its own venv). Random",
             "weights with random FrozenBN statistics and cls_score weights ~ N(0, 0.5), so that detections are",
             f"confident; torchvision's default transform (min_size {MIN_SIZE}, max_size {MAX_SIZE}) and score",
             f"threshold ({SCORE_THRESHOLD}). Tolerances: detections match one to one with the same class, every box",
             f"coordinate within {BOX_TOLERANCE_PX} px and the score within {SCORE_TOLERANCE}; proposals are the same box",
             f"within {SAME_PROPOSAL_PX} px. Before NMS: the head's (proposal, class) candidates over the proposals both",
             "sides have, in the resized image's pixels, held to the same tolerances. Columns give the largest",
             "differences seen.", "",
             "| image | resized | P2..P6, objectness (max relative) | proposals: same set / same rank / first differing rank "
             "| class probs (max abs) | before NMS: candidates tv / zoo / both, box px, score "
             "| detections: tv / zoo / matched, box px, score | agrees |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report["images"].items():
        pyramid = max(r[f"P{level}_max_relative_diff"] for level in range(2, 7))
        p, b, d = r["proposals"], r["before_nms"], r["detections"]
        lines.append(
            f"| {name} {r['image'][0]}x{r['image'][1]} | {r['resized'][0]}x{r['resized'][1]} "
            f"| {pyramid:.1e}, {r['objectness_max_relative_diff']:.1e} "
            f"| {p['zoo_boxes_found_in_torchvisions_set']}/{p['torchvision']} / {p['same_box_same_rank']} / {p['first_rank_that_differs']} "
            f"| {r['class_probs_max_abs_diff_over_matching_proposals']:.1e} "
            f"| {b['candidates_torchvision_over_matching_proposals']} / {b['candidates_zoo_over_matching_proposals']} / "
            f"{b['same_proposal_and_class']}, {_figure(b['max_box_diff_px'])}, {_figure(b['max_score_diff'])} "
            f"| {d['torchvision']} / {d['zoo']} / {d['matched']}, {_figure(d['max_box_diff_px'])}, {_figure(d['max_score_diff'])} "
            f"| {r['agrees']} |")
    lowest = min((r["detections"]["torchvision_min_score"] for r in report["images"].values()
                  if r["detections"]["torchvision_min_score"] is not None), default=None)
    lines += ["", f"The lowest score among torchvision's detections: {_figure(lowest)} (each image gives its cap of",
              f"{max((r['detections']['torchvision'] for r in report['images'].values()), default=0)} "
              "detections, so the score threshold does not bind). Ranks of proposals swap where two",
              "objectness scores tie to float32 rounding; the set is what the head sees.",
              "", "| check | value |", "|---|---|"]
    for key, value in report.items():
        if key != "images":
            lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", help="torch's side: write the state dict and results to this .npz")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite the .md from the committed .json, running nothing")
    args = parser.parse_args()
    if args.markdown_only:
        from layers.files import write_atomically

        saved = json.loads((RESULTS / "faster_rcnn_fpn_parity.json").read_text())
        write_atomically(RESULTS / "faster_rcnn_fpn_parity.md", lambda p: p.write_text(markdown(saved)))
    elif args.torch:
        torch_side(args.torch)
    else:
        zoo_side()
