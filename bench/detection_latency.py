"""Inference latency per image of the zoo's detectors, in a `tf.function` and served as
exported SavedModels, beside torchvision's Faster R-CNN in the same run.

Cases, batch 1, one 600 x 800 image of random pixels, random weights, 20 classes:
- `zoo.build("fast_rcnn_vgg16")` with 2000 proposals (random boxes of every scale, made as
  bench/roi_pooling.py makes them);
- `zoo.build("faster_rcnn_resnet50")` with its test-time defaults (RPN: 6000 boxes into NMS at
  0.7, 300 proposals out);
- `zoo.build("faster_rcnn_resnet50_fpn")`, torchvision's architecture, told the image's sides
  (`min_size`, `max_size`) so that it keeps the image at its size as torchvision does below;
- torchvision's `fasterrcnn_resnet50_fpn` in eval mode (bench/torchvision_detection.py, run in
  its own virtual environment, torch never being a dependency of the zoo), its transform set
  not to resize the image.

Each zoo model is timed as it was before export, the whole model with post-processing
(per-class NMS, score threshold, 100 detections) in one `tf.function` of a fixed input
signature ("tf.function"), and as a client calls it after `zoo.export`: the loaded
SavedModel's `serving_default` on a uint8 `input_tensor` ("served: ..."), exported plain, with
the whole graph under XLA (proposals and NMS included), with batch norm folded into the
convolutions, both, and in bfloat16 (alone and with batch norm folded) where the machine has
fast bfloat16 (a GPU, or a CPU flag `avx512_bf16` / `amx_bf16`; `--bfloat16 on|off|auto`). By
default only `faster_rcnn_resnet50` is exported (`--served-models`). After `--warmup` calls of every side,
the sides take turns (one call each per round) for `--rounds` rounds, so that they see the same
load on this shared machine; median and min of the timed calls, in milliseconds. TensorFlow and
torch each get `--threads` threads.

Speed is nothing if the detections change. Where `faster_rcnn_resnet50_fpn` is exported and
torchvision is at hand, it holds bench/faster_rcnn_fpn_parity.py's torchvision weights (random,
confident) and every served variant is run on that bench's photographs; with `--check-run RUN` (a `zoo train` run of
`faster_rcnn_resnet50`: `model.keras` and `run.json`) and `--check-images` (its held-out
images), every served variant of *that* trained model, exported as `zoo export` would export
it, is run on each image and its detections (score >= 0.5) are matched to the plain float32
export's: same class and IoU >= 0.9; the report gives the matched share and the largest score
and box-corner differences among the matches.

    python bench/detection_latency.py --check-run RUN --check-images 'DATA/JPEGImages/val_*.jpg'
        # writes bench/results/detection_latency.{json,md}
    python bench/detection_latency.py --models faster_rcnn_resnet50_fpn --served-models faster_rcnn_resnet50_fpn \
        --out bench/results/detection_latency_fpn
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._latency import (Peer, fast_bfloat16, interleaved, limit_threads, load_average, machine,  # noqa: E402
                            time_calls, write_results)
from bench.roi_pooling import random_boxes  # noqa: E402

import zoo  # noqa: E402

IMAGE = (600, 800)
RESULTS = ROOT / "bench" / "results" / "detection_latency"
TORCHVISION = "torchvision fasterrcnn_resnet50_fpn"
# The served variants: `zoo.export` options under a label. bfloat16 ones only where it is fast.
VARIANTS = {
    "plain": {},
    "XLA": {"jit_compile": True},
    "BN folded": {"fold_batch_norm": True},
    "BN folded + XLA": {"fold_batch_norm": True, "jit_compile": True},
    "bfloat16": {"compute_dtype": "bfloat16"},
    "bfloat16 + BN folded": {"compute_dtype": "bfloat16", "fold_batch_norm": True},
}
CHECK_SCORE = 0.5
CHECK_IOU = 0.9
CHECK_MAX_DETECTIONS = 1000


def tf_function_case(model, image: np.ndarray, rois: np.ndarray | None):
    """A no-argument call of the whole model in one `tf.function`, as before export."""
    inputs = {"images": tf.constant(image[None].astype(np.float32))}
    if rois is not None:
        inputs["rois"] = tf.constant(rois[None])
    signature = {key: tf.TensorSpec(value.shape, value.dtype, name=key) for key, value in inputs.items()}
    forward = tf.function(lambda batch: model(batch, training=False), input_signature=[signature])
    return lambda: int(forward(inputs)["num_detections"].numpy()[0])  # reading the result waits for it


def served(model, directory: Path, options: dict, **export_options):
    """(`serving_default` of `model` exported to `directory` with `options`, the export's seconds)."""
    start = time.perf_counter()
    zoo.export(model, directory, **export_options, **options)
    seconds = time.perf_counter() - start
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return signature, seconds


def served_case(signature, image: np.ndarray, rois: np.ndarray | None):
    inputs = {"input_tensor": tf.constant(image[None])}
    if rois is not None:
        inputs["rois"] = tf.constant(rois[None])
    return lambda: int(signature(**inputs)["num_detections"].numpy()[0])


def first_call(call) -> tuple[float, int]:
    """The first call (it traces and, under XLA, compiles) outside the timings: (seconds, detections)."""
    start = time.perf_counter()
    detections = call()
    return time.perf_counter() - start, detections


def _first_line(error) -> str:
    """The error's gist: XLA's message names the unsupported op after a long graph name."""
    text = str(error).splitlines()[0]
    if "Detected unsupported operations" in text and "JIT: " in text:
        text = "XLA has no kernel for " + text.split("JIT: ", 1)[1].split(" (", 1)[0]
    return text[:300]


# --------------------------------------------------------------------------- detections check


def _pixel_boxes(outputs, height, width):
    count = int(outputs["num_detections"][0])
    scores = outputs["detection_scores"][0, :count]
    keep = scores >= CHECK_SCORE
    boxes = outputs["detection_boxes"][0, :count][keep] * np.array([height, width, height, width], np.float32)
    return boxes, scores[keep], outputs["detection_classes"][0, :count][keep]


def _iou(box, boxes):
    top, left = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    bottom, right = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def compare_detections(reference, other, height, width) -> dict:
    """Greedy one-to-one matching of `other`'s detections to `reference`'s (same class, IoU >= 0.9)."""
    ref_boxes, ref_scores, ref_classes = _pixel_boxes(reference, height, width)
    boxes, scores, classes = _pixel_boxes(other, height, width)
    used = np.zeros(len(boxes), bool)
    matched, score_diff, corner_diff = 0, 0.0, 0.0
    for box, score, label in zip(ref_boxes, ref_scores, ref_classes):
        candidates = np.flatnonzero(~used & (classes == label))
        if not len(candidates):
            continue
        ious = _iou(box, boxes[candidates])
        best = int(np.argmax(ious))
        if ious[best] >= CHECK_IOU:
            index = candidates[best]
            used[index] = True
            matched += 1
            score_diff = max(score_diff, abs(float(scores[index] - score)))
            corner_diff = max(corner_diff, float(np.abs(boxes[index] - box).max()))
    return dict(reference=len(ref_boxes), other=len(boxes), matched=matched, max_score_diff=score_diff,
                max_corner_px=corner_diff)


def check_variants(model, images: list[np.ndarray], variants: dict, scratch: Path, **export_options) -> dict:
    """Each variant's detections on `images` (uint8 RGB) against the plain float32 export's."""
    outputs = {}
    for label, options in variants.items():
        signature, _ = served(model, scratch / f"check-{len(outputs)}", options, **export_options)
        outputs[label] = [{key: value.numpy() for key, value in signature(input_tensor=tf.constant(image[None])).items()}
                          for image in images]
    report = dict(images=len(images), score_threshold=CHECK_SCORE, iou=CHECK_IOU, variants={})
    for label in variants:
        if label == "plain":
            continue
        per_image = [compare_detections(outputs["plain"][i], outputs[label][i], *image.shape[:2])
                     for i, image in enumerate(images)]
        total = lambda key: sum(item[key] for item in per_image)  # noqa: E731
        report["variants"][label] = dict(
            plain_detections=total("reference"), detections=total("other"), matched=total("matched"),
            max_score_diff=round(max(item["max_score_diff"] for item in per_image), 4),
            max_corner_px=round(max(item["max_corner_px"] for item in per_image), 2))
    return report


def check_run(run_dir: Path, image_paths: list[str], variants: dict, scratch: Path) -> dict:
    """`check_variants` of a `zoo train` run, exported as `zoo export` exports it, on its images."""
    import cv2
    import keras

    from zoo.runs import trained_run

    weights = run_dir / "model.keras"
    run = trained_run(str(weights))
    model = keras.saving.load_model(str(weights))
    images = [cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in image_paths]
    report = check_variants(model, images, variants, scratch, image_size=run.image_size, resize=run.resize,
                            class_names=run.class_names)
    return dict(report, title=f"`{run.model}` trained by `zoo train` ({run_dir}), exported at its "
                f"{list(run.image_size)} ({run.resize}), on {len(images)} held-out images at their own sizes")


def check_torchvision_fpn(torch_python: str, variants: dict, scratch: Path) -> dict:
    """`check_variants` of `faster_rcnn_resnet50_fpn` holding bench/faster_rcnn_fpn_parity.py's
    torchvision weights (random, confident), exported without a fixed size (its graph resizes
    to 800 x 1333 as torchvision does), on that bench's photographs from scikit-image."""
    import subprocess

    from bench.faster_rcnn_fpn_parity import MAX_SIZE, MIN_SIZE, SCORE_THRESHOLD
    from zoo.detection.torchvision_weights import import_torchvision_state_dict

    path = scratch / "torch.npz"
    subprocess.run([torch_python, str(ROOT / "bench" / "faster_rcnn_fpn_parity.py"), "--torch", str(path)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    ref = np.load(path)
    # Random weights make hundreds of confident boxes an image: with torchvision's cap of 100, which
    # of the near-ties pass it would differ between variants; 1,000 keeps them all.
    model = zoo.build("faster_rcnn_resnet50_fpn", min_size=MIN_SIZE, max_size=MAX_SIZE, score_threshold=SCORE_THRESHOLD,
                      max_detections=CHECK_MAX_DETECTIONS)
    import_torchvision_state_dict(model, scratch / "torch.pth")
    names = [str(name) for name in ref["names"]]
    images = [np.clip(np.round(ref[f"{name}.pixels"]), 0, 255).astype(np.uint8) for name in names]
    report = check_variants(model, images, variants, scratch)
    sizes = ", ".join(f"{name} {image.shape[0]}x{image.shape[1]}" for name, image in zip(names, images))
    return dict(report, title=f"`faster_rcnn_resnet50_fpn` holding torchvision's layout of random weights "
                f"(bench/faster_rcnn_fpn_parity.py's, confident scores; up to {CHECK_MAX_DETECTIONS} "
                f"detections an image), exported without a fixed size (its graph resizes to {MIN_SIZE}/{MAX_SIZE} as "
                f"torchvision does), on {len(images)} images: {sizes}")


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, nargs=2, default=IMAGE, metavar=("H", "W"))
    parser.add_argument("--models", nargs="+", default=["fast_rcnn_vgg16", "faster_rcnn_resnet50"],
                        choices=["fast_rcnn_vgg16", "faster_rcnn_resnet50", "faster_rcnn_resnet50_fpn"])
    parser.add_argument("--proposals", type=int, default=2000, help="RoIs given to fast_rcnn_vgg16")
    parser.add_argument("--served", nargs="*", default=None, choices=list(VARIANTS),
                        help="served variants to time (default: all that apply; none: no export)")
    parser.add_argument("--served-models", nargs="*", default=["faster_rcnn_resnet50"],
                        help="the models whose exports are timed (VGG16's 2000 RoIs take 12 s a call on 2 cores)")
    parser.add_argument("--bfloat16", choices=("auto", "on", "off"), default="auto",
                        help="the bfloat16 variants: where fast (auto), always, never")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per side, taken in turns")
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/work/tv-venv/bin/python"))
    parser.add_argument("--check-run", type=Path, default=None, help="a zoo train run of faster_rcnn_resnet50")
    parser.add_argument("--check-images", default=None, help="a glob of that run's held-out images")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if (args.check_run is None) != (args.check_images is None):
        parser.error("--check-run and --check-images go together")

    limit_threads(args.threads)
    size = tuple(args.image_size)
    record = machine(args.threads)
    use_bfloat16 = {"on": True, "off": False, "auto": fast_bfloat16(record)}[args.bfloat16]
    names = list(VARIANTS) if args.served is None else args.served
    variants = {label: VARIANTS[label] for label in names
                if use_bfloat16 or "compute_dtype" not in VARIANTS[label]}
    report = dict(date=time.strftime("%Y-%m-%d"), machine=record, image=list(size), proposals=args.proposals,
                  warmup=args.warmup, rounds=args.rounds, bfloat16=use_bfloat16, models={})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    rois = random_boxes(np.random.default_rng(args.proposals), args.proposals, size)

    sides, notes = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name in args.models:
            model_rois = rois if name == "fast_rcnn_vgg16" else None
            # The FPN model resizes in its graph as torchvision does: told the image's own sides, it
            # keeps the image at its size, as bench/torchvision_detection.py tells torchvision.
            model = zoo.build(name, **(dict(min_size=min(size), max_size=max(size), num_classes=20) if name.endswith("_fpn") else {}))
            proposals = {"fast_rcnn_vgg16": f"{args.proposals} random boxes (input)",
                         "faster_rcnn_resnet50": "RPN, 300 at test time",
                         "faster_rcnn_resnet50_fpn": "RPN, 1000 per level, 1000 at test time"}[name]
            cases = [("tf.function", "whole model in one tf.function, float32 input",
                      lambda: (tf_function_case(model, image, model_rois), None))]
            for label, options in (variants.items() if name in args.served_models else ()):
                cases.append((f"served: {label}", f"SavedModel serving_default, uint8 input, {label}",
                              lambda options=options, directory=scratch / f"{name}-{len(cases)}": _served_case(
                                  model, directory, options, size, image, model_rois)))
            for label, mode, make in cases:
                key = f"{name} {label}"
                try:
                    call, export_s = make()
                    trace_s, detections = first_call(call)
                except Exception as error:  # record, never hide, what does not export or compile
                    notes[key] = dict(model=name, mode=mode, rois=proposals, error=_first_line(error))
                    print(f"{key}: fails: {_first_line(error)}", flush=True)
                    continue
                sides[key] = lambda count, call=call: time_calls(call, count)
                notes[key] = dict(model=name, mode=mode, parameters=model.count_params(), rois=proposals,
                                  first_call_s=round(trace_s, 1), detections_on_first_call=detections,
                                  export_s=None if export_s is None else round(export_s, 1))
                print(f"{key}: first call {trace_s:.1f} s", flush=True)

        peer = None
        if args.torch_python and Path(args.torch_python).exists():
            np.save(scratch / "image.npy", image)
            peer = Peer(args.torch_python, ROOT / "bench" / "torchvision_detection.py",
                        ["--image", str(scratch / "image.npy"), "--threads", str(args.threads)], cwd=ROOT)
            sides[TORCHVISION] = peer.run
            notes[TORCHVISION] = dict(peer.describe, model=TORCHVISION, mode="torch eager, inference_mode")
        try:
            timings = interleaved(sides, warmup=args.warmup, rounds=args.rounds)
        finally:
            if peer is not None:
                peer.close()
        for label, note in notes.items():
            report["models"][label] = dict(note, **timings.get(label, {}))
        report["machine"]["load_average_at_end"] = load_average()
        if args.check_run is not None:
            paths = sorted(glob.glob(args.check_images))
            if not paths:
                parser.error(f"--check-images {args.check_images!r} matches no file")
            report.setdefault("checks", []).append(check_run(args.check_run, paths, {"plain": {}, **variants}, scratch))
        if "faster_rcnn_resnet50_fpn" in args.served_models and peer is not None:
            report.setdefault("checks", []).append(
                check_torchvision_fpn(args.torch_python, {"plain": {}, **variants}, scratch))

    write_results(args.out, report, markdown(report))
    return 0


def _served_case(model, directory, options, size, image, rois):
    signature, seconds = served(model, directory, options, image_size=size)
    return served_case(signature, image, rois), seconds


def markdown(report) -> str:
    m = report["machine"]
    lines = [
        f"# Detection inference latency, before and after export ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPUs: {m['gpus'] or 'none'}; CPU flags: {m['flags']}; "
        f"TensorFlow {m['tensorflow']}, TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}, {m['threads']} "
        f"intra-op and inter-op threads (torch: `set_num_threads({m['threads']})`). Load average (1, 5, 15 min) "
        f"{m['load_average_at_start']} at the start, {m['load_average_at_end']} at the end. The sides took turns "
        "(one call each per round) so that they saw the same load; the minimum is the steadier figure.",
        f"One {report['image'][0]} x {report['image'][1]} image of random pixels, batch 1, random weights, 20 object "
        f"classes; milliseconds per image, median and min of {report['rounds']} timed calls after "
        f"{report['warmup']} warm-up calls. \"tf.function\": the whole model, post-processing (per-class NMS) "
        "included, in one `tf.function`; \"served\": the exported SavedModel's `serving_default` on a uint8 "
        "`input_tensor` (`zoo.export`, `image_size` 600 x 800, so the in-graph resize passes the image through). "
        f"bfloat16 variants: {'timed' if report['bfloat16'] else 'not timed (no fast bfloat16 on this machine)'}. "
        "`python bench/detection_latency.py` writes this file.",
        "",
        "| model | proposals | mode | median ms | min ms | vs tf.function (min) | export s | first call s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = report["models"]
    for label, row in rows.items():
        proposals = row.get("rois", f"RPN, {row.get('rpn_test_post_nms_top_n', '?')} per FPN level at test time")
        if "error" in row:
            lines.append(f"| {label} | {proposals} | {row['mode']} | fails: {row['error']} | | | | |")
            continue
        if "median_ms" not in row:
            continue
        base = rows.get(f"{row['model']} tf.function", {})
        speedup = f"{base['min_ms'] / row['min_ms']:.2f}x" if "min_ms" in base else ""
        lines.append(f"| {label} | {proposals} | {row['mode']} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
                     f"{speedup} | {row.get('export_s') or ''} | {row.get('first_call_s', '')} |")
    tv = rows.get(TORCHVISION)
    if tv and "min_ms" in tv:
        lines += ["", f"torchvision {tv['torchvision']} (torch {tv['torch']}): input {tv['input_size']} kept at "
                  f"{tv['size_after_transform']} by its transform (min_size/max_size), padded to "
                  f"{tv['padded_batch_shape']}; RPN {tv['rpn_test_pre_nms_top_n']} boxes per level before NMS, "
                  f"{tv['rpn_test_post_nms_top_n']} after; {tv['box_detections_per_img']} detections per image.",
                  "", "Speed relative to torchvision (its minimum over the zoo's; above 1 means the zoo is faster):", ""]
        for label, row in rows.items():
            if label != TORCHVISION and "min_ms" in row:
                lines.append(f"- {label}: {tv['min_ms'] / row['min_ms']:.2f}x (medians "
                             f"{tv['median_ms'] / row['median_ms']:.2f}x)")
    else:
        lines += ["", "torchvision was not available in this run."]
    for check in report.get("checks", []):
        lines += ["", "## Detections of each served variant against the plain float32 export", "",
                  f"{check['title']}: detections with score >= {check['score_threshold']}, matched one to one to the "
                  f"plain export's (same class, IoU >= {check['iou']}).", "",
                  "| variant | plain detections | variant detections | matched | max score diff | max corner diff px |",
                  "|---|---:|---:|---:|---:|---:|"]
        for label, row in check["variants"].items():
            lines.append(f"| {label} | {row['plain_detections']} | {row['detections']} | {row['matched']} | "
                         f"{row['max_score_diff']} | {row['max_corner_px']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
