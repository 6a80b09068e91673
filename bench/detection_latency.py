"""Inference latency per image of the zoo's detectors beside torchvision's Faster R-CNN.

Cases (issue 5), batch 1, one 600 x 800 image of random pixels, random weights, 20 classes:
- `zoo.build("fast_rcnn_vgg16")` with 2000 proposals (random boxes of every scale, made as
  bench/roi_pooling.py makes them);
- `zoo.build("faster_rcnn_resnet50")` with its test-time defaults (RPN: 6000 boxes into NMS at
  0.7, 300 proposals out);
- torchvision's `fasterrcnn_resnet50_fpn` in eval mode (bench/torchvision_detection.py, run in
  its own virtual environment, torch never being a dependency of the zoo), its transform set
  not to resize the image.
Each zoo call is the whole model, post-processing (per-class NMS, score threshold, 100
detections) included, inside one `tf.function` with a fixed input signature; `--xla` adds the
same under `jit_compile=True`. TensorFlow and torch each get `--threads` threads (2). After
`--warmup` calls of every side, the sides take turns (zoo, zoo, torchvision, zoo, ...) for
`--rounds` rounds, so that they see the same load on this shared machine; median and min of the
timed calls, in milliseconds.

    python bench/detection_latency.py        # writes bench/results/detection_latency.{json,md}
"""

from __future__ import annotations

import argparse
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

from bench._latency import Peer, interleaved, limit_threads, load_average, machine, time_calls, write_results  # noqa: E402
from bench.roi_pooling import random_boxes  # noqa: E402

import zoo  # noqa: E402

IMAGE = (600, 800)
RESULTS = ROOT / "bench" / "results" / "detection_latency"


def zoo_case(name: str, image: np.ndarray, rois: np.ndarray | None, *, jit: bool):
    """(model, a no-argument call of the whole model on the image) for one registered detector."""
    model = zoo.build(name)
    inputs = {"images": tf.constant(image[None].astype(np.float32))}
    if rois is not None:
        inputs["rois"] = tf.constant(rois[None])
    signature = {key: tf.TensorSpec(value.shape, value.dtype, name=key) for key, value in inputs.items()}
    forward = tf.function(lambda batch: model(batch, training=False), input_signature=[signature], jit_compile=jit)

    def call():
        outputs = forward(inputs)
        return int(outputs["num_detections"].numpy()[0])  # reading the result waits for it

    return model, call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, nargs=2, default=IMAGE, metavar=("H", "W"))
    parser.add_argument("--proposals", type=int, default=2000, help="RoIs given to fast_rcnn_vgg16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per side, taken in turns")
    parser.add_argument("--xla", action="store_true", help="also time the zoo models under jit_compile=True")
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/work/tv-venv/bin/python"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    limit_threads(args.threads)
    size = tuple(args.image_size)
    report = dict(date=time.strftime("%Y-%m-%d"), machine=machine(args.threads), image=list(size),
                  proposals=args.proposals, warmup=args.warmup, rounds=args.rounds, models={})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    rois = random_boxes(np.random.default_rng(args.proposals), args.proposals, size)

    sides, notes = {}, {}
    variants = [(False, "tf.function")] + ([(True, "tf.function + XLA")] if args.xla else [])
    for name, model_rois in (("fast_rcnn_vgg16", rois), ("faster_rcnn_resnet50", None)):
        for jit, mode in variants:
            label = name if not jit else f"{name} (XLA)"
            model, call = zoo_case(name, image, model_rois, jit=jit)
            proposals = f"{args.proposals} random boxes (input)" if model_rois is not None else "RPN, 300 at test time"
            try:
                start = time.perf_counter()
                detections = call()  # traces (and compiles) here, outside the timings
                trace_s = time.perf_counter() - start
            except Exception as error:  # record, never hide, what does not compile
                notes[label] = dict(mode=mode, rois=proposals, error=_first_line(error))
                continue
            sides[label] = lambda count, call=call: time_calls(call, count)
            notes[label] = dict(mode=mode, parameters=model.count_params(), first_call_s=round(trace_s, 1),
                                detections_on_first_call=detections, rois=proposals)

    peer = None
    if args.torch_python and Path(args.torch_python).exists():
        with tempfile.TemporaryDirectory() as scratch:
            np.save(Path(scratch) / "image.npy", image)
            peer = Peer(args.torch_python, ROOT / "bench" / "torchvision_detection.py",
                        ["--image", str(Path(scratch) / "image.npy"), "--threads", str(args.threads)], cwd=ROOT)
        sides["torchvision fasterrcnn_resnet50_fpn"] = peer.run
        notes["torchvision fasterrcnn_resnet50_fpn"] = dict(mode="torch eager, inference_mode", **peer.describe)
    try:
        timings = interleaved(sides, warmup=args.warmup, rounds=args.rounds)
    finally:
        if peer is not None:
            peer.close()
    for label, note in notes.items():
        report["models"][label] = dict(note, **timings.get(label, {}))
    report["machine"]["load_average_at_end"] = load_average()

    write_results(args.out, report, markdown(report))
    return 0


