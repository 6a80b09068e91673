"""Latency of an exported SavedModel's `serving_default`: ResNet-50 at 224 x 224, batch 1 and 8.

Each variant is exported with `zoo.export` (random weights: the speed does not depend on
them), loaded back with `tf.saved_model.load` and called on uint8 images: plain, with
`fold_batch_norm`, with `jit_compile` (XLA), with both, and with a float16 / bfloat16 compute
policy where asked (`--dtypes`; on a CPU without fast half precision they are slower, so they
are for the GPU run). Milliseconds per call, median and min of `--repeats` timed calls after
`--warmup` calls (XLA compiles in the warm-up).

    python bench/export_serving.py                          # writes bench/results/export_serving.md
    python bench/export_serving.py --dtypes float16 bfloat16 --repeats 50   # on a GPU machine
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export_serving.md"


def time_signature(signature, images, *, warmup, repeats):
    for _ in range(warmup):
        signature(input_tensor=images)["probabilities"].numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        signature(input_tensor=images)["probabilities"].numpy()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=(1, 8))
    parser.add_argument("--dtypes", nargs="*", default=(), choices=("float16", "bfloat16"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    model = zoo.build(args.model, input_shape=(args.size, args.size, 3))
    variants = [("plain", {}), ("fold_batch_norm", {"fold_batch_norm": True}), ("jit_compile", {"jit_compile": True}),
                ("fold_batch_norm + jit_compile", {"fold_batch_norm": True, "jit_compile": True})]
    variants += [(f"compute_dtype={dtype}", {"compute_dtype": dtype}) for dtype in args.dtypes]
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, options in variants:
            start = time.perf_counter()
            directory = zoo.export(model, Path(scratch) / label.replace(" ", ""), **options)
            export_seconds = time.perf_counter() - start
            signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
            for batch in args.batches:
                images = tf.constant(rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8))
                median, best = time_signature(signature, images, warmup=args.warmup, repeats=args.repeats)
                rows.append((label, batch, median, best, median / batch, export_seconds))
                print(f"{label:32s} batch {batch}: median {median:8.1f} ms, min {best:8.1f} ms", flush=True)

    load = os.getloadavg()
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    lines = [
        f"# Exported SavedModel serving latency ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, GPUs: {', '.join(gpus) or 'none'}; "
        f"TensorFlow {tf.__version__}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}.",
        f"`{args.model}` at {args.size} x {args.size}, random weights, dynamic batch, uint8 input; "
        f"`serving_default` of the loaded SavedModel, milliseconds per call, median and min of {args.repeats} "
        f"calls after {args.warmup} warm-up calls. Run with `python bench/export_serving.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`.",
        f"Load average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} cores; "
        "a load above the core count means other jobs shared the CPU and the figures are indicative only.",
        "",
        "| variant | batch | median ms | min ms | median ms / image | export s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | {batch} | {median:.1f} | {best:.1f} | {per:.1f} | {seconds:.1f} |"
              for label, batch, median, best, per, seconds in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