def _first_line(error) -> str:
    """The error's gist: XLA's message names the unsupported op after a long graph name."""
    text = str(error).splitlines()[0]
    if "Detected unsupported operations" in text and "JIT: " in text:
        text = "XLA has no kernel for " + text.split("JIT: ", 1)[1].split(" (", 1)[0]
    return text[:300]


def markdown(report) -> str:
    m = report["machine"]
    lines = [
        f"# Detection inference latency ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPUs: {m['gpus'] or 'none'}; TensorFlow {m['tensorflow']}, "
        f"TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}, {m['threads']} intra-op and inter-op threads "
        f"(torch: `set_num_threads({m['threads']})`).",
        f"The machine is shared with other jobs: load average (1, 5, 15 min) {m['load_average_at_start']} at the "
        f"start, {m['load_average_at_end']} at the end. The sides took turns (one call each per round) so that "
        "they saw the same load; the minimum is the steadier figure.",
        f"One {report['image'][0]} x {report['image'][1]} image of random pixels, batch 1, random weights, 20 object "
        f"classes; milliseconds per image, median and min of {report['rounds']} timed calls after "
        f"{report['warmup']} warm-up calls. Zoo: the whole model, post-processing (per-class NMS) included, in one "
        "`tf.function` (XLA only where the mode says so). `python bench/detection_latency.py` writes this file.",
        "",
        "| model | proposals | mode | parameters | median ms | min ms |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label, row in report["models"].items():
        proposals = row.get("rois", f"RPN, {row.get('rpn_test_post_nms_top_n', '?')} per FPN level at test time")
        if "error" in row:
            lines.append(f"| {label} | {proposals} | {row['mode']} | | fails: {row['error']} | |")
        elif "median_ms" in row:
            lines.append(f"| {label} | {proposals} | {row['mode']} | {row['parameters']:,} | "
                         f"{row['median_ms']:.0f} | {row['min_ms']:.0f} |")
    tv = report["models"].get("torchvision fasterrcnn_resnet50_fpn")
    if tv:
        lines += ["", f"torchvision {tv['torchvision']} (torch {tv['torch']}): input {tv['input_size']} kept at "
                  f"{tv['size_after_transform']} by its transform (min_size/max_size), padded to "
                  f"{tv['padded_batch_shape']}; RPN {tv['rpn_test_pre_nms_top_n']} boxes per level before NMS, "
                  f"{tv['rpn_test_post_nms_top_n']} after; {tv['box_detections_per_img']} detections per image."]
        for label, row in report["models"].items():
            if label != "torchvision fasterrcnn_resnet50_fpn" and "min_ms" in row and "min_ms" in tv:
                lines.append(f"- {label}: {tv['min_ms'] / row['min_ms']:.2f}x torchvision's speed (minimums; "
                             f"medians {tv['median_ms'] / row['median_ms']:.2f}x; above 1 means the zoo is faster).")
    else:
        lines += ["", "torchvision was not available in this run."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
